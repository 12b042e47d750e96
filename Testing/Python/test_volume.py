"""Volume type and RAS/LPS helpers."""
import numpy as np
import pytest

from CondNetLogic.volume import (
    LPS_TO_RAS,
    Volume,
    affine_from_geometry,
    lps_to_ras_affine,
    lps_to_ras_points,
    ras_to_lps_affine,
    ras_to_lps_points,
)

# Axis codes of the data we meet: L-I-A (SynthSeg maps), L-A-S (MNI152), R-A-S (Colin27).
LIA = np.array([[-1, 0, 0], [0, 0, 1], [0, -1, 0]], dtype=float)
LAS = np.diag([-1.0, 1.0, 1.0])


def oblique_direction(angle_deg: float = 20.0) -> np.ndarray:
    """A rotation about a tilted axis, applied to L-I-A: a non-trivial direction matrix."""
    a = np.deg2rad(angle_deg)
    rot = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    return rot @ LIA


def test_geometry_properties_roundtrip():
    direction = oblique_direction()
    vol = Volume.from_geometry(np.zeros((4, 5, 6)), spacing=(0.8, 1.2, 3.0), origin=(10, -20, 5), direction=direction)
    np.testing.assert_allclose(vol.spacing, [0.8, 1.2, 3.0])
    np.testing.assert_allclose(vol.origin, [10, -20, 5])
    np.testing.assert_allclose(vol.direction, direction, atol=1e-12)
    assert not vol.is_isotropic
    assert vol.shape == (4, 5, 6)


def test_points_roundtrip_and_axis_meaning():
    vol = Volume.from_geometry(np.zeros((4, 5, 6)), spacing=(2, 2, 2), origin=(1, 2, 3), direction=LIA)
    # +I goes Left (RAS x decreases), +J goes Inferior, +K goes Anterior.
    np.testing.assert_allclose(vol.ijk_to_ras_points([1, 0, 0]), [1 - 2, 2, 3])
    np.testing.assert_allclose(vol.ijk_to_ras_points([0, 1, 0]), [1, 2, 3 - 2])
    np.testing.assert_allclose(vol.ijk_to_ras_points([0, 0, 1]), [1, 2 + 2, 3])
    ijk = np.random.default_rng(0).uniform(0, 4, size=(10, 3))
    np.testing.assert_allclose(vol.ras_to_ijk_points(vol.ijk_to_ras_points(ijk)), ijk, atol=1e-12)


def test_ras_lps_conversions_are_explicit_inverses():
    affine = affine_from_geometry([1, 2, 3], [4, 5, 6], oblique_direction())
    lps = ras_to_lps_affine(affine)
    np.testing.assert_allclose(lps[:2], -affine[:2])
    np.testing.assert_allclose(lps[2:], affine[2:])
    np.testing.assert_allclose(LPS_TO_RAS @ lps, affine)
    point = np.array([[10.0, -3.0, 7.0]])
    np.testing.assert_allclose(ras_to_lps_points(point), [[-10.0, 3.0, 7.0]])
    np.testing.assert_allclose(lps_to_ras_points(ras_to_lps_points(point)), point)


def test_lps_to_ras_affine_flips_the_world_axes_not_the_voxel_axes():
    """LPS -> RAS negates the first two rows (world x, y) of an affine, and undoes ras_to_lps_affine."""
    affine = affine_from_geometry([1, 2, 3], [4, 5, 6], oblique_direction())
    lps = ras_to_lps_affine(affine)
    np.testing.assert_allclose(lps_to_ras_affine(lps), affine)
    vol = Volume(np.zeros((4, 5, 6)), affine)
    ijk = np.array([1.0, 2.0, 3.0])
    ras = (lps_to_ras_affine(vol.ijk_to_lps) @ np.append(ijk, 1.0))[:3]
    np.testing.assert_allclose(ras, vol.ijk_to_ras_points(ijk))


def test_is_isotropic_tolerance():
    """Spacings equal to 1e-4 relative count as isotropic (float32 headers); 1 % apart do not."""
    assert Volume.from_geometry(np.zeros((2, 2, 2)), spacing=(1.0, 1.0, 1.0 + 1e-6)).is_isotropic
    assert not Volume.from_geometry(np.zeros((2, 2, 2)), spacing=(1.0, 1.0, 1.01)).is_isotropic
    assert not Volume.from_geometry(np.zeros((2, 2, 2)), spacing=(2.0, 1.9, 2.0)).is_isotropic


def test_vector_volume_and_with_array():
    vol = Volume(np.zeros((3, 4, 5, 3), dtype=np.float32), np.eye(4))
    assert vol.n_components == 3
    assert vol.with_array(np.ones((3, 4, 5))).n_components == 1
    with pytest.raises(ValueError, match="differs"):
        vol.with_array(np.ones((3, 4, 6)))


@pytest.mark.parametrize(
    ("array", "affine", "match"),
    [
        (np.zeros((3, 4)), np.eye(4), "must be"),
        (np.zeros((3, 4, 5, 2, 2)), np.eye(4), "must be"),
        (np.zeros((0, 4, 5)), np.eye(4), "empty"),
        (np.zeros((3, 4, 5)), np.eye(3), "homogeneous"),
        (np.zeros((3, 4, 5)), np.diag([1.0, 0.0, 1.0, 1.0]), "singular"),
        (np.zeros((3, 4, 5)), np.array([[1, 0, 0, np.nan], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1.0]]), "NaN"),
        (np.zeros((3, 4, 5)), np.diag([np.inf, 1.0, 1.0, 1.0]), "infinite"),
    ],
)
def test_invalid_volumes_raise(array, affine, match):
    with pytest.raises(ValueError, match=match):
        Volume(array, affine)


def test_affine_is_read_only_and_same_grid():
    vol = Volume(np.zeros((3, 4, 5)), np.eye(4))
    with pytest.raises(ValueError, match="read-only"):
        vol.ijk_to_ras[0, 0] = 2
    assert vol.same_grid(Volume(np.ones((3, 4, 5)), np.eye(4)))
    shifted = np.eye(4)
    shifted[0, 3] = 0.5
    assert not vol.same_grid(Volume(np.ones((3, 4, 5)), shifted))
    assert not vol.same_grid(Volume(np.ones((3, 4, 6)), np.eye(4)))  # same affine, other shape


def test_check_mask():
    from CondNetLogic.volume import check_mask

    assert check_mask(np.zeros((2, 3, 4), dtype=bool), (2, 3, 4)).shape == (2, 3, 4)
    with pytest.raises(TypeError, match="boolean"):
        check_mask(np.zeros((2, 3, 4), dtype=np.uint8), (2, 3, 4))
    with pytest.raises(ValueError, match=r"mask shape \(2, 3, 4\) differs"):
        check_mask(np.zeros((2, 3, 4), dtype=bool), (2, 3, 5))
