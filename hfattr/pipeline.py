"""``hfattr.pipeline``: a ``transformers.pipeline``-shaped entry point to attribution.

>>> pipe = pipeline("text-classification", "path/to/model", method="ablation")  # doctest: +SKIP
>>> pipe("the movie was great")                     # doctest: +SKIP
Result(method='ablation', ...)
"""

from __future__ import annotations

import contextlib
import os
from typing import Any, overload

import torch
from torch import nn

from .explainer import Explainer
from .methods.registry import GENERAL_OPTIONS, check_options, get_method
from .result import Result

__all__ = ["pipeline", "AttributionPipeline"]

_GENERAL_OPTIONS = frozenset(GENERAL_OPTIONS)


class AttributionPipeline:
    """Callable wrapper around an :class:`~hfattr.Explainer` with default method and options.

    ``pipe(text)`` gives a :class:`~hfattr.Result`, ``pipe([t1, t2])`` a list. Keywords given to
    the call (``target=``, ``batch_size=``, method options) override the construction defaults.
    A per-call ``method=`` different from :attr:`method` keeps only the method-independent
    defaults (target, batch size, encoding and baseline options).
    """

    def __init__(
        self, explainer: Explainer, *, method: str = "ablation", task: str | None = None, **defaults: Any
    ) -> None:
        if not isinstance(explainer, Explainer):
            raise TypeError(f"explainer must be an hfattr.Explainer, got {type(explainer).__name__}")
        get_method(method)  # unknown method -> ValueError naming the known ones
        _validate(method, defaults)
        self.explainer = explainer
        self.method = method
        self.task = task
        self.defaults = dict(defaults)

    @property
    def model(self) -> nn.Module:
        return self.explainer.model

    @property
    def tokenizer(self) -> Any:
        return self.explainer.tokenizer

    @property
    def model_name(self) -> str:
        return self.explainer.model_name

    @overload
    def __call__(self, text: str, *, method: str | None = ..., **options: Any) -> Result: ...

    @overload
    def __call__(self, text: list[str], *, method: str | None = ..., **options: Any) -> list[Result]: ...

    def __call__(self, text: Any, *, method: str | None = None, **options: Any) -> Result | list[Result]:
        """Explain ``text`` (a str or a list of str)."""
        method = self.method if method is None else method
        spec = get_method(method)
        if method == self.method:
            merged = {**self.defaults, **options}
        else:
            keep = _GENERAL_OPTIONS | {"target", "batch_size"}
            merged = {**{k: v for k, v in self.defaults.items() if k in keep}, **options}
        _validate(method, merged)
        grad = torch.enable_grad() if spec.needs_grad else contextlib.nullcontext()
        with grad:
            return self.explainer.explain(text, method=method, **merged)

    def __repr__(self) -> str:
        return f"AttributionPipeline(model={self.model_name!r}, method={self.method!r}, options={self.defaults!r})"


def _validate(method: str, options: dict) -> None:
    """Fail early on options the method does not accept (``target``/``batch_size`` are general)."""
    own = {k: v for k, v in options.items() if k not in _GENERAL_OPTIONS and k not in ("target", "batch_size")}
    check_options(get_method(method), own)


def _is_hf_pipeline(obj: Any) -> bool:
    try:
        from transformers import Pipeline
    except ImportError:  # pragma: no cover - transformers is a dependency
        return False
    return isinstance(obj, Pipeline)


def _load_tokenizer(name_or_path: str, trust_remote_code: bool) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(name_or_path, trust_remote_code=trust_remote_code)


def pipeline(
    task: str | None = None,
    model: Any = None,
    tokenizer: Any = None,
    *,
    method: str = "ablation",
    trust_remote_code: bool = False,
    device_map: Any = None,
    **options: Any,
) -> AttributionPipeline:
    """Build an :class:`AttributionPipeline`, in the shape of ``transformers.pipeline``.

    ``model`` is a hub name or local path (loaded for ``task``; remote code off unless
    ``trust_remote_code=True``), a model object (give ``tokenizer``, or it is loaded from
    ``model.name_or_path`` when that is a local directory), a ``transformers.Pipeline`` (its
    model and tokenizer are used), or None for the embedded default model. ``tokenizer`` may
    be a tokenizer or a name/path. Extra keywords (``target=``, ``batch_size=``, method
    options) become per-call defaults.
    """
    from .hf.loading import TASKS, load_model

    if task is not None and task not in TASKS:
        raise ValueError(f"unknown task {task!r}; known tasks: {sorted(TASKS)}")
    _validate(method, options)  # before any loading: unknown method or option -> error now
    if isinstance(tokenizer, (str, os.PathLike)):
        tokenizer = _load_tokenizer(os.fspath(tokenizer), trust_remote_code)

    name: str | None = None
    if model is None:
        if task is not None and TASKS[task] != "AutoModelForSequenceClassification":
            raise ValueError(
                f"task {task!r} needs a model: the embedded default model is a sentiment "
                "(sequence-classification) model; pass model="
            )
        from .hf.default_model import DEFAULT_MODEL_NAME, load_default_model

        model_obj, default_tok = load_default_model(device=_single_device(device_map))
        tokenizer = tokenizer if tokenizer is not None else default_tok
        name = DEFAULT_MODEL_NAME
    elif isinstance(model, (str, os.PathLike)):
        name = os.fspath(model)
        if name.startswith("~"):
            name = os.path.expanduser(name)
        _check_local_path(name)
        model_obj, loaded_tok = load_model(name, task=task, trust_remote_code=trust_remote_code, device_map=device_map)
        tokenizer = tokenizer if tokenizer is not None else loaded_tok
    elif _is_hf_pipeline(model):
        _no_device_map(device_map, "a transformers.Pipeline")
        model_obj = model.model
        tokenizer = tokenizer if tokenizer is not None else getattr(model, "tokenizer", None)
        if tokenizer is None:
            raise ValueError("the transformers.Pipeline given as model has no tokenizer; pass tokenizer=")
    elif isinstance(model, nn.Module):
        _no_device_map(device_map, "a model object")
        model_obj = model
        if tokenizer is None:
            path = getattr(model, "name_or_path", None) or getattr(getattr(model, "config", None), "name_or_path", None)
            if not path or not os.path.isdir(path):
                raise ValueError(
                    "tokenizer is required when model is a model object "
                    f"(model.name_or_path={path!r} is not a local directory to load it from)"
                )
            tokenizer = _load_tokenizer(path, trust_remote_code)
    else:
        raise TypeError(
            "model must be None, a hub name or local path, a transformers model or a "
            f"transformers.Pipeline, got {type(model).__name__}"
        )

    explainer = Explainer(model_obj, tokenizer, model_name=name)
    return AttributionPipeline(explainer, method=method, task=task, **options)


def _check_local_path(name: str) -> None:
    """A name written as a filesystem path must exist (otherwise the hub's repo-id error is confusing)."""
    looks_local = os.path.isabs(name) or name.startswith(("./", "../", "~", ".\\", "..\\")) or name in (".", "..")
    if looks_local and not os.path.isdir(name):
        raise FileNotFoundError(f"model path {name!r} is not an existing directory")


def _single_device(device_map: Any) -> Any:
    """The embedded model is small: ``device_map`` may only name one device for it."""
    if device_map is None or isinstance(device_map, torch.device):
        return device_map
    if isinstance(device_map, str) and device_map not in ("auto", "balanced", "balanced_low_0", "sequential"):
        return device_map
    raise ValueError(
        f"device_map={device_map!r} is not supported for the embedded default model; "
        "give one device such as 'cpu' or 'cuda:0'"
    )


def _no_device_map(device_map: Any, what: str) -> None:
    if device_map is not None:
        raise ValueError(
            f"device_map applies only when model is a hub name or a local path, not {what}; "
            "place the model yourself before passing it"
        )
