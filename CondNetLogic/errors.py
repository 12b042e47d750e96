"""Exceptions that callers branch on."""
from __future__ import annotations

import sys

__all__ = ["Cancelled", "VolumeReadError", "WeightsError", "is_out_of_memory"]


class VolumeReadError(ValueError):
    """A volume file could not be read: missing, truncated, unsupported or of the wrong kind."""


class WeightsError(ValueError):
    """A weights file is missing, corrupt, or does not fit the requested network."""


class Cancelled(Exception):
    """Raised by long computations when the caller's ``cancel()`` callback returns true."""


def is_out_of_memory(error: BaseException) -> bool:
    """Whether ``error`` reports an exhausted device or host allocator (torch CUDA/CPU out-of-memory errors)."""
    if isinstance(error, MemoryError):  # numpy: "Unable to allocate ..."
        return True
    torch = sys.modules.get("torch")  # an error from torch means torch is imported; never import it here
    if torch is not None and isinstance(error, torch.cuda.OutOfMemoryError):
        return True
    return isinstance(error, RuntimeError) and "out of memory" in str(error).lower()
