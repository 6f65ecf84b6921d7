"""Targets: which scalar(s) of a model's output are explained, as a forward function of embeddings.

A resolved target is, per text, a list of *rows*: ``(position, index, label)`` where ``position``
is the sequence position whose logits are read (``None`` for sequence classification) and
``index`` the class or token id. ``TargetForward`` maps input embeddings to a ``(B, R)`` tensor of
those scores; extra tensors travel as arguments so they are repeated with the batch.
"""

from __future__ import annotations

import functools
import inspect
import numbers
from dataclasses import dataclass, field
from collections.abc import Callable
from typing import Any, cast

import torch
from torch import Tensor, nn

from .access import model_config, pretrained
from .heads import HEAD_SUFFIXES as _HEADS  # class-name suffix -> head kind
from .text import Encoded

__all__ = [
    "input_logits",
    "remembered_row_logits",
    "pools_last_token",
    "TargetRows",
    "resolve_targets",
    "TARGET_RESOLVERS",
    "TargetResolver",
    "TargetForward",
    "head_kind",
    "SCORES",
    "vocab_size",
    "label_id",
    "Generated",
    "contrast_ids",
    "accepts_logits_to_keep",
    "kept_positions",
]

SCORES = ("logit", "prob", "log_prob", "contrast", "contrast_prob")  # built in; see hf.scores for the registry


def head_kind(model: nn.Module) -> str:
    """``class``, ``causal``, ``masked``, ``seq2seq`` or ``token``, from the model's class name."""
    name = type(model).__name__
    for suffix, kind in _HEADS.items():
        if name.endswith(suffix):
            return kind
    if getattr(model_config(model), "is_encoder_decoder", False):
        return "seq2seq"
    raise ValueError(
        f"cannot tell which output of {name} to explain; use a model with a sequence-classification, "
        "causal-LM, masked-LM, seq2seq or token-classification head"
    )


@dataclass
class TargetRows:
    """The explained rows of one text."""

    positions: list[int | None]
    indices: list[int]
    labels: list[str]
    kind: str
    decoder_ids: Tensor | None = None  # (T,) teacher-forced decoder inputs for seq2seq
    extra_ids: list[int] = field(default_factory=list)  # continuation token ids appended to input
    generation: dict | None = None  # generation/continuation matrix facts (kind, generated_text, ...)
    contrast: list[int] | None = None  # contrast token ids, one per row

    @property
    def is_matrix(self) -> bool:
        """Rows are generated (or given) tokens of one sequence: the generation Result contract."""
        return self.generation is not None

    def describe(self) -> dict:
        d: dict[str, Any] = {"kind": self.kind}
        if self.generation is not None:
            d = {
                "kind": self.generation["kind"],
                "ids": list(self.indices),
                "tokens": list(self.labels),
                "positions": list(self.positions),
                **{k: v for k, v in self.generation.items() if k != "kind"},
            }
        elif len(self.indices) == 1:
            d.update(id=self.indices[0], label=self.labels[0])
        else:
            d.update(ids=list(self.indices), tokens=list(self.labels))
        if self.generation is None and any(p is not None for p in self.positions):
            d["positions"] = list(self.positions)
        return d


def label_id(model: nn.Module, target: Any) -> int:
    """The class id of ``target`` (an id, a label name in any case, or a numeric string)."""
    return _label_id(model, target)


@dataclass(frozen=True)
class Generated:
    """A target given as the token ids a model generated (or a continuation given as ids)."""

    ids: tuple[int, ...]
    text: str
    kind: str = "generation"


def _label_id(model: nn.Module, target: Any) -> int:
    config = model_config(model)
    id2label = {int(k): v for k, v in (getattr(config, "id2label", None) or {}).items()}
    n = config.num_labels
    if isinstance(target, str):
        by_name = {v: k for k, v in id2label.items()}
        if target in by_name:
            return by_name[target]
        folded: dict[str, set[int]] = {}
        for name, idx in by_name.items():
            folded.setdefault(str(name).casefold(), set()).add(idx)
        match = folded.get(target.strip().casefold())
        if match is not None and len(match) == 1:
            return next(iter(match))
        digits = target.strip()
        if digits.lstrip("+-").isdigit() and digits.isascii():  # a numeric string is a class id
            return _label_id(model, int(digits))
        raise ValueError(
            f"unknown label name {target!r}; the model's labels are {sorted(by_name)} "
            "(names match case-insensitively; numeric strings are label ids)"
        )
    if isinstance(target, bool) or not isinstance(target, int):
        raise TypeError(f"target must be a label id or a label name, got {target!r}")
    if not 0 <= target < n:
        raise ValueError(f"target {target} is out of range for a model with {n} labels")
    return target


def vocab_size(model: nn.Module) -> int:
    """Rows of the model's output vocabulary (the output embeddings, else ``config.vocab_size``)."""
    out = pretrained(model).get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    weight = getattr(out, "weight", None)
    if isinstance(weight, Tensor):
        return int(weight.shape[0])
    return int(getattr(model_config(model), "vocab_size", 0) or 0)


def _label_name(model: nn.Module, idx: int) -> str:
    id2label = {int(k): v for k, v in (getattr(model_config(model), "id2label", None) or {}).items()}
    return str(id2label.get(idx, idx))


def _token_ids(tokenizer: Any, text: str, what: str) -> list[int]:
    if not isinstance(text, str) or not text:
        raise ValueError(f"{what} must be a non-empty string")
    fast = getattr(tokenizer, "is_fast", False)
    out = tokenizer(text, add_special_tokens=False, return_offsets_mapping=fast)
    ids = out["input_ids"]
    if not ids:
        raise ValueError(f"{what} {text!r} gives no tokens")
    unk = getattr(tokenizer, "unk_token_id", None)
    if unk is not None and unk in ids:
        if fast:
            bad = [text[s:e] for (s, e), i in zip(out["offset_mapping"], ids) if i == unk]
        else:
            bad = [tok for tok, i in zip(tokenizer.convert_ids_to_tokens(ids), ids) if i == unk]
        raise ValueError(
            f"{what} {text!r} has tokens outside the vocabulary (mapped to {tokenizer.unk_token!r}: {bad})"
        )
    return ids


def _last_real(enc: Encoded, i: int) -> int:
    return enc.positions(i)[-1]


@torch.no_grad()
def _predict(
    model: nn.Module, enc: Encoded, kind: str, decoder_start: Tensor | None = None, *, keep: Tensor | None = None
) -> Tensor:
    """The model's logits for ``enc`` (only at positions ``keep`` when given).

    Except for seq2seq, the model runs on the input embeddings exactly as the methods' forward does,
    and the logits are remembered on ``enc`` (:func:`input_logits`) so that the unperturbed forward
    is not run twice.
    """
    if kind == "seq2seq":
        kwargs: dict[str, Any] = dict(input_ids=enc.input_ids, attention_mask=enc.attention_mask, **enc.extra)
        kwargs.update(decoder_input_ids=decoder_start, use_cache=False)
        return model(**kwargs).logits
    embeds = pretrained(model).get_input_embeddings()(enc.input_ids)
    kwargs = dict(inputs_embeds=embeds, attention_mask=enc.attention_mask, **enc.extra)
    if kind == "causal":
        kwargs["use_cache"] = False
    if keep is not None:
        kwargs["logits_to_keep"] = keep
    logits = model(**kwargs).logits
    if set(enc.extra) <= {"token_type_ids"}:  # the same call as TargetForward.model_logits
        enc.memo[INPUT_LOGITS] = (enc.input_ids, enc.attention_mask, keep, logits.detach())
    return logits


INPUT_LOGITS = "input_logits"


def input_logits(enc: Encoded) -> tuple[Tensor | None, Tensor] | None:
    """``(kept positions or None, logits)`` of the unperturbed forward remembered on ``enc``, if they were
    computed for exactly its current ids and mask; otherwise None."""
    hit = enc.memo.get(INPUT_LOGITS)
    if hit is None:
        return None
    ids, mask, keep, logits = hit
    same = (
        ids.shape == enc.input_ids.shape
        and torch.equal(ids.to(enc.input_ids.device), enc.input_ids)
        and torch.equal(mask.to(enc.attention_mask.device), enc.attention_mask)
    )
    return (keep, logits) if same else None


def remembered_row_logits(enc: Encoded, forward: "TargetForward", positions: Tensor) -> Tensor | None:
    """``(B, R, V)``: the logits each target row reads, taken from the forward remembered on ``enc``
    (:func:`input_logits`); None when there is none or it kept other positions."""
    hit = input_logits(enc)
    if hit is None:
        return None
    keep, logits = hit
    if keep is not None:
        keep, pos = keep.to(positions.device), positions.clamp(min=0)
        if not bool(torch.isin(pos, keep).all()):
            return None
        positions = torch.searchsorted(keep, pos)
    return forward.row_logits(logits, positions)


def _resolve_class(model: nn.Module, tokenizer: Any, enc: Encoded, targets: list[Any]) -> list[TargetRows]:
    logits = _predict(model, enc, "class") if any(t is None for t in targets) else None
    out: list[TargetRows] = []
    for i, t in enumerate(targets):
        if t is None:
            assert logits is not None  # predicted above when any target is None
            idx = int(logits[i].argmax())
        else:
            idx = _label_id(model, t)
        out.append(TargetRows([None], [idx], [_label_name(model, idx)], "class"))
    return out


def _resolve_token(model: nn.Module, tokenizer: Any, enc: Encoded, targets: list[Any]) -> list[TargetRows]:
    out: list[TargetRows] = []
    for i, t in enumerate(targets):
        if not (isinstance(t, tuple) and len(t) == 2):
            raise ValueError("token classification needs target=(token_index, label)")
        pos, lab = t
        real = enc.positions(i)
        if not isinstance(pos, int) or not -len(real) <= pos < len(real):
            raise ValueError(f"token index {pos!r} is out of range for a text of {len(real)} tokens")
        idx = _label_id(model, lab)
        out.append(TargetRows([real[pos]], [idx], [_label_name(model, idx)], "token"))
    return out


def _resolve_masked(model: nn.Module, tokenizer: Any, enc: Encoded, targets: list[Any]) -> list[TargetRows]:
    mask_id = tokenizer.mask_token_id
    vocab = vocab_size(model)
    given: list[list[int] | None] = []
    for t in targets:  # checked before any forward pass
        if t is None or isinstance(t, str):
            given.append(None if t is None else _token_ids(tokenizer, t, "target"))
        elif isinstance(t, numbers.Integral) and not isinstance(t, bool):
            if not 0 <= int(t) < vocab:
                raise ValueError(
                    f"masked-LM target token id {t} is outside the vocabulary of the model (0..{vocab - 1})"
                )
            given.append([int(t)])
        else:
            raise TypeError(f"masked-LM target must be None, a token id or a token text, got {t!r}")
    logits = _predict(model, enc, "masked")
    out: list[TargetRows] = []
    for i, t in enumerate(targets):
        where = (enc.input_ids[i] == mask_id).nonzero().flatten().tolist() if mask_id is not None else []
        if not where:
            raise ValueError(f"masked-LM target needs a {tokenizer.mask_token!r} token in the text")
        if t is None:
            ids = [int(logits[i, p].argmax()) for p in where]
        else:
            ids = cast("list[int]", given[i])  # every target that is not None has its ids in given
            if len(ids) != len(where):
                raise ValueError(f"target gives {len(ids)} token(s) for {len(where)} mask token(s)")
        out.append(TargetRows(where, ids, tokenizer.convert_ids_to_tokens(ids), "masked"))
    return out


def _resolve_causal(model: nn.Module, tokenizer: Any, enc: Encoded, targets: list[Any]) -> list[TargetRows]:
    logits, keep = None, None
    if any(t is None for t in targets):
        lasts = torch.tensor([_last_real(enc, i) for i in range(enc.batch_size)], device=enc.input_ids.device)
        if accepts_logits_to_keep(model):  # the LM head only at each text's last token
            keep = torch.unique(lasts)
        logits = _predict(model, enc, "causal", keep=keep)
    out: list[TargetRows] = []
    for i, t in enumerate(targets):
        last = _last_real(enc, i)
        if t is None:
            assert logits is not None  # predicted above when any target is None
            col = last if keep is None else int(torch.searchsorted(keep, torch.tensor(last, device=keep.device)))
            idx = int(logits[i, col].argmax())
            out.append(TargetRows([last], [idx], tokenizer.convert_ids_to_tokens([idx]), "next_token"))
        elif isinstance(t, (str, Generated)):
            if isinstance(t, str):
                ids, text, gkind = _token_ids(tokenizer, t, "continuation"), t, "continuation"
            else:
                ids, text, gkind = list(t.ids), t.text, t.kind
            pos: list[int | None] = [last + k for k in range(len(ids))]
            meta = {"kind": gkind, "generated_text": text, "prompt_length": len(enc.positions(i))}
            out.append(
                TargetRows(
                    pos, ids, tokenizer.convert_ids_to_tokens(ids), "continuation", extra_ids=ids, generation=meta
                )
            )
        elif isinstance(t, int) and not isinstance(t, bool):
            if not 0 <= t < vocab_size(model):
                raise ValueError(
                    f"target token id {t} is outside the vocabulary of the model (0..{vocab_size(model) - 1})"
                )
            out.append(TargetRows([last], [t], tokenizer.convert_ids_to_tokens([t]), "next_token"))
        else:
            raise TypeError(f"causal-LM target must be None, a token id or a continuation text, got {t!r}")
    return out


def _resolve_seq2seq(model: nn.Module, tokenizer: Any, enc: Encoded, targets: list[Any]) -> list[TargetRows]:
    device = enc.input_ids.device
    start = model_config(model).decoder_start_token_id
    if start is None:
        start = model_config(model).pad_token_id
    out: list[TargetRows] = []
    for i, t in enumerate(targets):
        if t is None:
            dec = torch.tensor([[start]], device=device)
            sub = Encoded(
                enc.input_ids[i : i + 1],
                enc.attention_mask[i : i + 1],
                enc.special_mask[i : i + 1],
                enc.texts[i : i + 1],
                extra={k: v[i : i + 1] for k, v in enc.extra.items()},
            )
            idx = int(_predict(model, sub, "seq2seq", dec)[0, -1].argmax())
            ids = [idx]
        elif isinstance(t, str):
            ids = _token_ids(tokenizer, t, "target")
            eos = getattr(tokenizer, "eos_token_id", None)
            if eos is not None and (not ids or ids[-1] != eos):
                ids = ids + [eos]
        elif isinstance(t, Generated):
            ids = list(t.ids)
        else:
            raise TypeError(f"seq2seq target must be None or a target text, got {t!r}")
        dec = torch.tensor([start] + ids[:-1], device=device)
        meta = None
        if isinstance(t, Generated):
            meta = {"kind": t.kind, "generated_text": t.text, "prompt_length": len(enc.positions(i))}
        out.append(
            TargetRows(
                list(range(len(ids))),
                ids,
                tokenizer.convert_ids_to_tokens(ids),
                "seq2seq",
                decoder_ids=dec,
                generation=meta,
            )
        )
    return out


TargetResolver = Callable[[nn.Module, Any, Encoded, list[Any]], list[TargetRows]]
"""``(model, tokenizer, enc, targets) -> rows``: one text's target per entry of ``targets``."""

TARGET_RESOLVERS: dict[str, TargetResolver] = {
    "class": _resolve_class,
    "token": _resolve_token,
    "masked": _resolve_masked,
    "causal": _resolve_causal,
    "seq2seq": _resolve_seq2seq,
}
"""Head kind (see :data:`hfattr.hf.heads.HEAD_KINDS`) -> its target resolver."""


@functools.lru_cache(maxsize=None)
def _reads_pad_token(forward: Any) -> bool:
    try:
        return "pad_token_id" in inspect.getsource(forward)
    except (OSError, TypeError):  # no source: assume it does (the safe choice)
        return True


def pools_last_token(model: nn.Module) -> bool:
    """True for a sequence classifier that reads its class at the last non-padding token, found from
    the input ids (the decoder classifiers: GPT-2, Llama, ...). Run on embeddings it reads the last
    column instead, so a padded batch gives wrong numbers for the shorter texts."""
    return head_kind(model) == "class" and _reads_pad_token(type(model).forward)


def resolve_targets(model: nn.Module, tokenizer: Any, enc: Encoded, target: Any) -> list[TargetRows]:
    """Turn the user's ``target`` (None, id, label name, text, ...) into rows for each text."""
    kind = head_kind(model)
    B = enc.batch_size
    targets = target if isinstance(target, list) else [target] * B
    if len(targets) != B:
        raise ValueError(f"target list has {len(targets)} entries but {B} texts were given")
    return TARGET_RESOLVERS[kind](model, tokenizer, enc, targets)


def contrast_ids(tokenizer: Any, contrast: Any, n: int) -> list[int]:
    """The contrast as token ids, one per target row (a text or a list of ids, of ``n`` tokens)."""
    if isinstance(contrast, str):
        ids = _token_ids(tokenizer, contrast, "contrast")
    elif (
        isinstance(contrast, (list, tuple))
        and contrast
        and all(isinstance(x, int) and not isinstance(x, bool) for x in contrast)
    ):
        ids = list(contrast)
        size = len(tokenizer)
        bad = [x for x in ids if not 0 <= x < size]
        if bad:
            raise ValueError(f"contrast token ids {bad} are outside the vocabulary (size {size})")
    else:
        raise TypeError(f"contrast must be a text or a list of token ids, got {contrast!r}")
    if len(ids) != n:
        raise ValueError(
            f"contrast has {len(ids)} token(s) but the target has {n}; a contrast needs one token "
            f"per target token (contrast tokens: {tokenizer.convert_ids_to_tokens(ids)})"
        )
    return ids


def accepts_logits_to_keep(model: nn.Module) -> bool:
    """Whether ``model.forward`` takes ``logits_to_keep`` (a 1-D tensor of positions)."""
    import inspect

    try:
        return "logits_to_keep" in inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return False


def kept_positions(positions: Tensor, length: int) -> tuple[Tensor, Tensor]:
    """``(keep, remapped)``: the distinct positions in ``[0, length)`` read by ``positions`` (1-D,
    sorted) and ``positions`` as indices into ``keep`` (positions outside map to 0)."""
    pos = positions.clamp(min=0)
    inside = pos < length
    keep = torch.unique(pos[inside]) if bool(inside.any()) else pos.new_zeros(1)
    return keep, torch.searchsorted(keep, pos).clamp(max=len(keep) - 1)


class TargetForward:
    """``f(embeds, attention_mask, positions, indices, decoder_ids, token_type_ids, example_ids) -> (B, R)``.

    Everything but the model is passed as tensors so perturbation batches repeat them correctly;
    ``example_ids`` says which original text each sample of the batch comes from (used by fast paths).
    """

    def __init__(self, model: nn.Module, kind: str, *, score: str = "logit") -> None:
        from .scores import get_score

        self.spec = get_score(score)
        self.model, self.kind, self.score = model, kind, score
        self.seq2seq = kind == "seq2seq"
        self.keeps_logits = kind == "causal" and accepts_logits_to_keep(model)

    def __call__(
        self,
        embeds: Tensor,
        attention_mask: Tensor,
        positions: Tensor,
        indices: Tensor,
        decoder_ids: Tensor | None = None,
        token_type_ids: Tensor | None = None,
        example_ids: Tensor | None = None,
    ) -> Tensor:
        if self.keeps_logits:  # the LM head only at the positions the target rows read
            keep, kept_at = kept_positions(positions, embeds.shape[1])
            logits = self.model_logits(embeds, attention_mask, decoder_ids, token_type_ids, keep=keep)
            return self.select(logits, kept_at, indices)
        return self.select(self.model_logits(embeds, attention_mask, decoder_ids, token_type_ids), positions, indices)

    def model_logits(
        self,
        embeds: Tensor,
        attention_mask: Tensor,
        decoder_ids: Tensor | None = None,
        token_type_ids: Tensor | None = None,
        *,
        keep: Tensor | None = None,
    ) -> Tensor:
        """The model's logits for input embeddings (no cache); only at positions ``keep`` when given."""
        kwargs: dict[str, Any] = dict(inputs_embeds=embeds, attention_mask=attention_mask)
        if token_type_ids is not None:
            kwargs["token_type_ids"] = token_type_ids
        if self.seq2seq:
            kwargs["decoder_input_ids"] = decoder_ids
        if self.kind in ("causal", "seq2seq"):
            kwargs["use_cache"] = False
        if keep is not None:
            kwargs["logits_to_keep"] = keep
        return self.model(**kwargs).logits

    def row_logits(self, logits: Tensor, positions: Tensor) -> Tensor:
        """``(B, R, V)``: the logits each target row reads."""
        if logits.dim() == 2:  # sequence classification: (B, C)
            return logits.unsqueeze(1).expand(-1, positions.shape[1], -1)
        samples = torch.arange(logits.shape[0], device=logits.device).unsqueeze(1)
        return logits[samples, positions.clamp(min=0).to(logits.device)]

    def finish(self, row_logits: Tensor, indices: Tensor) -> Tensor:
        """The target values (the score of each target row) from its logits ``(B, R, V)`` and ids
        ``(B, R)`` (``(B, R, 2)`` with a contrast): ``(B, R)``."""
        from .scores import apply_score

        return apply_score(self.spec, row_logits, indices)

    def select(self, logits: Tensor, positions: Tensor, indices: Tensor) -> Tensor:
        return self.finish(self.row_logits(logits, positions), indices)
