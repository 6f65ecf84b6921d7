"""``method="input_x_gradient"``: gradient × input per token on the input embeddings."""

from __future__ import annotations

from ..hf.prepare import Prepared
from .fields import ResultFields, per_text, row_inputs

__all__ = ["input_x_gradient"]


def input_x_gradient(prep: Prepared, *, from_baseline: bool = False) -> list[ResultFields]:
    """Token score = ``Σ_d x_d · ∂target/∂x_d`` over the token's input embedding ``x``.

    With ``from_baseline=True`` the input is measured from the baseline embedding (``baseline=``):
    ``Σ_d (x − b)_d · ∂target/∂x_d``. Special tokens and padding score exactly 0.
    """
    if not isinstance(from_baseline, bool):
        raise TypeError(f"from_baseline must be a bool, got {from_baseline!r}")
    rows = row_inputs(prep)
    grad = rows.gradient(prep.forward, rows.embeds)
    start = rows.embeds - rows.baseline if from_baseline else rows.embeds
    attributions = (start * grad).sum(-1).masked_fill(rows.fixed, 0.0)
    return per_text(prep, attributions)
