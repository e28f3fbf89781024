"""The ``feedservice`` command: argument parsing (``main``), one handler per command
(``commands``, ``bounce_commands``, ``doctor``), previews, the offline demo and the preflight checks."""
