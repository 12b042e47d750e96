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


def _weights() -> list:
    """The manifest's weights: id, version, inputs, tables and which default they are."""
    from ..weights import default_roles, installed_weights, read_manifest

    try:
        manifest = read_manifest()
        listed = installed_weights()
    except ValueError as err:  # WeightsError: a missing or broken manifest is reported, not fatal
        return [{"error": str(err)}]
    roles = default_roles(manifest)
    described = []
    for entry in manifest["weights"]:
        inputs, tables = listed.get(entry.get("id"), (None, None))
        described.append({"id": entry.get("id"), "version": entry.get("version"), "inputs": inputs, "tables": tables,
                          "default": roles.get(entry.get("id"))})
    return described


def collect() -> dict:
    """Versions, compute devices, shipped weights and coil files, as a dict."""
    from .. import __version__
    from ..cli import COMMANDS
    from ..coil import list_coils

    info = {
        "condnet": __version__,
        "versions": {name: _version(name) for name in ("numpy", "scipy", "SimpleITK", "torch", "numba")},
        "commands": {name: help_text for name, (_, help_text) in COMMANDS.items()},
        "coils": list_coils(),
        "weights": _weights(),
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


def _describe(entry: dict) -> str:
    if "error" in entry:
        return entry["error"]
    if entry["inputs"] is None:
        return f"{entry['id']} {entry['version']} (file missing or unreadable)"
    role = f", {entry['default']}" if entry["default"] else ""
    return (f"{entry['id']} {entry['version']} ({' + '.join(entry['inputs']).upper()}, table "
            f"{', '.join(entry['tables'])}{role})")


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
    print("weights: " + ("; ".join(_describe(entry) for entry in info["weights"]) or "none installed"))
    print("commands:")
    for name, help_text in info["commands"].items():
        print(f"  condnet {name:<20} {help_text}")
    return 0
