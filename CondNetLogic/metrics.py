"""Error and summary metrics of E-fields (pure functions on arrays; shared by tests, benchmarks, papers).

* :func:`rdm` and :func:`mag`: relative difference and log-magnitude error of two fields, as in the
  SimNIBS FEM tests (global norms over all entries).
* :func:`generalized_error`: the paper's global error GE (Eq. 6) between two field-strength maps.
* :func:`compare_fields`: all of these and the ratios of their ROI statistics for two fields on one grid (e.g. CondNet
  against SimNIBS in the same head).
* :func:`roi_stats`, :func:`spherical_roi`, :func:`mask_roi`: |E| statistics in a region, e.g. the hand knob, or
  a region given as a mask or atlas label (an fMRI cluster).

References
----------
Rashed, Gomez-Tames, Hirata, IEEE TMI 39(7), 2020, doi:10.1109/TMI.2020.2969682, Eq. 6.
Saturnino et al., "SimNIBS 2.1: a comprehensive pipeline ...", 2019 (RDM and MAG).
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from .volume import Volume, check_mask

__all__ = [
    "HAND_KNOB_MNI",
    "HAND_KNOB_RADIUS_MM",
    "compare_fields",
    "generalized_error",
    "mag",
    "mask_roi",
    "rdm",
    "roi_stats",
    "spherical_roi",
]

#: Hand knob of the left primary motor cortex in MNI space (mm).  The E-field code works in subject
#: space: map this point to the subject (registration is outside this package) before using it.
HAND_KNOB_MNI = (-42.0, -13.0, 66.0)

#: Radius (mm) of the spherical hand-knob ROI.
HAND_KNOB_RADIUS_MM = 5.0


def _pair(a, b):
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"the two fields must have the same shape; got {a.shape} and {b.shape}")
    if a.size == 0:
        raise ValueError("the fields are empty")
    return a, b


def _norm(x, name):
    norm = float(np.linalg.norm(x))
    if norm == 0.0 or not np.isfinite(norm):
        raise ValueError(f"{name} has zero or non-finite norm ({norm}); the metric is undefined")
    return norm


def rdm(a, b) -> float:
    """Relative difference measure ``|| a/||a|| - b/||b|| ||`` (0: same pattern, 2: opposite).

    Norms are Euclidean over all entries (vector fields given as (N, 3) arrays, or any matching shape).

    >>> rdm([[1.0, 0, 0]], [[2.0, 0, 0]]), rdm([[1.0, 0, 0]], [[-1.0, 0, 0]])
    (0.0, 2.0)

    Raises
    ------
    ValueError
        If shapes differ, arrays are empty, or a field is zero.
    """
    a, b = _pair(a, b)
    return float(np.linalg.norm(a / _norm(a, "a") - b / _norm(b, "b")))


def mag(a, b) -> float:
    """Magnitude error ``|ln(||a|| / ||b||)|`` (0: same overall strength).

    >>> round(mag([[1.0, 0, 0]], [[0, 2.0, 0]]), 6)
    0.693147

    Raises
    ------
    ValueError
        If shapes differ, arrays are empty, or a field is zero.
    """
    a, b = _pair(a, b)
    return float(abs(np.log(_norm(a, "a") / _norm(b, "b"))))


def generalized_error(e, e_hat, mask=None) -> float:
    """Global error GE (%) between two field-strength maps, paper Eq. 6.

    ``GE = mean_i |E_i - E^_i| / max_i max(E_i, E^_i) * 100``, over the voxels ``i`` of the region
    (``mask``, default all).

    Parameters
    ----------
    e, e_hat : array, same shape
        Field strengths ``|E|`` (V/m), e.g. from uniform and non-uniform conductivity.
    mask : bool array of the same shape, optional
        Region of interest (Omega).

    Returns
    -------
    float
        GE in percent.

    Raises
    ------
    ValueError
        If shapes differ, the region is empty, or both fields are 0 in it.

    >>> generalized_error([1.0, 2.0], [1.0, 1.0])
    25.0
    """
    e, e_hat = _pair(e, e_hat)
    if mask is not None:
        mask = check_mask(mask, e.shape)
        e, e_hat = e[mask], e_hat[mask]
    if e.size == 0:
        raise ValueError("the region (mask) is empty")
    peak = float(max(e.max(), e_hat.max()))
    if peak <= 0:
        raise ValueError("both fields are 0 in the region; GE is undefined")
    return float(np.mean(np.abs(e - e_hat)) / peak * 100.0)


def spherical_roi(volume: Volume, center_ras, radius_mm: float) -> np.ndarray:
    """Voxels of ``volume`` whose centres lie within ``radius_mm`` of ``center_ras`` (RAS mm).

    Returns
    -------
    bool ndarray (I, J, K)

    Raises
    ------
    ValueError
        If the radius is not positive or the centre is not 3 finite numbers.
    """
    center = np.asarray(center_ras, dtype=np.float64).reshape(-1)
    if center.shape != (3,) or not np.all(np.isfinite(center)):
        raise ValueError(f"center_ras must be 3 finite numbers (RAS mm); got {center_ras}")
    if not radius_mm > 0:
        raise ValueError(f"radius_mm must be > 0; got {radius_mm}")
    i, j, k = np.meshgrid(*[np.arange(n) for n in volume.shape], indexing="ij", sparse=True)
    affine = volume.ijk_to_ras
    distance2 = 0.0
    for row in range(3):
        coordinate = affine[row, 0] * i + affine[row, 1] * j + affine[row, 2] * k + affine[row, 3]
        distance2 = distance2 + (coordinate - center[row]) ** 2
    return np.asarray(distance2 <= radius_mm**2)


def compare_fields(a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> dict:
    """Agreement of two E-fields on one grid in a region: ``b`` against the reference ``a``.

    Parameters
    ----------
    a, b : ndarray (I, J, K, 3) or (I, J, K)
        Vector fields (V/m, the same frame's components) or field strengths |E| (V/m); a vector field is compared
        with a strength by its magnitude.
    mask : bool ndarray (I, J, K)
        Region (e.g. the voxels where both fields are inside their conductors).

    Returns
    -------
    dict
        ``n_voxels``; ``ge_percent`` (paper Eq. 6), ``pearson_r`` of the strengths, ``mean_a``, ``mean_b``,
        ``p99_a``, ``p99_b`` (V/m) and the ratios ``mean_ratio``, ``p99_ratio`` (b / a); with two vector fields also
        ``rdm`` and ``mag`` (SimNIBS's measures over the region's vectors).

    Raises
    ------
    ValueError
        If the grids differ, the region is empty, or a field is zero in it.
    """
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    vectors = a.ndim == 4 and b.ndim == 4
    strength_a = np.linalg.norm(a, axis=-1) if a.ndim == 4 else a
    strength_b = np.linalg.norm(b, axis=-1) if b.ndim == 4 else b
    if strength_a.shape != strength_b.shape:
        raise ValueError(f"the two fields must be on one grid; got {strength_a.shape} and {strength_b.shape}")
    mask = check_mask(mask, strength_a.shape)
    ea, eb = strength_a[mask], strength_b[mask]
    if ea.size < 2:
        raise ValueError(f"the region holds {ea.size} voxel(s); at least 2 are needed")
    if not (ea.max() > 0 and eb.max() > 0):
        raise ValueError("a field is zero everywhere in the region")
    p99_a, p99_b = np.percentile(ea, 99.0), np.percentile(eb, 99.0)
    result = {
        "n_voxels": int(ea.size),
        "ge_percent": generalized_error(ea, eb),
        "pearson_r": float(np.corrcoef(ea, eb)[0, 1]),
        "mean_a": float(ea.mean()),
        "mean_b": float(eb.mean()),
        "mean_ratio": float(eb.mean() / ea.mean()),
        "p99_a": float(p99_a),
        "p99_b": float(p99_b),
        "p99_ratio": float(p99_b / p99_a),
    }
    if vectors:
        result.update(rdm=rdm(a[mask], b[mask]), mag=mag(a[mask], b[mask]))
    return result


def mask_roi(mask: Volume, grid: Volume, labels: Optional[Sequence[int]] = None) -> np.ndarray:
    """A region given as a mask or label volume, on ``grid``'s voxels (nearest neighbour, through RAS mm).

    Parameters
    ----------
    mask : Volume
        Scalar volume on any grid: its non-zero voxels, or those holding one of ``labels``, are the region.
    grid : Volume
        The grid to put the region on (the conductivity's).
    labels : sequence of int, optional
        Label values to take (an atlas region); default every non-zero voxel.

    Returns
    -------
    bool ndarray (I, J, K) on ``grid``

    Raises
    ------
    ValueError
        If the mask is not scalar, or none of its voxels is in the region (or holds one of ``labels``).
    """
    from .preprocessing import resample_to

    if mask.array.ndim != 3:
        raise ValueError(f"an ROI mask must be a scalar 3D volume; got shape {mask.array.shape}")
    values = np.asarray(mask.array)
    region = values != 0 if labels is None else np.isin(values, np.asarray(labels))
    if not region.any():
        what = "non-zero voxel" if labels is None else f"voxel labelled {', '.join(str(v) for v in labels)}"
        raise ValueError(f"the ROI mask holds no {what}")
    return resample_to(mask.with_array(region.astype(np.uint8)), grid, interpolation="nearest").array > 0


def roi_stats(e_magnitude: Volume, mask: Optional[np.ndarray] = None) -> dict:
    """Statistics of ``|E|`` (V/m) in a region.

    Parameters
    ----------
    e_magnitude : Volume (I, J, K)
        Field strength in V/m.
    mask : bool array (I, J, K), optional
        Region; default the voxels where ``|E| > 0`` (the conductor).

    Returns
    -------
    dict
        ``n_voxels``, ``volume_mm3``, ``mean``, ``sd``, ``max``, ``p95``, ``p99``, ``p99_9`` (V/m), and
        ``focality_mm3``: volume of the region where ``|E| >= 0.5 * p99_9`` (mm^3).

    Raises
    ------
    ValueError
        If the mask shape differs from the volume or the region is empty.
    TypeError
        If ``e_magnitude`` is not a scalar Volume or ``mask`` is not bool.
    """
    if not isinstance(e_magnitude, Volume) or e_magnitude.array.ndim != 3:
        raise TypeError("e_magnitude must be a scalar Volume (I, J, K)")
    values = np.asarray(e_magnitude.array, dtype=np.float64)
    if mask is None:
        mask = values > 0
    selected = values[check_mask(mask, values.shape)]
    if selected.size == 0:
        raise ValueError("the region of interest is empty (no voxel in the mask)")
    voxel_mm3 = float(abs(np.linalg.det(e_magnitude.ijk_to_ras[:3, :3])))
    p95, p99, p999 = np.percentile(selected, [95.0, 99.0, 99.9])
    return {
        "n_voxels": int(selected.size),
        "volume_mm3": float(selected.size * voxel_mm3),
        "mean": float(selected.mean()),
        "sd": float(selected.std()),
        "max": float(selected.max()),
        "p95": float(p95),
        "p99": float(p99),
        "p99_9": float(p999),
        "focality_mm3": float(np.count_nonzero(selected >= 0.5 * p999) * voxel_mm3),
    }
