"""Bounce mail in: reading what it says (``reading``) and the intakes it arrives through (``maildir``, ``imap``)."""
