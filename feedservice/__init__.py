"""feedservice: a newsroom's feeds, and a daily Korean email digest with the KMA weather summary."""

import logging

__version__ = "0.1.0"

logging.getLogger(__name__).addHandler(logging.NullHandler())

__all__ = ["__version__"]
