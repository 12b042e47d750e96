"""The synthesis options of ``condnet synth`` and ``condnet build-training-set`` from their command lines."""
from __future__ import annotations

from dataclasses import replace
from typing import Optional, Sequence

from ..synth import SynthOptions


def synth_options(preset: str, deformation_mm: Optional[Sequence[float]]) -> SynthOptions:
    """The ``preset``'s options, with ``--deformation-mm MIN MAX`` applied when given."""
    options = SynthOptions.preset(preset)
    return options if deformation_mm is None else replace(options, deformation_mm=tuple(deformation_mm))
