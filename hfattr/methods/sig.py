"""``method="sig"``: Sequential Integrated Gradients per token on the input embeddings."""

from __future__ import annotations

from typing import Any

import torch

from ..core.sig import METHODS, sequential_integrated_gradients
from ..hf.prepare import Prepared
from .fields import ResultFields, result_fields


def sig(
    prep: Prepared,
    *,
    n_steps: int | str = 50,
    integration: str = "gausslegendre",
    internal_batch_size: int | None = None,
    tol: float = 1e-3,
    max_steps: int = 33,
    show_progress: bool = False,
    fast: bool = True,
    memory_budget: int | None = None,
) -> list[ResultFields]:
    """Token score = Σ over the embedding of SIG; special tokens and padding are skipped (exactly 0).

    ``memory_budget`` (bytes) bounds the memory of one forward/backward call when
    ``internal_batch_size`` is not given (default: a share of the free memory, docs/performance.md).

    ``integration`` is the quadrature rule (the reference's ``method``: ``gausslegendre`` or a
    ``riemann_*`` rule).

    ``n_steps="auto"`` refines each token with nested rules (5, 9, 17, 33 ... points, reusing every
    evaluated point) until its completeness error is below ``tol`` (at most ``max_steps`` points).
    On causal LMs the default baseline is the first of the unk, eos, bos, pad and mask tokens with a
    non-zero embedding (see docs/generation.md).

    ``extras`` holds the integration points used per token and the per-token completeness error
    (score − (target(x) − target(x with that token at the baseline))).
    """
    if integration not in METHODS:
        raise ValueError(f"integration must be one of {METHODS}, got {integration!r}")
    if isinstance(max_steps, bool) or not isinstance(max_steps, int) or max_steps < 1:
        raise ValueError(f"max_steps must be an int >= 1, got {max_steps!r}")
    if n_steps == "auto" and integration != "gausslegendre":
        raise ValueError("n_steps='auto' chooses its own nested rules; leave integration='gausslegendre' (the default)")
    if (
        internal_batch_size is not None
        and not isinstance(internal_batch_size, bool)
        and isinstance(internal_batch_size, int)
        and internal_batch_size < 1
    ):
        raise ValueError(f"internal_batch_size must be >= 1 (or None), got {internal_batch_size}")
    if prep.baseline_default and prep.forward.kind == "causal":
        from ..hf.prepare import decoder_baseline_id

        prep = prep.with_baseline(decoder_baseline_id(prep.model, prep.tokenizer))
    B, L, _ = prep.embeds.shape
    R = prep.n_rows
    embeds, base, active = prep.embeds, prep.baseline, ~prep.fixed
    args = prep.forward_args()
    if R == 1:
        target: Any = 0
    else:  # one text, several target rows: one copy of the text per row
        embeds, base, active = embeds.expand(R, -1, -1), base.expand(R, -1, -1), active.expand(R, -1)
        if prep.targets[0].kind == "continuation":  # causal: columns after a row's read position get 0
            read = torch.tensor(prep.targets[0].positions, device=active.device).unsqueeze(1)
            active = active & (torch.arange(L, device=active.device).unsqueeze(0) <= read)
        args = tuple(a.expand(R, *a.shape[1:]) if isinstance(a, torch.Tensor) else a for a in args)
        target = list(range(R))
    chunk = internal_batch_size  # None: the core's default budget of tokens per call
    (attr,), info = sequential_integrated_gradients(
        prep.perturbation_forward(fast=fast),
        (embeds,),
        baselines=(base,),
        target=target,
        additional_forward_args=args,
        n_steps=n_steps,
        method=integration,
        internal_batch_size=chunk,
        positions=active,
        show_progress=show_progress,
        tol=tol,
        max_steps=max_steps,
        with_completeness=True,
        memory_budget=memory_budget,
    )
    per_token = attr.sum(-1)  # (rows, L)
    err = info.completeness_error
    assert err is not None  # asked for with with_completeness=True
    out = []
    for i in range(B if R == 1 else 1):
        sl = slice(i, i + 1) if R == 1 else slice(None)
        attributions = per_token[i] if R == 1 else per_token
        pos = prep.enc.positions(i)
        extras = {
            "steps": info.steps[sl][..., pos].squeeze(0).tolist(),
            "completeness_error": err[sl][..., pos].squeeze(0).tolist(),
            "passes": info.passes,
            "baseline_id": prep.baseline_id,
        }
        fields = result_fields(prep, i, attributions, extras=extras, delta=float(err[sl].abs().max()))
        out.append(fields)
    return out
