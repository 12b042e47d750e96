"""CondNet for 3D Slicer: conductivity from T1/T2 MRI (CondNet) and TMS E-field on the voxel grid.

A Slicer-free package.  Importing it is cheap: the public names below are loaded on first use
(PEP 562), and torch, numba and scipy are imported only by the submodules that need them.  Arrays are
indexed ``(I, J, K)`` with a voxel-to-RAS affine in mm (:class:`Volume`); conductivity is in S/m, the
E-field in V/m.

>>> import CondNetLogic
>>> sigma = CondNetLogic.TABLE_A.values["csf"]
>>> sigma
2.0
"""
from __future__ import annotations

import importlib

from .errors import Cancelled, VolumeReadError, WeightsError
from .volume import Volume

__version__ = "0.1.0"

#: public name -> submodule that defines it, imported on first access
_LAZY = {
    "read_volume": "io",
    "write_volume": "io",
    "TABLE_A": "conductivity",
    "TABLE_B": "conductivity",
    "TISSUES": "conductivity",
    "get_table": "conductivity",
    "prepare_pair": "preprocessing",
    "ModelGrid": "preprocessing",
    "make_head_phantom": "phantom",
    "synthesize_pair": "synth",
    "predict_conductivity": "inference",
    "Prediction": "inference",
    "load_weights": "weights",
    "Coil": "coil",
    "load_coil": "coil",
    "coil_pose": "coil",
    "EFieldSimulation": "efield",
    "EFieldResult": "efield",
    "PotentialSolver": "solver",
    "eeg_position": "scalp",
}

__all__ = ["Cancelled", "Volume", "VolumeReadError", "WeightsError", "__version__", *sorted(_LAZY)]


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list:
    return sorted(set(globals()) | set(_LAZY))
