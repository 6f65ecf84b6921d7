"""Attribution to a module's output (or input): layer ablation and neuron gradients.

The attributable part of a module's output or input is described in :mod:`hfattr.core.hooks`
(all tensors of a tensor/tuple-of-tensors value; otherwise the first tensor, the rest passing
through untouched). A module that runs more than once per forward is refused for ablation,
because substituting its value would change every call.
"""

from __future__ import annotations

import functools
import warnings
from typing import Any, Callable

import torch
from torch import Tensor, nn

from .inputs import call_forward, format_additional_args, index_after_batch
from .ablation import feature_ablation
from .fastpath import FIRST_CHANGED, PrefixRecorder, find_root, record_prefix, reuse_prefix
from .hooks import Captured, StopForward, capture_layer, replace_layer

__all__ = ["layer_feature_ablation", "neuron_gradient", "layer_eval", "select_neuron"]


def _device_ids(forward_func: Callable, device_ids: list[int] | None) -> list[int] | None:
    if device_ids is not None:
        return list(device_ids)
    found = getattr(forward_func, "device_ids", None)
    return list(found) if found else None


def _device_order(ids: list[int] | None) -> list[torch.device] | None:
    return [torch.device("cuda", i) for i in ids] if ids else None


def _check_module(layer: Any, name: str) -> nn.Module:
    if not isinstance(layer, nn.Module):
        raise TypeError(f"{name} must be a torch.nn.Module, got {type(layer).__name__}")
    return layer


def _check_ran(cap: Captured, layer: nn.Module, *, once: bool) -> None:
    if cap.calls == 0:
        raise ValueError(
            f"layer {type(layer).__name__} did not run during forward_func; is it part of the model "
            "that forward_func calls?"
        )
    if once and cap.calls > max(1, len(cap.per_device)):
        raise ValueError(
            f"layer {type(layer).__name__} ran {cap.calls} times in one forward pass (a shared or "
            "re-entered module); attributing to it would substitute every call. Choose a module "
            "that runs once."
        )


def layer_eval(
    forward_func: Callable,
    layer: nn.Module,
    inputs: tuple[Tensor, ...],
    *,
    additional_forward_args: Any = None,
    attribute_to_layer_input: bool = False,
    device_ids: list[int] | None = None,
    record_root: nn.Module | None = None,
    first_only: bool = False,
) -> tuple[tuple[Tensor, ...], bool, PrefixRecorder | None, Any]:
    """One no-grad forward recording the layer's attributable tensors.

    Returns ``(tensors, was_tuple, prefix, where)``; ``prefix`` records the blocks of
    ``record_root`` that finished before the layer started (see :mod:`hfattr.core.fastpath`) and
    ``where`` which members of the layer's value the tensors are.
    """
    _check_module(layer, "layer")
    args = format_additional_args(additional_forward_args)
    ids = _device_ids(forward_func, device_ids)
    if getattr(forward_func, FIRST_CHANGED, False):
        forward_func = functools.partial(forward_func, first_changed=0)  # a full pass: the layer must run
    with (
        torch.no_grad(),
        capture_layer(layer, inputs=attribute_to_layer_input, first_only=first_only) as cap,
        record_prefix(record_root, layer, inputs[0].shape[0]) as prefix,
    ):
        call_forward(forward_func, inputs, args)
    _check_ran(cap, layer, once=True)
    tensors = cap.gathered(_device_order(ids))
    batch = inputs[0].shape[0]
    for t in tensors:
        if t.dim() == 0 or t.shape[0] != batch:
            raise ValueError(
                f"layer {type(layer).__name__} gives a value of shape {tuple(t.shape)}, without one row per "
                f"example (batch {batch}) in dimension 0; choose a layer whose "
                f"{'input' if attribute_to_layer_input else 'output'} is per example"
            )
    was_tuple = len(tensors) > 1
    return tensors, was_tuple, prefix, cap.value


def layer_feature_ablation(
    forward_func: Callable,
    layer: nn.Module,
    inputs: tuple[Tensor, ...],
    *,
    layer_baselines: Any = None,
    target: Any = None,
    additional_forward_args: Any = None,
    layer_mask: Any = None,
    attribute_to_layer_input: bool = False,
    perturbations_per_eval: int = 1,
    device_ids: list[int] | None = None,
    skip_id: int | None = None,
    fast: bool = True,
    root: nn.Module | None = None,
    first_only: bool = False,
    skip_prefix: bool | None = None,
) -> tuple[tuple[Tensor, ...], bool]:
    """Ablation attributions for a layer's output (or input) values; ``(attributions, was_tuple)``.

    Each perturbation reruns ``forward_func`` with the layer's value replaced by the ablated one.
    With ``fast`` the blocks that ran before the layer are not recomputed (``root`` is the
    model; found from ``forward_func`` when not given). Not used under DataParallel.
    ``first_only`` attributes to the first batch tensor of a tuple value only.
    ``skip_prefix`` is the deprecated name of ``fast``.
    """
    if skip_prefix is not None:
        warnings.warn("layer_feature_ablation: skip_prefix= is deprecated; use fast=", DeprecationWarning, stacklevel=2)
        fast = skip_prefix
    args = format_additional_args(additional_forward_args)
    ids = _device_ids(forward_func, device_ids)
    record_root = None
    if fast and not ids:
        record_root = root if root is not None else find_root(forward_func, layer)
    values, was_tuple, prefix, where = layer_eval(
        forward_func,
        layer,
        inputs,
        additional_forward_args=args,
        attribute_to_layer_input=attribute_to_layer_input,
        device_ids=ids,
        record_root=record_root,
        first_only=first_only,
    )
    n_values, n_inputs = len(values), len(inputs)
    # forward functions that can run a sequence suffix (causal LMs with a cached prefix) are told
    # the first position the substituted value changes; the layer then runs on that suffix only
    suffix = bool(getattr(forward_func, FIRST_CHANGED, False)) and not ids and _sequence_like(values)

    def substituted_forward(*flat: Any) -> Any:
        new_values = flat[:n_values]
        original = flat[n_values : n_values + n_inputs]
        rest = flat[n_values + n_inputs :]
        by_device = _scatter(new_values, ids)
        fwd = forward_func
        if suffix:
            fwd = functools.partial(forward_func, first_changed=_first_changed(values, new_values))
        with (
            replace_layer(
                layer,
                lambda dev: by_device.get(dev, new_values),
                inputs=attribute_to_layer_input,
                value=where,
                suffix=suffix,
            ),
            reuse_prefix(prefix, suffix=suffix),
        ):
            return call_forward(fwd, original, rest)

    attributions = feature_ablation(
        substituted_forward,
        values,
        baselines=layer_baselines,
        target=target,
        additional_forward_args=inputs + (args or ()),
        feature_mask=layer_mask,
        perturbations_per_eval=perturbations_per_eval,
        skip_id=skip_id,
        mask_name="layer_mask",
        baseline_name="layer_baselines",
    )
    return attributions, was_tuple


def _sequence_like(values: tuple[Tensor, ...]) -> bool:
    return all(v.dim() >= 2 and v.shape[1] == values[0].shape[1] for v in values)


def _first_changed(values: tuple[Tensor, ...], new_values: tuple[Tensor, ...]) -> int:
    """First position along dimension 1 where any sample of ``new_values`` differs from ``values``."""
    first = values[0].shape[1]
    for old, new in zip(values, new_values):
        n = new.shape[0] // old.shape[0]
        reference = old.to(new.device).repeat((n,) + (1,) * (old.dim() - 1))
        changed = (new != reference).transpose(0, 1).reshape(new.shape[1], -1).any(1).nonzero()
        if len(changed):
            first = min(first, int(changed[0]))
    return first


def _scatter(values: tuple[Tensor, ...], ids: list[int] | None) -> dict[torch.device, tuple[Tensor, ...]]:
    if not ids or len(ids) < 2:
        return {}
    from torch.nn.parallel.scatter_gather import scatter

    parts = scatter(values, target_gpus=ids)
    return {part[0].device: tuple(part) for part in parts}


def select_neuron(values: tuple[Tensor, ...], neuron_selector: Any) -> Tensor:
    """The selected neuron value(s) of a layer, one scalar per example (or one overall)."""
    if callable(neuron_selector):
        picked = neuron_selector(values if len(values) > 1 else values[0])
        if not isinstance(picked, Tensor):
            raise TypeError(f"neuron_selector callable must return a tensor, got {type(picked).__name__}")
        return picked
    if len(values) > 1:
        raise ValueError(
            f"the layer value holds {len(values)} tensors; an index neuron_selector needs a single "
            "tensor, so pass a callable neuron_selector instead"
        )
    out = values[0]
    index = (neuron_selector,) if isinstance(neuron_selector, int) else neuron_selector
    if (
        isinstance(neuron_selector, bool)
        or not isinstance(index, tuple)
        or not all(isinstance(i, (int, slice)) and not isinstance(i, bool) for i in index)
    ):
        raise TypeError(
            f"neuron_selector must be an int, a tuple of ints and slices, or a callable; got {neuron_selector!r}"
        )
    picked = index_after_batch(out, index, what="neuron_selector", of="layer value")
    if any(isinstance(i, slice) for i in index):
        return picked.reshape(picked.shape[0], -1).sum(1)
    if picked.dim() > 1:
        raise ValueError(
            f"neuron_selector {neuron_selector!r} selects a block of shape {tuple(picked.shape[1:])} "
            f"per example from a layer value of shape {tuple(out.shape)}; give one index per "
            "dimension, slices to sum a range, or a callable"
        )
    return picked


def neuron_gradient(
    forward_func: Callable,
    layer: nn.Module,
    inputs: tuple[Tensor, ...],
    neuron_selector: Any,
    *,
    additional_forward_args: Any = None,
    attribute_to_neuron_input: bool = False,
    device_ids: list[int] | None = None,
    stop_early: bool = False,
) -> tuple[Tensor, ...]:
    """Gradient of the selected neuron(s), summed over the batch, with respect to each input.

    A layer that runs more than once per forward is refused. With ``stop_early`` (for callers
    that know the layer runs once) the forward pass ends as soon as the layer has run; never
    under DataParallel, where every replica must finish.
    """
    _check_module(layer, "layer")
    for i, x in enumerate(inputs):
        if not x.is_floating_point():
            where = f"inputs[{i}]" if len(inputs) > 1 else "inputs"
            raise TypeError(f"{where} must be floating point to take gradients, got {x.dtype}")
    args = format_additional_args(additional_forward_args)
    ids = _device_ids(forward_func, device_ids)
    leaves = tuple(x.detach().requires_grad_(True) for x in inputs)
    early_stop = stop_early and ids is None
    with torch.enable_grad():
        with capture_layer(layer, inputs=attribute_to_neuron_input, detach=False, stop=early_stop) as cap:
            try:  # copies of the leaves: the forward may change its inputs in place
                call_forward(forward_func, tuple(x.clone() for x in leaves), args, owned=True)
            except StopForward:
                pass
        _check_ran(cap, layer, once=not early_stop)
        device_order = _device_order(ids)
        keys = list(cap.per_device)
        if device_order and len(keys) > 1:
            keys.sort(key=lambda d: device_order.index(d) if d in device_order else len(device_order))
        total = sum(select_neuron(cap.per_device[k], neuron_selector).sum() for k in keys)
        if not isinstance(total, Tensor) or not total.requires_grad:
            return tuple(torch.zeros_like(x) for x in inputs)
        grads = torch.autograd.grad(total, leaves, allow_unused=True)
    return tuple(torch.zeros_like(x) if g is None else g for g, x in zip(grads, inputs))
