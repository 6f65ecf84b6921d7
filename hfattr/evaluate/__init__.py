"""Evaluation: faithfulness metrics (:mod:`.metrics`) and the planted-token task (:mod:`.planted`).

Names are imported on first use (the metrics need torch; :data:`METRICS` does not).
"""

from __future__ import annotations

import importlib
from typing import Any

from .names import METRICS, REPLACEMENTS

_FROM_METRICS = (
    "DEFAULT_REPLACEMENT",
    "Curve",
    "aopc",
    "check_result",
    "comprehensiveness",
    "faithfulness",
    "log_odds",
    "n_top",
    "perturbation_curve",
    "ranking",
    "sufficiency",
)

__all__ = [
    "comprehensiveness",
    "sufficiency",
    "log_odds",
    "aopc",
    "perturbation_curve",
    "faithfulness",
    "ranking",
    "n_top",
    "check_result",
    "METRICS",
    "DEFAULT_REPLACEMENT",
    "REPLACEMENTS",
    "Curve",
    "planted",
]


def __getattr__(name: str) -> Any:
    if name == "planted":
        value: Any = importlib.import_module(f"{__name__}.planted")
    elif name in _FROM_METRICS:
        value = getattr(importlib.import_module(f"{__name__}.metrics"), name)
    else:
        raise AttributeError(f"module 'hfattr.evaluate' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
