"""Suffix-only execution: reuse what ran before a layer instead of recomputing it.

During the capture pass of a layer attribution, the blocks of every ``ModuleList`` /
``Sequential`` that *finished before the layer started* are recorded with their outputs. Their
outputs cannot depend on the layer's substituted value, and in a perturbation batch (the
original inputs repeated ``n`` times, block-major) they equal the recorded output repeated ``n``
times. So while perturbations run, those blocks return the recorded output without computing:
only the blocks after the site, the final norm and the head do real work.

A block is reused only if it ran once, its output is a tensor or a tuple of tensors/``None``
whose tensors have the batch as dimension 0, and its inputs' batch is a multiple of the
recorded one; otherwise it runs normally. Overrides are per instance and removed in ``finally``.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any, Iterator

import torch
from torch import Tensor, nn

from .hooks import HookSet, batch_of

__all__ = ["PrefixRecorder", "record_prefix", "reuse_prefix", "find_root", "FIRST_CHANGED", "suffix_of"]

# A forward function with this attribute set accepts ``first_changed=i``: the inputs (or the
# substituted layer value) differ from the unperturbed ones only at sequence positions >= i, and
# it may run positions >= i only (a causal model over a cached prefix).
FIRST_CHANGED = "accepts_first_changed"


def suffix_of(value: Any, length: int, full: int) -> Any:
    """The last ``length`` of ``full`` sequence positions (dim 1) of the tensors that have ``full`` there."""
    if isinstance(value, Tensor):
        return value[:, full - length :] if value.dim() >= 2 and value.shape[1] == full > length else value
    return tuple(suffix_of(v, length, full) if isinstance(v, Tensor) else v for v in value)


def _seq_len(args: tuple, kwargs: dict) -> int | None:
    for v in list(args) + list(kwargs.values()):
        if isinstance(v, Tensor) and v.dim() >= 2:
            return v.shape[1]
    return None


_MISSING = object()


def _block_candidates(root: nn.Module, layer: nn.Module) -> list[nn.Module]:
    """Elements of module lists that are neither the layer nor one of its ancestors."""
    ancestors = {id(m) for m in _ancestors(root, layer)}
    out: list[nn.Module] = []
    for m in root.modules():
        if isinstance(m, (nn.ModuleList, nn.Sequential)):
            out.extend(c for c in m.children() if c is not layer and id(c) not in ancestors)
    return out


def _ancestors(root: nn.Module, layer: nn.Module) -> list[nn.Module]:
    path: list[nn.Module] = []

    def walk(m: nn.Module) -> bool:
        if m is layer:
            return True
        for c in m.children():
            if walk(c):
                path.append(m)
                return True
        return False

    walk(root)
    return path


def _batchable(out: Any, batch: int) -> bool:
    if isinstance(out, Tensor):
        return out.dim() > 0 and out.shape[0] == batch
    if isinstance(out, tuple) and out:
        tensors = [o for o in out if isinstance(o, Tensor)]
        return bool(tensors) and all(
            o is None or (isinstance(o, Tensor) and o.dim() > 0 and o.shape[0] == batch) for o in out
        )
    return False


@dataclass
class PrefixRecorder:
    """What the capture pass learned: reusable blocks and their outputs."""

    batch: int
    layer: nn.Module
    started: bool = False
    outputs: dict[int, tuple[nn.Module, Any, int]] = field(default_factory=dict)
    calls: dict[int, int] = field(default_factory=dict)
    input_batch: dict[int, int | None] = field(default_factory=dict)

    def reusable(self) -> list[tuple[nn.Module, Any, int]]:
        blocks = [v for k, v in self.outputs.items() if self.calls.get(k) == 1]
        # keep the outermost reusable blocks only
        ids = {id(m) for m, _, _ in blocks}
        inner = {id(d) for m, _, _ in blocks for d in m.modules() if d is not m}
        return [b for b in blocks if id(b[0]) not in inner and id(b[0]) in ids]


@contextlib.contextmanager
def record_prefix(root: nn.Module | None, layer: nn.Module, batch: int) -> Iterator[PrefixRecorder | None]:
    """Record, during one forward, the blocks that finish before ``layer`` starts."""
    if root is None:
        yield None
        return
    rec = PrefixRecorder(batch=batch, layer=layer)
    candidates = _block_candidates(root, layer)

    def layer_pre(mod: nn.Module, args: tuple, kwargs: dict) -> None:
        rec.started = True

    def make_post(m: nn.Module):
        def post(mod: nn.Module, args: tuple, kwargs: dict, out: Any) -> None:
            key = id(mod)
            rec.calls[key] = rec.calls.get(key, 0) + 1
            if not rec.started and _batchable(out, batch) and batch_of(args, kwargs) == batch:
                rec.outputs[key] = (mod, _detach(out), batch)
            else:
                rec.outputs.pop(key, None)

        return post

    with HookSet() as hooks:
        hooks.add(layer.register_forward_pre_hook(layer_pre, with_kwargs=True, prepend=True))
        for m in candidates:
            hooks.add(m.register_forward_hook(make_post(m), with_kwargs=True))
        yield rec


def _detach(out: Any) -> Any:
    # a copy: the model may still change the live tensor in place after the block returned it
    if isinstance(out, Tensor):
        return out.detach().clone()
    return tuple(o.detach().clone() if isinstance(o, Tensor) else o for o in out)


def _repeat(out: Any, n: int) -> Any:
    # always a fresh tensor, so in-place edits downstream cannot touch the recording
    if isinstance(out, Tensor):
        return torch.cat([out] * n, dim=0)
    return tuple(torch.cat([o] * n, dim=0) if isinstance(o, Tensor) else o for o in out)


@contextlib.contextmanager
def reuse_prefix(rec: PrefixRecorder | None, *, suffix: bool = False) -> Iterator[None]:
    """While active, recorded blocks return their recorded output (repeated to the batch).

    With ``suffix`` the forward may run a sequence suffix only; the recorded output is then cut
    to the length of the block's input.
    """
    if rec is None:
        yield
        return
    saved: list[tuple[nn.Module, Any]] = []
    try:
        for mod, out, batch in rec.reusable():
            original = mod.forward

            def forward(*args: Any, _mod=mod, _out=out, _b=batch, _orig=original, **kwargs: Any) -> Any:
                n_samples = batch_of(args, kwargs)
                if n_samples is None or n_samples % _b:
                    return _orig(*args, **kwargs)
                out = _repeat(_out, n_samples // _b)
                if suffix:
                    length = _seq_len(args, kwargs)
                    full = _seq_len((_out,) if isinstance(_out, Tensor) else _out, {})
                    if length is not None and full is not None:
                        out = suffix_of(out, length, full)
                return out

            saved.append((mod, mod.__dict__.get("forward", _MISSING)))
            mod.forward = forward  # per-instance override, undone below
        yield
    finally:
        for mod, previous in reversed(saved):
            if previous is _MISSING:
                mod.__dict__.pop("forward", None)
            else:
                mod.forward = previous


def find_root(forward_func: Any, layer: nn.Module) -> nn.Module | None:
    """The module that ``forward_func`` runs and that contains ``layer``, if it can be found.

    Looks at the function itself, its bound object, a ``model`` attribute and its closure.
    """
    seen: list[Any] = [forward_func, getattr(forward_func, "__self__", None), getattr(forward_func, "model", None)]
    for cell in getattr(forward_func, "__closure__", None) or ():
        try:
            value = cell.cell_contents
        except ValueError:
            continue
        seen.extend([value, getattr(value, "model", None)])
    for obj in seen:
        if isinstance(obj, nn.Module) and not isinstance(obj, nn.DataParallel):
            if any(m is layer for m in obj.modules()):
                return obj
    return None
