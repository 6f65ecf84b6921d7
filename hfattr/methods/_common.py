"""What every Explainer method shares: token masks and turning tensors into Result fields."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ..hf.prepare import Prepared

SKIP = -1  # feature id of positions that are never perturbed


def token_mask(prep: Prepared, *, granularity: str = "token") -> Tensor:
    """Per-example feature ids ``(B, L, 1)``: one id per token (or word); ``SKIP`` where fixed."""
    B, L = prep.enc.input_ids.shape
    dev = prep.embeds.device
    if granularity == "token":
        ids = torch.arange(L, device=dev).expand(B, L).clone()
    elif granularity == "word":
        if prep.enc.word_ids is None:
            raise ValueError("granularity='word' needs a fast tokenizer (word ids)")
        ids = torch.tensor(
            [[L + w if w is not None else j for j, w in enumerate(row)] for row in prep.enc.word_ids], device=dev
        )
    else:
        raise ValueError(f"granularity must be 'token' or 'word', got {granularity!r}")
    ids[prep.fixed] = SKIP
    return ids.unsqueeze(-1)


def result_fields(prep: Prepared, i: int, scores: Tensor, *, rows: list[str] | None = None,
                  extras: dict | None = None, delta: Any = None) -> dict:
    """Fields of a Result for example ``i``; ``scores`` is ``(L,)`` or ``(R, L)`` over padded length."""
    enc, tok = prep.enc, prep.tokenizer
    pos = enc.positions(i)
    ids = enc.input_ids[i, pos].tolist()
    probs = prep_probability(prep, i)
    t = prep.targets[i]
    if rows is None and len(t.indices) > 1 and scores.dim() == 2:
        rows = list(t.labels)
    sc = scores[..., pos].detach().float().cpu() if scores.dtype in (torch.bfloat16, torch.float16) \
        else scores[..., pos].detach().cpu()
    return dict(
        tokens=tok.convert_ids_to_tokens(ids),
        token_ids=ids,
        scores=sc,
        text=enc.texts[i],
        offsets=None if enc.offsets is None else [tuple(enc.offsets[i][p]) for p in pos],
        special_mask=enc.special_mask[i, pos].tolist(),
        word_ids=None if enc.word_ids is None else [enc.word_ids[i][p] for p in pos],
        rows=rows,
        target=t.describe(),
        probability=probs,
        delta=delta,
        extras=extras or {},
    )


def prep_probability(prep: Prepared, i: int) -> float | list[float]:
    if not hasattr(prep, "_probs"):
        prep._probs = prep.scores(score="prob").double().cpu()  # type: ignore[attr-defined]
    row = prep._probs[i].tolist()  # type: ignore[attr-defined]
    return row[0] if len(row) == 1 else row
