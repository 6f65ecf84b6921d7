"""``method="saliency"``: the gradient of the target on the input embeddings, per token."""

from __future__ import annotations

from ..hf.prepare import Prepared
from .fields import ResultFields, per_text, row_inputs

__all__ = ["saliency"]


def saliency(prep: Prepared, *, abs: bool = True) -> list[ResultFields]:
    """Token score = ``Σ_d |∂target/∂x_d|`` over the token's input embedding (``abs=False``: the
    signed sum ``Σ_d ∂target/∂x_d``). Special tokens and padding score exactly 0."""
    if not isinstance(abs, bool):
        raise TypeError(f"abs must be a bool, got {abs!r}")
    rows = row_inputs(prep)
    grad = rows.gradient(prep.forward, rows.embeds)
    attributions = (grad.abs() if abs else grad).sum(-1).masked_fill(rows.fixed, 0.0)
    return per_text(prep, attributions)
