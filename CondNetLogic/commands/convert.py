"""``condnet convert``: label map -> uniform (per-tissue) conductivity volume in S/m."""
from __future__ import annotations

import argparse

HELP = "label map -> uniform conductivity volume (Table I A/B or a user table), S/m, on the label map's grid"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``condnet convert``."""
    parser.add_argument("--labels", required=True, help="label map (NIfTI/NRRD/MHA)")
    parser.add_argument(
        "--mapping",
        default="synthseg",
        help="label->tissue CSV, or 'synthseg' / 'samseg' for the shipped mappings (default: synthseg)",
    )
    parser.add_argument("--table", default="A", help="conductivity table: A, B or a JSON/CSV file (default: A)")
    parser.add_argument("--out", required=True, help="output conductivity volume (S/m, float32)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output file")


def run(args: argparse.Namespace) -> int:
    """Convert the label map and write the conductivity volume."""
    from ..conductivity import (
        get_table,
        label_mapping_path,
        labels_to_tissues,
        read_label_mapping,
        tissues_to_conductivity,
    )
    from ..io import check_outputs, read_volume, write_volume

    check_outputs([args.out], overwrite=args.overwrite)
    mapping = read_label_mapping(label_mapping_path(args.mapping))
    table = get_table(args.table)
    labels = read_volume(args.labels)
    tissues = labels_to_tissues(labels.array, mapping)
    sigma = labels.with_array(tissues_to_conductivity(tissues, table))
    path = write_volume(sigma, args.out, overwrite=args.overwrite, like=args.labels)
    print(f"wrote {path}: conductivity (S/m, table {table.name}) on the label map's grid {labels.shape}")
    return 0
