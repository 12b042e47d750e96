"""``condnet demo`` end to end (slow: a 256^3 head, CondNet with tiny untrained weights, two E-field solves)."""
import json

import numpy as np
import pytest

from CondNetLogic.cli import main
from CondNetLogic.conductivity import resource_path
from CondNetLogic.io import read_volume

pytestmark = pytest.mark.slow


@pytest.fixture
def tiny_weights(tmp_path):
    """Random-init depth-3 T1+T2 weights for Table A on a 256^3 model grid (tests the plumbing, not accuracy)."""
    import torch

    from CondNetLogic.conductivity import TABLE_A
    from CondNetLogic.network import CondNet, CondNetConfig
    from CondNetLogic.weights import save_weights

    torch.manual_seed(0)
    config = CondNetConfig(depth=3)
    states = {d: CondNet(config).state_dict() for d in ("axial", "sagittal", "coronal")}
    path = tmp_path / "tiny.safetensors"
    save_weights(path, states, config=config, tables=[TABLE_A], tau=0.1,
                 input_spec={"channels": ["t1", "t2"], "size": 256, "spacing_mm": 1.0, "normalisation": "z"},
                 training={"data": {"train": ["seg01_p0"], "val": []}, "epochs": 0})
    return path


def test_demo_writes_everything_on_the_sample_grid(tmp_path, tiny_weights, monkeypatch, capsys):
    monkeypatch.setenv("CONDNET_CACHE_DIR", str(tmp_path / "cache"))
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--weights", str(tiny_weights), "--device", "cpu"]) == 0
    sample = read_volume(resource_path("sample", "training_seg_18.nii.gz"))
    for name in ("t1", "t2", "conductivity_A", "uncertainty_A", "conductivity_reference_A", "efield_condnet_magnitude"):
        volume = read_volume(out / f"{name}.nii.gz")
        np.testing.assert_allclose(volume.ijk_to_ras, sample.ijk_to_ras, atol=1e-4)
    e_field = read_volume(out / "efield_reference.nii.gz", allow_vector=True)
    assert e_field.array.shape == (*sample.shape, 3)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["coil"]["scalp_point_ras_mm"][0] < -30  # C3 is over the left hemisphere
    for name in ("condnet", "reference"):
        stats = summary["efield"][name]["roi_gm_10mm"]
        assert 0 < stats["mean"] < stats["max"]
        assert summary["efield"][name]["solver"]["converged"]
    assert np.isfinite(summary["generalized_error_brain_percent"])
    assert "GE (paper Eq. 6)" in capsys.readouterr().out
    # A second run into the same folder refuses instead of overwriting.
    assert main(["demo", "--out", str(out), "--weights", str(tiny_weights), "--device", "cpu"]) == 2
