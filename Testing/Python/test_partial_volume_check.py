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
