"""A deterministic SYNTHETIC head phantom for tests and demos (not anatomy of any person).

:func:`make_head_phantom` builds a tissue map of nested, smoothly deformed shapes holding all 13
tissues of the paper's Table I plus air, on a RAS-aligned grid, and simulates T1- and T2-weighted
images from it with :func:`CondNetLogic.synth.synthesize_pair` (the package's one MRI simulation,
``SynthOptions.mild()``).

Geometry (mm, relative to the head centre, for a head of natural size; everything is scaled down to
fit smaller grids with a 10 % margin, and thin layers are kept at least 1.5 voxels thick):

* head: a deformed ellipsoid of semi-axes 75 (R), 90 (A), 100 (S) mm; skin 2 mm, fat 3 mm and
  muscle 3 mm (up to 8 mm on the temples) measured radially inward from its surface;
* cranium: the region under those soft layers and above a sloping skull-base surface, layered
  cortical / cancellous / cortical bone, dura and CSF (1.5, 2.5, 1.5, 1, 2.5 mm);
* brain: grey matter folded by a random smooth field (gyri, CSF-filled sulci), white matter, lateral
  ventricles, deep grey nuclei, and a cerebellum under a dural tentorium at the back;
* face and neck: muscle with eyes (vitreous humor in an orbital fat shell), a mucosa-lined sinus
  holding air, a vertebra (cortical shell, cancellous core) around a CSF canal and a WM cord;
* vessels (blood): a superior sagittal sinus, two carotid arteries and two middle cerebral arteries.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from .conductivity import TISSUE_INDEX, TISSUES
from .volume import Volume

__all__ = ["HEAD_SEMI_AXES_MM", "Phantom", "make_head_phantom"]

#: Semi-axes (R, A, S) in mm of the phantom head at natural size (head about 150 x 180 x 200 mm).
HEAD_SEMI_AXES_MM = (75.0, 90.0, 100.0)

_MIN_SHAPE = 48
_MIN_LAYER_VOX = 1.5
_MARGIN = 0.9


@dataclass(frozen=True)
class Phantom:
    """A synthetic head: tissue map and simulated images on one grid.

    Attributes
    ----------
    tissues : Volume
        uint8 indices into :data:`CondNetLogic.conductivity.TISSUES`.
    t1, t2 : Volume
        Simulated T1- and T2-weighted images, float32 on a 0..1 scale.
    params : dict
        Seed, scale factor and the synthesis parameters drawn for the images.
    """

    tissues: Volume
    t1: Volume
    t2: Volume
    params: dict


def _direction_field(rng: np.random.Generator, amplitude: float):
    """Return a smooth random function of direction: 1 + amplitude * tanh(cubic polynomial of the unit vector)."""
    linear = rng.standard_normal(3)
    quadratic = rng.standard_normal((3, 3))
    cubic = rng.standard_normal(3)

    def evaluate(u: tuple) -> np.ndarray:
        value = sum(linear[a] * u[a] for a in range(3)) * 0.5
        for a in range(3):
            for b in range(a, 3):
                value = value + quadratic[a, b] * u[a] * u[b] * 0.4
        value = value + sum(cubic[a] * u[a] ** 3 for a in range(3)) * 0.3
        return 1.0 + amplitude * np.tanh(value)

    return evaluate


def _fold_field(rng: np.random.Generator, x, y, z, wavelength_mm: float, n_waves: int = 6) -> np.ndarray:
    """Smooth random field in [-1, 1]: normalised sum of plane waves of random direction and phase."""
    field = np.zeros(np.broadcast(x, y, z).shape, dtype=np.float32)
    for _ in range(n_waves):
        k = rng.standard_normal(3)
        k *= 2.0 * np.pi / (wavelength_mm * np.linalg.norm(k))
        field += np.cos(k[0] * x + k[1] * y + k[2] * z + rng.uniform(0, 2 * np.pi)).astype(np.float32)
    return field / np.float32(np.sqrt(n_waves / 2.0) * 1.8)


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def make_head_phantom(
    shape: Sequence[int] = (96, 96, 96),
    *,
    seed: int = 0,
    spacing_mm: float = 1.0,
    center_ras: Sequence[float] = (0.0, 0.0, 0.0),
) -> Phantom:
    """Build the synthetic head phantom (tissue map, T1w, T2w) on an RAS-aligned isotropic grid.

    Parameters
    ----------
    shape : (int, int, int)
        Grid size (I, J, K) along R, A, S; each at least 48.
    seed : int
        Seeds the shape deformations, the cortical folding and the image synthesis; the same seed gives
        identical volumes.
    spacing_mm : float
        Isotropic voxel size (mm).
    center_ras : (float, float, float)
        RAS position (mm) of the head centre, which is the grid centre.

    Returns
    -------
    Phantom
        ``tissues`` (uint8), ``t1`` and ``t2`` (float32), all on the same grid with
        ``ijk_to_ras = diag(spacing, spacing, spacing, 1)`` plus the translation that puts the grid
        centre at ``center_ras``.

    Raises
    ------
    ValueError
        If ``shape`` is not three integers >= 32, ``spacing_mm`` is not positive, ``center_ras`` is
        not three finite numbers, or ``seed`` is negative.

    Examples
    --------
    >>> phantom = make_head_phantom((48, 48, 48), seed=1, spacing_mm=2.0)
    >>> phantom.tissues.shape, phantom.t1.array.dtype.name
    ((48, 48, 48), 'float32')
    """
    from .synth import SynthOptions, synthesize_pair

    shape = tuple(shape)
    if len(shape) != 3 or any(int(n) != n or n < _MIN_SHAPE for n in shape):
        raise ValueError(f"shape must be three integers >= {_MIN_SHAPE}; got {shape}")
    shape = tuple(int(n) for n in shape)
    if not (np.isfinite(spacing_mm) and spacing_mm > 0):
        raise ValueError(f"spacing_mm must be a positive number; got {spacing_mm}")
    center = np.asarray(center_ras, dtype=float)
    if center.shape != (3,) or not np.all(np.isfinite(center)):
        raise ValueError(f"center_ras must be three finite numbers (RAS mm); got {center_ras}")
    if int(seed) != seed or seed < 0:
        raise ValueError(f"seed must be a non-negative integer; got {seed!r}")
    spacing = float(spacing_mm)
    rng = np.random.default_rng([int(seed), 0x5EAD])

    fov = np.array(shape) * spacing
    semi = np.array(HEAD_SEMI_AXES_MM)
    scale = float(min(1.0, np.min(_MARGIN * fov / (2.0 * semi))))
    semi = semi * scale * (1.0 + 0.04 * rng.uniform(-1, 1, 3))
    min_layer = _MIN_LAYER_VOX * spacing

    def layer(thickness_mm: float) -> float:
        return max(thickness_mm * scale, min_layer)

    coords = [(np.arange(n, dtype=np.float32) - (n - 1) / 2.0) * np.float32(spacing) for n in shape]
    x, y, z = np.meshgrid(*coords, indexing="ij", sparse=True)
    r = np.sqrt(x * x + y * y + z * z) + np.float32(1e-6)
    u = (x / r, y / r, z / r)

    # Head surface along each direction: ellipsoid radius times a smooth deformation.
    head_radius = _direction_field(rng, 0.04)(u) / np.sqrt(
        (u[0] / semi[0]) ** 2 + (u[1] / semi[1]) ** 2 + (u[2] / semi[2]) ** 2
    )
    depth = (head_radius - r).astype(np.float32)  # mm below the skin surface, radially
    tissues = np.zeros(shape, dtype=np.uint8)
    tissues[depth > 0] = TISSUE_INDEX["skin"]
    skin = layer(2.0)
    fat = skin + layer(3.0)
    temple = 3.0 + 5.0 * u[0] ** 2 * _sigmoid((z - 0.0) / (10.0 * scale))  # temporalis muscle
    muscle = fat + np.maximum(temple * scale, min_layer)
    tissues[depth > skin] = TISSUE_INDEX["fat"]
    tissues[depth > fat] = TISSUE_INDEX["muscle"]

    # Skull base: higher at the front (above the eyes), lowest at the back (posterior fossa).
    ys = y / scale
    floor = scale * (-30.0 + 16.0 * _sigmoid((ys - 35.0) / 8.0) - 16.0 * _sigmoid((-ys - 35.0) / 8.0))
    cranial_depth = np.minimum(depth - muscle, z - floor).astype(np.float32)
    bounds = np.cumsum([layer(1.5), layer(2.5), layer(1.5), layer(1.0), layer(2.5)])
    for tissue, start in zip(
        ("cortical_bone", "cancellous_bone", "cortical_bone", "dura", "csf", "gm"), np.concatenate([[0.0], bounds])
    ):
        tissues[cranial_depth > start] = TISSUE_INDEX[tissue]
    cortex = cranial_depth - bounds[-1]  # mm below the brain surface

    # Folded cortex: sulci (CSF) where the fold field is near zero, WM cores reaching into the gyri.
    fold = np.abs(_fold_field(rng, x, y, z, wavelength_mm=max(24.0 * scale, 8.0 * spacing)))
    gm_thickness = layer(2.5)
    sulcus_depth = max(10.0 * scale, 3.0 * spacing)
    sulcus_width = max(0.12, 0.8 * spacing / max(24.0 * scale, 8.0 * spacing))
    brain = cortex > 0
    sulcus = brain & (fold < sulcus_width) & (cortex < sulcus_depth * (1.0 - fold / sulcus_width))
    # The WM surface lies one cortical thickness beneath the sulcal walls (converted to fold-field units
    # with the field's typical gradient, 2 pi / wavelength) and beneath the sulcal fundi.
    gm_in_fold_units = gm_thickness * 2.0 * np.pi / max(24.0 * scale, 8.0 * spacing) * 0.7
    white = (
        brain
        & (cortex > gm_thickness)
        & ((fold > sulcus_width + gm_in_fold_units) | (cortex > sulcus_depth + gm_thickness))
    )
    tissues[white] = TISSUE_INDEX["wm"]
    tissues[sulcus] = TISSUE_INDEX["csf"]

    def ellipsoid(centre_mm, semi_mm, minimum=None):
        minimum = min_layer if minimum is None else minimum
        s = [max(a * scale, minimum) for a in semi_mm]
        c = [a * scale for a in centre_mm]
        return ((x - c[0]) / s[0]) ** 2 + ((y - c[1]) / s[1]) ** 2 + ((z - c[2]) / s[2]) ** 2 <= 1.0

    # Cerebellum under the tentorium (a dural sheet) at the back of the brain.
    # Height above the skull base, kept a few voxels above the brain's lower edge on coarse grids.
    tentorium = floor + np.maximum(scale * (34.0 + 0.25 * (ys + 40.0)), bounds[-1] + 3.0 * spacing)
    posterior = brain & (y < -20.0 * scale)
    tissues[posterior & (z < tentorium) & ~sulcus] = TISSUE_INDEX["cerebellum"]
    tissues[posterior & (np.abs(z - tentorium) < max(0.75 * scale, 0.5 * spacing + 1e-3))] = TISSUE_INDEX["dura"]

    # Deep grey nuclei and lateral ventricles (inside the white matter).
    for side in (-1.0, 1.0):
        tissues[white & ellipsoid((side * 20.0, 2.0, 8.0), (7.0, 12.0, 8.0))] = TISSUE_INDEX["gm"]
        tissues[white & ellipsoid((side * 8.0, -2.0, 22.0), (4.0, 22.0, 6.0))] = TISSUE_INDEX["csf"]

    inside = depth > muscle
    # Face: eyes in orbital fat, a sinus lined with mucosa around an air cavity.
    for side in (-1.0, 1.0):
        tissues[inside & ellipsoid((side * 32.0, 62.0, -20.0), (14.5, 14.5, 14.5))] = TISSUE_INDEX["fat"]
        tissues[inside & ellipsoid((side * 32.0, 62.0, -20.0), (11.5, 11.5, 11.5))] = TISSUE_INDEX["vitreous_humor"]
    tissues[inside & ellipsoid((0.0, 50.0, -45.0), (20.0, 16.0, 14.0))] = TISSUE_INDEX["mucous"]
    tissues[inside & ellipsoid((0.0, 50.0, -45.0), (15.0, 11.0, 9.0))] = TISSUE_INDEX["air"]

    # Neck: vertebra around the spinal canal, cord, below the skull base.
    radial = np.sqrt(x * x + (y + 25.0 * scale) ** 2)
    neck = inside & (z < floor - layer(1.5)) & (z < -40.0 * scale)
    rings = np.cumsum([layer(5.5), layer(4.0), layer(1.5), layer(5.5), layer(1.5)])
    for tissue, ring in zip(("cortical_bone", "cancellous_bone", "cortical_bone", "csf", "wm"), rings[::-1]):
        tissues[neck & (radial < ring)] = TISSUE_INDEX[tissue]

    # Vessels: superior sagittal sinus (in the dura/CSF layer at the midline), carotids, MCAs.
    radius = max(2.0 * scale, 0.8 * spacing)
    dura_start, csf_end = bounds[2], bounds[4]
    tissues[(np.abs(x) < radius) & (cranial_depth > dura_start) & (cranial_depth < csf_end) & (z > 0)] = (
        TISSUE_INDEX["blood"]
    )
    for side in (-1.0, 1.0):
        carotid = np.sqrt((x - side * 22.0 * scale) ** 2 + (y - 5.0 * scale) ** 2) < radius
        tissues[inside & carotid & (z < floor)] = TISSUE_INDEX["blood"]
        mca = np.sqrt((y - 8.0 * scale) ** 2 + (z - 0.0) ** 2) < radius
        tissues[brain & mca & (side * x > 10.0 * scale) & (side * x < 45.0 * scale)] = TISSUE_INDEX["blood"]

    missing = [TISSUES[t] for t in range(len(TISSUES)) if not np.any(tissues == t)]
    if missing:
        raise ValueError(f"grid {shape} at {spacing} mm is too coarse for the phantom: {missing} vanished")

    t1, t2, synth_params = synthesize_pair(
        tissues, rng=np.random.default_rng([int(seed), 0x1A6E]), spacing_mm=spacing, options=SynthOptions.mild()
    )
    ijk_to_ras = np.diag([spacing, spacing, spacing, 1.0])
    ijk_to_ras[:3, 3] = center - (np.array(shape) - 1) / 2.0 * spacing
    params = {"seed": int(seed), "scale": scale, "head_semi_axes_mm": semi.tolist(), "synthesis": synth_params}
    return Phantom(
        tissues=Volume(tissues, ijk_to_ras),
        t1=Volume(t1, ijk_to_ras),
        t2=Volume(t2, ijk_to_ras),
        params=params,
    )
