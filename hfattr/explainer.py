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
from .hf.prepare import Prepared, append_continuation, check_loaded, check_token_ids, prepare
from .hf.targets import resolve_targets
from .hf.text import Encoded, encode
from .methods import MethodSpec, get_method, list_methods, register_method
from .methods.fields import as_result_kwargs
from .methods.registry import ENCODE_OPTIONS, PREPARE_OPTIONS, check_options
from .result import Result

__all__ = ["Explainer", "register_method", "list_methods", "get_method", "MethodSpec", "slice_encoded",
           "jsonable", "check_result_finite", "empty_entries"]


class Explainer:
    """Explain an HF model's predictions on text."""

    def __init__(self, model: nn.Module, tokenizer: Any, *, model_name: str | None = None) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a transformers model (torch.nn.Module), got {type(model).__name__}")
        try:
            embeddings = model.get_input_embeddings()
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
        if tokenizer is None or not callable(tokenizer) or not callable(getattr(tokenizer, "convert_ids_to_tokens",
                                                                                 None)):
            raise TypeError(f"tokenizer must be a transformers tokenizer (callable, with convert_ids_to_tokens), "
                            f"got {type(tokenizer).__name__}")
        check_loaded(model)
        self.model = model
        self.tokenizer = tokenizer
        self.model_name = model_name or getattr(model.config, "name_or_path", None) or type(model).__name__

    @classmethod
    def from_pretrained(cls, name_or_path: str, *, task: str | None = None, trust_remote_code: bool = False,
                        **kwargs: Any) -> "Explainer":
        """Load a model and tokenizer by hub name or local path (remote code off unless asked)."""
        from .hf.loading import load_model

        model, tokenizer = load_model(name_or_path, task=task, trust_remote_code=trust_remote_code, **kwargs)
        return cls(model, tokenizer, model_name=str(name_or_path))

    @contextlib.contextmanager
    def _scoped(self) -> Iterator[None]:
        """The model's lock (and its configs') for the whole call; eval mode, frozen, restored after."""
        with model_lock(self.model):
            config = self.model.config
            attn = getattr(config, "_attn_implementation", None)
            try:
                with preserved_state(self.model, eval_mode=True, freeze=True):
                    yield
            finally:
                if attn is not None and getattr(config, "_attn_implementation", None) != attn:
                    config._attn_implementation = attn

    @overload
    def explain(self, text: str, *, method: str = ..., target: Any = ..., batch_size: int = ...,
                **options: Any) -> Result: ...

    @overload
    def explain(self, text: list[str], *, method: str = ..., target: Any = ..., batch_size: int = ...,
                **options: Any) -> list[Result]: ...

    def explain(self, text: Any, *, method: str = "ablation", target: Any = None, batch_size: int = 8,
                **options: Any) -> Result | list[Result]:
        """Attribute the model's output on ``text`` (a str gives a Result, a list gives a list)."""
        spec = get_method(method)
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
        enc_opts = {k: options.pop(k) for k in ENCODE_OPTIONS if k in options}
        prep_opts = {k: options.pop(k) for k in PREPARE_OPTIONS if k in options}
        check_options(spec, options)
        enc_all, single = encode(self.tokenizer, text, model_max_length=_position_limit(self.model), **enc_opts)
        check_token_ids(self.model, enc_all)
        n = enc_all.batch_size
        targets = target if isinstance(target, list) else [target] * n
        if len(targets) != n:
            raise ValueError(f"target list has {len(targets)} entries but {n} texts were given")
        results: list[Result] = []
        grad = contextlib.ExitStack()
        if spec.needs_grad:  # gradient methods work inside a caller's no_grad / inference_mode too
            grad.enter_context(torch.inference_mode(False))
            grad.enter_context(torch.enable_grad())
        with grad, self._scoped():
            for start in range(0, n, batch_size):
                chunk = slice_encoded(enc_all, start, min(n, start + batch_size))
                for prepared in self._prepared(chunk, targets[start : start + batch_size], spec, prep_opts):
                    for fields in spec.fn(prepared, **options):
                        kwargs = as_result_kwargs(fields, method)
                        check_result_finite(kwargs, method=method, index=len(results))
                        _warn_only_specials(kwargs, method, len(results))
                        results.append(self._result(kwargs, method, options, enc_opts, prep_opts))
        return results[0] if single else results

    def _prepared(self, enc: Encoded, targets: list, spec: MethodSpec, prep_opts: dict) -> Iterator[Prepared]:
        from .hf.prepare import input_device

        enc = enc.to(input_device(self.model))
        rows = resolve_targets(self.model, self.tokenizer, enc, targets)
        multi = any(len(r.indices) > 1 or r.kind in ("continuation", "seq2seq") for r in rows)
        if spec.batched and not multi:
            yield prepare(self.model, self.tokenizer, enc, rows, **prep_opts)
            return
        for i, r in enumerate(rows):
            one = slice_encoded(enc, i, i + 1, trim=True)
            if r.extra_ids:
                cont = targets[i] if isinstance(targets[i], str) else ""
                one = append_continuation(self.tokenizer, one, r.extra_ids[:-1], _leading(cont, r, self.tokenizer))
            yield prepare(self.model, self.tokenizer, one, [r], **prep_opts)

    def _result(self, kwargs: dict, method: str, options: dict, enc_opts: dict, prep_opts: dict) -> Result:
        opts = {**enc_opts, **prep_opts, **options}
        return Result(method=method, options=jsonable(opts), model_name=self.model_name, **kwargs)

    def __repr__(self) -> str:
        return f"Explainer(model={self.model_name!r}, methods={list_methods()})"


def empty_entries(scores: Any, target: Any) -> torch.Tensor | None:
    """The entries of a generation's scores that are empty by construction (NaN by design):
    row ``j`` at and after column ``prompt_length + j``; ``None`` for any other Result."""
    if not isinstance(target, dict) or target.get("kind") not in ("generation", "continuation"):
        return None
    p = target.get("prompt_length")
    if not isinstance(scores, torch.Tensor) or scores.dim() != 2 or not isinstance(p, int):
        return None
    rows = torch.arange(scores.shape[0]).unsqueeze(1)
    cols = torch.arange(scores.shape[1]).unsqueeze(0)
    return cols >= p + rows


def check_result_finite(fields: dict, *, method: str, index: int) -> None:
    """Raise if a method's scores (outside a generation's empty entries) or probability are NaN/Inf."""
    where = f"method {method!r}, result {index}" + (f" (text {fields['text'][:40]!r})" if fields.get("text") else "")
    scores = fields.get("scores")
    check_finite(scores, f"the attribution scores of {where}", ignore=empty_entries(scores, fields.get("target")),
                 hint="the model's output or gradient is NaN/Inf (check its weights and the baseline)")
    prob = fields.get("probability")
    values = prob if isinstance(prob, list) else [prob]
    if any(isinstance(v, float) and not math.isfinite(v) for v in values):
        raise NonFiniteError(f"the predicted probability of {where} is not finite ({prob}); the model's "
                             "output is NaN/Inf (check its weights)")


def _warn_only_specials(fields: dict, method: str, index: int) -> None:
    special, scores = fields.get("special_mask"), fields.get("scores")
    if special and all(special) and isinstance(scores, torch.Tensor) and bool((scores == 0).all()):
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


def _leading(cont: str, rows: Any, tokenizer: Any) -> str:
    """The continuation text up to (not including) its last token, for display."""
    if not cont:
        return ""
    out = tokenizer(cont, add_special_tokens=False, return_offsets_mapping=True)
    offs = out.get("offset_mapping")
    if not offs or len(offs) < 2:
        return ""
    return cont[: offs[-2][1]]


def slice_encoded(enc: Encoded, a: int, b: int, *, trim: bool = False) -> Encoded:
    """Texts ``a:b`` of ``enc`` (``trim``: drop columns that are padding in every kept text)."""
    ids, mask = enc.input_ids[a:b], enc.attention_mask[a:b]
    end = ids.shape[1]
    if trim:
        end = int(mask.sum(0).nonzero().max()) + 1
    return Encoded(
        ids[:, :end], mask[:, :end], enc.special_mask[a:b, :end], enc.texts[a:b],
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
