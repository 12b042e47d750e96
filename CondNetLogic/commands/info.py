"""``condnet info``: versions, devices, shipped weights and coils of this installation."""
from __future__ import annotations

import argparse
import importlib
import json

HELP = "what this installation can do (versions, devices, weights, coils, commands)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``condnet info``."""
    parser.add_argument("--json", action="store_true", help="machine-readable output")


def _version(module: str) -> str:
    try:
        return str(importlib.import_module(module).__version__)
    except ImportError:
        return "not installed"


def collect() -> dict:
    """Versions, compute devices, shipped weights and coil files, as a dict."""
    from .. import __version__
    from ..cli import COMMANDS
    from ..conductivity import resource_path

    info = {
        "condnet": __version__,
        "versions": {name: _version(name) for name in ("numpy", "scipy", "SimpleITK", "torch", "numba")},
        "commands": {name: help_text for name, (_, help_text) in COMMANDS.items()},
        "coils": sorted(p.stem for p in resource_path("coils").glob("*.json") if not p.stem.endswith(".schema")),
        "weights": sorted(p.name for p in resource_path("weights").glob("*.safetensors")),
        "cuda": False,
    }
    try:
        import torch

        from ..inference import cpu_has_native_bfloat16

        info["cuda"] = bool(torch.cuda.is_available())
        if info["cuda"]:
            info["cuda_device"] = torch.cuda.get_device_name(0)
        info["cpu_bfloat16"] = cpu_has_native_bfloat16()
    except ImportError:
        pass
    return info


def run(args: argparse.Namespace) -> int:
    """Print the installation summary."""
    info = collect()
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    print(f"CondNet {info['condnet']}: TMS head models from T1/T2 MRI (CondNet) and voxel E-field simulation")
    print("versions: " + ", ".join(f"{k} {v}" for k, v in info["versions"].items()))
    print(f"CUDA: {info.get('cuda_device', 'yes') if info['cuda'] else 'not available (CPU only)'}")
    if "cpu_bfloat16" in info:
        print("CPU networks: " + ("bfloat16 (native on this CPU; --precision float32 for float32)"
                                  if info["cpu_bfloat16"] else "float32 (no native bfloat16 on this CPU)"))
    print(f"coils: {', '.join(info['coils']) or 'none'}")
    print(f"weights: {', '.join(info['weights']) or 'none shipped'}")
    print("commands:")
    for name, help_text in info["commands"].items():
        print(f"  condnet {name:<20} {help_text}")
    return 0
