"""Synthetic T1- and T2-weighted MRI from a tissue map (SynthSeg-style domain randomisation).

This is the package's one MRI simulation: the training-set builder and the test phantom
(:mod:`CondNetLogic.phantom`) both call :func:`synthesize_pair`.

Steps, per image (all randomness from the caller's ``numpy.random.Generator``):

1. per-tissue mean intensity drawn around the priors of ``Resources/mri_priors.json`` (WM > GM > CSF
   on T1w and the reverse on T2w are kept by sorting the three draws), plus an optional small offset
   per original label (deep grey nuclei are not cortex);
2. within-tissue texture: a smooth Gaussian random field scaled per tissue;
3. partial-volume blur (Gaussian PSF);
4. optional thick slices along one axis (blurred, subsampled and linearly resampled back);
5. optional small T2-to-T1 misregistration (a sub-voxel to few-mm translation of the T2w image);
6. a smooth multiplicative bias field (low-resolution Gaussian radial-basis grid, exponentiated);
7. Rician noise (magnitude of a complex signal with Gaussian noise on both channels);
8. robust scaling to [0, 1] and a random gamma.

Before these, :func:`synthesize_subject` can deform the label map by a smooth random displacement field
(:func:`deform_labels`, ``SynthOptions.deformation_mm``; off by default) and writes the deformed tissue map
with the pair.

Intensities are unitless on a 0..1 scale.  Arrays are ``(I, J, K)`` on the tissue map's grid; spacing
is in mm.

References
----------
Billot et al., "SynthSeg: Segmentation of brain MRI scans of any contrast and resolution without
retraining", Medical Image Analysis 86:102789, 2023, doi:10.1016/j.media.2023.102789.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Callable, Mapping, Optional, Sequence

import numpy as np

from ._types import ProgressCallback
from .conductivity import TABLE_A, TISSUE_INDEX, TISSUES, labels_to_tissues, tissues_to_conductivity
from .errors import Cancelled
from .volume import Volume

__all__ = [
    "DEFAULT_PRIORS",
    "MriPriors",
    "SynthOptions",
    "deform_labels",
    "load_priors",
    "save_preview",
    "synthesize_pair",
    "synthesize_subject",
]

logger = logging.getLogger(__name__)

#: Path of the shipped intensity priors.
DEFAULT_PRIORS = Path(__file__).resolve().parent.parent / "Resources" / "mri_priors.json"


# Brain tissues whose contrast ordering is kept: T1w descending, T2w ascending in this order.
_ORDERED = (TISSUE_INDEX["wm"], TISSUE_INDEX["gm"], TISSUE_INDEX["csf"])


@dataclass(frozen=True)
class MriPriors:
    """Per-tissue intensity priors, arrays ``(len(TISSUES),)`` indexed by tissue index, 0..1 scale."""

    t1_mean: np.ndarray
    t1_sd: np.ndarray
    t2_mean: np.ndarray
    t2_sd: np.ndarray
    texture_scale: np.ndarray
    fat_fraction: np.ndarray
    path: str


def load_priors(path: str | os.PathLike = DEFAULT_PRIORS) -> MriPriors:
    """Read and validate an MRI intensity-priors file (format of ``Resources/mri_priors.json``).

    Raises
    ------
    ValueError
        If the file is not JSON, a tissue of :data:`TISSUES` is missing or unknown, or a mean is outside
        [0, 1] or an sd negative or not finite.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from err
    tissues = data.get("tissues") if isinstance(data, dict) else None
    if not isinstance(tissues, dict):
        raise ValueError(f"{path}: expected an object with a 'tissues' mapping, got {type(tissues).__name__}")
    unknown = sorted(set(tissues) - set(TISSUES))
    missing = [t for t in TISSUES if t not in tissues]
    if unknown or missing:
        raise ValueError(f"{path}: tissues must be exactly {list(TISSUES)}; unknown {unknown}, missing {missing}")
    arrays = {key: np.zeros(len(TISSUES), dtype=np.float64) for key in ("t1_mean", "t1_sd", "t2_mean", "t2_sd")}
    arrays["texture_scale"] = np.ones(len(TISSUES), dtype=np.float64)
    arrays["fat_fraction"] = np.zeros(len(TISSUES), dtype=np.float64)
    for tissue, entry in tissues.items():
        for key, default, high in (("texture_scale", 1.0, np.inf), ("fat_fraction", 0.0, 1.0)):
            value = entry.get(key, default) if isinstance(entry, dict) else None
            if not isinstance(value, (int, float)) or not (np.isfinite(value) and 0.0 <= value <= high):
                raise ValueError(f"{path}: {tissue}.{key} must be a number in [0, {high}], got {value!r}")
            arrays[key][TISSUE_INDEX[tissue]] = float(value)
        for contrast in ("t1", "t2"):
            try:
                mean = float(entry[contrast]["mean"])
                sd = float(entry[contrast]["sd"])
            except (KeyError, TypeError, ValueError) as err:
                raise ValueError(f"{path}: {tissue}.{contrast} needs numeric 'mean' and 'sd' ({err!r})") from err
            if not (np.isfinite(mean) and 0.0 <= mean <= 1.0):
                raise ValueError(f"{path}: {tissue}.{contrast}.mean must be in [0, 1], got {mean}")
            if not (np.isfinite(sd) and sd >= 0.0):
                raise ValueError(f"{path}: {tissue}.{contrast}.sd must be >= 0, got {sd}")
            arrays[f"{contrast}_mean"][TISSUE_INDEX[tissue]] = mean
            arrays[f"{contrast}_sd"][TISSUE_INDEX[tissue]] = sd
    return MriPriors(path=str(path), **arrays)


def _check_range(name: str, value: Sequence[float], low: float, high: float) -> tuple:
    pair = tuple(float(v) for v in value)
    if len(pair) != 2 or not (low <= pair[0] <= pair[1] <= high):
        raise ValueError(f"SynthOptions.{name} must be (min, max) with {low} <= min <= max <= {high}; got {value}")
    return pair


@dataclass(frozen=True)
class SynthOptions:
    """Randomisation settings of :func:`synthesize_pair`; ranges are ``(min, max)`` drawn uniformly.

    Use the presets :meth:`mild` (near-nominal contrast, light artefacts: the test phantom) and
    :meth:`randomised` (wide SynthSeg-style randomisation: training data).

    Attributes
    ----------
    contrast_spread : float
        Multiplier of the priors' sd when drawing each image's tissue means (0: the prior means).
    label_offset_sd : float
        sd of an extra per-label mean offset (only when labels are given; none for air), 0..1 scale.
    texture_sd : (float, float)
        Within-tissue texture amplitude (sd, 0..1 scale), drawn per tissue and image and multiplied by
        the tissue's ``texture_scale`` prior (mixed classes such as SynthSeg's muscle/fat label vary more).
    texture_scale_mm : float
        Gaussian correlation length of the texture field (mm).
    blur_mm : (float, float)
        Partial-volume blur: sd of the Gaussian PSF (mm).
    thick_slice_prob : float
        Probability that an image is acquired with thick slices along one random axis.
    slice_thickness_mm : (float, float)
        Slice thickness when thick slices are drawn (mm).
    misregistration_mm : float
        Largest T2-to-T1 translation (mm, drawn uniformly in a ball); 0 turns it off.
    bias_sd : (float, float)
        sd of the log bias field's control points.  The smooth upsampling averages neighbouring points, so the
        field itself varies less: 0.2 gives a log-field sd of about 0.03 and a brightest/darkest ratio of about
        1.2 over the image (measured on 64^3 heads, 2026-11-29).  The shipped weights were trained with this.
    bias_grid : int
        Control points per axis of the bias field.
    noise_sd : (float, float)
        Rician noise sd relative to the image's bright end.
    gamma_sd : float
        sd of log(gamma) of the final intensity transform (0: no gamma).
    enforce_order : bool
        Keep WM > GM > CSF on T1w and WM < GM < CSF on T2w.
    deformation_mm : (float, float)
        Random smooth non-linear deformation of the label map before synthesis (SynthSeg's spatial
        augmentation: more anatomical variety from the same heads): sd of each displacement component (mm),
        drawn per pair; the tissue map written with the pair is deformed too, so images and targets stay
        aligned.  (0, 0), the default: no deformation and no random draw, so sets made before this option
        existed are reproduced exactly.
    deformation_grid : int
        Control points per axis of the deformation field (10 on a 256 mm grid: about 28 mm apart).
    """

    contrast_spread: float = 1.5
    label_offset_sd: float = 0.03
    texture_sd: tuple = (0.0, 0.08)
    texture_scale_mm: float = 1.5
    blur_mm: tuple = (0.3, 2.0)
    thick_slice_prob: float = 0.3
    slice_thickness_mm: tuple = (1.5, 5.0)
    misregistration_mm: float = 1.0
    bias_sd: tuple = (0.0, 0.35)
    bias_grid: int = 4
    noise_sd: tuple = (0.0, 0.05)
    gamma_sd: float = 0.25
    enforce_order: bool = True
    deformation_mm: tuple = (0.0, 0.0)
    deformation_grid: int = 10

    def __post_init__(self) -> None:
        """Check every field; raise ``ValueError`` naming the field, the allowed range and the value."""
        for name in ("contrast_spread", "label_offset_sd", "texture_scale_mm", "misregistration_mm", "gamma_sd"):
            value = float(getattr(self, name))
            if not (np.isfinite(value) and value >= 0.0):
                raise ValueError(f"SynthOptions.{name} must be a finite number >= 0; got {getattr(self, name)!r}")
            object.__setattr__(self, name, value)
        object.__setattr__(self, "texture_sd", _check_range("texture_sd", self.texture_sd, 0.0, 1.0))
        object.__setattr__(self, "blur_mm", _check_range("blur_mm", self.blur_mm, 0.0, 10.0))
        object.__setattr__(
            self, "slice_thickness_mm", _check_range("slice_thickness_mm", self.slice_thickness_mm, 0.0, 20.0)
        )
        object.__setattr__(self, "bias_sd", _check_range("bias_sd", self.bias_sd, 0.0, 2.0))
        object.__setattr__(self, "noise_sd", _check_range("noise_sd", self.noise_sd, 0.0, 1.0))
        if not 0.0 <= float(self.thick_slice_prob) <= 1.0:
            raise ValueError(f"SynthOptions.thick_slice_prob must be in [0, 1]; got {self.thick_slice_prob}")
        if int(self.bias_grid) != self.bias_grid or not 2 <= int(self.bias_grid) <= 16:
            raise ValueError(f"SynthOptions.bias_grid must be an integer in 2..16; got {self.bias_grid}")
        object.__setattr__(self, "bias_grid", int(self.bias_grid))  # 4.0 (from JSON) indexes arrays as 4
        object.__setattr__(self, "deformation_mm", _check_range("deformation_mm", self.deformation_mm, 0.0, 10.0))
        if int(self.deformation_grid) != self.deformation_grid or not 2 <= int(self.deformation_grid) <= 32:
            raise ValueError(f"SynthOptions.deformation_grid must be an integer in 2..32; got {self.deformation_grid}")
        object.__setattr__(self, "deformation_grid", int(self.deformation_grid))

    @classmethod
    def mild(cls) -> SynthOptions:
        """Near-nominal contrast and light artefacts (fixed thin slices, no misregistration, no gamma)."""
        return cls(
            contrast_spread=0.2, label_offset_sd=0.0, texture_sd=(0.01, 0.02), blur_mm=(0.5, 0.5),
            thick_slice_prob=0.0, misregistration_mm=0.0, bias_sd=(0.05, 0.05), noise_sd=(0.01, 0.01),
            gamma_sd=0.0,
        )

    @classmethod
    def randomised(cls) -> SynthOptions:
        """Wide SynthSeg-style randomisation for training (the field defaults)."""
        return cls()

    @classmethod
    def preset(cls, name: str) -> SynthOptions:
        """``"mild"`` or ``"randomised"``."""
        presets = {"mild": cls.mild, "randomised": cls.randomised}
        if name not in presets:
            raise ValueError(f"unknown synthesis preset {name!r}; expected one of {sorted(presets)}")
        return presets[name]()

    def to_dict(self) -> dict:
        """JSON-ready dictionary (ranges as lists)."""
        return {key: list(value) if isinstance(value, tuple) else value for key, value in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: Mapping) -> SynthOptions:
        """Inverse of :meth:`to_dict`; unknown keys raise ``ValueError``."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown SynthOptions fields {unknown}; known: {sorted(known)}")
        return cls(**{key: tuple(value) if isinstance(value, list) else value for key, value in data.items()})


def _gaussian_rbf_matrix(n_points: int, n_centres: int) -> np.ndarray:
    """Row-normalised Gaussian weights (n_points, n_centres) for a smooth upsampling of a coarse grid."""
    x = np.linspace(0.0, 1.0, n_points)
    centres = np.linspace(0.0, 1.0, n_centres)
    width = 1.0 / max(n_centres - 1, 1)
    weights = np.exp(-0.5 * ((x[:, None] - centres[None, :]) / width) ** 2)
    return (weights / weights.sum(axis=1, keepdims=True)).astype(np.float32)


def _smooth_field(shape: tuple, coarse: np.ndarray) -> np.ndarray:
    """Upsample a coarse (a, b, c) grid to ``shape`` by separable Gaussian radial basis functions."""
    wi, wj, wk = (_gaussian_rbf_matrix(n, m) for n, m in zip(shape, coarse.shape))
    field = np.tensordot(coarse.astype(np.float32), wk, axes=([2], [1]))  # (a, b, K)
    field = np.tensordot(field, wj, axes=([1], [1]))  # (a, K, J)
    field = np.tensordot(field, wi, axes=([0], [1]))  # (K, J, I)
    return np.ascontiguousarray(field.transpose(2, 1, 0))


def deform_labels(labels: np.ndarray, rng: np.random.Generator, *, sd_mm: float, grid: int = 10,
                  spacing_mm: float = 1.0) -> tuple:
    """Warp a label map by a smooth random displacement field (nearest neighbour, so no new labels).

    Each displacement component is a coarse ``grid``^3 Gaussian draw upsampled by Gaussian radial basis
    functions and scaled to an sd of ``sd_mm`` over the grid; voxel ``x`` takes the label at ``x + u(x)``
    (edge labels repeat beyond the border).  Returns ``(warped, params)`` with params holding the sd and
    the largest displacement (mm).
    """
    from scipy import ndimage

    labels = np.asarray(labels)
    if sd_mm <= 0:
        return labels, {"sd_mm": 0.0, "grid": int(grid), "max_displacement_mm": 0.0}
    fields = []
    for _ in range(3):
        component = _smooth_field(labels.shape, rng.standard_normal((int(grid),) * 3))
        component *= np.float32(sd_mm / spacing_mm / max(float(component.std()), 1e-12))  # voxels
        fields.append(component)
    largest = 0.0
    warped = np.empty_like(labels)
    j, k = np.meshgrid(np.arange(labels.shape[1], dtype=np.float32), np.arange(labels.shape[2], dtype=np.float32),
                       indexing="ij")
    for start in range(0, labels.shape[0], 32):  # slabs keep the coordinate arrays small (about 50 MB)
        stop = min(start + 32, labels.shape[0])
        ui, uj, uk = (f[start:stop] for f in fields)
        largest = max(largest, float(np.sqrt(ui * ui + uj * uj + uk * uk).max()))
        i = np.arange(start, stop, dtype=np.float32)[:, None, None]
        coordinates = np.stack([i + ui, j[None] + uj, k[None] + uk])
        warped[start:stop] = ndimage.map_coordinates(labels, coordinates, order=0, mode="nearest")
    return warped, {"sd_mm": float(sd_mm), "grid": int(grid), "max_displacement_mm": largest * float(spacing_mm)}


def _texture_field(shape: tuple, rng: np.random.Generator, sigma_vox: float) -> np.ndarray:
    """Unit-variance smooth Gaussian random field (float32)."""
    from scipy import ndimage

    field = rng.standard_normal(shape, dtype=np.float32)
    if sigma_vox > 0:
        ndimage.gaussian_filter(field, sigma_vox, output=field, truncate=3.0)
    sd = float(field[::3, ::3, ::3].std())
    field *= np.float32(1.0 / max(sd, 1e-12))
    return field


def _thick_slices(image: np.ndarray, axis: int, step_vox: float) -> np.ndarray:
    """Blur along ``axis`` by the slice profile, keep every ``step_vox``-th plane, resample back linearly."""
    from scipy import ndimage

    if step_vox <= 1.0:
        return image
    blurred = ndimage.gaussian_filter1d(image, step_vox / 2.355, axis=axis, truncate=3.0)
    n = image.shape[axis]
    positions = np.arange(0.0, n - 1 + 1e-9, step_vox)
    low = _linear_take(blurred, positions, axis)
    # Back to the original planes: positions of each original plane on the thick-slice axis.
    back = np.clip(np.arange(n) / step_vox, 0.0, len(positions) - 1)
    return _linear_take(low, back, axis)


def _linear_take(array: np.ndarray, positions: np.ndarray, axis: int) -> np.ndarray:
    """Linear interpolation of ``array`` at fractional indices ``positions`` along ``axis``."""
    lower = np.floor(positions).astype(np.intp)
    upper = np.minimum(lower + 1, array.shape[axis] - 1)
    weight = (positions - lower).astype(np.float32)
    shape = [1] * array.ndim
    shape[axis] = -1
    weight = weight.reshape(shape)
    out = np.take(array, lower, axis=axis)
    out *= 1.0 - weight
    out += weight * np.take(array, upper, axis=axis)
    return out


def _draw_means(
    rng: np.random.Generator, mean: np.ndarray, sd: np.ndarray, spread: float, descending: bool, enforce: bool
) -> np.ndarray:
    values = np.clip(mean + spread * sd * rng.standard_normal(len(mean)), 0.0, 1.0)
    if enforce:
        ordered = np.sort(values[list(_ORDERED)])
        values[list(_ORDERED)] = ordered[::-1] if descending else ordered
    return values


def _render(
    tissues: np.ndarray,
    means: np.ndarray,
    label_offsets: Optional[np.ndarray],
    texture: np.ndarray,
    texture_sd: np.ndarray,
) -> np.ndarray:
    image = means.astype(np.float32)[tissues]
    if label_offsets is not None:
        image += label_offsets
    image += texture_sd.astype(np.float32)[tissues] * texture
    return image


def _degrade(
    image: np.ndarray, rng: np.random.Generator, spacing_mm: float, options: SynthOptions, shift_mm=None
) -> tuple:
    """Blur, thick slices, misregistration, bias, noise, scaling and gamma; returns (image, params)."""
    from scipy import ndimage

    params: dict = {}
    blur = float(rng.uniform(*options.blur_mm))
    params["blur_mm"] = blur
    if blur > 0:
        ndimage.gaussian_filter(image, blur / spacing_mm, output=image, truncate=3.0)
    thick = bool(rng.uniform() < options.thick_slice_prob)
    params["thick_slices"] = None
    if thick:
        axis = int(rng.integers(3))
        thickness = float(rng.uniform(*options.slice_thickness_mm))
        params["thick_slices"] = {"axis": axis, "thickness_mm": thickness}
        image = _thick_slices(image, axis, thickness / spacing_mm)
    if shift_mm is not None and np.any(shift_mm != 0):
        image = ndimage.shift(image, np.asarray(shift_mm) / spacing_mm, order=1, mode="nearest")
    bias_sd = float(rng.uniform(*options.bias_sd))
    coarse = rng.standard_normal((options.bias_grid,) * 3) * bias_sd
    params["bias_sd"] = bias_sd
    params["bias_coarse_log"] = np.round(coarse, 6).tolist()
    if bias_sd > 0:
        image *= np.exp(_smooth_field(image.shape, coarse))
    np.maximum(image, 0.0, out=image)
    noise = float(rng.uniform(*options.noise_sd))
    params["noise_sd"] = noise
    if noise > 0:
        real = rng.standard_normal(image.shape, dtype=np.float32)
        real *= np.float32(noise)
        real += image
        imag = rng.standard_normal(image.shape, dtype=np.float32)
        imag *= np.float32(noise)
        np.hypot(real, imag, out=image)
        del real, imag
    scale = float(np.percentile(image[::3, ::3, ::3], 99.9))
    params["scale"] = scale
    image *= np.float32(1.0 / max(scale, 1e-6))
    np.clip(image, 0.0, 1.0, out=image)
    gamma = float(np.exp(options.gamma_sd * rng.standard_normal()))
    params["gamma"] = gamma
    if gamma != 1.0:
        np.power(image, np.float32(gamma), out=image)
    return image, params


def synthesize_pair(
    tissues: np.ndarray,
    *,
    rng: np.random.Generator,
    spacing_mm: float = 1.0,
    options: Optional[SynthOptions] = None,
    labels: Optional[np.ndarray] = None,
    priors: Optional[MriPriors] = None,
) -> tuple:
    """Synthesise one co-registered T1w/T2w pair from a tissue map.

    Parameters
    ----------
    tissues : uint8 ndarray (I, J, K)
        Tissue indices into :data:`CondNetLogic.conductivity.TISSUES` on an isotropic grid.
    rng : numpy.random.Generator
        Source of every random draw; the same generator state gives identical images.
    spacing_mm : float
        Isotropic voxel size (mm); blur, texture and slice thickness are set in mm.
    options : SynthOptions, optional
        Randomisation; default :meth:`SynthOptions.randomised`.
    labels : integer ndarray (I, J, K), optional
        The original label map; adds a small random offset per label within a tissue.
    priors : MriPriors, optional
        Default: ``Resources/mri_priors.json``.

    Returns
    -------
    t1, t2 : float32 ndarray (I, J, K)
        Images on a 0..1 scale.
    params : dict
        JSON-ready record of every drawn parameter (tissue means, texture amplitudes, blur, slices,
        misregistration, bias coefficients, noise, gamma).

    Raises
    ------
    TypeError
        If ``tissues`` is not an integer array or ``rng`` is not a ``numpy.random.Generator``.
    ValueError
        If ``tissues`` is not 3D, holds indices outside the tissue list, is all air, or ``labels``
        differs in shape.
    """
    tissues = np.asarray(tissues)
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator; got {type(rng).__name__}")
    if not np.issubdtype(tissues.dtype, np.integer):
        raise TypeError(f"tissues must be an integer tissue-index array; got dtype {tissues.dtype}")
    if tissues.ndim != 3:
        raise ValueError(f"tissues must be a 3D array (I, J, K); got shape {tissues.shape}")
    if not (np.isfinite(spacing_mm) and spacing_mm > 0):
        raise ValueError(f"spacing_mm must be a positive number; got {spacing_mm}")
    top = int(tissues.max())
    if int(tissues.min()) < 0 or top >= len(TISSUES):
        raise ValueError(f"tissue indices must be in 0..{len(TISSUES) - 1}; got {int(tissues.min())}..{top}")
    if top == 0:
        raise ValueError("the tissue map is empty (all air): nothing to synthesise")
    if labels is not None:
        labels = np.asarray(labels)
        if labels.shape != tissues.shape:
            raise ValueError(f"labels shape {labels.shape} differs from tissues shape {tissues.shape}")
    tissues = tissues.astype(np.uint8, copy=False)
    options = SynthOptions.randomised() if options is None else options
    priors = load_priors() if priors is None else priors

    params: dict = {"options": options.to_dict(), "priors": priors.path, "spacing_mm": float(spacing_mm)}
    t1_means = _draw_means(rng, priors.t1_mean, priors.t1_sd, options.contrast_spread, True, options.enforce_order)
    t2_means = _draw_means(rng, priors.t2_mean, priors.t2_sd, options.contrast_spread, False, options.enforce_order)
    t1_means[0] = t2_means[0] = 0.0  # air carries no signal; its brightness comes from noise only
    params["t1_means"] = dict(zip(TISSUES, np.round(t1_means, 6).tolist()))
    params["t2_means"] = dict(zip(TISSUES, np.round(t2_means, 6).tolist()))

    offsets = [None, None]
    if labels is not None and options.label_offset_sd > 0:
        values, inverse = _label_inverse(labels)
        air_labels = np.unique(inverse[tissues == TISSUE_INDEX["air"]])  # every label with an air voxel
        for c in range(2):
            draw = rng.standard_normal(len(values)) * options.label_offset_sd
            draw[air_labels] = 0.0  # air carries no signal (an offset would grey the whole background)
            offsets[c] = draw.astype(np.float32)[inverse]
            params[f"t{c + 1}_label_offsets"] = dict(zip((str(v) for v in values), np.round(draw, 6).tolist()))

    texture = _texture_field(tissues.shape, rng, options.texture_scale_mm / spacing_mm)
    t1_texture = rng.uniform(*options.texture_sd, size=len(TISSUES)) * priors.texture_scale
    t2_texture = rng.uniform(*options.texture_sd, size=len(TISSUES)) * priors.texture_scale
    t1_texture[0] = t2_texture[0] = 0.0
    params["t1_texture_sd"] = dict(zip(TISSUES, np.round(t1_texture, 6).tolist()))
    params["t2_texture_sd"] = dict(zip(TISSUES, np.round(t2_texture, 6).tolist()))

    shift = np.zeros(3)
    if options.misregistration_mm > 0:
        direction = rng.standard_normal(3)
        direction /= np.linalg.norm(direction)
        shift = direction * options.misregistration_mm * rng.uniform() ** (1.0 / 3.0)
    params["t2_shift_mm"] = np.round(shift, 6).tolist()

    fat_mix = _fat_mixture(tissues, rng, spacing_mm, priors, params)
    if fat_mix is not None:
        # Mixed classes (SynthSeg's label 507: muscle and fat not separated) blend towards fat.
        offsets = [
            fat_mix * np.float32(means[TISSUE_INDEX["fat"]]) - fat_mix * means.astype(np.float32)[tissues]
            + (0.0 if offset is None else offset)
            for means, offset in zip((t1_means, t2_means), offsets)
        ]
        del fat_mix
    t1 = _render(tissues, t1_means, offsets[0], texture, t1_texture)
    t1, params["t1"] = _degrade(t1, rng, spacing_mm, options)
    t2 = _render(tissues, t2_means, offsets[1], texture, t2_texture)
    del texture
    t2, params["t2"] = _degrade(t2, rng, spacing_mm, options, shift_mm=shift)
    return t1.astype(np.float32, copy=False), t2.astype(np.float32, copy=False), params


def _fat_mixture(
    tissues: np.ndarray, rng: np.random.Generator, spacing_mm: float, priors: MriPriors, params: dict
) -> Optional[np.ndarray]:
    """Per-voxel fat fraction (float32, 0 outside mixed tissues) from a smooth field of ~12 mm scale."""
    if not priors.fat_fraction.any():
        return None
    most = rng.uniform(0.0, 1.0, size=len(TISSUES)) * priors.fat_fraction
    params["fat_fraction_max"] = dict(zip(TISSUES, np.round(most, 6).tolist()))
    grid = tuple(max(2, int(np.ceil(n * spacing_mm / 12.0))) for n in tissues.shape)
    field = _smooth_field(tissues.shape, rng.standard_normal(grid))
    # Sigmoid of 3x a smooth field (sd about 0.17, not 1: the upsampling averages the unit-normal control points):
    # the fat fraction drifts smoothly, between about 0.3 and 0.7 of the tissue's maximum for 90 % of the voxels.
    field *= np.float32(-3.0)
    np.exp(field, out=field)
    field += np.float32(1.0)
    np.reciprocal(field, out=field)
    field *= most.astype(np.float32)[tissues]
    return field


def _label_inverse(labels: np.ndarray) -> tuple:
    """Sorted distinct labels and the index of each voxel's label in them."""
    if np.issubdtype(labels.dtype, np.integer) and labels.min() >= 0 and labels.max() < 1 << 16:
        present = np.bincount(labels.ravel().astype(np.intp)) > 0
        values = np.flatnonzero(present)
        lookup = np.cumsum(present) - 1
        return values, lookup[labels.astype(np.intp)]
    values, inverse = np.unique(labels, return_inverse=True)
    return values, inverse.reshape(labels.shape)


def _display_planes(array: np.ndarray, ijk_to_ras: np.ndarray) -> list:
    """Axial, coronal and sagittal mid-planes in radiological display (patient's right on the viewer's left)."""
    direction = ijk_to_ras[:3, :3]
    # Voxel axis nearest to each RAS axis, and whether it runs the other way.
    order = [int(np.argmax(np.abs(direction[axis]))) for axis in range(3)]
    if sorted(order) != [0, 1, 2]:
        order = [0, 1, 2]
    ras = np.transpose(array, order)
    for axis in range(3):
        if direction[axis, order[axis]] < 0:
            ras = np.flip(ras, axis=axis)
    centre = [n // 2 for n in ras.shape]
    axial = ras[:, :, centre[2]].T  # rows A, columns R
    coronal = ras[:, centre[1], :].T  # rows S, columns R
    sagittal = ras[centre[0], :, :].T  # rows S, columns A
    # Radiological display: patient's right on the viewer's left (flip R columns), superior/anterior up.
    return [np.flipud(np.fliplr(axial)), np.flipud(np.fliplr(coronal)), np.flipud(sagittal)]


def save_preview(path: str | os.PathLike, t1: Volume, t2: Volume, sigma: Volume, *, title: str = "") -> Path:
    """Write a PNG with three mid-planes (axial, coronal, sagittal) of T1w | T2w | conductivity (S/m).

    Raises
    ------
    FileExistsError
        If ``path`` exists.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    if path.exists():
        raise FileExistsError(f"{path} exists; previews are never overwritten")
    columns = [("T1w", t1, "gray", 0.0, 1.0), ("T2w", t2, "gray", 0.0, 1.0)]
    columns.append(("conductivity (S/m)", sigma, "viridis", 0.0, float(max(sigma.array.max(), 1e-6))))
    figure, axes = plt.subplots(3, 3, figsize=(9, 9), dpi=80)
    for column, (name, volume, cmap, vmin, vmax) in enumerate(columns):
        for row, plane in enumerate(_display_planes(volume.array, volume.ijk_to_ras)):
            axis = axes[row, column]
            shown = axis.imshow(plane, cmap=cmap, vmin=vmin, vmax=vmax, interpolation="nearest")
            axis.set_axis_off()
            if row == 0:
                axis.set_title(name)
        if column == 2:
            figure.colorbar(shown, ax=axes[:, column], shrink=0.6)
    figure.suptitle(title or "synthetic MRI")
    figure.savefig(path)
    plt.close(figure)
    return path


def _check_out_folders(folders: Sequence[Path]) -> None:
    for folder in folders:
        if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
            raise FileExistsError(f"{folder} exists and is not empty; choose another output folder")


def _prepare_labels(labels: Volume, mapping: Mapping[int, int]) -> tuple:
    """Cast, resample to 1 mm isotropic (nearest neighbour) if needed, and map to tissues."""
    array = np.asarray(labels.array)
    if array.ndim != 3:
        raise ValueError(f"label map must be a scalar 3D volume; got shape {array.shape}")
    if np.issubdtype(array.dtype, np.floating):
        rounded = np.rint(array)
        if not np.array_equal(rounded, array):
            raise ValueError("label map holds non-integer values; is it an intensity image?")
        array = rounded.astype(np.int32)
    elif not np.issubdtype(array.dtype, np.integer):
        raise TypeError(f"label map must hold integers; got dtype {array.dtype}")
    labels = labels.with_array(array)
    resampled_from = None
    if not (labels.is_isotropic and np.allclose(labels.spacing, 1.0, atol=1e-4)):
        from .preprocessing import resample_isotropic

        resampled_from = [float(s) for s in labels.spacing]
        logger.warning("label map spacing %s mm: resampling to 1 mm with nearest neighbour", resampled_from)
        labels = resample_isotropic(labels, 1.0, interpolation="nearest")
        labels = labels.with_array(np.asarray(labels.array).astype(array.dtype, copy=False))
    return labels, head_tissues(labels.array, mapping), resampled_from


def head_tissues(labels: np.ndarray, mapping: Mapping[int, int]) -> np.ndarray:
    """Tissue indices of a label array (:func:`~CondNetLogic.conductivity.labels_to_tissues`); ``ValueError`` when
    no voxel is head, as for any missing label."""
    tissues = labels_to_tissues(labels, mapping)
    if not tissues.any():
        raise ValueError("the label map is empty: every voxel maps to air")
    return tissues


def _to_uint12(image: np.ndarray) -> np.ndarray:
    """0..1 float image -> uint16 holding 0..4095, as 12-bit scanners store magnitude images.

    Quantising keeps the files small and fast to write (gzip on noisy float32 gives about 60 MB per
    256^3 image and takes seconds; this gives about 22 MB); 1/4095 is far below the noise.
    """
    return np.rint(np.clip(image, 0.0, 1.0) * 4095.0).astype(np.uint16)


def synthesize_subject(
    labels: Volume,
    mapping: Mapping[int, int],
    *,
    n: int,
    seed: int,
    out_dir: str | os.PathLike,
    prefix: str = "subject",
    preview: bool = True,
    options: Optional[SynthOptions] = None,
    progress: Optional[ProgressCallback] = None,
    cancel: Optional[Callable[[], bool]] = None,
    seed_key: Sequence[int] = (),
) -> list:
    """Synthesise ``n`` T1w/T2w pairs from one label map and write one folder per pair.

    Layout, for ``i`` in ``0..n-1``: ``out_dir/<prefix>_p<i>/`` holding ``t1.nii.gz`` and ``t2.nii.gz``
    (uint16, 0..4095: the 0..1 images of :func:`synthesize_pair` stored as 12-bit scanner output),
    ``tissues.nii.gz`` (uint8 tissue indices), ``params.json`` (seed and every drawn
    parameter) and ``preview.png`` (when ``preview``).  Volumes keep the label map's grid and affine;
    a label map that is not 1 mm isotropic is first resampled to 1 mm with nearest neighbour (the same
    direction and field of view; recorded in ``params.json``).

    Parameters
    ----------
    labels : Volume
        Integer label map (float files holding whole numbers are accepted).
    mapping : dict
        ``{label: tissue index}``, e.g. from :func:`CondNetLogic.conductivity.read_label_mapping`.
    n : int
        Number of pairs (>= 1).
    seed : int
        Pair ``i`` uses ``numpy.random.default_rng([seed, *seed_key, i])``: same seed, same images.
    out_dir : path
        Parent folder; created if missing.
    prefix : str
        Folder-name prefix of the pairs.
    preview : bool
        Write ``preview.png`` (axial, coronal, sagittal: T1w | T2w | Table I (A) conductivity).
    options : SynthOptions, optional
        Default :meth:`SynthOptions.randomised`.
    progress : callable(fraction, message), optional
    cancel : callable() -> bool, optional
        Checked between pairs; raises :class:`CondNetLogic.errors.Cancelled`.
    seed_key : sequence of int
        Extra seed words (the training-set builder passes the map number).

    Returns
    -------
    list of Path
        The pair folders, in order.

    Raises
    ------
    ValueError
        Labels missing from the mapping, non-integer labels, an empty map, ``n < 1``.
    FileExistsError
        If a pair folder exists and is not empty (checked before anything is written).
    """
    if int(n) != n or n < 1:
        raise ValueError(f"n must be a positive integer; got {n!r}")
    if int(seed) != seed or seed < 0:
        raise ValueError(f"seed must be a non-negative integer; got {seed!r}")
    out_dir = Path(out_dir)
    folders = [out_dir / f"{prefix}_p{i}" for i in range(int(n))]
    _check_out_folders(folders)
    options = SynthOptions.randomised() if options is None else options
    priors = load_priors()
    labels, tissues, resampled_from = _prepare_labels(labels, mapping)
    spacing = float(labels.spacing[0])
    existed = {folder: folder.exists() for folder in folders}  # empty, as checked above
    try:
        _write_pairs(folders, labels, tissues, mapping, options, priors, seed, seed_key, prefix, spacing,
                     resampled_from, preview, progress, cancel)
    except BaseException:  # failed, cancelled or interrupted: what this call wrote goes, so it can run again
        for folder, kept in existed.items():
            if kept:
                for child in folder.iterdir():
                    child.unlink()
            else:
                shutil.rmtree(folder, ignore_errors=True)
        logger.warning("removed the pairs of %s written before the stop", prefix)
        raise
    if progress is not None:
        progress(1.0, f"{prefix}: {n} pairs written")
    return folders


def _write_pairs(folders, labels, tissues, mapping, options, priors, seed, seed_key, prefix, spacing,
                 resampled_from, preview, progress, cancel) -> None:
    """Synthesise and write pair ``i`` into ``folders[i]`` (see :func:`synthesize_subject`)."""
    from .io import write_volume

    n = len(folders)
    for i, folder in enumerate(folders):
        if cancel is not None and cancel():
            raise Cancelled(f"synthesis cancelled before pair {i} of {prefix}")
        if progress is not None:
            progress(i / n, f"{prefix}: pair {i + 1} of {n}")
        seed_words = [int(seed), *(int(k) for k in seed_key), i]
        rng = np.random.default_rng(seed_words)
        pair_labels, pair_tissues, deformation = labels.array, tissues, None
        if options.deformation_mm[1] > 0:  # no draw when off: earlier sets stay reproducible
            pair_labels, deformation = deform_labels(
                labels.array, rng, sd_mm=float(rng.uniform(*options.deformation_mm)), grid=options.deformation_grid,
                spacing_mm=spacing)
            pair_tissues = labels_to_tissues(pair_labels, mapping)
        t1, t2, params = synthesize_pair(
            pair_tissues, rng=rng, spacing_mm=spacing, options=options, labels=pair_labels, priors=priors
        )
        params = {"seed": seed_words, "prefix": prefix, "resampled_from_spacing_mm": resampled_from,
                  "deformation": deformation, **params}
        folder.mkdir(parents=True, exist_ok=True)
        t1_volume, t2_volume = labels.with_array(_to_uint12(t1)), labels.with_array(_to_uint12(t2))
        write_volume(t1_volume, folder / "t1.nii.gz")
        write_volume(t2_volume, folder / "t2.nii.gz")
        write_volume(labels.with_array(pair_tissues), folder / "tissues.nii.gz")
        (folder / "params.json").write_text(json.dumps(params, indent=1))
        if preview:
            save_preview(
                folder / "preview.png", labels.with_array(t1), labels.with_array(t2),
                labels.with_array(tissues_to_conductivity(pair_tissues, TABLE_A)),
                title=folder.name,
            )
