"""Faithfulness metrics for token attributions: does removing what a Result ranks highest change
the model's output?

For a Result ``r`` explaining the probability ``p(y | x)`` of its target ``y``, with ``x∖S`` the
input with the tokens ``S`` removed or replaced, and ``top(k)`` the ``k`` highest-scored
non-special tokens (ERASER, DeYoung et al. 2020; the SIG paper, Enguehard 2023):

- ``comprehensiveness = p(y | x) − p(y | x∖top(k))`` (higher is better)
- ``sufficiency       = p(y | x) − p(y | x∖(all but top(k)))`` (lower is better)
- ``log_odds          = log p(y | x∖top(k)) − log p(y | x)`` (lower is better)
- ``aopc``: the mean of those drops over a range of ``k`` (deletion curve: comprehensiveness;
  insertion curve: sufficiency).

Special tokens (and masked-LM target positions) are never removed or replaced. Every function
takes an :class:`~hfattr.Explainer` (or a model with ``tokenizer=``) and one Result (→ a float)
or a list (→ a float64 tensor, one value per Result). See ``docs/faithfulness.md``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import torch
from torch import Tensor, nn

from ..core.hooks import preserved_state
from ..hf.prepare import input_device
from ..hf.heads import TARGET_HEADS
from ..hf.text import named_token_id
from ..hf.targets import head_kind
from ..result import Result
from .names import METRICS, REPLACEMENTS

__all__ = [
    "comprehensiveness",
    "sufficiency",
    "log_odds",
    "aopc",
    "perturbation_curve",
    "faithfulness",
    "ranking",
    "n_top",
    "check_result",
    "METRICS",
    "DEFAULT_REPLACEMENT",
    "REPLACEMENTS",
    "Curve",
]

DEFAULT_REPLACEMENT = {
    "comprehensiveness": "remove",
    "sufficiency": "remove",
    "log_odds": "mask",
    "aopc_deletion": "remove",
    "aopc_insertion": "remove",
}
"""Per-metric defaults, as in the reference code of the SIG paper and ERASER."""

# Result target kinds the metrics score → the model head they need (seq2seq targets are not scored).
_KIND_HEAD = {k: TARGET_HEADS[k] for k in ("class", "next_token", "continuation", "masked", "token")}


# --------------------------------------------------------------------------- inputs
def _model_tokenizer(model: Any, tokenizer: Any) -> tuple[nn.Module, Any]:
    from ..explainer import Explainer

    if isinstance(model, Explainer):
        if tokenizer is not None and tokenizer is not model.tokenizer:
            raise TypeError("tokenizer= is taken from the Explainer; pass a model instead to use another")
        return model.model, model.tokenizer
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an hfattr.Explainer or a transformers model, got {type(model).__name__}")
    if tokenizer is None:
        raise TypeError("tokenizer= is required when model is a transformers model (or pass an Explainer)")
    return model, tokenizer


def _results(results: Any) -> tuple[list[Result], bool]:
    single = isinstance(results, Result)
    items = [results] if single else results
    if not isinstance(items, (list, tuple)):
        raise TypeError(f"results must be a Result or a list of Results, got {type(results).__name__}")
    if not items:
        raise ValueError("results is an empty list; give at least one Result")
    for i, r in enumerate(items):
        if not isinstance(r, Result):
            raise TypeError(f"results[{i}] must be a Result, got {type(r).__name__}")
    return list(items), single


def _replacement_id(tokenizer: Any, replacement: Any) -> int | None:
    """Token id that replaces perturbed tokens; ``None`` means removal."""
    if replacement == "remove":
        return None
    accepted = "'mask', 'pad', 'remove' or a token id"
    return named_token_id(
        tokenizer, replacement, option="replacement", kinds=("mask", "pad"), accepted=accepted, instead=accepted
    )


def n_top(top_k: Any, n: int) -> int:
    """How many of ``n`` candidate tokens ``top_k`` selects.

    A float in (0, 1] is a fraction: ``max(1, floor(top_k · n))`` (0 when ``n`` is 0); an int is a
    count, capped at ``n``.
    """
    if isinstance(top_k, bool):
        raise TypeError("top_k must be a fraction in (0, 1] or a token count, not a bool")
    if isinstance(top_k, int):
        if top_k < 0:
            raise ValueError(f"top_k as a count must be >= 0, got {top_k}")
        return min(top_k, n)
    if isinstance(top_k, float):
        if not 0.0 < top_k <= 1.0:
            raise ValueError(f"top_k as a fraction must be in (0, 1], got {top_k}")
        return 0 if n == 0 else max(1, math.floor(top_k * n + 1e-9))
    raise TypeError(f"top_k must be a float fraction in (0, 1] or an int count, got {top_k!r}")


def ranking(result: Result, *, by: str = "value") -> list[int]:
    """Indices of the tokens that may be perturbed, best first.

    ``by="value"`` ranks by signed attribution (higher supports the target), ``by="abs"`` by magnitude;
    ties go to the earlier token; NaN ranks last. Special tokens and fixed target positions are
    left out.
    """
    if by not in ("value", "abs"):
        raise ValueError(f"by must be 'value' or 'abs', got {by!r}")
    return _order(_attribution_row(result), _fixed(result, None), by)


def _order(attributions: Tensor, fixed: list[bool], by: str) -> list[int]:
    keys = (attributions.abs() if by == "abs" else attributions).double().nan_to_num(nan=-math.inf).tolist()
    return sorted((j for j in range(len(fixed)) if not fixed[j]), key=lambda j: (-keys[j], j))


def _attribution_row(result: Result, where: str = "result") -> Tensor:
    s = result.scores
    if s.dim() == 2:
        if s.shape[0] != 1:
            raise ValueError(
                f"{where} has {s.shape[0]} rows of scores ({result.rows}); faithfulness needs one "
                "row of token scores explaining one target"
            )
        s = s[0]
    return s.detach().cpu()


def _fixed(result: Result, tokenizer: Any) -> list[bool]:
    """Positions never perturbed: special tokens and target positions read by the head."""
    if result.special_mask is not None:
        fixed = list(result.special_mask)
    elif tokenizer is not None:
        special = set(getattr(tokenizer, "all_special_ids", []) or [])
        fixed = [t in special for t in result.token_ids]
    else:
        fixed = [False] * result.n_tokens
    if result.target.get("kind") in ("masked", "token"):
        for p in result.target.get("positions", []):
            if isinstance(p, int) and 0 <= p < len(fixed):
                fixed[p] = True
    return fixed


# --------------------------------------------------------------------------- one Result, prepared
@dataclass
class _Item:
    ids: list[int]
    order: list[int]  # perturbable positions, best first
    target: int
    position: int | None  # fixed position the head reads (masked / token kinds)
    where: str  # how errors name this Result

    def queue(self, log_probs: "_TargetLogProbs", change: Sequence[int] = (), rep: int | None = None) -> int:
        """Queue the input with ``change`` replaced by ``rep`` (or removed); returns its slot."""
        change = set(change)  # type: ignore[assignment]  # (membership tests below)
        pos = self.position
        if rep is not None:
            ids = tuple(rep if j in change else t for j, t in enumerate(self.ids))
        else:
            ids = tuple(t for j, t in enumerate(self.ids) if j not in change)
            if pos is not None:
                pos -= sum(1 for j in change if j < pos)
        return log_probs.add(ids, self.target, pos, self.where)

    def cut(self, k: int, *, keep: bool) -> list[int]:
        """Positions to perturb: the top ``k`` (``keep=False``) or all but the top ``k`` (``True``)."""
        return self.order[k:] if keep else self.order[:k]


def _items(results: list[Result], model: nn.Module, tokenizer: Any, by: str) -> list[_Item]:
    head = head_kind(model)
    vocab = getattr(model.config, "vocab_size", None) or len(tokenizer)
    out = []
    for i, r in enumerate(results):
        where = f"results[{i}]" if len(results) > 1 else "result"
        if "aggregate" in r.extras:
            raise ValueError(f"{where} holds word-level scores (Result.aggregate); evaluate the token-level Result")
        attr = _attribution_row(r, where)
        t = r.target
        kind = t.get("kind")
        if kind not in _KIND_HEAD or "id" not in t:
            raise ValueError(
                f"{where} explains target {t}; faithfulness needs a Result explaining one model "
                "output: a class, the next token or a masked token"
            )
        if _KIND_HEAD[kind] != head:
            raise ValueError(f"{where} explains a {kind!r} target but the model has a {head!r} head")
        bad = [x for x in r.token_ids if not 0 <= x < vocab]
        if bad:
            raise ValueError(f"{where} has token ids outside the model's vocabulary (size {vocab}): {bad[:5]}")
        positions = t.get("positions") or [None]
        pos = positions[0] if kind in ("masked", "token") else None
        out.append(_Item(list(r.token_ids), _order(attr, _fixed(r, tokenizer), by), int(t["id"]), pos, where))
    return out


def check_result(model: Any, result: Result, *, tokenizer: Any = None) -> None:
    """Raise ``ValueError`` (saying why) if the metrics cannot be computed for ``result`` on ``model``.

    No model call is made: this checks the Result's target kind against the model's head, its
    scores (one row of token scores) and its token ids.
    """
    model, tokenizer = _model_tokenizer(model, tokenizer)
    (r,), _ = _results([result])
    _items([r], model, tokenizer, "value")


# --------------------------------------------------------------------------- model calls
class _TargetLogProbs:
    """log p(target | ids) for many inputs, batched by length; each distinct input runs once."""

    def __init__(self, model: nn.Module, tokenizer: Any, batch_size: int) -> None:
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
        self.model, self.batch_size = model, batch_size
        self.causal = head_kind(model) == "causal"
        pad = getattr(tokenizer, "pad_token_id", None)
        self.pad = int(pad) if pad is not None else 0
        self.device = input_device(model)
        self.queue: dict[tuple, int] = {}

    def add(self, ids: tuple[int, ...], target: int, pos: int | None, where: str) -> int:
        if not ids:
            raise ValueError(f"{where}: removing the tokens leaves an empty input; use replacement='mask' or 'pad'")
        if self.causal:  # the next token is read after the last one left
            pos = len(ids) - 1
        return self.queue.setdefault((ids, target, pos), len(self.queue))

    def run(self) -> Tensor:
        keys = list(self.queue)
        out = torch.empty(len(keys), dtype=torch.float64)
        order = sorted(range(len(keys)), key=lambda j: len(keys[j][0]))
        kwargs: dict[str, Any] = {"use_cache": False} if self.causal else {}
        with torch.no_grad(), preserved_state(self.model, eval_mode=True):
            for a in range(0, len(order), self.batch_size):
                chunk = order[a : a + self.batch_size]
                L = max(len(keys[j][0]) for j in chunk)
                ids = torch.full((len(chunk), L), self.pad, dtype=torch.long)
                mask = torch.zeros((len(chunk), L), dtype=torch.long)
                for r, j in enumerate(chunk):
                    seq = keys[j][0]
                    ids[r, : len(seq)] = torch.tensor(seq)
                    mask[r, : len(seq)] = 1
                logits = (
                    self.model(input_ids=ids.to(self.device), attention_mask=mask.to(self.device), **kwargs)
                    .logits.double()
                    .cpu()
                )
                for r, j in enumerate(chunk):
                    _, target, pos = keys[j]
                    sample_logits = logits[r] if logits.dim() == 2 else logits[r, pos]
                    out[j] = sample_logits.log_softmax(-1)[target]
        return out


def _prepare(model: Any, results: Any, tokenizer: Any, by: str, batch_size: int):
    model, tokenizer = _model_tokenizer(model, tokenizer)
    items_in, single = _results(results)
    if by not in ("value", "abs"):
        raise ValueError(f"by must be 'value' or 'abs', got {by!r}")
    return _items(items_in, model, tokenizer, by), single, _TargetLogProbs(model, tokenizer, batch_size), tokenizer


def _out(values: Tensor, single: bool) -> float | Tensor:
    return float(values[0]) if single else values


def _at_top_k(
    items: list[_Item], log_probs: _TargetLogProbs, tokenizer: Any, top_k: Any, replacement: Any, keep: bool
) -> list[int]:
    """Queue, per item, the input with its top-k perturbed (``keep=False``) or kept alone (``True``)."""
    rep = _replacement_id(tokenizer, replacement)
    return [it.queue(log_probs, it.cut(n_top(top_k, len(it.order)), keep=keep), rep) for it in items]


def _along(
    items: list[_Item], log_probs: _TargetLogProbs, tokenizer: Any, fractions: list[float], replacement: Any, keep: bool
) -> Tensor:
    """Queue, per item and fraction, one step of a curve; ``(n, S)`` slots."""
    rep = _replacement_id(tokenizer, replacement)
    slots = [
        [it.queue(log_probs, it.cut(n_top(f, len(it.order)) if f else 0, keep=keep), rep) for f in fractions]
        for it in items
    ]
    return torch.tensor(slots, dtype=torch.long).reshape(len(items), len(fractions))


def _full(items: list[_Item], log_probs: _TargetLogProbs) -> list[int]:
    return [it.queue(log_probs) for it in items]


# --------------------------------------------------------------------------- the metrics
def comprehensiveness(
    model: Any,
    results: Any,
    *,
    tokenizer: Any = None,
    top_k: float | int = 0.2,
    replacement: Any = "remove",
    by: str = "value",
    batch_size: int = 64,
) -> float | Tensor:
    """``p(y | x) − p(y | x without its top-k tokens)``; higher means the top tokens matter more.

    ``top_k``: a fraction of the perturbable tokens (at least one) or a count. ``replacement``:
    ``"remove"`` (delete them), ``"mask"``, ``"pad"`` or a token id (put in their place).
    ``by``: rank tokens by signed score (``"value"``) or by magnitude (``"abs"``).
    """
    return _single_metric("comprehensiveness", model, results, tokenizer, top_k, replacement, by, batch_size)


def sufficiency(
    model: Any,
    results: Any,
    *,
    tokenizer: Any = None,
    top_k: float | int = 0.2,
    replacement: Any = "remove",
    by: str = "value",
    batch_size: int = 64,
) -> float | Tensor:
    """``p(y | x) − p(y | only the top-k tokens of x)``; lower means the top tokens suffice.

    Arguments as in :func:`comprehensiveness`; here the tokens outside the top-k are removed or
    replaced (special tokens stay).
    """
    return _single_metric("sufficiency", model, results, tokenizer, top_k, replacement, by, batch_size)


def log_odds(
    model: Any,
    results: Any,
    *,
    tokenizer: Any = None,
    top_k: float | int = 0.2,
    replacement: Any = "mask",
    by: str = "value",
    batch_size: int = 64,
) -> float | Tensor:
    """``log p(y | x with its top-k tokens replaced) − log p(y | x)``; lower (more negative) is better.

    Arguments as in :func:`comprehensiveness` (default replacement: the mask token).
    """
    return _single_metric("log_odds", model, results, tokenizer, top_k, replacement, by, batch_size)


def _single_metric(
    name: str, model: Any, results: Any, tokenizer: Any, top_k: Any, replacement: Any, by: str, batch_size: int
) -> float | Tensor:
    return faithfulness(
        model,
        results,
        tokenizer=tokenizer,
        metrics=[name],
        top_k=top_k,
        replacement=replacement,
        by=by,
        batch_size=batch_size,
    )[name]


@dataclass
class Curve:
    """A deletion or insertion curve: ``probabilities[i, s]`` is ``p(y | x_s)`` for Result ``i``.

    ``fractions[s]`` is the share of the ranked tokens removed (deletion) or kept (insertion) at
    step ``s``; step 0 is the unperturbed input (deletion) or the input with every perturbable
    token removed or replaced (insertion). ``full`` holds ``p(y | x)``.
    """

    kind: str
    fractions: Tensor  # (S + 1,)
    probabilities: Tensor  # (n, S + 1)
    full: Tensor  # (n,)

    def drops(self) -> Tensor:
        """``p(y | x) − p(y | x_s)`` for the steps after 0, ``(n, S)``."""
        return self.full.unsqueeze(1) - self.probabilities[:, 1:]

    def aopc(self) -> Tensor:
        """Mean drop over the steps after 0, per Result."""
        return self.drops().mean(1)


def _fractions(steps: Any) -> list[float]:
    if isinstance(steps, bool):
        raise TypeError("steps must be an int or a list of fractions, not a bool")
    if isinstance(steps, int):
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        return [s / steps for s in range(1, steps + 1)]
    if isinstance(steps, (list, tuple)) and steps:
        fr = [float(f) for f in steps]
        if any(not 0.0 < f <= 1.0 for f in fr) or fr != sorted(fr):
            raise ValueError(f"steps as fractions must be increasing and in (0, 1], got {list(steps)}")
        return fr
    raise TypeError(f"steps must be an int >= 1 or an increasing list of fractions in (0, 1], got {steps!r}")


def perturbation_curve(
    model: Any,
    results: Any,
    *,
    tokenizer: Any = None,
    kind: str = "deletion",
    steps: int | Sequence[float] = 10,
    replacement: Any = "remove",
    by: str = "value",
    batch_size: int = 64,
) -> Curve:
    """``p(y | ·)`` as the top-ranked tokens are removed (``"deletion"``), or added back to an input
    whose perturbable tokens are all removed or replaced (``"insertion"``).

    ``steps``: ``S`` equal fractions ``1/S .. 1``, or an increasing list of fractions (e.g. ERASER's
    ``[0.01, 0.05, 0.1, 0.2, 0.5]``); each fraction ``f`` selects ``n_top(f, n)`` tokens.
    """
    if kind not in ("deletion", "insertion"):
        raise ValueError(f"kind must be 'deletion' or 'insertion', got {kind!r}")
    fracs = [0.0] + _fractions(steps)
    items, _, log_probs, tok = _prepare(model, results, tokenizer, by, batch_size)
    full = _full(items, log_probs)
    grid = _along(items, log_probs, tok, fracs, replacement, keep=kind == "insertion")
    p = log_probs.run().exp()
    return Curve(kind, torch.tensor(fracs, dtype=torch.float64), p[grid], p[full])


def aopc(
    model: Any,
    results: Any,
    *,
    tokenizer: Any = None,
    curve: str = "deletion",
    steps: int | Sequence[float] = 10,
    replacement: Any = "remove",
    by: str = "value",
    batch_size: int = 64,
) -> float | Tensor:
    """Area over the perturbation curve: the mean of ``p(y | x) − p(y | x_f)`` over the fractions.

    ``curve="deletion"``: ``x_f`` lacks the top tokens (comprehensiveness averaged over the
    fractions; higher is better). ``curve="insertion"``: ``x_f`` keeps only them (sufficiency
    averaged; lower is better). Other arguments as in :func:`perturbation_curve`.
    """
    if curve not in ("deletion", "insertion"):
        raise ValueError(f"curve must be 'deletion' or 'insertion', got {curve!r}")
    name = f"aopc_{curve}"
    return faithfulness(
        model,
        results,
        tokenizer=tokenizer,
        metrics=[name],
        replacement=replacement,
        steps=steps,
        by=by,
        batch_size=batch_size,
    )[name]


def faithfulness(
    model: Any,
    results: Any,
    *,
    tokenizer: Any = None,
    metrics: Sequence[str] = ("comprehensiveness", "sufficiency", "log_odds"),
    top_k: float | int = 0.2,
    replacement: Any = None,
    steps: int | Sequence[float] = 10,
    by: str = "value",
    batch_size: int = 64,
) -> dict[str, float | Tensor]:
    """Several metrics at once, sharing the model calls; ``{name: value(s)}``.

    ``metrics`` are names from :data:`METRICS`. ``replacement=None`` uses each metric's default
    (:data:`DEFAULT_REPLACEMENT`); any other value applies to all. ``steps`` is for the AOPC metrics.
    """
    if isinstance(metrics, str):
        metrics = [metrics]
    unknown = [m for m in metrics if m not in METRICS]
    if unknown or not metrics:
        raise ValueError(f"metrics must be a non-empty list of names from {list(METRICS)}, got {list(metrics)}")
    n_top(top_k, 1)  # validate before any model call
    items, single, log_probs, tok = _prepare(model, results, tokenizer, by, batch_size)
    full = _full(items, log_probs)
    pending: dict[str, Any] = {}
    for m in metrics:
        rep = DEFAULT_REPLACEMENT[m] if replacement is None else replacement
        keep = m in ("sufficiency", "aopc_insertion")
        if m.startswith("aopc"):
            pending[m] = _along(items, log_probs, tok, _fractions(steps), rep, keep=keep)
        else:
            pending[m] = _at_top_k(items, log_probs, tok, top_k, rep, keep=keep)
    lp = log_probs.run()
    p_full = lp[full].exp()
    out: dict[str, float | Tensor] = {}
    for m, slots in pending.items():
        if m == "log_odds":
            v = lp[slots] - lp[full]
        elif m.startswith("aopc"):
            v = (p_full.unsqueeze(1) - lp[slots].exp()).mean(1)
        else:
            v = p_full - lp[slots].exp()
        out[m] = _out(v, single)
    return out
