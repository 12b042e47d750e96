"""MRI preprocessing for CondNet: checks, reorientation, resampling, T1/T2 alignment, model grid, scaling.

The network works on a ``size``^3 grid of ``spacing_mm`` isotropic voxels whose axes run along +R, +A, +S
and whose centre is the centre of the head (:class:`ModelGrid`).  The T1 image defines the *reference*
grid: every result goes back onto the user's original T1 grid with :meth:`ModelGrid.to_reference`.

Steps (each a small function):

1. :func:`validate_mri` - 3D scalar, finite, not empty or constant.
2. :func:`check_overlap` - T1 and T2 share space according to their scanner geometry.
3. :func:`n4_bias_correct` (optional) - N4 bias field correction (the paper bias-corrects both inputs).
4. T2 onto T1 space - through the scanner geometry, or :func:`register_rigid` when asked.
5. :meth:`ModelGrid.to_model` - one resampling per image straight onto the model grid, which is at the
   same time the canonical reorientation (:func:`reorient_canonical`), the resampling to 1 mm isotropic
   (:func:`resample_isotropic`) and the crop/pad to ``size``^3.  When the T1 is already on a 1 mm lattice
   aligned with the world axes, this is an exact integer crop/pad without interpolation.
6. :func:`head_mask` on the model grid - the share of the head the T2 covers (refused below half), and the
   offset between the T1's and the T2's head (a warning above ``MAX_T2_OFFSET_MM``).
7. :func:`zscore_unit` - per-volume z-score, then scaling to [0, 1] (paper Sec. III-A).

References
----------
Rashed, Gomez-Tames, Hirata, "Deep learning-based development of personalized human head model with
non-uniform conductivity for brain stimulation", IEEE TMI 39(7), 2020, doi:10.1109/TMI.2020.2969682.
Tustison et al., "N4ITK: improved N3 bias correction", IEEE TMI 29(6), 2010, doi:10.1109/TMI.2010.2046908.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np

from . import _resample
from ._types import Progress
from .errors import Cancelled
from .volume import LPS_TO_RAS, Volume, check_mask

__all__ = [
    "ModelGrid",
    "PreparedPair",
    "check_overlap",
    "head_mask",
    "n4_bias_correct",
    "prepare_pair",
    "register_rigid",
    "reorient_canonical",
    "resample_isotropic",
    "resample_to",
    "validate_mri",
    "zscore_unit",
]

logger = logging.getLogger(__name__)


_REGISTRATION_SAMPLES = 50_000
#: Below this share of the head inside the T2's field of view, :func:`prepare_pair` refuses the pair.
MIN_T2_HEAD_COVERAGE = 0.5
#: Head-mask share of the T1's field of view above which the image is taken to have no air around the head.
MAX_HEAD_FILL = 0.95
#: Voxels of the model grid kept above the top of a head taller than the grid (:meth:`ModelGrid.for_volume`).
_TOP_MARGIN_VOXELS = 4
#: Distance (mm) between the T1's and the T2's head above which :func:`prepare_pair` warns that the scans look
#: misregistered.  The training pairs are offset by up to 1 mm (``SynthOptions.misregistration_mm``); the real,
#: co-registered MNI152 pair measures 1.3 mm (its T2's head mask reaches further down the neck).
MAX_T2_OFFSET_MM = 3.0


def validate_mri(volume: Volume, *, name: str) -> None:
    """Check that ``volume`` can be an MRI input: a 3D scalar, finite, non-constant image.

    Parameters
    ----------
    volume : Volume
        The image to check.
    name : str
        Name used in error messages, for example ``"T1"``.

    Raises
    ------
    TypeError
        If ``volume`` is not a :class:`Volume` or its values are not real numbers.
    ValueError
        If it is a vector volume, thinner than 2 voxels along an axis, holds NaN/inf, is all zero or constant.
    """
    if not isinstance(volume, Volume):
        raise TypeError(f"{name}: expected a Volume, got {type(volume).__name__}")
    array = volume.array
    if array.ndim != 3:
        raise ValueError(
            f"{name}: expected a 3D scalar image (I, J, K), got shape {array.shape} "
            f"({array.shape[3]} components per voxel)"
        )
    if array.dtype == np.bool_ or array.dtype.kind not in "iuf":
        raise TypeError(f"{name}: expected integer or floating-point intensities, got dtype {array.dtype}")
    if min(array.shape) < 2:
        raise ValueError(f"{name}: expected a 3D image, got shape {array.shape} (a 2D slice?)")
    if np.issubdtype(array.dtype, np.floating):
        bad = int(np.count_nonzero(~np.isfinite(array)))
        if bad:
            raise ValueError(f"{name}: {bad} of {array.size} voxels are NaN or infinite")
    low, high = array.min(), array.max()
    if low == high == 0:
        raise ValueError(f"{name}: the image is empty (all voxels are zero)")
    if low == high:
        raise ValueError(f"{name}: the image is constant (every voxel is {low}); expected an MRI with contrast")
    if np.float32(low) == np.float32(high):  # the preprocessing computes in float32
        raise ValueError(f"{name}: the image's contrast ({low} to {high}) is below float32 resolution; expected an "
                         "MRI with contrast (rescale it first)")


def reorient_canonical(volume: Volume) -> Volume:
    """Permute and flip the array axes so they run closest to +R, +A, +S; no interpolation.

    Parameters
    ----------
    volume : Volume
        Scalar or vector volume in any orientation (L-I-A, L-A-S, oblique, ...).

    Returns
    -------
    Volume
        The same voxels with a new affine; every voxel keeps its exact RAS position.  Vector components
        are world (RAS) components and are not changed.

    Examples
    --------
    >>> lia = Volume(np.zeros((2, 3, 4)), np.array([[-1., 0, 0, 0], [0, 0, 1, 0], [0, -1, 0, 0], [0, 0, 0, 1]]))
    >>> reorient_canonical(lia).shape
    (2, 4, 3)
    """
    axes, signs = _resample.closest_axes(volume.direction)
    array = np.ascontiguousarray(_resample.reorder(volume.array, axes, signs))
    return Volume(array, _resample.reorder_affine(volume.ijk_to_ras, volume.shape, axes, signs))


def _check_spacing(spacing_mm: float) -> float:
    spacing_mm = float(spacing_mm)
    if not np.isfinite(spacing_mm) or spacing_mm <= 0:
        raise ValueError(f"spacing_mm must be a positive number of millimetres; got {spacing_mm}")
    return spacing_mm


def resample_isotropic(volume: Volume, spacing_mm: float = 1.0, *, interpolation: str = "linear") -> Volume:
    """Resample to isotropic voxels of ``spacing_mm``, keeping direction and field of view.

    Parameters
    ----------
    volume : Volume
        Scalar or vector volume.
    spacing_mm : float
        New voxel size in mm.
    interpolation : {"linear", "nearest", "bspline"}
        Use ``"nearest"`` for label maps (it keeps the dtype); the others return float32
        (float64 input stays float64).

    Returns
    -------
    Volume
        ``round(extent / spacing_mm)`` voxels per axis whose outer faces coincide with the input's
        (to half a new voxel); same direction.  A volume already at ``spacing_mm`` comes back unchanged.
    """
    _resample.check_interpolation(interpolation)
    spacing_mm = _check_spacing(spacing_mm)
    extent = np.asarray(volume.shape) * volume.spacing
    shape = tuple(int(n) for n in np.maximum(np.round(extent / spacing_mm), 1))
    direction = volume.direction
    corner = volume.origin - direction @ (0.5 * volume.spacing)
    new_extent = np.asarray(shape) * spacing_mm
    # Centre the new grid on the old field of view (the two extents differ by rounding only).
    start = corner + direction @ (0.5 * (extent - new_extent) + 0.5 * spacing_mm)
    affine = np.eye(4)
    affine[:3, :3] = direction * spacing_mm
    affine[:3, 3] = start
    if volume.shape == shape and np.allclose(affine, volume.ijk_to_ras, atol=1e-6):
        affine = volume.ijk_to_ras
    array = _resample.resample_array(volume.array, volume.ijk_to_ras, shape, affine, interpolation=interpolation)
    return Volume(array, affine)


def resample_to(volume: Volume, reference: Volume, *, interpolation: str = "linear", default: float = 0.0) -> Volume:
    """Resample ``volume`` onto the grid of ``reference`` through world (scanner) coordinates.

    Parameters
    ----------
    volume, reference : Volume
        Source image (scalar or vector) and the grid to put it on.
    interpolation : {"linear", "nearest", "bspline"}
        ``"nearest"`` keeps the dtype (label maps); the others return float32 (float64 stays float64).
    default : float
        Value of reference voxels outside the source field of view.

    Returns
    -------
    Volume
        Exactly ``reference``'s shape and affine.  When the two grids share a voxel lattice (same spacing,
        axes permuted/flipped, integer shift) the copy is exact, without interpolation.
    """
    array = _resample.resample_array(
        volume.array, volume.ijk_to_ras, reference.shape, reference.ijk_to_ras,
        interpolation=interpolation, default=default,
    )
    return Volume(array, reference.ijk_to_ras)


def check_overlap(a: Volume, b: Volume, *, names=("T1", "T2"), min_fraction: float = 0.5) -> None:
    """Check that two images cover the same space according to their scanner geometry.

    Parameters
    ----------
    a, b : Volume
        The two images (for example T1 and T2).
    names : tuple of str
        Their names for the error message.
    min_fraction : float
        Smallest accepted share, in (0, 1], of the *smaller* field of view that lies inside the other
        (a T2 slab inside a whole-head T1 scores 1).

    Raises
    ------
    ValueError
        If the overlap is below ``min_fraction`` (the message gives both fields of view in RAS mm),
        or ``min_fraction`` is outside (0, 1].
    """
    if not 0 < min_fraction <= 1:
        raise ValueError(f"min_fraction must be in (0, 1]; got {min_fraction}")
    fraction = max(
        _resample.inside_fraction(_resample.fov_samples(a), b), _resample.inside_fraction(_resample.fov_samples(b), a)
    )
    if fraction < min_fraction:
        raise ValueError(
            f"{names[0]} and {names[1]} do not overlap in space: only {100 * fraction:.0f}% of the smaller field "
            f"of view lies inside the other (need {100 * min_fraction:.0f}%). {names[0]}: {_resample.ras_bounds(a)}; "
            f"{names[1]}: {_resample.ras_bounds(b)}. Check that both come from the same subject and session and that "
            "their headers keep the scanner geometry."
        )


def register_rigid(moving: Volume, fixed: Volume, *, progress: Progress = None) -> tuple:
    """Rigidly register ``moving`` to ``fixed`` (Mattes mutual information, SimpleITK).

    Parameters
    ----------
    moving, fixed : Volume
        Scalar images of the same head, for example T2 (moving) and T1 (fixed); the scanner geometry is
        the starting point, so they must already overlap.
    progress : callable, optional
        ``progress(fraction, message)`` once per optimiser iteration.

    Returns
    -------
    resampled : Volume
        ``moving`` resampled (linear, float32) onto ``fixed``'s grid after registration.
    moving_to_fixed : ndarray (4, 4)
        Rigid transform of RAS points (mm) from the moving image to the fixed image: the registered moving
        image without resampling is ``Volume(moving.array, moving_to_fixed @ moving.ijk_to_ras)``.

    Notes
    -----
    Three resolution levels (shrink 4, 2, 1; smoothing 2, 1, 0 voxels), random sampling of 20% of the voxels
    but at most 50 000 per level, with a fixed seed (reproducible), regular-step gradient descent with scales
    from physical shift (steps start at 2 mm).
    """
    import SimpleITK as sitk

    validate_mri(moving, name="moving image")
    validate_mri(fixed, name="fixed image")
    fixed_image = _resample.to_sitk(fixed.array.astype(np.float32), fixed.ijk_to_ras)
    moving_image = _resample.to_sitk(moving.array.astype(np.float32), moving.ijk_to_ras)
    initial = sitk.Euler3DTransform()
    centre_ijk = (np.asarray(fixed.shape) - 1) / 2.0
    initial.SetCenter(tuple(float(c) for c in fixed_image.TransformContinuousIndexToPhysicalPoint(centre_ijk)))

    method = sitk.ImageRegistrationMethod()
    method.SetMetricAsMattesMutualInformation(numberOfHistogramBins=32)
    method.SetMetricSamplingStrategy(method.RANDOM)
    shrink = [f for f in (4, 2, 1) if min(fixed.shape) // f >= 8] or [1]
    # At most _REGISTRATION_SAMPLES random points per level keep a 256^3 scan as fast as a small one.
    voxels = [np.prod(np.asarray(fixed.shape) // f) for f in shrink]
    method.SetMetricSamplingPercentagePerLevel([min(0.2, _REGISTRATION_SAMPLES / n) for n in voxels], seed=12345)
    method.SetInterpolator(sitk.sitkLinear)
    iterations = 100
    method.SetOptimizerAsRegularStepGradientDescent(
        learningRate=2.0, minStep=1e-4, numberOfIterations=iterations, relaxationFactor=0.5,
        gradientMagnitudeTolerance=1e-8,
    )
    method.SetOptimizerScalesFromPhysicalShift()
    method.SetShrinkFactorsPerLevel(shrink)
    method.SetSmoothingSigmasPerLevel([max(f // 2, 0) for f in shrink])
    method.SmoothingSigmasAreSpecifiedInPhysicalUnitsOff()
    method.SetInitialTransform(initial, inPlace=False)
    if progress is not None:
        def report() -> None:
            level = method.GetCurrentLevel()
            done = (level + min(method.GetOptimizerIteration() / iterations, 1.0)) / len(shrink)
            progress(done, f"rigid registration: level {level + 1}/{len(shrink)}, metric {method.GetMetricValue():.4f}")

        method.AddCommand(sitk.sitkIterationEvent, report)
    transform = method.Execute(fixed_image, moving_image)
    logger.info("rigid registration stopped: %s", method.GetOptimizerStopConditionDescription())

    # ITK maps fixed points to moving points in LPS; invert and convert to RAS for moving -> fixed.
    fixed_to_moving_lps = _resample.affine_of_transform(transform)
    moving_to_fixed = np.linalg.inv(LPS_TO_RAS @ fixed_to_moving_lps @ LPS_TO_RAS)
    aligned = Volume(moving.array, moving_to_fixed @ moving.ijk_to_ras)
    resampled = resample_to(aligned, fixed)
    return resampled.with_array(resampled.array.astype(np.float32, copy=False)), moving_to_fixed


def n4_bias_correct(volume: Volume, *, shrink: int = 4) -> Volume:
    """Remove a smooth multiplicative bias field with N4 (SimpleITK), fitted inside the head mask.

    Parameters
    ----------
    volume : Volume
        Scalar MRI; intensities inside the head must be positive.
    shrink : int
        Downsampling factor for the fit (the field is smooth); the correction is applied at full resolution.

    Returns
    -------
    Volume
        ``volume / bias`` as float32 on the same grid.

    Raises
    ------
    ValueError
        If ``shrink`` is not a positive integer, or the image fails :func:`validate_mri`.
    """
    import SimpleITK as sitk

    validate_mri(volume, name="image for N4")
    if isinstance(shrink, bool) or not isinstance(shrink, (int, np.integer)) or shrink < 1:
        raise ValueError(f"shrink must be a positive integer; got {shrink!r}")
    array = volume.array.astype(np.float32)
    mask = head_mask(volume) & (array > 0)
    image = _resample.to_sitk(array, volume.ijk_to_ras)
    mask_image = _resample.to_sitk(mask.astype(np.uint8), volume.ijk_to_ras)
    factor = max(1, min(int(shrink), min(volume.shape) // 8))
    small = sitk.Shrink(image, [factor] * 3)
    small_mask = sitk.Shrink(mask_image, [factor] * 3)
    corrector = sitk.N4BiasFieldCorrectionImageFilter()
    corrector.SetMaximumNumberOfIterations([50, 50, 30])
    corrector.Execute(small, small_mask)
    log_bias = _resample.from_sitk(corrector.GetLogBiasFieldAsImage(image)).astype(np.float32)
    return volume.with_array(array / np.exp(log_bias))


def head_mask(volume: Volume) -> np.ndarray:
    """Boolean mask ``(I, J, K)`` of the head: threshold, largest connected component, holes filled.

    Parameters
    ----------
    volume : Volume
        Scalar MRI (T1 works best: air is darkest).

    Returns
    -------
    ndarray of bool (I, J, K)

    Notes
    -----
    The threshold lies halfway between the darkest voxel and Otsu's threshold between background and head,
    computed on intensities clipped to the 99.5th percentile so a few bright voxels cannot move it.  The
    largest connected component is kept.  Dark structures enclosed by the head (skull, CSF) are recovered by
    filling holes in 3D and then slice by slice along each axis, which also closes the ear canals and
    nostrils at the surface.
    """
    validate_mri(volume, name="image for the head mask")
    array = np.ascontiguousarray(volume.array, dtype=np.float32)
    low, high = array.min(), _resample.percentile(array, 99.5)
    if high <= low:  # fewer than 0.5 % of the voxels above the darkest value: clip at the maximum instead
        high = array.max()
    threshold = low + 0.5 * (_resample.otsu_threshold(*_resample.clipped_histogram(array, high)) - low)
    mask = _resample.largest_component(array > threshold)
    # Outside the component's box all is background that reaches the border, so filling the box with a margin
    # of one background voxel finds the same holes as filling the whole volume (2x faster for a 256^3 head).
    box = _resample.bounding_box(mask, pad=1)
    inner = _resample.fill_holes(mask[box])
    for axis in range(3):
        inner = _resample.fill_holes(inner, axis=axis)
    mask[box] = inner
    return mask


def zscore_unit(array: np.ndarray, mask: np.ndarray | None = None, *, percentiles=(0.5, 99.5)) -> np.ndarray:
    """Z-score an image, then scale it to [0, 1] (paper Sec. III-A), robust to outliers.

    Parameters
    ----------
    array : ndarray
        Image intensities, any shape.
    mask : ndarray of bool, optional
        Same shape as ``array``; mean, standard deviation and percentiles are taken inside it (the head),
        so the amount of air around the head does not change the result.  All voxels when omitted.
    percentiles : tuple of float
        Lower and upper percentiles (of the z-scores, inside the mask) mapped to 0 and 1; values beyond
        them are clipped.  ``(0, 100)`` without a mask is the paper's plain min-max scaling; the default
        clips the darkest and brightest 0.5% (noise, vessels, fat) so a few voxels cannot compress
        the contrast of the rest.

    Returns
    -------
    ndarray of float32
        Same shape, values in [0, 1].

    Raises
    ------
    TypeError
        If the image is not numeric or the mask is not boolean.
    ValueError
        If shapes differ, the mask is empty, values are not finite, percentiles are invalid, or the image is
        constant inside the mask.

    Examples
    --------
    >>> zscore_unit(np.array([0.0, 1.0, 2.0, 3.0]), percentiles=(0, 100))
    array([0.        , 0.33333334, 0.6666667 , 1.        ], dtype=float32)
    """
    array = np.asarray(array)
    if array.dtype.kind not in "iuf":
        raise TypeError(f"zscore_unit: expected integer or floating-point intensities; got dtype {array.dtype}")
    low_pct, high_pct = (float(p) for p in percentiles)
    if not 0 <= low_pct < high_pct <= 100:
        raise ValueError(f"percentiles must satisfy 0 <= low < high <= 100; got {percentiles}")
    if not np.all(np.isfinite(array)):
        raise ValueError("zscore_unit: the image holds NaN or infinite values")
    if mask is None:
        values = array.ravel()
    else:
        mask = check_mask(mask, array.shape)
        values = array[mask]
        if values.size == 0:
            raise ValueError("zscore_unit: the mask is empty")
    values = values.astype(np.float64)
    std = values.std()
    if std == 0:
        raise ValueError("zscore_unit: the image is constant inside the mask; nothing to normalise")
    mean = values.mean()
    low, high = (np.percentile(values, [low_pct, high_pct]) - mean) / std
    if high <= low:
        raise ValueError(f"zscore_unit: percentiles {percentiles} of the image coincide; widen them")
    # (z - low) / (high - low) with z = (array - mean) / std, evaluated in float32 in place.
    out = np.asarray(array, dtype=np.float32) - np.float32(mean + low * std)
    out *= np.float32(1.0 / ((high - low) * std))
    return np.clip(out, 0.0, 1.0, out=out)


@dataclass(frozen=True, eq=False)
class ModelGrid:
    """The network's grid: ``size``^3 voxels, ``spacing_mm`` isotropic, axes along +R, +A, +S, centred on the head.

    It remembers the reference grid (the original T1) so that results go back onto it exactly.  Build it with
    :meth:`for_volume`.

    Attributes
    ----------
    affine : ndarray (4, 4)
        Model voxel ``(i, j, k, 1)`` -> RAS mm.
    shape : tuple of int
        ``(size, size, size)``.
    reference_shape : tuple of int
        Spatial shape of the reference (T1) grid.
    reference_affine : ndarray (4, 4)
        Voxel-to-RAS affine (mm) of the reference grid.
    """

    affine: np.ndarray
    shape: tuple
    reference_shape: tuple
    reference_affine: np.ndarray

    def __post_init__(self) -> None:
        for name in ("shape", "reference_shape"):
            value = tuple(int(n) for n in getattr(self, name))
            if len(value) != 3 or min(value) < 1:
                raise ValueError(f"ModelGrid.{name} must be 3 positive integers; got {getattr(self, name)}")
            object.__setattr__(self, name, value)
        for name in ("affine", "reference_affine"):
            # Volume checks that the matrix is a homogeneous, invertible 4x4.
            matrix = Volume(np.zeros((1, 1, 1)), getattr(self, name)).ijk_to_ras
            object.__setattr__(self, name, matrix)

    @classmethod
    def for_volume(
        cls, reference: Volume, *, size: int = 256, spacing_mm: float = 1.0, center_ras=None, mask=None
    ) -> ModelGrid:
        """Model grid for a reference image (the T1), centred on the head.

        Parameters
        ----------
        reference : Volume
            The image whose grid results go back to (the original T1, any orientation and spacing).
        size : int
            Voxels per axis of the model grid.
        spacing_mm : float
            Model voxel size in mm.
        center_ras : array-like (3,), optional
            RAS position (mm) of the model grid's centre.  Default: the centre of the bounding box of the head
            mask (:func:`head_mask`, or ``mask``), so a head anywhere in a large field of view ends up centred;
            a head taller (along S) than the model's field of view keeps its top, with 4 voxels above it, and
            loses the neck.
        mask : ndarray of bool (I, J, K), optional
            Head mask on the reference grid, for references that are not MRI (label maps: ``labels > 0``).

        Returns
        -------
        ModelGrid
            When the reference's axes (after :func:`reorient_canonical`) run along R, A, S within 1e-4 and its
            spacing is ``spacing_mm``, the model grid reuses the reference's voxel lattice (the centre is
            moved to the nearest voxel), so :meth:`to_model` and :meth:`to_reference` are exact integer
            crops/pads; otherwise they interpolate.  With axes along R, A, S and another spacing, the grid is
            shifted by less than half a voxel so that the reference's first voxel centre is a model voxel
            centre: for a spacing that is a multiple of ``spacing_mm`` (2 mm templates) every reference voxel
            centre is one, and :meth:`to_reference` reads model voxels without interpolating.

        Notes
        -----
        A warning is logged when the head mask reaches outside the model's field of view.
        """
        if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 2:
            raise ValueError(f"size must be an integer >= 2; got {size!r}")
        spacing_mm = _check_spacing(spacing_mm)
        if mask is None:
            mask = head_mask(reference)
        else:
            mask = np.asarray(mask)
            if mask.dtype != np.bool_ or mask.shape != reference.shape:
                raise ValueError(
                    f"mask must be boolean with the reference's shape {reference.shape}; "
                    f"got {mask.dtype} {mask.shape}"
                )
            if not mask.any():
                raise ValueError("mask is empty: no head voxel to centre the model grid on")
        low, high = _resample.mask_ras_bounds(mask, reference.ijk_to_ras)
        half = (size - 1) / 2.0
        if center_ras is None:
            centre = 0.5 * (low + high)
            if high[2] - low[2] > spacing_mm * (size - 1):
                # Taller than the field of view (neck and shoulders in the scan): keep the top of the head, where
                # the cortex is, with a few voxels of air above it, and cut at the neck.
                centre[2] = high[2] + spacing_mm * (_TOP_MARGIN_VOXELS - half)
        else:
            centre = np.asarray(center_ras, dtype=float).reshape(-1)
            if centre.shape != (3,) or not np.all(np.isfinite(centre)):
                raise ValueError(f"center_ras must be 3 finite RAS coordinates in mm; got {center_ras!r}")

        axes, signs = _resample.closest_axes(reference.direction)
        canonical = _resample.reorder_affine(reference.ijk_to_ras, reference.shape, axes, signs)
        if np.allclose(canonical[:3, :3], spacing_mm * np.eye(3), atol=1e-4 * spacing_mm):
            start = np.floor(np.linalg.solve(canonical, np.append(centre, 1.0))[:3] - half + 0.5)
            shift = np.eye(4)
            shift[:3, 3] = start
            affine = canonical @ shift
        else:
            affine = np.diag([spacing_mm, spacing_mm, spacing_mm, 1.0])
            origin = centre - spacing_mm * half
            if np.allclose(canonical[:3, :3], np.diag(np.diag(canonical[:3, :3])), atol=1e-4 * spacing_mm):
                # Axes along R, A, S but another spacing (a 2 mm template): shift by less than half a model voxel
                # so that the reference's voxel centres fall on model voxel centres, not halfway between two.
                # Otherwise every 2 mm voxel is a tie, and results going back by nearest neighbour (the mask) and
                # by interpolation (the conductivity) fall half a model voxel apart.
                corner = canonical[:3, 3]
                origin = corner + spacing_mm * np.round((origin - corner) / spacing_mm)
            affine[:3, 3] = origin
        grid = cls(affine, (size,) * 3, reference.shape, reference.ijk_to_ras)
        cut = grid.cut_warning(low, high)
        if cut is not None:
            logger.warning("%s", cut)
        return grid

    def cut_warning(self, low_ras: np.ndarray, high_ras: np.ndarray) -> Optional[str]:
        """What of the head, a box from ``low_ras`` to ``high_ras`` (RAS mm), lies outside this grid; None if
        nothing does."""
        inverse = np.linalg.inv(self.affine)
        ijk = np.stack([low_ras, high_ras]) @ inverse[:3, :3].T + inverse[:3, 3]
        low_ijk, high_ijk = ijk.min(axis=0), ijk.max(axis=0)
        outside = np.maximum(-0.5 - low_ijk, 0) + np.maximum(high_ijk - (self.size - 0.5), 0)
        if not np.any(outside > 0):
            return None
        size = np.asarray(high_ras) - np.asarray(low_ras)
        cut = outside * self.spacing_mm
        return (f"the head ({size[0]:.0f} x {size[1]:.0f} x {size[2]:.0f} mm) does not fit the model's "
                f"{self.size * self.spacing_mm:.0f} mm field of view: {cut[0]:.0f}, {cut[1]:.0f}, {cut[2]:.0f} mm "
                "along R, A, S are cut off and come back as 0")

    @property
    def size(self) -> int:
        """Voxels per axis."""
        return self.shape[0]

    @property
    def spacing_mm(self) -> float:
        """Model voxel size in mm."""
        return float(np.linalg.norm(self.affine[:3, :3], axis=0).mean())

    def as_volume(self, array: np.ndarray) -> Volume:
        """Wrap a model-grid array ``(S, S, S[, C])`` as a :class:`Volume` with the model affine."""
        self._check_model_array(array)
        return Volume(array, self.affine)

    def _check_model_array(self, array: np.ndarray) -> None:
        if array.ndim not in (3, 4) or array.shape[:3] != self.shape:
            raise ValueError(f"expected a model-grid array of shape {self.shape}[+ (C,)]; got {array.shape}")

    def to_model(self, volume: Volume, *, interpolation: str = "linear") -> np.ndarray:
        """Put a volume (any grid, through world coordinates) onto the model grid.

        Parameters
        ----------
        volume : Volume
            Scalar or vector volume (T1, T2 or labels on their own grids).
        interpolation : {"linear", "nearest", "bspline"}
            ``"nearest"`` keeps the dtype (label maps); the others return float32.

        Returns
        -------
        ndarray (S, S, S) or (S, S, S, C)
            Model voxels outside the volume's field of view are 0 for ``"nearest"`` (air, for label maps) and
            the image's minimum otherwise: as dark as its own background, also where that is below 0 (z-scored
            images, CT-like offsets), so the filler never looks like tissue to the head mask.
        """
        default = 0.0 if interpolation == "nearest" else float(np.min(volume.array))
        array = _resample.resample_array(
            volume.array, volume.ijk_to_ras, self.shape, self.affine, interpolation=interpolation, default=default
        )
        return array if interpolation == "nearest" else array.astype(np.float32, copy=False)

    def to_reference(self, array: np.ndarray, *, interpolation: str = "linear") -> Volume:
        """Put a model-grid array back onto the reference (original T1) grid.

        Parameters
        ----------
        array : ndarray (S, S, S) or (S, S, S, C)
            Model-grid values; vector components are world (RAS) components and are not changed.
        interpolation : {"linear", "nearest", "bspline"}
            ``"nearest"`` keeps the dtype (tissue maps); the others return float32 (float64 stays float64).

        Returns
        -------
        Volume
            The reference's exact shape and affine.  Reference voxels outside the model's field of view are 0.
        """
        array = np.asarray(array)
        self._check_model_array(array)
        out = _resample.resample_array(
            array, self.affine, self.reference_shape, self.reference_affine, interpolation=interpolation
        )
        return Volume(out, self.reference_affine)

    def to_dict(self) -> dict:
        """JSON-ready description (lists and ints) that :meth:`from_dict` reads back."""
        return {
            "affine": self.affine.tolist(),
            "shape": list(self.shape),
            "reference_shape": list(self.reference_shape),
            "reference_affine": self.reference_affine.tolist(),
        }

    @classmethod
    def from_dict(cls, data: dict) -> ModelGrid:
        """Rebuild a grid from :meth:`to_dict` output; ``ValueError`` if a key is missing or malformed."""
        keys = ("affine", "shape", "reference_shape", "reference_affine")
        missing = [key for key in keys if key not in data]
        if missing:
            raise ValueError(f"ModelGrid dict lacks {missing}; expected keys {list(keys)}")
        return cls(
            np.asarray(data["affine"], dtype=float), tuple(data["shape"]),
            tuple(data["reference_shape"]), np.asarray(data["reference_affine"], dtype=float),
        )


@dataclass
class PreparedPair:
    """Network inputs on the model grid.

    Attributes
    ----------
    t1 : ndarray of float32 (S, S, S)
        T1 scaled to [0, 1] by :func:`zscore_unit` (statistics inside ``mask``).
    t2 : ndarray of float32 (S, S, S) or None
        T2 in T1 space, scaled the same way; None when no T2 was given.
    mask : ndarray of bool (S, S, S)
        Head mask on the model grid.
    grid : ModelGrid
        The model grid; ``grid.to_reference`` puts results back onto the T1 grid.
    t2_coverage : float or None
        Share of the head mask inside the T2's field of view (1.0: all of it); None without a T2.
    t2_offset_mm : tuple of 3 float or None
        RAS vector (mm) from the centroid of the T1's head mask to the T2's (after registration, when asked
        for), over the voxels inside both fields of view: a translation between the scans shows here.  None
        without a T2.
    warnings : tuple of str
        What the checks found doubtful but not wrong enough to refuse (a head cut off by the model grid, partial
        T2 cover, T1/T2 offset); each was also logged.
    """

    t1: np.ndarray
    t2: Optional[np.ndarray]
    mask: np.ndarray
    grid: ModelGrid
    t2_coverage: Optional[float] = None
    t2_offset_mm: Optional[tuple] = None
    warnings: tuple = ()


def _head_coverage(mask: np.ndarray, grid: ModelGrid, other: Volume, step: int = 2) -> float:
    """Share of the head mask (sampled every ``step`` voxels) that lies inside ``other``'s field of view."""
    ijk = np.argwhere(mask[::step, ::step, ::step]) * step
    if len(ijk) == 0:
        return 0.0
    return _resample.inside_fraction(ijk @ grid.affine[:3, :3].T + grid.affine[:3, 3], other)


def _head_offset_mm(t1_mask: np.ndarray, t2_mask: np.ndarray, grid: ModelGrid, t1: Volume, t2: Volume,
                    step: int = 2) -> tuple | None:
    """RAS vector (mm) between the centroids of two head masks on the model grid (sampled every ``step``
    voxels), each taken over the voxels inside both scans' fields of view; None if either is empty there."""
    ijk = np.argwhere(t1_mask[::step, ::step, ::step] | t2_mask[::step, ::step, ::step]) * step
    ras = ijk @ grid.affine[:3, :3].T + grid.affine[:3, 3]
    common = _resample.inside(ras, t1) & _resample.inside(ras, t2)
    in_t1 = common & t1_mask[tuple(ijk.T)]
    in_t2 = common & t2_mask[tuple(ijk.T)]
    if not in_t1.any() or not in_t2.any():
        return None
    return tuple(float(d) for d in ras[in_t2].mean(axis=0) - ras[in_t1].mean(axis=0))


def prepare_pair(
    t1: Volume,
    t2: Volume | None,
    *,
    size: int = 256,
    register: bool = False,
    n4: bool = False,
    progress: Progress = None,
    cancel: Optional[Callable[[], bool]] = None,
) -> PreparedPair:
    """Turn a T1 (and optional T2) scan into network inputs on the model grid.

    Parameters
    ----------
    t1 : Volume
        T1-weighted scan; it defines the reference grid.
    t2 : Volume or None
        T2-weighted scan of the same subject on any grid.
    size : int
        Model grid voxels per axis (1 mm isotropic).
    register : bool
        Rigidly register T2 to T1 (:func:`register_rigid`) instead of trusting the scanner geometry.
    n4 : bool
        N4 bias correction of both scans first (:func:`n4_bias_correct`).
    progress : callable, optional
        ``progress(fraction, message)``.
    cancel : callable, optional
        Polled between steps; when it returns true, :class:`CondNetLogic.errors.Cancelled` is raised.

    Returns
    -------
    PreparedPair

    Raises
    ------
    ValueError
        If a scan fails :func:`validate_mri`, T1 and T2 do not overlap (:func:`check_overlap`), the T1's head
        mask fills more than ``MAX_HEAD_FILL`` of its field of view (no air around the head: not a head
        scan), or less than ``MIN_T2_HEAD_COVERAGE`` of the head lies inside the T2's field of view.
    Cancelled
        If ``cancel()`` returned true.

    Notes
    -----
    A T2 that covers between ``MIN_T2_HEAD_COVERAGE`` and 99 % of the head is used with a logged warning:
    the network sees no T2 signal in the rest of the head, so the conductivity there is unreliable.  A T2 whose
    head lies more than ``MAX_T2_OFFSET_MM`` from the T1's (``PreparedPair.t2_offset_mm``) is used with a logged
    warning to register it: centroids catch a translation between the scans, not a rotation.
    """
    def step(fraction: float, message: str) -> None:
        if cancel is not None and cancel():
            raise Cancelled(f"preprocessing cancelled before: {message}")
        if progress is not None:
            progress(fraction, message)
        logger.info("preprocessing: %s", message)

    step(0.0, "checking the inputs")
    validate_mri(t1, name="T1")
    if t2 is not None:
        validate_mri(t2, name="T2")
        check_overlap(t1, t2, names=("T1", "T2"))
    if n4:
        step(0.05, "N4 bias correction of T1")
        t1 = n4_bias_correct(t1)
        if t2 is not None:
            step(0.25, "N4 bias correction of T2")
            t2 = n4_bias_correct(t2)
    step(0.45, "centring the model grid on the head")
    t1_mask = head_mask(t1)
    fill = float(t1_mask.mean())
    if fill > MAX_HEAD_FILL:
        raise ValueError(
            f"T1: the head mask fills {100 * fill:.0f}% of the field of view, so no air was found around the head. "
            "Expected a head scan with background around it (not noise, a brain-extracted image or a crop inside "
            "the head)"
        )
    grid = ModelGrid.for_volume(t1, size=size, mask=t1_mask)  # logs a cut-off head
    cut = grid.cut_warning(*_resample.mask_ras_bounds(t1_mask, t1.ijk_to_ras))
    warnings: list = [] if cut is None else [cut]
    step(0.55, "resampling T1 onto the model grid")
    t1_model = grid.to_model(t1)
    t2_model = None
    if t2 is not None:
        if register:
            step(0.6, "registering T2 to T1")
            sub = None if progress is None else (lambda f, m: progress(0.6 + 0.25 * f, m))
            _, moving_to_fixed = register_rigid(t2, t1, progress=sub)
            t2 = Volume(t2.array, moving_to_fixed @ t2.ijk_to_ras)
        step(0.85, "resampling T2 onto the model grid")
        t2_model = grid.to_model(t2)
    step(0.9, "head mask and intensity scaling")
    mask = head_mask(grid.as_volume(t1_model))
    coverage = offset = None
    if t2 is not None:
        coverage = _head_coverage(mask, grid, t2)
        message = (f"only {100 * coverage:.0f}% of the head lies inside the T2's field of view "
                   f"({_resample.ras_bounds(t2)}; T1: {_resample.ras_bounds(t1)})")
        if coverage < MIN_T2_HEAD_COVERAGE:
            raise ValueError(f"{message}: CondNet needs a T2 of the whole head. Check that both scans come from the "
                             "same subject and session, or pass the T1 alone with T1-only weights")
        if coverage < 0.99:
            warnings.append(f"{message}; CondNet sees no T2 signal in the rest, so the conductivity there is "
                            "unreliable")
            logger.warning("%s", warnings[-1])
        offset = _head_offset_mm(mask, head_mask(grid.as_volume(t2_model)), grid, t1, t2)
        if offset is not None and np.linalg.norm(offset) > MAX_T2_OFFSET_MM:
            advice = "Check the registration" if register else (
                "Unless both come from one session without head motion, register T2 to T1 (condnet predict "
                "--register; Slicer: tick Register T2 to T1)")
            warnings.append(
                f"the T2's head lies {np.linalg.norm(offset):.1f} mm from the T1's (R {offset[0]:+.1f}, "
                f"A {offset[1]:+.1f}, S {offset[2]:+.1f} mm between the centroids of their head masks): the scans "
                f"look misregistered, and CondNet reads them voxel by voxel. {advice}")
            logger.warning("%s", warnings[-1])
    t1_unit = zscore_unit(t1_model, mask)
    t2_unit = None if t2_model is None else zscore_unit(t2_model, mask)
    step(1.0, "preprocessing done")
    return PreparedPair(t1=t1_unit, t2=t2_unit, mask=mask, grid=grid, t2_coverage=coverage,
                        t2_offset_mm=offset, warnings=tuple(warnings))
