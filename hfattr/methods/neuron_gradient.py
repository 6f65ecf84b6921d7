"""``method="neuron_gradient"``: gradient of one neuron of a site on the input embeddings, per token."""

from __future__ import annotations

from typing import Any

import torch

from ..core.layer import neuron_gradient as core_neuron_gradient
from ..hf.architectures import get_architecture, resolve_sites
from ..hf.prepare import Prepared
from .fields import ResultFields, result_fields, sites_option

_REDUCE = ("norm", "sum", "input_x_gradient")


def neuron_gradient(
    prep: Prepared, *, sites: Any = None, neuron: int, position: Any = "last", reduce: str = "norm", site: Any = None
) -> list[ResultFields]:
    """Gradient of the neuron ``neuron`` of the one site ``sites`` names, at ``position`` (``"last"``,
    ``"all"`` or an index among the real tokens), reduced over the embedding dimension per token.
    ``site=`` is the deprecated spelling of ``sites=``.

    With a generation (or continuation) and ``position="last"``, row j is the neuron at the step
    that produced generated token j (the position reading it; a decoder position on seq2seq)."""
    site = sites_option("neuron_gradient", sites, site)
    if site is None:
        raise TypeError("method 'neuron_gradient' needs sites= (the one site whose neuron is explained)")
    if reduce not in _REDUCE:
        raise ValueError(f"reduce must be one of {_REDUCE}, got {reduce!r}")
    found = resolve_sites(prep.model, site)
    if len(found) != 1:
        raise ValueError(
            f"site {site!r} matches {len(found)} modules ({[n for n, _ in found][:5]}); "
            "neuron_gradient needs exactly one"
        )
    name, module = found[0]
    if isinstance(neuron, bool) or not isinstance(neuron, int):
        raise TypeError(f"neuron must be an int index along the site's last dimension, got {neuron!r}")
    if position == "last" and prep.targets[0].is_matrix:
        return _per_row(prep, name, module, neuron, reduce)
    B = prep.enc.batch_size
    real = [prep.enc.positions(i) for i in range(B)]
    if position == "last":
        pos = [r[-1] for r in real]
    elif position == "all":
        pos = None
    elif isinstance(position, int) and not isinstance(position, bool):
        for r in real:
            if not -len(r) <= position < len(r):
                raise ValueError(f"position {position} is out of range for a text of {len(r)} tokens")
        pos = [r[position] for r in real]
    else:
        raise ValueError(f"position must be 'last', 'all' or an int, got {position!r}")
    samples = torch.arange(B)
    mask = prep.enc.attention_mask

    def selector(value: Any) -> torch.Tensor:
        if isinstance(value, tuple):  # e.g. eager attention's (hidden states, attention weights)
            value = value[0]
        if not -value.shape[-1] <= neuron < value.shape[-1]:
            raise ValueError(f"neuron {neuron} is out of range for site {name!r} of width {value.shape[-1]}")
        if value.dim() == 2:
            return value[:, neuron]
        if pos is None:
            return (value[..., neuron] * mask.to(value.dtype)).sum(-1)
        return value[samples.to(value.device), torch.tensor(pos, device=value.device), neuron]

    shared = get_architecture(prep.model).shared_blocks
    (grad,) = core_neuron_gradient(
        prep.forward,
        module,
        (prep.embeds,),
        selector,
        additional_forward_args=prep.forward_args(),
        stop_early=not shared,
    )
    per_token = _reduced(grad, prep.embeds, reduce)
    out = []
    for i in range(B):
        fields = result_fields(prep, i, per_token[i])
        fields.target = {"kind": "neuron", "site": name, "neuron": neuron, "position": "all" if pos is None else pos[i]}
        fields.probability = None
        out.append(fields)
    return out


def _reduced(grad: torch.Tensor, embeds: torch.Tensor, reduce: str) -> torch.Tensor:
    if reduce == "norm":
        return grad.norm(dim=-1)
    if reduce == "sum":
        return grad.sum(-1)
    return (grad * embeds).sum(-1)


def _per_row(prep: Prepared, name: str, module: Any, neuron: int, reduce: str) -> list[ResultFields]:
    """One row per generated token: the neuron at the step that produced it (one text)."""
    t = prep.targets[0]
    R = len(t.indices)
    if t.kind == "seq2seq" and not name.startswith("decoder."):
        raise ValueError(
            f"site {name!r} is in the encoder, which does not run per generated token; choose a "
            "decoder site for one row per generated token, or position='all' or an int"
        )
    steps = torch.tensor(t.positions)
    embeds = prep.embeds.expand(R, -1, -1)
    args = tuple(a.expand(R, *a.shape[1:]) if isinstance(a, torch.Tensor) else a for a in prep.forward_args())

    def selector(value: torch.Tensor) -> torch.Tensor:
        if not -value.shape[-1] <= neuron < value.shape[-1]:
            raise ValueError(f"neuron {neuron} is out of range for site {name!r} of width {value.shape[-1]}")
        if value.dim() != 3 or value.shape[0] != R:
            raise ValueError(f"site {name!r} gives values of shape {tuple(value.shape)}, not one per position")
        return value[torch.arange(R, device=value.device), steps.to(value.device), neuron]

    shared = get_architecture(prep.model).shared_blocks
    (grad,) = core_neuron_gradient(
        prep.forward, module, (embeds,), selector, additional_forward_args=args, stop_early=not shared
    )
    fields = result_fields(prep, 0, _reduced(grad, embeds, reduce))
    fields.target.update(site=name, neuron=neuron, explained="neuron")
    fields.target.pop("score", None)
    return [fields]
