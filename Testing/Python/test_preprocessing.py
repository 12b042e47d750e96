"""Tests for CondNetLogic.preprocessing: checks, orientation, resampling, registration, model grid, scaling."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from CondNetLogic import _resample
from CondNetLogic import preprocessing as pp
from CondNetLogic.errors import Cancelled
from CondNetLogic.volume import Volume

SHARED = Path(__file__).parents[2].parent / "shared"
MNI = SHARED / "data" / "mni152"

# Direction matrices (RAS unit vectors of the voxel axes as columns).
LIA = np.array([[-1.0, 0, 0], [0, 0, 1], [0, -1, 0]])
LAS = np.diag([-1.0, 1, 1])
RAS = np.eye(3)


def rotation(axis, degrees):
    axis = np.asarray(axis, dtype=float) / np.linalg.norm(axis)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    t = np.deg2rad(degrees)
    return np.eye(3) + np.sin(t) * k + (1 - np.cos(t)) * k @ k


OBLIQUE = rotation([1, 2, 0.5], 25) @ LAS
DIRECTIONS = {"LIA": LIA, "LAS": LAS, "RAS": RAS, "oblique": OBLIQUE}


def grid(shape, spacing, direction, centre=(0.0, 0.0, 0.0)):
    """Affine with the given direction whose field-of-view centre is at ``centre`` (RAS mm)."""
    spacing = np.broadcast_to(np.asarray(spacing, dtype=float), (3,))
    affine = np.eye(4)
    affine[:3, :3] = direction * spacing
    affine[:3, 3] = np.asarray(centre) - affine[:3, :3] @ ((np.asarray(shape) - 1) / 2.0)
    return affine


def soft_inside(r, r0, width=0.04):
    return 1.0 / (1.0 + np.exp((r - r0) / width))


def phantom_values(ras, centre=(0.0, 0.0, 0.0), contrast="t1"):
    """A small asymmetric head: skin shell, dark skull, brain with two blobs; smooth edges.  RAS (..., 3) mm."""
    p = np.asarray(ras, dtype=float) - np.asarray(centre)
    r = np.sqrt((p[..., 0] / 15) ** 2 + (p[..., 1] / 17) ** 2 + (p[..., 2] / 14) ** 2)
    skin, skull, brain = soft_inside(r, 1.0), soft_inside(r, 0.88), soft_inside(r, 0.76)
    blob_a = soft_inside(np.linalg.norm(p - [4, 5, 3], axis=-1) / 4.0, 1.0, 0.1)
    blob_b = soft_inside(np.linalg.norm(p - [-5, -3, -4], axis=-1) / 3.0, 1.0, 0.1)
    if contrast == "t1":
        return 100 * skin - 80 * skull + 50 * brain - 30 * blob_a + 40 * blob_b
    return 60 * skin - 50 * skull + 70 * brain + 40 * blob_a - 30 * blob_b


def phantom(shape=(40, 40, 40), spacing=1.0, direction=RAS, centre=(0.0, 0.0, 0.0), *, head_at=None,
            contrast="t1", noise=1.0, seed=0):
    affine = grid(shape, spacing, direction, centre)
    ijk = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), axis=-1)
    ras = ijk @ affine[:3, :3].T + affine[:3, 3]
    values = phantom_values(ras, centre if head_at is None else head_at, contrast)
    values = values + noise * np.abs(np.random.default_rng(seed).normal(size=shape))
    return Volume(values.astype(np.float32), affine)


def ras_field(shape, affine):
    """Vector volume whose components are the RAS coordinates (mm) of each voxel."""
    ijk = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), axis=-1)
    return Volume(ijk @ affine[:3, :3].T + affine[:3, 3], affine)


# --- validate_mri ---------------------------------------------------------------------------------------------


def test_validate_mri_accepts_phantom():
    pp.validate_mri(phantom(), name="T1")
    pp.validate_mri(Volume(np.arange(27, dtype=np.int16).reshape(3, 3, 3), np.eye(4)), name="T1")


@pytest.mark.parametrize(
    ("array", "match"),
    [
        (np.where(np.arange(64).reshape(4, 4, 4) == 5, np.nan, 1.0), "T2: 1 of 64 voxels are NaN"),
        (np.where(np.arange(64).reshape(4, 4, 4) == 5, np.inf, 1.0), "T2: 1 of 64 voxels are NaN or infinite"),
        (np.zeros((4, 4, 4)), "T2: the image is empty"),
        (np.full((4, 4, 4), 7.0), "T2: the image is constant"),
        # float64 contrast that float32 (the preprocessing's precision) cannot see: a clear error, not a NaN crash
        (np.where(np.arange(64).reshape(4, 4, 4) < 8, 1000.0 + 1e-5, 1000.0), "T2: the image's contrast .* float32"),
        (np.ones((4, 4, 4, 3)), r"T2: expected a 3D scalar image .* \(3 components"),
        (np.arange(16.0).reshape(4, 4, 1), "T2: expected a 3D image, got shape"),
    ],
)
def test_validate_mri_rejects(array, match):
    with pytest.raises(ValueError, match=match):
        pp.validate_mri(Volume(array, np.eye(4)), name="T2")


def test_validate_mri_type_errors():
    with pytest.raises(TypeError, match="T1: expected a Volume, got ndarray"):
        pp.validate_mri(np.ones((4, 4, 4)), name="T1")
    with pytest.raises(TypeError, match="dtype bool"):
        pp.validate_mri(Volume(np.eye(4, dtype=bool)[:, :, None].repeat(4, axis=2), np.eye(4)), name="T1")


# --- reorient_canonical ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(DIRECTIONS))
@pytest.mark.parametrize("vector", [False, True])
def test_reorient_canonical_keeps_every_voxel_in_place(name, vector):
    shape = (5, 6, 7)
    affine = grid(shape, (1.0, 2.0, 3.0), DIRECTIONS[name], centre=(3, -4, 5))
    array = np.arange(np.prod(shape), dtype=np.int32).reshape(shape)
    if vector:
        array = np.stack([array, -array, 2 * array], axis=-1)
    out = pp.reorient_canonical(Volume(array, affine))
    # The axes run closest to +R, +A, +S: the diagonal of the direction matrix is the largest and positive.
    direction = out.direction
    assert np.all(np.diag(direction) > 0)
    assert np.all(np.abs(np.diag(direction)) >= np.abs(direction).max(axis=0) - 1e-12)
    # Every output voxel holds the input voxel at the same RAS position (integer index, no interpolation).
    ijk = np.argwhere(np.ones(out.shape, dtype=bool))
    source = Volume(array, affine).ras_to_ijk_points(out.ijk_to_ras_points(ijk))
    np.testing.assert_allclose(source, np.round(source), atol=1e-9)
    source = np.round(source).astype(int)
    np.testing.assert_array_equal(out.array[tuple(ijk.T)], array[tuple(source.T)])
    np.testing.assert_allclose(sorted(out.spacing), [1.0, 2.0, 3.0])


def test_reorient_canonical_lia_permutes_as_expected():
    out = pp.reorient_canonical(Volume(np.zeros((2, 3, 4)), grid((2, 3, 4), 1.0, LIA)))
    assert out.shape == (2, 4, 3)
    np.testing.assert_allclose(out.direction, np.eye(3), atol=1e-12)


# --- resample_isotropic / resample_to -------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["LAS", "oblique"])
def test_resample_isotropic_anisotropic_linear_function_is_exact(name):
    shape, spacing = (12, 8, 6), (1.0, 2.0, 3.0)
    affine = grid(shape, spacing, DIRECTIONS[name], centre=(5, 6, -7))
    field = ras_field(shape, affine)
    values = Volume(field.array @ np.array([2.0, 1.0, -1.0]), affine)
    out = pp.resample_isotropic(values, 1.0)
    assert out.shape == (12, 16, 18)
    np.testing.assert_allclose(out.spacing, 1.0)
    np.testing.assert_allclose(out.direction, values.direction, atol=1e-12)
    # The field of view (outer voxel faces) is kept: both grids share their centre.
    np.testing.assert_allclose(out.ijk_to_ras_points((np.array(out.shape) - 1) / 2),
                               values.ijk_to_ras_points((np.array(shape) - 1) / 2), atol=1e-9)
    expected = ras_field(out.shape, out.ijk_to_ras).array @ np.array([2.0, 1.0, -1.0])
    inside = np.all((values.ras_to_ijk_points(ras_field(out.shape, out.ijk_to_ras).array) >= 0)
                    & (values.ras_to_ijk_points(ras_field(out.shape, out.ijk_to_ras).array)
                       <= np.array(shape) - 1), axis=-1)
    assert inside.sum() > 0.5 * inside.size
    np.testing.assert_allclose(out.array[inside], expected[inside], atol=1e-3)
    assert out.array.dtype == np.float64


def test_resample_isotropic_nearest_keeps_labels_and_noop_is_exact():
    # sparse label values: linear interpolation would give values between them (e.g. 21 between 2 and 41)
    labels = np.array([0, 2, 41], dtype=np.uint8)[np.random.default_rng(1).integers(0, 3, size=(6, 7, 8))]
    vol = Volume(labels, grid(labels.shape, (2.0, 2.0, 1.0), LIA))
    out = pp.resample_isotropic(vol, 1.0, interpolation="nearest")
    assert out.array.dtype == np.uint8
    assert out.shape == (12, 14, 8)
    assert set(np.unique(out.array)) <= set(np.unique(labels))
    same = pp.resample_isotropic(Volume(labels, grid(labels.shape, 1.0, LIA)), 1.0, interpolation="linear")
    np.testing.assert_array_equal(same.array, labels)


def test_resample_to_a_grid_a_fraction_of_a_voxel_off_interpolates():
    """A target 0.4 voxel off the source lattice is interpolated (a linear ramp exactly), not copied from the
    nearest voxel as a target on the lattice is."""
    ramp = Volume(np.broadcast_to(np.arange(10.0)[:, None, None], (10, 4, 4)).copy(), np.eye(4))  # value = i
    shifted = np.eye(4)
    shifted[0, 3] = 0.4
    out = pp.resample_to(ramp, Volume(np.zeros((8, 4, 4)), shifted))
    np.testing.assert_allclose(out.array, np.broadcast_to((np.arange(8) + 0.4)[:, None, None], (8, 4, 4)), atol=1e-5)


def test_resample_bad_arguments():
    vol = phantom((6, 6, 6))
    with pytest.raises(ValueError, match="interpolation must be one of"):
        pp.resample_isotropic(vol, 1.0, interpolation="cubic")
    with pytest.raises(ValueError, match="spacing_mm must be a positive"):
        pp.resample_isotropic(vol, 0.0)
    with pytest.raises(ValueError, match="interpolation must be one of"):
        pp.resample_to(vol, vol, interpolation="spline")


def test_resample_to_matches_reference_implementation_on_oblique_grids():
    """SimpleITK path against scipy.ndimage.map_coordinates (order 1) through the two affines."""
    source = phantom((20, 18, 16), spacing=(1.5, 2.0, 2.5), direction=LIA, noise=0.0)
    target_affine = grid((24, 24, 24), 1.3, OBLIQUE, centre=(1.0, -2.0, 0.5))
    target = Volume(np.zeros((24, 24, 24), dtype=np.float32), target_affine)
    out = pp.resample_to(source, target, default=-5.0)
    assert out.same_grid(target)
    assert out.array.dtype == np.float32
    ijk = source.ras_to_ijk_points(ras_field(target.shape, target_affine).array)
    expected = ndimage.map_coordinates(source.array.astype(float), np.moveaxis(ijk, -1, 0), order=1)
    inside = np.all((ijk >= 0) & (ijk <= np.array(source.shape) - 1), axis=-1)
    outside = np.any((ijk < -0.5 - 1e-6) | (ijk > np.array(source.shape) - 0.5 + 1e-6), axis=-1)
    assert inside.sum() > 1000
    assert outside.sum() > 100
    np.testing.assert_allclose(out.array[inside], expected[inside], atol=1e-3)
    np.testing.assert_array_equal(out.array[outside], -5.0)


def test_resample_to_same_lattice_is_an_exact_copy():
    source = phantom((10, 12, 14), direction=LIA)
    canonical = pp.reorient_canonical(source)
    out = pp.resample_to(source, canonical, interpolation="nearest")
    np.testing.assert_array_equal(out.array, canonical.array)
    shifted = Volume(np.zeros((10, 10, 10)), canonical.ijk_to_ras @ np.array(
        [[1, 0, 0, 3], [0, 1, 0, -2], [0, 0, 1, 5], [0, 0, 0, 1.0]]))
    out = pp.resample_to(source, shifted, default=-1.0)
    # Target voxel (i, j, k) is canonical voxel (i + 3, j - 2, k + 5); the canonical shape is (10, 14, 12).
    assert canonical.shape == (10, 14, 12)
    np.testing.assert_array_equal(out.array[:7, 2:, :7], canonical.array[3:, :8, 5:])
    assert np.all(out.array[7:] == -1.0)
    assert np.all(out.array[:, :2] == -1.0)
    assert np.all(out.array[:, :, 7:] == -1)


# --- check_overlap --------------------------------------------------------------------------------------------


def test_check_overlap():
    t1 = phantom((20, 20, 20), direction=LIA)
    slab = phantom((20, 20, 4), spacing=(1, 1, 2), direction=OBLIQUE)
    pp.check_overlap(t1, slab)  # a thin T2 slab inside the T1 field of view is fine
    far = Volume(t1.array, grid(t1.shape, 1.0, LAS, centre=(0, 0, 15)))
    pp.check_overlap(t1, far, min_fraction=0.2)
    with pytest.raises(ValueError, match=r"T1 and T2 do not overlap in space: only 25% .*need 50%"):
        pp.check_overlap(t1, far)
    away = Volume(t1.array, grid(t1.shape, 1.0, LAS, centre=(200, 0, 0)))
    with pytest.raises(ValueError, match=r"A and B do not overlap.*A: R -10\.\.10"):
        pp.check_overlap(t1, away, names=("A", "B"))
    with pytest.raises(ValueError, match="min_fraction must be in"):
        pp.check_overlap(t1, t1, min_fraction=0.0)


# --- register_rigid -------------------------------------------------------------------------------------------


def test_register_rigid_recovers_a_known_shift():
    shift = np.array([3.0, -2.0, 1.5])  # mm, the moving image's content is moved by this much
    fixed = phantom((40, 40, 40), noise=0.5)
    moving = phantom((36, 38, 34), spacing=1.2, direction=LIA, head_at=shift, centre=shift, noise=0.5, seed=3)
    fractions = []
    resampled, moving_to_fixed = pp.register_rigid(moving, fixed, progress=lambda f, m: fractions.append(f))
    np.testing.assert_allclose(moving_to_fixed[:3, 3], -shift, atol=0.3)
    np.testing.assert_allclose(moving_to_fixed[:3, :3], np.eye(3), atol=0.01)
    assert resampled.same_grid(fixed)
    assert resampled.array.dtype == np.float32
    brain = fixed.array > 30
    before = np.corrcoef(pp.resample_to(moving, fixed).array[brain], fixed.array[brain])[0, 1]
    after = np.corrcoef(resampled.array[brain], fixed.array[brain])[0, 1]
    assert after > 0.98 > before
    assert fractions
    assert all(0 <= f <= 1 for f in fractions)


# --- n4_bias_correct ------------------------------------------------------------------------------------------


def test_n4_reduces_a_synthetic_bias():
    clean = phantom((40, 40, 40), noise=0.3)
    ras = ras_field(clean.shape, clean.ijk_to_ras).array
    bias = np.exp(0.5 * ras[..., 0] / 15 + 0.3 * ras[..., 2] / 14).astype(np.float32)
    biased = clean.with_array(clean.array * bias)
    corrected = pp.n4_bias_correct(biased, shrink=2)
    assert corrected.same_grid(biased)
    assert corrected.array.dtype == np.float32
    brain = (np.linalg.norm(ras / [15, 17, 14], axis=-1) < 0.6) & (clean.array > 60) & (clean.array < 80)

    def cv(a):
        return a[brain].std() / a[brain].mean()

    assert cv(corrected.array) < 0.5 * cv(biased.array)
    with pytest.raises(ValueError, match="shrink must be a positive integer"):
        pp.n4_bias_correct(biased, shrink=0)


# --- head_mask ------------------------------------------------------------------------------------------------


def test_head_mask_fills_the_skull_and_drops_specks():
    vol = phantom((40, 40, 40), noise=2.0)
    array = vol.array.copy()
    array[1:3, 1:3, 1:3] = 150.0  # a bright artefact in the air
    mask = pp.head_mask(vol.with_array(array))
    assert mask.dtype == np.bool_
    assert mask.shape == vol.shape
    ras = ras_field(vol.shape, vol.ijk_to_ras).array
    r = np.linalg.norm(ras / [15, 17, 14], axis=-1)
    assert np.all(mask[r < 0.95])  # skin, the dark skull and the brain
    assert not np.any(mask[r > 1.1])
    assert not mask[1:3, 1:3, 1:3].any()
    # Only the contrast matters, not where zero is.
    np.testing.assert_array_equal(pp.head_mask(vol.with_array(array - 500.0)), mask)


@pytest.mark.parametrize("axis", [None, 0, 1, 2])
def test_fill_holes_matches_scipy(axis):
    mask = ndimage.binary_opening(np.random.default_rng(2).random((17, 19, 15)) > 0.45)
    mask[5:12, 5:12, 5:10] = True
    mask[7:10, 7:10, 6:8] = False  # an enclosed hole
    if axis is None:
        expected = ndimage.binary_fill_holes(mask)
    else:
        expected = np.stack([ndimage.binary_fill_holes(s) for s in np.moveaxis(mask, axis, 0)], axis=axis)
    assert not np.array_equal(expected, mask)
    np.testing.assert_array_equal(_resample.fill_holes(mask, axis=axis), expected)


@pytest.mark.parametrize("where", ["inside", "at the border"])
def test_head_mask_fills_its_box_as_the_whole_volume(where, monkeypatch):
    """head_mask fills holes in the component's bounding box only; the result equals filling everything."""
    array = phantom((40, 40, 40), noise=2.0).array
    cut = 14 if where == "at the border" else 0
    array = array[cut:]  # at the border: the head touches the first face
    canal = (slice(18 - cut, 22 - cut), slice(18, 22), slice(30, 32))
    array[canal[:2]][:, :, 30:] = array.min()  # a canal from the surface: no hole in 3D, one in axis-2 slices
    volume = Volume(array.copy(), np.eye(4))
    boxed = pp.head_mask(volume)
    box = _resample.bounding_box(boxed, pad=1)
    assert any(s.stop - s.start < n for s, n in zip(box, boxed.shape))  # the box is smaller than the volume
    monkeypatch.setattr(_resample, "bounding_box", lambda mask, pad=0: tuple(slice(0, n) for n in mask.shape))
    np.testing.assert_array_equal(boxed, pp.head_mask(volume))
    assert boxed[canal].all()


def test_bounding_box_is_padded_and_clipped():
    mask = np.zeros((10, 12, 8), bool)
    mask[0, 3:5, 6] = True
    assert _resample.bounding_box(mask, pad=2) == (slice(0, 3), slice(1, 7), slice(4, 8))
    assert _resample.bounding_box(np.zeros((4, 5, 6), bool), pad=1) == (slice(0, 4), slice(0, 5), slice(0, 6))


# --- zscore_unit ----------------------------------------------------------------------------------------------


def test_zscore_unit_range_and_mask():
    rng = np.random.default_rng(0)
    head = rng.normal(100, 20, size=(20, 20, 20))
    mask = np.zeros(head.shape, dtype=bool)
    mask[4:16, 4:16, 4:16] = True
    image = np.where(mask, head, 0.0)
    out = pp.zscore_unit(image, mask)
    assert out.dtype == np.float32
    assert out.shape == image.shape
    assert out.min() == 0.0
    assert out.max() == 1.0
    assert np.all(out[~mask] == 0.0)  # air is darker than the head's 0.5th percentile
    # Statistics come from inside the mask: more air around the head changes nothing.
    big = np.zeros((30, 30, 30))
    big_mask = np.zeros(big.shape, dtype=bool)
    big[:20, :20, :20], big_mask[:20, :20, :20] = image, mask
    np.testing.assert_array_equal(pp.zscore_unit(big, big_mask)[:20, :20, :20], out)
    # Robust clipping: 0.5% of the head voxels at each end saturate.
    assert np.isclose(np.mean(out[mask] == 1.0), 0.005, atol=0.002)
    # Affine intensity changes do not matter (z-score).
    np.testing.assert_allclose(pp.zscore_unit(3 * image + 7, mask), out, atol=1e-6)
    plain = pp.zscore_unit(image, percentiles=(0, 100))
    np.testing.assert_allclose(plain, (image - image.min()) / np.ptp(image), atol=1e-6)


def test_zscore_unit_errors():
    image = np.arange(27.0).reshape(3, 3, 3)
    with pytest.raises(TypeError, match="expected integer or floating-point intensities; got dtype bool"):
        pp.zscore_unit(image > 3)
    with pytest.raises(TypeError, match="mask must be boolean"):
        pp.zscore_unit(image, np.ones((3, 3, 3)))
    with pytest.raises(ValueError, match="mask shape"):
        pp.zscore_unit(image, np.ones((3, 3, 2), dtype=bool))
    with pytest.raises(ValueError, match="mask is empty"):
        pp.zscore_unit(image, np.zeros((3, 3, 3), dtype=bool))
    with pytest.raises(ValueError, match="constant inside the mask"):
        pp.zscore_unit(np.ones((3, 3, 3)))
    with pytest.raises(ValueError, match="NaN"):
        pp.zscore_unit(np.where(image > 3, image, np.nan))
    with pytest.raises(ValueError, match="percentiles must satisfy"):
        pp.zscore_unit(image, percentiles=(50, 50))
    with pytest.raises(ValueError, match="coincide; widen them"):
        pp.zscore_unit((np.arange(1000) == 0).astype(float))


# --- ModelGrid ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["LIA", "LAS", "RAS"])
def test_model_grid_on_1mm_lattice_is_an_exact_crop_pad(name):
    t1 = phantom((40, 38, 36), direction=DIRECTIONS[name], centre=(10, -20, 30))
    model_grid = pp.ModelGrid.for_volume(t1, size=48)
    assert model_grid.shape == (48, 48, 48)
    assert model_grid.reference_shape == t1.shape
    np.testing.assert_allclose(model_grid.affine[:3, :3], np.eye(3), atol=1e-12)
    model = model_grid.to_model(t1)
    assert model.dtype == np.float32
    back = model_grid.to_reference(model)
    assert back.shape == t1.shape
    assert np.array_equal(back.ijk_to_ras, t1.ijk_to_ras)
    np.testing.assert_array_equal(back.array, t1.array)  # exact, no interpolation
    # The head is centred: the model centre is within a voxel of the head centre.
    centre = model_grid.affine[:3, :3] @ np.full(3, 23.5) + model_grid.affine[:3, 3]
    np.testing.assert_allclose(centre, [10, -20, 30], atol=1.0)


def test_model_grid_smaller_than_the_head_cuts_and_warns(caplog):
    t1 = phantom((40, 40, 40), direction=LIA)
    with caplog.at_level(logging.WARNING, logger="CondNetLogic.preprocessing"):
        model_grid = pp.ModelGrid.for_volume(t1, size=24)
    assert "does not fit the model's 24 mm field of view" in caplog.text
    back = model_grid.to_reference(model_grid.to_model(t1)).array
    kept = back != 0
    assert 24**3 * 0.9 < kept.sum() <= 24**3
    np.testing.assert_array_equal(back[kept], t1.array[kept])
    labels = (t1.array > 50).astype(np.uint8)
    model_labels = model_grid.to_model(t1.with_array(labels), interpolation="nearest")
    assert model_labels.dtype == np.uint8
    assert np.array_equal(model_grid.to_reference(model_labels, interpolation="nearest").array[kept], labels[kept])


def test_model_grid_centres_a_head_placed_anywhere():
    head_at = np.array([-30.0, 30.0, 25.0])
    t1 = phantom((100, 100, 100), direction=LAS, head_at=head_at)
    model_grid = pp.ModelGrid.for_volume(t1, size=40)
    head_ijk = np.linalg.solve(model_grid.affine, np.append(head_at, 1.0))[:3]
    np.testing.assert_allclose(head_ijk, np.full(3, 19.5), atol=1.0)
    model_mask = pp.head_mask(model_grid.as_volume(model_grid.to_model(t1)))
    assert not model_mask[[0, -1]].any()
    assert not model_mask[:, [0, -1]].any()
    assert not model_mask[..., [0, -1]].any()
    given = pp.ModelGrid.for_volume(t1, size=40, center_ras=[0, 0, 0])
    np.testing.assert_allclose(given.affine[:3, :3] @ np.full(3, 19.5) + given.affine[:3, 3], 0.0, atol=0.51)


@pytest.mark.parametrize("name", ["LAS", "oblique"])
def test_model_grid_interpolates_non_lattice_references(name):
    """2 mm or oblique references: geometry checked with a vector field holding each voxel's RAS position."""
    t1 = phantom((24, 24, 24), spacing=2.0, direction=DIRECTIONS[name], centre=(5, 5, 5))
    model_grid = pp.ModelGrid.for_volume(t1, size=48)
    np.testing.assert_allclose(model_grid.affine[:3, :3], np.eye(3), atol=1e-12)
    field = ras_field(t1.shape, t1.ijk_to_ras)
    model = model_grid.to_model(field)
    assert model.shape == (48, 48, 48, 3)
    assert model.dtype == np.float32
    model_ras = ras_field(model_grid.shape, model_grid.affine).array
    src = t1.ras_to_ijk_points(model_ras)
    inside = np.all((src >= 0) & (src <= 23), axis=-1)
    np.testing.assert_allclose(model[inside], model_ras[inside], atol=1e-3)
    # Back to the reference: RAS components are kept as they are (not rotated), linear fields come back.
    back = model_grid.to_reference(model_ras)
    assert back.same_grid(t1)
    assert back.array.shape == (24, 24, 24, 3)
    in_fov = np.all(np.abs(field.array - 5) < 22, axis=-1)
    np.testing.assert_allclose(back.array[in_fov], field.array[in_fov], atol=1e-3)
    assert np.all(back.array[~np.all(np.abs(field.array - 5) < 24.5, axis=-1)] == 0)


@pytest.mark.parametrize("name", ["LAS", "RAS"])
@pytest.mark.parametrize("centre", [(5, 5, 5), (5.5, -3.25, 0.7)])
def test_model_grid_puts_2mm_voxel_centres_on_model_voxel_centres(name, centre):
    """A 2 mm template (MNI152): each of its voxel centres is a model voxel centre, so the way back reads model
    voxels as they are; before, every one fell halfway between two, and the nearest-neighbour mask and the
    interpolated conductivity came back half a model voxel apart."""
    t1 = phantom((24, 24, 24), spacing=2.0, direction=DIRECTIONS[name], centre=centre)
    model_grid = pp.ModelGrid.for_volume(t1, size=56)
    np.testing.assert_allclose(model_grid.affine[:3, :3], np.eye(3), atol=1e-12)
    ijk = np.linalg.solve(model_grid.affine, np.vstack([ras_field(t1.shape, t1.ijk_to_ras).array.reshape(-1, 3).T,
                                                        np.ones(24**3)]))[:3]
    np.testing.assert_allclose(ijk, np.round(ijk), atol=1e-6)
    # Still centred on the head within a model voxel.
    head = pp.head_mask(t1)
    middle = model_grid.affine[:3, :3] @ np.full(3, 27.5) + model_grid.affine[:3, 3]
    points = t1.ijk_to_ras[:3, :3] @ np.argwhere(head).T + t1.ijk_to_ras[:3, 3:4]
    np.testing.assert_allclose(middle, 0.5 * (points.min(axis=1) + points.max(axis=1)), atol=1.01)
    # Linear there and back returns the image itself, and nearest there and back returns the labels: both
    # read the same model voxel for each reference voxel.
    back = model_grid.to_reference(model_grid.to_model(t1)).array
    np.testing.assert_allclose(back, t1.array, rtol=1e-6, atol=1e-4)
    labels = (t1.array > 50).astype(np.uint8)
    nearest = model_grid.to_model(t1.with_array(labels), interpolation="nearest")
    np.testing.assert_array_equal(model_grid.to_reference(nearest, interpolation="nearest").array, labels)


def test_model_grid_dict_round_trip_and_errors():
    t1 = phantom((20, 20, 20), direction=LIA)
    model_grid = pp.ModelGrid.for_volume(t1, size=16)
    again = pp.ModelGrid.from_dict(json.loads(json.dumps(model_grid.to_dict())))
    assert again.shape == model_grid.shape
    assert again.reference_shape == model_grid.reference_shape
    np.testing.assert_array_equal(again.affine, model_grid.affine)
    np.testing.assert_array_equal(again.reference_affine, model_grid.reference_affine)
    assert again.size == 16
    assert again.spacing_mm == 1.0
    with pytest.raises(ValueError, match=r"lacks \['reference_affine'\]"):
        pp.ModelGrid.from_dict({k: v for k, v in model_grid.to_dict().items() if k != "reference_affine"})
    with pytest.raises(ValueError, match=r"expected a model-grid array of shape \(16, 16, 16\)"):
        model_grid.to_reference(np.zeros((16, 16, 15)))
    with pytest.raises(ValueError, match="size must be an integer"):
        pp.ModelGrid.for_volume(t1, size=1)
    with pytest.raises(ValueError, match="center_ras must be 3 finite"):
        pp.ModelGrid.for_volume(t1, size=16, center_ras=[0, 0])
    with pytest.raises(ValueError, match="mask is empty"):
        pp.ModelGrid.for_volume(t1, size=16, mask=np.zeros(t1.shape, dtype=bool))
    with pytest.raises(ValueError, match=r"mask must be boolean with the reference's shape \(20, 20, 20\)"):
        pp.ModelGrid.for_volume(t1, size=16, mask=np.ones(t1.shape, dtype=np.uint8))
    with pytest.raises(ValueError, match="ModelGrid.shape must be 3 positive integers"):
        pp.ModelGrid.from_dict({**model_grid.to_dict(), "shape": [16, 16]})
    with pytest.raises(ValueError, match="homogeneous 4x4"):
        pp.ModelGrid.from_dict({**model_grid.to_dict(), "affine": np.ones((3, 4)).tolist()})


# --- prepare_pair ---------------------------------------------------------------------------------------------


def test_prepare_pair_synthetic_t1_t2_on_different_grids():
    t1 = phantom((40, 40, 40), direction=LIA, centre=(2, 3, 4), head_at=(0, 0, 0))
    t2 = phantom((24, 22, 16), spacing=(2.0, 2.0, 2.5), direction=OBLIQUE, contrast="t2", seed=5)
    fractions = []
    pair = pp.prepare_pair(t1, t2, size=48, progress=lambda f, m: fractions.append(f))
    for image in (pair.t1, pair.t2):
        assert image.shape == (48, 48, 48)
        assert image.dtype == np.float32
        assert image.min() == 0.0
        assert image.max() == 1.0
    assert pair.mask.dtype == np.bool_
    assert 0.05 < pair.mask.mean() < 0.5
    assert fractions == sorted(fractions)
    assert fractions[0] == 0.0
    assert fractions[-1] == 1.0
    back = pair.grid.to_reference(pair.t1)
    assert back.shape == t1.shape
    assert np.array_equal(back.ijk_to_ras, t1.ijk_to_ras)
    # T2 lands in T1 space: its bright blob sits where the T1's dark blob is.
    blob = pair.grid.to_model(t1.with_array(
        (np.linalg.norm(ras_field(t1.shape, t1.ijk_to_ras).array - [4, 5, 3], axis=-1) < 2).astype(np.uint8)),
        interpolation="nearest").astype(bool)
    assert pair.t2[blob].mean() > pair.t2[pair.mask].mean() > pair.t1[blob].mean()
    registered = pp.prepare_pair(t1, t2, size=48, register=True, n4=True)
    assert np.corrcoef(registered.t2[pair.mask], pair.t2[pair.mask])[0, 1] > 0.95
    only_t1 = pp.prepare_pair(t1, None, size=48)
    assert only_t1.t2 is None
    np.testing.assert_array_equal(only_t1.t1, pair.t1)
    # Both images are scaled by their statistics inside the T1's head mask, not over the whole grid.
    np.testing.assert_array_equal(pair.t1, pp.zscore_unit(pair.grid.to_model(t1), pair.mask))
    np.testing.assert_array_equal(pair.t2, pp.zscore_unit(pair.grid.to_model(t2), pair.mask))


def test_a_negative_background_is_not_taken_for_tissue_on_the_model_grid():
    """Model voxels beyond the scan are filled with its own minimum: a z-scored T1 (air below 0) smaller than the
    model grid gives the same head mask as the raw one, not a mask over the whole grid."""
    t1 = phantom((40, 40, 40), direction=LIA)
    t2 = phantom((40, 40, 40), direction=LIA, contrast="t2", seed=5)
    raw = pp.prepare_pair(t1, t2, size=48)
    scored = t1.with_array((t1.array - t1.array.mean()) / t1.array.std())
    assert scored.array.min() < 0
    shifted = pp.prepare_pair(scored, t2.with_array(t2.array - 0.3 * t2.array.max()), size=48)
    np.testing.assert_array_equal(shifted.mask, raw.mask)
    assert shifted.mask.mean() < 0.5
    assert pp.ModelGrid.for_volume(t1, size=48).to_model(t1.with_array(np.ones(t1.shape, np.int16)),
                                                         interpolation="nearest")[0, 0, 0] == 0  # labels: air


def test_prepare_pair_errors_and_cancel():
    t1 = phantom((20, 20, 20))
    away = Volume(t1.array, grid(t1.shape, 1.0, LAS, centre=(0, 300, 0)))
    with pytest.raises(ValueError, match="T1 and T2 do not overlap in space"):
        pp.prepare_pair(t1, away, size=24)
    with pytest.raises(ValueError, match="T2: the image is constant"):
        pp.prepare_pair(t1, t1.with_array(np.ones(t1.shape)), size=24)
    with pytest.raises(ValueError, match="T1: 1 of 8000 voxels are NaN"):
        pp.prepare_pair(t1.with_array(np.where(np.arange(8000).reshape(t1.shape) == 0, np.nan, t1.array)),
                        None, size=24)
    with pytest.raises(Cancelled):
        pp.prepare_pair(t1, None, size=24, cancel=lambda: True)


def test_prepare_pair_refuses_a_t2_slab_and_warns_on_partial_cover(caplog):
    t1 = phantom((40, 40, 40))
    slab = phantom((40, 40, 3), contrast="t2", head_at=(0, 0, 0))  # 3 axial slices through the centre
    with pytest.raises(ValueError, match=r"only \d+% of the head lies inside the T2's field of view"):
        pp.prepare_pair(t1, slab, size=48)
    partial = phantom((40, 40, 16), centre=(0, 0, 4), head_at=(0, 0, 0), contrast="t2")
    with caplog.at_level(logging.WARNING, logger="CondNetLogic.preprocessing"):
        pair = pp.prepare_pair(t1, partial, size=48)
    assert 0.5 < pair.t2_coverage < 0.99
    assert "the conductivity there is unreliable" in caplog.text
    assert pp.prepare_pair(t1, phantom((40, 40, 40), contrast="t2"), size=48).t2_coverage == 1.0


@pytest.mark.parametrize("shift", [(6.0, 0.0, 0.0), (0.0, -5.0, 0.0), (0.0, 0.0, 5.0)])
def test_prepare_pair_measures_and_warns_of_an_offset_between_t1_and_t2(caplog, shift):
    t1 = phantom((40, 40, 40))
    with caplog.at_level(logging.WARNING, logger="CondNetLogic.preprocessing"):
        aligned = pp.prepare_pair(t1, phantom((40, 40, 40), contrast="t2", seed=1), size=48)
    assert np.linalg.norm(aligned.t2_offset_mm) < 0.5
    assert "misregistered" not in caplog.text
    # Same field of view, the T2's head moved: the scans disagree about where the head is.
    moved = phantom((40, 40, 40), contrast="t2", head_at=shift, seed=1)
    with caplog.at_level(logging.WARNING, logger="CondNetLogic.preprocessing"):
        pair = pp.prepare_pair(t1, moved, size=48)
    np.testing.assert_allclose(pair.t2_offset_mm, shift, atol=0.5)
    assert "the scans look misregistered" in caplog.text
    assert "--register" in caplog.text
    assert pp.prepare_pair(t1, None, size=48).t2_offset_mm is None


def test_offset_is_measured_where_both_scans_see_the_head(caplog):
    # A T2 covering the upper half of the head only: a whole-head centroid would differ by about 5 mm.
    t1 = phantom((40, 40, 40))
    upper = phantom((40, 40, 14), centre=(0, 0, 6), head_at=(0, 0, 0), contrast="t2")
    with caplog.at_level(logging.WARNING, logger="CondNetLogic.preprocessing"):
        pair = pp.prepare_pair(t1, upper, size=48)
    assert np.linalg.norm(pair.t2_offset_mm) < 0.5
    assert "misregistered" not in caplog.text


@pytest.mark.parametrize("direction", ["RAS", "oblique"])
def test_model_grid_keeps_the_top_of_a_head_taller_than_it(caplog, direction):
    # Neck and shoulders in the scan: centring would cut the vertex, where TMS targets the cortex.
    reference = phantom((40, 40, 50), direction=DIRECTIONS[direction])
    ras = reference.ijk_to_ras_points(np.argwhere(np.ones(reference.shape, dtype=bool))).reshape(*reference.shape, 3)
    tall = (ras[..., 0] / 8) ** 2 + (ras[..., 1] / 8) ** 2 + (ras[..., 2] / 20) ** 2 <= 1  # 40 mm along S
    top = ras[..., 2][tall].max()
    with caplog.at_level(logging.WARNING, logger="CondNetLogic.preprocessing"):
        grid = pp.ModelGrid.for_volume(reference, size=24, mask=tall)
    model_top = (grid.affine @ [0, 0, 23, 1])[2]
    assert top + 2.5 <= model_top <= top + 4.5  # the top of the head, with about 4 voxels of air above it
    assert "along R, A, S are cut off" in caplog.text
    short = (ras[..., 0] / 8) ** 2 + (ras[..., 1] / 8) ** 2 + (ras[..., 2] / 8) ** 2 <= 1
    centred = pp.ModelGrid.for_volume(reference, size=24, mask=short)  # fits: centred as before
    np.testing.assert_allclose((centred.affine @ [11.5, 11.5, 11.5, 1])[:3], 0.0, atol=1.0)


def test_prepare_pair_reports_a_head_cut_off_by_the_model_grid_once(caplog):
    t1 = phantom((40, 40, 40))
    with caplog.at_level(logging.WARNING, logger="CondNetLogic.preprocessing"):
        pair = pp.prepare_pair(t1, phantom((40, 40, 40), contrast="t2"), size=24)
    assert len(pair.warnings) == 1
    assert "does not fit the model's 24 mm field of view" in pair.warnings[0]
    assert caplog.text.count("does not fit") == 1
    assert pp.prepare_pair(t1, None, size=48).warnings == ()


def test_prepare_pair_refuses_an_image_without_air_around_the_head():
    noise = Volume(np.random.default_rng(0).rayleigh(size=(30, 30, 30)).astype(np.float32), np.eye(4))
    with pytest.raises(ValueError, match="no air was found around the head"):
        pp.prepare_pair(noise, None, size=48)


def test_head_mask_of_a_nearly_empty_image_is_its_bright_part():
    array = np.zeros((32, 32, 32), dtype=np.float32)
    array[10:14, 10:14, 10:14] = 50.0  # 64 voxels: 0.2 % of the image, below the 99.5th percentile
    mask = pp.head_mask(Volume(array, np.eye(4)))
    np.testing.assert_array_equal(mask, array > 0)


@pytest.mark.shared
@pytest.mark.skipif(not MNI.is_dir(), reason=f"{MNI} is absent")
def test_prepare_pair_mni152():
    from CondNetLogic.io import read_volume

    t1 = read_volume(MNI / "MNI152_T1_2mm.nii.gz")
    t2 = read_volume(MNI / "MNI152_T2_2mm.nii.gz")
    reference_mask = pp.head_mask(t1)
    head_litres = reference_mask.sum() * np.prod(t1.spacing) / 1e6
    assert 3.0 < head_litres < 5.0  # an adult head down to the skull base
    pair = pp.prepare_pair(t1, t2, size=128)
    assert pair.t1.shape == pair.t2.shape == pair.mask.shape == (128, 128, 128)
    model_reference_mask = pair.grid.to_model(t1.with_array(reference_mask), interpolation="nearest")
    dice = 2 * np.sum(pair.mask & model_reference_mask) / (pair.mask.sum() + model_reference_mask.sum())
    assert dice > 0.95  # the mask on the model grid agrees with the one on the original grid
    np.testing.assert_allclose(pair.grid.affine[:3, :3], np.eye(3))
    back = pair.grid.to_reference(pair.t1)
    assert back.shape == t1.shape
    assert np.array_equal(back.ijk_to_ras, t1.ijk_to_ras)
    inside = back.array > 0.05
    assert np.corrcoef(back.array[inside], t1.array[inside])[0, 1] > 0.95
    # T1 and T2 are co-registered: white matter is bright on T1 and darker on T2.
    wm = pair.t1 > np.percentile(pair.t1[pair.mask], 80)
    assert pair.t2[wm].mean() < pair.t2[pair.mask].mean()
    assert np.linalg.norm(pair.t2_offset_mm) < pp.MAX_T2_OFFSET_MM  # no misregistration warning
    # Registering the co-registered pair moves T2 by less than one 2 mm voxel and rotates it by under a degree.
    _, moving_to_fixed = pp.register_rigid(t2, t1)
    assert np.linalg.norm(moving_to_fixed[:3, 3]) < 1.5
    assert np.degrees(np.arccos(np.clip((np.trace(moving_to_fixed[:3, :3]) - 1) / 2, -1, 1))) < 1.0
