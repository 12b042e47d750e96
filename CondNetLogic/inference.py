"""CondNet inference: T1 (+ T2) -> non-uniform conductivity (S/m) on the T1 grid (paper Eqs. 1-3).

Steps: :func:`~CondNetLogic.preprocessing.prepare_pair` puts the scans on the model grid (1 mm, axes
R, A, S, intensities in [0, 1]); each direction network (sagittal, coronal, axial) maps every slice
holding head voxels to normalised conductivity levels (Eq. 1, sigmoid of the finest map); the levels
are averaged over the directions (Eq. 2) and scaled to S/m (Eq. 3); the result goes back onto the
original T1 grid (linear interpolation, exact copy when the T1 is already a 1 mm RAS-aligned lattice).
Voxels outside the head mask are 0.

The uncertainty volume is the per-voxel standard deviation (population, ddof=0) of the three
directions' conductivities in S/m: 0 where they agree, large where one slicing direction sees
something the others do not.
"""
from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, Optional, Union

import numpy as np

from ._types import Progress
from .conductivity import level_scale
from .errors import Cancelled, WeightsError, is_out_of_memory
from .volume import Volume
from .weights import DIRECTIONS, CondNetWeights, load_weights

__all__ = ["DEFAULT_BATCH_SIZE", "PRECISIONS", "Prediction", "autocast_dtype", "cpu_has_native_bfloat16",
           "default_batch_size", "inside_out_score", "network_memory_format", "precision_name", "predict_conductivity",
           "predict_levels"]

logger = logging.getLogger(__name__)


@dataclass
class Prediction:
    """Result of :func:`predict_conductivity`.

    Attributes
    ----------
    conductivity : dict
        Table name ("A", "B", ...) -> float32 :class:`Volume` in S/m on the T1 grid.
    uncertainty : dict
        Same keys: standard deviation across the slicing directions, S/m, on the T1 grid.
    head_mask : Volume
        uint8 (1 = head) on the T1 grid.
    directions : dict
        Only with ``keep_directions``: table name -> {direction ("axial", ...): float32 :class:`Volume`}, each
        direction's own conductivity (Eq. 3 on that network's levels alone), S/m on the T1 grid; the members whose
        mean is ``conductivity`` and whose spread is ``uncertainty``.
    info : dict
        Device, precision, timings (s), weights id/sha256, directions used, batch size, fallbacks, ``warnings``
        (plausibility checks: the preprocessing's ``PreparedPair.warnings``, and :func:`inside_out_score` for T1
        and T2 passed the wrong way round).
    """

    conductivity: Dict[str, Volume]
    uncertainty: Dict[str, Volume]
    head_mask: Volume
    info: dict = field(default_factory=dict)
    directions: Dict[str, Dict[str, Volume]] = field(default_factory=dict)


PRECISIONS = ("auto", "float32")


def cpu_has_native_bfloat16() -> bool:
    """True on an x86-64 CPU where oneDNN runs bfloat16 natively (AVX512-BF16 or AMX); else it would be slower.

    Other architectures (Apple silicon, ARM servers) keep float32: bfloat16 was measured on x86-64 only.
    """
    import platform

    import torch

    if platform.machine().lower() not in ("x86_64", "amd64"):
        return False
    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # private oneDNN query; absent from some builds
        return False


def autocast_dtype(device, precision: str = "auto"):
    """Reduced-precision dtype the networks run in on ``device``, or None for float32.

    ``"auto"``: float16 on CUDA, bfloat16 on a CPU with native bfloat16, else float32.  ``"float32"``:
    float32 everywhere (bitwise reproducible on one machine).  The sigmoid runs in float32 in both cases.
    With the shipped weights on the real scans, bfloat16 ran the networks 1.55-1.8x as fast as float32 on an
    AVX512-BF16 CPU and moved the MNI152 conductivity by 0.001 S/m on average, at most 0.054 S/m
    (``benchmarks/RESULTS.md``).
    """
    import torch

    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}; got {precision!r}")
    if precision == "float32":
        return None
    if device.type == "cuda":
        return torch.float16
    if device.type == "cpu" and cpu_has_native_bfloat16():
        return torch.bfloat16
    return None


def network_memory_format(device):
    """Memory layout of the networks and their inputs on ``device``: channels-last (NHWC) on the CPU, which
    oneDNN's convolutions run faster than NCHW with the same results to rounding (float32 inference 1.26x on a
    2-core EPYC, and what makes bfloat16 pay off, ``benchmarks/RESULTS.md``); the default NCHW elsewhere."""
    import torch

    return torch.channels_last if device.type == "cpu" else torch.contiguous_format


def precision_name(dtype) -> str:
    """``"float32"`` for None, else e.g. ``"bfloat16 autocast"``: what :func:`autocast_dtype` chose, in words."""
    return "float32" if dtype is None else f"{str(dtype).replace('torch.', '')} autocast"


class _TorchRunner:
    """Runs one network on a device: ``place`` moves tensors there, ``forward`` maps slices to levels.

    The network and its inputs take :func:`network_memory_format` (channels-last on the CPU).
    """

    def __init__(self, model, device, precision: str = "auto") -> None:
        self.precision = precision
        self.model = model
        self._place(device)

    def _place(self, device) -> None:
        self.device = device
        self.memory_format = network_memory_format(device)
        self.model.to(device=device, memory_format=self.memory_format)
        self.dtype = autocast_dtype(device, self.precision)

    @property
    def precision_name(self) -> str:
        """What the networks run in: ``float32``, ``float16 autocast`` or ``bfloat16 autocast``."""
        return precision_name(self.dtype)

    @property
    def can_fall_back(self) -> bool:
        return self.device.type != "cpu"

    def to_cpu(self) -> None:
        import torch

        self._place(torch.device("cpu"))
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def place(self, tensor):
        """``tensor`` on this runner's device (no copy when it is there already)."""
        return tensor.to(self.device)

    def forward(self, batch):
        """(B, U, S, S) float32 tensor on the device -> (B, V, S, S) float32 levels (sigmoid of the finest logits)."""
        import torch

        with torch.inference_mode(), torch.autocast(device_type=self.device.type, dtype=self.dtype or torch.float32,
                                                    enabled=self.dtype is not None):
            logits = self.model(batch.contiguous(memory_format=self.memory_format))
        return torch.sigmoid(logits.float())


def _run_slices(runner, x, axis: int, indices: np.ndarray, out_channels: int, state: dict,
                on_batch: Optional[Callable[[int], None]] = None) -> tuple:
    """Predict the slices ``indices`` along model axis ``axis`` of ``x`` (a (U, S, S, S) float32 tensor).

    Returns ``(levels, x)``: the levels (V, S, S, S), 0 outside ``indices``, and the inputs, both on the runner's
    device (the inputs are moved there first; on a GPU only the caller's finished results cross to the host).
    ``state`` holds ``batch_size`` and a ``notes`` list; on out-of-memory the batch is halved, and at batch size 1
    on a GPU (or when the volumes do not fit there) the runner goes on on the CPU with what it has done so far.
    Both changes persist in ``state``.
    """
    import torch

    def fall_back(err: RuntimeError, what: str) -> None:
        nonlocal x, levels
        if not runner.can_fall_back:
            raise RuntimeError("out of memory on the CPU with batch size 1; close other programs or use a machine "
                               "with more memory") from err
        runner.to_cpu()
        x, levels = runner.place(x), runner.place(levels)
        message = f"out of memory on the GPU {what}: continuing on the CPU (slower)"
        logger.warning(message)
        state["notes"].append(message)

    dim = 1 + axis
    with torch.inference_mode():
        levels = torch.zeros((out_channels,) + tuple(x.shape[1:]), dtype=torch.float32)
        try:
            x, levels = runner.place(x), runner.place(levels)
        except RuntimeError as err:  # torch.cuda.OutOfMemoryError is a RuntimeError
            if not is_out_of_memory(err):
                raise
            fall_back(err, "for the volumes")
        position = 0
        while position < len(indices):
            chunk = torch.from_numpy(np.ascontiguousarray(indices[position:position + state["batch_size"]]))
            try:
                index = chunk.to(x.device)
                out = runner.forward(x.index_select(dim, index).movedim(dim, 0))
                levels.index_copy_(dim, index, out.movedim(0, dim))
            except RuntimeError as err:
                if not is_out_of_memory(err):
                    raise
                if state["batch_size"] > 1:
                    state["batch_size"] = max(1, state["batch_size"] // 2)
                    message = f"out of memory on {runner.device}: retrying with batch size {state['batch_size']}"
                    logger.warning(message)
                    state["notes"].append(message)
                else:
                    fall_back(err, "even with batch size 1")
                continue
            position += len(chunk)
            if on_batch is not None:
                on_batch(position)
        return levels, x


#: Slices per forward pass by device type: a GPU runs the paper network 1.5x as fast at 64 as at 16 (H100,
#: ``bench_inference.py --variants``); on the CPU 16 keeps the activations under 1 GiB.
DEFAULT_BATCH_SIZE = {"cuda": 64, "cpu": 16}


def default_batch_size(device) -> int:
    """Slices per forward pass on ``device`` when none is given (:data:`DEFAULT_BATCH_SIZE`)."""
    return DEFAULT_BATCH_SIZE.get(device.type, DEFAULT_BATCH_SIZE["cpu"])


def predict_levels(
    weights: CondNetWeights,
    inputs: np.ndarray,
    mask: np.ndarray,
    *,
    device="cpu",
    batch_size: Optional[int] = None,
    progress: Progress = None,
    cancel: Optional[Callable[[], bool]] = None,
    state: Optional[dict] = None,
    precision: str = "auto",
) -> Dict[str, np.ndarray]:
    """Run each direction network over a model-grid volume (Eq. 1).

    Parameters
    ----------
    weights : CondNetWeights
    inputs : ndarray float32 (U, S, S, S)
        Normalised T1 (and T2) on the model grid.
    mask : ndarray bool (S, S, S)
        Head mask; only slices holding head voxels are run, the others stay 0.
    device : str or torch.device
    batch_size : int, optional
        Slices per forward pass (reduced automatically on out-of-memory); default :func:`default_batch_size`.
    progress, cancel : callable, optional
    state : dict, optional
        Shared ``{"batch_size", "notes"}``; created when omitted.  On return it also holds ``device`` and
        ``precision`` (what the networks ran in, after any fallback to the CPU).
    precision : {"auto", "float32"}
        See :func:`autocast_dtype`.

    Returns
    -------
    dict
        direction -> levels (V, S, S, S) float32 in [0, 1].
    """
    levels = _levels_on_device(weights, inputs, mask, device=device, batch_size=batch_size, progress=progress,
                               cancel=cancel, state=state, precision=precision)
    return {direction: tensor.cpu().numpy() for direction, tensor in levels.items()}


def _levels_on_device(weights: CondNetWeights, inputs: np.ndarray, mask: np.ndarray, *, device="cpu",
                      batch_size: Optional[int] = None, progress: Progress = None,
                      cancel: Optional[Callable[[], bool]] = None, state: Optional[dict] = None,
                      precision: str = "auto") -> dict:
    """:func:`predict_levels` with the levels left as tensors on ``state["device"]`` (the inputs cross to a GPU
    once for all directions, and only what the caller makes of the levels comes back)."""
    import torch

    if inputs.ndim != 4 or inputs.shape[0] != weights.config.in_channels or inputs.shape[1:] != mask.shape:
        raise ValueError(f"inputs must be ({weights.config.in_channels}, S, S, S) matching mask {mask.shape}; "
                         f"got {inputs.shape}")
    device = torch.device(device)
    if state is None:
        state = {"batch_size": int(batch_size or default_batch_size(device)), "notes": []}
    autocast_dtype(device, precision)  # validates precision before any network is built
    results = {}
    directions = weights.directions
    x = torch.from_numpy(inputs)
    for n, direction in enumerate(directions):
        axis = DIRECTIONS[direction]
        other = tuple(a for a in range(3) if a != axis)
        indices = np.flatnonzero(mask.any(axis=other))
        runner = _TorchRunner(weights.build(direction, device=device), device, precision)
        total = len(indices)

        def on_batch(done: int, n=n, direction=direction, total=total) -> None:
            if cancel is not None and cancel():
                raise Cancelled(f"prediction cancelled during the {direction} network")
            if progress is not None:
                progress((n + done / total) / len(directions), f"{direction} network: {done}/{total} slices")

        results[direction], x = _run_slices(runner, x, axis, indices, weights.config.out_channels, state, on_batch)
        device = runner.device  # stays on the CPU after a fallback
        state["precision"] = runner.precision_name
    state["device"] = str(device)
    return {direction: levels.to(device) for direction, levels in results.items()}


def _mean_and_sd(tensors: list) -> tuple:
    """Voxel-wise mean and population sd (ddof=0) of equally shaped float32 tensors, in two passes, new tensors."""
    import torch

    mean = tensors[0].clone()
    for tensor in tensors[1:]:
        mean += tensor
    mean /= len(tensors)
    sd = torch.zeros_like(mean)
    for tensor in tensors:
        deviation = tensor - mean
        deviation *= deviation
        sd += deviation
    sd /= len(tensors)
    return mean, sd.sqrt_()


def _conductivity_and_spread(per_direction: dict, weights: CondNetWeights, mask: np.ndarray, *,
                             keep_directions: bool = False) -> list:
    """Eq. 2 then Eq. 3 on the levels' device, per table: ``[mean, sd, {direction: sigma}]`` in S/m as host
    arrays, 0 outside ``mask`` (the per-direction dict is empty unless ``keep_directions``).

    Both equations are linear, so the mean and sd of the levels are scaled to S/m afterwards; on a GPU only these
    two volumes per table (and the directions' own, when kept) cross to the host.
    """
    import torch

    with torch.inference_mode():
        inside = torch.from_numpy(mask).to(next(iter(per_direction.values())).device)
        per_table = []
        for v, table in enumerate(weights.tables):
            scale = float(level_scale(table.sigma_max, weights.tau))
            scaled = _mean_and_sd([per_direction[d][v] for d in weights.directions])
            for tensor in scaled:
                tensor.mul_(scale).mul_(inside)
            members = {d: (per_direction[d][v] * scale * inside).cpu().numpy() for d in weights.directions} \
                if keep_directions else {}
            per_table.append([*(tensor.cpu().numpy() for tensor in scaled), members])
    return per_table


def inside_out_score(sigma: np.ndarray, mask: np.ndarray, sigma_max: float, spacing_mm: float) -> dict:
    """Check that the CSF-like conductivity lies around the brain, as in a head, not inside it.

    In a head the high-conductivity voxels (CSF, above ``sigma_max / 2``) include the sulcal CSF under the
    skull, so many lie within 15 mm of the scalp and their median depth is below that of the deep
    low-conductivity tissue (``0.015 .. 0.1 sigma_max``, deeper than 15 mm: mostly WM and GM).  With T1
    and T2 swapped the network puts CSF-like values into the white matter: almost none lie near the scalp
    and they lie deeper than the rest.  Measured with the shipped weights (depth ratio / shallow fraction,
    on the 3 mm grid used here): MNI152 0.72 / 0.10 and synthetic pairs of maps 17, 18 and 05 0.74-0.81 /
    0.07-0.27 as given; the same with T1 and T2 swapped 1.05-1.37 / 0.00-0.01.

    Parameters
    ----------
    sigma : float array (I, J, K)
        Conductivity, S/m, on an isotropic grid of ``spacing_mm``.
    mask : bool array (I, J, K)
        Head mask.
    sigma_max : float
        Largest conductivity of the table (S/m).

    Returns
    -------
    dict
        ``depth_ratio``, ``shallow_fraction`` and ``suspect`` (ratio > 0.95 and fraction < 0.05).
    """
    from scipy import ndimage

    step = max(1, int(round(3.0 / spacing_mm)))  # a 3 mm grid is enough: 0.05 s for a 256^3 model grid
    sigma, mask = sigma[::step, ::step, ::step], mask[::step, ::step, ::step]
    depth = ndimage.distance_transform_edt(mask, sampling=spacing_mm * step)
    high = mask & (sigma > 0.5 * sigma_max)
    low = mask & (sigma > 0.015 * sigma_max) & (sigma < 0.1 * sigma_max) & (depth > 15.0)
    if not high.any() or not low.any():
        return {"depth_ratio": float("nan"), "shallow_fraction": float("nan"), "suspect": False}
    ratio = float(np.median(depth[high]) / np.median(depth[low]))
    shallow = float(np.mean(depth[high] < 15.0))
    return {"depth_ratio": ratio, "shallow_fraction": shallow, "suspect": ratio > 0.95 and shallow < 0.05}


def predict_conductivity(
    t1: Volume,
    t2: Optional[Volume],
    *,
    weights: Union[None, str, os.PathLike, CondNetWeights] = None,
    device: str = "auto",
    batch_size: Optional[int] = None,
    register: bool = False,
    progress: Progress = None,
    cancel: Optional[Callable[[], bool]] = None,
    precision: str = "auto",
    keep_directions: bool = False,
) -> Prediction:
    """Predict the non-uniform conductivity of a head from its T1 (and T2) scan.

    Parameters
    ----------
    t1 : Volume
        T1-weighted scan; results come back on its grid.
    t2 : Volume or None
        T2-weighted scan of the same head on any grid (resampled onto the model grid through the
        scanner geometry, or registered when ``register``).  Required by two-input (U = 2) weights.
    weights : CondNetWeights or path-like, optional
        Default: the shipped weights of ``Resources/weights.json`` (:func:`~.weights.default_weights_id`:
        T1 + T2 weights, or T1-only ones when ``t2`` is None and they are installed).
    device : {"auto", "cpu", "cuda"}
    batch_size : int, optional
        Slices per forward pass (default :func:`default_batch_size`: 64 on a GPU, 16 on the CPU); halved on
        out-of-memory, then the CPU is used.
    register : bool
        Rigidly register T2 to T1 first.
    progress : callable, optional
        ``progress(fraction, message)``.
    cancel : callable, optional
        ``cancel() -> bool``; raises :class:`~CondNetLogic.errors.Cancelled` when true.
    precision : {"auto", "float32"}
        ``"auto"`` runs the networks in float16 on CUDA and in bfloat16 on CPUs with native support
        (:func:`autocast_dtype`); ``"float32"`` everywhere else or when asked.  ``info["precision"]`` records it.
    keep_directions : bool
        Also return each slicing direction's own conductivity (``Prediction.directions``; one more volume per
        direction and table in memory), for example to see how the E-field varies across them.

    Returns
    -------
    Prediction

    Raises
    ------
    WeightsError
        If the weights are missing or corrupt.
    ValueError
        If the weights need a T2 and none is given, an input is not a valid MRI (NaNs, empty), T1 and
        T2 do not overlap, the head mask is empty, ``batch_size`` is not a positive int or ``precision``
        is unknown.
    Cancelled
        If ``cancel()`` returned true.

    Notes
    -----
    Eq. 2 averages the directions' normalised levels; Eq. 3 scales by ``max(sigma) / (1 - tau)``.
    """
    import torch

    from . import __version__
    from .preprocessing import prepare_pair
    from .training import select_device

    if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1):
        raise ValueError(f"batch_size must be a positive int; got {batch_size!r}")
    timings = {}
    started = time.perf_counter()
    if not isinstance(weights, CondNetWeights):
        weights = load_weights(weights, t2_given=t2 is not None)
    config = weights.config
    if config.in_channels == 2 and t2 is None:
        raise ValueError(f"these weights ({weights.path.name}) take T1 and T2 (U=2); no T2 was given. Pass a T2 "
                         "or use T1-only (U=1) weights")
    if config.in_channels == 1 and t2 is not None:
        logger.warning("the weights take T1 only (U=1): the T2 is not used")
        t2 = None
    size = int(weights.header["input"].get("size", 256))
    if size % config.size_multiple:
        raise WeightsError(f"weights input size {size} is not divisible by 2**(depth-1) = {config.size_multiple}")
    dev = select_device(device)
    dtype = autocast_dtype(dev, precision)
    batch_size = batch_size or default_batch_size(dev)
    timings["load_weights"] = time.perf_counter() - started

    def sub(low: float, high: float) -> Progress:
        return None if progress is None else (lambda f, m: progress(low + (high - low) * f, m))

    tick = time.perf_counter()
    pair = prepare_pair(t1, t2, size=size, register=register, progress=sub(0.0, 0.2), cancel=cancel)
    timings["preprocess"] = time.perf_counter() - tick
    if not pair.mask.any():
        raise ValueError("the head mask is empty: the T1 does not look like a head (nothing above background)")
    channels = [pair.t1] if config.in_channels == 1 else [pair.t1, pair.t2]
    inputs = np.stack(channels).astype(np.float32)
    logger.info("CondNet on %s (torch %s, %s), batch size %d, directions %s", dev, torch.__version__,
                precision_name(dtype), batch_size, ", ".join(weights.directions))

    tick = time.perf_counter()
    state = {"batch_size": batch_size, "notes": []}
    per_direction = _levels_on_device(weights, inputs, pair.mask, device=dev, progress=sub(0.2, 0.9), cancel=cancel,
                                      state=state, precision=precision)
    if state["device"].startswith("cuda"):
        torch.cuda.synchronize(state["device"])  # the networks' work is queued: time it, not its queueing
    timings["networks"] = time.perf_counter() - tick

    tick = time.perf_counter()
    mask = pair.mask
    try:
        per_table = _conductivity_and_spread(per_direction, weights, mask, keep_directions=keep_directions)
    except RuntimeError as err:
        if not is_out_of_memory(err) or state["device"] == "cpu":
            raise
        message = "out of memory on the GPU averaging the directions: averaging on the CPU"
        logger.warning(message)
        state["notes"].append(message)
        per_direction = {direction: levels.cpu() for direction, levels in per_direction.items()}
        per_table = _conductivity_and_spread(per_direction, weights, mask, keep_directions=keep_directions)
    del per_direction
    mask_ref = pair.grid.to_reference(mask.astype(np.uint8), interpolation="nearest")
    inside = mask_ref.array > 0
    conductivity, uncertainty, directions, warnings = {}, {}, {}, list(pair.warnings)

    def on_t1_grid(array: np.ndarray) -> Volume:
        back = pair.grid.to_reference(array, interpolation="linear")
        return back.with_array(np.where(inside, back.array, 0).astype(np.float32, copy=False))

    for v, table in enumerate(weights.tables):
        mean, spread, members = per_table[v]
        if v == 0:
            inverted = inside_out_score(mean, mask, table.sigma_max, pair.grid.spacing_mm)
            if inverted["suspect"]:
                warnings.append(
                    f"the conductivity looks inside out: the CSF-like (high) region lies deeper than the brain "
                    f"tissue (depth ratio {inverted['depth_ratio']:.2f}, {100 * inverted['shallow_fraction']:.0f}% "
                    "of it within 15 mm of the scalp). "
                    + ("Were T1 and T2 swapped?" if config.in_channels == 2 else
                       "Is the image T1-weighted (CSF dark, white matter bright)?"))
                logger.warning("%s", warnings[-1])
        conductivity[table.name], uncertainty[table.name] = on_t1_grid(mean), on_t1_grid(spread)
        if keep_directions:
            directions[table.name] = {direction: on_t1_grid(array) for direction, array in members.items()}
    timings["postprocess"] = time.perf_counter() - tick
    timings["total"] = time.perf_counter() - started
    if progress is not None:
        progress(1.0, "conductivity ready")
    info = {
        "package_version": __version__,
        "torch_version": torch.__version__,
        "device": state["device"],
        "device_requested": device,
        "precision": state["precision"],
        "batch_size": state["batch_size"],
        "fallbacks": state["notes"],
        "warnings": warnings,
        "weights": weights.describe(),
        "directions": list(weights.directions),
        "tables": [t.name for t in weights.tables],
        "table_values": {t.name: dict(t.values) for t in weights.tables},
        "t2_used": t2 is not None,
        "t2_head_coverage": pair.t2_coverage,
        "t2_head_offset_mm": pair.t2_offset_mm,
        "register": register,
        "model_grid": pair.grid.to_dict(),
        "timings_s": timings,
        "uncertainty": "standard deviation (ddof=0) across the slicing directions, S/m",
    }
    return Prediction(conductivity, uncertainty, mask_ref, info, directions)
