"""``condnet build-training-set``: synthetic T1w/T2w pairs from a folder of label maps, split by subject."""
from __future__ import annotations

import argparse

from ._synth_options import add_synth_option_arguments, synth_options

HELP = "build a CondNet training set (split.json + one folder per synthetic pair) from label maps"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``condnet build-training-set``."""
    parser.add_argument("--labels-dir", required=True,
                        help="folder of label maps, e.g. ../shared/data/synthseg_label_maps")
    parser.add_argument("--out", required=True, help="new (or empty) output folder")
    parser.add_argument("--pairs-per-map", type=int, default=2, help="synthetic pairs per label map (default 2)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--val-maps", nargs="+", metavar="STEM",
                        help="label-map stems held out for validation (default: training_seg_17 training_seg_18)")
    parser.add_argument("--val-count", type=int, help="instead of --val-maps: draw this many validation maps")
    parser.add_argument("--mapping", default="synthseg",
                        help="label->tissue CSV, or 'synthseg' / 'samseg' for the shipped mappings (default: synthseg)")
    parser.add_argument("--preset", choices=("randomised", "mild"), default="randomised",
                        help="synthesis randomisation (default: randomised)")
    parser.add_argument("--workers", type=int, default=1, help="parallel processes (about 1 GB each; default 1)")
    add_synth_option_arguments(parser)
    parser.add_argument("--no-preview", action="store_true", help="skip the preview PNGs")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    """Build the training set with a progress bar."""
    import time

    from tqdm import tqdm

    from ..conductivity import label_mapping_path
    from ..training_set import DEFAULT_VAL_MAPS, build_training_set

    if args.val_maps and args.val_count is not None:
        raise ValueError("give either --val-maps or --val-count, not both")
    val_maps = args.val_count if args.val_count is not None else (args.val_maps or DEFAULT_VAL_MAPS)
    mapping = label_mapping_path(args.mapping)
    start = time.perf_counter()
    with tqdm(total=1.0, unit="set", disable=args.quiet,
              bar_format="{l_bar}{bar}| {elapsed}<{remaining} {postfix}") as bar:

        def progress(fraction: float, message: str) -> None:
            bar.n = round(fraction, 4)
            bar.set_postfix_str(message)

        out = build_training_set(
            args.labels_dir, args.out, pairs_per_map=args.pairs_per_map, val_maps=val_maps, seed=args.seed,
            options=synth_options(args.preset, args.deformation_mm, args.blur_mm), mapping=mapping,
            preview=not args.no_preview, progress=progress, workers=args.workers,
        )
    print(f"wrote the training set to {out} in {time.perf_counter() - start:.0f} s (see {out / 'split.json'})")
    return 0
