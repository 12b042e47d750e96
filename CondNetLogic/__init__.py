"""CondNet for 3D Slicer: conductivity from T1/T2 MRI (CondNet) and TMS E-field on the voxel grid.

A Slicer-free package.  Importing it is cheap: torch, numba and scipy are imported only by the
submodules that need them.  Arrays are indexed ``(I, J, K)`` with a voxel-to-RAS affine in mm
(:class:`CondNetLogic.volume.Volume`); conductivity is in S/m, the E-field in V/m.
"""
from __future__ import annotations

from .errors import VolumeReadError, WeightsError
from .volume import Volume

__version__ = "0.1.0"

__all__ = ["Volume", "VolumeReadError", "WeightsError", "__version__"]
