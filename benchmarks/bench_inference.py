"""CondNet speed: inference of a T1/T2 pair with all three direction networks, and one training step.

asv-style classes (``params``, ``param_names``, ``setup``, ``time_*``, ``peakmem_*``), also runnable as a
script that prints the numbers with the device and versions::

    python benchmarks/bench_inference.py                 # 256^3 pair, paper network, CPU (and CUDA if present)
    python benchmarks/bench_inference.py --tiny          # 64^3, depth 3: smoke run in seconds
    python benchmarks/bench_inference.py --train-step    # also time training steps at 256x256, batch 4
    python benchmarks/bench_inference.py --threads 1     # torch intra-op threads (1 is faster on a busy CPU)

Random weights are used: the speed does not depend on the values.  The pair is the synthetic head
phantom, so the slices holding head voxels (the ones inference runs) are realistic in number.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from CondNetLogic import __version__
from CondNetLogic.conductivity import TABLE_A
from CondNetLogic.inference import predict_conductivity
from CondNetLogic.network import CondNet, CondNetConfig
from CondNetLogic.phantom import make_head_phantom
from CondNetLogic.training import train_step
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

    params = ([(256, 6)], _devices())
    param_names = ["size_depth", "device"]
    timeout = 1200

    def setup(self, size_depth, device):
        size, depth = size_depth
        self.phantom = make_head_phantom((size,) * 3, seed=0)
        self.weights = _make_weights(Path(tempfile.gettempdir()), size, depth)

    def time_predict(self, size_depth, device):
        predict_conductivity(self.phantom.t1, self.phantom.t2, weights=self.weights, device=device)

    def peakmem_predict(self, size_depth, device):
        predict_conductivity(self.phantom.t1, self.phantom.t2, weights=self.weights, device=device)


class TrainStepSuite:
    """One Adam step of the paper network with deep supervision at 256x256, batch 4.

    The step of ``condnet train`` (:func:`CondNetLogic.training.train_step`): float16 autocast and gradient
    scaling on CUDA, float32 on the CPU.
    """

    params = (_devices(),)
    param_names = ["device"]

    def setup(self, device):
        torch.manual_seed(0)
        self.device = torch.device(device)
        self.model = CondNet().to(self.device)
        self.optimiser = torch.optim.Adam(self.model.parameters(), lr=1e-3)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.device.type == "cuda")
        self.x = torch.rand(4, 2, 256, 256, device=self.device)
        self.y = torch.rand(4, 1, 256, 256, device=self.device) * 0.9

    def time_step(self, device):
        train_step(self.model, self.optimiser, self.scaler, self.x, self.y)
        if self.device.type == "cuda":
            torch.cuda.synchronize()


def _environment(threads: int) -> dict:
    env = {"condnet": __version__, "torch": torch.__version__, "numpy": np.__version__,
           "cpu": platform.processor() or platform.machine(), "torch_threads": threads,
           "load_average_1min": round(os.getloadavg()[0], 2)}
    if torch.cuda.is_available():
        env["cuda_device"] = torch.cuda.get_device_name(0)
        env["cuda"] = torch.version.cuda
    return env


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="64^3 pair, depth 3 (smoke run)")
    parser.add_argument("--train-step", action="store_true", help="also time training steps (256x256, batch 4)")
    parser.add_argument("--steps", type=int, default=5, help="timed training steps (after one warm-up)")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch intra-op threads")
    parser.add_argument("--json", help="also write the results to this JSON file")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    size, depth = (64, 3) if args.tiny else (256, 6)
    results = {"environment": _environment(args.threads), "inference": [], "train_step": []}
    suite = InferenceSuite()
    for device in _devices():
        suite.setup((size, depth), device)
        if device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        started = time.perf_counter()
        prediction = predict_conductivity(suite.phantom.t1, suite.phantom.t2, weights=suite.weights, device=device)
        row = {"device": device, "size": size, "depth": depth, "seconds": time.perf_counter() - started,
               "timings_s": prediction.info["timings_s"],
               "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
        if device == "cuda":
            row["peak_cuda_mib"] = torch.cuda.max_memory_allocated() / 2**20
        results["inference"].append(row)
        print(f"inference {size}^3 pair, 3 directions, depth {depth}, {device}: {row['seconds']:.1f} s "
              f"(networks {row['timings_s']['networks']:.1f} s), peak RSS {row['peak_rss_mib']:.0f} MiB"
              + (f", peak CUDA {row['peak_cuda_mib']:.0f} MiB" if device == "cuda" else ""))
    if args.train_step:
        steps = TrainStepSuite()
        for device in _devices():
            steps.setup(device)
            steps.time_step(device)  # warm-up
            times = []
            for _ in range(args.steps):
                started = time.perf_counter()
                steps.time_step(device)
                times.append(time.perf_counter() - started)
            row = {"device": device, "batch": 4, "size": 256, "median_s": float(np.median(times)),
                   "min_s": float(np.min(times)), "steps": args.steps}
            results["train_step"].append(row)
            print(f"training step 256x256, batch 4, paper network, {device}"
                  f"{' (float16 autocast)' if device == 'cuda' else ''}: median {row['median_s']:.3f} s, "
                  f"min {row['min_s']:.3f} s over {args.steps} steps")
    print(json.dumps(results["environment"]))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
