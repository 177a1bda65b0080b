"""vvreader: a terminal reader that reads documents aloud with a local neural voice."""

__version__ = "0.1.0"
