"""A pose search (``strongest_pose``: one solve per handle angle) on a head small enough for direct dA/dt.

On a head with fewer conducting voxel faces than the coil grid's build evaluates (1.45 M for the shipped figure-8 at
2 mm; a 2 mm head has about 1 M), one solve is cheapest with the exact primary field at every face, but a search of
many poses is not: ``EFieldSimulation`` in the ``auto`` mode builds the grid at the first pose when the poses
together cost more (``EFieldSimulation.grid_pays_off``), and uses a grid already in the cache at once.  This benchmark
runs the same search three ways, in one process, on a layered ellipsoidal head (semi-axes 75/95/90 mm; scalp, skull,
CSF and brain at 0.465/0.010/1.654/0.275 S/m from the outside in) with the coil over a C3-like position:

* ``direct``: the exact field at every face for every pose (what ``auto`` chose for such a head before);
* ``auto, empty cache``: the grid is built at the first pose, then resampled;
* ``auto, cached grid``: the grid file is already in the cache folder (a later session).

Then ``--moves`` single solves in the ``auto`` mode with an empty cache, the coil moved 2 mm along its handle each
time, as a user moves it in the Slicer panel: the first goes direct, and the second builds the grid once the direct
evaluations would cost more than its build.

::

    python benchmarks/bench_pose_search.py                       # 2 mm head in a 128^3 box, 12 handle angles
    python benchmarks/bench_pose_search.py --angles 4 --size 96 --moves 0  # quicker

Prints JSON (machine, versions, faces, per-way time, the mode each used, the strongest angle and its ROI mean |E|,
the ratio direct / auto) and a one-line summary on stderr.  The solver is built once per way and not timed; the
kernels are compiled before the timing.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_coil_move import layered_head  # noqa: E402
from bench_primary_field import coil_move_pose  # noqa: E402

from CondNetLogic import __version__  # noqa: E402
from CondNetLogic.coil import DEFAULT_SCALP_OFFSET_MM, coil_pose, load_coil  # noqa: E402
from CondNetLogic.efield import EFieldSimulation, strongest_pose  # noqa: E402
from CondNetLogic.metrics import spherical_roi  # noqa: E402
from CondNetLogic.scalp import handle_direction  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=128, help="box size, voxels (default 128)")
    parser.add_argument("--spacing", type=float, default=2.0, help="voxel size, mm (default 2)")
    parser.add_argument("--angles", type=int, default=12, help="handle angles 0, 180/N, ... deg (default 12)")
    parser.add_argument("--moves", type=int, default=4, help="single coil moves after the searches (default 4)")
    args = parser.parse_args(argv)

    coil = load_coil("figure8_70mm")
    conductivity = layered_head(args.size, args.spacing)
    start = coil_move_pose()
    normal = start[:3, 2]  # coil +z, into the head
    scalp = start[:3, 3] + DEFAULT_SCALP_OFFSET_MM * normal  # the scalp point under the coil centre
    poses = [coil_pose(scalp, normal, handle_direction(normal, angle))
             for angle in np.arange(args.angles) * 180.0 / args.angles]
    roi = spherical_roi(conductivity, scalp + 20.0 * normal, 10.0) & (conductivity.array > 0)
    didt = coil.didt_max

    warm = EFieldSimulation(conductivity, device="cpu", primary_field="direct")  # compile every kernel untimed
    warm.solve(coil, poses[0], didt)
    rows = {}
    with tempfile.TemporaryDirectory() as cache:
        for name, mode in (("direct", "direct"), ("auto, empty cache", "auto"), ("auto, cached grid", "auto")):
            simulation = EFieldSimulation(conductivity, device="cpu", primary_field=mode, grid_cache_dir=cache)
            begin = time.perf_counter()
            best, result, stats = strongest_pose(simulation, coil, poses, didt, roi)
            seconds = time.perf_counter() - begin
            # The mode is chosen at the first pose and kept: a grid built there serves every later pose.
            primary = result.info["primary_field"]
            rows[name] = {"seconds": round(seconds, 2), "primary_field": primary, "best_angle_deg":
                          float(best * 180.0 / args.angles), "best_roi_mean_v_per_m": round(stats[best]["mean"], 3)}
            print(f"{name}: {seconds:.1f} s ({primary})", file=sys.stderr)
    moves = []
    with tempfile.TemporaryDirectory() as cache:
        simulation = EFieldSimulation(conductivity, device="cpu", grid_cache_dir=cache)
        for move in range(args.moves):
            pose = poses[0].copy()
            pose[:3, 3] += 2.0 * move * pose[:3, 1]  # 2 mm along the handle per move
            begin = time.perf_counter()
            result = simulation.solve(coil, pose, didt)
            moves.append({"seconds": round(time.perf_counter() - begin, 2), "mode": result.info["primary_field"]})
            print(f"move {move + 1}: {moves[-1]['seconds']} s ({moves[-1]['mode']})", file=sys.stderr)
    report = {
        "benchmark": "bench_pose_search",
        "machine": {"platform": platform.platform(), "processor": platform.processor(), "cpus": os.cpu_count()},
        "condnet": __version__,
        "numpy": np.__version__,
        "head": {"box": args.size, "spacing_mm": args.spacing, "conducting_faces": warm.n_faces},
        "poses": len(poses),
        "ways": rows,
        "single_moves_auto_empty_cache": moves,
        "ratio_direct_over_auto_empty_cache": round(rows["direct"]["seconds"] / rows["auto, empty cache"]["seconds"],
                                                    2),
        "ratio_direct_over_auto_cached_grid": round(rows["direct"]["seconds"] / rows["auto, cached grid"]["seconds"],
                                                    2),
    }
    print(json.dumps(report, indent=2))
    print(f"bench_pose_search: {len(poses)} poses on {warm.n_faces} faces: direct {rows['direct']['seconds']} s, "
          f"auto {rows['auto, empty cache']['seconds']} s (empty cache), {rows['auto, cached grid']['seconds']} s "
          "(cached grid)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
