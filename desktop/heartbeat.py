"""Measure how long the UI thread stops answering: a fast QTimer records the gaps between its ticks."""

from __future__ import annotations

import time

from PySide6.QtCore import QTimer


class StallMeter:
    """Use as a context manager around work the window must stay responsive through; ``longest_ms`` is the
    largest gap between two ticks (a tick late by more than ``interval_ms`` is the UI thread blocked)."""

    def __init__(self, interval_ms: int = 10):
        self.gaps: list[float] = []
        self._timer = QTimer()
        self._timer.setInterval(interval_ms)
        self._timer.timeout.connect(self._tick)
        self._last = 0.0

    def _tick(self) -> None:
        now = time.perf_counter()
        self.gaps.append(now - self._last)
        self._last = now

    def __enter__(self) -> StallMeter:
        self._last = time.perf_counter()
        self._timer.start()
        return self

    def __exit__(self, *exc) -> None:
        self._timer.stop()

    @property
    def longest_ms(self) -> float:
        return max(self.gaps, default=0.0) * 1000
