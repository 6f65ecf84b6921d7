"""Scoped hook helpers: every hook registered here is removed when its ``with`` block ends.

A *layer value* is what a module produces (its output) or receives (its positional and keyword
inputs). Methods attribute to the tensor members of that value: all of them when the value is a
tensor or a tuple of tensors; otherwise (a tuple holding ``None``, caches, ...) the first tensor
only, and the other members pass through untouched.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import torch
from torch import Tensor, nn

from .locking import model_lock

__all__ = [
    "HookSet",
    "LayerValue",
    "capture_layer",
    "replace_layer",
    "preserved_state",
    "StopForward",
    "ModelState",
    "batch_of",
]


class HookSet(contextlib.AbstractContextManager):
    """A list of hook handles removed together (also when an exception is raised)."""

    def __init__(self) -> None:
        self.handles: list[Any] = []

    def add(self, handle: Any) -> Any:
        self.handles.append(handle)
        return handle

    def remove(self) -> None:
        while self.handles:
            self.handles.pop().remove()

    def __exit__(self, *exc: Any) -> None:
        self.remove()


@dataclass
class LayerValue:
    """Where the attributable tensors sit inside one call's output or inputs.

    Attributable: tensor members whose dimension 0 is the batch. All of them when every member
    is such a tensor (or ``first_only`` is off and the value is a plain tensor); otherwise the
    first one, the other members passing through untouched.
    """

    structure: str  # "tensor", "tuple", "mapping", "args", "kwarg"
    slots: tuple[Any, ...]  # positions in the tuple/args, or keys / kwarg names

    @staticmethod
    def of_output(out: Any, *, batch: int | None = None, first_only: bool = False) -> "LayerValue":
        if isinstance(out, Tensor):
            return LayerValue("tensor", (0,))
        if isinstance(out, Mapping):
            keys = list(out.keys())
            slots = _tensor_slots([out[k] for k in keys], batch, True)
            return LayerValue("mapping", tuple(keys[i] for i in slots))
        if isinstance(out, (tuple, list)):
            return LayerValue("tuple", _tensor_slots(out, batch, first_only))
        raise TypeError(f"layer output of type {type(out).__name__} holds no tensor to attribute to")

    @staticmethod
    def of_inputs(args: tuple, kwargs: dict, *, batch: int | None = None, first_only: bool = False) -> "LayerValue":
        if args and any(isinstance(a, Tensor) for a in args):
            return LayerValue("args", _tensor_slots(args, batch, first_only))
        names = [k for k, v in kwargs.items() if isinstance(v, Tensor)]
        if not names:
            raise TypeError("layer input holds no tensor to attribute to")
        name = "hidden_states" if "hidden_states" in names else names[0]
        return LayerValue("kwarg", (name,))

    def get(self, out: Any = None, args: tuple = (), kwargs: dict | None = None) -> tuple[Tensor, ...]:
        if self.structure == "tensor":
            return (out,)
        if self.structure in ("tuple", "mapping"):
            return tuple(out[i] for i in self.slots)
        if self.structure == "args":
            return tuple(args[i] for i in self.slots)
        return tuple((kwargs or {})[k] for k in self.slots)

    def put_output(self, out: Any, tensors: tuple[Tensor, ...]) -> Any:
        if self.structure == "tensor":
            return tensors[0]
        if self.structure == "mapping":
            new = copy.copy(out)
            for key, t in zip(self.slots, tensors):
                new[key] = t
            return new
        items = list(out)
        for slot, t in zip(self.slots, tensors):
            items[slot] = t
        return type(out)(items) if isinstance(out, tuple) else items

    def put_inputs(self, args: tuple, kwargs: dict, tensors: tuple[Tensor, ...]) -> tuple[tuple, dict]:
        if self.structure == "args":
            items = list(args)
            for slot, t in zip(self.slots, tensors):
                items[slot] = t
            return tuple(items), kwargs
        new_kwargs = dict(kwargs)
        new_kwargs[self.slots[0]] = tensors[0]
        return args, new_kwargs


def _tensor_slots(items: Any, batch: int | None, first_only: bool) -> tuple[int, ...]:
    tensors = [i for i, v in enumerate(items) if isinstance(v, Tensor)]
    if not tensors:
        raise TypeError("layer value holds no tensor to attribute to")
    batched = [i for i in tensors if batch is None or (items[i].dim() > 0 and items[i].shape[0] == batch)]
    chosen = batched or tensors
    if not first_only and len(batched) == len(items):
        return tuple(chosen)
    return (chosen[0],)


def batch_of(args: tuple, kwargs: dict) -> int | None:
    """Dimension 0 of a call's first tensor argument."""
    for v in list(args) + list(kwargs.values()):
        if isinstance(v, Tensor) and v.dim() > 0:
            return v.shape[0]
    return None


def _device_of(tensors: tuple[Tensor, ...]) -> torch.device:
    return tensors[0].device


@dataclass
class Captured:
    """Tensors a module produced or received, per device (one entry unless DataParallel)."""

    value: LayerValue | None = None
    per_device: dict[torch.device, tuple[Tensor, ...]] = field(default_factory=dict)
    calls: int = 0

    def gathered(self, device_order: list[torch.device] | None = None) -> tuple[Tensor, ...]:
        if not self.per_device:
            raise RuntimeError("nothing was captured")
        keys = list(self.per_device)
        if device_order and len(keys) > 1:
            keys = sorted(keys, key=lambda d: device_order.index(d) if d in device_order else len(device_order))
        parts = [self.per_device[k] for k in keys]
        if len(parts) == 1:
            return parts[0]
        target = parts[0][0].device
        return tuple(torch.cat([p[j].to(target) for p in parts], dim=0) for j in range(len(parts[0])))


class StopForward(Exception):
    """Raised from a hook to end a forward pass early once the needed value is captured."""


@contextlib.contextmanager
def capture_layer(
    module: nn.Module,
    *,
    inputs: bool = False,
    detach: bool = True,
    stop: bool = False,
    first_only: bool = False,
) -> Iterator[Captured]:
    """Record the attributable tensors of ``module``'s output (or inputs) during the block."""
    cap = Captured()

    def record(tensors: tuple[Tensor, ...]) -> None:
        cap.calls += 1
        # always a copy: the model may change the live tensor in place after the hook ran (an
        # in-place activation, ``h += residual``); without ``detach`` the copy keeps the graph
        tensors = tuple(t.detach().clone() if detach else t.clone() for t in tensors)
        cap.per_device[_device_of(tensors)] = tensors
        if stop:
            raise StopForward

    def fwd_hook(mod: nn.Module, args: tuple, kwargs: dict, out: Any) -> None:
        value = LayerValue.of_output(out, batch=batch_of(args, kwargs), first_only=first_only)
        cap.value = value
        record(value.get(out))

    def pre_hook(mod: nn.Module, args: tuple, kwargs: dict) -> None:
        value = LayerValue.of_inputs(args, kwargs, batch=batch_of(args, kwargs), first_only=first_only)
        cap.value = value
        record(value.get(args=args, kwargs=kwargs))

    with HookSet() as hooks:
        if inputs:
            hooks.add(module.register_forward_pre_hook(pre_hook, with_kwargs=True))
        else:
            hooks.add(module.register_forward_hook(fwd_hook, with_kwargs=True))
        yield cap


@contextlib.contextmanager
def replace_layer(
    module: nn.Module,
    replacement: Callable[[torch.device], tuple[Tensor, ...]],
    *,
    inputs: bool = False,
    value: LayerValue | None = None,
    suffix: bool = False,
) -> Iterator[None]:
    """Substitute ``module``'s attributable output (or input) tensors during the block.

    ``replacement(device)`` returns the tensors to use for a call running on ``device``;
    ``value`` (from the capture pass) says which members they replace. With ``suffix`` the module
    may run on the last positions of the sequence only; the replacement's matching suffix is used.
    """

    def fwd_hook(mod: nn.Module, args: tuple, out: Any) -> Any:
        where = value or LayerValue.of_output(out)
        current = where.get(out)
        new = _match(_cut(replacement(_device_of(current)), current, suffix), current)
        return where.put_output(out, new)

    def pre_hook(mod: nn.Module, args: tuple, kwargs: dict) -> Any:
        where = value or LayerValue.of_inputs(args, kwargs)
        current = where.get(args=args, kwargs=kwargs)
        new = _match(_cut(replacement(_device_of(current)), current, suffix), current)
        return where.put_inputs(args, kwargs, new)

    with HookSet() as hooks:
        if inputs:
            hooks.add(module.register_forward_pre_hook(pre_hook, with_kwargs=True))
        else:
            hooks.add(module.register_forward_hook(fwd_hook))
        yield


def _cut(new: tuple[Tensor, ...], current: tuple[Tensor, ...], suffix: bool) -> tuple[Tensor, ...]:
    if not suffix:
        return new
    return tuple(
        n[:, n.shape[1] - c.shape[1] :] if n.dim() >= 2 and c.dim() >= 2 and n.shape[1] > c.shape[1] else n
        for n, c in zip(new, current)
    )


def _match(new: tuple[Tensor, ...], current: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
    if len(new) != len(current):
        raise ValueError(f"layer value has {len(current)} tensor(s) but {len(new)} replacement(s) were given")
    out = []
    for n, c in zip(new, current):
        if n.shape != c.shape:
            raise ValueError(
                f"replacement of shape {tuple(n.shape)} does not match the layer value's shape {tuple(c.shape)}"
            )
        # a copy: the model may change the value in place, the stored one must stay intact. The
        # dtype is the replacement's (a float baseline promotes an integer value, as in the reference)
        out.append(n.to(device=c.device, copy=True))
    return tuple(out)


@dataclass
class ModelState:
    """A snapshot of the torch-level state a method must leave as it found it."""

    training: dict[str, bool]
    requires_grad: dict[str, bool]
    hook_counts: dict[str, tuple[int, ...]]

    @staticmethod
    def of(model: nn.Module) -> "ModelState":
        return ModelState(
            training={n: m.training for n, m in model.named_modules()},
            requires_grad={n: p.requires_grad for n, p in model.named_parameters()},
            hook_counts={n: hook_counts(m) for n, m in model.named_modules()},
        )

    def restore(self, model: nn.Module) -> None:
        for n, m in model.named_modules():
            if n in self.training:
                m.training = self.training[n]
        for n, p in model.named_parameters():
            if n in self.requires_grad:
                p.requires_grad_(self.requires_grad[n])


def hook_counts(module: nn.Module) -> tuple[int, ...]:
    """Number of hooks of each kind registered on ``module`` (for leak checks)."""
    return (
        len(module._forward_hooks),
        len(module._forward_pre_hooks),
        len(module._backward_hooks),
        len(getattr(module, "_backward_pre_hooks", {})),
    )


@contextlib.contextmanager
def preserved_state(model: nn.Module, *, eval_mode: bool = True, freeze: bool = False) -> Iterator[nn.Module]:
    """Run the block with ``model`` in eval mode (and optionally frozen), restoring it after.

    The model's lock (:func:`~hfattr.core.locking.model_lock`) is held for the whole block.
    """
    with model_lock(model):
        state = ModelState.of(model)
        try:
            if eval_mode:
                model.eval()
            if freeze:
                for p in model.parameters():
                    p.requires_grad_(False)
            yield model
        finally:
            state.restore(model)
