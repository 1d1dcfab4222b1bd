"""adbm operator: deploys BackendServices to the ADBM standard."""

__version__ = "0.1.0"
