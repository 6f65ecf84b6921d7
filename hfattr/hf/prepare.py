"""From texts to what a method needs: embeddings, baselines, targets and a forward function."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any, cast

import torch
from torch import Tensor, nn

from ..core.finite import check_finite
from .access import pretrained
from .targets import TargetForward, TargetRows, head_kind, kept_positions, remembered_row_logits, resolve_targets
from .text import Encoded, baseline_token_id

__all__ = [
    "Prepared",
    "prepare",
    "input_device",
    "append_continuation",
    "append_generated",
    "decoder_baseline_id",
    "DECODER_BASELINES",
    "check_loaded",
    "check_token_ids",
]

DECODER_BASELINES = ("unk", "eos", "bos", "pad", "mask")  # SIG's default order on causal LMs (docs/generation.md)


def input_device(model: nn.Module) -> torch.device:
    """Where input ids must live: the input embedding's device (CPU if it is offloaded)."""
    emb = pretrained(model).get_input_embeddings()
    if emb is None:
        raise ValueError(f"{type(model).__name__} has no input embeddings (get_input_embeddings() is None)")
    dev = emb.weight.device
    return torch.device("cpu") if dev.type == "meta" else dev


def check_loaded(model: nn.Module) -> None:
    """Refuse a model whose weights are on the ``meta`` device (not loaded, and not offloaded)."""
    if any(p.device.type == "meta" for p in model.parameters()) and not any(
        hasattr(m, "_hf_hook") for m in model.modules()
    ):
        raise ValueError(
            f"model {type(model).__name__} has parameters on the 'meta' device (its weights are not loaded); "
            "load it with from_pretrained, or materialise it (model.to_empty(device=...)) and load weights"
        )


def check_token_ids(model: nn.Module, enc: Encoded) -> None:
    """Every real token id is a row of the model's input embedding table (tokenizer and model match)."""
    emb = pretrained(model).get_input_embeddings()
    weight = getattr(emb, "weight", None)
    rows = getattr(emb, "num_embeddings", None) or (weight.shape[0] if isinstance(weight, Tensor) else None)
    if not rows:
        return
    ids = enc.input_ids.masked_fill(~enc.attention_mask.bool(), 0)
    bad = (ids < 0) | (ids >= rows)
    if bool(bad.any()):
        i, p = (int(v) for v in bad.nonzero()[0].tolist())
        raise ValueError(
            f"token id {int(ids[i, p])} (text {i}, position {p}) is outside the model's input embedding table "
            f"of {rows} rows: the tokenizer does not match the model (vocabulary size)"
        )


@dataclass
class Prepared:
    """A batch ready for a method: every tensor is on the embedding's device."""

    model: nn.Module
    tokenizer: Any
    enc: Encoded
    targets: list[TargetRows]
    forward: TargetForward
    embeds: Tensor  # (B, L, D) input embeddings, detached
    baseline: Tensor  # (B, L, D) embeddings of the baseline token (or zeros)
    fixed: Tensor  # (B, L) bool: positions never perturbed (special tokens kept fixed, padding)
    baseline_id: int | None
    baseline_default: bool = False  # the baseline was not chosen by the caller

    @property
    def n_rows(self) -> int:
        return len(self.targets[0].indices)

    def forward_args(self) -> tuple:
        """Extra tensors for ``forward`` (repeated with the batch by the core)."""
        dev = self.embeds.device
        pos = torch.tensor([[p if p is not None else 0 for p in t.positions] for t in self.targets], device=dev)
        idx = torch.tensor([t.indices for t in self.targets], device=dev)
        if self.forward.spec.contrastive:
            if any(t.contrast is None for t in self.targets):
                raise ValueError(f"score={self.forward.score!r} needs contrast= (a contrast text or token ids)")
            con = torch.tensor([t.contrast for t in self.targets], device=dev)
            idx = torch.stack([idx, con], dim=-1)  # (B, R, 2): target and contrast ids
        dec = None
        if self.targets[0].decoder_ids is not None:
            # the texts of one seq2seq batch all have decoder ids
            dec = torch.stack([cast(Tensor, t.decoder_ids).to(dev) for t in self.targets])
        ex = torch.arange(self.embeds.shape[0], device=dev)
        return (self.enc.attention_mask, pos, idx, dec, self.enc.extra.get("token_type_ids"), ex)

    def perturbation_forward(self, *, fast: bool = True, reuse_input: bool = False) -> Any:
        """The forward for methods that perturb the input embeddings.

        On causal LMs (with ``fast``) it reuses the key/value cache of the unchanged prefix. With
        ``reuse_input`` a call on ``embeds`` itself (no gradient) returns the remembered row logits
        (:meth:`row_logits_at_input`) instead of running the model again; only for callers that attach no
        hooks (a hooked forward must run).
        """
        if fast and self.forward.kind == "causal":
            from .prefix import PrefixReuseForward

            wrapped = PrefixReuseForward(self.forward, self.embeds, self.forward_args())
            if wrapped.enabled:
                if self._row_logits_at_input is None and wrapped.base_logits is not None:
                    self._row_logits_at_input = wrapped.base_logits
                return wrapped
        if reuse_input:
            return InputReuseForward(self)
        return self.forward

    _row_logits_at_input: Tensor | None = field(default=None, init=False, repr=False, compare=False)

    @torch.no_grad()
    def row_logits_at_input(self) -> Tensor:
        """``(B, R, V)``: the logits each target row reads at the unperturbed input, computed once
        (or taken from the target prediction's forward when it ran on exactly these inputs)."""
        if self._row_logits_at_input is None:
            args = self.forward_args()
            seq2seq = self.targets[0].decoder_ids is not None
            rows = None if seq2seq else remembered_row_logits(self.enc, self.forward, args[1])
            if rows is None:
                keep, pos = None, args[1]
                if self.forward.keeps_logits:  # the LM head only where a target row reads
                    keep, pos = kept_positions(pos, self.embeds.shape[1])
                logits = self.forward.model_logits(self.embeds, args[0], args[3], args[4], keep=keep)
                rows = self.forward.row_logits(logits, pos)
            self._row_logits_at_input = rows.detach()
        return self._row_logits_at_input

    def with_baseline(self, token_id: int | None) -> "Prepared":
        """A copy whose baseline is the embedding of ``token_id`` (zeros for None)."""
        import dataclasses

        with torch.no_grad():
            if token_id is None:
                base = torch.zeros_like(self.embeds)
            else:
                ids = torch.full_like(self.enc.input_ids[:, :1], token_id)
                base = pretrained(self.model).get_input_embeddings()(ids).detach().expand_as(self.embeds).contiguous()
        copy = dataclasses.replace(
            self, baseline=base.to(self.embeds.dtype), baseline_id=token_id, baseline_default=False
        )
        copy._row_logits_at_input = self._row_logits_at_input  # the same input: the same logits
        return copy

    @torch.no_grad()
    def target_values(self, *, score: str | None = None) -> Tensor:
        """The target values (the score of each target row) at the unperturbed input, ``(B, R)``."""
        fwd = self.forward if score is None else TargetForward(self.model, self.forward.kind, score=score)
        return fwd.finish(self.row_logits_at_input(), self.forward_args()[2])

    def scores(self, *, score: str | None = None) -> Tensor:
        """Deprecated name of :meth:`target_values` (these are not attributions)."""
        warnings.warn("Prepared.scores() is deprecated; use Prepared.target_values()", DeprecationWarning, stacklevel=2)
        return self.target_values(score=score)

    @torch.no_grad()
    def step_stats(self) -> dict[str, Tensor]:
        """Per target row at the unperturbed input: probability, log_prob, entropy and rank of the target id."""
        from .scores import step_stats

        if getattr(self, "_steps", None) is None:
            args = self.forward_args()
            ids = args[2][..., 0] if args[2].dim() == 3 else args[2]
            self._steps = {k: v.cpu() for k, v in step_stats(self.row_logits_at_input(), ids).items()}
        return self._steps

    def step_scores(self) -> dict[str, Tensor]:
        """Deprecated name of :meth:`step_stats`."""
        warnings.warn(
            "Prepared.step_scores() is deprecated; use Prepared.step_stats()", DeprecationWarning, stacklevel=2
        )
        return self.step_stats()


class InputReuseForward:
    """``prep.forward`` that answers a call on ``prep.embeds`` itself (unchanged, no gradient) from the
    remembered row logits (:meth:`Prepared.row_logits_at_input`): e.g. ablation's unperturbed evaluation."""

    def __init__(self, prep: Prepared) -> None:
        self.prep, self.forward = prep, prep.forward
        self._version = prep.embeds._version
        self._positions = prep.forward_args()[1]

    def __call__(
        self, embeds: Tensor, attention_mask: Tensor, positions: Tensor, indices: Tensor, *rest: Any
    ) -> Tensor:
        p = self.prep
        if (
            embeds is p.embeds
            and embeds._version == self._version
            and not (torch.is_grad_enabled() and embeds.requires_grad)
            and attention_mask is p.enc.attention_mask
            and torch.equal(positions, self._positions)
        ):
            return self.forward.finish(p.row_logits_at_input(), indices)
        return self.forward(embeds, attention_mask, positions, indices, *rest)


def append_continuation(tokenizer: Any, enc: Encoded, ids: list[int], text: str) -> Encoded:
    """One text with continuation tokens appended (teacher forcing); ``enc`` holds one text."""
    if not ids:
        return enc
    n = enc.positions(0)[-1] + 1
    dev = enc.input_ids.device
    new_ids = torch.cat([enc.input_ids[0, :n], torch.tensor(ids, device=dev)]).unsqueeze(0)
    ones = torch.ones(1, len(ids), dtype=enc.attention_mask.dtype, device=dev)
    mask = torch.cat([enc.attention_mask[:, :n], ones], dim=1)
    special = torch.cat([enc.special_mask[:, :n], torch.zeros(1, len(ids), dtype=torch.bool, device=dev)], dim=1)
    base = enc.texts[0]
    if text and base and not base[-1].isspace() and not text[0].isspace():
        base = base + " "
    joined = base + text
    offsets = word_ids = None
    if enc.offsets is not None and text:
        assert enc.word_ids is not None  # encoded together with the offsets
        cont = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        spans = [(s + len(base), e + len(base)) for s, e in cont["offset_mapping"]][: len(ids)]
        spans += [(len(joined), len(joined))] * (len(ids) - len(spans))
        offsets = [enc.offsets[0][:n] + spans]
        last_word = max([w for w in (enc.word_ids[0] or [])[:n] if w is not None], default=-1)
        cont_words = [w for w in cont.word_ids()][: len(ids)] if hasattr(cont, "word_ids") else []
        cont_words += [None] * (len(ids) - len(cont_words))
        word_ids = [list(enc.word_ids[0][:n]) + [None if w is None else w + last_word + 1 for w in cont_words]]
    extra = {}
    for k, v in enc.extra.items():
        extra[k] = torch.cat([v[:, :n], v[:, n - 1 : n].expand(1, len(ids))], dim=1)
    return Encoded(new_ids, mask, special, [joined], offsets, word_ids, extra)


def append_generated(tokenizer: Any, enc: Encoded, ids: list[int]) -> Encoded:
    """One text with generated token ids appended; offsets and word ids come from decoding the ids
    one by one (a new word starts where the decoded piece starts with white space)."""
    n = enc.positions(0)[-1] + 1
    prompt_ids = enc.input_ids[0, :n][enc.attention_mask[0, :n].bool()].tolist()
    base = enc.texts[0]
    dprompt = tokenizer.decode(prompt_ids, skip_special_tokens=True)
    specials = set(getattr(tokenizer, "all_special_ids", []) or [])
    suffixes = [""]
    for k in range(1, len(ids) + 1):
        full = tokenizer.decode(prompt_ids + list(ids[:k]), skip_special_tokens=True)
        suffix = (
            full[len(dprompt) :]
            if full.startswith(dprompt)
            else tokenizer.decode(list(ids[:k]), skip_special_tokens=True)
        )
        suffixes.append(suffix if suffix.startswith(suffixes[-1]) else suffixes[-1])
    spans: list[tuple[int, int]] = []
    words: list[int | None] = []
    last_word = max([w for w in (enc.word_ids[0] if enc.word_ids else [])[:n] if w is not None], default=-1)
    word = last_word
    for k, tid in enumerate(ids):
        piece = suffixes[k + 1][len(suffixes[k]) :]
        lead = len(piece) - len(piece.lstrip())
        start, end = len(base) + len(suffixes[k]) + lead, len(base) + len(suffixes[k + 1])
        spans.append((start, end))
        if tid in specials or not piece.strip():
            words.append(None)
            continue
        if lead or word < 0 or (k == 0 and (not base or base[-1].isspace())) or (k > 0 and words[-1] is None):
            word += 1
        words.append(word)
    joined = base + suffixes[-1]
    out = append_continuation(tokenizer, enc, list(ids), "")
    special = torch.tensor([[t in specials for t in ids]], dtype=torch.bool, device=out.special_mask.device)
    out.special_mask[:, n:] = special
    return Encoded(
        out.input_ids,
        out.attention_mask,
        out.special_mask,
        [joined],
        None if enc.offsets is None else [list(enc.offsets[0][:n]) + spans],
        None if enc.word_ids is None else [list(enc.word_ids[0][:n]) + words],
        out.extra,
    )


def decoder_baseline_id(model: nn.Module, tokenizer: Any) -> int | None:
    """The first of the unk, eos, bos, pad and mask tokens whose embedding is not zero (None if none).

    A zero embedding (the padding row of many decoders) puts the normalisation layers' singular
    point on the integration path, which makes SIG's integrand steep (docs/generation.md).
    """
    weight = pretrained(model).get_input_embeddings().weight
    for role in DECODER_BASELINES:
        tid = getattr(tokenizer, f"{role}_token_id", None)
        if isinstance(tid, int) and 0 <= tid < weight.shape[0] and bool(weight[tid].detach().abs().max() > 0):
            return tid
    return None


def prepare(
    model: nn.Module,
    tokenizer: Any,
    enc: Encoded,
    targets: list[TargetRows] | Any,
    *,
    baseline: Any = None,
    keep_special: bool = True,
    score: str = "logit",
) -> Prepared:
    """Embeddings, baselines and the target forward function for one encoded batch."""
    device = input_device(model)
    enc = enc.to(device)
    if not isinstance(targets, list) or not targets or not isinstance(targets[0], TargetRows):
        targets = resolve_targets(model, tokenizer, enc, targets)
    kind = head_kind(model)
    emb = pretrained(model).get_input_embeddings()
    with torch.no_grad():
        embeds = emb(enc.input_ids).detach()
        bid = baseline_token_id(tokenizer, baseline)
        if bid is None:
            base = torch.zeros_like(embeds)
        else:
            base = emb(torch.full_like(enc.input_ids[:, :1], bid)).detach().expand_as(embeds).contiguous()
    real = enc.attention_mask.bool().unsqueeze(-1)
    check_finite(
        embeds,
        "the input embeddings",
        ignore=~real.expand_as(embeds),
        hint="the model's embedding table holds NaN/Inf for some of these token ids",
    )
    what = "the zero baseline" if bid is None else f"the baseline embedding (token id {bid})"
    check_finite(base, what, hint="choose another baseline= (e.g. 'pad', 'unk' or 'zero')")
    fixed = ~enc.attention_mask.bool()
    if keep_special:
        fixed = fixed | enc.special_mask.bool()
    if kind == "causal":  # no row reads past its position: the columns after the last read one never matter
        last = max((p for t in targets for p in t.positions if p is not None), default=None)
        if last is not None:
            fixed[:, last + 1 :] = True
    return Prepared(
        model,
        tokenizer,
        enc,
        targets,
        TargetForward(model, kind, score=score),
        embeds,
        base,
        fixed,
        bid,
        baseline_default=baseline is None,
    )
