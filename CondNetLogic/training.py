"""Training CondNet: deep-supervised BCE (or L1), Adam, checkpoints, resume, best-on-validation, loss curves.

One network is trained per slicing direction (paper Sec. IV-A: three networks, axial, sagittal,
coronal).  :func:`train` trains the requested directions one after another in one output folder::

    OUT/<direction>/checkpoint.pt   last epoch: model, optimiser, best model so far, history
    OUT/<direction>/history.csv     per-epoch losses and times
    OUT/loss_curves.png             training and validation losses of every direction (like Fig. 4)
    weights file                    best model of each direction, safetensors + JSON header

Loss
----
Binary cross-entropy with logits between each deep-supervision map and the target normalised
conductivity average-pooled to that map's size (the mean level inside each coarse pixel), summed
over scales with weights ``w_i = 2**-(i-1)`` for level ``i`` (finest = 1, each coarser level half),
divided by their sum so the loss stays on the scale of a single BCE.  Targets are soft labels in
[0, 1 - tau]; BCE is then minimal where the sigmoid equals the target.

``loss="l1"`` (not the paper's) replaces BCE by the mean absolute difference between each sigmoid map and
its pooled target, with the same scale weights.  BCE is minimal at the conditional *mean* level, so where the
image leaves a voxel's tissue uncertain (thin CSF beside grey matter) it predicts a blend of the two
conductivities; L1 is minimal at the conditional *median*, the likelier tissue's value, and its finest term
is the mean absolute error in S/m times ``(1 - tau) / max(sigma)``.

Reproducibility: the model is initialised from ``torch.manual_seed(seed)``; each epoch's slice order
(and subset) is drawn from ``numpy.random.default_rng([seed, epoch, axis])`` and augmentation from
``[seed, epoch, slice]``, so a resumed run sees exactly the slices an uninterrupted run would.
"""
from __future__ import annotations

import contextlib
import csv
import json
import logging
import math
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from ._types import PathLike, Progress
from .conductivity import DEFAULT_TAU, get_table
from .dataset import (
    Augmentation,
    SliceDataset,
    check_table_coverage,
    load_training_set,
    prefetched_batches,
    read_split,
    slice_split,
    subject_slices,
)
from .errors import Cancelled
from .inference import autocast_dtype, precision_name
from .io import file_sha256, replaced_through_temporary
from .weights import DIRECTIONS, MAX_INPUT_SIZE, MIN_INPUT_SIZE, check_table_names, load_weights, save_weights

__all__ = [
    "GraphedTrainStep",
    "LOSSES",
    "LR_SCHEDULES",
    "PRESETS",
    "TrainingConfig",
    "TrainingResult",
    "deep_supervision_loss",
    "make_optimiser",
    "make_train_step",
    "plot_loss_curves",
    "scale_weights",
    "scheduled_lr",
    "select_device",
    "train",
    "train_step",
    "training_autocast_dtype",
    "with_overrides",
]

logger = logging.getLogger(__name__)
_CHECKPOINT_VERSION = 1
#: Threads reading training batches ahead of the step (:func:`~CondNetLogic.dataset.prefetched_batches`).
_LOADER_THREADS = 4


#: Step-size schedules of :class:`TrainingConfig`.
LR_SCHEDULES = ("constant", "cosine")
#: Per-scale training losses (``TrainingConfig.loss``).
LOSSES = ("bce", "l1")


def scheduled_lr(config: TrainingConfig, step: int, total_steps: int) -> float:
    """Adam step size for step ``step`` (0-based) of ``total_steps`` under ``config.lr_schedule``.

    >>> scheduled_lr(TrainingConfig(learning_rate=1e-3, lr_schedule="cosine"), 50, 100)
    0.0005
    """
    if config.lr_schedule == "constant":
        return config.learning_rate
    return 0.5 * config.learning_rate * (1.0 + math.cos(math.pi * step / total_steps))


@dataclass(frozen=True)
class TrainingConfig:
    """Training hyper-parameters.

    Parameters
    ----------
    epochs : int
        Passes over the (sub-sampled) training slices; paper: 50.
    batch_size : int
        Slices per step; paper: 4.
    learning_rate : float
        Adam step size (the paper does not give one; 1e-3 is Adam's default).
    lr_schedule : {"constant", "cosine"}
        ``"cosine"`` lowers the step size from ``learning_rate`` to 0 along a half cosine over all steps of
        ``epochs`` (set per step from the step number, so a resumed run continues the same curve);
        the paper gives none (constant).
    slices_per_epoch : int or None
        Random subset of training slices drawn afresh each epoch; None = all (paper).
    val_slices : int or None
        Fixed random subset of each validation set evaluated per epoch; None = all.
    val_fraction : float
        Share of the training subjects' slices held out for slice-level validation (paper 0.1, 9:1).
    tables : tuple of str
        Table I columns to predict, one output track each (``("A",)`` or ``("A", "B")``).
    tau : float
        Target margin: levels lie in [0, 1 - tau].
    size : int
        Model grid size (slices are ``size`` x ``size``).
    augmentation : Augmentation
        Slice augmentation (all off in the paper preset).
    seed : int
    amp : bool
        Mixed precision (:func:`training_autocast_dtype`): bfloat16 autocast (float32's range: no gradient
        scaling) on CUDA devices that have it and on x86-64 CPUs with native bfloat16, float16 autocast with
        gradient scaling on older CUDA devices, float32 on other CPUs.
    loss : {"bce", "l1"}
        Per-scale loss (see the module notes); paper: ``"bce"``.
    """

    epochs: int = 50
    batch_size: int = 4
    learning_rate: float = 1e-3
    lr_schedule: str = "constant"
    slices_per_epoch: Optional[int] = None
    val_slices: Optional[int] = None
    val_fraction: float = 0.1
    tables: Tuple[str, ...] = ("A",)
    tau: float = DEFAULT_TAU
    size: int = 256
    augmentation: Augmentation = field(default_factory=Augmentation)
    seed: int = 0
    amp: bool = True
    #: sha256 of the weights the networks start from (fine-tuning, ``train(init_weights=...)``); None: random init
    init_weights_sha256: Optional[str] = None
    loss: str = "bce"

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int; got {value!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed must be a non-negative int; got {self.seed!r}")
        for name in ("slices_per_epoch", "val_slices"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ValueError(f"{name} must be None or a positive int; got {value!r}")
        if not (isinstance(self.learning_rate, (int, float)) and math.isfinite(self.learning_rate)
                and self.learning_rate > 0):
            raise ValueError(f"learning_rate must be a positive number; got {self.learning_rate!r}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"lr_schedule must be one of {LR_SCHEDULES}; got {self.lr_schedule!r}")
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}; got {self.loss!r}")
        if not 0 <= self.val_fraction < 1:
            raise ValueError(f"val_fraction must be in [0, 1); got {self.val_fraction}")
        if not 0 <= self.tau < 1:
            raise ValueError(f"tau must be in [0, 1); got {self.tau}")
        tables = (self.tables,) if isinstance(self.tables, str) else tuple(self.tables)
        if not tables:
            raise ValueError("tables must name at least one conductivity table")
        names = []
        for name in tables:
            try:
                names.append(get_table(name).name)
            except (OSError, ValueError) as err:
                raise ValueError(f"tables: {name!r} is neither 'A', 'B' nor a readable table file ({err})") from err
        try:  # refused now, not by load_weights after the training
            check_table_names(names)
        except ValueError as err:
            raise ValueError(f"tables {list(tables)}: {err}; a table file may set its own \"name\"") from err
        object.__setattr__(self, "tables", tables)
        if isinstance(self.augmentation, Mapping):
            object.__setattr__(self, "augmentation", Augmentation.from_dict(self.augmentation))
        if not isinstance(self.augmentation, Augmentation):
            raise TypeError(f"augmentation must be an Augmentation; got {type(self.augmentation).__name__}")

    def to_dict(self) -> dict:
        """JSON-ready dict."""
        data = asdict(self)
        data["tables"] = list(self.tables)
        return data

    @classmethod
    def from_dict(cls, data: Mapping) -> TrainingConfig:
        """Inverse of :meth:`to_dict`."""
        data = dict(data)
        data["tables"] = tuple(data.get("tables", ("A",)))
        return cls(**data)


#: Named presets.  ``paper``: Sec. IV-A (50 epochs, batch 4, every slice, 9:1 split, no augmentation).
#: ``cpu``: the paper network (depth 6, 4..128 channels) sized for a 2-core CPU: 12 epochs of 640 random
#: non-empty slices (160 steps each), validation on 64-slice subsets, light intensity augmentation for
#: robustness to real scans.  Measured (benchmarks/bench_inference.py --train-step): one step at 256x256,
#: batch 4 takes 0.31-0.41 s on an idle 2-core CPU (2 threads), so about 12 min per direction and 40 min
#: for three; on a CPU shared with other jobs (load ~7.5) 1.2 s with 1 thread (2 threads are slower
#: there), so pass ``max_minutes`` (``--max-minutes``) to bound the run.
PRESETS: Dict[str, TrainingConfig] = {
    "paper": TrainingConfig(),
    "cpu": TrainingConfig(
        epochs=12,
        slices_per_epoch=640,
        val_slices=64,
        augmentation=Augmentation(scale=0.1, gamma=0.2, bias=0.2, noise=0.02),
    ),
}


def select_device(device: str = "auto"):
    """``"auto"`` -> CUDA when available, else CPU; ``"cuda"`` without CUDA raises ``ValueError``.

    Apple MPS is not offered: the float16 autocast and out-of-memory fallback paths are untested there.
    """
    import torch

    if device not in ("auto", "cpu", "cuda") and not str(device).startswith("cuda:"):
        raise ValueError(f"device must be 'auto', 'cpu' or 'cuda[:n]'; got {device!r}")
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available (torch {torch.__version__})")
    return torch.device(device)


def scale_weights(levels: int) -> List[float]:
    """Deep-supervision weights ``2**-(i-1)``, i = 1..levels, normalised to sum 1 (finest first).

    >>> scale_weights(3)
    [0.5714285714285714, 0.2857142857142857, 0.14285714285714285]
    """
    raw = [2.0 ** -i for i in range(levels)]
    total = sum(raw)
    return [w / total for w in raw]


def deep_supervision_loss(maps: Sequence, target, weights: Optional[Sequence[float]] = None, kind: str = "bce"):
    """Weighted sum over scales of BCE-with-logits (or, ``kind="l1"``, the mean absolute difference of the
    sigmoid) against the average-pooled target.

    Parameters
    ----------
    maps : sequence of Tensor (B, V, H_i, W_i)
        Logits, finest first (``CondNet(x, deep_supervision=True)``).
    target : Tensor (B, V, H, W)
        Normalised conductivity levels at full size.
    weights : sequence of float, optional
        One per map; :func:`scale_weights` by default.
    kind : {"bce", "l1"}
        Per-scale loss.

    Returns
    -------
    Tensor
        Scalar loss.
    """
    import torch
    from torch.nn import functional as F  # noqa: N812

    if weights is None:
        weights = scale_weights(len(maps))
    if len(weights) != len(maps):
        raise ValueError(f"{len(maps)} maps but {len(weights)} weights")
    if kind not in LOSSES:
        raise ValueError(f"kind must be one of {LOSSES}; got {kind!r}")
    total = 0.0
    for logits, weight in zip(maps, weights):
        factor = target.shape[-1] // logits.shape[-1]
        pooled = F.avg_pool2d(target, factor) if factor > 1 else target
        if kind == "l1":
            term = F.l1_loss(torch.sigmoid(logits.float()), pooled)
        else:
            term = F.binary_cross_entropy_with_logits(logits.float(), pooled)
        total = total + weight * term
    return total


def training_autocast_dtype(device, amp: bool = True):
    """Autocast dtype of training on ``device``, or None for float32.

    Inference's rule (:func:`~CondNetLogic.inference.autocast_dtype`), except that CUDA devices with bfloat16
    (Ampere and later) train in bfloat16 rather than float16: it needs no gradient scaling, so a step can be
    replayed from a CUDA graph (:class:`GraphedTrainStep`).
    """
    import torch

    dtype = autocast_dtype(device, "auto" if amp else "float32")
    if dtype == torch.float16 and torch.cuda.is_available() and torch.cuda.get_device_capability(device)[0] >= 8:
        return torch.bfloat16
    return dtype


def make_optimiser(model, learning_rate: float, device):
    """Adam over ``model``'s parameters; the fused kernel on CUDA (one launch per step instead of dozens)."""
    import torch

    return torch.optim.Adam(model.parameters(), lr=learning_rate, fused=device.type == "cuda")


def train_step(model, optimiser, scaler, x, y, loss: str = "bce", autocast=None) -> float:
    """One optimiser step of the deep-supervised ``loss`` (BCE or L1) on a batch; returns the loss.

    The forward pass runs under ``autocast`` (a torch dtype; default: float16 when ``scaler`` is enabled,
    else none).  An enabled ``scaler`` (``torch.amp.GradScaler``, CUDA) scales the loss against float16
    gradient underflow; the loss itself is computed in float32.

    Raises
    ------
    FloatingPointError
        If the loss is NaN or infinite (nothing is updated then).
    """
    import torch

    if autocast is None and scaler.is_enabled():
        autocast = torch.float16
    optimiser.zero_grad(set_to_none=True)
    with torch.autocast(device_type=x.device.type, dtype=autocast or torch.float32, enabled=autocast is not None):
        maps = model(x, deep_supervision=True)
    value = deep_supervision_loss(maps, y, kind=loss)
    if not torch.isfinite(value):
        raise FloatingPointError(f"loss became {value.item()}")
    scaler.scale(value).backward()
    scaler.step(optimiser)
    scaler.update()
    return value.item()


class GraphedTrainStep:
    """:func:`train_step` on CUDA with the forward pass, the loss and the backward pass replayed from a CUDA graph.

    The paper network's step at batch 4 is a thousand small kernels, which the host launches more slowly than
    the GPU runs them; a graph launches them all at once.  One graph is captured per batch shape (the last
    batch of an epoch may be smaller), after two warm-up passes on a side stream whose batch-norm statistics
    are then restored, so a replay computes what the eager step would.  The gradients live in fixed tensors
    that every graph zeroes and fills; the optimiser steps outside the graph, so the learning-rate schedule
    applies.  Needs an autocast without gradient scaling (bfloat16 or float32).  If a capture fails (an old
    driver, say), this step and the following ones run eagerly, with a warning.
    """

    def __init__(self, model, optimiser, loss: str = "bce", autocast=None) -> None:
        import torch

        if autocast == torch.float16:
            raise ValueError("GraphedTrainStep: float16 needs gradient scaling, which a graph cannot hold; use "
                             "bfloat16 or float32")
        self.model, self.optimiser, self.loss, self.autocast = model, optimiser, loss, autocast
        self.graphs: Optional[dict] = {}  # (x shape, y shape) -> (graph, x, y, loss); None: eager from now on
        self._pool = None
        self._no_scaling = torch.amp.GradScaler("cuda", enabled=False)  # for the eager steps after a failed capture

    def _forward_backward(self, x, y):
        import torch

        self.optimiser.zero_grad(set_to_none=False)
        with torch.autocast(device_type="cuda", dtype=self.autocast or torch.float32,
                            enabled=self.autocast is not None, cache_enabled=False):
            maps = self.model(x, deep_supervision=True)
        value = deep_supervision_loss(maps, y, kind=self.loss)
        value.backward()
        return value.detach()

    def _capture(self, x, y) -> tuple:
        import torch

        for parameter in self.model.parameters():
            if parameter.requires_grad and parameter.grad is None:
                parameter.grad = torch.zeros_like(parameter)
        static_x, static_y = x.clone(), y.clone()
        buffers = [buffer.clone() for buffer in self.model.buffers()]
        side = torch.cuda.Stream(device=x.device)
        side.wait_stream(torch.cuda.current_stream(x.device))
        with torch.cuda.stream(side):
            for _ in range(2):
                self._forward_backward(static_x, static_y)
        torch.cuda.current_stream(x.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self._pool):
            static_loss = self._forward_backward(static_x, static_y)
        self._pool = graph.pool()
        with torch.no_grad():
            for buffer, saved in zip(self.model.buffers(), buffers):
                buffer.copy_(saved)
        return graph, static_x, static_y, static_loss

    def __call__(self, x, y) -> float:
        """One optimiser step on the batch ``(x, y)`` (CUDA tensors); returns the loss.

        Raises
        ------
        FloatingPointError
            If the loss is NaN or infinite (nothing is updated then).
        """

        if self.graphs is None:
            return train_step(self.model, self.optimiser, self._no_scaling, x, y, self.loss, self.autocast)
        key = (tuple(x.shape), tuple(y.shape))
        if key not in self.graphs:
            try:
                self.graphs[key] = self._capture(x, y)
            except RuntimeError as err:
                logger.warning("CUDA graph capture failed (%s): training steps run eagerly (slower)", err)
                self.graphs = None
                return self(x, y)
        graph, static_x, static_y, static_loss = self.graphs[key]
        static_x.copy_(x)
        static_y.copy_(y)
        graph.replay()
        value = static_loss.item()
        if not math.isfinite(value):
            raise FloatingPointError(f"loss became {value}")
        self.optimiser.step()
        return value


def make_train_step(model, optimiser, scaler, loss: str = "bce", autocast=None) -> Callable:
    """``step(x, y) -> loss``: :class:`GraphedTrainStep` on CUDA without gradient scaling, else :func:`train_step`."""
    import functools

    device = next(model.parameters()).device
    if device.type == "cuda" and not scaler.is_enabled():
        return GraphedTrainStep(model, optimiser, loss, autocast)
    return functools.partial(train_step, model, optimiser, scaler, loss=loss, autocast=autocast)


@dataclass
class TrainingResult:
    """What :func:`train` produced."""

    weights_path: Path
    sha256: str
    history: Dict[str, List[dict]]
    best: Dict[str, dict]


def _json_copy(data):
    return json.loads(json.dumps(data))


def _write_history(path: Path, history: List[dict]) -> None:
    if not history:
        return
    with replaced_through_temporary(path) as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(history[0]))
        writer.writeheader()
        writer.writerows(history)


def plot_loss_curves(histories: Mapping[str, List[dict]], path: PathLike) -> Path:
    """Training and validation loss per epoch for each direction (like the paper's Fig. 4), as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    directions = [d for d in histories if histories[d]]
    fig, axes = plt.subplots(1, max(len(directions), 1), figsize=(4.5 * max(len(directions), 1), 3.5), squeeze=False)
    for ax, direction in zip(axes[0], directions):
        rows = histories[direction]
        epochs = [r["epoch"] for r in rows]
        for key, label in (("train_loss", "T"), ("val_slice_loss", "V (slices)"), ("val_subject_loss", "V (subjects)")):
            values = [r[key] for r in rows]
            if all(v is not None and np.isfinite(v) for v in values):
                ax.plot(epochs, values, marker="o", ms=3, label=label)
        ax.set_title(direction)
        ax.set_xlabel("epoch")
        ax.set_ylabel("loss (deep supervision)")
        ax.legend()
        ax.grid(alpha=0.3)
    fig.tight_layout()
    path = Path(path)
    try:
        with replaced_through_temporary(path, ".png") as tmp:  # per-direction runs in parallel share this file
            fig.savefig(tmp, dpi=100)
    finally:
        plt.close(fig)
    return path


def _evaluate(model, dataset: SliceDataset, positions: Sequence[int], batch_size: int, device, autocast,
              loss: str = "bce") -> float:
    """Mean deep-supervision loss over ``positions`` (eval mode, no gradients)."""
    import torch

    if not positions:
        return float("nan")
    model.eval()
    total, count = 0.0, 0
    chunks = [positions[start:start + batch_size] for start in range(0, len(positions), batch_size)]
    with torch.inference_mode(), \
            contextlib.closing(prefetched_batches(dataset, chunks, workers=_LOADER_THREADS)) as batches:
        for x, y in batches:
            x = torch.from_numpy(x).to(device).contiguous(memory_format=torch.channels_last)
            y = torch.from_numpy(y).to(device)
            with torch.autocast(device_type=device.type, dtype=autocast or torch.float32, enabled=autocast is not None):
                maps = model(x, deep_supervision=True)
            total += float(deep_supervision_loss(maps, y, kind=loss)) * len(x)
            count += len(x)
    return total / count


def _val_positions(n: int, limit: Optional[int], seed: int, axis: int) -> List[int]:
    if limit is None or limit >= n:
        return list(range(n))
    return sorted(np.random.default_rng([seed, axis, 7]).choice(n, size=limit, replace=False).tolist())


def _train_direction(
    direction: str,
    subjects: Dict[str, list],
    *,
    network_config,
    config: TrainingConfig,
    out_dir: Path,
    device,
    resume: bool,
    progress: Progress,
    cancel,
    show_bar: bool,
    histories: Dict[str, List[dict]],
    max_minutes: Optional[float],
    data_sha256: str,
    init_state: Optional[Mapping] = None,
) -> dict:
    import torch
    from tqdm.auto import tqdm

    from .network import CondNet

    axis = DIRECTIONS[direction]
    tables = [get_table(name) for name in config.tables]
    train_items, val_items = slice_split(subjects["train"], axis, val_fraction=config.val_fraction, seed=config.seed)
    common = {"tables": tables, "in_channels": network_config.in_channels, "tau": config.tau}
    train_set = SliceDataset(subjects["train"], train_items, augmentation=config.augmentation, seed=config.seed,
                             **common)
    val_slice_set = SliceDataset(subjects["train"], val_items, **common)
    val_subject_set = SliceDataset(subjects["val"], subject_slices(subjects["val"], axis), **common)
    val_slice_pos = _val_positions(len(val_slice_set), config.val_slices, config.seed, axis)
    val_subject_pos = _val_positions(len(val_subject_set), config.val_slices, config.seed, axis)
    logger.info("%s: %d training slices, %d slice-level and %d subject-level validation slices (evaluating %d, %d)",
                direction, len(train_set), len(val_slice_set), len(val_subject_set), len(val_slice_pos),
                len(val_subject_pos))

    torch.manual_seed(config.seed)
    # Channels-last (NHWC) on both devices: oneDNN's preferred layout on the CPU (as in inference), and cuDNN's
    # for bfloat16 on CUDA, where the graphed step at 256 x 256, batch 4, took 5.0 ms against 7.1 ms in NCHW on an
    # H100 (benchmarks/RESULTS.md).
    memory_format = torch.channels_last
    model = CondNet(network_config).to(device=device, memory_format=memory_format)
    if init_state is not None:
        model.load_state_dict(init_state)
    optimiser = make_optimiser(model, config.learning_rate, device)
    autocast = training_autocast_dtype(device, config.amp)
    scaler = torch.amp.GradScaler("cuda", enabled=autocast == torch.float16)
    logger.info("%s: training in %s on %s", direction, precision_name(autocast), device)
    folder = out_dir / direction
    folder.mkdir(parents=True, exist_ok=True)
    checkpoint_path = folder / "checkpoint.pt"
    identity = _identity(network_config, config, direction, data_sha256)
    history: List[dict] = []
    best = {"loss": float("inf"), "epoch": 0, "state": None}
    start_epoch = 1
    stopped_early = False
    checkpoint = _resumable_checkpoint(checkpoint_path, resume, identity, device)
    if checkpoint is not None:
        model.load_state_dict(checkpoint["model"])
        optimiser.load_state_dict(checkpoint["optimizer"])
        if scaler.is_enabled() and checkpoint["scaler"]:  # empty when the run so far had no scaling: a fresh one
            scaler.load_state_dict(checkpoint["scaler"])
        history = json.loads(checkpoint["history"])
        best = {"loss": float(checkpoint["best_loss"]), "epoch": int(checkpoint["best_epoch"]),
                "state": checkpoint["best_state"]}
        start_epoch = int(checkpoint["epoch"]) + 1
        # A run stopped by its time limit continues here with a fresh time budget.
        logger.info("%s: resuming after epoch %d (best %.5f at epoch %d)", direction, start_epoch - 1,
                    best["loss"], best["epoch"])
    histories[direction] = history
    step_once = make_train_step(model, optimiser, scaler, config.loss, autocast)
    n_per_epoch = min(config.slices_per_epoch or len(train_set), len(train_set))
    steps = math.ceil(n_per_epoch / config.batch_size)
    direction_started = time.perf_counter()
    for epoch in range(start_epoch, config.epochs + 1):
        started = time.perf_counter()
        train_set.set_epoch(epoch)
        order = np.random.default_rng([config.seed, epoch, axis]).permutation(len(train_set))[:n_per_epoch]
        model.train()
        running, seen = 0.0, 0
        chunks = [order[step * config.batch_size:(step + 1) * config.batch_size] for step in range(steps)]
        with contextlib.closing(prefetched_batches(train_set, chunks, workers=_LOADER_THREADS)) as batches:
            bar = tqdm(batches, total=steps, desc=f"{direction} {epoch}/{config.epochs}", leave=False,
                       disable=not show_bar, unit="step")
            for step, (x, y) in enumerate(bar):
                if cancel is not None and cancel():
                    raise Cancelled(f"training cancelled in epoch {epoch} of {direction}")
                x = torch.from_numpy(x).to(device).contiguous(memory_format=memory_format)
                y = torch.from_numpy(y).to(device)
                for group in optimiser.param_groups:
                    group["lr"] = scheduled_lr(config, (epoch - 1) * steps + step, config.epochs * steps)
                try:
                    loss = step_once(x, y)
                except FloatingPointError as err:
                    raise FloatingPointError(f"{direction}: {err} at epoch {epoch}, step {step + 1}") from err
                running += loss * len(x)
                seen += len(x)
                bar.set_postfix(loss=f"{running / seen:.4f}")
                if progress is not None:
                    progress((epoch - 1 + (step + 1) / steps) / config.epochs,
                             f"{direction}: epoch {epoch}/{config.epochs}, loss {running / seen:.4f}")
            bar.close()
        val_slice = _evaluate(model, val_slice_set, val_slice_pos, 4 * config.batch_size, device, autocast,
                              config.loss)
        val_subject = _evaluate(model, val_subject_set, val_subject_pos, 4 * config.batch_size, device, autocast,
                                config.loss)
        monitored = val_subject if val_subject_pos else val_slice
        if not math.isfinite(monitored):
            monitored = running / seen
        row = {"epoch": epoch, "train_loss": running / seen, "val_slice_loss": val_slice,
               "val_subject_loss": val_subject if val_subject_pos else None,
               "seconds": time.perf_counter() - started, "steps": steps}
        history.append(row)
        elapsed_min = (time.perf_counter() - direction_started) / 60
        if max_minutes is not None and epoch < config.epochs and elapsed_min + row["seconds"] / 60 > max_minutes:
            stopped_early = True
            logger.warning("%s: stopping after epoch %d of %d: another epoch would exceed the %g min time limit",
                           direction, epoch, config.epochs, max_minutes)
        if monitored < best["loss"]:
            best = {"loss": monitored, "epoch": epoch,
                    "state": {k: v.detach().to("cpu").clone() for k, v in model.state_dict().items()}}
        logger.info("%s epoch %d/%d: train %.5f, val(slices) %.5f, val(subjects) %s, %.0f s", direction, epoch,
                    config.epochs, row["train_loss"], val_slice,
                    "n/a" if row["val_subject_loss"] is None else f"{val_subject:.5f}", row["seconds"])
        checkpoint = {
            "format_version": _CHECKPOINT_VERSION,
            "identity": json.dumps(identity),
            "epoch": epoch,
            "model": model.state_dict(),
            "optimizer": optimiser.state_dict(),
            "scaler": scaler.state_dict(),
            "best_state": best["state"],
            "best_loss": best["loss"],
            "best_epoch": best["epoch"],
            "history": json.dumps(history),
            "stopped_early": stopped_early,
        }
        with replaced_through_temporary(checkpoint_path) as tmp:
            torch.save(checkpoint, tmp)
        _write_history(folder / "history.csv", history)
        plot_loss_curves(histories, out_dir / "loss_curves.png")
        if stopped_early:
            break
    if best["state"] is None:
        raise ValueError(f"{direction}: no epoch was trained (epochs={config.epochs}, checkpoint at {start_epoch - 1})")
    return {"state": best["state"], "best_epoch": best["epoch"], "best_loss": best["loss"], "history": history,
            "stopped_early": stopped_early, "slices": {"train": len(train_set), "val_slice": len(val_slice_set),
                       "val_subject": len(val_subject_set)}}


def train(
    data_dir: PathLike,
    out_dir: PathLike,
    *,
    weights_path: PathLike,
    network_config=None,
    config: Optional[TrainingConfig] = None,
    directions: Sequence[str] = ("axial", "sagittal", "coronal"),
    device: str = "auto",
    cache_dir: Optional[PathLike] = None,
    resume: bool = True,
    overwrite: bool = False,
    progress: Progress = None,
    cancel: Optional[Callable[[], bool]] = None,
    show_bar: bool = True,
    max_minutes: Optional[float] = None,
    init_weights: Optional[PathLike] = None,
    combine_only: bool = False,
) -> TrainingResult:
    """Train CondNet networks for the given slicing directions and write one weights file.

    Parameters
    ----------
    data_dir : path-like
        Training-set folder (``split.json`` + subject folders).
    out_dir : path-like
        Run folder: checkpoints, histories, loss curves.
    weights_path : path-like
        Output ``.safetensors`` file with the best network of each direction in ``out_dir``.
    network_config : CondNetConfig, optional
        Architecture; the paper's with ``out_channels = len(config.tables)`` by default.
    config : TrainingConfig, optional
        Hyper-parameters; ``PRESETS["paper"]`` by default.
    directions : sequence of str
        Subset of ``("axial", "sagittal", "coronal")`` to train now.  Directions finished earlier in the
        same ``out_dir`` (with the same settings) are included in the weights file too, so the three
        networks can be trained by separate commands.
    device : {"auto", "cpu", "cuda"}
    cache_dir : path-like, optional
        Preprocessed-subject cache; ``data_dir/.condnet_cache`` by default.
    resume : bool
        Continue from existing checkpoints (otherwise an existing checkpoint raises ``FileExistsError``).
    overwrite : bool
        Replace an existing weights file.
    progress, cancel : callable, optional
        ``progress(fraction, message)``; ``cancel() -> bool`` raises :class:`Cancelled` when true.
    show_bar : bool
        Show a tqdm bar per epoch on stderr.
    max_minutes : float, optional
        Time limit per direction: training stops after the epoch at which another epoch (as long as the
        last one) would exceed it; the best model so far is kept and ``stopped_early`` is recorded.
    init_weights : path-like, optional
        Start every direction from these weights instead of a random initialisation (fine-tuning); they
        must have the same network and hold every direction trained.  Their sha256 becomes part of the
        training configuration, so checkpoints of other starts are not resumed by mistake.
    combine_only : bool
        Train nothing: write the best networks of ``directions`` from their finished checkpoints in
        ``out_dir`` (directions trained by separate commands, e.g. in parallel, with these settings).

    Returns
    -------
    TrainingResult

    Raises
    ------
    ValueError
        For unknown directions, a network whose output count differs from the number of tables, a slice
        size the network cannot take, or (``combine_only``) a direction without a finished checkpoint of
        these settings.
    FileExistsError
        If ``weights_path`` exists and ``overwrite`` is false (checked before training starts).
    """
    from . import __version__
    from .network import CondNetConfig

    config = config if config is not None else PRESETS["paper"]
    init = None
    if init_weights is not None:
        init = load_weights(init_weights)
        network_config = init.config if network_config is None else network_config
        if init.config != network_config:
            raise ValueError(f"{init_weights}: its network ({init.config}) differs from the one to train "
                             f"({network_config})")
        absent = [d for d in directions if d not in init.state_dicts]
        if absent:
            raise ValueError(f"{init_weights} has no network for the directions {absent}")
        config = replace(config, init_weights_sha256=init.sha256)
    if network_config is None:
        network_config = CondNetConfig(out_channels=len(config.tables))
    if network_config.out_channels != len(config.tables):
        raise ValueError(f"network has V={network_config.out_channels} outputs but tables {config.tables} are "
                         f"{len(config.tables)}")
    if config.size % network_config.size_multiple or config.size < 2 * network_config.size_multiple:
        raise ValueError(f"size {config.size} must be a multiple of 2**(depth-1) = {network_config.size_multiple} "
                         f"and at least 2**depth = {2 * network_config.size_multiple} (the deepest level needs 2 x 2 "
                         "pixels for batch statistics)")
    if not MIN_INPUT_SIZE <= config.size <= MAX_INPUT_SIZE:  # what load_weights accepts
        raise ValueError(f"size must be {MIN_INPUT_SIZE}..{MAX_INPUT_SIZE} voxels (what weights files hold); "
                         f"got {config.size}")
    directions = list(dict.fromkeys(directions))
    unknown = [d for d in directions if d not in DIRECTIONS]
    if unknown or not directions:
        raise ValueError(f"directions must be a non-empty subset of {sorted(DIRECTIONS)}; got {directions}")
    if max_minutes is not None and not max_minutes > 0:
        raise ValueError(f"max_minutes must be a positive number of minutes; got {max_minutes}")
    split_path = Path(data_dir) / "split.json"
    if not split_path.is_file():
        raise FileNotFoundError(f"{split_path} not found: --data must be a training-set folder "
                                "(condnet build-training-set)")
    data_sha256 = file_sha256(split_path)  # resuming or combining on another training set is refused
    weights_path = Path(weights_path)
    if weights_path.exists() and not overwrite:
        raise FileExistsError(f"{weights_path} exists; pass overwrite=True (--overwrite) to replace it")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    dev = select_device(device)
    started = time.perf_counter()

    def sub_progress(low: float, high: float) -> Progress:
        if progress is None:
            return None
        return lambda f, m: progress(low + (high - low) * f, m)

    histories: Dict[str, List[dict]] = {}
    results: Dict[str, dict] = {}
    if combine_only:
        results = _finished_elsewhere(out_dir, directions, network_config, config, histories, data_sha256)
        missing = [d for d in directions if d not in results]
        if missing:
            raise ValueError(f"{out_dir} holds no finished checkpoint with these settings for {missing}: train "
                             "them first, or pass the options they were trained with")
    else:
        for direction in directions:  # refuse now, not after the directions before it have trained
            _resumable_checkpoint(out_dir / direction / "checkpoint.pt", resume,
                                  _identity(network_config, config, direction, data_sha256))
        subjects = load_training_set(data_dir, cache_dir=cache_dir, size=config.size,
                                     progress=sub_progress(0, 0.05), cancel=cancel)
        check_table_coverage(subjects["train"] + subjects["val"], [get_table(name) for name in config.tables])
        for n, direction in enumerate(directions):
            share = 0.95 / len(directions)
            results[direction] = _train_direction(
                direction, subjects, network_config=network_config, config=config, out_dir=out_dir, device=dev,
                resume=resume, progress=sub_progress(0.05 + n * share, 0.05 + (n + 1) * share), cancel=cancel,
                show_bar=show_bar, histories=histories, max_minutes=max_minutes, data_sha256=data_sha256,
                init_state=None if init is None else init.state_dicts[direction],
            )
        results.update(_finished_elsewhere(out_dir, set(DIRECTIONS) - set(directions), network_config, config,
                                           histories, data_sha256))
    split = read_split(data_dir)
    training = {
        "data": {"dir": str(Path(data_dir).resolve()), "source": split.get("source"), "train": split["train"],
                 "val": split["val"], "slices": {d: r["slices"] for d, r in results.items() if "slices" in r}},
        "config": config.to_dict(),
        "seed": config.seed,
        "epochs": config.epochs,
        "best_epoch": {d: r["best_epoch"] for d, r in results.items()},
        "best_val_loss": {d: r["best_loss"] for d, r in results.items()},
        "stopped_early": {d: r["stopped_early"] for d, r in results.items()},
        "epochs_trained": {d: len(r["history"]) for d, r in results.items()},
        "final_losses": {d: r["history"][-1] for d, r in results.items()},
        "device": str(dev),
        "seconds": time.perf_counter() - started,
        "package_version": __version__,
    }
    sha256 = save_weights(
        weights_path, {d: r["state"] for d, r in results.items()}, config=network_config,
        tables=[get_table(name) for name in config.tables], tau=config.tau,
        input_spec={"channels": ["t1", "t2"][:network_config.in_channels], "size": config.size, "spacing_mm": 1.0,
                    "normalisation": "per-volume z-score inside the head, robust percentiles scaled to [0, 1] "
                                     "(preprocessing.zscore_unit)"},
        training=_json_copy(training), overwrite=overwrite,
    )
    plot_loss_curves(histories, out_dir / "loss_curves.png")
    if progress is not None:
        progress(1.0, f"wrote {weights_path}")
    return TrainingResult(weights_path, sha256, histories,
                          {d: {"epoch": r["best_epoch"], "loss": r["best_loss"]} for d, r in results.items()})


def _identity(network_config, config: TrainingConfig, direction: str, data_sha256: str) -> dict:
    """What a checkpoint must match to be resumed or combined: network, settings, direction, training set."""
    return {"network": network_config.to_dict(), "training": _json_copy(config.to_dict()), "direction": direction,
            "split_sha256": data_sha256}


def _resumable_checkpoint(path: Path, resume: bool, identity: dict, device="cpu") -> Optional[dict]:
    """The checkpoint at ``path`` (loaded onto ``device``), or None where there is none.

    Raises
    ------
    FileExistsError
        If it exists and ``resume`` is false.
    ValueError
        If it was made by a run of another identity (settings or training set).
    """
    import torch

    if not path.exists():
        return None
    if not resume:
        raise FileExistsError(f"{path} exists; resume it or choose a new output folder")
    checkpoint = torch.load(path, map_location=device, weights_only=True)
    stored = _stored_identity(checkpoint)
    if stored != identity:
        raise ValueError(f"{path} was made with other settings than this run: "
                         f"{_identity_differences(stored, identity)}; use a new output folder or the original "
                         "settings and training set")
    return checkpoint


def _stored_identity(checkpoint: Mapping) -> dict:
    """A checkpoint's identity, with training settings added since it was written set to their defaults.

    A setting is only ever added with a default that keeps the earlier behaviour (``loss="bce"``,
    ``init_weights_sha256=None``), so a checkpoint without it ran with that default and can still be resumed.
    """
    stored = json.loads(checkpoint["identity"])
    if isinstance(stored.get("training"), Mapping):
        stored["training"] = _with_defaults(stored["training"], _json_copy(TrainingConfig().to_dict()))
    return stored


def _with_defaults(stored: Mapping, defaults: Mapping) -> dict:
    """``stored`` with the (nested) keys it lacks taken from ``defaults``."""
    merged = dict(stored)
    for key, value in defaults.items():
        if key not in merged:
            merged[key] = value
        elif isinstance(value, Mapping) and isinstance(merged[key], Mapping):
            merged[key] = _with_defaults(merged[key], value)
    return merged


def _identity_differences(stored: Mapping, current: Mapping, prefix: str = "") -> str:
    """``key: stored -> current`` for every differing (nested) key, e.g. ``training.learning_rate: ...``."""
    changes = []
    for key in sorted(set(stored) | set(current)):
        old, new = stored.get(key, "<absent>"), current.get(key, "<absent>")
        if isinstance(old, Mapping) and isinstance(new, Mapping):
            nested = _identity_differences(old, new, f"{prefix}{key}.")
            changes.extend([nested] if nested else [])
        elif old != new:
            changes.append(f"{prefix}{key}: {old!r} -> {new!r}")
    return ", ".join(changes)


def _finished_elsewhere(out_dir: Path, directions, network_config, config: TrainingConfig,
                        histories: Dict[str, List[dict]], data_sha256: str) -> Dict[str, dict]:
    """Best states of directions whose checkpoint in ``out_dir`` has the same settings and all epochs."""
    import torch

    found = {}
    for direction in sorted(directions):
        path = out_dir / direction / "checkpoint.pt"
        if not path.exists():
            continue
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        identity = _identity(network_config, config, direction, data_sha256)
        finished = int(checkpoint["epoch"]) >= config.epochs or bool(checkpoint.get("stopped_early", False))
        if _stored_identity(checkpoint) != identity or not finished:
            logger.warning("not including %s: its settings differ or it is unfinished", path)
            continue
        history = json.loads(checkpoint["history"])
        histories[direction] = history
        found[direction] = {"state": checkpoint["best_state"], "best_epoch": int(checkpoint["best_epoch"]),
                            "best_loss": float(checkpoint["best_loss"]), "history": history,
                            "stopped_early": bool(checkpoint.get("stopped_early", False))}
    return found


def with_overrides(config: TrainingConfig, **overrides) -> TrainingConfig:
    """A copy of ``config`` with the non-None ``overrides`` applied (CLI options)."""
    return replace(config, **{k: v for k, v in overrides.items() if v is not None})
