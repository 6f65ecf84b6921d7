"""The method contract: what a method returns (:class:`ResultFields`) and the helpers every method uses.

A method returns one ``ResultFields`` per Result: one per text when each text has one target row
(``prep.n_rows == 1``), or one for the single text of a multi-row target (a continuation).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field, fields as dc_fields
from typing import Any

import torch
from torch import Tensor

from ..core.inputs import expand_additional_args
from ..hf.prepare import Prepared

__all__ = [
    "ResultFields",
    "SKIP",
    "token_mask",
    "result_fields",
    "per_text",
    "as_result_kwargs",
    "sites_option",
    "RowInputs",
    "row_inputs",
]

SKIP = -1  # feature id of positions that are never perturbed


@dataclass
class ResultFields:
    """The data of one Result, as a method produces it (the Explainer adds method, options, model)."""

    tokens: list[str]
    token_ids: list[int]
    scores: Tensor  # (n_tokens,) or (n_rows, n_tokens)
    text: str | None = None
    offsets: list[tuple[int, int]] | None = None
    special_mask: list[bool] | None = None
    word_ids: list[int | None] | None = None
    rows: list[str] | None = None
    target: dict = field(default_factory=dict)
    probability: float | list[float] | None = None
    delta: Any = None
    extras: dict = field(default_factory=dict)


def as_result_kwargs(out: Any, method: str) -> dict:
    """``Result(**...)`` keywords from a method's output item (ResultFields, or a dict of its fields)."""
    if isinstance(out, ResultFields):
        return {f.name: getattr(out, f.name) for f in dc_fields(out)}
    if isinstance(out, dict):
        known = {f.name for f in dc_fields(ResultFields)}
        unknown = sorted(set(out) - known)
        if unknown:
            raise TypeError(
                f"method {method!r} returned unknown result field(s) {unknown}; "
                f"expected those of hfattr.methods.ResultFields"
            )
        return dict(out)
    raise TypeError(f"method {method!r} must return a list of ResultFields, got an item of type {type(out).__name__}")


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


def result_fields(
    prep: Prepared,
    i: int,
    scores: Tensor,
    *,
    rows: list[str] | None = None,
    extras: dict | None = None,
    delta: Any = None,
) -> ResultFields:
    """Fields of a Result for example ``i``; ``scores`` is ``(L,)`` or ``(R, L)`` over padded length."""
    enc, tok = prep.enc, prep.tokenizer
    pos = enc.positions(i)
    ids = enc.input_ids[i, pos].tolist()
    probs = prep_probability(prep, i)
    t = prep.targets[i]
    other_rows = rows is not None  # the method's rows are not the target rows (e.g. sites)
    if rows is None and len(t.indices) > 1 and scores.dim() == 2:
        rows = list(t.labels)
    sc = (
        scores[..., pos].detach().float().cpu()
        if scores.dtype in (torch.bfloat16, torch.float16)
        else scores[..., pos].detach().cpu()
    )
    target = t.describe()
    extras = dict(extras or {})
    if t.is_matrix and other_rows:  # rows are something else (sites): the generated rows are summed
        target["kind"] = f"{target['kind']}_sum"
    elif t.is_matrix and sc.dim() == 1 and len(t.indices) == 1:
        sc = sc.unsqueeze(0)  # a one-token generation is still a (1, P + 1) matrix
    if t.is_matrix and sc.dim() == 2 and sc.shape[0] == len(t.indices) and not target["kind"].endswith("_sum"):
        sc = sc.clone()
        rows = list(t.labels) if rows is None else rows
        target["score"] = prep.forward.score
        if t.contrast is not None:
            target["contrast_ids"] = list(t.contrast)
            target["contrast_tokens"] = tok.convert_ids_to_tokens(list(t.contrast))
        if t.kind == "continuation":  # row j reads position p_j: the columns after p_j are empty
            col = torch.tensor(pos).unsqueeze(0)
            read = torch.tensor(t.positions).unsqueeze(1)
            sc[col > read] = float("nan")
        steps = prep.step_stats()
        extras["step_scores"] = {k: v[i].tolist() for k, v in steps.items()}
        probs = [float(p) for p in steps["probability"][i].tolist()]
    return ResultFields(
        tokens=tok.convert_ids_to_tokens(ids),
        token_ids=ids,
        scores=sc,
        text=enc.texts[i],
        offsets=None if enc.offsets is None else [(enc.offsets[i][p][0], enc.offsets[i][p][1]) for p in pos],
        special_mask=enc.special_mask[i, pos].tolist(),
        word_ids=None if enc.word_ids is None else [enc.word_ids[i][p] for p in pos],
        rows=rows,
        target=target,
        probability=probs,
        delta=delta,
        extras=extras,
    )


def per_text(prep: Prepared, scores: Tensor, **kwargs: Any) -> list[ResultFields]:
    """One ResultFields per text from ``scores`` ``(B, L)`` (one row each) or ``(R, L)`` (one text, R rows)."""
    if prep.n_rows == 1:
        return [result_fields(prep, i, scores[i], **kwargs) for i in range(prep.enc.batch_size)]
    return [result_fields(prep, 0, scores, **kwargs)]


@dataclass
class RowInputs:
    """One input row per explained row: the texts (one target row each), or copies of one text (one per row).

    ``prep.forward(embeds, *args)`` gives ``(N, R)``; input row ``n`` explains column ``columns[n]``
    (:meth:`explained` picks those), so a gradient of ``explained(...).sum()`` holds every row's own
    gradient. Scores over these rows are ``(N, L)``, the shape :func:`per_text` takes.
    """

    embeds: Tensor  # (N, L, D)
    baseline: Tensor  # (N, L, D)
    fixed: Tensor  # (N, L) bool
    args: tuple
    columns: Tensor  # (N,) long

    def explained(self, out: Tensor, repeats: int = 1) -> Tensor:
        """``(repeats · N,)``: the explained column of each row of ``out`` (inputs repeated block-major)."""
        cols = self.columns.repeat(repeats).to(out.device)
        return out.gather(1, cols.unsqueeze(1)).squeeze(1)

    def gradient(self, forward: Any, x: Tensor, repeats: int = 1) -> Tensor:
        """Gradient of each row's explained output with respect to ``x`` ``(repeats · N, L, D)``.

        ``x`` holds ``repeats`` blocks of ``N`` rows (block-major); the forward arguments are repeated
        to match. Rows do not interact, so one backward pass of the sum gives every row's gradient.
        """
        args = self.args if repeats == 1 else expand_additional_args(self.args, repeats) or ()
        x = x.detach().requires_grad_(True)
        with torch.enable_grad():
            (grad,) = torch.autograd.grad(self.explained(forward(x, *args), repeats).sum(), x)
        return grad


def row_inputs(prep: Prepared) -> RowInputs:
    """The :class:`RowInputs` of a prepared batch (copies of its one text when it has several target rows)."""
    R = prep.n_rows
    dev = prep.embeds.device
    if R == 1:
        B = prep.embeds.shape[0]
        return RowInputs(
            prep.embeds, prep.baseline, prep.fixed, prep.forward_args(), torch.zeros(B, dtype=torch.long, device=dev)
        )
    args = tuple(a.expand(R, *a.shape[1:]) if isinstance(a, Tensor) else a for a in prep.forward_args())
    return RowInputs(
        prep.embeds.expand(R, -1, -1),
        prep.baseline.expand(R, -1, -1),
        prep.fixed.expand(R, -1),
        args,
        torch.arange(R, device=dev),
    )


def prep_probability(prep: Prepared, i: int) -> float | list[float]:
    if not hasattr(prep, "_probs"):
        prep._probs = prep.step_stats()["probability"]  # type: ignore[attr-defined]
    row = prep._probs[i].tolist()  # type: ignore[attr-defined]
    return row[0] if len(row) == 1 else row


def sites_option(method: str, sites: Any, site: Any) -> Any:
    """The ``sites=`` option, also accepted as the deprecated ``site=`` (with a DeprecationWarning)."""
    if site is None:
        return sites
    if sites is not None:
        raise TypeError(f"method {method!r}: pass sites= only (site= is its deprecated spelling)")
    # warn at the caller of Explainer.explain: sites_option <- method <- explain <- caller
    warnings.warn(f"method {method!r}: site= is deprecated; use sites=", DeprecationWarning, stacklevel=4)
    return site
