"""Tests for CondNetLogic.training: loss, presets, a tiny end-to-end run, resume, determinism, outputs."""
from __future__ import annotations

import csv
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from _condnet_data import MODEL_SIZE, write_training_set

from CondNetLogic.conductivity import TABLES
from CondNetLogic.errors import Cancelled
from CondNetLogic.network import CondNet, CondNetConfig
from CondNetLogic.training import (
    GraphedTrainStep,
    PRESETS,
    TrainingConfig,
    deep_supervision_loss,
    make_optimiser,
    make_train_step,
    scale_weights,
    scheduled_lr,
    select_device,
    train,
    train_step,
    training_autocast_dtype,
    with_overrides,
)
from CondNetLogic.weights import load_weights

NET = CondNetConfig(depth=3)
TINY = TrainingConfig(epochs=2, slices_per_epoch=8, val_slices=4, size=MODEL_SIZE, seed=3)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def training_set(tmp_path_factory):
    return write_training_set(tmp_path_factory.mktemp("data") / "set")


def test_loss_uses_pooled_targets_with_documented_weights():
    target = torch.rand(2, 1, 8, 8) * 0.9
    fine = torch.zeros(2, 1, 8, 8)
    coarse = torch.zeros(2, 1, 4, 4)
    bce = torch.nn.functional.binary_cross_entropy_with_logits
    expected = (2 / 3) * bce(fine, target) + (1 / 3) * bce(coarse, torch.nn.functional.avg_pool2d(target, 2))
    torch.testing.assert_close(deep_supervision_loss([fine, coarse], target), expected)
    assert scale_weights(2) == pytest.approx([2 / 3, 1 / 3])
    with pytest.raises(ValueError, match="2 maps but 1 weights"):
        deep_supervision_loss([fine, coarse], target, weights=[1.0])


def test_l1_loss_is_the_scale_weighted_mean_absolute_error_of_the_sigmoid():
    target = torch.rand(2, 1, 8, 8) * 0.9
    fine, coarse = torch.randn(2, 1, 8, 8), torch.randn(2, 1, 4, 4)
    pooled = torch.nn.functional.avg_pool2d(target, 2)
    expected = (2 / 3) * (fine.sigmoid() - target).abs().mean() + (1 / 3) * (coarse.sigmoid() - pooled).abs().mean()
    torch.testing.assert_close(deep_supervision_loss([fine, coarse], target, kind="l1"), expected)
    with pytest.raises(ValueError, match="kind"):
        deep_supervision_loss([fine, coarse], target, kind="l2")
    with pytest.raises(ValueError, match="loss must be one of"):
        TrainingConfig(loss="mse")


def test_l1_is_minimal_at_the_median_where_bce_is_minimal_at_the_mean():
    """The reason for ``loss="l1"``: a voxel that is GM (level 0.045) in 3 of 5 images and CSF (0.9) in 2."""
    levels = torch.tensor([0.045, 0.045, 0.045, 0.9, 0.9]).reshape(5, 1, 1, 1)
    best = {}
    for kind in ("bce", "l1"):
        logit = torch.zeros(1, 1, 1, 1, requires_grad=True)
        optimiser = torch.optim.Adam([logit], lr=0.05)
        for _ in range(600):
            optimiser.zero_grad()
            deep_supervision_loss([logit.expand(5, 1, 1, 1)], levels, weights=[1.0], kind=kind).backward()
            optimiser.step()
        best[kind] = float(logit.detach().sigmoid())
    assert best["bce"] == pytest.approx(levels.mean().item(), abs=0.01)  # 0.387: a GM/CSF blend
    assert best["l1"] == pytest.approx(0.045, abs=0.01)  # the likelier tissue's level


def test_train_step_updates_and_rejects_a_non_finite_loss():
    torch.manual_seed(0)
    model = CondNet(NET)
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-3)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    x = torch.rand(2, 2, 32, 32)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(FloatingPointError, match="nan"):
        train_step(model, optimiser, scaler, x, torch.full((2, 1, 32, 32), float("nan")))
    for key, value in model.state_dict().items():
        if value.is_floating_point() and "running" not in key:  # BN statistics move in any forward pass
            torch.testing.assert_close(value, before[key])
    loss = train_step(model, optimiser, scaler, x, torch.rand(2, 1, 32, 32) * 0.9)
    assert isinstance(loss, float)
    assert np.isfinite(loss)
    assert not torch.equal(model.decoder_1.level_1.map.weight, before["decoder_1.level_1.map.weight"])


def test_cpu_step_in_bfloat16_channels_last_learns():
    """bfloat16 autocast on a channels-last CPU model (what training uses on CPUs with native bfloat16)."""
    torch.manual_seed(0)
    model = CondNet(NET).to(memory_format=torch.channels_last)
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-3)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    x = torch.rand(4, 2, 32, 32).contiguous(memory_format=torch.channels_last)
    y = torch.rand(4, 1, 32, 32) * 0.9
    losses = [train_step(model, optimiser, scaler, x, y, "l1", torch.bfloat16) for _ in range(20)]
    assert all(np.isfinite(losses))
    assert losses[-1] < 0.8 * losses[0]


@pytest.mark.parametrize(("native", "amp", "expected"), [(True, True, "bfloat16 autocast"),
                                                         (True, False, "float32"), (False, True, "float32")])
def test_cpu_training_precision(training_set, tmp_path, monkeypatch, caplog, native, amp, expected):
    import CondNetLogic.inference as inference

    monkeypatch.setattr(inference, "cpu_has_native_bfloat16", lambda: native)
    config = with_overrides(TINY, epochs=1, amp=amp)
    with caplog.at_level("INFO", logger="CondNetLogic.training"):
        result = train(training_set, tmp_path / "run", weights_path=tmp_path / "w.safetensors", network_config=NET,
                       config=config, directions=["axial"], device="cpu", show_bar=False)
    assert f"axial: training in {expected} on cpu" in caplog.text
    assert np.isfinite(result.history["axial"][-1]["train_loss"])
    assert load_weights(result.weights_path).header["training"]["config"]["amp"] is amp


@pytest.mark.gpu
def test_cuda_step_with_mixed_precision_learns():
    """float16 autocast with gradient scaling on a real GPU: the loss falls on a fixed batch."""
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    torch.manual_seed(0)
    model = CondNet(NET).cuda()
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-3)
    scaler = torch.amp.GradScaler("cuda")
    x = torch.rand(4, 2, 64, 64, device="cuda")
    y = torch.rand(4, 1, 64, 64, device="cuda") * 0.9
    losses = [train_step(model, optimiser, scaler, x, y) for _ in range(20)]
    assert all(np.isfinite(losses))
    assert losses[-1] < losses[0]


@pytest.mark.parametrize(("capability", "expected"), [((9, 0), torch.bfloat16), ((7, 5), torch.float16)])
def test_cuda_trains_in_bfloat16_where_the_device_has_it(monkeypatch, capability, expected):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    assert training_autocast_dtype(torch.device("cuda")) == expected
    assert training_autocast_dtype(torch.device("cuda"), amp=False) is None


def test_the_cpu_steps_eagerly_with_the_plain_adam():
    model = CondNet(NET)
    optimiser = make_optimiser(model, 1e-3, torch.device("cpu"))
    assert not optimiser.defaults["fused"]
    step = make_train_step(model, optimiser, torch.amp.GradScaler("cuda", enabled=False))
    assert not isinstance(step, GraphedTrainStep)
    assert np.isfinite(step(torch.rand(2, 2, 32, 32), torch.rand(2, 1, 32, 32) * 0.9))


@pytest.mark.gpu
def test_graphed_step_computes_what_the_eager_step_does(monkeypatch):
    """CUDA graph replays against eager steps: the same losses, parameters and batch-norm statistics over full and
    partial batches and a changing learning rate; a NaN loss raises and updates nothing.

    Full float32 (no TF32) and SGD: Adam divides each update by the gradient's running scale, so rounding-level
    differences between the convolution algorithms of the two runs would show in parameters with tiny gradients.
    """
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    monkeypatch.setattr(torch.backends.cudnn, "deterministic", True)
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    cuda = torch.device("cuda")
    assert make_optimiser(CondNet(NET).to(cuda), 1e-3, cuda).defaults["fused"]

    def build():
        torch.manual_seed(0)
        model = CondNet(NET).to(cuda)
        return model, torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)

    eager_model, eager_optimiser = build()
    graph_model, graph_optimiser = build()
    graphed = make_train_step(graph_model, graph_optimiser, torch.amp.GradScaler("cuda", enabled=False))
    assert isinstance(graphed, GraphedTrainStep)
    no_scaling = torch.amp.GradScaler("cuda", enabled=False)
    generator = torch.Generator(device=cuda).manual_seed(1)
    for step, batch in enumerate([4, 4, 3, 4, 3]):
        x = torch.rand(batch, 2, 64, 64, device=cuda, generator=generator)
        y = torch.rand(batch, 1, 64, 64, device=cuda, generator=generator) * 0.9
        for optimiser in (eager_optimiser, graph_optimiser):
            for group in optimiser.param_groups:
                group["lr"] = 0.05 / (step + 1)
        expected = train_step(eager_model, eager_optimiser, no_scaling, x, y)
        assert graphed(x, y) == pytest.approx(expected, rel=1e-5)
    assert len(graphed.graphs) == 2
    eager_state, graph_state = eager_model.state_dict(), graph_model.state_dict()
    for name, value in eager_state.items():
        torch.testing.assert_close(graph_state[name], value, rtol=1e-4, atol=1e-6)
    before = {name: value.clone() for name, value in graph_state.items()}
    with pytest.raises(FloatingPointError, match="nan"):
        graphed(torch.full((4, 2, 64, 64), float("nan"), device=cuda), torch.zeros(4, 1, 64, 64, device=cuda))
    for name, value in graph_model.named_parameters():
        torch.testing.assert_close(value, before[name], rtol=0, atol=0)


def test_presets_and_config_validation():
    paper = PRESETS["paper"]
    assert (paper.epochs, paper.batch_size, paper.val_fraction, paper.slices_per_epoch) == (50, 4, 0.1, None)
    assert not paper.augmentation.active
    assert PRESETS["cpu"].epochs < paper.epochs
    assert TrainingConfig.from_dict(PRESETS["cpu"].to_dict()) == PRESETS["cpu"]
    assert with_overrides(paper, epochs=3, seed=None).epochs == 3
    with pytest.raises(ValueError, match="epochs must be a positive int"):
        TrainingConfig(epochs=0)
    for seed in (-1, 1.5, True):  # refused before the training set is read (train --seed -1)
        with pytest.raises(ValueError, match="seed must be a non-negative int"):
            TrainingConfig(seed=seed)
    with pytest.raises(ValueError, match="neither .A., .B. nor a readable table file"):
        TrainingConfig(tables=("Z",))
    with pytest.raises(ValueError, match="device must be"):
        select_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            select_device("cuda")


def test_cosine_schedule_decays_to_zero_over_the_run(training_set, tmp_path):
    cosine = with_overrides(TINY, learning_rate=1e-3, lr_schedule="cosine")
    assert scheduled_lr(cosine, 0, 10) == pytest.approx(1e-3)
    assert scheduled_lr(cosine, 5, 10) == pytest.approx(5e-4)
    assert scheduled_lr(cosine, 10, 10) == pytest.approx(0.0, abs=1e-12)
    assert scheduled_lr(TINY, 7, 10) == TINY.learning_rate
    with pytest.raises(ValueError, match="lr_schedule"):
        TrainingConfig(lr_schedule="linear")
    result = train(training_set, tmp_path / "run", weights_path=tmp_path / "w.safetensors", network_config=NET,
                   config=cosine, directions=["axial"], device="cpu", show_bar=False)
    steps = result.history["axial"][-1]["steps"]
    checkpoint = torch.load(tmp_path / "run" / "axial" / "checkpoint.pt", weights_only=True)
    last_lr = checkpoint["optimizer"]["param_groups"][0]["lr"]
    assert last_lr == pytest.approx(scheduled_lr(cosine, cosine.epochs * steps - 1, cosine.epochs * steps))
    assert last_lr < 0.5 * cosine.learning_rate
    assert load_weights(result.weights_path).header["training"]["config"]["lr_schedule"] == "cosine"


def test_tiny_run_resume_and_outputs(training_set, tmp_path):
    out = tmp_path / "run"
    result = train(training_set, out, weights_path=tmp_path / "w.safetensors", network_config=NET, config=TINY,
                   directions=["axial"], device="cpu", show_bar=False)
    history = result.history["axial"]
    assert [row["epoch"] for row in history] == [1, 2]
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    with open(out / "axial" / "history.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [float(r["train_loss"]) for r in rows] == pytest.approx([r["train_loss"] for r in history])
    assert (out / "loss_curves.png").stat().st_size > 1000
    weights = load_weights(result.weights_path)
    assert weights.directions == ("axial",)
    best = min(history, key=lambda r: r["val_subject_loss"])
    assert weights.header["training"]["best_epoch"] == {"axial": best["epoch"]}
    assert weights.header["training"]["data"]["train"] == ["s1", "s2"]

    # Resume: two more epochs continue from the checkpoint; an uninterrupted 4-epoch run gives the same model.
    longer = with_overrides(TINY, epochs=4)
    with pytest.raises(ValueError, match=r"other settings than this run: training.epochs: 2 -> 4;"):
        train(training_set, out, weights_path=tmp_path / "w4.safetensors", network_config=NET, config=longer,
              directions=["axial"], device="cpu", show_bar=False)
    # The same settings on another training set (here: the split swapped) are refused too.
    swapped = write_training_set(tmp_path / "swapped", train=(3,), val=(1, 2))
    with pytest.raises(ValueError, match="split_sha256"):
        train(swapped, out, weights_path=tmp_path / "w5.safetensors", network_config=NET, config=TINY,
              directions=["axial"], device="cpu", show_bar=False)
    with pytest.raises(FileNotFoundError, match="must be a training-set folder"):
        train(tmp_path / "nothing", out, weights_path=tmp_path / "w6.safetensors", network_config=NET, config=TINY)


def test_each_epoch_draws_its_slices_in_another_order(training_set, tmp_path, monkeypatch):
    """The epoch is part of the shuffle's seed: epochs 1 and 2 of a TINY run train on other slice orders."""
    from CondNetLogic import training

    drawn = []  # (dataset, slice positions) of every prefetch: the training set's first, then validation sets
    prefetched = training.prefetched_batches

    def recording(dataset, chunks, **kwargs):
        drawn.append((dataset, [int(i) for chunk in chunks for i in chunk]))
        return prefetched(dataset, chunks, **kwargs)

    monkeypatch.setattr(training, "prefetched_batches", recording)
    train(training_set, tmp_path / "run", weights_path=tmp_path / "w.safetensors", network_config=NET, config=TINY,
          directions=["axial"], device="cpu", show_bar=False)
    train_set = drawn[0][0]
    orders = [positions for dataset, positions in drawn if dataset is train_set]
    assert len(orders) == 2
    assert all(len(order) == TINY.slices_per_epoch for order in orders)
    assert orders[0] != orders[1]


def test_resume_matches_uninterrupted_run(training_set, tmp_path):
    def cancel_in_epoch_two() -> bool:  # true from the first step after epoch 1's checkpoint
        return (tmp_path / "a" / "coronal" / "checkpoint.pt").exists()

    kwargs = {"network_config": NET, "config": TINY, "directions": ["coronal"], "device": "cpu", "show_bar": False}
    with pytest.raises(Cancelled):
        train(training_set, tmp_path / "a", weights_path=tmp_path / "a.safetensors", cancel=cancel_in_epoch_two,
              **kwargs)
    assert (tmp_path / "a" / "coronal" / "checkpoint.pt").exists()
    resumed = train(training_set, tmp_path / "a", weights_path=tmp_path / "a.safetensors", **kwargs)
    straight = train(training_set, tmp_path / "b", weights_path=tmp_path / "b.safetensors", **kwargs)
    assert [r["train_loss"] for r in resumed.history["coronal"]] == pytest.approx(
        [r["train_loss"] for r in straight.history["coronal"]], rel=1e-5)
    a, b = load_weights(resumed.weights_path), load_weights(straight.weights_path)
    for key, tensor in a.state_dicts["coronal"].items():
        torch.testing.assert_close(tensor, b.state_dicts["coronal"][key], rtol=1e-4, atol=1e-5)
    with pytest.raises(FileExistsError, match="exists"):
        train(training_set, tmp_path / "a", weights_path=tmp_path / "a.safetensors", **kwargs)


def test_checkpoint_from_before_a_setting_existed_resumes_with_its_default(training_set, tmp_path):
    """Checkpoints written before ``loss`` and ``init_weights_sha256`` existed ran with their defaults."""
    def cancel_in_epoch_two() -> bool:
        return (tmp_path / "run" / "axial" / "checkpoint.pt").exists()

    kwargs = {"network_config": NET, "directions": ["axial"], "device": "cpu", "show_bar": False,
              "weights_path": tmp_path / "w.safetensors"}
    with pytest.raises(Cancelled):
        train(training_set, tmp_path / "run", config=TINY, cancel=cancel_in_epoch_two, **kwargs)
    path = tmp_path / "run" / "axial" / "checkpoint.pt"
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    identity = json.loads(checkpoint["identity"])
    assert identity["training"].pop("loss") == "bce"
    assert identity["training"].pop("init_weights_sha256") is None
    torch.save({**checkpoint, "identity": json.dumps(identity)}, path)

    with pytest.raises(ValueError, match=r"training\.loss: 'bce' -> 'l1'"):  # the filled-in default is compared
        train(training_set, tmp_path / "run", config=replace(TINY, loss="l1"), **kwargs)
    result = train(training_set, tmp_path / "run", config=TINY, **kwargs)
    assert [row["epoch"] for row in result.history["axial"]] == list(range(1, TINY.epochs + 1))


def test_failed_checkpoint_write_keeps_the_last_checkpoint_and_leaves_no_temporary_file(
        training_set, tmp_path, monkeypatch):
    real_save = torch.save
    folder = tmp_path / "run" / "axial"
    saved = []

    def save_once_then_fail(obj, target, *args, **kwargs):  # epoch 2's checkpoint hits a full disk
        if not saved:
            saved.append(obj["epoch"])
            return real_save(obj, target, *args, **kwargs)
        saved.append((folder / "checkpoint.pt").read_bytes())
        Path(target).write_bytes(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", save_once_then_fail)
    with pytest.raises(OSError, match="No space left"):
        train(training_set, tmp_path / "run", weights_path=tmp_path / "w.safetensors", network_config=NET,
              config=TINY, directions=["axial"], device="cpu", show_bar=False)
    assert len(saved) == 2
    assert (folder / "checkpoint.pt").read_bytes() == saved[1]
    assert torch.load(folder / "checkpoint.pt", weights_only=True)["epoch"] == 1
    assert sorted(p.name for p in folder.iterdir()) == ["checkpoint.pt", "history.csv"]
    assert not (tmp_path / "w.safetensors").exists()


def test_failed_history_write_keeps_the_file_and_leaves_no_temporary_file(tmp_path):
    from CondNetLogic.training import _write_history

    path = tmp_path / "history.csv"
    _write_history(path, [{"epoch": 1, "train_loss": 0.5}])
    before = path.read_bytes()
    # The second row has a column the first lacks: csv.DictWriter fails after the header and first row are written.
    with pytest.raises(ValueError, match="fields not in fieldnames"):
        _write_history(path, [{"epoch": 1, "train_loss": 0.5}, {"epoch": 2, "train_loss": 0.4, "extra": 1}])
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["history.csv"]


@pytest.mark.gpu
def test_run_started_on_cpu_resumes_on_cuda_with_mixed_precision(request, tmp_path):
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    training_set = request.getfixturevalue("training_set")
    kwargs = {"network_config": NET, "config": TINY, "directions": ["axial"], "show_bar": False}
    with pytest.raises(Cancelled):
        train(training_set, tmp_path / "a", weights_path=tmp_path / "a.safetensors", device="cpu",
              cancel=lambda: (tmp_path / "a" / "axial" / "checkpoint.pt").exists(), **kwargs)
    resumed = train(training_set, tmp_path / "a", weights_path=tmp_path / "a.safetensors", device="cuda", **kwargs)
    assert [r["epoch"] for r in resumed.history["axial"]] == [1, 2]


def test_directions_trained_separately_are_combined(training_set, tmp_path):
    kwargs = {"network_config": NET, "config": with_overrides(TINY, epochs=1), "device": "cpu", "show_bar": False}
    train(training_set, tmp_path / "run", weights_path=tmp_path / "sag.safetensors", directions=["sagittal"],
          **kwargs)
    both = train(training_set, tmp_path / "run", weights_path=tmp_path / "both.safetensors", directions=["axial"],
                 **kwargs)
    assert load_weights(both.weights_path).directions == ("sagittal", "axial")


def test_directions_trained_by_parallel_commands_are_combined(training_set, tmp_path):
    from CondNetLogic.cli import main

    kwargs = {"network_config": NET, "config": with_overrides(TINY, epochs=1), "device": "cpu", "show_bar": False}
    run = tmp_path / "run"
    with pytest.raises(ValueError, match="no finished checkpoint"):
        train(training_set, run, weights_path=tmp_path / "none.safetensors", directions=["axial"],
              combine_only=True, **kwargs)
    options = ["train", "--data", str(training_set), "--out", str(run), "--depth", "3", "--epochs", "1",
               "--slices-per-epoch", "8", "--val-slices", "4", "--size", str(MODEL_SIZE), "--seed", "3",
               "--device", "cpu", "--quiet", "--combine", "--directions", "sagittal", "axial"]
    # The README's recipe: one command per direction, no --weights, then --combine.
    for direction in ("sagittal", "axial"):
        assert main(options[:-4] + ["--directions", direction]) == 0
    alone = {d: load_weights(run / f"condnet_{d}.safetensors") for d in ("sagittal", "axial")}
    assert main(options) == 0
    both = load_weights(run / "condnet.safetensors")
    assert set(both.directions) == {"sagittal", "axial"}
    for direction, weights in alone.items():
        for key, tensor in weights.state_dicts[direction].items():
            torch.testing.assert_close(both.state_dicts[direction][key], tensor)
    assert set(both.header["training"]["best_epoch"]) == {"sagittal", "axial"}
    # Other settings (another seed) match no checkpoint: nothing is written.
    assert main(options[:-4] + ["--seed", "4", "--combine", "--directions", "axial", "--weights",
                                str(tmp_path / "other.safetensors")]) != 0
    assert not (tmp_path / "other.safetensors").exists()
    # Nor does another loss: the checkpoints were trained with BCE, which the header records.
    assert both.header["training"]["config"]["loss"] == "bce"
    assert main(options[:-4] + ["--loss", "l1", "--combine", "--directions", "axial", "--weights",
                                str(tmp_path / "l1.safetensors")]) != 0
    assert not (tmp_path / "l1.safetensors").exists()


def test_register_outside_resources_is_refused_before_training(tmp_path, monkeypatch, capsys):
    """`train --register ID` without --weights below Resources/ would fail after the whole run: it fails first."""
    import CondNetLogic.training as training
    from CondNetLogic.cli import main

    def must_not_train(*args, **kwargs):
        raise AssertionError("training started")

    monkeypatch.setattr(training, "train", must_not_train)
    code = main(["train", "--data", str(tmp_path / "set"), "--out", str(tmp_path / "run"), "--register", "mine"])
    assert code != 0
    err = capsys.readouterr().err
    assert "--register mine" in err
    assert "must lie below" in err
    assert "pass --weights" in err


def test_fine_tuning_starts_from_the_given_weights(training_set, tmp_path):
    kwargs = {"network_config": NET, "directions": ["axial"], "device": "cpu", "show_bar": False}
    first = train(training_set, tmp_path / "a", weights_path=tmp_path / "a.safetensors",
                  config=with_overrides(TINY, epochs=1), **kwargs)
    start = load_weights(first.weights_path)
    # A learning rate of 1e-12 keeps every parameter where the given weights put it.
    tuned = train(training_set, tmp_path / "b", weights_path=tmp_path / "b.safetensors",
                  config=with_overrides(TINY, epochs=1, learning_rate=1e-12), init_weights=first.weights_path,
                  **kwargs)
    result = load_weights(tuned.weights_path)
    parameters = [name for name, _ in result.build("axial").named_parameters()]
    for name in parameters:
        torch.testing.assert_close(result.state_dicts["axial"][name], start.state_dicts["axial"][name],
                                   atol=1e-6, rtol=0)
    assert result.header["training"]["config"]["init_weights_sha256"] == start.sha256
    with pytest.raises(ValueError, match="no network for the directions"):
        train(training_set, tmp_path / "c", weights_path=tmp_path / "c.safetensors", config=TINY,
              init_weights=first.weights_path, **{**kwargs, "directions": ["coronal"]})
    with pytest.raises(ValueError, match="differs"):
        train(training_set, tmp_path / "d", weights_path=tmp_path / "d.safetensors", config=TINY,
              init_weights=first.weights_path, **{**kwargs, "network_config": CondNetConfig(depth=2)})


def test_time_limit_stops_early_and_is_recorded(training_set, tmp_path):
    result = train(training_set, tmp_path / "run", weights_path=tmp_path / "w.safetensors", network_config=NET,
                   config=with_overrides(TINY, epochs=5), directions=["axial"], device="cpu", show_bar=False,
                   max_minutes=1e-6)
    assert len(result.history["axial"]) == 1
    header = load_weights(result.weights_path).header
    assert header["training"]["stopped_early"] == {"axial": True}
    resumed = train(training_set, tmp_path / "run", weights_path=tmp_path / "w.safetensors", network_config=NET,
                    config=with_overrides(TINY, epochs=5), directions=["axial"], device="cpu", show_bar=False,
                    overwrite=True)  # a new call continues with a fresh time budget
    assert [row["epoch"] for row in resumed.history["axial"]] == [1, 2, 3, 4, 5]
    with pytest.raises(ValueError, match="max_minutes"):
        train(training_set, tmp_path / "x", weights_path=tmp_path / "x.safetensors", network_config=NET,
              config=TINY, max_minutes=0)


def test_bad_arguments(training_set, tmp_path):
    with pytest.raises(ValueError, match="directions must be"):
        train(training_set, tmp_path, weights_path=tmp_path / "w.safetensors", network_config=NET, config=TINY,
              directions=["oblique"])
    with pytest.raises(ValueError, match="V=2 outputs"):
        train(training_set, tmp_path, weights_path=tmp_path / "w.safetensors",
              network_config=CondNetConfig(depth=3, out_channels=2), config=TINY)
    with pytest.raises(ValueError, match=r"at least 2\*\*depth = 8"):
        train(training_set, tmp_path, weights_path=tmp_path / "w.safetensors", network_config=NET,
              config=with_overrides(TINY, size=4))
    with pytest.raises(ValueError, match="must be a multiple"):
        train(training_set, tmp_path, weights_path=tmp_path / "w.safetensors", network_config=CondNetConfig(depth=6),
              config=with_overrides(TINY, size=48))
    partial = tmp_path / "partial.json"
    partial.write_text('{"name": "partial", "values": {"wm": 0.1, "gm": 0.2}}')
    with pytest.raises(ValueError, match=r"'partial' has no value for tissues \['csf'"):
        train(training_set, tmp_path / "p", weights_path=tmp_path / "p.safetensors", network_config=NET,
              config=with_overrides(TINY, tables=(str(partial),)), directions=["axial"], device="cpu")
    (tmp_path / "w.safetensors").write_bytes(b"")
    with pytest.raises(FileExistsError, match="overwrite"):
        train(training_set, tmp_path, weights_path=tmp_path / "w.safetensors", network_config=NET, config=TINY)


ONE = with_overrides(TINY, epochs=1, slices_per_epoch=4)


def test_split_without_a_val_list_trains_and_writes_weights(tmp_path):
    """read_split accepts a split.json without "val"; the weights header must not need it either."""
    root = write_training_set(tmp_path / "set", train=(1, 2), val=())
    split = json.loads((root / "split.json").read_text())
    del split["val"]
    (root / "split.json").write_text(json.dumps(split))
    result = train(root, tmp_path / "run", weights_path=tmp_path / "w.safetensors", network_config=NET, config=ONE,
                   directions=["axial"], device="cpu", show_bar=False)
    assert load_weights(result.weights_path).header["training"]["data"]["val"] == []


@pytest.mark.parametrize(("resume", "config"), [(False, ONE), (True, with_overrides(ONE, learning_rate=5e-4))])
def test_a_later_direction_that_cannot_resume_is_refused_before_any_training(tmp_path, resume, config):
    root = write_training_set(tmp_path / "set")
    out = tmp_path / "run"
    train(root, out, weights_path=tmp_path / "sag.safetensors", network_config=NET, config=ONE,
          directions=["sagittal"], device="cpu", show_bar=False)
    with pytest.raises((FileExistsError, ValueError), match="sagittal"):
        train(root, out, weights_path=tmp_path / "w.safetensors", network_config=NET, config=config,
              directions=["axial", "sagittal"], device="cpu", show_bar=False, resume=resume)
    assert not (out / "axial" / "checkpoint.pt").exists(), "axial was trained before the refusal"


def test_tables_whose_weights_could_not_be_loaded_are_refused_before_training(tmp_path):
    table_file = tmp_path / "table_a.v2.json"  # the table's name becomes the file stem, 'table_a.v2'
    table_file.write_text(json.dumps({"values": dict(TABLES["A"].values)}))
    with pytest.raises(ValueError, match="must be distinct"):
        with_overrides(ONE, tables=("A", "a"))
    with pytest.raises(ValueError, match=r"table_a\.v2"):
        with_overrides(ONE, tables=(str(table_file),))


def test_a_size_the_weights_loader_refuses_is_refused_before_training(tmp_path):
    root = write_training_set(tmp_path / "set", train=(1,), val=())
    with pytest.raises(ValueError, match="size must be 16..1024"):
        train(root, tmp_path / "run", weights_path=tmp_path / "w.safetensors", network_config=NET,
              config=with_overrides(ONE, size=8), directions=["axial"], device="cpu", show_bar=False)
    assert not (tmp_path / "run" / "axial").exists()

