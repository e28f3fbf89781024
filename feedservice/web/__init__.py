"""The web side: the ASGI app (``app``), the feed files (``feedserver``), the subscription pages,
health and metrics (``ops``), the HTTP server (``server``: Granian) and what guards it
(``httplimits``, ``listen``, ``clients``)."""
