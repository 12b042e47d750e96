"""SPFD solver of the induced scalar potential (paper Eqs. 4-5): assembly, MG-PCG, E-field.

Importing this package imports numpy only; scipy, numba and torch are imported by the functions that
need them, and the numba kernels compile on first use (cached on disk).
"""
from __future__ import annotations

from .multigrid import PotentialSolver, solve_potential
from .spfd import (
    assemble_operator,
    assemble_rhs,
    conductor_components,
    electric_field,
    face_conductances,
    solver_dtype,
)

__all__ = [
    "PotentialSolver",
    "assemble_operator",
    "assemble_rhs",
    "conductor_components",
    "electric_field",
    "face_conductances",
    "solve_potential",
    "solver_dtype",
]
