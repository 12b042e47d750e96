"""A terminal progress bar fed by the package's ``progress(fraction, message)`` callbacks."""
from __future__ import annotations

import contextlib

from .._types import ProgressCallback


class ProgressBar:
    """A 0-100 % tqdm bar; :meth:`stage` maps a sub-step's 0..1 onto a slice of it.

    While the bar is open, log records to the console are written above it (``tqdm.write``) instead of being
    appended to the bar's line. Use as a context manager so the bar is closed, and logging restored, on errors too.
    """

    def __init__(self, description: str) -> None:
        from tqdm.auto import tqdm
        from tqdm.contrib.logging import logging_redirect_tqdm

        self._cleanup = contextlib.ExitStack()
        self._bar = tqdm(total=100, desc=description, unit="%", bar_format="{l_bar}{bar}| {n:.0f}% {postfix}")
        self._cleanup.callback(self._bar.close)
        self._cleanup.enter_context(logging_redirect_tqdm(tqdm_class=type(self._bar)))

    def stage(self, low: float, high: float) -> ProgressCallback:
        """Callback that moves the bar from ``low`` to ``high`` percent as its fraction goes 0 -> 1."""

        def report(fraction: float, message: str) -> None:
            self._bar.n = low + (high - low) * min(max(float(fraction), 0.0), 1.0)
            self._bar.set_postfix_str(message[:50])

        return report

    def __call__(self, fraction: float, message: str) -> None:
        self.stage(0.0, 100.0)(fraction, message)

    def __enter__(self) -> ProgressBar:
        return self

    def __exit__(self, *exc) -> None:
        self._cleanup.close()
