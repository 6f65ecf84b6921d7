"""Timing helper shared by the benchmark scripts."""

from __future__ import annotations

import time
from typing import Any, Callable


def best_of(fn: Callable[[], Any], repeat: int, *, warmup: bool = False) -> tuple[float, Any]:
    """``(best wall time in seconds, last result)`` over ``repeat`` runs of ``fn``."""
    if warmup:
        fn()
    best, out = float("inf"), None
    for _ in range(max(1, repeat)):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out
