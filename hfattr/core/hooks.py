"""Scoped hook helpers: every hook registered here is removed when its ``with`` block ends.

A *layer value* is what a module produces (its output) or receives (its positional and keyword
inputs). Methods attribute to the tensor members of that value: all of them when the value is a
tensor or a tuple of tensors; otherwise (a tuple holding ``None``, caches, ...) the first tensor
only, and the other members pass through untouched.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import torch
from torch import Tensor, nn

__all__ = [
    "HookSet",
    "LayerValue",
    "capture_layer",
    "replace_layer",
    "preserved_state",
    "StopForward",
    "ModelState",
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
    """Where the attributable tensors sit inside one call's output or inputs."""

    structure: str  # "tensor", "tuple", "args", "kwarg"
    slots: tuple[Any, ...]  # int positions in the tuple/args, or kwarg names

    @staticmethod
    def of_output(out: Any) -> "LayerValue":
        if isinstance(out, Tensor):
            return LayerValue("tensor", (0,))
        if isinstance(out, (tuple, list)):
            return LayerValue("tuple", _tensor_slots(out))
        raise TypeError(
            f"layer output of type {type(out).__name__} holds no tensor to attribute to"
        )

    @staticmethod
    def of_inputs(args: tuple, kwargs: dict) -> "LayerValue":
        if args and any(isinstance(a, Tensor) for a in args):
            return LayerValue("args", _tensor_slots(args))
        names = [k for k, v in kwargs.items() if isinstance(v, Tensor)]
        if not names:
            raise TypeError("layer input holds no tensor to attribute to")
        name = "hidden_states" if "hidden_states" in names else names[0]
        return LayerValue("kwarg", (name,))

    def get(self, out: Any = None, args: tuple = (), kwargs: dict | None = None) -> tuple[Tensor, ...]:
        if self.structure == "tensor":
            return (out,)
        if self.structure == "tuple":
            return tuple(out[i] for i in self.slots)
        if self.structure == "args":
            return tuple(args[i] for i in self.slots)
        return tuple(kwargs[k] for k in self.slots)

    def put_output(self, out: Any, tensors: tuple[Tensor, ...]) -> Any:
        if self.structure == "tensor":
            return tensors[0]
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


def _tensor_slots(items: Any) -> tuple[int, ...]:
    idx = [i for i, v in enumerate(items) if isinstance(v, Tensor)]
    if not idx:
        raise TypeError("layer value holds no tensor to attribute to")
    if len(idx) == len(items):
        return tuple(idx)
    return (idx[0],)


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
) -> Iterator[Captured]:
    """Record the attributable tensors of ``module``'s output (or inputs) during the block."""
    cap = Captured()

    def record(tensors: tuple[Tensor, ...]) -> None:
        cap.calls += 1
        if detach:
            tensors = tuple(t.detach().clone() for t in tensors)
        cap.per_device[_device_of(tensors)] = tensors
        if stop:
            raise StopForward

    def fwd_hook(mod: nn.Module, args: tuple, out: Any) -> None:
        value = LayerValue.of_output(out)
        cap.value = value
        record(value.get(out))

    def pre_hook(mod: nn.Module, args: tuple, kwargs: dict) -> None:
        value = LayerValue.of_inputs(args, kwargs)
        cap.value = value
        record(value.get(args=args, kwargs=kwargs))

    with HookSet() as hooks:
        if inputs:
            hooks.add(module.register_forward_pre_hook(pre_hook, with_kwargs=True))
        else:
            hooks.add(module.register_forward_hook(fwd_hook))
        yield cap


@contextlib.contextmanager
def replace_layer(
    module: nn.Module,
    replacement: Callable[[torch.device], tuple[Tensor, ...]],
    *,
    inputs: bool = False,
) -> Iterator[None]:
    """Substitute ``module``'s attributable output (or input) tensors during the block.

    ``replacement(device)`` returns the tensors to use for a call running on ``device``.
    """

    def fwd_hook(mod: nn.Module, args: tuple, out: Any) -> Any:
        value = LayerValue.of_output(out)
        current = value.get(out)
        new = _match(replacement(_device_of(current)), current)
        return value.put_output(out, new)

    def pre_hook(mod: nn.Module, args: tuple, kwargs: dict) -> Any:
        value = LayerValue.of_inputs(args, kwargs)
        current = value.get(args=args, kwargs=kwargs)
        new = _match(replacement(_device_of(current)), current)
        return value.put_inputs(args, kwargs, new)

    with HookSet() as hooks:
        if inputs:
            hooks.add(module.register_forward_pre_hook(pre_hook, with_kwargs=True))
        else:
            hooks.add(module.register_forward_hook(fwd_hook))
        yield


def _match(new: tuple[Tensor, ...], current: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
    if len(new) != len(current):
        raise ValueError(
            f"layer value has {len(current)} tensor(s) but {len(new)} replacement(s) were given"
        )
    out = []
    for n, c in zip(new, current):
        if n.shape != c.shape:
            raise ValueError(
                f"replacement of shape {tuple(n.shape)} does not match the layer value's shape "
                f"{tuple(c.shape)}"
            )
        out.append(n.to(device=c.device, dtype=c.dtype))
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
    """Run the block with ``model`` in eval mode (and optionally frozen), restoring it after."""
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
