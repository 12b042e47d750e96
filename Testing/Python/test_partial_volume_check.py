"""Tests for benchmarks/partial_volume_check.py: the brightness and distance bins against hand-counted volumes."""
from __future__ import annotations

import json

import numpy as np
import pytest
from _benchmarks import load_benchmark

from CondNetLogic.conductivity import TISSUE_INDEX
from CondNetLogic.io import write_volume
from CondNetLogic.volume import Volume


@pytest.fixture(scope="module")
def check():
    return load_benchmark("partial_volume_check")


def layered(spacing_mm: float = 2.0):
    """A slab head along i: WM, GM, then CSF layers 1-4 voxels from the brain, then muscle; bright CSF far out.

    Returns (tissues, image, prediction): the CSF voxel next to the brain is GM-grey and predicted 1.0 S/m,
    the others are bright and predicted 2.0 S/m.
    """
    column = ["wm", "wm", "gm", "csf", "csf", "csf", "csf", "muscle", "air"]
    tissues = np.zeros((len(column), 3, 3), dtype=np.uint8)
    for i, name in enumerate(column):
        tissues[i] = TISSUE_INDEX[name]
    image = np.where(tissues == TISSUE_INDEX["csf"], 1.0, 0.5)
    image[tissues == TISSUE_INDEX["wm"]] = 0.3
    image[tissues == 0] = 0.0
    image[3] = 0.55  # the CSF layer touching GM: as grey as GM (partial volume)
    prediction = np.where(tissues == TISSUE_INDEX["csf"], 2.0, 0.1)
    prediction[3] = 1.0
    return tissues, image, prediction, (spacing_mm,) * 3


def test_breakdown_bins_by_brightness_and_distance(check):
    tissues, image, prediction, spacing = layered()
    report = check.breakdown(prediction, image, tissues, spacing, ["csf"])
    csf = report["csf"]
    assert csf["voxels"] == 36
    assert csf["mean_conductivity"] == pytest.approx((9 * 1.0 + 27 * 2.0) / 36)
    # Scaled over the head from WM (0.3, the 0.5th percentile) to CSF (1.0): the GM-grey layer at 0.55 -> 0.36.
    filled = [(row["bin"], row["voxels"], row["mean_conductivity"]) for row in csf["by_brightness"] if row["voxels"]]
    assert filled == [("0.2-0.4", 9, 1.0), ("0.8-1.0", 27, 2.0)]
    by_distance = [(row["bin"], row["voxels"], row["mean_conductivity"]) for row in csf["by_distance_mm"]]
    # 2 mm voxels: the layers lie 2, 4, 6 and 8 mm from the GM layer.
    assert by_distance == [("<= 2", 9, 1.0), ("2-4", 9, 2.0), ("4-8", 18, 2.0), ("> 8", 0, None)]
    assert report["reference"]["gm"] < report["reference"]["csf"]


def test_breakdown_refuses_missing_tissues_and_flat_images(check):
    tissues, image, prediction, spacing = layered()
    with pytest.raises(ValueError, match="no vitreous_humor voxel"):
        check.breakdown(prediction, image, tissues, spacing, ["vitreous_humor"])
    with pytest.raises(ValueError, match="unknown tissue 'liquor'"):
        check.breakdown(prediction, image, tissues, spacing, ["liquor"])
    with pytest.raises(ValueError, match="constant over the head"):
        check.breakdown(prediction, np.ones_like(image), tissues, spacing, ["csf"])
    no_brain = np.where(np.isin(tissues, [TISSUE_INDEX["gm"], TISSUE_INDEX["wm"]]), TISSUE_INDEX["muscle"], tissues)
    with pytest.raises(ValueError, match="no brain voxel"):
        check.breakdown(prediction, image, no_brain.astype(np.uint8), spacing, ["csf"])


def test_main_reads_files_writes_json_and_refuses_other_grids(check, tmp_path, capsys):
    tissues, image, prediction, spacing = layered()
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    labels = np.zeros(tissues.shape, dtype=np.int16)  # SynthSeg-style labels: 2 WM, 3 GM, 24 CSF, 0 air
    for label, name in ((2, "wm"), (3, "gm"), (24, "csf")):
        labels[tissues == TISSUE_INDEX[name]] = label
    labels[tissues == TISSUE_INDEX["muscle"]] = 258
    paths = {}
    for name, array in (("sigma", prediction.astype(np.float32)), ("t2", image.astype(np.float32)), ("seg", labels)):
        paths[name] = write_volume(Volume(array, affine), tmp_path / f"{name}.nii.gz")
    out = tmp_path / "pv.json"
    arguments = ["--prediction", str(paths["sigma"]), "--image", str(paths["t2"]), "--labels", str(paths["seg"]),
                 "--tissues", "csf"]
    assert check.main(arguments + ["--json", str(out)]) == 0
    assert "### csf: 36 voxels, mean 1.750 S/m" in capsys.readouterr().out
    assert json.loads(out.read_text())["csf"]["voxels"] == 36
    with pytest.raises(SystemExit):  # the JSON file exists now: never overwritten
        check.main(arguments + ["--json", str(out)])
    assert "exists" in capsys.readouterr().err
    moved = affine.copy()
    moved[:3, 3] += 5.0
    shifted = write_volume(Volume(image.astype(np.float32), moved), tmp_path / "t2_shifted.nii.gz")
    with pytest.raises(SystemExit):
        check.main(["--prediction", str(paths["sigma"]), "--image", str(shifted), "--labels", str(paths["seg"])])
    assert "not on the prediction's grid" in capsys.readouterr().err


def mixed_slab():
    """Along i: 4 layers of cortex (label 3), 4 of CSF (label 24) that are 20/40/60/80 % fluid, 4 of ventricle
    (label 4).  T1 and T2 of each CSF layer mix the two pure signals linearly (partial volume)."""
    labels = np.zeros((12, 5, 5), dtype=np.int16)
    labels[:4], labels[4:8], labels[8:] = 3, 24, 4
    share = np.zeros(12)
    share[4:8] = [0.2, 0.4, 0.6, 0.8]
    share[8:] = 1.0
    grey, fluid = np.array([0.6, 0.55]), np.array([0.2, 0.95])  # (T1, T2)
    images = (1 - share)[:, None] * grey + share[:, None] * fluid
    t1, t2 = (np.broadcast_to(images[:, c, None, None], labels.shape).astype(np.float32) for c in range(2))
    return labels, t1, t2, share


def test_fluid_fraction_unmixes_partial_volume(check):
    labels, t1, t2, share = mixed_slab()
    fraction, references = check.fluid_fraction(t1, t2, labels)
    np.testing.assert_allclose(fraction[:, 2, 2], share, atol=1e-6)
    # Each image scaled over the head: fluid is the darkest T1 and the brightest T2, cortex the reverse.
    assert references["fluid"] == pytest.approx([0.0, 1.0])
    assert references["tissue"] == pytest.approx([1.0, 0.0])
    # The fraction bins of the breakdown hold the layers of each quarter.
    tissues = np.where(labels == 3, TISSUE_INDEX["gm"], TISSUE_INDEX["csf"]).astype(np.uint8)
    prediction = np.where(labels == 3, 0.1, 2.0) * 1.0
    report = check.breakdown(prediction, t2, tissues, (1.0, 1.0, 1.0), ["csf"], fraction)
    rows = [(row["bin"], row["voxels"]) for row in report["csf"]["by_fluid_fraction"]]
    assert rows == [("0.00-0.25", 25), ("0.25-0.50", 25), ("0.50-0.75", 25), ("0.75-1.00", 25 + 100)]
    assert report["csf"]["mean_fluid_fraction"] == pytest.approx((0.2 + 0.4 + 0.6 + 0.8 + 4) / 8)
    with pytest.raises(ValueError, match="not on the grid"):
        check.breakdown(prediction, t2, tissues, (1.0, 1.0, 1.0), ["csf"], fraction[:-1])


def test_fluid_fraction_refuses_missing_or_equal_references(check):
    labels, t1, t2, _ = mixed_slab()
    with pytest.raises(ValueError, match="no interior voxel"):
        check.fluid_fraction(t1, t2, labels, fluid_labels=(43,))
    with pytest.raises(ValueError, match="same brightness"):
        check.fluid_fraction(t1, t2, labels, fluid_labels=(3,), tissue_labels=(3,))
    with pytest.raises(ValueError, match="share one grid"):
        check.fluid_fraction(t1[:-1], t2, labels)


def test_main_with_a_t1_adds_the_fluid_fraction_table(check, tmp_path, capsys):
    labels, t1, t2, _ = mixed_slab()
    affine = np.eye(4)
    prediction = np.where(labels == 3, 0.1, 2.0).astype(np.float32)
    paths = {name: write_volume(Volume(array, affine), tmp_path / f"{name}.nii.gz")
             for name, array in (("sigma", prediction), ("t1", t1), ("t2", t2), ("seg", labels))}
    assert check.main(["--prediction", str(paths["sigma"]), "--image", str(paths["t2"]), "--labels",
                       str(paths["seg"]), "--mapping", "synthseg", "--tissues", "csf", "--t1", str(paths["t1"])]) == 0
    out = capsys.readouterr().out
    assert "### csf: 200 voxels, mean 2.000 S/m, mean fluid fraction 0.75" in out
    assert "| fluid fraction | voxels |" in out
    assert "Fluid fraction: (T1, T2) unmixed between the interiors of labels [4, 43]" in out
