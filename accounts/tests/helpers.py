"""Helpers shared by the accounts tests."""

from __future__ import annotations

import time


class Clock:
    """time.time moved forward on demand: the limits and the local-memory cache both read it.

    It starts a second into a fresh counting window, so no test's requests straddle two windows.
    """

    def __init__(self, window_seconds: int) -> None:
        self.real = time.time
        now = self.real()
        self.offset = (now // window_seconds + 1) * window_seconds + 1 - now

    def __call__(self) -> float:
        return self.real() + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += seconds
