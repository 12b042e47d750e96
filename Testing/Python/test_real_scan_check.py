"""Tests for benchmarks/real_scan_check.py (issue 7 items 5-6): target judging, errors, and the whole check.

The end-to-end test runs the check on downsampled copies of the shared scans with tiny random weights: it
checks the pipeline and the report's structure, never the targets (the real numbers come from running the
script with the shipped weights).  It is skipped when ``../shared`` is absent.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from _benchmarks import load_benchmark

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared"
NEEDED = [
    "data/mni152/MNI152_T1_2mm.nii.gz", "data/mni152/MNI152_T2_2mm.nii.gz", "data/mni152/samseg/seg.nii.gz",
    "data/colin27/colin27_t1_1mm.nii.gz", "data/colin27/samseg/seg.nii.gz",
    "data/synthseg_label_maps/training_seg_17.nii.gz",
]


@pytest.fixture(scope="module")
def check():
    return load_benchmark("real_scan_check")


def tiny_weights(path: Path, *, train_subjects=("seg01_p0", "seg02_p0"), size: int = 96) -> Path:
    """Random-init depth-3 weights (T1 + T2, Table A) on a ``size``^3 model grid."""
    import torch

    from CondNetLogic.conductivity import TABLE_A
    from CondNetLogic.network import CondNet, CondNetConfig
    from CondNetLogic.weights import save_weights

    torch.manual_seed(0)
    config = CondNetConfig(depth=3)
    states = {d: CondNet(config).state_dict() for d in ("axial", "sagittal", "coronal")}
    save_weights(path, states, config=config, tables=[TABLE_A], tau=0.1,
                 input_spec={"channels": ["t1", "t2"], "size": size, "spacing_mm": 1.0, "normalisation": "z"},
                 training={"data": {"train": list(train_subjects), "val": []}, "epochs": 0})
    return path


def fake_table(means: dict, voxels: int = 10) -> dict:
    from CondNetLogic.evaluation import GROUPS

    return {"groups": {g: {"voxels": voxels if means.get(g) is not None else 0, "condnet_mean": means.get(g)}
                       for g in GROUPS}}


def test_judge_targets_bounds_and_statuses(check):
    means = {"CSF": 1.5, "vitreous humor": 1.95, "GM": 0.06, "WM": 0.039, "skull": 0.12, "skin": float("nan"),
             "cerebellum": 5.0, "soft tissue": 0.2}
    judged = check.judge_targets(fake_table(means), "A")
    status = {g: j["status"] for g, j in judged.items()}
    assert status == {"CSF": "PASS", "vitreous humor": "MISS", "GM": "PASS", "WM": "MISS", "skull": "PASS",
                      "skin": "MISS", "cerebellum": "no target", "soft tissue": "no target"}
    assert judged["CSF"]["target"] == "≥ 1.5"
    assert judged["skull"]["target"] == "≤ 0.12"
    assert judged["GM"]["target"] == "0.06–0.16"
    empty = check.judge_targets(fake_table({"CSF": None}), "A")
    assert empty["CSF"]["status"] == "no voxels"
    # The targets are for Table I (A): another table gets none.
    assert {j["status"] for j in check.judge_targets(fake_table(means), "B").values()} == {"no target"}
    with pytest.raises(ValueError, match="at least one bound"):
        check.format_range((None, None))


def test_read_synth_options(check, tmp_path):
    from CondNetLogic.synth import SynthOptions

    options, label = check.read_synth_options(None)
    assert options == SynthOptions.randomised()
    assert label == "SynthOptions.randomised()"
    mild = SynthOptions.mild().to_dict()
    split = tmp_path / "split.json"
    split.write_text(json.dumps({"train": [], "val": [], "options": mild}))
    bare = tmp_path / "options.json"
    bare.write_text(json.dumps(mild))
    for path in (split, bare):
        options, label = check.read_synth_options(str(path))
        assert options == SynthOptions.mild()
        assert str(path) in label
    with pytest.raises(FileNotFoundError, match="--synth-options"):
        check.read_synth_options(str(tmp_path / "missing.json"))


def test_missing_shared_folder_is_a_clear_error(check, tmp_path, capsys):
    missing = tmp_path / "no_shared_here"
    code = check.main(["--shared", str(missing), "--out", str(tmp_path / "out"), "--cases", "mni152"])
    assert code == 2
    assert str(missing) in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_t1_only_weights_get_no_t2_and_colin27_is_a_result(check):
    colin = {"name": "colin27", "title": "t", "note": check.PLUMBING_NOTE, "t1": "T1", "t2": "T1",
             "inputs": {"t2": "colin.nii.gz"}}
    case = check.t1_only_case(colin)
    assert case["t2"] is None
    assert case["inputs"]["t2"] is None
    assert case["note"] != check.PLUMBING_NOTE
    assert "T1-only weights" in case["title"]
    assert colin["t2"] == "T1"  # the original is left alone
    mni = check.t1_only_case({"name": "mni152", "title": "MNI152", "note": "n", "t1": 1, "t2": 2, "inputs": {}})
    assert "T1-only weights" in mni["title"]
    assert "T2 not passed" in mni["note"]
    synthetic = check.t1_only_case({"name": "synthetic_val_seg17_seed9001", "title": "Synthetic", "note": "n",
                                    "t1": 1, "t2": 2, "inputs": {}})
    assert synthetic["title"] == "Synthetic (T1 only)"


def test_refuses_synthetic_map_used_in_training(check, tmp_path, capsys):
    weights = tiny_weights(tmp_path / "w.safetensors", train_subjects=("seg17_p0", "seg01_p0"))
    code = check.main(["--weights", str(weights), "--shared", str(tmp_path), "--out", str(tmp_path / "out"),
                       "--cases", "synthetic_val", "--synthetic-maps", "training_seg_17", "--synthetic-seeds", "9001"])
    assert code == 2
    assert "training_seg_17 was used to train" in capsys.readouterr().err


@pytest.mark.skipif(not all((SHARED / p).is_file() for p in NEEDED), reason=f"shared data absent ({SHARED})")
def test_check_on_downsampled_scans(check, tmp_path, capsys):
    from CondNetLogic.evaluation import GROUPS
    from CondNetLogic.weights import file_sha256

    weights = tiny_weights(tmp_path / "tiny.safetensors")
    out = tmp_path / "check"
    argv = ["--weights", str(weights), "--shared", str(SHARED), "--out", str(out), "--downsample", "3",
            "--cases", "mni152", "colin27", "synthetic_val", "--synthetic-maps", "training_seg_17",
            "--synthetic-seeds", "9001", "--threads", "1", "--device", "cpu"]
    assert check.main(argv) == 0
    result = json.loads((out / "real_scan_check.json").read_text())
    markdown = (out / "real_scan_check.md").read_text()
    assert result["weights"]["sha256"] == file_sha256(weights)
    assert result["weights"]["sha256"] in markdown
    assert result["command"] in markdown
    assert "--downsample 3" in result["command"]
    names = [c["name"] for c in result["cases"]]
    assert names == ["mni152", "colin27", "synthetic_val_seg17_seed9001"]
    for case in result["cases"]:
        table = case["report"]["tables"]["A"]
        assert set(table["groups"]) == set(GROUPS)
        for group, row in table["groups"].items():
            assert row["voxels"] > 0, (case["name"], group)  # 3 mm keeps every group, skin shell included
            for key in ("condnet_mean", "condnet_sd", "uniform_mean", "mae"):
                assert math.isfinite(row[key]), (case["name"], group, key)
        for key in ("mae_condnet_vs_uniform", "mae_constant_vs_uniform", "uncertainty_mean_in_head"):
            assert math.isfinite(table[key])
            assert table[key] >= 0
        assert set(case["targets"]["A"]) == set(GROUPS)
        assert {j["status"] for j in case["targets"]["A"].values()} <= {"PASS", "MISS", "no target"}
        assert case["timings"]["predict_s"] > 0
        for key, relative in case["files"].items():
            assert (out / relative).is_file(), key
        assert (out / case["files"]["figure_A"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        # The per-case report is the evaluation module's, with the case recorded.
        assert json.loads((out / case["files"]["json"]).read_text())["case"] == case["name"]
    assert result["cases"][1]["note"].startswith("plumbing check: T1 used as both inputs")
    assert result["cases"][2]["inputs"]["map_in_training"] is False
    assert result["cases"][0]["t1_spacing_mm"] == [3.0, 3.0, 3.0]
    # One Table-V-style row per tissue group per case, with the target column.
    for group in GROUPS:
        assert markdown.count(f"| {group} |") == len(names), group
    assert markdown.count("| Interior: mean (voxels) |") == len(names)
    wm = result["cases"][0]["report"]["tables"]["A"]["groups"]["WM"]
    assert 0 < wm["interior_voxels"] < wm["voxels"]
    assert f"| {wm['interior_mean']:.3f} ({wm['interior_voxels']}) |" in markdown
    assert "Plumbing check: T1 used as both inputs" in markdown
    assert "≥ 1.5" in markdown
    assert "0.04–0.1" in markdown
    # A second run into the same folder refuses to overwrite, before doing any work.
    capsys.readouterr()
    assert check.main(argv) == 2
    assert "--overwrite" in capsys.readouterr().err
    # Weights without Table A (Table B, say): the summary gives their table's MAE and says it has no targets.
    for case in result["cases"]:
        case["report"]["tables"] = {"B": case["report"]["tables"]["A"]}
        case["targets"] = {"B": case["targets"]["A"]}
    summary_rows = [line for line in check.combined_markdown(result).splitlines() if "no targets (Table B)" in line]
    assert len(summary_rows) == len(names)
    mae = result["cases"][0]["report"]["tables"]["B"]["mae_condnet_vs_uniform"]
    assert f"| no targets (Table B) | {mae:.4f} |" in summary_rows[0]
