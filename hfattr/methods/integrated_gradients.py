"""``method="integrated_gradients"``: Integrated Gradients per token on the input embeddings."""

from __future__ import annotations

import torch

from ..core.sig import METHODS, quadrature
from ..hf.prepare import Prepared
from .fields import ResultFields, result_fields, row_inputs

__all__ = ["integrated_gradients"]

_TOKEN_BUDGET = 8192  # default rows per forward × sequence length


def integrated_gradients(
    prep: Prepared, *, n_steps: int = 50, integration: str = "gausslegendre", internal_batch_size: int | None = None
) -> list[ResultFields]:
    """Token score = Σ over the embedding of ``(x − b) · ∫₀¹ ∂target/∂x (b + α(x − b)) dα``.

    ``b`` is the baseline embedding (``baseline=``); special tokens and padding stay at their input
    (score exactly 0). ``integration`` is the quadrature rule (``gausslegendre`` or a ``riemann_*``
    rule) with ``n_steps`` points; ``internal_batch_size`` bounds the rows of one forward pass.
    ``delta`` is the completeness error ``Σ scores − (target(x) − target(b))`` of each explained row.
    """
    if integration not in METHODS:
        raise ValueError(f"integration must be one of {METHODS}, got {integration!r}")
    weights, alphas = quadrature(integration, n_steps)  # checks n_steps
    if internal_batch_size is not None and (
        isinstance(internal_batch_size, bool) or not isinstance(internal_batch_size, int) or internal_batch_size < 1
    ):
        raise ValueError(f"internal_batch_size must be an int >= 1 or None, got {internal_batch_size!r}")
    rows = row_inputs(prep)
    N, L, D = rows.embeds.shape
    x = rows.embeds
    base = torch.where(rows.fixed.unsqueeze(-1), x, rows.baseline)
    diff = x - base
    per_call = max(1, (internal_batch_size or max(N, _TOKEN_BUDGET // max(L, 1))) // N)
    total = torch.zeros_like(x)
    for a in range(0, len(alphas), per_call):
        al = torch.tensor(alphas[a : a + per_call], dtype=x.dtype, device=x.device).view(-1, 1, 1, 1)
        w = torch.tensor(weights[a : a + per_call], dtype=x.dtype, device=x.device).view(-1, 1, 1, 1)
        points = (base.unsqueeze(0) + al * diff.unsqueeze(0)).reshape(-1, L, D)
        grad = rows.gradient(prep.forward, points, repeats=al.shape[0]).view(-1, N, L, D)
        total += (w * grad).sum(0)
    attributions = (diff * total).sum(-1)
    with torch.no_grad():
        change = rows.explained(prep.forward(x, *rows.args)) - rows.explained(prep.forward(base, *rows.args))
    delta = (attributions.sum(-1) - change).double().cpu()
    if prep.n_rows == 1:
        return [result_fields(prep, i, attributions[i], delta=float(delta[i])) for i in range(N)]
    return [result_fields(prep, 0, attributions, delta=delta.tolist())]
