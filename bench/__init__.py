"""cirbench: reference toolkit for composed image retrieval ablations."""

__version__ = "0.2.0"
