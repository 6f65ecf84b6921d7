"""The method registry: ``register_method`` / ``get_method`` / ``list_methods`` and option checks.

A method is ``fn(prepared, *, option=...) -> list[ResultFields]``; every option is keyword-only,
which :func:`register_method` checks when the method is registered.
"""

from __future__ import annotations

import importlib
import inspect
import re
from dataclasses import dataclass
from typing import Any, Callable

__all__ = [
    "MethodSpec",
    "register_method",
    "get_method",
    "list_methods",
    "check_options",
    "ENCODE_OPTIONS",
    "PREPARE_OPTIONS",
    "GENERATION_OPTIONS",
    "GENERAL_OPTIONS",
]

ENCODE_OPTIONS = ("max_length", "truncation", "chat", "add_special_tokens")
PREPARE_OPTIONS = ("baseline", "keep_special", "score")
GENERATION_OPTIONS = ("generate", "max_new_tokens", "generation_kwargs", "seed", "contrast")
GENERAL_OPTIONS = ENCODE_OPTIONS + PREPARE_OPTIONS + GENERATION_OPTIONS


@dataclass(frozen=True)
class MethodSpec:
    """A registered method; ``remove()`` unregisters it (if it is still the registered one).

    ``target`` is the function, or ``"module:function"`` imported (and checked) on first use of
    :attr:`fn`, so that listing the methods needs neither torch nor transformers.
    """

    name: str
    target: Callable[..., list] | str
    description: str = ""
    batched: bool = True  # may take several texts with one target row each in one call
    needs_grad: bool = False

    @property
    def fn(self) -> Callable[..., list]:
        """The method's function (imported on first use when registered as ``"module:function"``)."""
        if isinstance(self.target, str):
            module, _, attr = self.target.partition(":")
            fn = getattr(importlib.import_module(module), attr)
            _check_signature(self.name, fn)
            object.__setattr__(self, "target", fn)
        return self.target  # type: ignore[return-value]

    def remove(self) -> None:
        if _METHODS.get(self.name) is self:
            del _METHODS[self.name]


_METHODS: dict[str, MethodSpec] = {}


def _check_signature(name: str, fn: Callable[..., Any]) -> None:
    if not callable(fn):
        raise TypeError(f"method {name!r}: fn must be callable, got {type(fn).__name__}")
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        return  # builtins without a signature: nothing to check
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL)]
    if len(positional) != 1 or positional[0].kind is inspect.Parameter.VAR_POSITIONAL:
        names = [p.name for p in positional]
        raise TypeError(
            f"method {name!r}: fn must take the prepared batch as its only positional argument and every "
            f"option keyword-only (def {getattr(fn, '__name__', 'fn')}(prep, *, option=...)); "
            f"its positional parameters are {names}"
        )


def register_method(
    name: str,
    fn: Callable[..., list] | str,
    *,
    description: str = "",
    batched: bool = True,
    needs_grad: bool = False,
    overwrite: bool = False,
) -> MethodSpec:
    """Make ``fn`` available as ``Explainer.explain(..., method=name)``; returns a handle with ``remove()``.

    ``fn`` may also be a ``"module:function"`` string, imported when the method is first used.
    """
    if not isinstance(name, str) or not name:
        raise ValueError("method name must be a non-empty string")
    if isinstance(fn, str):
        if not re.fullmatch(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*", fn):
            raise ValueError(f"method {name!r}: fn as a string must be 'module:function', got {fn!r}")
    else:
        _check_signature(name, fn)
    if name in _METHODS and not overwrite:
        raise ValueError(f"method {name!r} is already registered; pass overwrite=True to replace it")
    spec = MethodSpec(name, fn, description, batched, needs_grad)
    _METHODS[name] = spec
    return spec


def list_methods() -> list[str]:
    """Names of the registered methods."""
    return sorted(_METHODS)


def get_method(name: str) -> MethodSpec:
    """The registered method ``name`` (a ValueError listing the known ones otherwise)."""
    if name not in _METHODS:
        raise ValueError(f"unknown method {name!r}; known methods: {', '.join(sorted(_METHODS))}")
    return _METHODS[name]


def check_options(spec: MethodSpec, options: dict) -> None:
    """Refuse options that ``spec``'s function does not take (before any work)."""
    params = inspect.signature(spec.fn).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    allowed = [n for n, p in params.items() if p.kind is inspect.Parameter.KEYWORD_ONLY]
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise TypeError(
            f"method {spec.name!r} got unknown option(s) {unknown}; it accepts {allowed} plus {list(GENERAL_OPTIONS)}"
        )
