"""What every view reads from a Result: its matrix, labels, one-line summary and generation parts."""

from __future__ import annotations

import json
import math
import re
from pathlib import PurePath
from typing import TYPE_CHECKING, Any, cast

from ..viz import printable

if TYPE_CHECKING:  # pragma: no cover
    from torch import Tensor

    from ..result import Result

__all__ = [
    "matrix",
    "specials",
    "row_labels",
    "describe",
    "fmt_target",
    "display_name",
    "is_generation",
    "prompt_length",
    "step_stats",
    "STEP_STATS",
]

STEP_STATS = ("probability", "log_prob", "entropy", "rank")


def matrix(result: "Result") -> list[list[float]]:
    """Scores as a list of rows of python floats (1-D scores give one row)."""
    attributions = result.scores.detach().cpu().double()
    return [attributions.tolist()] if attributions.dim() == 1 else attributions.tolist()


def specials(result: "Result") -> list[bool]:
    if result.special_mask is None:
        return [False] * len(result.tokens)
    return list(result.special_mask)


def row_labels(result: "Result") -> list[str]:
    n = 1 if result.scores.dim() == 1 else result.scores.shape[0]
    return list(result.rows) if result.rows else [f"row {r}" for r in range(n)]


def display_name(name: Any) -> str:
    """A model name for titles: a hub id as it is, a local path as its last part (no machine paths)."""
    s = str(name)
    if s.startswith(("/", "~", ".")) or "\\" in s or s.count("/") > 1 or re.match(r"[A-Za-z]:", s):
        return PurePath(s.replace("\\", "/")).name or s
    return s


def is_generation(result: "Result") -> bool:
    """A generation (or given continuation) matrix: rows = generated tokens, NaN = empty entries."""
    flag = getattr(type(result), "is_generation", None)
    if isinstance(flag, property):
        return bool(result.is_generation)
    return (result.target or {}).get("kind") in ("generation", "continuation") and result.scores.dim() == 2


def prompt_length(result: "Result") -> int:
    """Number of source columns before the generated ones (P)."""
    target = result.target or {}
    p = target.get("prompt_length")
    if isinstance(p, int) and not isinstance(p, bool) and 0 <= p <= result.n_tokens:
        return p
    positions = target.get("positions") or []
    if positions and isinstance(positions[0], int) and 0 <= positions[0] < result.n_tokens:
        return positions[0] + 1  # the position that predicts the first generated token is P - 1
    return max(result.n_tokens - result.scores.shape[0], 0)


def step_stats(result: "Result") -> dict[str, list[float]]:
    """The recorded step statistics (``extras["step_scores"]``), those with one value per target row."""
    raw = (result.extras or {}).get("step_scores") or {}
    n = result.scores.shape[0]
    out = {}
    for name, values in raw.items():
        if isinstance(values, (list, tuple)) and len(values) == n:
            try:
                out[str(name)] = [float(v) for v in values]
            except (TypeError, ValueError):
                continue
    order = [k for k in STEP_STATS if k in out] + [k for k in out if k not in STEP_STATS]
    return {k: out[k] for k in order}


def fmt_step(name: str, value: float) -> str:
    if not math.isfinite(value):
        return ""
    if name == "rank":
        return str(int(value))
    return f"{value:.2f}" if abs(value) < 100 else f"{value:.3g}"


def fmt_target(target: dict) -> str:
    if not target:
        return ""
    if target.get("kind") in ("generation", "continuation"):
        text = target.get("generated_text")
        if not isinstance(text, str) and isinstance(target.get("tokens"), list):
            text = " ".join(str(t) for t in target["tokens"])
        what = f"{target['kind']} {json.dumps(text)}" if isinstance(text, str) else target["kind"]
        if target.get("contrast_tokens"):
            what += " vs " + " ".join(str(t) for t in target["contrast_tokens"])
        score = target.get("score")
        return what + (f" ({score})" if score else "")
    if target.get("kind") == "neuron":
        return f"neuron {target.get('neuron')} of {target.get('site')} (position {target.get('position')})"
    if "label" in target:
        return f"{target['label']}" + (f" (id {target['id']})" if "id" in target else "")
    if "tokens" in target:
        return " ".join(str(t) for t in target["tokens"])
    if "id" in target:
        return f"id {target['id']}"
    if "ids" in target:
        return "ids " + ", ".join(str(i) for i in target["ids"])
    return json.dumps(target, default=str)


def describe(result: "Result") -> str:
    """One-line summary: method, target, probability (and model, delta when known)."""
    parts = [f"method: {result.method or '?'}"]
    target = fmt_target(result.target)
    if target:
        parts.append(f"target: {target}")
    p = result.probability
    if isinstance(p, (int, float)):
        parts.append(f"p = {p:.4f}")
    elif isinstance(p, (list, tuple)) and not is_generation(result):
        parts.append("p = [" + ", ".join(f"{float(x):.4f}" for x in p) + "]")
    if result.model_name:
        parts.append(f"model: {display_name(result.model_name)}")
    delta = result.delta
    if delta is not None:
        if hasattr(delta, "numel"):
            delta = cast("Tensor", delta).detach().cpu().double()
            delta = float(delta.abs().max()) if delta.numel() else None
        if delta is not None:
            parts.append(f"|delta| = {delta:.3g}")
    return printable(" | ".join(parts))
