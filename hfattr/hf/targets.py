"""Targets: which scalar(s) of a model's output are explained, as a forward function of embeddings.

A resolved target is, per text, a list of *rows*: ``(position, index, label)`` where ``position``
is the sequence position whose logits are read (``None`` for sequence classification) and
``index`` the class or token id. ``TargetForward`` maps input embeddings to a ``(B, R)`` tensor of
those scores; extra tensors travel as arguments so they are repeated with the batch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from .text import Encoded

__all__ = ["TargetRows", "resolve_targets", "TargetForward", "head_kind", "SCORES"]

SCORES = ("logit", "prob", "log_prob")

_HEADS = {
    "ForSequenceClassification": "class",
    "ForCausalLM": "causal",
    "LMHeadModel": "causal",
    "ForMaskedLM": "masked",
    "ForConditionalGeneration": "seq2seq",
    "ForSeq2SeqLM": "seq2seq",
    "ForTokenClassification": "token",
}


def head_kind(model: nn.Module) -> str:
    """``class``, ``causal``, ``masked``, ``seq2seq`` or ``token``, from the model's class name."""
    name = type(model).__name__
    for suffix, kind in _HEADS.items():
        if name.endswith(suffix):
            return kind
    if getattr(model.config, "is_encoder_decoder", False):
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

    def describe(self) -> dict:
        d: dict[str, Any] = {"kind": self.kind}
        if len(self.indices) == 1:
            d.update(id=self.indices[0], label=self.labels[0])
        else:
            d.update(ids=list(self.indices), tokens=list(self.labels))
        if any(p is not None for p in self.positions):
            d["positions"] = list(self.positions)
        return d


def _label_id(model: nn.Module, target: Any) -> int:
    id2label = {int(k): v for k, v in (getattr(model.config, "id2label", None) or {}).items()}
    n = model.config.num_labels
    if isinstance(target, str):
        by_name = {v: k for k, v in id2label.items()}
        if target not in by_name:
            raise ValueError(f"unknown label name {target!r}; the model's labels are {sorted(by_name)}")
        return by_name[target]
    if isinstance(target, bool) or not isinstance(target, int):
        raise TypeError(f"target must be a label id or a label name, got {target!r}")
    if not 0 <= target < n:
        raise ValueError(f"target {target} is out of range for a model with {n} labels")
    return target


def _label_name(model: nn.Module, idx: int) -> str:
    id2label = {int(k): v for k, v in (getattr(model.config, "id2label", None) or {}).items()}
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
def _predict(model: nn.Module, enc: Encoded, kind: str, decoder_start: Tensor | None = None) -> Tensor:
    kwargs: dict[str, Any] = dict(input_ids=enc.input_ids, attention_mask=enc.attention_mask, **enc.extra)
    if kind == "seq2seq":
        kwargs["decoder_input_ids"] = decoder_start
    if kind in ("causal", "seq2seq"):
        kwargs["use_cache"] = False
    return model(**kwargs).logits


def resolve_targets(model: nn.Module, tokenizer: Any, enc: Encoded, target: Any) -> list[TargetRows]:
    """Turn the user's ``target`` (None, id, label name, text, ...) into rows for each text."""
    kind = head_kind(model)
    B = enc.batch_size
    targets = target if isinstance(target, list) else [target] * B
    if len(targets) != B:
        raise ValueError(f"target list has {len(targets)} entries but {B} texts were given")
    device = enc.input_ids.device
    out: list[TargetRows] = []
    if kind == "class":
        logits = _predict(model, enc, kind) if any(t is None for t in targets) else None
        for i, t in enumerate(targets):
            idx = int(logits[i].argmax()) if t is None else _label_id(model, t)
            out.append(TargetRows([None], [idx], [_label_name(model, idx)], "class"))
    elif kind == "token":
        for i, t in enumerate(targets):
            if not (isinstance(t, tuple) and len(t) == 2):
                raise ValueError("token classification needs target=(token_index, label)")
            pos, lab = t
            real = enc.positions(i)
            if not isinstance(pos, int) or not -len(real) <= pos < len(real):
                raise ValueError(f"token index {pos!r} is out of range for a text of {len(real)} tokens")
            idx = _label_id(model, lab)
            out.append(TargetRows([real[pos]], [idx], [_label_name(model, idx)], "token"))
    elif kind == "masked":
        mask_id = tokenizer.mask_token_id
        logits = _predict(model, enc, kind)
        for i, t in enumerate(targets):
            where = (enc.input_ids[i] == mask_id).nonzero().flatten().tolist() if mask_id is not None else []
            if not where:
                raise ValueError(f"masked-LM target needs a {tokenizer.mask_token!r} token in the text")
            if t is None:
                ids = [int(logits[i, p].argmax()) for p in where]
            else:
                ids = _token_ids(tokenizer, t, "target") if isinstance(t, str) else [int(t)]
                if len(ids) != len(where):
                    raise ValueError(f"target gives {len(ids)} token(s) for {len(where)} mask token(s)")
            out.append(TargetRows(where, ids, tokenizer.convert_ids_to_tokens(ids), "masked"))
    elif kind == "causal":
        logits = _predict(model, enc, kind) if any(t is None for t in targets) else None
        for i, t in enumerate(targets):
            last = _last_real(enc, i)
            if t is None:
                idx = int(logits[i, last].argmax())
                out.append(TargetRows([last], [idx], tokenizer.convert_ids_to_tokens([idx]), "next_token"))
            elif isinstance(t, str):
                ids = _token_ids(tokenizer, t, "continuation")
                pos = [last + k for k in range(len(ids))]
                out.append(TargetRows(pos, ids, tokenizer.convert_ids_to_tokens(ids), "continuation", extra_ids=ids))
            elif isinstance(t, int) and not isinstance(t, bool):
                if not 0 <= t < model.config.vocab_size:
                    raise ValueError(f"target token id {t} is outside the vocabulary")
                out.append(TargetRows([last], [t], tokenizer.convert_ids_to_tokens([t]), "next_token"))
            else:
                raise TypeError(f"causal-LM target must be None, a token id or a continuation text, got {t!r}")
    else:  # seq2seq
        start = model.config.decoder_start_token_id
        if start is None:
            start = model.config.pad_token_id
        for i, t in enumerate(targets):
            if t is None:
                dec = torch.tensor([[start]], device=device)
                sub = Encoded(enc.input_ids[i : i + 1], enc.attention_mask[i : i + 1],
                              enc.special_mask[i : i + 1], enc.texts[i : i + 1],
                              extra={k: v[i : i + 1] for k, v in enc.extra.items()})
                idx = int(_predict(model, sub, kind, dec)[0, -1].argmax())
                ids = [idx]
            elif isinstance(t, str):
                ids = _token_ids(tokenizer, t, "target")
                eos = getattr(tokenizer, "eos_token_id", None)
                if eos is not None and (not ids or ids[-1] != eos):
                    ids = ids + [eos]
            else:
                raise TypeError(f"seq2seq target must be None or a target text, got {t!r}")
            dec = torch.tensor([start] + ids[:-1], device=device)
            out.append(TargetRows(list(range(len(ids))), ids, tokenizer.convert_ids_to_tokens(ids),
                                  "seq2seq", decoder_ids=dec))
    return out


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
    ``example_ids`` says which original text each row comes from (used by fast paths).
    """

    def __init__(self, model: nn.Module, kind: str, *, score: str = "logit") -> None:
        if score not in SCORES:
            raise ValueError(f"score must be one of {SCORES}, got {score!r}")
        self.model, self.kind, self.score = model, kind, score
        self.seq2seq = kind == "seq2seq"
        self.keeps_logits = kind == "causal" and accepts_logits_to_keep(model)

    def __call__(self, embeds: Tensor, attention_mask: Tensor, positions: Tensor, indices: Tensor,
                 decoder_ids: Tensor | None = None, token_type_ids: Tensor | None = None,
                 example_ids: Tensor | None = None) -> Tensor:
        kwargs: dict[str, Any] = dict(inputs_embeds=embeds, attention_mask=attention_mask)
        if token_type_ids is not None:
            kwargs["token_type_ids"] = token_type_ids
        if self.seq2seq:
            kwargs["decoder_input_ids"] = decoder_ids
        if self.kind in ("causal", "seq2seq"):
            kwargs["use_cache"] = False
        if self.keeps_logits:  # the LM head only at the positions the target rows read
            keep, positions = kept_positions(positions, embeds.shape[1])
            kwargs["logits_to_keep"] = keep
        logits = self.model(**kwargs).logits
        return self.select(logits, positions, indices)

    def row_logits(self, logits: Tensor, positions: Tensor) -> Tensor:
        """``(B, R, V)``: the logits each target row reads."""
        if logits.dim() == 2:  # sequence classification: (B, C)
            return logits.unsqueeze(1).expand(-1, positions.shape[1], -1)
        rows = torch.arange(logits.shape[0], device=logits.device).unsqueeze(1)
        return logits[rows, positions.clamp(min=0).to(logits.device)]

    def finish(self, rows: Tensor, indices: Tensor) -> Tensor:
        """Score transform over the class/vocabulary axis, then the target entries: ``(B, R)``."""
        if self.score != "logit" and rows.dtype not in (torch.float32, torch.float64):
            rows = rows.float()  # half precision: normalise in float32
        if self.score == "prob":
            rows = rows.softmax(-1)
        elif self.score == "log_prob":
            rows = rows.log_softmax(-1)
        return torch.gather(rows, 2, indices.to(rows.device).unsqueeze(-1)).squeeze(-1)

    def select(self, logits: Tensor, positions: Tensor, indices: Tensor) -> Tensor:
        return self.finish(self.row_logits(logits, positions), indices)
