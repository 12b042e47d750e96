"""``condnet compare``: how far one E-field is from another in the same head (GE, RDM, MAG, correlation, ratios).

For example CondNet's field against one SimNIBS computed for the same head and coil pose, written as a volume
(SimNIBS: ``subject_volumes/*_magnE.nii.gz`` of ``map_to_vol``)::

    condnet compare --a simnibs_magnE.nii.gz --b run1/efield_magnitude.nii.gz --roi-mask gm.nii.gz --out cmp.json

``--b`` is taken onto ``--a``'s grid (linear interpolation through RAS mm; vector components must be in the same
world frame, as CondNet's RAS components are).  The region is the voxels where both fields are non-zero (inside
both conductors), within ``--roi-mask`` when given (:func:`CondNetLogic.metrics.compare_fields`).  On another grid,
``--b``'s voxels at the edge of its field are interpolated with the zeros outside it: compare on one grid where
possible, or in a mask that keeps away from that edge.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from ._roi_options import add_roi_mask_arguments, check_roi_label

HELP = "agreement of two E-fields in one head: GE, RDM/MAG, correlation and ratios in a region"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``condnet compare``."""
    parser.add_argument("--a", required=True, type=Path, metavar="FIELD",
                        help="reference E-field volume: vector (V/m, 3 components) or |E| (V/m); its grid is used")
    parser.add_argument("--b", required=True, type=Path, metavar="FIELD",
                        help="E-field volume compared with --a, on any grid (resampled linearly onto --a's)")
    add_roi_mask_arguments(parser, "compare only in this region")
    parser.add_argument("--out", type=Path, metavar="JSON", help="also write the numbers here")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out file")


def run(args: argparse.Namespace) -> int:
    """Compare and print; returns the exit status."""
    import numpy as np

    from .. import __version__
    from ..io import check_finite, check_outputs, file_sha256, read_volume, write_text
    from ..metrics import compare_fields, mask_roi
    from ..preprocessing import resample_to

    check_roi_label(args)
    if args.out is not None:
        check_outputs([args.out], overwrite=args.overwrite)
    a = read_volume(args.a, allow_vector=True)
    b = read_volume(args.b, allow_vector=True)
    for volume, name in ((a, "--a"), (b, "--b")):
        check_finite(volume, name=name)
        if volume.array.ndim == 4 and volume.array.shape[-1] != 3:
            raise ValueError(f"{name} has {volume.array.shape[-1]} components; an E-field has 3 (or is |E|)")
    resampled = not b.same_grid(a)
    if resampled:
        b = resample_to(b, a, interpolation="linear")
    strength = {name: np.linalg.norm(v.array, axis=-1) if v.array.ndim == 4 else np.asarray(v.array)
                for name, v in (("a", a), ("b", b))}
    region = (strength["a"] > 0) & (strength["b"] > 0)
    if args.roi_mask is not None:
        region &= mask_roi(read_volume(args.roi_mask), a, args.roi_label)
    if not region.any():
        raise ValueError("no voxel has a field in both volumes" + (" inside --roi-mask" if args.roi_mask else "")
                         + ": check that they belong to the same head")
    result = compare_fields(a.array, b.array, region)
    print(f"{result['n_voxels']} voxels with both fields" + (f" in {args.roi_mask}" if args.roi_mask else ""))
    print(f"GE (paper Eq. 6) {result['ge_percent']:.2f} %, Pearson r of |E| {result['pearson_r']:.4f}")
    print(f"mean |E| {result['mean_a']:.2f} (a) and {result['mean_b']:.2f} V/m (b): b/a {result['mean_ratio']:.4f}")
    print(f"99th percentile {result['p99_a']:.2f} (a) and {result['p99_b']:.2f} V/m (b): b/a {result['p99_ratio']:.4f}")
    if "rdm" in result:
        print(f"RDM {result['rdm']:.4f}, MAG {result['mag']:.4f} (vectors)")
    if args.out is not None:
        record = {
            "condnet_version": __version__,
            "a": {"path": str(args.a), "sha256": file_sha256(args.a)},
            "b": {"path": str(args.b), "sha256": file_sha256(args.b), "resampled_onto_a": resampled},
            "roi_mask": None if args.roi_mask is None else {"path": str(args.roi_mask), "labels": args.roi_label},
            "units": "V/m",
            **result,
        }
        write_text(args.out, json.dumps(record, indent=2) + "\n", overwrite=args.overwrite)
        print(f"wrote {args.out}")
    return 0
