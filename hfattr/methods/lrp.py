"""``method="lrp"``: layer-wise relevance propagation (AttnLRP, CP-LRP or ε-LRP) per token.

One forward pass with the rules attached and one backward pass per target row; a token's relevance
is its input embedding times the gradient, summed over the embedding dimension. Relevance at any
named site (``sites=``) is that site's output times its gradient, summed the same way.
"""

from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import Tensor

from ..core.finite import check_finite
from ..hf.architectures import resolve_sites
from ..hf.prepare import Prepared
from ..hf.scores import LINEAR_IN_LOGITS
from ..lrp.attach import attach_rules
from .fields import ResultFields, result_fields, sites_option

__all__ = ["lrp"]


def _first_tensor(out: Any) -> Tensor | None:
    if isinstance(out, Tensor):
        return out
    if isinstance(out, (tuple, list)):
        return next((o for o in out if isinstance(o, Tensor)), None)
    return None


def _with_first(out: Any, new: Tensor) -> Any:
    if isinstance(out, Tensor):
        return new
    items = list(out)
    i = next(k for k, o in enumerate(items) if isinstance(o, Tensor))
    items[i] = new
    return type(out)(items) if isinstance(out, tuple) else items


def _per_token(value: Tensor, grad: Tensor | None) -> Tensor:
    """Relevance summed over the last (feature) dimension, in float32 at least."""
    dtype = torch.float32 if value.dtype in (torch.float16, torch.bfloat16) else value.dtype
    if grad is None:
        return torch.zeros(value.shape[:-1], dtype=dtype, device=value.device)
    return (value.detach().to(dtype) * grad.to(dtype)).sum(-1)


def lrp(
    prep: Prepared, *, composite: str = "attnlrp", rules: Mapping | None = None, sites: Any = None, site: Any = None
) -> list[ResultFields]:
    """Token relevance by LRP for every target row (``composite``: ``"attnlrp"``, ``"cp-lrp"`` or
    ``"epsilon"``; ``rules`` overrides per module type, name pattern or role; ``sites`` adds the
    relevance at those sites to ``extras["site_relevance"]``; ``site=`` is its deprecated spelling)."""
    site = sites_option("lrp", sites, site)
    if prep.forward.score not in LINEAR_IN_LOGITS:
        raise ValueError(
            f"lrp explains logits or logit differences (score in {LINEAR_IN_LOGITS}); got score={prep.forward.score!r}"
        )
    model = prep.model
    sites = resolve_sites(model, site) if site is not None else []
    embeds = prep.embeds.detach().clone().requires_grad_(True)
    captured: dict[str, list[Tensor]] = {name: [] for name, _ in sites}
    with torch.enable_grad(), attach_rules(model, composite=composite, rules=rules) as att:
        handles = []
        try:
            for name, module in sites:

                def keep(mod: Any, args: tuple, out: Any, name: str = name) -> Any:
                    t = _first_tensor(out)
                    if t is None or not t.requires_grad:
                        return None
                    captured[name].append(t)
                    # the model goes on with a copy: an in-place change downstream cannot touch the site
                    return _with_first(out, t.clone())

                handles.append(module.register_forward_hook(keep))
            target_values = prep.forward(embeds, *prep.forward_args())  # (B, R)
        finally:
            for h in handles:
                h.remove()
        att.check()
        check_finite(
            target_values,
            "the model's prediction (the explained logits)",
            hint="check the model's weights and the input embeddings",
        )
        for name, values in captured.items():
            if len(values) != 1:
                raise ValueError(
                    f"site {name!r} produced {len(values)} relevance-carrying values in one forward "
                    "pass (not run, or run several times); choose a site that runs once"
                )
        site_values = [captured[name][0] for name, _ in sites]
        B, R = target_values.shape
        token_rel, site_rel = [], []
        for r in range(R):
            grads = torch.autograd.grad(
                target_values[:, r].sum(), [embeds] + site_values, retain_graph=r < R - 1, allow_unused=True
            )
            token_rel.append(_per_token(embeds, grads[0]))
            site_rel.append([_per_token(v, g) for v, g in zip(site_values, grads[1:])])
    rel = torch.stack(token_rel, dim=1)  # (B, R, L)
    delta = target_values.detach().to(rel.dtype) - rel.sum(-1)  # (B, R)
    L = prep.enc.input_ids.shape[1]
    out = []
    for i in range(B):
        extras: dict[str, Any] = {"composite": composite if isinstance(composite, str) else composite.name}
        if sites:
            pos = prep.enc.positions(i)
            per_site = {}
            for k, (name, _) in enumerate(sites):
                rows = torch.stack([site_rel[r][k][i] for r in range(R)])  # (R, L_site)
                if rows.shape[-1] == L:
                    rows = rows[:, pos]
                per_site[name] = (rows[0] if R == 1 else rows).detach().cpu()
            extras["sites"] = [name for name, _ in sites]
            extras["site_relevance"] = per_site
        attributions = rel[i, 0] if R == 1 else rel[i]
        d = delta[i, 0].item() if R == 1 else delta[i].detach().cpu()
        out.append(result_fields(prep, i, attributions, extras=extras, delta=d))
    return out
