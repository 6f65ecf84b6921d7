"""Non-finite values are never silent: a check that names where NaN or Inf appeared."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

__all__ = ["NonFiniteError", "check_finite", "nonfinite_where"]


class NonFiniteError(ValueError):
    """NaN or Inf where a number was expected (a ValueError naming where it appeared)."""


def nonfinite_where(t: Tensor, *, ignore: Tensor | None = None) -> str | None:
    """``None`` if ``t`` is finite (outside ``ignore``), else a description of the first bad entry."""
    if not isinstance(t, Tensor) or not (t.is_floating_point() or t.is_complex()):
        return None
    bad = ~torch.isfinite(t.detach())
    if ignore is not None:
        bad = bad & ~ignore.to(bad.device)
    if not bool(bad.any()):
        return None
    idx = tuple(int(i) for i in bad.nonzero()[0].tolist())
    value = t.detach()[idx].item()
    n = int(bad.sum())
    return f"{value} at index {idx}" + (f" (and {n - 1} more)" if n > 1 else "")


def check_finite(t: Any, where: str, *, hint: str = "", ignore: Tensor | None = None) -> None:
    """Raise :class:`NonFiniteError` if the tensor ``t`` holds NaN or Inf (``where`` names it)."""
    found = nonfinite_where(t, ignore=ignore) if isinstance(t, Tensor) else None
    if found is not None:
        raise NonFiniteError(f"{where} is not finite: {found}" + (f"; {hint}" if hint else ""))
