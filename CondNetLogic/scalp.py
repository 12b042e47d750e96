"""Scalp geometry on a head mask: surface points, inward normals, and EEG 10-10 positions (RAS, mm).

Used to place a TMS coil: the coil centre sits above a scalp point, its +z axis along the inward normal
(see :mod:`CondNetLogic.coil` for the coil frame).  EEG positions follow the 10-20/10-10 proportional
scheme: points at fixed fractions of scalp arcs from nasion (Nz) to inion (Iz) over the vertex, and from the
left to the right pre-auricular point (LPA, RPA) through Cz.
"""
from __future__ import annotations

from typing import Mapping

import numpy as np

from .volume import Volume

__all__ = ["EEG_1010_CENTRAL", "eeg_position", "head_centre", "scalp_normal", "scalp_point_along_ray"]

#: Fractions of the LPA -> Cz -> RPA arc (coronal line) and of the Nz -> Cz -> Iz arc (midline).
EEG_1010_CENTRAL = {
    "T7": ("coronal", 0.1), "C5": ("coronal", 0.2), "C3": ("coronal", 0.3), "C1": ("coronal", 0.4),
    "Cz": ("coronal", 0.5), "C2": ("coronal", 0.6), "C4": ("coronal", 0.7), "C6": ("coronal", 0.8),
    "T8": ("coronal", 0.9), "Fpz": ("midline", 0.1), "AFz": ("midline", 0.2), "Fz": ("midline", 0.3),
    "FCz": ("midline", 0.4), "CPz": ("midline", 0.6), "Pz": ("midline", 0.7), "POz": ("midline", 0.8),
    "Oz": ("midline", 0.9),
}
_STEP_MM = 0.5


def _inside(mask: Volume, points_ras: np.ndarray) -> np.ndarray:
    """Nearest-voxel lookup of a boolean mask at RAS points (..., 3); outside the grid is False."""
    ijk = np.rint(mask.ras_to_ijk_points(points_ras)).astype(np.int64)
    shape = np.array(mask.shape)
    valid = np.all((ijk >= 0) & (ijk < shape), axis=-1)
    result = np.zeros(ijk.shape[:-1], dtype=bool)
    idx = ijk[valid]
    result[valid] = mask.array[idx[:, 0], idx[:, 1], idx[:, 2]] > 0
    return result


def head_centre(mask: Volume) -> np.ndarray:
    """Centroid of the head mask in RAS mm.

    Raises
    ------
    ValueError
        If the mask is empty.
    """
    ijk = np.argwhere(mask.array > 0)
    if len(ijk) == 0:
        raise ValueError("the head mask is empty")
    return mask.ijk_to_ras_points(ijk.mean(axis=0))


def scalp_point_along_ray(mask: Volume, origin_ras, direction, *, max_distance_mm: float = 300.0) -> np.ndarray:
    """Outermost head-mask point on the ray ``origin + t * direction`` (t >= 0), RAS mm.

    Raises
    ------
    ValueError
        If the ray never meets the mask.
    """
    direction = np.asarray(direction, dtype=float)
    direction = direction / np.linalg.norm(direction)
    t = np.arange(0.0, max_distance_mm, _STEP_MM)
    points = np.asarray(origin_ras, dtype=float) + t[:, np.newaxis] * direction
    inside = np.flatnonzero(_inside(mask, points))
    if len(inside) == 0:
        raise ValueError(f"the ray from {np.round(origin_ras, 1)} along {np.round(direction, 3)} misses the head")
    return points[inside[-1]]


def scalp_normal(mask: Volume, point_ras, *, radius_mm: float = 6.0) -> np.ndarray:
    """Unit inward normal (RAS) of the head surface near ``point_ras``.

    Estimated as the direction from the point to the centroid of the mask voxels within ``radius_mm``:
    on a smooth surface that centroid lies straight inside, and it is robust to the staircase.
    """
    point = np.asarray(point_ras, dtype=float)
    centre_ijk = np.rint(mask.ras_to_ijk_points(point)).astype(int)
    reach = np.ceil(radius_mm / mask.spacing).astype(int) + 1
    lo = np.maximum(centre_ijk - reach, 0)
    hi = np.minimum(centre_ijk + reach + 1, mask.shape)
    block = np.argwhere(mask.array[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]] > 0) + lo
    points = mask.ijk_to_ras_points(block)
    near = points[np.linalg.norm(points - point, axis=1) <= radius_mm]
    if len(near) == 0:
        raise ValueError(f"no head voxels within {radius_mm} mm of {np.round(point, 1)}")
    inward = near.mean(axis=0) - point
    norm = np.linalg.norm(inward)
    if norm < 1e-6:
        raise ValueError(f"{np.round(point, 1)} is not on the head surface")
    return inward / norm


def _arc(mask: Volume, start, end, via_direction, n: int = 181) -> np.ndarray:
    """Scalp points (n, 3) from ``start`` to ``end`` over the side that ``via_direction`` points to."""
    start, end = np.asarray(start, float), np.asarray(end, float)
    origin = 0.5 * (start + end)
    u = (start - origin) / np.linalg.norm(start - origin)
    v = np.asarray(via_direction, float) - np.dot(via_direction, u) * u
    v /= np.linalg.norm(v)
    angles = np.linspace(0.0, np.pi, n)
    return np.array([scalp_point_along_ray(mask, origin, np.cos(a) * u + np.sin(a) * v) for a in angles])


def _at_fraction(arc: np.ndarray, fraction: float) -> np.ndarray:
    lengths = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(arc, axis=0), axis=1))])
    target = fraction * lengths[-1]
    return np.array([np.interp(target, lengths, arc[:, d]) for d in range(3)])


def eeg_position(name: str, landmarks: Mapping[str, np.ndarray], mask: Volume) -> np.ndarray:
    """RAS position (mm) of a 10-10 electrode on the scalp of ``mask``.

    Parameters
    ----------
    name : str
        One of :data:`EEG_1010_CENTRAL` (C3, Cz, Fz, ...).
    landmarks : mapping
        ``Nz``, ``Iz``, ``LPA``, ``RPA`` as RAS points (mm).
    mask : Volume
        Head mask (non-zero inside the head), any orientation.

    Notes
    -----
    Cz is the midpoint of the Nz-Iz arc, refined as the midpoint of the LPA-RPA arc through it; the coronal
    arc for C3/C4 runs LPA -> Cz -> RPA, the midline arc Nz -> Cz -> Iz.  "Up" is RAS +S, projected
    perpendicular to each arc's chord.
    """
    if name not in EEG_1010_CENTRAL:
        raise ValueError(f"unknown 10-10 position {name!r}; known: {', '.join(EEG_1010_CENTRAL)}")
    missing = [key for key in ("Nz", "Iz", "LPA", "RPA") if key not in landmarks]
    if missing:
        raise ValueError(f"landmarks {missing} are missing; need Nz, Iz, LPA and RPA (RAS mm)")
    nz, iz, lpa, rpa = (np.asarray(landmarks[k], dtype=float) for k in ("Nz", "Iz", "LPA", "RPA"))
    up = np.array([0.0, 0.0, 1.0])
    midline = _arc(mask, nz, iz, up)
    cz = _at_fraction(midline, 0.5)
    coronal_up = cz - 0.5 * (lpa + rpa)
    coronal = _arc(mask, lpa, rpa, coronal_up)
    cz = _at_fraction(coronal, 0.5)
    line, fraction = EEG_1010_CENTRAL[name]
    if line == "coronal":
        return _at_fraction(coronal, fraction)
    return _at_fraction(_arc(mask, nz, iz, cz - 0.5 * (nz + iz)), fraction)
