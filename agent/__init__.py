"""The host agent: the daemon a host runs on a GPU machine to serve rentals (``python -m agent``)."""

__version__ = "0.1.0"
