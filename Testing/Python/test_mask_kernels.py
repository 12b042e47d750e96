"""The numba head-mask kernels (:mod:`CondNetLogic._mask_kernels` through :mod:`CondNetLogic._resample`) against
numpy/scipy, and :func:`head_mask` against the numpy/scipy algorithm it replaced: all results bit-identical."""
from __future__ import annotations

import re

import numba
import numpy as np
import pytest
from scipy import ndimage

from CondNetLogic import _resample
from CondNetLogic import preprocessing as pp
from CondNetLogic.phantom import make_head_phantom
from CondNetLogic.volume import Volume

SHAPES = [(7, 9, 11), (16, 5, 13), (12, 12, 12), (3, 20, 2), (1, 1, 1), (2, 1, 5)]


@pytest.fixture(params=[1, 3], ids=["1 thread", "3 threads"])
def threads(request):
    """Run with one and with several numba threads: the chunking must not change any result."""
    previous = numba.get_num_threads()
    numba.set_num_threads(min(request.param, numba.config.NUMBA_NUM_THREADS))
    yield
    numba.set_num_threads(previous)


def random_volume(rng, shape) -> np.ndarray:
    """float32 values with ties, a constant block, negatives and a few outliers."""
    kind = rng.integers(4)
    if kind == 0:
        array = rng.standard_normal(shape)
    elif kind == 1:
        array = rng.integers(-3, 5, size=shape).astype(float)  # few distinct values: many ties
    elif kind == 2:
        array = np.round(rng.gamma(2.0, 50.0, size=shape), 1)
    else:
        array = rng.random(shape) * 1e-3 + 1000.0  # a narrow range far from zero
    array = array.astype(np.float32)
    if array.size > 8:
        block = tuple(slice(0, max(n // 2, 1)) for n in shape)
        array[block] = array.flat[0]
        array.flat[rng.integers(array.size, size=2)] = np.float32(rng.choice([-1e6, 1e6]))
    return array


def random_volumes(rng, trials: int = 60):
    """``random_volume`` on the fixed SHAPES and, every third trial, a random shape of up to 40^3."""
    for trial in range(trials):
        shape = SHAPES[trial % len(SHAPES)] if trial % 3 else tuple(rng.integers(1, 40, size=3))
        yield random_volume(rng, shape)


def reference_fill_holes(mask: np.ndarray, axis=None) -> np.ndarray:
    """scipy's hole filling, in 3D or slice by slice across ``axis``."""
    if axis is None:
        return ndimage.binary_fill_holes(mask)
    return np.stack([ndimage.binary_fill_holes(s) for s in np.moveaxis(mask, axis, 0)], axis=axis)


def reference_largest_component(mask: np.ndarray) -> np.ndarray:
    """The component with the largest size and, among those, the smallest scipy label (as head_mask did)."""
    labels, _ = ndimage.label(mask)
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    return labels == int(np.argmax(sizes))


def reference_head_mask(volume: Volume) -> np.ndarray:
    """head_mask as written with numpy/scipy before the numba kernels."""
    array = volume.array.astype(np.float32)
    low, high = array.min(), np.percentile(array, 99.5)
    if high <= low:
        high = array.max()
    counts, edges = np.histogram(np.minimum(array, high).ravel(), bins=256)
    threshold = low + 0.5 * (_resample.otsu_threshold(counts, edges) - low)
    mask = reference_largest_component(array > threshold)
    box = _resample.bounding_box(mask, pad=1)
    inner = reference_fill_holes(mask[box])
    for axis in range(3):
        inner = reference_fill_holes(inner, axis=axis)
    mask[box] = inner
    return mask


def assert_identical(actual, expected) -> None:
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.dtype == expected.dtype
    assert actual.shape == expected.shape
    assert actual.tobytes() == expected.tobytes()


# --- percentile ----------------------------------------------------------------------------------------------


@pytest.mark.usefixtures("threads")
def test_percentile_equals_numpy():
    rng = np.random.default_rng(0)
    for array in random_volumes(rng):
        for q in (99.5, 0.0, 0.5, 50.0, 100.0, float(rng.uniform(0, 100))):
            assert_identical(_resample.percentile(array, q), np.percentile(array, q))


def test_percentile_of_a_constant_and_of_a_large_array():
    constant = np.full((3, 4, 5), 2.5, np.float32)
    assert_identical(_resample.percentile(constant, 99.5), np.percentile(constant, 99.5))
    array = np.random.default_rng(1).standard_normal((64, 64, 64)).astype(np.float32)  # the sampled window path
    assert_identical(_resample.percentile(array, 99.5), np.percentile(array, 99.5))


def test_percentile_falls_back_when_the_sample_misleads():
    array = np.zeros(200_000, np.float32)
    array[:: _resample._SAMPLE_STRIDE] = 1.0  # every sampled value is 1, but more than 98 % are 0
    array[7] = 3.0
    for q in (99.5, 50.0):
        assert_identical(_resample.percentile(array, q), np.percentile(array, q))


def test_percentile_checks_its_input():
    with pytest.raises(TypeError, match="float32"):
        _resample.percentile(np.zeros(4), 50.0)
    with pytest.raises(ValueError, match="C-contiguous"):
        _resample.percentile(np.zeros((4, 4), np.float32)[:, ::2], 50.0)
    with pytest.raises(ValueError, match="q must"):
        _resample.percentile(np.zeros(4, np.float32), 101.0)


# --- Otsu histogram ------------------------------------------------------------------------------------------


def assert_same_histogram(array: np.ndarray, high) -> None:
    """Same counts and edges as numpy, or the same error (too narrow a range for 256 float32 bins)."""
    try:
        expected = np.histogram(np.minimum(array, high).ravel(), bins=256)
    except ValueError as error:
        with pytest.raises(ValueError, match=re.escape(str(error))):
            _resample.clipped_histogram(array, high)
        return
    counts, edges = _resample.clipped_histogram(array, high)
    assert_identical(counts, expected[0])
    assert_identical(edges, expected[1])


@pytest.mark.usefixtures("threads")
def test_clipped_histogram_equals_numpy():
    rng = np.random.default_rng(2)
    for array in random_volumes(rng):
        for high in (np.percentile(array, 99.5), array.max(), array.min(), np.median(array)):
            assert_same_histogram(array, high)


def test_clipped_histogram_on_the_edges():
    """Values on and one ulp beside every bin edge, where numpy corrects its float32 estimate of the bin."""
    rng = np.random.default_rng(7)
    corrected = np.zeros(2, int)
    for _ in range(20):
        first = np.float32(rng.uniform(-1000, 1000))
        edges = np.linspace(first, first + np.float32(10 ** rng.uniform(-2, 3)), 257, dtype=np.float32)
        beside = [np.nextafter(edges, np.float32(side)) for side in (-np.inf, np.inf)]
        values = np.concatenate([edges, *beside])
        array = np.ascontiguousarray(np.clip(values, edges[0], edges[-1]).reshape(3, 257, 1))
        for high in (edges[-1], edges[200]):
            assert_same_histogram(array, high)
        # How often numpy's corrections act here (down, up): the test must exercise both.
        estimate = np.minimum(((array.ravel() - edges[0]) / (edges[-1] - edges[0]) * 256).astype(int), 255)
        down = array.ravel() < edges[estimate]
        up = (array.ravel() >= edges[np.minimum(estimate - down + 1, 256)]) & (estimate - down != 255)
        corrected += down.sum(), up.sum()
    assert np.all(corrected > 0)


def test_clipped_histogram_of_a_range_too_narrow_is_numpy_s():
    """Too few float32 values in the range for 256 distinct edges: numpy's result or error."""
    for array, high in [(np.array([1.0, np.nextafter(np.float32(1.0), np.float32(2.0))], np.float32), 2.0),
                        (np.full(3, 1e6, np.float32), 1e6)]:  # a constant, widened by 1: still too narrow
        assert_same_histogram(array, high)


def test_otsu_threshold_is_the_upper_edge_of_the_best_lower_class():
    """Otsu's threshold maximises the between-class variance (checked split by split) and lies above the lower class."""
    counts, edges = np.array([3, 5, 2, 0, 1, 4, 6, 1]), np.arange(9.0)  # dark bins 0-2, bright bins 4-7
    assert _resample.otsu_threshold(counts, edges) == 3.0
    rng = np.random.default_rng(8)
    for _ in range(20):
        counts = rng.integers(1, 50, size=int(rng.integers(3, 40)))
        edges = np.cumsum(rng.uniform(0.5, 2.0, size=counts.size + 1))
        centres = 0.5 * (edges[:-1] + edges[1:])
        between = []
        for split in range(1, counts.size):  # lower class: bins 0 .. split - 1
            low, high = counts[:split], counts[split:]
            mean_low, mean_high = (low @ centres[:split]) / low.sum(), (high @ centres[split:]) / high.sum()
            between.append(low.sum() * high.sum() * (mean_low - mean_high) ** 2)
        best = int(np.argmax(between)) + 1
        assert _resample.otsu_threshold(counts, edges) == pytest.approx(edges[best])


# --- connected components and holes --------------------------------------------------------------------------


def random_mask(rng, shape) -> np.ndarray:
    """Blobs, noise or sparse specks (equal-sized components), often touching the border."""
    kind = rng.integers(3)
    if kind == 0:
        mask = ndimage.gaussian_filter(rng.random(shape), 1.0) > 0.5
    elif kind == 1:
        mask = rng.random(shape) < rng.uniform(0.2, 0.8)
    else:
        mask = rng.random(shape) < 0.05
    return mask


def holey_mask(rng, shape) -> np.ndarray:
    """Shells, tubes, a spiral and a U shape: holes in 3D, in slices across some axes, and none."""
    mask = np.zeros(shape, bool)
    n0, n1, n2 = shape
    mask[1:-1, 1:-1, 1:-1] = True
    mask[3:-3, 3:-3, 3:-3] = False  # a shell: a hole in 3D
    mask[n0 // 2, :, n2 // 2] = False  # a tunnel through it along axis 1 (no 3D hole any more)
    spiral = np.zeros((n1, n2), bool)
    spiral[2:-2, 2] = spiral[2, 2:-2] = spiral[2:-2, -3] = spiral[-3, 4:-2] = spiral[4:-4, 4] = True
    mask[1] |= spiral
    mask[-2, 2:-2, 2:-2] = rng.random((n1 - 4, n2 - 4)) < 0.5
    return mask | (rng.random(shape) < 0.03)


MASK_SHAPES = [(14, 15, 16), (20, 9, 13), (9, 21, 10), (12, 12, 12), (11, 13, 9)]


def nonempty_random_masks(rng: np.random.Generator, trials: int):
    """``(trial, mask)`` for the non-empty ``random_mask`` of each trial: the fixed shapes and random ones in turn."""
    for trial in range(trials):
        shape = MASK_SHAPES[trial % len(MASK_SHAPES)] if trial % 2 else tuple(rng.integers(1, 25, size=3))
        mask = random_mask(rng, shape)
        if mask.any():
            yield trial, mask


@pytest.mark.usefixtures("threads")
def test_largest_component_equals_scipy():
    for _, mask in nonempty_random_masks(np.random.default_rng(3), 40):
        assert_identical(_resample.largest_component(mask), reference_largest_component(mask))


def test_largest_component_of_equal_components_is_the_first():
    mask = np.zeros((10, 10, 10), bool)
    mask[6:8, 1:3, 1:3] = mask[1:3, 6:8, 6:8] = mask[1:3, 1:3, 6:8] = True  # three 2x2x2 cubes
    expected = np.zeros_like(mask)
    expected[1:3, 1:3, 6:8] = True
    assert_identical(_resample.largest_component(mask), expected)
    assert_identical(_resample.largest_component(np.zeros((3, 4, 5), bool)), np.zeros((3, 4, 5), bool))
    assert_identical(_resample.largest_component(mask[:, ::-1]), reference_largest_component(mask[:, ::-1]))


@pytest.mark.usefixtures("threads")
@pytest.mark.parametrize("axis", [None, 0, 1, 2])
def test_fill_holes_equals_scipy(axis):
    rng = np.random.default_rng(4)
    for trial in range(30):
        shape = MASK_SHAPES[trial % len(MASK_SHAPES)]
        if trial % 3 == 2:
            shape = tuple(rng.integers(1, 25, size=3))
        mask = holey_mask(rng, shape) if trial % 3 == 0 and min(shape) >= 9 else random_mask(rng, shape)
        assert_identical(_resample.fill_holes(mask, axis=axis), reference_fill_holes(mask, axis))
        assert_identical(_resample.fill_holes(~mask, axis=axis), reference_fill_holes(~mask, axis))


def test_fill_holes_keeps_its_input_and_checks_it():
    mask = holey_mask(np.random.default_rng(5), (12, 13, 14))
    before = mask.copy()
    view = mask[:, ::-1]  # not contiguous
    assert_identical(_resample.fill_holes(view, axis=2), reference_fill_holes(view, 2))
    assert_identical(mask, before)
    with pytest.raises(TypeError, match="boolean"):
        _resample.fill_holes(mask.astype(np.uint8))
    with pytest.raises(ValueError, match="axis"):
        _resample.fill_holes(mask, axis=3)


# --- mask bounds ---------------------------------------------------------------------------------------------


def reference_mask_ras_bounds(mask: np.ndarray, affine: np.ndarray) -> tuple:
    """RAS extremes over the mask's surface voxels (as computed before the row-end kernel)."""
    ijk = np.argwhere(mask & ~ndimage.binary_erosion(mask))
    ras = ijk @ affine[:3, :3].T + affine[:3, 3]
    return ras.min(axis=0), ras.max(axis=0)


@pytest.mark.usefixtures("threads")
def test_mask_ras_bounds_equal_the_surface_extremes():
    rng = np.random.default_rng(6)
    for trial, mask in nonempty_random_masks(rng, 30):
        rotation, _ = np.linalg.qr(rng.standard_normal((3, 3)))
        affine = np.eye(4)
        affine[:3, :3] = rotation * rng.uniform(0.5, 2.0, size=3)
        affine[:3, 3] = rng.uniform(-100, 100, size=3)
        if trial % 5 == 0:
            affine = np.diag([-1.0, 1.0, 1.0, 1.0])
        for actual, expected in zip(_resample.mask_ras_bounds(mask, affine), reference_mask_ras_bounds(mask, affine)):
            assert_identical(actual, expected)


# --- head_mask -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("size", "seed"), [(64, 0), (64, 3), (96, 1)])
def test_head_mask_equals_the_numpy_scipy_algorithm(size, seed):
    phantom = make_head_phantom((size,) * 3, seed=seed)
    for volume in (phantom.t1, phantom.t2):
        assert_identical(pp.head_mask(volume), reference_head_mask(volume))
    shifted = Volume(phantom.t1.array[:, 5:, : size - 7] * 3.0 - 1.0, phantom.t1.ijk_to_ras)  # odd shape, head cut
    assert_identical(pp.head_mask(shifted), reference_head_mask(shifted))


@pytest.mark.slow
def test_head_mask_of_a_256_phantom_equals_the_numpy_scipy_algorithm():
    phantom = make_head_phantom((256,) * 3, seed=0)
    for volume in (phantom.t1, phantom.t2):
        assert_identical(pp.head_mask(volume), reference_head_mask(volume))
