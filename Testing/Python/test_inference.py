"""Tests for CondNetLogic.inference: Eqs. 2-3, grids, errors, out-of-memory fallback, the predict CLI."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from CondNetLogic.conductivity import TABLE_A, TABLE_B, denormalise
from CondNetLogic.errors import Cancelled, WeightsError
from CondNetLogic.inference import _run_slices, predict_conductivity, predict_levels
from CondNetLogic.network import CondNet, CondNetConfig
from CondNetLogic.phantom import make_head_phantom
from CondNetLogic.volume import Volume
from CondNetLogic.weights import load_weights, save_weights
from _condnet_data import nifti_space, set_nifti_space

SIZE = 64


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _weights(path, *, u=2, v=1, tau=0.1):
    config = CondNetConfig(in_channels=u, out_channels=v, depth=3)
    states = {}
    for n, direction in enumerate(("sagittal", "coronal", "axial")):
        torch.manual_seed(n)
        model = CondNet(config)
        with torch.no_grad():  # give each direction a different, non-trivial output level
            model.decoder_1.level_1.map.bias.fill_(0.5 * n - 0.5)
        states[direction] = model.state_dict()
    save_weights(path, states, config=config, tables=[TABLE_A, TABLE_B][:v], tau=tau,
                 input_spec={"channels": ["t1", "t2"][:u], "size": SIZE, "spacing_mm": 1.0, "normalisation": "z"},
                 training={})
    return path


@pytest.fixture(scope="module")
def phantom():
    return make_head_phantom((SIZE,) * 3, seed=2)


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    return load_weights(_weights(tmp_path_factory.mktemp("w") / "w.safetensors"))


def test_eq2_eq3_on_the_model_lattice(phantom, weights):
    from CondNetLogic.preprocessing import prepare_pair

    prediction = predict_conductivity(phantom.t1, phantom.t2, weights=weights, device="cpu", batch_size=8)
    pair = prepare_pair(phantom.t1, phantom.t2, size=SIZE)
    levels = predict_levels(weights, np.stack([pair.t1, pair.t2]), pair.mask)
    sigma = denormalise(np.stack([levels[d][0] for d in weights.directions]), TABLE_A.sigma_max, 0.1)
    expected = np.where(pair.mask, sigma.mean(axis=0), 0)
    # The phantom's 1 mm RAS grid is the model lattice: the way back is an exact copy.
    back = pair.grid.to_reference(expected.astype(np.float32), interpolation="nearest").array
    np.testing.assert_allclose(prediction.conductivity["A"].array, back, rtol=1e-6, atol=1e-6)
    spread = pair.grid.to_reference(np.where(pair.mask, sigma.std(axis=0), 0).astype(np.float32)).array
    np.testing.assert_allclose(prediction.uncertainty["A"].array, spread, rtol=1e-5, atol=1e-6)
    assert prediction.uncertainty["A"].array.max() > 0.01  # the three directions differ by construction
    assert prediction.info["directions"] == ["sagittal", "coronal", "axial"]
    assert prediction.info["weights"]["sha256"] == weights.sha256


def test_eq3_takes_tau_from_the_weights(phantom, weights, tmp_path):
    """The same networks saved with tau = 0.2: C = max(sigma) / (1 - tau) * L is 0.9 / 0.8 of tau = 0.1's."""
    other = load_weights(_weights(tmp_path / "tau.safetensors", tau=0.2))
    assert other.tau == 0.2
    ours = predict_conductivity(phantom.t1, phantom.t2, weights=weights, device="cpu", precision="float32")
    theirs = predict_conductivity(phantom.t1, phantom.t2, weights=other, device="cpu", precision="float32")
    head = ours.head_mask.array > 0
    np.testing.assert_allclose(theirs.conductivity["A"].array[head], 0.9 / 0.8 * ours.conductivity["A"].array[head],
                               rtol=1e-5)


def test_mean_spread_and_members_are_zero_outside_the_mask(weights):
    """Eq. 2-3 on the model grid: every output is 0 outside the head mask, whatever the networks gave there."""
    import torch

    from CondNetLogic.inference import _conductivity_and_spread

    rng = np.random.default_rng(0)
    per_direction = {d: torch.from_numpy(rng.uniform(0.1, 0.9, (1, 4, 5, 6)).astype(np.float32))
                     for d in weights.directions}  # (tables, I, J, K) levels of each direction
    mask = np.zeros((4, 5, 6), dtype=bool)
    mask[1:3, 1:4, 2:5] = True
    mean, sd, members = _conductivity_and_spread(per_direction, weights, mask, keep_directions=True)[0]
    for volume in (mean, sd, *members.values()):
        assert not volume[~mask].any()
        assert volume[mask].min() > 0
    levels = np.stack([per_direction[d][0].numpy() for d in weights.directions])
    np.testing.assert_allclose(mean[mask], denormalise(levels.mean(axis=0), TABLE_A.sigma_max, 0.1)[mask],
                               rtol=1e-6)


def test_result_on_an_lia_t1_grid_and_zero_outside_head(phantom, weights):
    # Re-store the phantom as L-I-A (axes permuted and flipped), like the SynthSeg maps.
    lia = np.array([[-1.0, 0, 0, 0], [0, 0, 1, 0], [0, -1, 0, 0], [0, 0, 0, 1]])
    array = np.transpose(phantom.t1.array, (0, 2, 1))[::-1, ::-1, :]
    affine = phantom.t1.ijk_to_ras @ np.linalg.inv(_permutation_affine())
    t1 = Volume(np.ascontiguousarray(array), affine)
    np.testing.assert_allclose(t1.direction, lia[:3, :3], atol=1e-12)
    prediction = predict_conductivity(t1, phantom.t2, weights=weights, device="cpu")
    sigma = prediction.conductivity["A"]
    assert sigma.same_grid(t1)
    assert sigma.array.dtype == np.float32
    outside = prediction.head_mask.array == 0
    assert outside.any()
    assert not sigma.array[outside].any()
    assert not prediction.uncertainty["A"].array[outside].any()
    assert prediction.head_mask.array.dtype == np.uint8
    reference = predict_conductivity(phantom.t1, phantom.t2, weights=weights, device="cpu")
    expected = np.transpose(reference.conductivity["A"].array, (0, 2, 1))[::-1, ::-1, :]
    np.testing.assert_allclose(sigma.array, expected, atol=1e-5)


def _permutation_affine():
    """Voxel map from RAS-ordered indices to the L-I-A array above: (i, j, k) -> (63 - i, 63 - k, j)."""
    m = np.zeros((4, 4))
    m[0, 0], m[0, 3] = -1, SIZE - 1
    m[1, 2], m[1, 3] = -1, SIZE - 1
    m[2, 1] = 1
    m[3, 3] = 1
    return m


def test_two_tables_and_t1_only_weights(phantom, tmp_path):
    both = predict_conductivity(phantom.t1, phantom.t2, weights=_weights(tmp_path / "v2.safetensors", v=2),
                                device="cpu")
    assert set(both.conductivity) == set(both.uncertainty) == {"A", "B"}
    ratio = TABLE_B.sigma_max / TABLE_A.sigma_max
    assert not np.allclose(both.conductivity["B"].array, both.conductivity["A"].array * ratio)  # own tracks
    t1_only = _weights(tmp_path / "u1.safetensors", u=1)
    result = predict_conductivity(phantom.t1, None, weights=t1_only, device="cpu")
    assert result.info["t2_used"] is False


def test_bad_inputs_raise_clear_errors(phantom, weights, tmp_path):
    with pytest.raises(ValueError, match="take T1 and T2 \\(U=2\\); no T2 was given"):
        predict_conductivity(phantom.t1, None, weights=weights)
    nan = phantom.t1.array.copy()
    nan[3, 3, 3] = np.nan
    with pytest.raises(ValueError, match="T1: 1 of .* voxels are NaN"):
        predict_conductivity(phantom.t1.with_array(nan), phantom.t2, weights=weights)
    with pytest.raises(ValueError, match="empty"):
        predict_conductivity(phantom.t1.with_array(np.zeros(phantom.t1.shape, np.float32)), phantom.t2,
                             weights=weights)
    far = Volume(phantom.t2.array, phantom.t2.ijk_to_ras @ _shift(500.0))
    with pytest.raises(ValueError, match="do not overlap"):
        predict_conductivity(phantom.t1, far, weights=weights)
    with pytest.raises(WeightsError, match="not found"):
        predict_conductivity(phantom.t1, phantom.t2, weights=tmp_path / "missing.safetensors")
    with pytest.raises(ValueError, match="batch_size"):
        predict_conductivity(phantom.t1, phantom.t2, weights=weights, batch_size=0)


def _shift(mm):
    m = np.eye(4)
    m[0, 3] = mm
    return m


def test_t2_on_another_grid_is_resampled(phantom, weights):
    from CondNetLogic.preprocessing import resample_isotropic

    coarse = resample_isotropic(phantom.t2, 2.0)
    assert coarse.shape == (32, 32, 32)
    result = predict_conductivity(phantom.t1, coarse, weights=weights, device="cpu")
    assert result.conductivity["A"].same_grid(phantom.t1)


def test_preprocessing_warnings_reach_the_info(phantom, weights):
    aligned = predict_conductivity(phantom.t1, phantom.t2, weights=weights, device="cpu")
    assert aligned.info["warnings"] == []
    assert np.linalg.norm(aligned.info["t2_head_offset_mm"]) < 0.5
    moved = Volume(phantom.t2.array, _shift(8.0) @ phantom.t2.ijk_to_ras)  # the T2's head 8 mm to the right
    result = predict_conductivity(phantom.t1, moved, weights=weights, device="cpu")
    assert any("look misregistered" in text for text in result.info["warnings"])
    assert result.info["t2_head_offset_mm"][0] > 5.0


def test_progress_and_cancel(phantom, weights):
    seen = []
    predict_conductivity(phantom.t1, phantom.t2, weights=weights, progress=lambda f, m: seen.append(f))
    assert seen[-1] == 1.0
    assert all(b >= a - 1e-9 for a, b in zip(seen, seen[1:]))
    with pytest.raises(Cancelled):
        predict_conductivity(phantom.t1, phantom.t2, weights=weights, cancel=lambda: len(seen) > 0)


@pytest.mark.gpu
def test_cuda_prediction_matches_cpu(phantom, weights):
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    cpu = predict_conductivity(phantom.t1, phantom.t2, weights=weights, device="cpu", precision="float32")
    gpu = predict_conductivity(phantom.t1, phantom.t2, weights=weights, device="cuda")
    assert gpu.info["precision"] == "float16 autocast"
    assert gpu.info["device"].startswith("cuda")
    assert not gpu.info["fallbacks"]
    # float16 autocast on the GPU against float32 on the CPU: CPU float16 autocast moves these weights' result by
    # about 1e-4 S/m, so 1e-2 leaves room for CUDA's other kernels.
    np.testing.assert_allclose(gpu.conductivity["A"].array, cpu.conductivity["A"].array, atol=1e-2)
    np.testing.assert_array_equal(gpu.head_mask.array, cpu.head_mask.array)


def test_float32_levels_match_the_network_run_plainly(phantom, weights):
    """Channels-last on the CPU is a layout change only: the levels equal a plain NCHW float32 forward pass."""
    from CondNetLogic.preprocessing import prepare_pair

    pair = prepare_pair(phantom.t1, phantom.t2, size=SIZE)
    inputs = np.stack([pair.t1, pair.t2])
    state = {"batch_size": 16, "notes": []}
    levels = predict_levels(weights, inputs, pair.mask, precision="float32", state=state)
    assert state["precision"] == "float32"
    k = SIZE // 2
    # Each direction's slices in the training's array order (dataset.SliceDataset): sagittal (A, S), coronal
    # (R, S), axial (R, A); a transposed slice would give another picture to the network.
    for direction, axis in (("sagittal", 0), ("coronal", 1), ("axial", 2)):
        model = weights.build(direction).eval()
        take = [slice(None)] * 4
        take[axis + 1] = k
        with torch.inference_mode():
            plain = torch.sigmoid(model(torch.from_numpy(np.ascontiguousarray(inputs[tuple(take)][None])))).numpy()
        take[0] = slice(None)
        np.testing.assert_allclose(levels[direction][tuple(take)], plain[0], rtol=0, atol=1e-6, err_msg=direction)
        # Every slice that holds head is run (a sigmoid is never 0); the others stay 0.
        in_head = pair.mask.any(axis=tuple(a for a in range(3) if a != axis))
        ran = np.moveaxis(levels[direction][0], axis, 0).reshape(SIZE, -1).any(axis=1)
        np.testing.assert_array_equal(ran, in_head, err_msg=direction)
        assert (levels[direction][0][pair.mask] > 0).all()


@pytest.mark.parametrize("native", [True, False])
def test_auto_precision_uses_bfloat16_only_where_the_cpu_has_it(phantom, weights, monkeypatch, native):
    import CondNetLogic.inference as inference

    monkeypatch.setattr(inference, "cpu_has_native_bfloat16", lambda: native)
    full = predict_conductivity(phantom.t1, phantom.t2, weights=weights, device="cpu", precision="float32")
    auto = predict_conductivity(phantom.t1, phantom.t2, weights=weights, device="cpu")
    assert full.info["precision"] == "float32"
    difference = np.abs(auto.conductivity["A"].array - full.conductivity["A"].array).max()
    if native:
        assert auto.info["precision"] == "bfloat16 autocast"
        # bfloat16 keeps 8 bits of mantissa: these levels move by about 1e-3, a few mS/m of Table A's 2.0 S/m.
        assert 0 < difference < 0.02
    else:
        assert auto.info["precision"] == "float32"
        assert difference == 0


def test_bfloat16_is_offered_on_x86_64_only(monkeypatch):
    import platform

    from CondNetLogic.inference import cpu_has_native_bfloat16

    monkeypatch.setattr(platform, "machine", lambda: "arm64")
    assert cpu_has_native_bfloat16() is False
    monkeypatch.setattr(platform, "machine", lambda: "x86_64")
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: True)
    assert cpu_has_native_bfloat16() is True


def test_unknown_precision_is_refused(phantom, weights):
    with pytest.raises(ValueError, match="precision must be one of"):
        predict_conductivity(phantom.t1, phantom.t2, weights=weights, device="cpu", precision="float16")


class FakeRunner:
    """Identity 'network' (level = first input channel) that runs out of memory on demand."""

    def __init__(self, device="cuda", max_batch_gpu=2, gpu_works=True, error=RuntimeError):
        self.device = torch.device(device) if device == "cpu" else _FakeDevice(device)
        self.max_batch_gpu = max_batch_gpu
        self.gpu_works = gpu_works
        self.error = error
        self.batches = []

    @property
    def can_fall_back(self):
        return self.device.type != "cpu"

    def to_cpu(self):
        self.device = torch.device("cpu")

    def place(self, tensor):
        return tensor  # the fake GPU's tensors live on the CPU

    def forward(self, batch):
        if self.device.type != "cpu" and (not self.gpu_works or len(batch) > self.max_batch_gpu):
            raise self.error("CUDA out of memory. Tried to allocate 2.00 GiB")
        self.batches.append((self.device.type, len(batch)))
        return batch[:, :1].clone()


class _FakeDevice:
    def __init__(self, name):
        self.type = name

    def __str__(self):
        return self.type


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_slices_go_back_where_they_came_from(axis):
    rng = np.random.default_rng(axis)
    inputs = rng.random((2, 8, 8, 8), dtype=np.float32)
    indices = np.array([1, 2, 5])
    state = {"batch_size": 2, "notes": []}
    levels = _run_slices(FakeRunner("cpu"), torch.from_numpy(inputs), axis, indices, 1, state)[0].numpy()
    take = [slice(None)] * 3
    take[axis] = indices
    np.testing.assert_array_equal(levels[0][tuple(take)], inputs[0][tuple(take)])
    take[axis] = [0, 3, 4, 6, 7]
    assert not levels[0][tuple(take)].any()


@pytest.mark.parametrize("error", [RuntimeError, torch.cuda.OutOfMemoryError])
def test_out_of_memory_halves_the_batch_then_uses_the_cpu(error):
    inputs = np.random.default_rng(0).random((1, 6, 6, 6), dtype=np.float32)
    indices = np.arange(6)
    runner = FakeRunner(max_batch_gpu=2, error=error)
    state = {"batch_size": 8, "notes": []}
    levels = _run_slices(runner, torch.from_numpy(inputs), 2, indices, 1, state)[0].numpy()
    np.testing.assert_array_equal(levels[0], inputs[0])
    assert state["batch_size"] == 2
    assert runner.batches == [("cuda", 2)] * 3
    assert [n.split(":")[0] for n in state["notes"]] == ["out of memory on cuda"] * 2

    runner = FakeRunner(gpu_works=False, error=error)
    state = {"batch_size": 2, "notes": []}
    levels = _run_slices(runner, torch.from_numpy(inputs), 0, indices, 1, state)[0].numpy()
    np.testing.assert_array_equal(levels[0], inputs[0])
    assert runner.device.type == "cpu"
    assert "continuing on the CPU" in state["notes"][-1]


def test_volumes_that_do_not_fit_on_the_gpu_go_to_the_cpu():
    class Small(FakeRunner):
        def place(self, tensor):
            if self.device.type != "cpu":
                raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 128.00 MiB")
            return tensor

    inputs = np.random.default_rng(1).random((1, 5, 5, 5), dtype=np.float32)
    runner = Small()
    state = {"batch_size": 4, "notes": []}
    levels = _run_slices(runner, torch.from_numpy(inputs), 1, np.arange(5), 1, state)[0].numpy()
    np.testing.assert_array_equal(levels[0], inputs[0])
    assert runner.batches == [("cpu", 4), ("cpu", 1)]
    assert state["notes"] == ["out of memory on the GPU for the volumes: continuing on the CPU (slower)"]


def test_out_of_memory_averaging_the_directions_on_the_gpu_averages_on_the_cpu(phantom, weights, monkeypatch):
    import CondNetLogic.inference as inference

    expected = predict_conductivity(phantom.t1, phantom.t2, weights=weights, device="cpu", precision="float32")
    real_levels, real_combine = inference._levels_on_device, inference._conductivity_and_spread
    calls = []

    def levels_on_a_gpu(*args, state, **kwargs):
        levels = real_levels(*args, state=state, **kwargs)
        state["device"] = "cuda:0"  # as if the networks had run there
        return levels

    def combine(per_direction, *args, **kwargs):
        calls.append(next(iter(per_direction.values())).device.type)
        if len(calls) == 1:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 64.00 MiB")
        return real_combine(per_direction, *args, **kwargs)

    monkeypatch.setattr(inference, "_levels_on_device", levels_on_a_gpu)
    monkeypatch.setattr(inference, "_conductivity_and_spread", combine)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda *args: None)
    result = predict_conductivity(phantom.t1, phantom.t2, weights=weights, device="cpu", precision="float32")
    assert len(calls) == 2
    assert result.info["fallbacks"] == ["out of memory on the GPU averaging the directions: averaging on the CPU"]
    np.testing.assert_array_equal(result.conductivity["A"].array, expected.conductivity["A"].array)
    np.testing.assert_array_equal(result.uncertainty["A"].array, expected.uncertainty["A"].array)


def test_is_out_of_memory_recognises_torch_and_numpy_errors():
    from CondNetLogic.errors import is_out_of_memory

    assert is_out_of_memory(torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB"))
    assert is_out_of_memory(RuntimeError("DefaultCPUAllocator: can't allocate memory: ... out of memory"))
    assert is_out_of_memory(MemoryError("Unable to allocate 2.00 GiB for an array"))
    assert not is_out_of_memory(RuntimeError("CUDA error: an illegal memory access was encountered"))
    assert not is_out_of_memory(ValueError("out of memory"))


def test_out_of_memory_on_cpu_at_batch_one_is_reported():
    class CpuOom(FakeRunner):
        def forward(self, batch):
            raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate ... out of memory")

    with pytest.raises(RuntimeError, match="out of memory on the CPU with batch size 1"):
        _run_slices(CpuOom("cpu"), torch.zeros((1, 4, 4, 4)), 0, np.arange(4), 1,
                    {"batch_size": 1, "notes": []})

    class Broken(FakeRunner):
        def forward(self, batch):
            raise RuntimeError("shape mismatch")

    with pytest.raises(RuntimeError, match="shape mismatch"):  # other errors are not swallowed
        _run_slices(Broken("cpu"), torch.zeros((1, 4, 4, 4)), 0, np.arange(4), 1,
                    {"batch_size": 4, "notes": []})


def test_predict_cli_writes_volumes_and_sidecar(phantom, tmp_path):
    from CondNetLogic.cli import main
    from CondNetLogic.io import read_volume, write_volume

    write_volume(phantom.t1, tmp_path / "t1.nii.gz")
    write_volume(phantom.t2, tmp_path / "t2.nii.gz")
    set_nifti_space(tmp_path / "t1.nii.gz", 4)  # an MNI152-space T1: the outputs stay in MNI152 space
    weights = _weights(tmp_path / "w.safetensors", v=2)
    args = ["predict", "--t1", str(tmp_path / "t1.nii.gz"), "--t2", str(tmp_path / "t2.nii.gz"),
            "--out", str(tmp_path / "out" / "sigma.nii.gz"), "--weights", str(weights), "--device", "cpu",
            "--precision", "float32"]
    assert main(args) == 0  # creates the output folder
    for name in ("sigma", "sigma_sd", "sigma_B", "sigma_B_sd", "sigma_mask"):
        volume = read_volume(tmp_path / "out" / f"{name}.nii.gz")
        assert volume.same_grid(phantom.t1)
        assert nifti_space(tmp_path / "out" / f"{name}.nii.gz") == (4, 4)
    sidecar = json.loads((tmp_path / "out" / "sigma.json").read_text())
    assert sidecar["weights"]["sha256"] == load_weights(weights).sha256
    assert sidecar["device"] == "cpu"
    assert sidecar["precision"] == "float32"
    assert "networks" in sidecar["timings_s"]
    assert sidecar["units"]["conductivity"] == "S/m"
    assert main(args) == 2  # refuses to overwrite


def test_predict_cli_passes_the_network_options_on(phantom, tmp_path, monkeypatch):
    """--device, --precision, --batch-size and --register reach the prediction (and the sidecar); the head mask is
    the prediction's 0/1 mask."""
    import CondNetLogic.inference as inference
    from CondNetLogic.cli import main
    from CondNetLogic.io import read_volume, write_volume

    seen, real = [], inference.predict_conductivity

    def recording(*args, **kwargs):
        seen.append(dict(kwargs))
        return real(*args, **{**kwargs, "register": False})  # what is passed is under test, not registration

    monkeypatch.setattr(inference, "predict_conductivity", recording)
    write_volume(phantom.t1, tmp_path / "t1.nii.gz")
    write_volume(phantom.t2, tmp_path / "t2.nii.gz")
    weights = _weights(tmp_path / "w.safetensors", v=2)
    assert main(["predict", "--t1", str(tmp_path / "t1.nii.gz"), "--t2", str(tmp_path / "t2.nii.gz"),
                 "--out", str(tmp_path / "sigma.nii.gz"), "--weights", str(weights), "--device", "cpu",
                 "--precision", "float32", "--batch-size", "3", "--register"]) == 0
    assert len(seen) == 1
    assert {key: seen[0][key] for key in ("device", "precision", "batch_size", "register")} == {
        "device": "cpu", "precision": "float32", "batch_size": 3, "register": True}
    assert json.loads((tmp_path / "sigma.json").read_text())["inputs"]["register"] is True
    mask = read_volume(tmp_path / "sigma_mask.nii.gz").array
    assert set(np.unique(mask).tolist()) == {0, 1}
    assert not read_volume(tmp_path / "sigma.nii.gz").array[mask == 0].any()


def test_each_directions_conductivity_is_a_member_of_the_mean_and_sd(phantom, weights):
    prediction = predict_conductivity(phantom.t1, phantom.t2, weights=weights, device="cpu", precision="float32",
                                      keep_directions=True)
    members = prediction.directions["A"]
    assert set(members) == set(weights.directions)
    stack = np.stack([members[d].array for d in weights.directions])
    assert all(members[d].same_grid(phantom.t1) and members[d].array.dtype == np.float32 for d in members)
    assert np.ptp(stack, axis=0).max() > 0.1  # the directions differ (their biases do)
    np.testing.assert_allclose(stack.mean(axis=0), prediction.conductivity["A"].array, atol=1e-5)
    np.testing.assert_allclose(stack.std(axis=0), prediction.uncertainty["A"].array, atol=1e-5)
    assert predict_conductivity(phantom.t1, phantom.t2, weights=weights, device="cpu").directions == {}


def test_predict_cli_saves_the_directions(phantom, tmp_path):
    from CondNetLogic.cli import main
    from CondNetLogic.io import read_volume, write_volume

    write_volume(phantom.t1, tmp_path / "t1.nii.gz")
    write_volume(phantom.t2, tmp_path / "t2.nii.gz")
    weights = _weights(tmp_path / "w.safetensors", v=2)
    args = ["predict", "--t1", str(tmp_path / "t1.nii.gz"), "--t2", str(tmp_path / "t2.nii.gz"), "--weights",
            str(weights), "--device", "cpu", "--precision", "float32", "--save-directions",
            "--out", str(tmp_path / "out" / "sigma.nii.gz")]
    assert main(args) == 0
    outputs = json.loads((tmp_path / "out" / "sigma.json").read_text())["outputs"]["directions"]
    assert set(outputs) == {"A", "B"}
    mean = read_volume(tmp_path / "out" / "sigma_B.nii.gz").array
    members = [read_volume(tmp_path / "out" / f"sigma_B_{d}.nii.gz") for d in ("axial", "sagittal", "coronal")]
    assert [str(tmp_path / "out" / f"sigma_B_{d}.nii.gz") for d in ("axial", "sagittal", "coronal")] == [
        outputs["B"][d] for d in ("axial", "sagittal", "coronal")]
    np.testing.assert_allclose(np.mean([m.array for m in members], axis=0), mean, atol=1e-5)
    (tmp_path / "out2").mkdir()
    (tmp_path / "out2" / "sigma_coronal.nii.gz").write_text("mine")
    assert main([*args[:-1], str(tmp_path / "out2" / "sigma.nii.gz")]) == 2  # refused before the work
    assert sorted(p.name for p in (tmp_path / "out2").iterdir()) == ["sigma_coronal.nii.gz"]


def test_predict_cli_table_writes_that_table_alone(phantom, tmp_path, capsys):
    from CondNetLogic.cli import main
    from CondNetLogic.io import read_volume, write_volume

    write_volume(phantom.t1, tmp_path / "t1.nii.gz")
    write_volume(phantom.t2, tmp_path / "t2.nii.gz")
    weights = _weights(tmp_path / "w.safetensors", v=2)
    common = ["predict", "--t1", str(tmp_path / "t1.nii.gz"), "--t2", str(tmp_path / "t2.nii.gz"),
              "--weights", str(weights), "--device", "cpu", "--precision", "float32"]
    assert main(common + ["--out", str(tmp_path / "both" / "sigma.nii.gz")]) == 0
    assert main(common + ["--out", str(tmp_path / "b" / "sigma.nii.gz"), "--table", "b"]) == 0  # as convert: a, b
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == [
        "sigma.json", "sigma.nii.gz", "sigma_mask.nii.gz", "sigma_sd.nii.gz"]
    for name, expected in (("sigma", "sigma_B"), ("sigma_sd", "sigma_B_sd")):
        np.testing.assert_array_equal(read_volume(tmp_path / "b" / f"{name}.nii.gz").array,
                                      read_volume(tmp_path / "both" / f"{expected}.nii.gz").array)
    assert list(json.loads((tmp_path / "b" / "sigma.json").read_text())["outputs"]["conductivity"]) == ["B"]
    capsys.readouterr()
    assert main(common + ["--out", str(tmp_path / "c" / "sigma.nii.gz"), "--table", "C"]) != 0
    assert "predict table A, B, not C" in capsys.readouterr().err
    assert not (tmp_path / "c").exists()


def _layered_head(inside_out: bool) -> tuple:
    """A 1 mm ball head: skin, skull, CSF shell, GM, WM (or CSF and WM exchanged: inside out)."""
    r = np.linalg.norm(np.indices((96, 96, 96)) - 47.5, axis=0)
    sigma = np.zeros(r.shape, dtype=np.float32)
    for outer, value in ((45, 0.1), (40, 0.02), (35, 2.0), (30, 0.1), (25, 0.07)):
        sigma[r < outer] = value
    if inside_out:
        csf, wm = (r >= 30) & (r < 35), r < 25
        sigma[csf], sigma[wm] = 0.07, 2.0
    return sigma, r < 45


def test_inside_out_conductivity_is_suspect():
    from CondNetLogic.inference import inside_out_score

    head = inside_out_score(*_layered_head(False), 2.0, 1.0)
    assert head["depth_ratio"] < 0.95
    assert head["shallow_fraction"] > 0.5
    assert not head["suspect"]
    swapped = inside_out_score(*_layered_head(True), 2.0, 1.0)
    assert swapped["depth_ratio"] > 1.0
    assert swapped["shallow_fraction"] == 0.0
    assert swapped["suspect"]
    empty = inside_out_score(np.zeros((8, 8, 8), np.float32), np.ones((8, 8, 8), bool), 2.0, 1.0)
    assert not empty["suspect"]
