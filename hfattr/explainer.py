"""``Explainer``: an HF model and tokenizer in, ``Result`` objects out, by any registered method."""

from __future__ import annotations

import contextlib
import math
import warnings
from typing import Any, Iterator, overload

import torch
from torch import nn

from .core.hooks import preserved_state
from .core.finite import NonFiniteError, check_finite
from .core.locking import model_lock
from .hf.access import model_config, pretrained
from .hf.prepare import Prepared, append_continuation, append_generated, check_loaded, check_token_ids, prepare
from .hf.targets import Generated, pools_last_token, resolve_targets
from .hf.text import Encoded, encode
from .methods import MethodSpec, get_method, list_methods, register_method
from .methods.fields import as_result_kwargs
from .methods.registry import ENCODE_OPTIONS, PREPARE_OPTIONS, check_options
from .result import Result

__all__ = [
    "Explainer",
    "register_method",
    "list_methods",
    "get_method",
    "MethodSpec",
    "slice_encoded",
    "jsonable",
    "check_result_finite",
    "empty_entries",
]


class Explainer:
    """Explain an HF model's predictions on text."""

    def __init__(self, model: nn.Module, tokenizer: Any, *, model_name: str | None = None) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a transformers model (torch.nn.Module), got {type(model).__name__}")
        try:
            embeddings = pretrained(model).get_input_embeddings()
        except (AttributeError, NotImplementedError):
            embeddings = None
        if embeddings is None:
            raise ValueError(
                f"model {type(model).__name__} has no input embeddings (get_input_embeddings()); hfattr "
                "attributes to the input embeddings of a transformers model"
            )
        if getattr(model, "config", None) is None:
            raise TypeError(
                f"model {type(model).__name__} has no .config; Explainer needs a transformers model "
                "(PreTrainedModel). For a plain torch module use the drop-in classes (FeatureAblation, ...)"
            )
        if (
            tokenizer is None
            or not callable(tokenizer)
            or not callable(getattr(tokenizer, "convert_ids_to_tokens", None))
        ):
            raise TypeError(
                f"tokenizer must be a transformers tokenizer (callable, with convert_ids_to_tokens), "
                f"got {type(tokenizer).__name__}"
            )
        check_loaded(model)
        self.model = model
        self.tokenizer = tokenizer
        self.model_name = model_name or getattr(model.config, "name_or_path", None) or type(model).__name__

    @classmethod
    def from_pretrained(
        cls, name_or_path: str, *, task: str | None = None, trust_remote_code: bool = False, **kwargs: Any
    ) -> "Explainer":
        """Load a model and tokenizer by hub name or local path (remote code off unless asked)."""
        from .hf.loading import load_model

        model, tokenizer = load_model(name_or_path, task=task, trust_remote_code=trust_remote_code, **kwargs)
        return cls(model, tokenizer, model_name=str(name_or_path))

    @contextlib.contextmanager
    def _scoped(self) -> Iterator[None]:
        """The model's lock (and its configs') for the whole call; eval mode, frozen, restored after."""
        with model_lock(self.model):
            config = model_config(self.model)
            attn = getattr(config, "_attn_implementation", None)
            try:
                with preserved_state(self.model, eval_mode=True, freeze=True):
                    yield
            finally:
                if attn is not None and getattr(config, "_attn_implementation", None) != attn:
                    config._attn_implementation = attn

    @overload
    def explain(
        self, text: str, *, method: str = ..., target: Any = ..., batch_size: int = ..., **options: Any
    ) -> Result: ...

    @overload
    def explain(
        self, text: list[str], *, method: str = ..., target: Any = ..., batch_size: int = ..., **options: Any
    ) -> list[Result]: ...

    def explain(
        self,
        text: Any,
        *,
        method: str = "ablation",
        target: Any = None,
        batch_size: int = 8,
        generate: int | None = None,
        max_new_tokens: int | None = None,
        generation_kwargs: dict | None = None,
        seed: int | None = None,
        contrast: Any = None,
        **options: Any,
    ) -> Result | list[Result]:
        """Attribute the model's output on ``text`` (a str gives a Result, a list gives a list).

        ``generate=N`` (or ``max_new_tokens=N``) first generates up to N tokens with
        ``model.generate`` (``generation_kwargs``, ``seed``), then explains every generated token:
        one Result per text whose rows are the generated tokens (see docs/generation.md).
        ``contrast`` (a text or token ids, one per target token) makes each row explain
        target − contrast (``score="contrast"``, the default then, or ``"contrast_prob"``).
        """
        spec = get_method(method)
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
        if generate is not None and max_new_tokens is not None and generate != max_new_tokens:
            raise ValueError(f"generate={generate!r} and max_new_tokens={max_new_tokens!r} disagree; give one")
        n_new = generate if generate is not None else max_new_tokens
        gen_kwargs = None
        if n_new is not None:
            from .hf.generate import check_generation_args

            if target is not None and not (isinstance(target, list) and all(t is None for t in target)):
                raise ValueError("give either target= (a continuation to explain) or generate=N, not both")
            gen_kwargs = check_generation_args(self.model, n_new, generation_kwargs, seed)
        elif generation_kwargs is not None or seed is not None:
            raise ValueError("generation_kwargs and seed only apply with generate=N (or max_new_tokens=N)")
        enc_opts = {k: options.pop(k) for k in ENCODE_OPTIONS if k in options}
        prep_opts = {k: options.pop(k) for k in PREPARE_OPTIONS if k in options}
        _check_score(prep_opts, contrast)
        check_options(spec, options)
        limit = _position_limit(self.model)
        enc_all, single = encode(self.tokenizer, text, model_max_length=limit, **enc_opts)
        check_token_ids(self.model, enc_all)
        n = enc_all.batch_size
        if n_new is not None and limit is not None and not getattr(self.model.config, "is_encoder_decoder", False):
            longest = int(enc_all.attention_mask.sum(1).max())
            if longest + n_new > limit:
                raise ValueError(
                    f"a prompt of {longest} tokens plus generate={n_new} exceeds the model's "
                    f"{limit} positions; shorten the prompt (max_length=) or generate fewer tokens"
                )
        targets = target if isinstance(target, list) else [target] * n
        if len(targets) != n:
            raise ValueError(f"target list has {len(targets)} entries but {n} texts were given")
        contrasts = _per_text(contrast, n)
        results: list[Result] = []
        grad = contextlib.ExitStack()
        if spec.needs_grad:  # gradient methods work inside a caller's no_grad / inference_mode too
            grad.enter_context(torch.inference_mode(False))
            grad.enter_context(torch.enable_grad())
        gen_opts = (
            {}
            if gen_kwargs is None
            else {"generate": n_new, "generation_kwargs": generation_kwargs or {}, "seed": seed}
        )
        if contrast is not None:
            gen_opts["contrast"] = contrast
        with grad, self._scoped():
            for start in range(0, n, batch_size):
                stop = min(n, start + batch_size)
                chunk = slice_encoded(enc_all, start, stop)
                chunk_targets = targets[start:stop]
                if gen_kwargs is not None:
                    from .hf.generate import generate_targets
                    from .hf.prepare import input_device

                    chunk_targets = generate_targets(
                        self.model, self.tokenizer, chunk.to(input_device(self.model)), gen_kwargs, seed=seed
                    )
                for prepared in self._prepared(chunk, chunk_targets, spec, prep_opts, contrasts[start:stop]):
                    for fields in spec.fn(prepared, **options):
                        kwargs = as_result_kwargs(fields, method)
                        check_result_finite(kwargs, method=method, index=len(results))
                        _warn_only_specials(kwargs, method, len(results))
                        results.append(self._result(kwargs, method, options, enc_opts, {**prep_opts, **gen_opts}))
        return results[0] if single else results

    def _prepared(
        self, enc: Encoded, targets: list, spec: MethodSpec, prep_opts: dict, contrasts: list | None = None
    ) -> Iterator[Prepared]:
        from .hf.prepare import input_device
        from .hf.targets import contrast_ids

        enc = enc.to(input_device(self.model))
        if enc.batch_size > 1 and pools_last_token(self.model) and not bool(enc.attention_mask.bool().all()):
            # a decoder classifier finds its last real token from input ids, which it does not get
            # on embeddings: padded texts go one at a time, without padding
            for i in range(enc.batch_size):
                one, _ = _one_text(enc, i)
                t = targets[i] if isinstance(targets, list) else targets
                yield from self._prepared(one, [t], spec, prep_opts, None if contrasts is None else [contrasts[i]])
            return
        resolved = resolve_targets(self.model, self.tokenizer, enc, targets)
        for r, c in zip(resolved, contrasts or [None] * len(resolved)):
            if c is not None:
                r.contrast = contrast_ids(self.tokenizer, c, len(r.indices))
        multi = any(len(r.indices) > 1 or r.kind in ("continuation", "seq2seq") or r.is_matrix for r in resolved)
        if spec.batched and not multi:
            yield prepare(self.model, self.tokenizer, enc, resolved, **prep_opts)
            return
        for i, r in enumerate(resolved):
            one, shift = _one_text(enc, i)
            if shift and r.kind != "seq2seq":  # seq2seq positions are decoder positions
                r.positions = [p - shift if p is not None else None for p in r.positions]
            if r.extra_ids:
                if isinstance(targets[i], Generated):
                    one = append_generated(self.tokenizer, one, r.extra_ids)
                else:
                    cont = targets[i] if isinstance(targets[i], str) else ""
                    one = append_continuation(self.tokenizer, one, r.extra_ids, cont)
            yield prepare(self.model, self.tokenizer, one, [r], **prep_opts)

    def _result(self, kwargs: dict, method: str, options: dict, enc_opts: dict, prep_opts: dict) -> Result:
        opts = {**enc_opts, **prep_opts, **options}
        return Result(method=method, options=jsonable(opts), model_name=self.model_name, **kwargs)

    def __repr__(self) -> str:
        return f"Explainer(model={self.model_name!r}, methods={list_methods()})"


def empty_entries(attributions: Any, target: Any) -> torch.Tensor | None:
    """The entries of a generation's attributions that are empty by construction (NaN by design):
    row ``j`` at and after column ``prompt_length + j``; ``None`` for any other Result."""
    if not isinstance(target, dict) or target.get("kind") not in ("generation", "continuation"):
        return None
    p = target.get("prompt_length")
    if not isinstance(attributions, torch.Tensor) or attributions.dim() != 2 or not isinstance(p, int):
        return None
    rows = torch.arange(attributions.shape[0]).unsqueeze(1)
    cols = torch.arange(attributions.shape[1]).unsqueeze(0)
    return cols >= p + rows


def check_result_finite(fields: dict, *, method: str, index: int) -> None:
    """Raise if a method's scores (outside a generation's empty entries) or probability are NaN/Inf."""
    where = f"method {method!r}, result {index}" + (f" (text {fields['text'][:40]!r})" if fields.get("text") else "")
    attributions = fields.get("scores")
    check_finite(
        attributions,
        f"the attribution scores of {where}",
        ignore=empty_entries(attributions, fields.get("target")),
        hint="the model's output or gradient is NaN/Inf (check its weights and the baseline)",
    )
    prob = fields.get("probability")
    values = prob if isinstance(prob, list) else [prob]
    if any(isinstance(v, float) and not math.isfinite(v) for v in values):
        raise NonFiniteError(
            f"the predicted probability of {where} is not finite ({prob}); the model's "
            "output is NaN/Inf (check its weights)"
        )


def _warn_only_specials(fields: dict, method: str, index: int) -> None:
    special, attributions = fields.get("special_mask"), fields.get("scores")
    if special and all(special) and isinstance(attributions, torch.Tensor) and bool((attributions == 0).all()):
        warnings.warn(
            f"text {index} ({fields.get('text')!r}) is made only of special tokens, which {method!r} keeps "
            "fixed: every score is 0 by construction (pass keep_special=False to attribute to them)",
            stacklevel=3,
        )


def _position_limit(model: nn.Module) -> int | None:
    config = model.config
    for name in ("max_position_embeddings", "n_positions", "max_positions"):
        n = getattr(config, name, None)
        if isinstance(n, int) and n > 0:
            return n
    return None


def _check_score(prep_opts: dict, contrast: Any) -> None:
    from .hf.scores import get_score

    if contrast is not None:
        prep_opts.setdefault("score", "contrast")
    spec = get_score(prep_opts.get("score", "logit"))
    if spec.contrastive and contrast is None:
        raise ValueError(f"score={spec.name!r} needs contrast= (a contrast text or token ids)")
    if contrast is not None and not spec.contrastive:
        raise ValueError(
            f"contrast= needs a contrastive score ('contrast', 'contrast_prob' or a registered "
            f"contrastive score), got score={spec.name!r}"
        )


def _per_text(contrast: Any, n: int) -> list:
    """One contrast per text: a text or an id list applies to all; a list of those gives one each."""
    if isinstance(contrast, list) and contrast and all(isinstance(c, (str, list, tuple)) for c in contrast):
        if len(contrast) != n:
            raise ValueError(f"contrast list has {len(contrast)} entries but {n} texts were given")
        return list(contrast)
    return [contrast] * n


def _one_text(enc: Encoded, i: int) -> tuple[Encoded, int]:
    """Text ``i`` alone without any padding column, and how many leading columns were dropped."""
    pos = enc.positions(i)
    one = slice_encoded(enc, i, i + 1)
    first, last = pos[0], pos[-1] + 1
    if pos != list(range(first, last)):
        raise ValueError(f"text {i} has padding between its tokens; hfattr expects left or right padding")
    return Encoded(
        one.input_ids[:, first:last],
        one.attention_mask[:, first:last],
        one.special_mask[:, first:last],
        one.texts,
        None if one.offsets is None else [o[first:last] for o in one.offsets],
        None if one.word_ids is None else [w[first:last] for w in one.word_ids],
        {k: v[:, first:last] for k, v in one.extra.items()},
    ), first


def slice_encoded(enc: Encoded, a: int, b: int, *, trim: bool = False) -> Encoded:
    """Texts ``a:b`` of ``enc`` (``trim``: drop columns that are padding in every kept text)."""
    ids, mask = enc.input_ids[a:b], enc.attention_mask[a:b]
    end = ids.shape[1]
    if trim:
        end = int(mask.sum(0).nonzero().max()) + 1
    return Encoded(
        ids[:, :end],
        mask[:, :end],
        enc.special_mask[a:b, :end],
        enc.texts[a:b],
        None if enc.offsets is None else [o[:end] for o in enc.offsets[a:b]],
        None if enc.word_ids is None else [w[:end] for w in enc.word_ids[a:b]],
        {k: v[a:b, :end] for k, v in enc.extra.items()},
    )


def jsonable(obj: Any) -> Any:
    """``obj`` with every value JSON-able (anything else becomes its repr)."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    return repr(obj)
