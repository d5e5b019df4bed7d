"""The release of this runtime (the wheel's version, recorded in every report)."""

__version__ = "0.1.0"
