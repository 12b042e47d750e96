"""Type aliases shared by the package's signatures."""
from __future__ import annotations

import os
from typing import Callable, Optional, Union

#: A file path as callers give it.
PathLike = Union[str, os.PathLike]
#: ``progress(fraction in [0, 1], message)``: how long work reports how far it is.
ProgressCallback = Callable[[float, str], None]
#: An optional progress callback, as most long functions take it.
Progress = Optional[ProgressCallback]
