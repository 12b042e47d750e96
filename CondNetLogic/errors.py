"""Exceptions that callers branch on."""
from __future__ import annotations

__all__ = ["Cancelled", "VolumeReadError", "WeightsError"]


class VolumeReadError(ValueError):
    """A volume file could not be read: missing, truncated, unsupported or of the wrong kind."""


class WeightsError(ValueError):
    """A weights file is missing, corrupt, or does not fit the requested network."""


class Cancelled(Exception):
    """Raised by long computations when the caller's ``cancel()`` callback returns true."""
