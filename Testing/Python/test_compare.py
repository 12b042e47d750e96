"""Two E-fields compared (``metrics.compare_fields``, ``condnet compare``): known scalings and rotations, grids."""
from __future__ import annotations

import json

import numpy as np
import pytest

from CondNetLogic.cli import main
from CondNetLogic.io import write_volume
from CondNetLogic.metrics import compare_fields
from CondNetLogic.volume import Volume

LIA = np.array([[-1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]])


def _field(seed=0, shape=(12, 10, 8)):
    """A smooth-ish vector field with no component along S (so a turn about S keeps every magnitude)."""
    rng = np.random.default_rng(seed)
    field = rng.normal(size=shape + (3,))
    field[..., 2] = 0.0
    return field


def test_a_scaled_field():
    a = _field()
    mask = np.ones(a.shape[:3], bool)
    result = compare_fields(a, 1.1 * a, mask)
    strength = np.linalg.norm(a, axis=-1)
    assert result["n_voxels"] == mask.sum()
    assert result["mean_ratio"] == pytest.approx(1.1)
    assert result["p99_ratio"] == pytest.approx(1.1)
    assert result["pearson_r"] == pytest.approx(1.0)
    assert result["rdm"] == pytest.approx(0.0, abs=1e-12)
    assert result["mag"] == pytest.approx(np.log(1.1))
    assert result["ge_percent"] == pytest.approx(100 * np.mean(0.1 * strength) / (1.1 * strength.max()))
    magnitudes = compare_fields(strength, 1.1 * a, mask)  # a strength against a vector field: no RDM/MAG
    assert "rdm" not in magnitudes
    assert magnitudes["mean_ratio"] == pytest.approx(1.1)


def test_a_turned_field_has_the_same_strength_and_another_direction():
    a = _field(1)
    turned = np.stack([-a[..., 1], a[..., 0], a[..., 2]], axis=-1)  # 90 degrees about S
    result = compare_fields(a, turned, np.ones(a.shape[:3], bool))
    assert result["rdm"] == pytest.approx(np.sqrt(2.0))
    assert result["mag"] == pytest.approx(0.0, abs=1e-12)
    assert result["ge_percent"] == pytest.approx(0.0, abs=1e-12)
    assert result["mean_ratio"] == pytest.approx(1.0)


def test_percentile_and_correlation_of_known_strengths():
    """Numbers by hand: the 99th percentile of 1..100 is 99.01; r of (1, 2, 3, 4) and (1, 3, 2, 4) is 0.8."""
    a = np.arange(1.0, 101.0).reshape(100, 1, 1)
    result = compare_fields(a, 2 * a, np.ones(a.shape, bool))
    assert result["p99_a"] == pytest.approx(99.01)
    assert result["p99_b"] == pytest.approx(198.02)
    assert result["mean_a"] == pytest.approx(50.5)
    shuffled = compare_fields(np.array([1.0, 2, 3, 4]).reshape(4, 1, 1), np.array([1.0, 3, 2, 4]).reshape(4, 1, 1),
                              np.ones((4, 1, 1), bool))
    assert shuffled["pearson_r"] == pytest.approx(0.8)


def test_bad_comparisons_raise():
    a = _field()
    with pytest.raises(ValueError, match="on one grid"):
        compare_fields(a, a[:-1], np.ones(a.shape[:3], bool))
    with pytest.raises(ValueError, match="at least 2"):
        compare_fields(a, a, np.zeros(a.shape[:3], bool))
    with pytest.raises(ValueError, match="zero everywhere"):
        compare_fields(a, 0 * a, np.ones(a.shape[:3], bool))


def test_cli_compares_fields_on_different_grids_in_a_region(tmp_path, capsys):
    """b = 1.2 a, written on an R-A-S grid with a's voxel centres (a is L-I-A), zero in one slab (outside b's
    conductor): the slab is left out, and a mask restricts the region."""
    a = _field(2)
    grid = Volume.from_geometry(np.zeros(a.shape[:3]), spacing=(2.0, 2.0, 2.0), origin=(11.0, 7.0, -9.0),
                                direction=LIA)
    write_volume(grid.with_array(a.astype(np.float32)), tmp_path / "a.nii.gz")
    b = 1.2 * a
    b[:3] = 0.0  # outside b's conductor
    ras = np.stack(np.meshgrid(*[np.arange(n) for n in a.shape[:3]], indexing="ij"), axis=-1)
    centres = grid.ijk_to_ras_points(ras)
    low = centres.reshape(-1, 3).min(axis=0)
    other = Volume.from_geometry(np.zeros(a.shape[:3]), spacing=(2.0, 2.0, 2.0), origin=low, direction=np.eye(3))
    ijk = np.rint(other.ras_to_ijk_points(centres)).astype(int)
    shape = tuple(int(v) + 1 for v in ijk.reshape(-1, 3).max(axis=0))
    on_other = np.zeros(shape + (3,), np.float32)
    on_other[ijk[..., 0], ijk[..., 1], ijk[..., 2]] = b
    write_volume(Volume(on_other, other.ijk_to_ras), tmp_path / "b.nii.gz")
    args = ["compare", "--a", str(tmp_path / "a.nii.gz"), "--b", str(tmp_path / "b.nii.gz"),
            "--out", str(tmp_path / "cmp.json")]
    assert main(args) == 0
    record = json.loads((tmp_path / "cmp.json").read_text())
    assert record["n_voxels"] == a[3:].shape[0] * a.shape[1] * a.shape[2]
    assert record["b"]["resampled_onto_a"]
    assert record["mean_ratio"] == pytest.approx(1.2, rel=1e-5)
    assert record["rdm"] == pytest.approx(0.0, abs=1e-5)
    assert record["mag"] == pytest.approx(np.log(1.2), rel=1e-4)
    assert "b/a 1.2000" in capsys.readouterr().out
    labels = np.zeros(a.shape[:3], np.uint8)
    labels[5:8] = 4
    write_volume(grid.with_array(labels), tmp_path / "roi.nii.gz")
    assert main(["compare", "--a", str(tmp_path / "a.nii.gz"), "--b", str(tmp_path / "b.nii.gz"),
                 "--roi-mask", str(tmp_path / "roi.nii.gz"), "--roi-label", "4"]) == 0
    assert f"{3 * a.shape[1] * a.shape[2]} voxels with both fields" in capsys.readouterr().out
    assert main(args) == 2  # --out exists
    assert "exists" in capsys.readouterr().err
    write_volume(Volume(np.ones((4, 4, 4, 2), np.float32), np.eye(4)), tmp_path / "two.nii.gz")
    far = Volume.from_geometry(np.ones((4, 4, 4), np.float32), spacing=(2.0,) * 3, origin=(500.0, 0.0, 0.0),
                               direction=np.eye(3))
    write_volume(far, tmp_path / "far.nii.gz")
    for extra, message in ((["--b", str(tmp_path / "two.nii.gz")], "has 2 components"),
                           (["--b", str(tmp_path / "far.nii.gz")], "no voxel has a field in both volumes"),
                           (["--b", str(tmp_path / "b.nii.gz"), "--roi-label", "4"], "give --roi-mask")):
        assert main(["compare", "--a", str(tmp_path / "a.nii.gz"), *extra]) == 2, extra
        assert message in capsys.readouterr().err, extra


def test_cli_compares_only_the_roi_labels_and_refuses_nan(tmp_path, capsys):
    """--roi-label picks labels of a mask holding two; a NaN in a field is refused, not left out of the region."""
    grid = Volume.from_geometry(np.zeros((6, 5, 4)), spacing=(2.0, 2.0, 2.0))
    a = np.ones((6, 5, 4, 3), np.float32) + np.arange(4, dtype=np.float32)[:, None]  # |E| varies along S
    write_volume(grid.with_array(a), tmp_path / "a.nii.gz")
    write_volume(grid.with_array(1.5 * a), tmp_path / "b.nii.gz")
    labels = np.zeros((6, 5, 4), np.uint8)
    labels[:2] = 1
    labels[2:5] = 2
    write_volume(grid.with_array(labels), tmp_path / "roi.nii.gz")
    assert main(["compare", "--a", str(tmp_path / "a.nii.gz"), "--b", str(tmp_path / "b.nii.gz"),
                 "--roi-mask", str(tmp_path / "roi.nii.gz"), "--roi-label", "2"]) == 0
    assert f"{3 * 5 * 4} voxels with both fields" in capsys.readouterr().out
    bad = 1.5 * a
    bad[0, 0, 0, 1] = np.nan
    write_volume(grid.with_array(bad), tmp_path / "nan.nii.gz")
    assert main(["compare", "--a", str(tmp_path / "a.nii.gz"), "--b", str(tmp_path / "nan.nii.gz"),
                 "--out", str(tmp_path / "cmp.json")]) == 2
    assert "nan.nii.gz: 1 of 360 voxels are NaN or infinite" in capsys.readouterr().err
    assert not (tmp_path / "cmp.json").exists()
