"""The synthesis options of ``condnet synth`` and ``condnet build-training-set`` from their command lines."""
from __future__ import annotations

import argparse
from dataclasses import replace
from typing import TYPE_CHECKING, Optional, Sequence

if TYPE_CHECKING:
    from ..synth import SynthOptions


def add_synth_option_arguments(parser: argparse.ArgumentParser) -> None:
    """``--deformation-mm MIN MAX`` and ``--blur-mm MIN MAX`` (:attr:`SynthOptions.deformation_mm` and
    :attr:`SynthOptions.blur_mm`; the preset's when absent)."""
    parser.add_argument("--deformation-mm", nargs=2, type=float, metavar=("MIN", "MAX"),
                        help="deform each pair's label map by a smooth random field whose displacement sd (mm) is "
                             "drawn in [MIN, MAX] (SynthSeg-style spatial augmentation; default: off)")
    parser.add_argument("--blur-mm", nargs=2, type=float, metavar=("MIN", "MAX"),
                        help="partial-volume blur: the Gaussian PSF's sd (mm) is drawn in [MIN, MAX] per image "
                             "(default: the preset's, 0.3 2.0 for randomised)")


def synth_options(preset: str, deformation_mm: Optional[Sequence[float]],
                  blur_mm: Optional[Sequence[float]] = None) -> SynthOptions:
    """The ``preset``'s options, with ``--deformation-mm MIN MAX`` and ``--blur-mm MIN MAX`` applied when given."""
    from ..synth import SynthOptions  # lazily: the CLI builds every parser at start-up

    options = SynthOptions.preset(preset)
    if deformation_mm is not None:
        options = replace(options, deformation_mm=tuple(deformation_mm))
    if blur_mm is not None:
        options = replace(options, blur_mm=tuple(blur_mm))
    return options
