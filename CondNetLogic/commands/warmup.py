"""``condnet warmup``: compile the E-field kernels now, so that the first E-field of an installation does not wait.

The solver, the primary field and the E-field volumes are numba kernels, compiled on their first call and then
kept in numba's on-disk cache.  On a new installation that first call costs about half a minute on a 2-core CPU
(measured: 24 s of a first solve against 0.7 s once cached).  This command pays it ahead, on a small sphere
with the shipped figure-8 coil, evaluated both directly and from a coarse coil-frame grid (the Slicer panel's
interactive mode), and the head-mask kernels that place the coil (3 s on first use); the Slicer module runs it in the
background while a conductivity is being estimated.
"""
from __future__ import annotations

import argparse
import time

import numpy as np

HELP = "compile the E-field kernels now (once per installation; numba keeps them on disk)"

#: Sphere of the warm-up: voxels per axis, voxel size (mm), radius (mm), conductivity (S/m).
GRID, SPACING_MM, RADIUS_MM, SIGMA = 24, 4.0, 40.0, 0.33


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``condnet warmup`` takes no options."""


def warm_up() -> dict:
    """Solve the sphere once per primary-field mode; returns the seconds each took (compilation included)."""
    from ..coil import coil_pose, list_coils, load_coil
    from ..efield import EFieldSimulation
    from ..primary_field import PrimaryFieldGrid
    from ..scalp import outer_head
    from ..volume import Volume

    axis = (np.arange(GRID) - (GRID - 1) / 2) * SPACING_MM
    x, y, z = np.meshgrid(axis, axis, axis, indexing="ij", sparse=True)
    sigma = np.where(x**2 + y**2 + z**2 <= RADIUS_MM**2, SIGMA, 0.0).astype(np.float32)
    conductivity = Volume.from_geometry(sigma, spacing=(SPACING_MM,) * 3, origin=(axis[0],) * 3)
    coil = load_coil(list_coils()[0])
    pose = coil_pose([0.0, 0.0, RADIUS_MM + SPACING_MM], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0])
    seconds = {}
    start = time.perf_counter()
    simulation = EFieldSimulation(conductivity, device="cpu", primary_field="direct")
    seconds["solver setup"] = time.perf_counter() - start
    start = time.perf_counter()
    simulation.solve(coil, pose, coil.didt_max)
    seconds["solve, direct primary field"] = time.perf_counter() - start
    start = time.perf_counter()
    grid = PrimaryFieldGrid(coil, spacing_mm=20.0)
    simulation = EFieldSimulation(conductivity, device="cpu", grid=grid, primary_field="grid", warm_start=True)
    simulation.solve(coil, pose, coil.didt_max)
    simulation.solve(coil, pose, coil.didt_max)  # the warm-started path
    seconds["coarse coil grid, two grid solves"] = time.perf_counter() - start
    start = time.perf_counter()
    outer_head(conductivity.with_array(sigma > 0))
    seconds["head mask for coil placement"] = time.perf_counter() - start
    return seconds


def run(args: argparse.Namespace) -> int:
    """Compile (or load) the kernels and say how long it took."""
    seconds = warm_up()
    for step, value in seconds.items():
        print(f"{step}: {value:.1f} s")
    print(f"E-field kernels ready in {sum(seconds.values()):.1f} s")
    return 0
