"""Private resampling helpers for :mod:`CondNetLogic.preprocessing`.

Two paths put an array onto a target grid (shape plus voxel-to-RAS affine):

* the *lattice* path, taken when every source voxel centre falls exactly on a target voxel centre
  (the two affines differ by an axis permutation/flip and an integer shift): an exact copy with
  ``transpose``/``flip`` and integer crop/pad, no interpolation;
* the SimpleITK path otherwise: ``sitk.ResampleImageFilter`` with an identity transform, so points are
  matched through world (scanner) coordinates.  The conversion RAS -> LPS happens only here.

Also here: small geometry helpers (fields of view, mask bounds), the matrix of a SimpleITK rigid transform,
and the steps of the head mask (percentile, clipped histogram and Otsu's threshold, largest connected
component, hole filling): checked wrappers around the numba kernels of :mod:`._mask_kernels`, whose results
equal numpy's and scipy's bit for bit.
"""
from __future__ import annotations

import itertools
import math
from typing import NamedTuple

import numpy as np

from .volume import Volume, ras_to_lps_affine

INTERPOLATIONS = ("linear", "nearest", "bspline")

#: Largest deviation of an affine ratio from a signed permutation matrix (entries) and from an integer shift
#: (voxels) that still counts as "same lattice".  NIfTI stores affines in float32, ~1e-7 relative.
_LATTICE_ATOL_MATRIX = 1e-4
_LATTICE_ATOL_SHIFT = 1e-3


def check_interpolation(interpolation: str) -> None:
    """Raise ``ValueError`` unless ``interpolation`` is one of :data:`INTERPOLATIONS`."""
    if interpolation not in INTERPOLATIONS:
        raise ValueError(f"interpolation must be one of {INTERPOLATIONS}; got {interpolation!r}")


def output_dtype(dtype: np.dtype, interpolation: str) -> np.dtype:
    """Dtype of a resampled array: kept for ``nearest``, else float32 (float64 stays float64)."""
    dtype = np.dtype(dtype)
    if interpolation == "nearest":
        return dtype
    return np.dtype(np.float64) if dtype == np.float64 else np.dtype(np.float32)


def closest_axes(direction: np.ndarray) -> tuple:
    """For each world axis R, A, S, the voxel axis closest to it and the sign of that voxel axis.

    Parameters
    ----------
    direction : ndarray (3, 3)
        World (RAS) vectors of the voxel axes as columns.

    Returns
    -------
    axes : tuple of int
        ``axes[w]`` is the voxel axis that runs closest to world axis ``w``.
    signs : tuple of int
        ``+1`` when that voxel axis points along ``+w``, ``-1`` when it points along ``-w``.

    Notes
    -----
    All six assignments are tried and the one with the largest total ``|cos|`` wins, so an oblique axis at
    45 degrees can never be chosen twice.
    """
    direction = np.asarray(direction, dtype=float)
    best = max(itertools.permutations(range(3)), key=lambda p: sum(abs(direction[w, p[w]]) for w in range(3)))
    signs = tuple(1 if direction[w, best[w]] >= 0 else -1 for w in range(3))
    return tuple(int(a) for a in best), signs


def reorder(array: np.ndarray, axes: tuple, signs: tuple) -> np.ndarray:
    """Transpose the three spatial axes of ``array`` into ``axes`` order and flip where ``signs`` is -1."""
    order = tuple(axes) + tuple(range(3, array.ndim))
    out = np.transpose(array, order)
    flips = tuple(d for d in range(3) if signs[d] < 0)
    return np.flip(out, axis=flips) if flips else out


def reorder_affine(affine: np.ndarray, shape: tuple, axes: tuple, signs: tuple) -> np.ndarray:
    """Affine of ``reorder(array, axes, signs)`` given the affine and spatial shape of ``array``.

    The new index ``n`` along output axis ``d`` is the old index ``n`` (sign +1) or ``shape - 1 - n``
    (sign -1) along old axis ``axes[d]``; only whole columns are moved, so the result is exact.
    """
    new_to_old = np.zeros((4, 4))
    new_to_old[3, 3] = 1.0
    for d in range(3):
        old = axes[d]
        new_to_old[old, d] = signs[d]
        if signs[d] < 0:
            new_to_old[old, 3] = shape[old] - 1
    return np.asarray(affine, dtype=float) @ new_to_old


def lattice_map(src_affine: np.ndarray, dst_affine: np.ndarray):
    """How source voxels sit on the target lattice, or ``None`` when they do not.

    Returns
    -------
    tuple or None
        ``(axes, signs, shift)``: source axis per target axis, its sign, and the integer target index
        of source voxel 0 along each target axis (before any flip).
    """
    src_to_dst = np.linalg.solve(np.asarray(dst_affine, dtype=float), np.asarray(src_affine, dtype=float))
    matrix = src_to_dst[:3, :3]
    rounded = np.round(matrix)
    if not np.allclose(matrix, rounded, atol=_LATTICE_ATOL_MATRIX):
        return None
    if not np.array_equal(np.abs(rounded).sum(axis=0), np.ones(3)) or abs(round(np.linalg.det(rounded))) != 1:
        return None
    shift = src_to_dst[:3, 3]
    if not np.allclose(shift, np.round(shift), atol=_LATTICE_ATOL_SHIFT):
        return None
    axes = tuple(int(np.argmax(np.abs(rounded[d]))) for d in range(3))
    signs = tuple(int(rounded[d, axes[d]]) for d in range(3))
    return axes, signs, np.round(shift).astype(np.int64)


def paste_lattice(array: np.ndarray, mapping: tuple, dst_shape: tuple, *, dtype, default: float) -> np.ndarray:
    """Exact copy of ``array`` onto a target lattice described by :func:`lattice_map` (crop and pad)."""
    axes, signs, shift = mapping
    src = reorder(array, axes, signs)
    out = np.full(tuple(dst_shape) + array.shape[3:], default, dtype=dtype)
    src_slices, dst_slices = [], []
    for d in range(3):
        length = src.shape[d]
        # After a flip, reordered index 0 is old index length-1, which lands at shift - (length - 1).
        start = int(shift[d]) if signs[d] > 0 else int(shift[d]) - (length - 1)
        lo, hi = max(start, 0), min(start + length, dst_shape[d])
        if hi <= lo:
            return out
        dst_slices.append(slice(lo, hi))
        src_slices.append(slice(lo - start, hi - start))
    out[tuple(dst_slices)] = src[tuple(src_slices)]
    return out


def _sitk_image(array: np.ndarray, affine_ras: np.ndarray):
    """A SimpleITK scalar image of a 3D array ``(I, J, K)`` with its voxel-to-RAS affine."""
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(np.ascontiguousarray(np.transpose(array, (2, 1, 0))))
    set_geometry(image, affine_ras)
    return image


def set_geometry(image, affine_ras: np.ndarray) -> None:
    """Set spacing, origin and direction of a SimpleITK image from a voxel-to-RAS affine (mm)."""
    affine_lps = ras_to_lps_affine(affine_ras)
    spacing = np.linalg.norm(affine_lps[:3, :3], axis=0)
    image.SetSpacing(tuple(float(s) for s in spacing))
    image.SetOrigin(tuple(float(o) for o in affine_lps[:3, 3]))
    image.SetDirection(tuple(float(d) for d in (affine_lps[:3, :3] / spacing[np.newaxis, :]).ravel()))


def _sitk_dtype(array: np.ndarray) -> np.ndarray:
    """``array`` in a dtype SimpleITK accepts (bool -> uint8, float16 -> float32)."""
    if array.dtype == np.bool_:
        return array.astype(np.uint8)
    if array.dtype == np.float16:
        return array.astype(np.float32)
    return array


def to_sitk(array: np.ndarray, affine_ras: np.ndarray):
    """SimpleITK image of a scalar array in a dtype SimpleITK accepts (bool -> uint8, float16 -> float32)."""
    return _sitk_image(_sitk_dtype(array), affine_ras)


def _axes_reversed(affine_ras: np.ndarray) -> np.ndarray:
    """The affine of the same grid indexed ``(K, J, I)``: what ITK sees in an ``(I, J, K)`` C-ordered buffer."""
    return np.asarray(affine_ras, dtype=np.float64)[:, [2, 1, 0, 3]]


def from_sitk(image) -> np.ndarray:
    """The ``(I, J, K)`` array of a SimpleITK scalar image."""
    import SimpleITK as sitk

    return np.ascontiguousarray(np.transpose(sitk.GetArrayFromImage(image), (2, 1, 0)))


def reference_image(shape: tuple, affine_ras: np.ndarray):
    """An empty SimpleITK image that only carries a target grid."""
    import SimpleITK as sitk

    image = sitk.Image([int(s) for s in shape], sitk.sitkUInt8)
    set_geometry(image, affine_ras)
    return image


def sitk_interpolator(interpolation: str):
    """SimpleITK interpolator constant for ``"linear"``, ``"nearest"`` or ``"bspline"`` (cubic)."""
    import SimpleITK as sitk

    return {"linear": sitk.sitkLinear, "nearest": sitk.sitkNearestNeighbor, "bspline": sitk.sitkBSpline}[
        interpolation
    ]


def resample_sitk(
    array: np.ndarray,
    src_affine: np.ndarray,
    dst_shape: tuple,
    dst_affine: np.ndarray,
    *,
    interpolation: str,
    default: float,
    transform=None,
) -> np.ndarray:
    """Resample ``array`` (``(I, J, K)`` or ``(I, J, K, C)``) onto a target grid with SimpleITK.

    ``transform`` (a SimpleITK transform, LPS) maps target points to source points; identity when omitted.
    Vector arrays are resampled one component at a time, so their values (RAS components) are unchanged.
    """
    import SimpleITK as sitk

    dtype = output_dtype(array.dtype, interpolation)
    work = array if interpolation == "nearest" else array.astype(dtype, copy=False)
    resampler = sitk.ResampleImageFilter()
    # ITK reads a C-ordered (I, J, K) buffer as an image indexed (K, J, I); giving both grids their axes in that
    # order (a column permutation of the affine) spares the two transposed copies of every volume.
    resampler.SetReferenceImage(reference_image(tuple(dst_shape)[::-1], _axes_reversed(dst_affine)))
    resampler.SetInterpolator(sitk_interpolator(interpolation))
    resampler.SetDefaultPixelValue(float(default))
    resampler.SetTransform(transform if transform is not None else sitk.Transform(3, sitk.sitkIdentity))
    source = _axes_reversed(src_affine)

    def one(component: np.ndarray) -> np.ndarray:
        image = sitk.GetImageFromArray(np.ascontiguousarray(_sitk_dtype(component)))
        set_geometry(image, source)
        return sitk.GetArrayFromImage(resampler.Execute(image)).astype(dtype, copy=False)

    if work.ndim == 3:
        return one(work)
    return np.stack([one(work[..., c]) for c in range(work.shape[3])], axis=-1)


def resample_array(
    array: np.ndarray,
    src_affine: np.ndarray,
    dst_shape: tuple,
    dst_affine: np.ndarray,
    *,
    interpolation: str = "linear",
    default: float = 0.0,
) -> np.ndarray:
    """Put ``array`` onto the target grid: exact lattice copy when possible, SimpleITK otherwise.

    Target voxels outside the source field of view get ``default``.
    """
    check_interpolation(interpolation)
    mapping = lattice_map(src_affine, dst_affine)
    if mapping is not None:
        dtype = output_dtype(array.dtype, interpolation)
        return paste_lattice(array, mapping, dst_shape, dtype=dtype, default=default)
    return resample_sitk(array, src_affine, dst_shape, dst_affine, interpolation=interpolation, default=default)


def fov_samples(volume: Volume, n: int = 16) -> np.ndarray:
    """RAS points (n^3, 3) spread evenly over the field of view (voxel faces included)."""
    axes = [np.linspace(-0.5, size - 0.5, n) for size in volume.shape]
    ijk = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 3)
    return volume.ijk_to_ras_points(ijk)


def inside(points_ras: np.ndarray, volume: Volume) -> np.ndarray:
    """Which RAS points (N, 3) lie inside the field of view of ``volume`` (voxel faces included); bool (N,)."""
    ijk = volume.ras_to_ijk_points(points_ras)
    tolerance = 1e-6
    return np.all((ijk >= -0.5 - tolerance) & (ijk <= np.asarray(volume.shape[:3]) - 0.5 + tolerance), axis=1)


def inside_fraction(points_ras: np.ndarray, volume: Volume) -> float:
    """Share of RAS points (N, 3) that lie inside the field of view of ``volume`` (voxel faces included)."""
    return float(inside(points_ras, volume).mean())


def ras_bounds(volume: Volume) -> str:
    """Field of view of ``volume`` as RAS ranges in mm, for error messages."""
    corners = fov_samples(volume, n=2)
    return f"R {corners[:, 0].min():.0f}..{corners[:, 0].max():.0f}, A {corners[:, 1].min():.0f}.." \
        f"{corners[:, 1].max():.0f}, S {corners[:, 2].min():.0f}..{corners[:, 2].max():.0f} mm"


def affine_of_transform(transform) -> np.ndarray:
    """4x4 matrix of a SimpleITK rigid/affine transform (points x -> A x + t, LPS)."""
    import SimpleITK as sitk

    # ImageRegistrationMethod.Execute returns a CompositeTransform holding the optimised Euler transform.
    euler = sitk.Euler3DTransform(sitk.CompositeTransform(transform).GetNthTransform(0))
    matrix = np.asarray(euler.GetMatrix()).reshape(3, 3)
    centre = np.asarray(euler.GetCenter())
    translation = np.asarray(euler.GetTranslation())
    affine = np.eye(4)
    affine[:3, :3] = matrix
    affine[:3, 3] = translation + centre - matrix @ centre
    return affine


def otsu_threshold(counts: np.ndarray, edges: np.ndarray) -> float:
    """Otsu's threshold of a histogram (``counts``, ``edges``): the upper edge of the lower class that maximises
    the between-class variance."""
    centres = 0.5 * (edges[:-1] + edges[1:])
    weight_low = np.cumsum(counts)
    weight_high = weight_low[-1] - weight_low
    sum_low = np.cumsum(counts * centres)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_low = sum_low / weight_low
        mean_high = (sum_low[-1] - sum_low) / weight_high
        between = weight_low * weight_high * (mean_low - mean_high) ** 2
    return float(edges[1:][int(np.nanargmax(between[:-1]))])


def _kernels():
    """The numba kernels of the head mask, imported (and compiled or loaded from numba's cache) on first use."""
    from . import _mask_kernels

    return _mask_kernels


def _flat_float32(array: np.ndarray) -> np.ndarray:
    """``array`` as a flat view; it must be a non-empty C-contiguous float32 array (finite values assumed)."""
    if not isinstance(array, np.ndarray) or array.dtype != np.float32:
        raise TypeError(f"expected a float32 array; got {getattr(array, 'dtype', type(array).__name__)}")
    if not array.flags.c_contiguous or not array.size:
        raise ValueError(f"expected a non-empty C-contiguous array; got shape {array.shape}, strides {array.strides}")
    return array.reshape(-1)


#: Every ``_SAMPLE_STRIDE``-th value estimates where the order statistics of :func:`percentile` lie.
_SAMPLE_STRIDE = 61


def _lerp(below: np.float32, above: np.float32, gamma: float) -> np.float32:
    """Numpy's quantile interpolation (``_lerp``) in float32, from whichever end is nearer."""
    diff = above - below
    if gamma >= 0.5:
        return above - diff * (1 - gamma)
    return below + diff * gamma


def _value_window(flat: np.ndarray, ranks: tuple) -> tuple:
    """Values ``low <= high`` that likely enclose the values of rank ``ranks`` of ``flat``, from a sample."""
    sample = flat[::_SAMPLE_STRIDE]
    scale = sample.size / flat.size
    margin = 2 * math.isqrt(sample.size) + 8
    first = math.floor(ranks[0] * scale) - margin
    last = math.ceil(ranks[-1] * scale) + margin
    inner = [rank for rank in (first, last) if 0 <= rank < sample.size]
    picked = np.partition(sample, inner) if inner else sample
    low = picked[first] if first >= 0 else -np.inf
    high = picked[last] if last < sample.size else np.inf
    return low, high


def _order_statistics(flat: np.ndarray, ranks: tuple) -> list:
    """Values of rank ``ranks`` (0-based, ascending) of a flat float32 array.

    Values are counted below and inside a window that a sample puts around the ranks (the whole range when
    the window misses them); only the values inside are copied out and partitioned.
    """
    kernels = _kernels()
    counts = np.empty((kernels.chunk_count(), 2), dtype=np.int64)
    low, high = _value_window(flat, ranks)
    kernels.count_range(flat, np.float32(low), np.float32(high), counts)
    below = int(counts[:, 0].sum())
    if not below <= ranks[0] <= ranks[-1] < below + int(counts[:, 1].sum()):
        low, high = -np.inf, np.inf
        kernels.count_range(flat, np.float32(low), np.float32(high), counts)
        below = 0
    offsets = np.concatenate(([0], np.cumsum(counts[:, 1])))
    values = np.empty(int(offsets[-1]), dtype=np.float32)
    kernels.gather_range(flat, np.float32(low), np.float32(high), offsets, values)
    local = [rank - below for rank in ranks]
    values.partition(sorted(set(local)))
    return [values[index] for index in local]


def percentile(array: np.ndarray, q: float) -> np.float32:
    """``np.percentile(array, q)`` (linear method, same float32 result) of a finite float32 array, without sorting.

    As in numpy the virtual index is ``(n - 1) q / 100`` and its two neighbouring order statistics are
    interpolated with numpy's ``_lerp`` arithmetic.
    """
    flat = _flat_float32(array)
    if not 0 <= q <= 100:
        raise ValueError(f"q must lie in [0, 100]; got {q!r}")
    n = flat.size
    index = (n - 1) * (q / 100)
    below = math.floor(index)
    gamma = index - below
    if index >= n - 1:
        below = n - 1
    lower, upper = _order_statistics(flat, (below, min(below + 1, n - 1)))
    return _lerp(lower, upper, gamma)


def clipped_histogram(array: np.ndarray, high, bins: int = 256) -> tuple:
    """``np.histogram(np.minimum(array, high).ravel(), bins=bins)`` of a finite float32 array (identical counts
    and edges) without the clipped copy.

    Edges, bin estimates and their corrections follow numpy's uniform-bin arithmetic, with ``high``, the first
    edge and the bin width in float32 as numpy's type rules give them.  A range too narrow for ``bins``
    distinct float32 edges is left to numpy (which raises since numpy 2).
    """
    flat = _flat_float32(array)
    high = np.float32(high)
    first_edge, last_edge = np.minimum(flat.min(), high), np.minimum(flat.max(), high)
    if first_edge == last_edge:
        first_edge, last_edge = first_edge - 0.5, last_edge + 0.5
    edges = np.linspace(first_edge, last_edge, bins + 1, endpoint=True, dtype=np.float32)
    if np.any(edges[:-1] >= edges[1:]):
        return np.histogram(np.minimum(flat, high), bins=bins)
    kernels = _kernels()
    counts = np.zeros((kernels.chunk_count() * kernels.LANES, bins), dtype=np.int64)
    kernels.clipped_histogram(flat, high, np.float32(first_edge), np.float32(last_edge - first_edge), edges, counts)
    return counts.sum(axis=0), edges


def mask_ras_bounds(mask: np.ndarray, affine: np.ndarray) -> tuple:
    """RAS bounding box (min (3,), max (3,), mm) of the voxel centres of a boolean mask.

    A linear function of ``(i, j, k)`` takes its extremes over a row ``(i, j)`` at the row's first or last voxel,
    so only those are mapped to RAS.
    """
    mask = np.ascontiguousarray(mask, dtype=np.bool_)
    first = np.empty(mask.shape[:2], dtype=np.int64)
    last = np.empty(mask.shape[:2], dtype=np.int64)
    _kernels().row_ends(mask, first, last)
    i, j = np.nonzero(first >= 0)
    ijk = np.concatenate([np.stack([i, j, first[i, j]], axis=1), np.stack([i, j, last[i, j]], axis=1)])
    ras = ijk @ affine[:3, :3].T + affine[:3, 3]
    return ras.min(axis=0), ras.max(axis=0)


def bounding_box(mask: np.ndarray, pad: int = 0) -> tuple:
    """Slices of the smallest box holding every True voxel of ``mask``, grown by ``pad`` voxels on each side and
    clipped to the array (the whole array when ``mask`` is all False)."""
    box = []
    for axis in range(mask.ndim):
        hits = np.flatnonzero(mask.any(axis=tuple(a for a in range(mask.ndim) if a != axis)))
        if not len(hits):
            return tuple(slice(0, n) for n in mask.shape)
        box.append(slice(max(int(hits[0]) - pad, 0), min(int(hits[-1]) + 1 + pad, mask.shape[axis])))
    return tuple(box)


class _Runs(NamedTuple):
    """Runs of one value in a C-contiguous boolean volume read as planes x rows x runs (see :mod:`._mask_kernels`)."""

    flat: np.ndarray
    dims: tuple
    strides: tuple
    starts: np.ndarray
    lo: np.ndarray
    hi: np.ndarray


def _find_runs(volume: np.ndarray, target: bool, order: tuple) -> _Runs:
    """Runs of ``target`` in ``volume`` with axes ``order`` as plane, row and run axes."""
    kernels = _kernels()
    flat = volume.reshape(-1)
    dims = tuple(volume.shape[a] for a in order)
    strides = tuple(volume.strides[a] // volume.itemsize for a in order)
    counts = np.empty(dims[0] * dims[1], dtype=np.int64)
    kernels.count_runs(flat, target, *dims, *strides, counts)
    starts = np.zeros(counts.size + 1, dtype=np.int64)
    np.cumsum(counts, out=starts[1:])
    lo = np.empty(int(starts[-1]), dtype=np.int64)
    hi = np.empty_like(lo)
    kernels.find_runs(flat, target, *dims, *strides, starts, lo, hi)
    return _Runs(flat, dims, strides, starts, lo, hi)


def _join(runs: _Runs, *, within: bool, across: bool) -> np.ndarray:
    """Root run of every run, connecting neighbour rows in a plane (``within``) and/or across planes."""
    root = np.arange(runs.lo.size)
    _kernels().join_runs(root, runs.starts, runs.lo, runs.hi, runs.dims[0], runs.dims[1], within, across)
    return root


def _paint(runs: _Runs, value: bool, selected: np.ndarray) -> None:
    """Set the voxels of the selected runs to ``value`` in the volume the runs were found in."""
    n0, nx, _ = runs.dims
    _kernels().paint_runs(runs.flat, value, n0, nx, *runs.strides, runs.starts, runs.lo, runs.hi, selected)


def _check_mask(mask: np.ndarray) -> None:
    if not isinstance(mask, np.ndarray) or mask.dtype != np.bool_ or mask.ndim != 3:
        raise TypeError(f"expected a 3D boolean array; got {getattr(mask, 'dtype', type(mask).__name__)} "
                        f"{getattr(mask, 'shape', '')}")


def largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest 6-connected component of a 3D boolean mask (a new C-contiguous array).

    Of components of equal size, the one whose first voxel comes first in C order is kept, as keeping the
    smallest ``scipy.ndimage.label`` label of the largest size does.  An empty mask gives an empty result.
    """
    _check_mask(mask)
    runs = _find_runs(np.ascontiguousarray(mask), True, (0, 1, 2))
    out = np.zeros(mask.shape, dtype=np.bool_)
    if runs.lo.size:
        root = _join(runs, within=True, across=True)
        best = int(np.argmax(_kernels().component_sizes(runs.lo, runs.hi, root)))
        _paint(runs._replace(flat=out.reshape(-1)), True, root == best)
    return out


#: Plane, row and run axes for hole filling in 3D and in slices across each axis; each leaves out the
#: connections that cross the slices (``within``: rows of a plane, ``across``: planes).
_FILL_LAYOUTS = {
    None: ((0, 1, 2), True, True),
    0: ((0, 1, 2), True, False),
    1: ((0, 1, 2), False, True),
    2: ((0, 2, 1), False, True),
}


def fill_holes(mask: np.ndarray, *, axis: int | None = None) -> np.ndarray:
    """Fill the holes of a boolean mask in 3D (``axis=None``) or in every slice across ``axis`` (a new array).

    A hole is a connected background region (6-connected in 3D, 4-connected in a slice) that does not touch
    the border of the volume (or of its slice); as ``scipy.ndimage.binary_fill_holes`` in 3D or per slice.
    """
    _check_mask(mask)
    if axis not in _FILL_LAYOUTS:
        raise ValueError(f"axis must be None, 0, 1 or 2; got {axis!r}")
    order, within, across = _FILL_LAYOUTS[axis]
    out = np.array(mask, order="C")
    runs = _find_runs(out, False, order)
    if runs.lo.size:
        root = _join(runs, within=within, across=across)
        n0, nx, nr = runs.dims
        holes = _kernels().hole_runs(runs.starts, runs.lo, runs.hi, root, n0, nx, nr, within, across)
        _paint(runs, True, holes)
    return out
