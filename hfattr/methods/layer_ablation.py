"""``method="layer_ablation"``: for each site, ablate its output at each token position.

Gives a sites × tokens grid (``scores``) plus the effect of ablating the whole site
(``extras["site_scores"]``). Several target rows (a continuation) are explained by their sum.
"""

from __future__ import annotations

from typing import Any

import torch

from ..core.layer import layer_feature_ablation
from ..hf.architectures import resolve_sites
from ..hf.prepare import Prepared
from .fields import SKIP, ResultFields, result_fields


class SummedRows:
    """The target rows summed; passes ``first_changed`` through to a prefix-reusing forward."""

    def __init__(self, forward: Any) -> None:
        self.forward = forward
        self.accepts_first_changed = getattr(forward, "accepts_first_changed", False)

    def __call__(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        return self.forward(*args, **kwargs).sum(-1)


def layer_ablation(
    prep: Prepared,
    *,
    sites: Any = "attention",
    layer_baseline: float = 0.0,
    perturbations_per_eval: int = 16,
    fast: bool = True,
) -> list[ResultFields]:
    """Per site and token: target(x) − target(x with the site's output at that token ablated).

    Fast paths (``fast``, same numbers): blocks before the site are not recomputed, and on causal
    LMs only the positions from the ablated one on are.
    """
    if (
        getattr(prep.model.config, "is_encoder_decoder", False)
        and isinstance(sites, str)
        and sites in ("attention", "mlp", "block", "blocks")
    ):
        sites = f"encoder.{sites}"  # columns are input (encoder) tokens
    resolved = resolve_sites(prep.model, sites)
    B, L = prep.enc.input_ids.shape
    dev = prep.embeds.device
    pad = ~prep.enc.attention_mask.bool()
    per_token = torch.arange(L, device=dev).expand(B, L).clone()
    per_token[pad] = SKIP
    whole = torch.zeros(B, L, dtype=torch.long, device=dev)
    whole[pad] = SKIP

    total = SummedRows(prep.perturbation_forward(fast=fast))

    grid, site_scores = [], []
    for name, module in resolved:
        if name.startswith("decoder."):
            raise ValueError(
                f"site {name!r} is in the decoder; layer_ablation scores encoder/input token positions, "
                "so choose encoder sites (e.g. 'encoder.attention')"
            )
        runs = []
        for mask in (per_token, whole):
            try:
                (attr,), _ = layer_feature_ablation(
                    total,
                    module,
                    (prep.embeds,),
                    layer_baselines=layer_baseline,
                    additional_forward_args=prep.forward_args(),
                    layer_mask=mask.unsqueeze(-1),
                    perturbations_per_eval=perturbations_per_eval,
                    skip_id=SKIP,
                    root=prep.model,
                    fast=fast,
                    first_only=True,
                )
            except ValueError as err:
                if "layer_mask" not in str(err):
                    raise
                raise ValueError(
                    f"site {name!r} ({type(module).__name__}) does not give one value per input token (length "
                    f"{L}); layer_ablation needs a per-token site inside the transformer blocks, e.g. "
                    "'attention', 'mlp' or 'blocks'"
                ) from None
            if attr.dim() < 2 or attr.shape[1] != L:
                raise ValueError(
                    f"site {name!r} gives values of shape {tuple(attr.shape)}, not one per input token "
                    f"(length {L}); choose a site inside the transformer blocks"
                )
            runs.append(attr.reshape(B, L, -1)[..., 0])
        grid.append(runs[0])
        first = prep.enc.attention_mask.float().argmax(1)
        site_scores.append(runs[1][torch.arange(B, device=dev), first])
    names = [n for n, _ in resolved]
    grid_t = torch.stack(grid, dim=1)  # (B, S, L)
    site_t = torch.stack(site_scores, dim=1)  # (B, S)
    out = []
    for i in range(B):
        fields = result_fields(
            prep, i, grid_t[i], rows=names, extras={"site_scores": site_t[i].detach().cpu().tolist(), "sites": names}
        )
        out.append(fields)
    return out
