"""Normalising the argument forms shared by every method (inputs, baselines, targets, extra args)."""

from __future__ import annotations

import inspect
import numbers
from typing import Any, Callable, Sequence

import torch
from torch import Tensor

__all__ = [
    "as_tuple",
    "check_same_batch",
    "same_batch_error",
    "format_baselines",
    "format_additional_args",
    "expand_additional_args",
    "expand_target",
    "select_target",
    "run_forward",
    "check_target",
]


def as_tuple(inputs: Any, *, name: str = "inputs", same_batch: bool = True) -> tuple[tuple[Tensor, ...], bool]:
    """Return ``(tuple_of_tensors, was_tuple)``; raise naming ``name`` on anything else.

    With ``same_batch`` every tensor must share dimension 0 (see :func:`check_same_batch`).
    """
    was_tuple = isinstance(inputs, tuple)
    items = inputs if was_tuple else (inputs,)
    if not items:
        raise ValueError(f"{name} must contain at least one tensor; got an empty tuple")
    for i, t in enumerate(items):
        if not isinstance(t, Tensor):
            where = f"{name}[{i}]" if was_tuple else name
            raise TypeError(f"{where} must be a torch.Tensor, got {type(t).__name__}")
        if t.dim() == 0:
            where = f"{name}[{i}]" if was_tuple else name
            raise ValueError(f"{where} must have a batch dimension (dim 0); got a 0-d tensor")
    if same_batch:
        check_same_batch(tuple(items), name=name)
    return tuple(items), was_tuple


def same_batch_error(items: tuple[Tensor, ...], *, name: str = "inputs", why: str = "") -> ValueError | None:
    """The error for tensors of ``items`` that differ from the first one in dimension 0, or None."""
    n = items[0].shape[0]
    for i, t in enumerate(items[1:], start=1):
        if t.shape[0] != n:
            return ValueError(
                f"{name}[{i}] has batch size {t.shape[0]} but {name}[0] has {n}; "
                f"every input tensor must share dimension 0{why}"
            )
    return None


def check_same_batch(items: tuple[Tensor, ...], *, name: str = "inputs", why: str = "") -> None:
    """Raise :func:`same_batch_error` if there is one."""
    err = same_batch_error(items, name=name, why=why)
    if err is not None:
        raise err


def format_baselines(
    baselines: Any, inputs: tuple[Tensor, ...], *, name: str = "baselines"
) -> tuple[Tensor | float | int, ...]:
    """One baseline (scalar or tensor broadcastable to the input) per input tensor."""
    if baselines is None:
        return tuple(False if x.dtype == torch.bool else 0 for x in inputs)
    if not isinstance(baselines, tuple):
        baselines = (baselines,)
    if len(baselines) != len(inputs):
        raise ValueError(f"{name} must have one entry per input tensor: expected {len(inputs)}, got {len(baselines)}")
    out: list[Any] = []  # tensors and numbers
    for i, (b, x) in enumerate(zip(baselines, inputs)):
        where = f"{name}[{i}]" if len(inputs) > 1 else name
        if isinstance(b, numbers.Number):  # bools included, as in the reference
            out.append(b)
            continue
        if not isinstance(b, Tensor):
            raise TypeError(f"{where} must be a number or a torch.Tensor, got {type(b).__name__}")
        try:
            shape = torch.broadcast_shapes(b.shape, x.shape)
        except RuntimeError:
            shape = None
        if shape != x.shape:
            raise ValueError(
                f"{where} has shape {tuple(b.shape)}, which does not broadcast to the input's shape {tuple(x.shape)}"
            )
        out.append(b.to(x.device))
    return tuple(out)


def format_additional_args(args: Any) -> tuple[Any, ...] | None:
    """``None`` stays ``None``; a non-tuple becomes a 1-tuple."""
    if args is None:
        return None
    return args if isinstance(args, tuple) else (args,)


def expand_additional_args(args: tuple[Any, ...] | None, n: int) -> tuple[Any, ...] | None:
    """Repeat tensor arguments ``n`` times along dim 0 (block-major); others pass as they are."""
    if args is None or n == 1:
        return args
    return tuple(torch.cat([a] * n, dim=0) if isinstance(a, Tensor) and a.dim() > 0 else a for a in args)


def expand_target(target: Any, n: int) -> Any:
    """Repeat per-example targets ``n`` times, block-major, to match repeated inputs."""
    if n == 1:
        return target
    if isinstance(target, list):
        return target * n
    if isinstance(target, Tensor) and target.numel() > 1:
        return torch.cat([target] * n, dim=0)
    return target


def index_after_batch(value: Tensor, index: tuple, *, what: str = "target", of: str = "output") -> Tensor:
    """``value[:, *index]``, with errors naming ``what`` when the index does not fit."""
    if len(index) > value.dim() - 1:
        raise ValueError(
            f"{what} {index!r} has {len(index)} indices, but the {of} of shape {tuple(value.shape)} "
            f"has {value.dim() - 1} dimension(s) after the batch"
        )
    for d, i in enumerate(index, start=1):
        if isinstance(i, int) and not -value.shape[d] <= i < value.shape[d]:
            raise IndexError(
                f"{what} index {i} is out of range for {of} dimension {d} of size "
                f"{value.shape[d]} ({of} shape {tuple(value.shape)})"
            )
    return value[(slice(None),) + tuple(index)]


_index_columns = index_after_batch


def select_target(output: Tensor, target: Any) -> Tensor:
    """Pick the explained values out of a model output, for every target form of the reference."""
    if target is None:
        return output
    if isinstance(target, bool):
        raise TypeError("target must be an int, tuple, tensor or list, not a bool")
    if isinstance(target, int):
        return _index_columns(output, (target,))
    if isinstance(target, tuple):
        return _index_columns(output, target)
    n = output.shape[0] if output.dim() > 0 else 0
    if isinstance(target, Tensor):
        if target.numel() == 1 and not target.is_floating_point():
            return _index_columns(output, (int(target.item()),))
        if target.dim() == 1 and target.numel() == n:
            if output.dim() != 2:
                raise ValueError(f"a tensor of per-example targets needs a 2-D output, got shape {tuple(output.shape)}")
            _check_range(target.tolist(), output.shape[1])
            return torch.gather(output, 1, target.to(output.device).reshape(n, 1))
        raise ValueError(
            f"target tensor of shape {tuple(target.shape)} does not fit the output of shape "
            f"{tuple(output.shape)}: expected one element or one per example ({n})"
        )
    if isinstance(target, list):
        if len(target) != n:
            raise ValueError(f"target list has {len(target)} entries but the output has {n} examples")
        if all(isinstance(t, int) for t in target):
            if output.dim() != 2:
                raise ValueError(f"a list of int targets needs a 2-D output, got shape {tuple(output.shape)}")
            _check_range(target, output.shape[1])
            idx = torch.tensor(target, device=output.device).reshape(n, 1)
            return torch.gather(output, 1, idx)
        if all(isinstance(t, tuple) for t in target):
            return torch.stack([_index_columns(output[i : i + 1], t)[0] for i, t in enumerate(target)])
        raise TypeError("a target list must hold only ints or only tuples")
    raise TypeError(f"target must be an int, tuple, tensor or list, got {type(target).__name__}")


def _check_range(indices: Sequence[int], size: int) -> None:
    for i in indices:
        if not -size <= i < size:
            raise IndexError(f"target {i} is out of range for an output dimension of size {size}")


def check_target(target: Any, batch_size: int) -> None:
    """Validate a target's form early, before any forward pass is spent."""
    if batch_size == 0:
        raise ValueError("inputs have a batch of 0 examples; give at least one example")
    if isinstance(target, Tensor) and (target.is_floating_point() or target.is_complex() or target.dtype == torch.bool):
        raise TypeError(f"target tensor must hold integer output indices, got dtype {target.dtype}")
    if isinstance(target, float):
        raise TypeError(f"target must be an int output index (or a tuple/list/tensor of them), got {target!r}")
    if isinstance(target, list) and len(target) != batch_size:
        raise ValueError(f"target list has {len(target)} entries; expected one per example ({batch_size})")
    if isinstance(target, Tensor) and target.numel() > 1 and target.numel() != batch_size:
        raise ValueError(f"target tensor has {target.numel()} elements; expected 1 or one per example ({batch_size})")


def _takes_no_args(fn: Callable) -> bool:
    try:
        return len(inspect.signature(fn).parameters) == 0
    except (TypeError, ValueError):
        return False


def call_forward(
    forward_func: Callable, inputs: tuple[Tensor, ...], args: tuple[Any, ...] | None, *, owned: bool = False
) -> Any:
    """Call ``forward_func(*inputs, *args)`` (or with nothing if it takes no parameters).

    Raises if the call changed a tensor argument in place (the next call would see changed
    values); ``owned`` inputs are the caller's own copies, used once, and not checked.
    """
    if _takes_no_args(forward_func):
        return forward_func()
    args = args or ()
    watched = [(f"inputs[{k}]", t, t._version) for k, t in enumerate(inputs) if not owned and isinstance(t, Tensor)]
    watched += [(f"additional_forward_args[{k}]", t, t._version) for k, t in enumerate(args) if isinstance(t, Tensor)]
    out = forward_func(*inputs, *args)
    for where, t, version in watched:
        if t._version != version:
            raise ValueError(
                f"forward_func changed {where} in place; the attribution reuses it and would be computed "
                "from changed values. Copy it inside forward_func first (x = x.clone()) or make the "
                "operation out-of-place"
            )
    return out


def as_output_tensor(output: Any) -> Tensor:
    """Accept a tensor or a Python number as a forward output."""
    if isinstance(output, Tensor):
        return output
    if isinstance(output, torch.Future):
        raise TypeError("forward_func returned a torch.futures.Future; use attribute_future() for such functions")
    if isinstance(output, bool) or not isinstance(output, (int, float)):
        raise TypeError(f"forward_func must return a torch.Tensor or a number, got {type(output).__name__}")
    return torch.tensor(output, dtype=torch.int64 if isinstance(output, int) else torch.float64)


def run_forward(
    forward_func: Callable,
    inputs: tuple[Tensor, ...],
    target: Any,
    args: tuple[Any, ...] | None,
    *,
    owned: bool = False,
) -> Tensor:
    """Forward then target selection; a Future output is an error here (``owned``: see ``call_forward``)."""
    out = call_forward(forward_func, inputs, args, owned=owned)
    if isinstance(out, torch.Future):
        raise TypeError("forward_func returned a torch.futures.Future; use attribute_future() for such functions")
    return select_target(as_output_tensor(out), target)
