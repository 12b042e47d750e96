"""``--roi-mask`` and ``--roi-label`` of ``condnet efield`` and ``condnet compare`` (see ``metrics.mask_roi``)."""
from __future__ import annotations

import argparse
from pathlib import Path


def add_roi_mask_arguments(parser: argparse.ArgumentParser, what: str) -> None:
    """``--roi-mask FILE`` and ``--roi-label N ...``; ``what`` says what the region is for."""
    parser.add_argument(
        "--roi-mask", type=Path, metavar="FILE",
        help=f"{what}: a mask or label volume on any grid (an fMRI cluster, an atlas), taken onto the grid by nearest "
             "neighbour; its non-zero voxels, or those of --roi-label",
    )
    parser.add_argument("--roi-label", type=int, nargs="+", metavar="N",
                        help="with --roi-mask: the label values that make the ROI (default: every non-zero voxel)")


def check_roi_label(args: argparse.Namespace) -> None:
    """``--roi-label`` needs ``--roi-mask``: ``ValueError`` otherwise."""
    if args.roi_label is not None and args.roi_mask is None:
        raise ValueError("--roi-label picks labels of --roi-mask: give --roi-mask")
