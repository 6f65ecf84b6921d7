"""``method="ablation"``: token- (or word-) level feature ablation on the input embeddings."""

from __future__ import annotations

from ..core.ablation import feature_ablation
from ..hf.prepare import Prepared
from .fields import SKIP, ResultFields, per_text, token_mask


def ablation(
    prep: Prepared,
    *,
    granularity: str = "token",
    perturbations_per_eval: int = 16,
    show_progress: bool = False,
    fast: bool = True,
) -> list[ResultFields]:
    """Score of token i = target(x) − target(x with token i's embedding set to the baseline's).

    On causal LMs (``fast``) each perturbation recomputes only the positions from the ablated
    token on; the numbers are the same.
    """
    (attr,) = feature_ablation(
        prep.perturbation_forward(fast=fast, reuse_input=True),
        (prep.embeds,),
        baselines=(prep.baseline,),
        additional_forward_args=prep.forward_args(),
        feature_mask=(token_mask(prep, granularity=granularity),),
        perturbations_per_eval=perturbations_per_eval,
        show_progress=show_progress,
        skip_id=SKIP,
    )
    per_token = attr[..., 0]  # (B, L) for one row per text; (R, L) for one text with R rows
    return per_text(prep, per_token)
