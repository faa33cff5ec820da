"""The package version, in a leaf module: every module that records it imports it from here, never from
the package root (which would make an import cycle through ``fidkit/__init__.py``)."""

__version__ = "0.1.0"
