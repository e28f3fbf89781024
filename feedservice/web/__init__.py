"""The web side: the ASGI app (``app``), the feed files (``feedserver``), the subscription pages,
health and metrics (``ops``), and what guards the server (``httplimits``, ``listen``, ``clients``)."""
