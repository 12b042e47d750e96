"""Primary field of a coil: ``dA/dt`` (V/m) at points, voxel-face midpoints and voxel centres.

``A(r) = mu0 / (4 pi) * I * integral dl' / |r - r'|`` along the wire.  For a straight segment ``a -> b``
(unit vector ``u``, length ``L``) the integral is exact in closed form,
``u * ln((|r-a| + |r-b| + L) / (|r-a| + |r-b| - L))``, so the field of a polyline coil is evaluated
without point sampling; ``dA/dt`` is the same with ``dI/dt`` (A/s) in place of ``I``.  A dipole coil
(moments ``m`` per unit current, m^2, at ``p``) adds ``mu0 / (4 pi) * I * m x (r - p) / |r - p|^3`` per
dipole.  The induced primary electric field is ``-dA/dt``.

Where the solver needs it
-------------------------
The SPFD solver takes, on every face between voxel ``p`` and ``p + e_d``, the component of ``dA/dt``
along the voxel axis ``+d`` at the face midpoint (:func:`dadt_faces`).  Outputs use voxel centres
(:func:`dadt_centres`, RAS components).

Units
-----
SI inside (m, A/s, V/m).  Millimetres enter only through volume affines and coil poses; they are converted
here, by :data:`MM_TO_M`, and nowhere else.

Speed
-----
The direct evaluation costs one logarithm per (point, segment) pair and runs numba-parallel.  For
interactive coil moves :class:`PrimaryFieldGrid` samples ``dA/dt`` once on a regular coil-frame grid and
resamples it (trilinear) for each pose; points outside the grid fall back to the direct evaluation.
The grid is built on one side of each mirror plane of the coil (:func:`mirror_symmetries`; the figure-8
coil is symmetric about its ``x = 0`` plane) and mirrored to the other.  Measured by
``benchmarks/bench_primary_field.py`` and listed in ``benchmarks/RESULTS.md`` (2 CPU cores, figure-8 coil of
1154 segments, ellipsoidal head of 2.7 M voxels / 8.0 M faces at 1 mm in a 256^3 box): a coil move by
resampling, the default 2 mm grid (151 x 151 x 126 nodes) built once, the direct evaluation of all faces;
grid error against the direct evaluation 0.09 % of the peak ``|dA/dt|`` (max) and 0.02 % (rms relative).
``Testing/Python/test_primary_field.py`` bounds it at 0.3 %.

Sampled coils
-------------
A coil read from a NIfTI coil file (:mod:`CondNetLogic.sampled_coil`) is its own grid: its A-field per ampere
is resampled trilinearly for each pose, as SimNIBS does, and taken as 0 outside the file's grid (with a
warning that says how much of the head lies there).  It has no wires, so the minimum-distance check does not
apply to it.
"""
from __future__ import annotations

import hashlib
import logging
import os
import re
import zipfile
import zlib
from pathlib import Path
from typing import Callable, Optional, Union

import numpy as np

from .coil import Coil, check_coil_to_ras
from .errors import Cancelled
from .volume import Volume, check_mask

__all__ = [
    "cached_grid",
    "cached_grid_path",
    "default_cache_dir",
    "DEFAULT_MIN_DISTANCE_MM",
    "MM_TO_M",
    "MU0_OVER_4PI",
    "PrimaryFieldGrid",
    "dadt_at_points",
    "dadt_centres",
    "dadt_faces",
    "mirror_symmetries",
]

logger = logging.getLogger(__name__)

#: mu0 / (4 pi) in T m / A (H/m), with mu0 = 4 pi 1e-7 H/m; the CODATA 2018 value differs by 5.5e-10 relative.
MU0_OVER_4PI = 1e-7

#: The one millimetre -> metre conversion of the E-field code.
MM_TO_M = 1e-3

#: Points closer than this to a wire (mm) are rejected: the thin-wire field is singular on the wire.
DEFAULT_MIN_DISTANCE_MM = 1.0

#: Default extent of :class:`PrimaryFieldGrid`: coil x and y in +-150 mm, 250 mm deep along +z (mm).
GRID_HALF_WIDTH_MM = 150.0
GRID_DEPTH_MM = 250.0

#: Version of the grid file layout; bump it with any change of the kernels' results, so older files are rebuilt.
_GRID_FORMAT_VERSION = 2


def _sources_sha256(coil: Coil) -> str:
    """SHA-256 of the coil's wire segments and dipoles in its frame (little-endian float64): the geometry a grid is
    computed from, which the coil's own hash (of its description) does not pin where a winding leaves a parameter to
    a code default."""
    digest = hashlib.sha256()
    for array in (coil.segments_mm(), coil.dipole_positions_mm, coil.dipole_moments_m2):
        digest.update(np.ascontiguousarray(array, dtype="<f8").tobytes())
    return digest.hexdigest()


def _sources(segments_m: np.ndarray, dipoles_m: Optional[tuple] = None) -> tuple:
    """Kernel arrays ``(starts, units, lengths, dipole positions, dipole moments)`` of wires and dipoles (m, m^2)."""
    segments = np.asarray(segments_m, dtype=np.float64)
    if segments.ndim != 3 or segments.shape[1:] != (2, 3):
        raise ValueError(f"segments must be a float array (S, 2, 3); got shape {segments.shape}")
    if not np.all(np.isfinite(segments)):
        raise ValueError("segments hold NaN or infinite coordinates")
    positions, moments = (np.zeros((0, 3)), np.zeros((0, 3))) if dipoles_m is None else dipoles_m
    positions = np.array(positions, dtype=np.float64, order="C")  # copies: the kernels compile for writable arrays
    moments = np.array(moments, dtype=np.float64, order="C")
    if positions.ndim != 2 or positions.shape[1] != 3 or moments.shape != positions.shape:
        raise ValueError(f"dipole positions and moments must both be (D, 3); got {positions.shape} and {moments.shape}")
    if not (np.all(np.isfinite(positions)) and np.all(np.isfinite(moments))):
        raise ValueError("dipoles hold NaN or infinite values")
    if len(segments) + len(positions) == 0:
        raise ValueError("the coil has neither wire segments nor dipoles")
    delta = segments[:, 1] - segments[:, 0]
    lengths = np.linalg.norm(delta, axis=1)
    if np.any(lengths == 0.0):
        raise ValueError(f"{int(np.count_nonzero(lengths == 0))} segments have zero length")
    starts = np.array(segments[:, 0], order="C")  # copies, writable: one compiled kernel signature
    units = np.array(delta / lengths[:, None], order="C")
    return starts, units, np.array(lengths, order="C"), positions, moments


def _coil_sources_m(coil: Coil, coil_to_ras: Optional[np.ndarray] = None) -> tuple:
    """``(segments_m, (dipole positions m, moments m^2))`` of a coil, in its own frame or placed by a pose."""
    if coil_to_ras is None:
        return coil.segments_mm() * MM_TO_M, (coil.dipole_positions_mm * MM_TO_M, coil.dipole_moments_m2)
    positions, moments = coil.dipoles_ras(coil_to_ras)
    return coil.segments_ras_mm(coil_to_ras) * MM_TO_M, (positions * MM_TO_M, moments)


def mirror_symmetries(segments_m: np.ndarray, *, dipoles_m: Optional[tuple] = None, tol_m: float = 1e-9) -> dict:
    """Coil-frame mirror planes ``x = 0`` (axis 0) and ``y = 0`` (axis 1) that map the coil onto itself.

    Parameters
    ----------
    segments_m : float array (S, 2, 3)
        Wire segments (start, end) in the coil frame, m (``S`` may be 0).
    dipoles_m : tuple of float arrays (D, 3), optional
        Dipole positions (m) and moments (m^2) in the coil frame.
    tol_m : float
        Largest distance (m) between a mirrored end point (or dipole) and the coil's own; moments must match
        to ``1e-9`` of the largest moment.

    Returns
    -------
    dict
        ``{axis: sign}``.  With ``M`` the mirror: ``sign = +1`` when every mirrored segment is a segment of the
        coil in the same direction, so that ``dA/dt(M r) = M dA/dt(r)``; ``-1`` when in the opposite direction
        (the current reverses), so that ``dA/dt(M r) = -M dA/dt(r)``.  A dipole moment is an axial vector: the
        mirror image of a dipole ``(p, m)`` under ``sign = +1`` is ``(M p, -M m)``, under ``-1`` ``(M p, M m)``.
        A plane that fits neither is left out.
    """
    from scipy.spatial import cKDTree

    segments = np.asarray(segments_m, dtype=np.float64).reshape(-1, 6)  # start and end of each segment
    positions, moments = (np.zeros((0, 3)), np.zeros((0, 3))) if dipoles_m is None else dipoles_m
    positions = np.asarray(positions, dtype=np.float64).reshape(-1, 3)
    moments = np.asarray(moments, dtype=np.float64).reshape(-1, 3)
    segment_tree = cKDTree(segments) if len(segments) else None
    dipole_tree = cKDTree(positions) if len(positions) else None
    moment_tol = 1e-9 * float(np.abs(moments).max()) if len(moments) else 0.0

    def maps_onto_itself(axis: int, sign: int) -> bool:
        if segment_tree is not None:
            mirrored = segments.reshape(-1, 2, 3).copy()
            mirrored[..., axis] *= -1.0
            if sign < 0:  # the current runs the other way: the mirrored segment's ends swap
                mirrored = mirrored[:, ::-1]
            if float(segment_tree.query(mirrored.reshape(-1, 6))[0].max()) > tol_m:
                return False
        if dipole_tree is not None:
            mirrored_positions = positions.copy()
            mirrored_positions[:, axis] *= -1.0
            expected = moments.copy()
            expected[:, axis] *= -1.0
            expected *= -sign  # an axial vector: the image of (p, m) is (M p, -sign M m)
            distance, index = dipole_tree.query(mirrored_positions)
            if float(distance.max()) > tol_m or float(np.abs(moments[index] - expected).max()) > moment_tol:
                return False
        return True

    found = {}
    for axis in (0, 1):
        for sign in (1, -1):
            if maps_onto_itself(axis, sign):
                found[axis] = sign
                break
    return found


def _check_didt(didt: float) -> float:
    didt = float(didt)
    if not np.isfinite(didt):
        raise ValueError(f"didt must be finite (A/s); got {didt}")
    return didt


def _raise_if_too_close(distance_m: float, min_distance_m: float) -> None:
    if distance_m < min_distance_m:
        raise ValueError(
            f"a coil wire or dipole lies {distance_m / MM_TO_M:.3g} mm from a point where the field is needed "
            f"(minimum {min_distance_m / MM_TO_M:.3g} mm): the coil must not touch or intersect the head; "
            "increase the scalp offset or move the coil"
        )


def dadt_at_points(
    points_m: np.ndarray,
    segments_m: np.ndarray,
    didt: float,
    *,
    dipoles_m: Optional[tuple] = None,
    min_distance_m: float = DEFAULT_MIN_DISTANCE_MM * MM_TO_M,
) -> np.ndarray:
    """``dA/dt`` (V/m) of straight wire segments and magnetic dipoles at arbitrary points, exact for each.

    Parameters
    ----------
    points_m : float array (N, 3), m
        Evaluation points, in the frame of ``segments_m``.
    segments_m : float array (S, 2, 3), m
        Segment start ``[:, 0]`` and end ``[:, 1]``; the current flows from start to end (``S`` may be 0 when
        there are dipoles).
    didt : float
        Current slope dI/dt, A/s.
    dipoles_m : tuple of float arrays (D, 3), optional
        Dipole positions (m) and moments per unit current (m^2), same frame.
    min_distance_m : float
        Points closer than this to a segment or dipole raise.

    Returns
    -------
    ndarray (N, 3) float64
        ``dA/dt`` in V/m, same frame as the inputs.

    Raises
    ------
    ValueError
        If shapes are wrong, values are not finite, a segment has zero length, there is no source, or a point
        lies within ``min_distance_m`` of a wire or dipole.
    """
    from . import _primary_kernels as kernels

    points = np.ascontiguousarray(points_m, dtype=np.float64)
    if points.ndim != 2 or points.shape[1] != 3:
        raise ValueError(f"points_m must be (N, 3); got shape {points.shape}")
    if not np.all(np.isfinite(points)):
        raise ValueError("points_m hold NaN or infinite values")
    sources = _sources(segments_m, dipoles_m)
    didt = _check_didt(didt)
    _check_min_distance(min_distance_m, "min_distance_m")
    out = np.zeros((points.shape[0], 3))
    distance = np.full(points.shape[0], np.inf)
    if points.shape[0]:
        kernels.source_sum_points(points, *sources, MU0_OVER_4PI * didt, out, distance)
        _raise_if_too_close(float(distance.min()), min_distance_m)
    return out


def _lattice_direct(origin_m, steps_m, mask, projection, sources, didt, min_distance_m, first_row: int = 0
                    ) -> np.ndarray:
    """Direct ``dA/dt`` on a lattice (rows ``first_row`` on of the lattice at ``origin_m``); ``sources`` as
    :func:`_sources` returns them."""
    from . import _primary_kernels as kernels

    out = np.zeros(mask.shape + (projection.shape[0],))
    row_min = np.full(mask.shape[0], np.inf)
    if mask.size:
        kernels.source_sum_lattice(
            np.ascontiguousarray(origin_m, dtype=np.float64),
            np.ascontiguousarray(steps_m, dtype=np.float64),
            mask,
            np.ascontiguousarray(projection, dtype=np.float64),
            *sources,
            MU0_OVER_4PI * didt,
            out,
            row_min,
            np.int64(first_row),
        )
        if row_min.size:
            _raise_if_too_close(float(row_min.min()), min_distance_m)
    return out


def _refuse_sampled(coil: Coil) -> None:
    if coil.sampled is not None:
        raise ValueError(f"coil {coil.name!r} is an A-field sampled on a grid already (a NIfTI coil file): it needs no "
                         "primary-field grid")


class PrimaryFieldGrid:
    """``dA/dt`` per unit ``dI/dt`` of one coil, sampled on a regular grid in the coil frame.

    Built once per coil (cost: one direct evaluation per grid node; :meth:`save` / :meth:`load` keep it
    between sessions), then resampled trilinearly for any pose in :func:`dadt_faces` /
    :func:`dadt_centres` (``grid=``).  The grid starts
    ``min_distance_mm`` beyond the wire or dipole deepest along coil ``+z`` (into the head), so every point
    inside it is at least that far from the coil; points outside the grid are evaluated directly.

    Parameters
    ----------
    coil : Coil
    spacing_mm : float
        Grid spacing, mm.  The trilinear error scales with its square (see the module docstring).
    half_width_mm : float
        The grid spans ``[-half_width_mm, half_width_mm]`` in coil ``x`` and ``y``.
    depth_mm : float
        The grid spans ``depth_mm`` along coil ``+z`` from its first plane.
    min_distance_mm : float
        Gap between the highest wire and the first grid plane.
    progress, cancel : callable, optional
        ``progress(fraction, message)``; ``cancel() -> bool`` raises :class:`Cancelled` when true.

    Attributes
    ----------
    values : float32 array (Gx, Gy, Gz, 3)
        ``dA/dt / (dI/dt)`` in V/m per A/s (= T m / A), coil-frame components.
    origin_m : ndarray (3,)
        Coil-frame position of node ``(0, 0, 0)``, m.
    spacing_m : float
    """

    def __init__(
        self,
        coil: Coil,
        *,
        spacing_mm: float = 2.0,
        half_width_mm: float = GRID_HALF_WIDTH_MM,
        depth_mm: float = GRID_DEPTH_MM,
        min_distance_mm: float = DEFAULT_MIN_DISTANCE_MM,
        progress: Optional[Callable[[float, str], None]] = None,
        cancel: Optional[Callable[[], bool]] = None,
    ) -> None:
        for name, value in (("spacing_mm", spacing_mm), ("half_width_mm", half_width_mm), ("depth_mm", depth_mm)):
            if not np.isfinite(value) or value <= 0:
                raise ValueError(f"{name} must be > 0; got {value}")
        _check_min_distance(min_distance_mm, "min_distance_mm")
        if half_width_mm < spacing_mm or depth_mm < spacing_mm:
            raise ValueError(f"the grid must span at least one cell; got spacing {spacing_mm} mm")
        _refuse_sampled(coil)
        self.coil_name = coil.name
        self.coil_sha256 = coil.sha256
        self.sources_sha256 = _sources_sha256(coil)
        segments_m, dipoles_m = _coil_sources_m(coil)
        sources = _sources(segments_m, dipoles_m)
        self.spacing_m = float(spacing_mm) * MM_TO_M
        n_xy, _, n_z = self.grid_shape(spacing_mm, half_width_mm=half_width_mm, depth_mm=depth_mm)
        z0 = float(coil.source_points_mm()[:, 2].max()) * MM_TO_M + min_distance_mm * MM_TO_M
        self.origin_m = np.array([-half_width_mm * MM_TO_M, -half_width_mm * MM_TO_M, z0])
        steps = np.eye(3) * self.spacing_m
        values = np.zeros((n_xy, n_xy, n_z, 3), dtype=np.float32)
        first, mirrors = _first_evaluated_nodes(segments_m, dipoles_m, n_xy, spacing_mm, half_width_mm)
        computed = values[first[0]:, first[1]:]

        def report(fraction: float) -> None:
            if progress is not None:
                progress(fraction, f"primary-field grid: {fraction:.0%}")

        _lattice_direct_chunked(self.origin_m + steps[0] * first[0] + steps[1] * first[1], steps,
                                np.ones(computed.shape[:3], dtype=bool), np.eye(3), sources, 1.0,
                                0.99 * min_distance_mm * MM_TO_M, report, cancel, out=computed)
        for axis in sorted(mirrors, reverse=True):  # y first, over every x; then x from the completed +x half
            low = [slice(None)] * 4
            low[axis] = slice(0, first[axis])
            factor = np.full(3, float(mirrors[axis]), dtype=np.float32)
            factor[axis] *= -1.0  # dA/dt(M r) = sign * M dA/dt(r)
            values[tuple(low)] = np.flip(values, axis)[tuple(low)] * factor
        self.values = values

    @staticmethod
    def grid_shape(
        spacing_mm: float, *, half_width_mm: float = GRID_HALF_WIDTH_MM, depth_mm: float = GRID_DEPTH_MM
    ) -> tuple:
        """Nodes along coil x, y, z of a grid with these parameters (to decide whether one pays off).

        >>> PrimaryFieldGrid.grid_shape(2.0)
        (151, 151, 126)
        """
        n_xy = int(np.floor(2.0 * half_width_mm / spacing_mm)) + 1
        return n_xy, n_xy, int(np.floor(depth_mm / spacing_mm)) + 1

    @staticmethod
    def build_cost(
        coil: Coil, spacing_mm: float, *, half_width_mm: float = GRID_HALF_WIDTH_MM, depth_mm: float = GRID_DEPTH_MM
    ) -> int:
        """Nodes that building this coil's grid evaluates directly (the others are mirrored): the cost of a build
        in the unit of :func:`dadt_faces`'s direct evaluation, one point each.

        >>> from CondNetLogic.coil import load_coil
        >>> PrimaryFieldGrid.build_cost(load_coil("figure8_70mm"), 2.0)  # x = 0 mirrors: 76 x 151 x 126
        1445976
        """
        _refuse_sampled(coil)
        n_xy, _, n_z = PrimaryFieldGrid.grid_shape(spacing_mm, half_width_mm=half_width_mm, depth_mm=depth_mm)
        segments_m, dipoles_m = _coil_sources_m(coil)
        first, _ = _first_evaluated_nodes(segments_m, dipoles_m, n_xy, spacing_mm, half_width_mm)
        return (n_xy - first[0]) * (n_xy - first[1]) * n_z

    @property
    def shape(self) -> tuple:
        """Grid nodes along coil x, y, z."""
        return tuple(self.values.shape[:3])

    def resample(self, origin_m, steps_m, mask, projection, coil_to_ras, didt):
        """Trilinear values on a RAS lattice; returns ``(out (mask.shape + (P,)), outside (mask.shape) bool)``."""
        from . import _primary_kernels as kernels

        pose = check_coil_to_ras(coil_to_ras)
        rotation = pose[:3, :3]
        translation_m = pose[:3, 3] * MM_TO_M
        grid_origin = (rotation.T @ (np.asarray(origin_m) - translation_m) - self.origin_m) / self.spacing_m
        grid_steps = np.asarray(steps_m) @ rotation / self.spacing_m
        matrix = didt * np.asarray(projection) @ rotation
        out = np.zeros(mask.shape + (matrix.shape[0],))
        outside = np.zeros(mask.shape, dtype=bool)
        if mask.size:
            kernels.resample_lattice(
                np.ascontiguousarray(grid_origin),
                np.ascontiguousarray(grid_steps),
                mask,
                self.values,
                np.ascontiguousarray(matrix),
                out,
                outside,
            )
        return out, outside

    def save(self, path, *, overwrite: bool = False):
        """Store the grid as ``.npz`` (arrays only, no pickle) to skip the build next time.

        Raises
        ------
        FileExistsError
            If ``path`` exists and ``overwrite`` is false.
        """
        from pathlib import Path

        from .io import replaced_through_temporary

        path = Path(path)
        if path.suffix != ".npz":
            raise ValueError(f"grid files end in .npz; got {path.name}")
        if path.exists() and not overwrite:
            raise FileExistsError(f"{path} exists; pass overwrite=True to replace it")
        with replaced_through_temporary(path, ".npz") as tmp:  # another process may read or build it meanwhile
            np.savez(
                tmp,
                format_version=np.int64(_GRID_FORMAT_VERSION),
                coil_name=np.str_(self.coil_name),
                coil_sha256=np.str_(self.coil_sha256),
                sources_sha256=np.str_(self.sources_sha256),
                origin_m=self.origin_m,
                spacing_m=np.float64(self.spacing_m),
                values=self.values,
            )
        return path

    @classmethod
    def load(cls, path, coil: Coil) -> PrimaryFieldGrid:
        """Read a grid written by :meth:`save` and check that it belongs to ``coil``.

        Raises
        ------
        FileNotFoundError
            If the file does not exist.
        ValueError
            If it is not a grid file of this format or was built for another coil (the coil hash differs).
        """
        from pathlib import Path

        _refuse_sampled(coil)
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"grid file {path} does not exist")
        not_a_grid = f"{path} is not a primary-field grid file (format {_GRID_FORMAT_VERSION})"
        keys = ("format_version", "coil_name", "coil_sha256", "sources_sha256", "origin_m", "spacing_m", "values")
        try:
            with np.load(path, allow_pickle=False) as data:
                fields = {key: data[key] for key in keys if key in data.files}
        except (ValueError, zipfile.BadZipFile, EOFError, zlib.error) as err:  # pickled objects; damaged archive
            raise ValueError(f"{not_a_grid}: {err}") from err
        if len(fields) < len(keys):
            raise ValueError(not_a_grid)
        try:
            version = int(fields["format_version"])
            origin_m = np.asarray(fields["origin_m"], dtype=np.float64).reshape(3)
            spacing_m = float(fields["spacing_m"])
            values = np.ascontiguousarray(fields["values"], dtype=np.float32)
        except (ValueError, TypeError) as err:
            raise ValueError(f"{not_a_grid}: {err}") from err
        if version != _GRID_FORMAT_VERSION:
            raise ValueError(not_a_grid)
        if str(fields["coil_sha256"]) != coil.sha256:
            raise ValueError(
                f"{path} was built for coil {str(fields['coil_name'])!r} with another winding; "
                f"it does not match {coil.name!r}"
            )
        sources_sha256 = _sources_sha256(coil)
        if str(fields["sources_sha256"]) != sources_sha256:
            raise ValueError(f"{path} was built from other wires than {coil.name!r} has now (a default of its winding "
                             "changed since)")
        if values.ndim != 4 or values.shape[3] != 3 or min(values.shape[:3]) < 2:
            raise ValueError(f"{path}: grid values must be (Gx, Gy, Gz, 3) with >= 2 nodes per axis")
        if not (spacing_m > 0 and np.isfinite(spacing_m)) or not np.isfinite(origin_m).all():
            raise ValueError(f"{path}: grid spacing {spacing_m} m or origin {origin_m} m is not usable")
        grid = cls.__new__(cls)
        grid.coil_name = coil.name
        grid.coil_sha256 = coil.sha256
        grid.sources_sha256 = sources_sha256
        grid.origin_m = origin_m
        grid.spacing_m = spacing_m
        grid.values = values
        return grid

    def __repr__(self) -> str:
        return (
            f"PrimaryFieldGrid(coil={self.coil_name!r}, shape={self.shape}, spacing_mm={self.spacing_m / MM_TO_M:g}, "
            f"{self.values.nbytes / 2**20:.0f} MiB)"
        )


def _first_evaluated_nodes(segments_m, dipoles_m, n_xy: int, spacing_mm: float, half_width_mm: float) -> tuple:
    """``([first x node, first y node], mirrors)`` that a :class:`PrimaryFieldGrid` build evaluates: the middle node
    along each axis whose plane is a mirror plane of the coil (:func:`mirror_symmetries`) and of the grid, whose
    nodes on the other side are mirrored, else 0."""
    centred = np.isclose((n_xy - 1) * spacing_mm, 2.0 * half_width_mm, rtol=0.0, atol=1e-9)
    mirrors = mirror_symmetries(segments_m, dipoles_m=dipoles_m) if centred else {}
    return [n_xy // 2 if axis in mirrors else 0 for axis in (0, 1)], mirrors


def _lattice_direct_chunked(origin_m, steps_m, mask, projection, sources, didt, min_distance_m, report,
                            cancel, out=None) -> np.ndarray:
    """:func:`_lattice_direct` in slabs along the first axis, calling ``report(fraction)`` and ``cancel()``.

    Fills ``out`` (shape ``mask.shape + (P,)``, any float dtype) when given, else a new float64 array.
    """
    import numba

    n = mask.shape[0]
    chunk = max(-(-n // 10), 4 * numba.get_num_threads())  # the kernel runs rows in parallel: keep threads busy
    if out is None:
        out = np.zeros(mask.shape + (projection.shape[0],))
    for first in range(0, n, chunk):
        if cancel is not None and cancel():
            raise Cancelled("primary-field evaluation cancelled")
        last = min(n, first + chunk)
        out[first:last] = _lattice_direct(origin_m, steps_m, np.ascontiguousarray(mask[first:last]), projection,
                                          sources, didt, min_distance_m, first)
        report(last / n)
    return out


def _check_min_distance(value: float, name: str) -> None:
    """Refuse a wire distance that is not a positive number: 0 or less would let a point on a wire through (inf)."""
    if not (np.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a positive distance; got {value}")


def _lattice(origin_m, steps_m, mask, projection, coil, coil_to_ras, didt, grid, min_distance_m,
             report=None, cancel=None) -> tuple:
    """``dA/dt`` projected by ``projection`` (P, 3) on a RAS lattice, direct, through ``grid`` or from a sampled coil.

    Returns ``(out (mask.shape + (P,)), n_zero)``: ``n_zero`` counts the masked points outside a sampled coil's grid,
    where ``dA/dt`` is taken as 0 (always 0 for wire and dipole coils).
    """
    _check_min_distance(min_distance_m / MM_TO_M, "min_distance_mm")
    if coil.sampled is not None:
        if grid is not None:
            _refuse_sampled(coil)
        out, outside = coil.sampled.resample(np.asarray(origin_m) / MM_TO_M, np.asarray(steps_m) / MM_TO_M, mask,
                                             projection, check_coil_to_ras(coil_to_ras), didt)
        return out, int(np.count_nonzero(outside))
    segments_m, dipoles_m = _coil_sources_m(coil, coil_to_ras)
    if grid is None:
        sources = _sources(segments_m, dipoles_m)
        if report is None and cancel is None:
            return _lattice_direct(origin_m, steps_m, mask, projection, sources, didt, min_distance_m), 0
        return _lattice_direct_chunked(origin_m, steps_m, mask, projection, sources, didt, min_distance_m,
                                       report or (lambda fraction: None), cancel), 0
    if not isinstance(grid, PrimaryFieldGrid):
        raise TypeError(f"grid must be a PrimaryFieldGrid or None; got {type(grid).__name__}")
    if grid.coil_sha256 != coil.sha256:
        raise ValueError(f"grid was built for coil {grid.coil_name!r}, not for {coil.name!r} (coil hashes differ)")
    out, outside = grid.resample(origin_m, steps_m, mask, projection, coil_to_ras, didt)
    n_outside = int(np.count_nonzero(outside))
    if n_outside:
        logger.debug("primary field: %d of %d points outside the coil grid, evaluated directly", n_outside, mask.size)
        index = np.nonzero(outside)
        ijk = np.stack(index, axis=1).astype(np.float64)
        points = origin_m + ijk @ np.asarray(steps_m)
        direct = dadt_at_points(points, segments_m, didt, dipoles_m=dipoles_m, min_distance_m=min_distance_m)
        out[index] = direct @ np.asarray(projection).T
    return out, 0


def _warn_outside_sampled(coil: Coil, n_zero: int, n_points: int, what: str) -> None:
    """Warn that ``n_zero`` of ``n_points`` evaluation points lie outside a sampled coil's grid (``dA/dt`` = 0)."""
    if n_zero:
        (x0, x1), (y0, y1), (z0, z1) = coil.sampled.extent_mm()
        logger.warning("%d of %d %s (%.1f %%) lie outside the A-field grid of coil %r (coil frame x %.0f..%.0f, "
                       "y %.0f..%.0f, z %.0f..%.0f mm): dA/dt is taken as 0 there, as SimNIBS does", n_zero, n_points,
                       what, 100.0 * n_zero / max(n_points, 1), coil.name, x0, x1, y0, y1, z0, z1)


def _geometry(volume: Volume):
    if not isinstance(volume, Volume):
        raise TypeError(f"volume_geometry must be a Volume; got {type(volume).__name__}")
    steps_m = volume.ijk_to_ras[:3, :3].T * MM_TO_M
    return volume.shape, steps_m


def _check_mask(mask, shape) -> np.ndarray:
    if mask is None:
        return np.ones(shape, dtype=bool)
    return np.ascontiguousarray(check_mask(mask, shape))


def dadt_faces(
    volume_geometry: Volume,
    coil: Coil,
    coil_to_ras: np.ndarray,
    didt: float,
    *,
    mask: Optional[np.ndarray] = None,
    grid: Optional[PrimaryFieldGrid] = None,
    min_distance_mm: float = DEFAULT_MIN_DISTANCE_MM,
    progress: Optional[Callable[[float, str], None]] = None,
    cancel: Optional[Callable[[], bool]] = None,
) -> tuple:
    """``dA/dt`` along each voxel axis at the voxel-face midpoints: the solver's ``dadt_faces``.

    Parameters
    ----------
    volume_geometry : Volume
        Grid of the conductor (only its shape and ``ijk_to_ras`` are used).
    coil : Coil
    coil_to_ras : array (4, 4)
        Coil pose, mm (see :mod:`CondNetLogic.coil`).
    didt : float
        Current slope dI/dt, A/s.
    mask : bool array (I, J, K), optional
        Voxels of the conductor; a face is evaluated only when both its voxels are in the mask (other faces
        carry no current) and is 0 elsewhere.  Default: every face.
    grid : PrimaryFieldGrid, optional
        Resample this precomputed grid instead of evaluating directly (built for the same coil).
    min_distance_mm : float
        Faces closer than this to a wire raise (direct evaluation and points outside the grid).
    progress, cancel : callable, optional
        ``progress(fraction, message)`` after each slab of the direct evaluation; ``cancel() -> bool`` polled
        before each slab raises :class:`~CondNetLogic.errors.Cancelled` when true.

    Returns
    -------
    tuple of float64 arrays ``(ax (I-1, J, K), ay (I, J-1, K), az (I, J, K-1))``
        ``ax[i, j, k]``: component of ``dA/dt`` (V/m) along the unit direction of voxel axis I at the
        midpoint between voxels ``(i, j, k)`` and ``(i+1, j, k)``; likewise for J and K.

    Raises
    ------
    ValueError
        Bad pose, mask shape, or a wire within ``min_distance_mm`` of an evaluated face.
    TypeError
        If ``mask`` is not bool or ``grid`` is not a :class:`PrimaryFieldGrid`.
    """
    shape, steps_m = _geometry(volume_geometry)
    mask = _check_mask(mask, shape)
    didt = _check_didt(didt)
    check_coil_to_ras(coil_to_ras)
    direction = volume_geometry.direction
    faces = []
    n_zero = n_faces = 0
    for axis in range(3):
        half = np.zeros(3)
        half[axis] = 0.5
        origin_m = volume_geometry.ijk_to_ras_points(half) * MM_TO_M
        low = [slice(None)] * 3
        high = [slice(None)] * 3
        low[axis] = slice(0, -1)
        high[axis] = slice(1, None)
        face_mask = np.ascontiguousarray(mask[tuple(low)] & mask[tuple(high)])
        projection = direction[:, axis][None, :]

        def report(fraction: float, axis: int = axis) -> None:
            if progress is not None:
                progress((axis + fraction) / 3, f"primary field: faces along axis {'IJK'[axis]}, {fraction:.0%}")

        out, zero = _lattice(origin_m, steps_m, face_mask, projection, coil, coil_to_ras, didt, grid,
                             min_distance_mm * MM_TO_M, report, cancel)
        faces.append(out[..., 0])
        n_zero, n_faces = n_zero + zero, n_faces + int(np.count_nonzero(face_mask))
    _warn_outside_sampled(coil, n_zero, n_faces, "conducting voxel faces")
    return tuple(faces)


def dadt_centres(
    volume_geometry: Volume,
    coil: Coil,
    coil_to_ras: np.ndarray,
    didt: float,
    *,
    mask: Optional[np.ndarray] = None,
    grid: Optional[PrimaryFieldGrid] = None,
    min_distance_mm: float = DEFAULT_MIN_DISTANCE_MM,
) -> np.ndarray:
    """``dA/dt`` (V/m, RAS components) at the voxel centres where ``mask`` is true (0 elsewhere).

    Parameters are those of :func:`dadt_faces`.

    Returns
    -------
    ndarray (I, J, K, 3) float64
        ``dA/dt`` in V/m with R, A, S components (the primary E-field is its negative).
    """
    shape, steps_m = _geometry(volume_geometry)
    mask = _check_mask(mask, shape)
    didt = _check_didt(didt)
    check_coil_to_ras(coil_to_ras)
    origin_m = volume_geometry.ijk_to_ras_points(np.zeros(3)) * MM_TO_M
    out, n_zero = _lattice(origin_m, steps_m, mask, np.eye(3), coil, coil_to_ras, didt, grid, min_distance_mm * MM_TO_M)
    _warn_outside_sampled(coil, n_zero, int(np.count_nonzero(mask)), "voxel centres")
    return out


def default_cache_dir() -> Path:
    """Per-user folder for coil grids: ``$CONDNET_CACHE_DIR/primary_field``, else ``~/.cache/condnet/primary_field``."""
    root = os.environ.get("CONDNET_CACHE_DIR")
    base = Path(root) if root else Path.home() / ".cache" / "condnet"
    return base / "primary_field"


def cached_grid_path(coil: Coil, cache_dir: Union[str, os.PathLike], *, spacing_mm: float = 2.0) -> Path:
    """Where :func:`cached_grid` keeps the coil's grid in ``cache_dir``: named by the coil's sha256 and the spacing
    (plus the coil name with anything but letters, digits, ``_``, ``.`` and ``-`` replaced, so it always lands inside
    ``cache_dir``)."""
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", coil.name)
    return Path(cache_dir) / f"{name}-{coil.sha256[:16]}-{spacing_mm:g}mm.npz"


def cached_grid(
    coil: Coil,
    cache_dir: Union[str, os.PathLike],
    *,
    spacing_mm: float = 2.0,
    progress: Optional[Callable[[float, str], None]] = None,
    cancel: Optional[Callable[[], bool]] = None,
) -> PrimaryFieldGrid:
    """The coil's :class:`PrimaryFieldGrid`, read from ``cache_dir`` or built once and stored there.

    The file (:func:`cached_grid_path`) is named by the coil's sha256, so an edited coil file gets a new grid; a
    damaged or foreign file is rebuilt (with a warning), never trusted.  A grid that cannot be stored (read-only or
    full disk) is returned all the same, with a warning.
    """
    path = cached_grid_path(coil, cache_dir, spacing_mm=spacing_mm)
    if path.is_file():
        try:
            return PrimaryFieldGrid.load(path, coil)
        except (ValueError, OSError, KeyError) as err:
            logger.warning("ignoring the cached coil grid %s (%s); rebuilding it", path, err)
    grid = PrimaryFieldGrid(coil, spacing_mm=spacing_mm, progress=progress, cancel=cancel)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        grid.save(path, overwrite=True)
    except OSError as err:  # a read-only or full disk costs the next session a rebuild, not this solve
        logger.warning("could not store the coil grid in %s (%s): it serves this session only", path, err)
    else:
        logger.info("stored the coil grid in %s", path)
    return grid
