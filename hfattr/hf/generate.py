"""Generate continuations with ``model.generate`` and turn them into targets (one target row per new token)."""

from __future__ import annotations

import contextlib
from typing import Any

import torch
from torch import nn

from .access import model_config, pretrained
from .targets import Generated, head_kind
from .text import Encoded

__all__ = ["generate_targets", "check_generation_args"]

_RESERVED = ("input_ids", "attention_mask", "inputs_embeds", "max_new_tokens", "decoder_input_ids")


def check_generation_args(model: nn.Module, max_new_tokens: Any, generation_kwargs: Any, seed: Any) -> dict:
    """Validate the generation options before any work; returns the keyword arguments for ``generate``."""
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise ValueError(f"generate (max_new_tokens) must be an int >= 1, got {max_new_tokens!r}")
    kind = head_kind(model)
    if kind not in ("causal", "seq2seq"):
        raise ValueError(f"generate= needs a causal-LM or seq2seq model; {type(model).__name__} has a {kind} head")
    if not callable(getattr(model, "generate", None)):
        raise ValueError(f"{type(model).__name__} has no generate() method")
    if generation_kwargs is None:
        generation_kwargs = {}
    if not isinstance(generation_kwargs, dict):
        raise TypeError(
            f"generation_kwargs must be a dict of model.generate options, got {type(generation_kwargs).__name__}"
        )
    bad = sorted(set(generation_kwargs) & set(_RESERVED))
    if bad:
        raise ValueError(
            f"generation_kwargs must not set {bad}: hfattr passes the prompt itself "
            "(use generate=N for the number of new tokens)"
        )
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise TypeError(f"seed must be an int or None, got {seed!r}")
    return {"max_new_tokens": max_new_tokens, **generation_kwargs}


def _eos_ids(model: nn.Module, tokenizer: Any, kwargs: dict) -> set[int]:
    eos = kwargs.get("eos_token_id", getattr(getattr(model, "generation_config", None), "eos_token_id", None))
    if eos is None:
        eos = getattr(tokenizer, "eos_token_id", None)
    if eos is None:
        return set()
    return {int(e) for e in (eos if isinstance(eos, (list, tuple)) else [eos])}


@contextlib.contextmanager
def _seeded(seed: int | None, device: torch.device):
    if seed is None:
        yield
        return
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


@torch.no_grad()
def generate_targets(
    model: nn.Module, tokenizer: Any, enc: Encoded, kwargs: dict, *, seed: int | None = None
) -> list[Generated]:
    """One :class:`Generated` per text of ``enc``.

    Texts of equal length are generated together, without padding, so a batch gives the same tokens
    as one text at a time; the new tokens end at the first end-of-sequence token (kept).
    """
    kind = head_kind(model)
    kwargs = dict(kwargs)
    gen_cfg = getattr(model, "generation_config", None)
    if getattr(gen_cfg, "pad_token_id", None) is None and "pad_token_id" not in kwargs:
        pad = getattr(tokenizer, "pad_token_id", None)
        if pad is None:
            pad = next(iter(_eos_ids(model, tokenizer, kwargs)), None)
        if pad is not None:
            kwargs["pad_token_id"] = pad
    eos = _eos_ids(model, tokenizer, kwargs)
    start = None
    if kind == "seq2seq":
        start = getattr(gen_cfg, "decoder_start_token_id", None)
        if start is None:
            start = model_config(model).decoder_start_token_id
    real = [enc.positions(i) for i in range(enc.batch_size)]
    groups: dict[int, list[int]] = {}
    for i, pos in enumerate(real):
        groups.setdefault(len(pos), []).append(i)
    out: list[Generated | None] = [None] * enc.batch_size
    dev = enc.input_ids.device
    with _seeded(seed, dev):
        for n, members in groups.items():
            ids = torch.stack([enc.input_ids[i, real[i]] for i in members])
            extra = {k: torch.stack([v[i, real[i]] for i in members]) for k, v in enc.extra.items()}
            seqs = pretrained(model).generate(input_ids=ids, attention_mask=torch.ones_like(ids), **extra, **kwargs)
            if not isinstance(seqs, torch.Tensor):  # return_dict_in_generate=True
                seqs = seqs.sequences
            new = seqs[:, n:] if kind == "causal" else seqs
            for new_ids, i in zip(new.tolist(), members):
                if kind == "seq2seq" and new_ids and start is not None and new_ids[0] == start:
                    new_ids = new_ids[1:]
                cut = next((k for k, t in enumerate(new_ids) if t in eos), None)
                if cut is not None:
                    new_ids = new_ids[: cut + 1]
                if not new_ids:
                    raise ValueError(f"generation for text {i} produced no new token")
                out[i] = Generated(tuple(new_ids), tokenizer.decode(new_ids, skip_special_tokens=True))
    return out  # type: ignore[return-value]
