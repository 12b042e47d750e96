"""``condnet info``: versions, devices, weights and coils of this installation; ``--coil`` describes a coil."""
from __future__ import annotations

import argparse
import importlib
import json
from typing import Optional

HELP = "what this installation can do (versions, devices, weights, coils, commands)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``condnet info``."""
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.add_argument(
        "--coil", metavar="NAME_OR_FILE",
        help="describe one coil instead (name, coil JSON, SimNIBS .ccd/.tcd or NIfTI dA/dt file): its sources, size "
             "and maximum dI/dt, to check an imported coil's units",
    )
    parser.add_argument(
        "--sphere", action="store_true",
        help="with --coil: also its field in a spherical head (radius 85 mm, cortex 15 mm deep): |E| on the cortex "
             "per A/us, half-value depth and area (after Deng et al. 2013), to compare coils",
    )
    parser.add_argument("--scalp-offset", type=float, metavar="MM",
                        help="with --sphere: coil origin above the scalp, mm (default 4, as SimNIBS)")


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


def coil_summary(name_or_path: str, sphere_offset_mm: Optional[float] = None) -> dict:
    """A coil as read: file, winding, source counts, extent of its sources in the coil frame (mm), maximum dI/dt.

    ``extent_mm`` is ``[[xmin, xmax], [ymin, ymax], [zmin, zmax]]``; ``+z`` points into the head, so ``zmax`` is
    the source nearest the head (the coil origin sits ``--scalp-offset`` outside the scalp).  A sampled A-field
    coil (NIfTI file) has no sources: ``extent_mm`` is its grid's box, and ``grid`` gives the nodes, spacing (mm)
    and the position of the largest ``|A|`` (mm; near the windings).  With ``sphere_offset_mm``, ``sphere`` holds
    :func:`~CondNetLogic.coil_metrics.sphere_metrics` at that offset.
    """
    from ..coil import coil_file, load_coil

    path = coil_file(name_or_path)
    coil = load_coil(path)
    summary = {
        "name": coil.name,
        "file": str(path),
        "description": coil.description,
        "winding": coil.winding["type"],
        "segments": int(coil.segments_mm().shape[0]),
        "dipoles": int(len(coil.dipole_positions_mm)),
        "didt_max_a_per_s": coil.didt_max,
        "notes": list(coil.notes),
        "sha256": coil.sha256,
    }
    if coil.sampled is not None:
        summary["extent_mm"] = coil.sampled.extent_mm().tolist()
        summary["grid"] = {"shape": list(coil.sampled.shape), "spacing_mm": coil.sampled.spacing_mm.tolist(),
                           "peak_mm": coil.sampled.peak_mm().tolist(), "file": str(coil.sampled.path)}
    else:
        points = coil.source_points_mm()
        summary["extent_mm"] = [[float(points[:, axis].min()), float(points[:, axis].max())] for axis in range(3)]
    if sphere_offset_mm is not None:
        summary["sphere"] = _sphere(coil, sphere_offset_mm)
    return summary


def _sphere(coil, offset_mm: float) -> dict:
    from ..coil_metrics import sphere_metrics

    return sphere_metrics(coil, offset_mm=offset_mm).to_dict()


def _print_coil(summary: dict) -> None:
    (x0, x1), (y0, y1), (z0, z1) = summary["extent_mm"]
    print(f"coil {summary['name']} ({summary['file']}): {summary['description']}")
    grid = summary.get("grid")
    if grid is not None:
        spacing = " x ".join(f"{value:g}" for value in grid["spacing_mm"])
        peak = ", ".join(f"{value:.1f}" for value in grid["peak_mm"])
        print(f"winding: {summary['winding']}, {' x '.join(str(n) for n in grid['shape'])} nodes of {spacing} mm "
              f"({grid['file']})")
        print(f"grid: x {x0:.1f} to {x1:.1f}, y {y0:.1f} to {y1:.1f}, z {z0:.1f} to {z1:.1f} mm (+z into the head); "
              f"largest |A| at ({peak}) mm")
    else:
        sources = ", ".join(f"{summary[key]} {key}" for key in ("segments", "dipoles") if summary[key])
        print(f"winding: {summary['winding']}, {sources}")
        print(f"size: {x1 - x0:.1f} x {y1 - y0:.1f} mm (x: {x0:.1f} to {x1:.1f}, y: {y0:.1f} to {y1:.1f}); sources "
              f"at z = {z0:.1f} to {z1:.1f} mm (+z into the head)")
    didt_max = summary["didt_max_a_per_s"]
    if didt_max is None:
        print("maximum dI/dt: not given by the file (condnet efield needs --didt A/s with this coil)")
    else:
        print(f"maximum dI/dt: {didt_max:.4g} A/s ({didt_max / 1e6:.4g} A/us)")
    for note in summary["notes"]:
        print(f"note: {note}")
    if "sphere" in summary:
        _print_sphere(summary["sphere"], didt_max)
    if grid is not None:
        return
    if z1 >= 0.05:  # not rounding noise of sources in the plane z = 0
        print(f"warning: sources reach z = +{z1:.1f} mm, beyond the coil centre towards the head: with a scalp "
              f"offset below {z1:.1f} mm they lie in the head, which condnet efield refuses")
    if max(x1 - x0, y1 - y0) < 5.0:
        print("warning: the coil is less than 5 mm across: coordinates in metres? Coil files are in mm "
              "(SimNIBS .ccd files in m are converted when read)")


def _print_sphere(sphere: dict, didt_max: Optional[float]) -> None:
    print(f"in a spherical head (radius {sphere['head_radius_mm']:g} mm, cortex {sphere['cortex_depth_mm']:g} mm "
          f"deep, coil origin {sphere['offset_mm']:g} mm above the scalp):")
    axis = sphere["e_axis_per_a_per_us"]
    at_max = "" if didt_max is None else f" ({axis * didt_max / 1e6:.4g} V/m at the maximum dI/dt)"
    print(f"  |E| on the cortex below the coil centre: {axis:.4g} V/m per A/us{at_max}")
    print(f"  maximum on the cortex: {sphere['e_max_per_a_per_us']:.4g} V/m per A/us, "
          f"{sphere['peak_offset_mm']:.1f} mm from the axis")
    print(f"  half-value depth below the cortex: {sphere['depth_half_mm']:.1f} mm; half-value area on the cortex: "
          f"{sphere['area_half_cm2']:.1f} cm^2")


def _describe(entry: dict) -> str:
    if "error" in entry:
        return entry["error"]
    if entry["inputs"] is None:
        return f"{entry['id']} {entry['version']} (file missing or unreadable)"
    role = f", {entry['default']}" if entry["default"] else ""
    return (f"{entry['id']} {entry['version']} ({' + '.join(entry['inputs']).upper()}, table "
            f"{', '.join(entry['tables'])}{role})")


def run(args: argparse.Namespace) -> int:
    """Print the installation summary, or one coil's (``--coil``)."""
    if args.sphere and args.coil is None:
        raise ValueError("--sphere describes the field of the coil given with --coil; add --coil NAME_OR_FILE")
    if args.scalp_offset is not None and not args.sphere:
        raise ValueError("--scalp-offset places the coil above the sphere of --sphere; add --sphere")
    if args.coil is not None:
        from ..coil import DEFAULT_SCALP_OFFSET_MM

        offset = DEFAULT_SCALP_OFFSET_MM if args.scalp_offset is None else args.scalp_offset
        summary = coil_summary(args.coil, offset if args.sphere else None)
        if args.json:
            print(json.dumps(summary, indent=2))
        else:
            _print_coil(summary)
        return 0
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
