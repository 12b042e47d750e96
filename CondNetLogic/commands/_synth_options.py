"""The synthesis options of ``condnet synth`` and ``condnet build-training-set`` from their command lines."""
from __future__ import annotations

import argparse
from dataclasses import replace
from typing import TYPE_CHECKING, Optional, Sequence

if TYPE_CHECKING:
    from ..synth import SynthOptions


def add_deformation_argument(parser: argparse.ArgumentParser) -> None:
    """``--deformation-mm MIN MAX`` (:attr:`SynthOptions.deformation_mm`; off when absent)."""
    parser.add_argument("--deformation-mm", nargs=2, type=float, metavar=("MIN", "MAX"),
                        help="deform each pair's label map by a smooth random field whose displacement sd (mm) is "
                             "drawn in [MIN, MAX] (SynthSeg-style spatial augmentation; default: off)")


def synth_options(preset: str, deformation_mm: Optional[Sequence[float]]) -> SynthOptions:
    """The ``preset``'s options, with ``--deformation-mm MIN MAX`` applied when given."""
    from ..synth import SynthOptions  # lazily: the CLI builds every parser at start-up

    options = SynthOptions.preset(preset)
    return options if deformation_mm is None else replace(options, deformation_mm=tuple(deformation_mm))
