"""Primary field dA/dt for one coil move on a 256^3 head box: direct closed form vs precomputed coil grid.

asv-style classes (``params``, ``param_names``, ``setup``, ``time_*``, ``track_*``), also runnable as a
script that prints the numbers with the machine and versions::

    python benchmarks/bench_primary_field.py            # 256^3, 1 mm, default 2 mm grid
    python benchmarks/bench_primary_field.py --size 128 --grid-spacing 3
    python benchmarks/bench_primary_field.py --coil my_coil.ccd    # any coil name or file (.json, .ccd, .tcd)

The head is an ellipsoid (semi-axes 75/95/90 mm, about 2.7 million voxels at 1 mm) filling a 256 mm box;
the coil (default: the shipped figure-8, 1154 segments) sits 4 mm above its vertex, tilted.  What is timed:

* ``time_grid_faces``: ``dadt_faces`` on every head face by resampling a prebuilt coil-frame grid — the
  cost of a coil move in the Slicer module (target <= 1 s on the CPU);
* ``time_grid_build``: building that grid (once per coil);
* ``time_direct_sample``: the exact closed form at every 64th head voxel; per point it costs what a face
  costs, so ``track_direct_estimate_s`` scales it to all head faces.

``track_grid_error`` is the largest ``|grid - direct|`` on that sample relative to the largest ``|dA/dt|``
there, ``track_grid_rms_error`` the root mean square of ``|grid - direct| / |direct|``.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time

import numpy as np

from CondNetLogic import __version__
from CondNetLogic.coil import coil_pose, load_coil
from CondNetLogic.primary_field import PrimaryFieldGrid, dadt_centres, dadt_faces
from CondNetLogic.volume import Volume

SAMPLE_STRIDE = 64


def head_box(size: int, spacing_mm: float = 1.0):
    """An ellipsoidal head mask in a ``size^3`` RAS box centred at the origin, and its Volume."""
    axis = (np.arange(size) - (size - 1) / 2) * spacing_mm
    x, y, z = np.meshgrid(axis, axis, axis, indexing="ij", sparse=True)
    mask = (x / 75.0) ** 2 + (y / 95.0) ** 2 + (z / 90.0) ** 2 <= 1.0
    origin = -(size - 1) / 2 * spacing_mm
    return mask, Volume.from_geometry(np.zeros((size,) * 3, dtype=np.uint8), spacing=(spacing_mm,) * 3,
                                      origin=(origin,) * 3)


def coil_move_pose():
    """The coil over the vertex, tilted towards the left: a C3-like position."""
    normal = np.array([0.35, 0.0, -1.0])
    scalp = -normal / np.linalg.norm(normal) * 1.0
    # walk outwards until the scalp point leaves the ellipsoid
    while (scalp[0] / 75.0) ** 2 + (scalp[1] / 95.0) ** 2 + (scalp[2] / 90.0) ** 2 <= 1.0:
        scalp = scalp - normal / np.linalg.norm(normal)
    return coil_pose(scalp, normal, [0.0, 1.0, 0.2])


class PrimaryFieldSuite:
    """dA/dt on all faces of a head for one coil pose."""

    params = ([256], [2.0])
    param_names = ["size", "grid_spacing_mm"]
    timeout = 1800
    coil_name = "figure8_70mm"

    def setup(self, size, grid_spacing_mm):
        self.coil = load_coil(self.coil_name)
        self.mask, self.volume = head_box(size)
        self.pose = coil_move_pose()
        start = time.perf_counter()
        self.grid = PrimaryFieldGrid(self.coil, spacing_mm=grid_spacing_mm)
        self.grid_build_s = time.perf_counter() - start
        self.sample = np.zeros_like(self.mask)
        self.sample.reshape(-1)[::SAMPLE_STRIDE] = self.mask.reshape(-1)[::SAMPLE_STRIDE]
        m = self.mask
        self.n_faces = int((m[1:] & m[:-1]).sum() + (m[:, 1:] & m[:, :-1]).sum() + (m[:, :, 1:] & m[:, :, :-1]).sum())
        # compile the kernels outside the timed region
        tiny = np.zeros_like(self.mask)
        tiny[size // 2, size // 2, size // 2] = True
        dadt_centres(self.volume, self.coil, self.pose, 1.0, mask=tiny, grid=self.grid)
        dadt_centres(self.volume, self.coil, self.pose, 1.0, mask=tiny)

    def time_grid_faces(self, size, grid_spacing_mm):
        dadt_faces(self.volume, self.coil, self.pose, self.coil.didt_max, mask=self.mask, grid=self.grid)

    def time_direct_sample(self, size, grid_spacing_mm):
        dadt_centres(self.volume, self.coil, self.pose, self.coil.didt_max, mask=self.sample)

    def track_grid_build_s(self, size, grid_spacing_mm):
        return self.grid_build_s

    def track_direct_estimate_s(self, size, grid_spacing_mm):
        start = time.perf_counter()
        self.time_direct_sample(size, grid_spacing_mm)
        return (time.perf_counter() - start) * self.n_faces / int(self.sample.sum())

    def _sample_errors(self):
        direct = dadt_centres(self.volume, self.coil, self.pose, 1.0, mask=self.sample)[self.sample]
        resampled = dadt_centres(self.volume, self.coil, self.pose, 1.0, mask=self.sample, grid=self.grid)[self.sample]
        difference = np.linalg.norm(resampled - direct, axis=1)
        norm = np.linalg.norm(direct, axis=1)
        return difference.max() / norm.max(), float(np.sqrt(np.mean((difference / norm) ** 2)))

    def track_grid_error(self, size, grid_spacing_mm):
        return float(self._sample_errors()[0])

    def track_grid_rms_error(self, size, grid_spacing_mm):
        return self._sample_errors()[1]


def main() -> None:
    """Run the suite once and print the numbers as JSON (with machine and versions)."""
    import numba

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256, help="head box edge in 1 mm voxels")
    parser.add_argument("--grid-spacing", type=float, default=2.0, help="coil grid spacing, mm")
    parser.add_argument("--repeat", type=int, default=3, help="timed coil moves (best is reported)")
    parser.add_argument("--coil", default=PrimaryFieldSuite.coil_name, help="coil name or coil file")
    args = parser.parse_args()
    suite = PrimaryFieldSuite()
    suite.coil_name = args.coil
    suite.setup(args.size, args.grid_spacing)
    moves = []
    for _ in range(args.repeat):
        start = time.perf_counter()
        suite.time_grid_faces(args.size, args.grid_spacing)
        moves.append(time.perf_counter() - start)
    max_error, rms_error = suite._sample_errors()
    result = {
        "machine": {"platform": platform.platform(), "processor": platform.processor(), "cpus": os.cpu_count(),
                    "numba_threads": numba.get_num_threads(), "load_average": os.getloadavg()},
        "versions": {"condnet": __version__, "numpy": np.__version__, "numba": numba.__version__},
        "size": args.size,
        "head_voxels": int(suite.mask.sum()),
        "head_faces": suite.n_faces,
        "coil": suite.coil.name,
        "coil_segments": int(suite.coil.segments_mm().shape[0]),
        "coil_dipoles": len(suite.coil.dipole_positions_mm),
        "grid": {"spacing_mm": args.grid_spacing, "shape": list(suite.grid.shape),
                 "build_s": suite.grid_build_s},
        "coil_move_grid_s": {"best": min(moves), "all": moves},
        "direct_estimate_s": suite.track_direct_estimate_s(args.size, args.grid_spacing),
        "grid_error": {"max_over_peak": float(max_error), "rms_relative": rms_error},
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
