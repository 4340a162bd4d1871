"""mailwright: an SMTP server, client and doctor built on one sans-IO SMTP engine."""

__version__ = "0.1.0"
