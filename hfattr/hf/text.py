"""Text → tokens: one ``Encoded`` record per batch, with offsets and a special-token mask."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch
from torch import Tensor

__all__ = [
    "Encoded",
    "encode",
    "baseline_token_id",
    "named_token_id",
    "normalise_texts",
    "chat_prompt",
    "check_max_length",
    "TruncationWarning",
]


class TruncationWarning(UserWarning):
    """Texts were cut to the model's (or ``max_length``'s) limit; ``count`` texts, to ``limit`` tokens."""

    def __init__(self, count: int, limit: int) -> None:
        super().__init__(f"{count} text(s) truncated to {limit} tokens")
        self.count, self.limit = count, limit


@dataclass
class Encoded:
    """A tokenized batch. Positions beyond ``lengths[i]`` (or before, for left padding) are padding."""

    input_ids: Tensor  # (B, L)
    attention_mask: Tensor  # (B, L)
    special_mask: Tensor  # (B, L) bool: special tokens and padding
    texts: list[str]
    offsets: list[list[tuple[int, int]]] | None = None
    word_ids: list[list[int | None]] | None = None
    extra: dict[str, Tensor] = field(default_factory=dict)  # e.g. token_type_ids
    # model outputs already computed for exactly these ids (see hf/targets.py: input_logits)
    memo: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def batch_size(self) -> int:
        return self.input_ids.shape[0]

    def positions(self, i: int) -> list[int]:
        """Indices of example ``i``'s real (non-padding) tokens."""
        return torch.nonzero(self.attention_mask[i], as_tuple=False).flatten().tolist()

    def tokens(self, tokenizer: Any, i: int) -> list[str]:
        ids = self.input_ids[i, self.positions(i)].tolist()
        return tokenizer.convert_ids_to_tokens(ids)

    def to(self, device: torch.device | str) -> "Encoded":
        return Encoded(
            self.input_ids.to(device),
            self.attention_mask.to(device),
            self.special_mask.to(device),
            self.texts,
            self.offsets,
            self.word_ids,
            {k: v.to(device) for k, v in self.extra.items()},
            memo=dict(self.memo),
        )


def normalise_texts(text: Any, *, name: str = "text") -> tuple[list[str], bool]:
    """``str`` or a list of ``str`` → ``(list, was_single)``; empty or non-text is an error."""
    single = isinstance(text, str)
    items = [text] if single else text
    if not isinstance(items, (list, tuple)):
        raise TypeError(f"{name} must be a str or a list of str, got {type(text).__name__}")
    if not items:
        raise ValueError(f"{name} is an empty list; give at least one text")
    for i, t in enumerate(items):
        where = name if single else f"{name}[{i}]"
        if not isinstance(t, str):
            raise TypeError(f"{where} must be a str, got {type(t).__name__}")
        if not t.strip():
            raise ValueError(f"{where} is empty; give some text to explain")
    return list(items), single


def chat_prompt(tokenizer: Any, messages: Sequence[dict] | str) -> tuple[str, list[tuple[int, int]]]:
    """Render a chat prompt; return the text and the character spans of the message contents."""
    if isinstance(messages, str):
        messages = [{"role": "user", "content": messages}]
    if getattr(tokenizer, "chat_template", None) is None:
        raise ValueError("chat=True needs a tokenizer with a chat_template")
    rendered = tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=True)
    spans, cursor = [], 0
    for m in messages:
        start = rendered.find(m["content"], cursor)
        if start < 0:
            raise ValueError("could not find a message's content in the rendered chat template")
        spans.append((start, start + len(m["content"])))
        cursor = start + len(m["content"])
    return rendered, spans


def encode(
    tokenizer: Any,
    text: Any,
    *,
    max_length: int | None = None,
    truncation: bool = False,
    add_special_tokens: bool = True,
    chat: bool = False,
    text_pair: Any = None,
    model_max_length: int | None = None,
) -> tuple[Encoded, bool]:
    """Tokenize ``str | list[str] | BatchEncoding`` once; ``(Encoded, was_single)``.

    Texts longer than the limit (``max_length``, else the smaller of the tokenizer's and
    ``model_max_length``) raise unless ``truncation=True`` (then a warning is given).
    With ``chat=True`` each text is a user message; the template's own tokens count as special.
    """
    check_max_length(max_length)
    if not isinstance(truncation, bool):
        raise TypeError(f"truncation must be True or False, got {truncation!r}")
    if callable(tokenizer) and _is_batch_encoding(text):
        return _from_batch_encoding(tokenizer, text), False
    texts, single = normalise_texts(text)
    content_spans = None
    if chat:
        rendered = [chat_prompt(tokenizer, t) for t in texts]
        texts = [r[0] for r in rendered]
        content_spans = [r[1] for r in rendered]
        add_special_tokens = False
    limits = [n for n in (_model_limit(tokenizer), model_max_length) if n]
    limit = max_length or (min(limits) if limits else None)
    kwargs: dict[str, Any] = dict(
        add_special_tokens=add_special_tokens,
        return_special_tokens_mask=True,
        return_attention_mask=True,
    )
    fast = getattr(tokenizer, "is_fast", False)
    if fast:
        kwargs["return_offsets_mapping"] = True
    if text_pair is not None:
        kwargs["text_pair"] = [text_pair] if isinstance(text_pair, str) else list(text_pair)
    probe = tokenizer(texts, **kwargs)
    too_long = [i for i, ids in enumerate(probe["input_ids"]) if limit and len(ids) > limit]
    if too_long:
        i = too_long[0]
        n = len(probe["input_ids"][i])
        if not truncation:
            where = "text" if single else f"text[{i}]"
            raise ValueError(
                f"{where} has {n} tokens, more than the model's maximum of {limit}; shorten it or pass truncation=True"
            )
        warnings.warn(TruncationWarning(len(too_long), limit or 0), stacklevel=3)
        kwargs.update(truncation=True, max_length=limit)
        probe = tokenizer(texts, **kwargs)
    return _to_encoded(tokenizer, probe, texts, content_spans), single


def check_max_length(max_length: Any) -> None:
    """``max_length`` is None or an int >= 1 (a clear error otherwise)."""
    if max_length is None:
        return
    if isinstance(max_length, bool) or not isinstance(max_length, int):
        raise TypeError(f"max_length must be an int >= 1 (a number of tokens) or None, got {max_length!r}")
    if max_length < 1:
        raise ValueError(f"max_length must be >= 1 (a number of tokens), got {max_length}")


def _model_limit(tokenizer: Any) -> int | None:
    limit = getattr(tokenizer, "model_max_length", None)
    return limit if isinstance(limit, int) and 0 < limit < 1_000_000 else None


def _is_batch_encoding(obj: Any) -> bool:
    from transformers import BatchEncoding

    return isinstance(obj, (BatchEncoding, dict)) and "input_ids" in obj


def _from_batch_encoding(tokenizer: Any, batch: Any) -> Encoded:
    """An already tokenized batch; sequences are moved to right padding like every other input."""
    ids = torch.as_tensor(batch["input_ids"])
    if ids.dim() == 1:
        ids = ids.unsqueeze(0)
    if ids.dim() != 2 or ids.is_floating_point() or ids.is_complex() or ids.dtype == torch.bool:
        raise TypeError(
            f"input_ids must be integer token ids of shape (batch, length), got {ids.dtype} of shape {tuple(ids.shape)}"
        )
    if ids.numel() == 0:
        raise ValueError("input_ids is empty; give at least one token")
    if bool((ids < 0).any()):
        raise ValueError(f"input_ids holds a negative token id ({int(ids.min())}); token ids are >= 0")
    mask = torch.as_tensor(batch.get("attention_mask", torch.ones_like(ids))).reshape(ids.shape)
    extra_in = {k: torch.as_tensor(batch[k]).reshape(ids.shape) for k in ("token_type_ids",) if k in batch}
    keep = [seq_mask.bool() for seq_mask in mask]
    seqs = [seq[k].tolist() for seq, k in zip(ids, keep)]
    pad_id = getattr(tokenizer, "pad_token_id", None)
    L = ids.shape[1]
    ids = torch.tensor(_pad(seqs, 0 if pad_id is None else pad_id, L), dtype=torch.long)
    mask = torch.tensor(_pad([[1] * len(r) for r in seqs], 0, L), dtype=torch.long)
    extra = {
        k: torch.tensor(_pad([v[i][k_].tolist() for i, k_ in enumerate(keep)], 0, L), dtype=torch.long)
        for k, v in extra_in.items()
    }
    texts = [tokenizer.decode(r, skip_special_tokens=True) for r in seqs]
    special = _typed_specials(tokenizer, ids) | ~mask.bool()
    return Encoded(ids, mask, special, texts, None, None, extra)


def _pad(seqs: list[list[Any]], value: Any, length: int) -> list[list[Any]]:
    return [list(r) + [value] * (length - len(r)) for r in seqs]


def _to_encoded(tokenizer: Any, batch: Any, texts: list[str], content_spans: Any) -> Encoded:
    """Pad on the right by hand (so positions of real tokens match the unpadded text, and
    tokenizers without a pad token work): padding positions are masked and never perturbed."""
    lengths = [len(r) for r in batch["input_ids"]]
    L = max(lengths)
    pad_id = getattr(tokenizer, "pad_token_id", None)
    pad_id = 0 if pad_id is None else pad_id
    ids = torch.tensor(_pad(batch["input_ids"], pad_id, L), dtype=torch.long)
    mask = torch.tensor(_pad(batch["attention_mask"], 0, L), dtype=torch.long)
    special = torch.tensor(_pad(batch["special_tokens_mask"], 1, L), dtype=torch.bool)
    special = special | ~mask.bool() | _typed_specials(tokenizer, ids)
    offsets = word_ids = None
    if "offset_mapping" in batch:
        offsets = _pad([[tuple(map(int, o)) for o in seq] for seq in batch["offset_mapping"]], (0, 0), L)
        word_ids = _pad([batch.word_ids(i) for i in range(len(lengths))], None, L)
    if content_spans is not None and offsets is not None:
        for i, spans in enumerate(content_spans):
            for j, (s, e) in enumerate(offsets[i]):
                inside = e > s and any(a <= s and e <= b for a, b in spans)
                if not inside:
                    special[i, j] = True
    extra = {k: torch.tensor(_pad(batch[k], 0, L), dtype=torch.long) for k in ("token_type_ids",) if k in batch}
    return Encoded(ids, mask, special, texts, offsets, word_ids, extra)


def _typed_specials(tokenizer: Any, ids: Tensor) -> Tensor:
    """Special tokens written in the text itself (``[MASK]``, ``<s>``...), except unk, which stands for a word."""
    special = set(getattr(tokenizer, "all_special_ids", []) or [])
    special.discard(getattr(tokenizer, "unk_token_id", None))
    if not special:
        return torch.zeros_like(ids, dtype=torch.bool)
    return torch.isin(ids, torch.tensor(sorted(special), dtype=ids.dtype))


def baseline_token_id(tokenizer: Any, baseline: Any = None) -> int | None:
    """The token id used as a baseline; ``None`` means the zero embedding.

    ``baseline`` is ``"mask"``, ``"pad"``, ``"unk"``, ``"zero"``, an int id, or ``None`` for the
    first of mask, pad, unk that the tokenizer has.
    """
    if baseline is None:
        for kind in ("mask", "pad", "unk"):
            tid = getattr(tokenizer, f"{kind}_token_id", None)
            if tid is not None:
                return int(tid)
        return None
    if baseline == "zero":
        return None
    return named_token_id(
        tokenizer,
        baseline,
        option="baseline",
        kinds=("mask", "pad", "unk"),
        accepted="'mask', 'pad', 'unk', 'zero' or a token id",
        instead="'pad', 'unk', 'zero' or a token id",
    )


def named_token_id(
    tokenizer: Any, value: Any, *, option: str, kinds: tuple[str, ...], accepted: str, instead: str
) -> int:
    """The token id an option names: a special-token kind in ``kinds`` (``"mask"`` -> the tokenizer's
    ``mask_token_id``) or an id in the vocabulary. Errors name ``option``, what it ``accepted``, and
    what to use ``instead`` when the tokenizer lacks the kind."""
    if isinstance(value, bool):
        raise TypeError(f"{option} must be {accepted}, not a bool")
    if isinstance(value, int):
        if not 0 <= value < len(tokenizer):
            raise ValueError(f"{option} token id {value} is outside the vocabulary (size {len(tokenizer)})")
        return value
    if value in kinds:
        tid = getattr(tokenizer, f"{value}_token_id", None)
        if tid is None:
            raise ValueError(f"{option}={value!r} but the tokenizer has no {value} token; use {instead}")
        return int(tid)
    raise ValueError(f"{option} must be {accepted}, got {value!r}")
