"""E-field metrics: RDM, MAG, the paper's GE (Eq. 6), ROI statistics and spherical ROIs."""
from __future__ import annotations

import numpy as np
import pytest

from CondNetLogic.metrics import (
    HAND_KNOB_MNI,
    generalized_error,
    mag,
    rdm,
    roi_stats,
    spherical_roi,
)
from CondNetLogic.volume import Volume


def test_rdm_and_mag_definitions():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(50, 3))
    assert rdm(a, 3.0 * a) == pytest.approx(0.0, abs=1e-12)
    assert mag(a, 3.0 * a) == pytest.approx(np.log(3.0))
    assert rdm(a, -a) == pytest.approx(2.0)
    b = a + 0.01 * rng.normal(size=a.shape)
    expected = np.linalg.norm(a / np.linalg.norm(a) - b / np.linalg.norm(b))
    assert rdm(a, b) == pytest.approx(expected)
    assert rdm(a, b) == pytest.approx(rdm(b, a))
    assert mag(a, b) == pytest.approx(mag(b, a))


def test_metrics_reject_bad_input():
    with pytest.raises(ValueError, match="same shape"):
        rdm(np.ones((3, 3)), np.ones((4, 3)))
    with pytest.raises(ValueError, match="zero"):
        mag(np.zeros((3, 3)), np.ones((3, 3)))
    with pytest.raises(ValueError, match="empty"):
        rdm(np.ones((0, 3)), np.ones((0, 3)))


def test_generalized_error_eq6():
    e = np.array([1.0, 2.0, 4.0, 0.0])
    e_hat = np.array([1.0, 1.0, 2.0, 0.0])
    # mean |diff| = (0 + 1 + 2 + 0) / 4, peak 4
    assert generalized_error(e, e_hat) == pytest.approx(0.75 / 4.0 * 100.0)
    mask = np.array([True, True, False, False])
    assert generalized_error(e, e_hat, mask) == pytest.approx(0.5 / 2.0 * 100.0)
    assert generalized_error(e, e) == 0.0
    with pytest.raises(ValueError, match="empty"):
        generalized_error(e, e_hat, np.zeros(4, dtype=bool))
    with pytest.raises(TypeError, match="bool"):
        generalized_error(e, e_hat, np.ones(4))
    with pytest.raises(ValueError, match="undefined"):
        generalized_error(np.zeros(3), np.zeros(3))


@pytest.mark.parametrize(
    "direction",
    [np.eye(3), np.array([[-1.0, 0, 0], [0, 0, 1.0], [0, -1.0, 0]]), np.diag([-1.0, 1.0, 1.0])],
    ids=["RAS", "LIA", "LAS"],
)
def test_spherical_roi_in_any_orientation(direction):
    volume = Volume.from_geometry(np.zeros((40, 40, 40)), spacing=(1.0,) * 3, origin=(10.0, -5.0, 3.0),
                                  direction=direction)
    center = volume.ijk_to_ras_points(np.array([20.3, 19.6, 21.2]))
    roi = spherical_roi(volume, center, 6.0)
    assert roi.sum() == pytest.approx(4 / 3 * np.pi * 6.0**3, rel=0.05)
    ras = volume.ijk_to_ras_points(np.argwhere(roi))
    assert np.linalg.norm(ras - center, axis=1).max() <= 6.0
    outside = volume.ijk_to_ras_points(np.argwhere(~roi))
    assert np.linalg.norm(outside - center, axis=1).min() > 6.0
    with pytest.raises(ValueError, match="radius_mm"):
        spherical_roi(volume, center, 0.0)
    with pytest.raises(ValueError, match="center_ras"):
        spherical_roi(volume, [1.0, 2.0], 5.0)


def test_hand_knob_constant():
    assert HAND_KNOB_MNI == (-42.0, -13.0, 66.0)


def test_roi_stats_values():
    values = np.zeros((10, 10, 10), dtype=np.float32)
    values[:5] = np.arange(1, 501, dtype=np.float32).reshape(5, 10, 10)
    volume = Volume.from_geometry(values, spacing=(2.0,) * 3)
    stats = roi_stats(volume)
    selected = np.arange(1, 501, dtype=np.float64)
    assert stats["n_voxels"] == 500
    assert stats["volume_mm3"] == pytest.approx(500 * 8.0)
    assert stats["mean"] == pytest.approx(selected.mean())
    assert stats["sd"] == pytest.approx(selected.std())
    assert stats["max"] == 500.0
    assert stats["p95"] == pytest.approx(475.05)  # np.percentile(1..500, 95), linear interpolation
    assert stats["p99"] == pytest.approx(np.percentile(selected, 99))
    assert stats["p99_9"] == pytest.approx(np.percentile(selected, 99.9))
    assert stats["focality_mm3"] == pytest.approx(np.count_nonzero(selected >= 0.5 * stats["p99_9"]) * 8.0)
    mask = np.zeros(values.shape, dtype=bool)
    mask[0, 0, :4] = True
    assert roi_stats(volume, mask)["mean"] == pytest.approx(2.5)


def test_roi_stats_rejects_bad_input():
    volume = Volume.from_geometry(np.ones((4, 4, 4)), spacing=(1.0,) * 3)
    with pytest.raises(ValueError, match="empty"):
        roi_stats(volume, np.zeros((4, 4, 4), dtype=bool))
    with pytest.raises(ValueError, match="mask shape"):
        roi_stats(volume, np.ones((3, 4, 4), dtype=bool))
    with pytest.raises(TypeError, match="bool"):
        roi_stats(volume, np.ones((4, 4, 4)))
    with pytest.raises(TypeError, match="scalar Volume"):
        roi_stats(np.ones((4, 4, 4)))


def test_mask_roi_takes_a_finer_mask_onto_the_grid_by_nearest_neighbour():
    """A box of a 1 mm label volume on a 3 mm grid: the coarse voxels whose centres lie in the box; labels pick."""
    from CondNetLogic.metrics import mask_roi

    fine = Volume.from_geometry(np.zeros((60, 60, 60), np.int16), spacing=(1.0, 1.0, 1.0), origin=(-29.5,) * 3,
                                direction=np.eye(3))
    labels = np.zeros(fine.shape, np.int16)
    labels[20:41, 10:31, 30:52] = 4  # voxel centres -9.5..10.5, -19.5..0.5, 0.5..21.5 mm: edges at -10..11 etc.
    labels[0:3, 0:3, 0:3] = 2
    coarse = Volume.from_geometry(np.zeros((20, 20, 20), np.float32), spacing=(3.0, 3.0, 3.0),
                                  origin=(28.5, -28.5, -28.5), direction=np.diag([-1.0, 1.0, 1.0]))  # L-A-S
    centres = coarse.ijk_to_ras_points(np.stack(np.meshgrid(*[np.arange(20)] * 3, indexing="ij"), axis=-1))
    inside = np.all((centres > [-10.0, -20.0, 0.0]) & (centres < [11.0, 1.0, 22.0]), axis=-1)
    assert inside.sum() == 7 * 7 * 7
    np.testing.assert_array_equal(mask_roi(fine.with_array(labels), coarse, [4]), inside)
    assert mask_roi(fine.with_array(labels), coarse).sum() > inside.sum()  # label 2 too
    with pytest.raises(ValueError, match="no voxel labelled 5"):
        mask_roi(fine.with_array(labels), coarse, [5])
    with pytest.raises(ValueError, match="no non-zero voxel"):
        mask_roi(fine, coarse)
