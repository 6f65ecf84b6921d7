"""What is explained per target row (``score=``): a small registry of scores (explained quantities).

A score maps the logits each target row reads, ``(N, R, V)``, the rows' target ids ``(N, R)`` and
each row's step (its index among the rows, ``(N, R)``) to one target value per row ``(N, R)``. Contrastive
scores also receive the contrast ids ``(N, R)``. Built in: ``logit``, ``prob``, ``log_prob``,
``contrast`` (logit(target) − logit(contrast)) and ``contrast_prob`` (the probability
difference). :func:`step_stats` gives the step statistics recorded for every generation
(stored as ``extras["step_scores"]``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

__all__ = ["ScoreSpec", "register_score", "get_score", "list_scores", "apply_score", "step_stats", "LINEAR_IN_LOGITS"]

LINEAR_IN_LOGITS = ("logit", "contrast")  # scores LRP can explain (relevance is linear in the logits)


@dataclass(frozen=True)
class ScoreSpec:
    """A registered score; ``remove()`` unregisters it (if it is still the registered one)."""

    name: str
    fn: Callable[..., Tensor]
    contrastive: bool = False

    def remove(self) -> None:
        if _SCORES.get(self.name) is self:
            del _SCORES[self.name]


_SCORES: dict[str, ScoreSpec] = {}


def _normalised(logits: Tensor) -> Tensor:
    return logits.float() if logits.dtype not in (torch.float32, torch.float64) else logits


def _pick(values: Tensor, ids: Tensor) -> Tensor:
    return torch.gather(values, 2, ids.to(values.device).unsqueeze(-1)).squeeze(-1)


def register_score(
    name: str, fn: Callable[..., Tensor], *, contrastive: bool = False, overwrite: bool = False
) -> ScoreSpec:
    """Make ``score=name`` available: ``fn(logits, ids, step)`` (or ``fn(logits, ids, step,
    contrast_ids)`` when ``contrastive``) → one value per row; returns a handle with ``remove()``."""
    if not isinstance(name, str) or not name:
        raise ValueError("score name must be a non-empty string")
    if not callable(fn):
        raise TypeError(f"score {name!r}: fn must be callable, got {type(fn).__name__}")
    if name in _SCORES and not overwrite:
        raise ValueError(f"score {name!r} is already registered; pass overwrite=True to replace it")
    spec = ScoreSpec(name, fn, bool(contrastive))
    _SCORES[name] = spec
    return spec


def get_score(name: str) -> ScoreSpec:
    """The registered score ``name`` (a ValueError listing the known ones otherwise)."""
    if not isinstance(name, str) or name not in _SCORES:
        raise ValueError(f"score must be one of {list_scores()}, got {name!r}")
    return _SCORES[name]


def list_scores() -> list[str]:
    """Names of the registered scores."""
    return sorted(_SCORES)


def apply_score(spec: ScoreSpec, logits: Tensor, indices: Tensor) -> Tensor:
    """``logits`` ``(N, R, V)`` read by each target row, ``indices`` ``(N, R)`` or ``(N, R, 2)`` → ``(N, R)``."""
    indices = indices.to(logits.device)
    if indices.dim() == 3:
        ids, contrast = indices[..., 0], indices[..., 1]
    else:
        ids, contrast = indices, None
    step = torch.arange(ids.shape[1], device=logits.device).expand_as(ids)
    if spec.contrastive:
        if contrast is None:
            raise ValueError(f"score={spec.name!r} needs contrast= (a contrast text or token ids)")
        out = spec.fn(logits, ids, step, contrast)
    else:
        out = spec.fn(logits, ids, step)
    if not isinstance(out, Tensor) or tuple(out.shape) != tuple(ids.shape):
        got = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
        raise ValueError(f"score {spec.name!r} must return one value per row, shape {tuple(ids.shape)}; got {got}")
    return out


@torch.no_grad()
def step_stats(logits: Tensor, ids: Tensor) -> dict[str, Tensor]:
    """Per target row: probability, log-probability and rank (1 = argmax) of ``ids``, entropy of the distribution."""
    logp = _normalised(logits).double().log_softmax(-1)
    picked = _pick(logp, ids)
    p = logp.exp()
    entropy = -(p * logp.masked_fill(p == 0, 0.0)).sum(-1)
    rank = (logp > picked.unsqueeze(-1)).sum(-1) + 1
    return {"probability": picked.exp(), "log_prob": picked, "entropy": entropy, "rank": rank}


def _logit(logits: Tensor, ids: Tensor, step: Tensor) -> Tensor:
    return _pick(logits, ids)


def _prob(logits: Tensor, ids: Tensor, step: Tensor) -> Tensor:
    return _pick(_normalised(logits).softmax(-1), ids)


def _log_prob(logits: Tensor, ids: Tensor, step: Tensor) -> Tensor:
    return _pick(_normalised(logits).log_softmax(-1), ids)


def _contrast(logits: Tensor, ids: Tensor, step: Tensor, contrast: Tensor) -> Tensor:
    return _pick(logits, ids) - _pick(logits, contrast)


def _contrast_prob(logits: Tensor, ids: Tensor, step: Tensor, contrast: Tensor) -> Tensor:
    p = _normalised(logits).softmax(-1)
    return _pick(p, ids) - _pick(p, contrast)


register_score("logit", _logit)
register_score("prob", _prob)
register_score("log_prob", _log_prob)
register_score("contrast", _contrast, contrastive=True)
register_score("contrast_prob", _contrast_prob, contrastive=True)
