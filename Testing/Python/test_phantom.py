"""Tests of the synthetic head phantom."""
from __future__ import annotations

import numpy as np
import pytest

from CondNetLogic.conductivity import TISSUE_INDEX, TISSUES
from CondNetLogic.phantom import make_head_phantom


@pytest.fixture(scope="module")
def phantom():
    return make_head_phantom((96, 96, 96), seed=0)


def test_every_tissue_present(phantom):
    counts = np.bincount(phantom.tissues.array.ravel(), minlength=len(TISSUES))
    assert len(counts) == len(TISSUES)
    missing = [name for name, count in zip(TISSUES, counts) if count == 0]
    assert missing == []


@pytest.mark.parametrize("shape", [(64, 64, 64), (48, 56, 64)])
def test_every_tissue_present_on_small_grids(shape):
    tissues = make_head_phantom(shape, seed=3).tissues.array
    assert set(np.unique(tissues)) == set(range(len(TISSUES)))


def test_types_and_grid(phantom):
    assert phantom.tissues.array.dtype == np.uint8
    assert phantom.t1.array.dtype == np.float32
    assert phantom.t2.array.dtype == np.float32
    assert phantom.t1.same_grid(phantom.tissues)
    assert phantom.t2.same_grid(phantom.tissues)
    np.testing.assert_allclose(phantom.tissues.spacing, 1.0)
    np.testing.assert_allclose(phantom.tissues.direction, np.eye(3))
    assert np.all(np.isfinite(phantom.t1.array))
    assert np.all(np.isfinite(phantom.t2.array))


def test_centre_and_spacing():
    phantom = make_head_phantom((48, 50, 60), seed=0, spacing_mm=2.0, center_ras=(10.0, -20.0, 30.0))
    np.testing.assert_allclose(phantom.tissues.spacing, 2.0)
    centre_ijk = (np.array([48, 50, 60]) - 1) / 2.0
    np.testing.assert_allclose(phantom.tissues.ijk_to_ras_points(centre_ijk), [10.0, -20.0, 30.0])
    # The head is centred: the tissue centroid lies near the grid centre (the face and neck pull it
    # forward and down by a few mm).
    ijk = np.argwhere(phantom.tissues.array > 0)
    centroid = phantom.tissues.ijk_to_ras_points(ijk.mean(axis=0))
    assert np.all(np.abs(centroid - [10.0, -20.0, 30.0]) < 12.0)


def test_head_fills_grid_with_margin():
    shape = (64, 80, 96)
    tissues = make_head_phantom(shape, seed=0).tissues.array
    ijk = np.argwhere(tissues > 0)
    extent = ijk.max(axis=0) - ijk.min(axis=0) + 1
    assert np.all(extent <= np.array(shape) * 0.95)
    assert extent.max() >= 0.7 * min(shape)
    # The border planes are air.
    for axis in range(3):
        assert not np.take(tissues, 0, axis=axis).any()
        assert not np.take(tissues, -1, axis=axis).any()


def test_deterministic_by_seed(phantom):
    again = make_head_phantom((96, 96, 96), seed=0)
    np.testing.assert_array_equal(again.tissues.array, phantom.tissues.array)
    np.testing.assert_array_equal(again.t1.array, phantom.t1.array)
    np.testing.assert_array_equal(again.t2.array, phantom.t2.array)
    other = make_head_phantom((96, 96, 96), seed=1)
    assert not np.array_equal(other.tissues.array, phantom.tissues.array)
    assert not np.array_equal(other.t1.array, phantom.t1.array)


def test_contrast(phantom):
    tissues, t1, t2 = phantom.tissues.array, phantom.t1.array, phantom.t2.array

    def mean(image, name):
        return float(image[tissues == TISSUE_INDEX[name]].mean())

    assert mean(t1, "wm") > mean(t1, "gm") > mean(t1, "csf")
    assert mean(t2, "csf") > mean(t2, "gm") > mean(t2, "wm")
    assert mean(t1, "fat") > mean(t1, "muscle")
    assert mean(t2, "fat") > mean(t2, "muscle")
    for image in (t1, t2):
        assert mean(image, "cortical_bone") < 0.2
        assert mean(image, "air") < 0.1


def test_nested_layers(phantom):
    """Walking down from the vertex, the layers appear in anatomical order."""
    tissues = phantom.tissues.array
    column = tissues[40, 48, ::-1]  # superior to inferior, 8 mm off the midline (the sagittal sinus)
    names = [TISSUES[t] for t in column]
    first = {name: names.index(name) for name in ("skin", "fat", "muscle", "cortical_bone", "dura", "csf")}
    assert first["skin"] < first["fat"] < first["muscle"] < first["cortical_bone"] < first["dura"] < first["csf"]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"shape": (40, 96, 96)}, "shape"),
        ({"shape": (96, 96)}, "shape"),
        ({"spacing_mm": 0.0}, "spacing_mm"),
        ({"spacing_mm": float("nan")}, "spacing_mm"),
        ({"center_ras": (0.0, 0.0)}, "center_ras"),
        ({"seed": -1}, "seed"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_head_phantom(**kwargs)
