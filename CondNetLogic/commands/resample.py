"""``condnet resample``: a volume onto isotropic voxels (e.g. an anisotropic conductivity before ``efield``)."""
from __future__ import annotations

import argparse

HELP = "resample a volume to isotropic voxels (same orientation and field of view)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``condnet resample``."""
    parser.add_argument("--input", required=True, help="volume to resample (NIfTI/NRRD/MHA)")
    parser.add_argument("--out", required=True, help="output volume")
    parser.add_argument("--spacing", type=float, default=1.0, help="isotropic voxel size, mm (default 1)")
    parser.add_argument("--interpolation", choices=("linear", "nearest", "bspline"), default="linear",
                        help="nearest for label maps and per-tissue (uniform) conductivity maps (default linear)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output file")


def run(args: argparse.Namespace) -> int:
    """Resample and write."""
    from ..io import check_outputs, read_volume, write_volume
    from ..preprocessing import resample_isotropic

    check_outputs([args.out], overwrite=args.overwrite)
    volume = read_volume(args.input, allow_vector=True)
    resampled = resample_isotropic(volume, args.spacing, interpolation=args.interpolation)
    path = write_volume(resampled, args.out, overwrite=args.overwrite, like=args.input)
    spacing = ", ".join(f"{s:g}" for s in volume.spacing)
    print(f"wrote {path}: {resampled.shape[:3]} voxels of {args.spacing:g} mm "
          f"(from {volume.shape[:3]} of {spacing} mm)")
    return 0
