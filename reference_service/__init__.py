"""The ADBM reference service: the backend the operator deploys and the template teams build on."""

__version__ = "0.1.0"
