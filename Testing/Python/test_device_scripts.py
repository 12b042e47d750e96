"""The scripts that run on a lent GPU machine: valid shell, and the training script end to end on the CPU with
SimpleITK made unimportable, as that machine lacks it."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
MAPS = REPO.parent / "shared" / "data" / "synthseg_label_maps"
SCRIPTS = ["benchmarks/gpu_check.sh", "scripts/gpu_train.sh", "scripts/device_payload.sh", "scripts/device_wheels.sh"]

#: Makes the named modules unimportable in the child processes (what the GPU machine lacks).
BLOCKER = '''import sys

class _Missing:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("SimpleITK", "pyamg"):
            raise ImportError(f"No module named {name!r} (blocked by the test)")
        return None

sys.meta_path.insert(0, _Missing())
'''


@pytest.mark.parametrize("script", SCRIPTS)
def test_scripts_are_valid_bash(script):
    subprocess.run(["bash", "-n", str(REPO / script)], check=True)


@pytest.mark.slow
@pytest.mark.shared
@pytest.mark.skipif(not MAPS.is_dir(), reason="needs ../shared data")
def test_gpu_train_runs_without_simpleitk(tmp_path):
    from CondNetLogic.weights import load_weights

    maps = tmp_path / "maps"
    maps.mkdir()
    for name in ("training_seg_01.nii.gz", "training_seg_17.nii.gz", "training_seg_18.nii.gz", "labels_to_tissue.csv"):
        shutil.copy(MAPS / name, maps / name)
    blocker = tmp_path / "blocker"
    blocker.mkdir()
    (blocker / "sitecustomize.py").write_text(BLOCKER)
    out = tmp_path / "out"
    env = dict(os.environ, OUT=str(out), PYTHON=sys.executable, MAPS=str(maps), PAIRS="1", EPOCHS="1", MINUTES="1",
               EXTRA="--slices-per-epoch 8 --val-slices 4 --size 128", WHEELS=str(tmp_path / "none"),
               PYTHONPATH=str(blocker), TMPDIR=str(tmp_path))
    result = subprocess.run(["bash", str(REPO / "scripts" / "gpu_train.sh")], env=env, capture_output=True, text=True,
                            timeout=600)
    summary = (out / "summary.md").read_text()
    assert result.returncode == 0, summary + result.stderr
    for direction in ("axial", "sagittal", "coronal"):
        assert f"{direction}: best validation loss" in summary
        assert "blocked by the test" not in (out / f"train_{direction}.log").read_text()
    weights = load_weights(out / "condnet-t1t2-A-gpu.safetensors")
    assert sorted(weights.state_dicts) == ["axial", "coronal", "sagittal"]
