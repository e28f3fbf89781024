"""Bounce mail in: reading what it says (``reading``), the intakes it arrives through (``maildir``,
``imap``, a webhook's ``events``) and which of them the config names (``intakes``)."""
