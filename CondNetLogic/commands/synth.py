"""``condnet synth``: synthetic T1w/T2w pairs from one label map (SynthSeg-style randomisation)."""
from __future__ import annotations

import argparse

from ._synth_options import add_synth_option_arguments, synth_options

HELP = "synthesise T1w/T2w pairs from a label map, on its grid; one folder per pair with a preview PNG"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``condnet synth``."""
    parser.add_argument("--labels", required=True, help="label map (NIfTI/NRRD/MHA)")
    parser.add_argument("--out", required=True, help="output folder; pair folders must not exist or be empty")
    parser.add_argument("--n", type=int, default=1, help="number of pairs (default 1)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument(
        "--mapping",
        default="synthseg",
        help="label->tissue CSV, or 'synthseg' / 'samseg' for the shipped mappings (default: synthseg)",
    )
    parser.add_argument("--preset", choices=("randomised", "mild"), default="randomised",
                        help="randomised: wide domain randomisation (training); mild: near-nominal contrast")
    parser.add_argument("--prefix", help="pair folder prefix; pairs are PREFIX_p0, PREFIX_p1, ... (default: the "
                                         "label file's name, training_seg_18 shortened to seg18)")
    add_synth_option_arguments(parser)
    parser.add_argument("--no-preview", action="store_true", help="skip the preview PNGs")


def run(args: argparse.Namespace) -> int:
    """Synthesise and write the pairs."""
    from pathlib import Path

    from ..conductivity import label_mapping_path, read_label_mapping
    from ..io import read_volume
    from ..synth import synthesize_subject
    from ..training_set import map_id

    mapping_path = label_mapping_path(args.mapping)
    mapping = read_label_mapping(mapping_path)
    labels_path = Path(args.labels)
    labels = read_volume(labels_path)
    prefix = args.prefix or map_id(labels_path.name.split(".")[0])
    folders = synthesize_subject(
        labels, mapping, n=args.n, seed=args.seed, out_dir=args.out, prefix=prefix,
        preview=not args.no_preview, options=synth_options(args.preset, args.deformation_mm, args.blur_mm),
        progress=lambda fraction, message: print(f"[{fraction:4.0%}] {message}", flush=True),
    )
    print(f"wrote {len(folders)} pair(s) under {args.out}")
    return 0
