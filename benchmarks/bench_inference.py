"""CondNet speed: inference of a T1/T2 pair with all three direction networks, and one training step.

asv-style classes (``params``, ``param_names``, ``setup``, ``time_*``, ``peakmem_*``), also runnable as a
script that prints the numbers with the device and versions::

    python benchmarks/bench_inference.py                 # 256^3 pair, paper network, CPU (and CUDA if present)
    python benchmarks/bench_inference.py --tiny          # 64^3, depth 3: smoke run in seconds
    python benchmarks/bench_inference.py --train-step    # also time training steps at 256x256, batch 4
    python benchmarks/bench_inference.py --threads 1     # torch intra-op threads (1 is faster on a busy CPU)
    python benchmarks/bench_inference.py --devices cuda --train-step --json out.json --markdown rows.md
    python benchmarks/bench_inference.py --precisions float32   # only the float32 networks (default: auto, float32)
    python benchmarks/bench_inference.py --variants      # networks and training step: layout, precision, batch, ...
    python benchmarks/bench_inference.py --profile       # torch.profiler's table of the networks' operators

Random weights are used: the speed does not depend on the values.  The pair is the synthetic head
phantom, so the slices holding head voxels (the ones inference runs) are realistic in number.

On CUDA the first prediction of a process also starts CUDA and loads cuDNN and cuBLAS; it is reported as
'first call', and the number given is the median of ``--repeat`` further calls.  On the CPU the number is the
one call after a first (which also creates oneDNN's kernels for the precision).
``--train-step`` also projects the training time of one direction for the issue's target (10 subjects x 50
epochs, batch 4, 10% of the slices held out for validation, the phantom's head slices per subject): steps x
the median step, without data loading and validation. The JSON file is rewritten after every measurement, so
an interrupted run keeps what it measured.

Each device is timed at each ``--precisions`` (:func:`CondNetLogic.inference.autocast_dtype`: ``auto`` is float16
autocast on CUDA and bfloat16 autocast on CPUs with native bfloat16, else float32), and the speed-up of ``auto``
over ``float32`` is printed with the largest difference between their conductivities (S/m).
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional
from unittest import mock

import numpy as np
import torch

from CondNetLogic import __version__
from CondNetLogic.conductivity import TABLE_A
from CondNetLogic.inference import (
    PRECISIONS,
    autocast_dtype,
    precision_name,
    predict_conductivity,
)
from CondNetLogic.network import CondNet, CondNetConfig
from CondNetLogic.phantom import make_head_phantom
from CondNetLogic.training import (
    GraphedTrainStep,
    make_optimiser,
    make_train_step,
    train_step,
    training_autocast_dtype,
)
from CondNetLogic.weights import load_weights, save_weights


def _make_weights(folder: Path, size: int, depth: int):
    config = CondNetConfig(depth=depth)
    torch.manual_seed(0)
    states = {d: CondNet(config).state_dict() for d in ("sagittal", "coronal", "axial")}
    path = folder / f"bench_{size}_{depth}.safetensors"
    if not path.exists():
        save_weights(path, states, config=config, tables=[TABLE_A], tau=0.1,
                     input_spec={"channels": ["t1", "t2"], "size": size, "spacing_mm": 1.0, "normalisation": "z"},
                     training={"note": "random weights for benchmarking"})
    return load_weights(path)


def _devices():
    return ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


class InferenceSuite:
    """Full predict_conductivity (preprocessing, 3 networks, back to the T1 grid)."""

    params = ([(256, 6)], _devices(), list(PRECISIONS))
    param_names = ["size_depth", "device", "precision"]
    timeout = 1200

    def setup(self, size_depth, device, precision="auto"):
        size, depth = size_depth
        self.phantom = make_head_phantom((size,) * 3, seed=0)
        self.weights = _make_weights(Path(tempfile.gettempdir()), size, depth)

    def predict(self, device, precision):
        return predict_conductivity(self.phantom.t1, self.phantom.t2, weights=self.weights, device=device,
                                    precision=precision)

    def network_inputs(self, size: int) -> tuple:
        """The phantom's prepared network inputs ``(U, S, S, S)`` and head mask, computed once."""
        from CondNetLogic.preprocessing import prepare_pair

        if getattr(self, "_inputs", None) is None:
            pair = prepare_pair(self.phantom.t1, self.phantom.t2, size=size)
            self._inputs = (np.stack([pair.t1, pair.t2]).astype(np.float32), pair.mask)
        return self._inputs

    def time_predict(self, size_depth, device, precision):
        self.predict(device, precision)

    def peakmem_predict(self, size_depth, device, precision):
        self.predict(device, precision)


class TrainStepSuite:
    """One Adam step of the paper network with deep supervision at 256x256, batch 4.

    The step of ``condnet train`` (:func:`CondNetLogic.training.make_train_step`), channels-last on every device:
    on CUDA bfloat16 autocast (float16 with gradient scaling before compute capability 8), fused Adam, and
    forward and backward passes replayed from a CUDA graph; on the CPU bfloat16 autocast where the CPU runs it
    natively.
    """

    params = (_devices(),)
    param_names = ["device"]

    def setup(self, device, variant: Optional[dict] = None):
        """``variant`` (the ``--variants`` study) overrides ``memory_format``, ``autocast`` (a dtype or None),
        ``fused`` (fused Adam), ``graphs`` (False: no CUDA graph) and ``depth``; by default the step is the one
        ``condnet train`` takes."""
        variant = variant or {}
        torch.manual_seed(0)
        self.device = torch.device(device)
        memory_format = variant.get("memory_format", torch.channels_last)  # as condnet train on every device
        self.autocast = variant.get("autocast", training_autocast_dtype(self.device))
        self.model = CondNet(CondNetConfig(depth=variant.get("depth", 6))).to(device=self.device,
                                                                              memory_format=memory_format)
        optimiser = (torch.optim.Adam(self.model.parameters(), lr=1e-3, fused=variant["fused"]) if "fused" in variant
                     else make_optimiser(self.model, 1e-3, self.device))
        scaler = torch.amp.GradScaler(self.device.type, enabled=self.autocast == torch.float16)
        self.step = (make_train_step(self.model, optimiser, scaler, autocast=self.autocast)
                     if variant.get("graphs", True) else
                     functools.partial(train_step, self.model, optimiser, scaler, autocast=self.autocast))
        self.precision = precision_name(self.autocast) + (
            ", CUDA graph" if isinstance(self.step, GraphedTrainStep) else "") + (
            ", fused Adam" if optimiser.defaults.get("fused") else "")
        self.x = torch.rand(4, 2, 256, 256, device=self.device).contiguous(memory_format=memory_format)
        self.y = torch.rand(4, 1, 256, 256, device=self.device) * 0.9

    def time_step(self, device):
        self.step(self.x, self.y)
        if self.device.type == "cuda":
            torch.cuda.synchronize()


def _environment(threads: int) -> dict:
    env = {"condnet": __version__, "python": platform.python_version(), "torch": torch.__version__,
           "numpy": np.__version__, "cpu": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
           "torch_threads": threads, "load_average_1min": round(os.getloadavg()[0], 2)}
    if torch.cuda.is_available():
        properties = torch.cuda.get_device_properties(0)
        env["cuda_device"] = torch.cuda.get_device_name(0)
        env["cuda_memory_gib"] = round(properties.total_memory / 2**30, 1)
        env["cuda"] = torch.version.cuda
        env["cudnn"] = torch.backends.cudnn.version()
    return env


#: Target of issue 3: subjects and epochs of one direction's training.
TARGET_SUBJECTS, TARGET_EPOCHS = 10, 50


def training_steps(mask: np.ndarray, batch: int = 4, val_fraction: float = 0.1) -> dict:
    """Optimiser steps per direction for TARGET_SUBJECTS heads like ``mask`` over TARGET_EPOCHS epochs."""
    from CondNetLogic.weights import DIRECTIONS

    steps = {}
    for direction, axis in DIRECTIONS.items():
        slices = int(np.count_nonzero(mask.any(axis=tuple(a for a in range(3) if a != axis))))
        train = TARGET_SUBJECTS * slices - max(1, round(val_fraction * TARGET_SUBJECTS * slices))
        steps[direction] = {"head_slices": slices, "steps": TARGET_EPOCHS * -(-train // batch)}
    return steps


def _seconds(value: float) -> str:
    return f"{value:.3f}" if value < 1 else f"{value:.2f}"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="64^3 pair, depth 3 (smoke run)")
    parser.add_argument("--devices", nargs="+", choices=["cpu", "cuda"], default=_devices(),
                        help="devices to time (default: cpu, and cuda when torch sees a device)")
    parser.add_argument("--precisions", nargs="+", choices=PRECISIONS, default=list(PRECISIONS),
                        help="network precisions to time on each device (default: auto float32)")
    parser.add_argument("--repeat", type=int, default=3,
                        help="timed predictions after the first call, on CUDA (default 3; on the CPU one)")
    parser.add_argument("--train-step", action="store_true", help="also time training steps (256x256, batch 4)")
    parser.add_argument("--variants", action="store_true",
                        help="also time the networks alone and the training step under layout, precision, batch "
                             "and optimiser variants (the study behind the defaults)")
    parser.add_argument("--profile", action="store_true",
                        help="also print torch.profiler's table of the networks' operators for one prediction")
    parser.add_argument("--steps", type=int, default=5, help="timed training steps (after one warm-up)")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch intra-op threads")
    parser.add_argument("--json", help="also write the results to this JSON file (after every measurement)")
    parser.add_argument("--markdown", help="also append rows for the CondNet table of benchmarks/RESULTS.md here")
    args = parser.parse_args(argv)
    if "cuda" in args.devices and not torch.cuda.is_available():
        parser.error(f"--devices cuda: torch {torch.__version__} sees no CUDA device")
    torch.set_num_threads(args.threads)
    size, depth = (64, 3) if args.tiny else (256, 6)
    results = {"environment": _environment(args.threads), "inference": [], "train_step": []}
    print(json.dumps(results["environment"]), flush=True)

    def save() -> None:
        if args.json:
            Path(args.json).write_text(json.dumps(results, indent=2) + "\n")

    def markdown(line: str) -> None:
        if args.markdown:
            with open(args.markdown, "a") as handle:
                handle.write(line + "\n")

    env = results["environment"]
    markdown(f"\nbench_inference.py: {env.get('cuda_device', 'no GPU')}, {env['cpu_count']} CPUs, torch {env['torch']} "
             f"(CUDA {env.get('cuda')}), python {env['python']}\n\n| what | {' | '.join(args.devices)} |\n"
             f"|---|{'---:|' * len(args.devices)}")
    save()
    suite = InferenceSuite()
    suite.setup((size, depth), args.devices[0])  # the phantom and the weights do not depend on the device
    failures = []

    def failed(what: str, err: Exception) -> None:
        # Reported, and the run goes on: the next measurement does not depend on this one.
        message = f"{what}: failed: {type(err).__name__}: {err}"
        print(message, flush=True)
        failures.append(message)
        results.setdefault("failures", []).append(message)
        markdown(f"| {what} | FAILED: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''} |")
        save()

    for device in args.devices:
        rows = {}
        for precision in args.precisions:
            try:
                rows[precision] = _time_inference(args, suite, device, precision, size, depth, results, save,
                                                  markdown)
            except Exception as err:  # noqa: BLE001 - reported, exit status 1 at the end
                failed(f"inference {size}^3, {device}, precision {precision}", err)
        if len(rows) == 2:
            (auto, auto_sigma), (full, full_sigma) = rows["auto"], rows["float32"]
            auto["max_diff_float32_s_per_m"] = float(np.abs(auto_sigma - full_sigma).max())
            save()
            print(f"{device}: {auto['precision']} is {full['seconds'] / auto['seconds']:.2f}x as fast as float32 "
                  f"(networks {full['networks_s'] / auto['networks_s']:.2f}x); largest conductivity difference "
                  f"{auto['max_diff_float32_s_per_m']:.2g} S/m", flush=True)
    if args.profile:
        for device in args.devices:
            try:
                _profile(suite, device, size)
            except Exception as err:  # noqa: BLE001 - reported, exit status 1 at the end
                failed(f"profile, {device}", err)
    if args.variants:
        for device in args.devices:
            try:
                _variant_study(args, suite, device, size, depth, results, save)
            except Exception as err:  # noqa: BLE001 - reported, exit status 1 at the end
                failed(f"variant study, {device}", err)
    if args.train_step:
        mask = suite.phantom.tissues.array != 0
        results["training_plan"] = training_steps(mask)
        for device in args.devices:
            try:
                _time_train_step(args, device, size, results, save, markdown)
            except Exception as err:  # noqa: BLE001 - reported, exit status 1 at the end
                failed(f"training step, {device}", err)
    print(json.dumps(results["environment"]))
    save()
    if failures:
        sys.exit("bench_inference: " + "; ".join(failures))


def _time_inference(args, suite, device: str, precision: str, size: int, depth: int, results: dict, save,
                    markdown) -> tuple:
    """Predictions on ``device`` (a first call, then ``--repeat`` timed ones on CUDA): a row and a table line.

    Returns the row and the last prediction's Table A conductivity (S/m).
    """
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    prediction = suite.predict(device, precision)
    first = time.perf_counter() - started
    calls = [(first, prediction)]
    for _ in range(args.repeat if device == "cuda" else 1):
        started = time.perf_counter()
        prediction = suite.predict(device, precision)
        calls.append((time.perf_counter() - started, prediction))
    timed = calls[1:] or calls
    median = float(np.median([seconds for seconds, _ in timed]))
    networks = float(np.median([p.info["timings_s"]["networks"] for _, p in timed]))
    row = {"device": device, "precision": prediction.info["precision"], "size": size, "depth": depth,
           "seconds": median, "first_call_s": first,
           "calls": [seconds for seconds, _ in calls], "networks_s": networks,
           "timings_s": prediction.info["timings_s"], "ran_on": prediction.info["device"],
           "batch_size": prediction.info["batch_size"], "fallbacks": prediction.info["fallbacks"],
           "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    if device == "cuda":
        row["peak_cuda_mib"] = torch.cuda.max_memory_allocated() / 2**20
    results["inference"].append(row)
    save()
    fell_back = row["ran_on"].split(":")[0] != device or row["fallbacks"]
    note = f"; RAN ON {row['ran_on']}: {row['fallbacks']}" if fell_back else ""
    print(f"inference {size}^3 pair, 3 directions, depth {depth}, {device}, {row['precision']}: {median:.2f} s "
          f"(networks {networks:.2f} s, preprocessing {row['timings_s']['preprocess']:.2f} s"
          + (f"; median of {len(timed)} calls" if len(timed) > 1 else "")
          + (f" after a first call of {first:.2f} s" if len(calls) > 1 else "")
          + f"), peak RSS {row['peak_rss_mib']:.0f} MiB"
          + (f", peak CUDA {row['peak_cuda_mib']:.0f} MiB" if device == "cuda" else "") + note, flush=True)
    cells = ["–"] * len(args.devices)
    cells[args.devices.index(device)] = (
        f"**{_seconds(median)} s** (networks {_seconds(networks)} s"
        + (f", first call {_seconds(first)} s" if len(calls) > 1 else "") + ")"
        + (f", peak CUDA {row['peak_cuda_mib'] / 1024:.1f} GiB" if device == "cuda" else
           f", peak RSS {row['peak_rss_mib'] / 1024:.1f} GiB") + note)
    markdown(f"| inference of a {size}^3 T1/T2 pair, all three directions, {device}, {row['precision']} "
             f"| {' | '.join(cells)} |")
    return row, prediction.conductivity["A"].array


def _time_train_step(args, device: str, size: int, results: dict, save, markdown) -> None:
    """Training steps on ``device`` and the projected time of one direction: a row and two table lines."""
    plan = results["training_plan"]
    steps = TrainStepSuite()
    steps.setup(device)
    steps.time_step(device)  # warm-up
    times = []
    for _ in range(args.steps):
        started = time.perf_counter()
        steps.time_step(device)
        times.append(time.perf_counter() - started)
    median = float(np.median(times))
    projected = {d: p["steps"] * median for d, p in plan.items()}
    row = {"device": device, "precision": steps.precision, "batch": 4, "size": 256, "median_s": median,
           "min_s": float(np.min(times)),
           "steps": args.steps, "projected_per_direction_s": projected}
    results["train_step"].append(row)
    save()
    slowest = max(projected, key=projected.get)
    print(f"training step 256x256, batch 4, paper network, {device} ({steps.precision}): median {median:.4f} s, "
          f"min {row['min_s']:.4f} s over {args.steps} steps; projected per direction for "
          f"{TARGET_SUBJECTS} subjects x {TARGET_EPOCHS} epochs (head slices of the {size}^3 phantom): "
          + ", ".join(f"{d} {plan[d]['steps']} steps {projected[d]:.0f} s" for d in plan)
          + " (steps only: no data loading or validation)", flush=True)
    cells = ["–"] * len(args.devices)
    cells[args.devices.index(device)] = f"{median:.4f} s"
    markdown(f"| one training step, 256 x 256, batch 4, {steps.precision}, {device} | {' | '.join(cells)} |")
    cells[args.devices.index(device)] = f"**{projected[slowest] / 60:.1f} min** ({slowest})"
    markdown(f"| training of one direction, {TARGET_SUBJECTS} subjects x {TARGET_EPOCHS} epochs "
             f"({plan[slowest]['steps']} steps x the step above; no data loading or validation), {device} "
             f"| {' | '.join(cells)} |")


def _variants(device: torch.device) -> tuple:
    """The ``--variants`` study: (name, overrides) of the networks' inference and of the training step.

    Networks: ``memory_format``, ``autocast`` (dtype or None for float32; TF32 convolutions on CUDA, torch's
    default) and ``batch`` (slices per forward pass).  Training step: see :meth:`TrainStepSuite.setup`; the
    first row is the default.
    """
    nchw, last = torch.contiguous_format, torch.channels_last
    half = autocast_dtype(device)
    networks = [("NCHW, batch 16", {"memory_format": nchw, "autocast": half, "batch": 16}),
                ("NCHW, batch 64", {"memory_format": nchw, "autocast": half, "batch": 64}),
                ("channels-last, batch 64", {"memory_format": last, "autocast": half, "batch": 64}),
                ("float32, NCHW, batch 64", {"memory_format": nchw, "autocast": None, "batch": 64})]
    steps = [("default (condnet train)", {}),
             ("float32, default otherwise", {"autocast": None})]
    if device.type == "cuda":
        networks += [("NCHW, batch 128", {"memory_format": nchw, "autocast": half, "batch": 128}),
                     ("bfloat16, NCHW, batch 64", {"memory_format": nchw, "autocast": torch.bfloat16, "batch": 64})]
        steps += [("no CUDA graph", {"graphs": False}),
                  ("no CUDA graph, float16 + gradient scaling, Adam (before)",
                   {"graphs": False, "autocast": torch.float16, "fused": False}),
                  ("Adam (not fused)", {"fused": False})]
    steps += [("NCHW", {"memory_format": nchw})]
    return networks, steps


def _variant_study(args, suite, device: str, size: int, depth: int, results: dict, save) -> None:
    """Time the networks alone (``predict_levels`` on one prepared pair) and the training step under layout,
    precision, batch and optimiser variants, to choose the defaults; printed as a table, kept in the JSON."""
    from CondNetLogic import inference

    dev = torch.device(device)
    networks, steps = _variants(dev)
    inputs, mask = suite.network_inputs(size)
    study = results.setdefault("variants", [])
    lines = [f"variants on {device} ({size}^3 pair, depth {depth}; networks: 3 directions, median of 3 after one "
             f"call; training: 256 x 256, batch 4, median of {args.steps} steps after two)"]

    def timed(fn, repeat: int) -> float:
        fn()
        times = []
        for _ in range(repeat):
            if dev.type == "cuda":
                torch.cuda.synchronize()
            started = time.perf_counter()
            fn()
            if dev.type == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - started)
        return float(np.median(times))

    for kind, variants in (("networks", networks), ("training step", steps)):
        for name, options in variants:
            try:
                if kind == "networks":
                    with mock.patch.object(inference, "network_memory_format", return_value=options["memory_format"]), \
                            mock.patch.object(inference, "autocast_dtype", return_value=options["autocast"]):
                        run = functools.partial(inference.predict_levels, suite.weights, inputs, mask,
                                                device=dev, batch_size=options["batch"])
                        seconds = timed(run, repeat=3)
                else:
                    step = TrainStepSuite()
                    step.setup(device, {**options, "depth": depth})
                    step.time_step(device)  # a first step; timed() takes one more before timing
                    seconds = timed(functools.partial(step.time_step, device), repeat=args.steps)
                    del step
            except Exception as err:  # noqa: BLE001 - one variant failing (bfloat16 unsupported, ...) is reported
                line = f"{kind:>13} | {name:<45} | failed: {type(err).__name__}: {str(err).splitlines()[0]}"
            else:
                line = f"{kind:>13} | {name:<45} | {seconds:.4f} s"
                study.append({"device": device, "kind": kind, "variant": name, "seconds": seconds})
                save()
            print(line, flush=True)
            lines.append(line)
    results.setdefault("variant_tables", []).append(lines)
    save()


def _profile(suite, device: str, size: int) -> None:
    """Where the networks' time goes: ``torch.profiler`` over one ``predict_levels`` call (after a first), the
    operators with the most device time (CUDA) or CPU time, printed as a table."""
    from torch.profiler import ProfilerActivity, profile

    from CondNetLogic.inference import predict_levels

    inputs, mask = suite.network_inputs(size)
    predict_levels(suite.weights, inputs, mask, device=device)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == "cuda" else [])
    started = time.perf_counter()
    with profile(activities=activities) as prof:
        predict_levels(suite.weights, inputs, mask, device=device)
    print(f"profile of predict_levels on {device} ({time.perf_counter() - started:.3f} s under the profiler):")
    print(prof.key_averages().table(sort_by="cuda_time_total" if device == "cuda" else "cpu_time_total",
                                    row_limit=14, max_name_column_width=48), flush=True)


if __name__ == "__main__":
    main()
