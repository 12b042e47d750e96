"""One coil move end to end (``EFieldSimulation.solve``): primary field, potential, E-field, per stage.

A clinician who drags the coil in the Slicer panel waits for the whole of ``EFieldSimulation.solve``: the primary
field dA/dt on every head face (resampled from the coil's cached grid), the SPFD solve, and the step from the
potential to the E-field volumes (``E = -grad psi - dA/dt`` per voxel, rotated into RAS, and ``|E|``).  This
benchmark times the three on a layered ellipsoidal head (semi-axes 75/95/90 mm; scalp, skull, CSF and brain at
0.465/0.010/1.654/0.275 S/m from the outside in) in a ``size^3`` box of 1 mm voxels, and compares the last step
with its peer, the numpy float64 reference :func:`CondNetLogic.solver.electric_field` followed by the rotation and
the norm (what ``EFieldSimulation`` did before), on the same potential::

    python benchmarks/bench_coil_move.py                  # 256^3 on the CPU, best of 3 coil moves
    python benchmarks/bench_coil_move.py --device cuda    # the potential on the GPU

The coil grid is taken from (or built once into) :func:`~CondNetLogic.primary_field.default_cache_dir`; its build
and the solver setup are reported but not part of a move.  The first move of a process (kernel compilation) is not
timed.  Also a drag: the coil moved 5 mm along its handle, solved from zero and from the previous potential
(``EFieldSimulation(warm_start=True)``, as the Slicer panel does when it re-solves on each coil move).
Prints JSON: machine, versions, the fastest of ``--repeat`` moves with its stages, the drag, the reference's time and
the ratio reference / ours, and the largest difference between the two E-fields relative to the largest |E|;
and a one-line summary on stderr.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_primary_field import coil_move_pose, head_box  # noqa: E402

from CondNetLogic import __version__  # noqa: E402
from CondNetLogic.coil import load_coil  # noqa: E402
from CondNetLogic.efield import EFieldSimulation  # noqa: E402
from CondNetLogic.primary_field import cached_grid, dadt_faces, default_cache_dir  # noqa: E402
from CondNetLogic.solver import electric_field  # noqa: E402

#: (fraction of the ellipsoid's semi-axes, conductivity S/m) from the outside in: scalp, skull, CSF, brain.
LAYERS = ((1.0, 0.465), (0.93, 0.010), (0.86, 1.654), (0.83, 0.275))


def layered_head(size: int, spacing_mm: float = 1.0):
    """The conductivity Volume (S/m, float32) of the layered ellipsoid in a ``size^3`` RAS box of ``spacing_mm``."""
    mask, volume = head_box(size, spacing_mm)
    axis = (np.arange(size) - (size - 1) / 2) * spacing_mm
    x, y, z = np.meshgrid(axis, axis, axis, indexing="ij", sparse=True)
    radius = np.sqrt((x / 75.0) ** 2 + (y / 95.0) ** 2 + (z / 90.0) ** 2)
    sigma = np.zeros(mask.shape, dtype=np.float32)
    for fraction, value in LAYERS:
        sigma[radius <= fraction] = value
    return volume.with_array(sigma)


def reference_field(simulation: EFieldSimulation, psi, faces) -> tuple:
    """The numpy path: float64 reference field on the crop, rotated into RAS, placed in the volume, its norm."""
    axes = electric_field(psi, simulation._sigma, faces, simulation.spacing_m)
    field = np.zeros(simulation.conductivity.shape + (3,), dtype=np.float32)
    field[simulation._crop] = np.asarray(axes, dtype=np.float64) @ simulation.conductivity.direction.T
    return field, np.linalg.norm(field, axis=-1).astype(np.float32)


def main() -> None:
    import numba

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256, help="box edge in 1 mm voxels (at least 200)")
    parser.add_argument("--device", default="cpu", help="where the potential is solved: cpu, cuda or auto")
    parser.add_argument("--repeat", type=int, default=3, help="timed coil moves (the best is reported)")
    args = parser.parse_args()
    if args.size < 200:
        parser.error("--size must be at least 200: the head is 150 x 190 x 180 mm")
    conductivity = layered_head(args.size)
    coil = load_coil("figure8_70mm")
    pose = coil_move_pose()
    start = time.perf_counter()
    grid = cached_grid(coil, default_cache_dir())
    grid_s = time.perf_counter() - start
    start = time.perf_counter()
    simulation = EFieldSimulation(conductivity, device=args.device, grid=grid)
    setup_s = time.perf_counter() - start
    simulation.solve(coil, pose, coil.didt_max)  # compiles (or loads) the kernels

    moves = []
    for _ in range(args.repeat):
        start = time.perf_counter()
        result = simulation.solve(coil, pose, coil.didt_max)
        total = time.perf_counter() - start
        timings = result.info["timings"]
        moves.append({"total_s": total, "primary_field_s": timings["primary_field"], "solve_s": timings["solve"],
                      "field_and_rest_s": total - timings["primary_field"] - timings["solve"]})

    # A drag: the coil moved 5 mm, solved from zero and from the previous pose's potential (warm_start).
    shifted = pose.copy()
    shifted[:3, 3] += 5.0 * pose[:3, 1]  # along the handle
    drag = {}
    for warm in (False, True):
        simulation.warm_start = warm
        simulation.solve(coil, pose, coil.didt_max)
        start = time.perf_counter()
        moved = simulation.solve(coil, shifted, coil.didt_max)
        drag["warm" if warm else "cold"] = {"total_s": time.perf_counter() - start,
                                            "iterations": moved.info["iterations"]}
    simulation.warm_start = False

    # The field step alone, ours against the numpy reference, on one potential.
    faces = dadt_faces(simulation._geometry, coil, pose, coil.didt_max, mask=simulation._mask, grid=grid)
    psi, _ = simulation.solver.solve(faces, tol=simulation.tol)
    ours, reference = [], []
    for _ in range(args.repeat):
        start = time.perf_counter()
        field = np.zeros(conductivity.shape + (3,), dtype=np.float32)
        magnitude = np.zeros(conductivity.shape, dtype=np.float32)
        simulation.solver.electric_field(psi, faces, rotation=conductivity.direction,
                                         out=field[simulation._crop], magnitude=magnitude[simulation._crop])
        ours.append(time.perf_counter() - start)
        start = time.perf_counter()
        expected, expected_magnitude = reference_field(simulation, psi, faces)
        reference.append(time.perf_counter() - start)
    peak = float(np.abs(expected_magnitude).max())
    best = min(moves, key=lambda move: move["total_s"])
    print(f"coil move on {simulation.device}: {best['total_s']:.3f} s (primary field {best['primary_field_s']:.3f}, "
          f"solve {best['solve_s']:.3f}, field and rest {best['field_and_rest_s']:.3f}; "
          f"{result.info['iterations']} iterations); 5 mm drag {drag['cold']['total_s']:.3f} s cold "
          f"({drag['cold']['iterations']} iterations), {drag['warm']['total_s']:.3f} s warm "
          f"({drag['warm']['iterations']}); field step {min(ours):.4f} s, numpy reference {min(reference):.4f} s "
          f"({min(reference) / min(ours):.1f}x)", file=sys.stderr)
    print(json.dumps({
        "machine": {"platform": platform.platform(), "processor": platform.processor(), "cpus": os.cpu_count(),
                    "numba_threads": numba.get_num_threads(), "load_average": os.getloadavg()},
        "versions": {"condnet": __version__, "numpy": np.__version__, "numba": numba.__version__},
        "size": args.size,
        "head_voxels": int(np.count_nonzero(conductivity.array)),
        "device": simulation.device,
        "iterations": result.info["iterations"],
        "coil_grid_s": grid_s,
        "setup_s": setup_s,
        "coil_move_best_s": best,
        "coil_moves": moves,
        "drag_5mm": drag,
        "field_step": {"ours_s": min(ours), "numpy_reference_s": min(reference),
                       "reference_over_ours": min(reference) / min(ours),
                       "max_difference_over_peak": float(np.abs(field - expected).max()) / peak,
                       "max_magnitude_difference_over_peak":
                           float(np.abs(magnitude - expected_magnitude).max()) / peak},
    }, indent=2))


if __name__ == "__main__":
    main()
