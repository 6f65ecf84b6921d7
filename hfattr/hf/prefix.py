"""Prefix reuse on causal models: a perturbation at position p leaves positions < p unchanged.

``PrefixReuseForward`` wraps a ``TargetForward`` of a causal LM. It runs the unperturbed batch
once with a key/value cache; each later call finds the first position where any sample differs from
its original text (samples say which text they come from through ``example_ids``) and runs only
positions from there on, on top of the cached prefix (logits only at the positions the target rows
read, where the model takes ``logits_to_keep``). Target rows that read a position before that
point take the unperturbed logits. Gradients flow as usual (the cache is a constant, which
it is for every position before the change). Used only where the cache is a plain per-layer
key/value cache; otherwise every call is a full forward.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from .targets import TargetForward, kept_positions

__all__ = ["PrefixReuseForward", "supports_prefix_reuse"]


def _plain_layers(cache: Any) -> list | None:
    layers = getattr(cache, "layers", None)
    if not layers:
        return None
    for layer in layers:
        if type(layer).__name__ != "DynamicLayer" or getattr(layer, "keys", None) is None:
            return None
    return list(layers)


def supports_prefix_reuse(forward: TargetForward) -> bool:
    """Only causal LMs; the cache type is checked when the wrapper is built."""
    return forward.kind == "causal"


class PrefixReuseForward:
    """Same signature and numbers as the wrapped ``TargetForward``, computing only suffixes.

    Callers that know where their perturbation starts pass ``first_changed`` (SIG does: a sample at
    the end of its path equals the input, yet needs its gradient).
    """

    accepts_first_changed = True

    def __init__(self, forward: TargetForward, embeds: Tensor, args: tuple) -> None:
        from transformers import DynamicCache

        self.forward = forward
        self.model = forward.model
        self.original = embeds.detach()
        self.calls = self.full_calls = 0
        self.positions_run = 0
        attention_mask, positions = args[0], args[1]
        import inspect

        params = inspect.signature(self.model.forward).parameters
        self._cache_kw = "cache" if "cache" in params else "past_key_values"
        kw: dict[str, Any] = {}
        rel = positions
        if forward.keeps_logits:  # the LM head only where a target row reads
            keep, rel = kept_positions(positions, embeds.shape[1])
            kw["logits_to_keep"] = keep
        try:
            with torch.no_grad():
                out = self.model(inputs_embeds=self.original, attention_mask=attention_mask, use_cache=True, **kw)
        except TypeError:  # a model without a key/value cache: every call is a full forward
            out = None
        self._cache_type = DynamicCache
        cache = None if out is None else (getattr(out, "cache", None) or getattr(out, "past_key_values", None))
        self.layers = _plain_layers(cache)
        self.base_logits = forward.row_logits(out.logits, rel).detach() if self.layers else None  # (B, R, V)
        self.keys = [layer.keys.detach() for layer in self.layers] if self.layers else None
        self.values = [layer.values.detach() for layer in self.layers] if self.layers else None

    @property
    def enabled(self) -> bool:
        return self.layers is not None

    def __call__(
        self,
        embeds: Tensor,
        attention_mask: Tensor,
        positions: Tensor,
        indices: Tensor,
        decoder_ids: Tensor | None = None,
        token_type_ids: Tensor | None = None,
        example_ids: Tensor | None = None,
        first_changed: int | None = None,
    ) -> Tensor:
        self.calls += 1
        N, L = embeds.shape[:2]
        if not self.enabled or example_ids is None or L != self.original.shape[1]:
            self.full_calls += 1
            self.positions_run += N * L
            return self.forward(embeds, attention_mask, positions, indices, decoder_ids, token_type_ids)
        ex = example_ids.to(self.original.device)
        with torch.no_grad():
            changed = (embeds.detach() != self.original.index_select(0, ex)).flatten(2).any(-1).any(0)
        cols = changed.nonzero()
        start = int(cols[0]) if len(cols) else L
        if first_changed is not None:
            start = min(start, first_changed)
        if start == 0:
            self.full_calls += 1
            self.positions_run += N * L
            return self.forward(embeds, attention_mask, positions, indices, decoder_ids, token_type_ids)
        assert self.base_logits is not None and self.keys is not None and self.values is not None  # enabled
        base = self.base_logits.index_select(0, ex)  # (N, R, V)
        if start == L:
            return self.forward.finish(base, indices)
        cache = self._cache_type()
        same = bool((ex == ex[0]).all())  # one text (the common case): a view, no copy
        for layer_idx, (k, v) in enumerate(zip(self.keys, self.values)):
            if same:
                k, v = k[ex[0] : ex[0] + 1].expand(N, -1, -1, -1), v[ex[0] : ex[0] + 1].expand(N, -1, -1, -1)
            else:
                k, v = k.index_select(0, ex), v.index_select(0, ex)
            cache.update(k[:, :, :start], v[:, :, :start], layer_idx)
        pos = positions.to(embeds.device)
        late = pos >= start
        kw: dict[str, Any] = {self._cache_kw: cache}
        rel = (pos - start).clamp(min=0)
        if self.forward.keeps_logits:  # the LM head only where a target row reads
            keep, rel = kept_positions(torch.where(late, pos - start, L), L - start)
            kw["logits_to_keep"] = keep
        out = self.model(inputs_embeds=embeds[:, start:], attention_mask=attention_mask, use_cache=True, **kw)
        self.positions_run += N * (L - start)
        suffix = out.logits  # (N, kept positions of the suffix, V)
        samples = torch.arange(N, device=suffix.device).unsqueeze(1)
        from_suffix = suffix[samples, rel]  # (N, R, V)
        row_logits = torch.where(late.unsqueeze(-1), from_suffix, base.to(from_suffix.dtype))
        return self.forward.finish(row_logits, indices)
