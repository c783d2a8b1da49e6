"""Measure how long the UI thread stops answering: a fast QTimer records the gaps between its ticks."""

from __future__ import annotations

import gc
import time

from PySide6.QtCore import QTimer


def keep_startup_out_of_collections() -> None:
    """Put what exists once the window is up (imported libraries, Qt wrappers) out of the garbage collector's
    reach. A worker thread that sets off a full collection holds the GIL through all of it: on the test suite's
    heap that stopped the UI for 125-180 ms during an import (tests/test_desktop.py, stacks sampled); afterwards
    a collection scans only what was made since."""
    gc.collect()
    gc.freeze()


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
