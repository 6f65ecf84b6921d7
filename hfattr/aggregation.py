"""Aggregations of generation Results (rows = generated tokens; NaN = an empty entry).

``rows(result, reduce)``: one score per column over all rows, ignoring empty entries.
``words(result, reduce)``: subwords merged into words on both axes. Word starts come from the
token strings when they carry markers (BPE ``Ġ``/``▁`` start a word, WordPiece ``##`` continues
one), otherwise from the Result's ``word_ids``. Groups never straddle the prompt/generation
boundary, and a merged cell is empty when its column word is the row's own word or later, so
the merged Result keeps the generation contract (docs/generation.md).
"""

from __future__ import annotations

import copy
import math
from typing import Any

import torch
from torch import Tensor

__all__ = ["nan_reduce", "rows", "words", "token_groups", "derived", "REDUCES"]

REDUCES = ("sum", "mean", "max", "absmax")
_BPE_STARTS = ("Ġ", "▁")


def nan_reduce(block: Tensor, how: str, dim: int = -1) -> Tensor:
    """``how`` over ``dim`` ignoring NaN; NaN where every entry is NaN."""
    if how not in REDUCES:
        raise ValueError(f"reduce must be one of {REDUCES}, got {how!r}")
    block = block if block.is_floating_point() else block.double()
    empty = torch.isnan(block).all(dim)
    if how == "sum":
        out = block.nansum(dim)
    elif how == "mean":
        out = block.nanmean(dim)
    elif how == "max":
        out = block.nan_to_num(nan=-math.inf).amax(dim)
    else:
        pick = block.abs().nan_to_num(nan=-1.0).argmax(dim, keepdim=True)
        out = block.gather(dim, pick).squeeze(dim)
    return torch.where(empty, torch.full_like(out, math.nan), out)


def _marker_groups(tokens: list[str], special: list[bool]) -> list[list[int]] | None:
    bpe = any(t.startswith(_BPE_STARTS) for t in tokens)
    wordpiece = any(t.startswith("##") for t in tokens)
    if not (bpe or wordpiece):
        return None
    groups: list[list[int]] = []
    for i, tok in enumerate(tokens):
        after_special = not groups or special[groups[-1][-1]]
        if special[i]:
            groups.append([i])
        elif after_special or (tok.startswith(_BPE_STARTS) if bpe else not tok.startswith("##")):
            groups.append([i])
        else:
            groups[-1].append(i)
    return groups


def _id_groups(word_ids: list[int | None] | None, special: list[bool]) -> list[list[int]]:
    groups: list[list[int]] = []
    last: Any = object()
    for i, wid in enumerate(word_ids or [None] * len(special)):
        if special[i] or wid is None or wid != last or not groups:
            groups.append([i])
        else:
            groups[-1].append(i)
        last = None if special[i] else wid
    return groups


def token_groups(
    tokens: list[str], special: list[bool], word_ids: list[int | None] | None, *, split_at: int | None = None
) -> list[list[int]]:
    """Token indices of each word (markers first, else word ids), never across ``split_at``."""
    groups = _marker_groups(tokens, special) or _id_groups(word_ids, special)
    if split_at is None:
        return groups
    out: list[list[int]] = []
    for g in groups:
        before, after = [i for i in g if i < split_at], [i for i in g if i >= split_at]
        out.extend(x for x in (before, after) if x)
    return out


def derived(result: Any, **changes: Any) -> Any:
    """A new Result that keeps ``result``'s text, rows, target, probability, delta and provenance
    (method, options, model name, version, extras), copied, except where ``changes`` says otherwise."""
    from .result import Result

    kept = {
        "text": lambda: result.text,
        "rows": lambda: copy.copy(result.rows),
        "target": lambda: copy.deepcopy(result.target),
        "probability": lambda: copy.deepcopy(result.probability),
        "method": lambda: result.method,
        "options": lambda: copy.deepcopy(result.options),
        "delta": lambda: result.delta,
        "model_name": lambda: result.model_name,
        "hfattr_version": lambda: result.hfattr_version,
        "extras": lambda: copy.deepcopy(result.extras),
    }
    return Result(**{k: make() for k, make in kept.items() if k not in changes}, **changes)


def rows(result: Any, reduce: str = "sum") -> Any:
    """One score per column: ``reduce`` over the rows, ignoring empty (NaN) entries."""
    if result.scores.dim() != 2:
        raise ValueError("aggregate_rows needs a Result with 2-D scores (rows × tokens)")
    attributions = nan_reduce(result.scores, reduce, dim=0)
    extras = copy.deepcopy(result.extras)
    extras["aggregate"] = {"rows": reduce, "row_labels": list(result.rows or [])}
    return derived(
        result,
        tokens=list(result.tokens),
        token_ids=list(result.token_ids),
        scores=attributions,
        offsets=copy.copy(result.offsets),
        special_mask=copy.copy(result.special_mask),
        word_ids=copy.copy(result.word_ids),
        rows=None,
        delta=None,
        extras=extras,
    )


def _merge_steps(steps: dict, row_groups: list[list[int]]) -> dict:
    out: dict[str, list] = {}
    for key, values in steps.items():
        merged = []
        for g in row_groups:
            vals = [values[j] for j in g]
            if key == "probability":
                merged.append(math.prod(vals))
            elif key == "log_prob":
                merged.append(sum(vals))
            else:  # entropy, rank, user values: those of the word's first piece
                merged.append(vals[0])
        out[key] = merged
    return out


def words(result: Any, reduce: str = "sum") -> Any:
    """Subwords merged into words on both axes of a generation Result."""
    t = result.target
    n = len(result.tokens)
    special = result.special_mask or [False] * n
    G = result.scores.shape[0]
    causal = n == t.get("prompt_length", -1) + G and "positions" in t and t["positions"][0] == n - G - 1
    P = n - G if causal else n
    cols = token_groups(result.tokens, special, result.word_ids, split_at=P if causal else None)
    if causal:
        row_groups = [[i - P for i in g] for g in cols if g[0] >= P]
    else:
        row_tokens = list(t.get("tokens") or result.rows or [])
        row_groups = token_groups(row_tokens, [False] * G, None)
    merged_cols = torch.stack([nan_reduce(result.scores[:, g], reduce) for g in cols], dim=-1)  # (G, W)
    merged = torch.stack([nan_reduce(merged_cols[g].T, reduce) for g in row_groups], dim=0)  # (G', W)
    n_prompt = sum(1 for g in cols if g[0] < P)
    if causal:  # a word's own column and the later ones stay empty
        own = torch.arange(len(row_groups)).unsqueeze(1) + n_prompt
        merged[torch.arange(len(cols)).unsqueeze(0) >= own] = math.nan
    tokens, offsets = [], []
    for g in cols:
        word, span = result._unit_text(g, special[g[0]])
        tokens.append(word)
        offsets.append(span)
    row_labels: list[str] = []
    for g in row_groups:
        if causal:
            row_labels.append(tokens[n_prompt + len(row_labels)])
        else:
            pieces = [str((t.get("tokens") or result.rows)[j]) for j in g]
            row_labels.append(pieces[0] + "".join(p[2:] if p.startswith("##") else p.lstrip("Ġ▁") for p in pieces[1:]))
    target = copy.deepcopy(t)
    target.update(
        ids=[t["ids"][g[0]] for g in row_groups], tokens=row_labels, token_groups=[list(g) for g in row_groups]
    )
    if causal:
        target["positions"] = [n_prompt + w - 1 for w in range(len(row_groups))]
        target["prompt_length"] = n_prompt
    else:
        target["positions"] = list(range(len(row_groups)))
    extras = copy.deepcopy(result.extras)
    if "step_scores" in extras:
        extras["step_scores"] = _merge_steps(extras["step_scores"], row_groups)
    extras["aggregate"] = {"level": "word", "reduce": reduce, "token_groups": cols, "row_groups": row_groups}
    prob = result.probability
    if isinstance(prob, list):
        prob = [math.prod(prob[j] for j in g) for g in row_groups]
    return derived(
        result,
        tokens=tokens,
        token_ids=[result.token_ids[g[0]] for g in cols],
        scores=merged,
        offsets=offsets if result.offsets is not None else None,
        special_mask=[special[g[0]] for g in cols],
        word_ids=[None if special[g[0]] else k for k, g in enumerate(cols)],
        rows=row_labels,
        target=target,
        probability=prob,
        delta=None,
        extras=extras,
    )
