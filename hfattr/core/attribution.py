"""Drop-in classes with the reference signatures, as thin shells over the core functions."""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import Tensor, nn

from ._args import as_tuple
from .ablation import feature_ablation, feature_ablation_future
from .layer import layer_feature_ablation, neuron_gradient

__all__ = ["FeatureAblation", "LayerFeatureAblation", "NeuronGradient"]


def _unwrap(result: tuple[Tensor, ...], as_tuple_out: bool) -> Tensor | tuple[Tensor, ...]:
    return result if as_tuple_out else result[0]


def _check_callable(forward_func: Any) -> Callable:
    if not callable(forward_func):
        raise TypeError(f"forward_func must be callable, got {type(forward_func).__name__}")
    return forward_func


class FeatureAblation:
    """Replace groups of input features by a baseline and record the change of the output."""

    def __init__(self, forward_func: Callable) -> None:
        self.forward_func = _check_callable(forward_func)

    def attribute(
        self,
        inputs: Tensor | tuple[Tensor, ...],
        baselines: Any = None,
        target: Any = None,
        additional_forward_args: Any = None,
        feature_mask: Tensor | tuple[Tensor, ...] | None = None,
        perturbations_per_eval: int = 1,
        show_progress: bool = False,
        **kwargs: Any,
    ) -> Tensor | tuple[Tensor, ...]:
        """Attributions with the shape of ``inputs`` (first dim 1 for per-batch outputs)."""
        formatted, was_tuple = as_tuple(inputs)
        out = feature_ablation(
            self.forward_func,
            formatted,
            baselines=baselines,
            target=target,
            additional_forward_args=additional_forward_args,
            feature_mask=feature_mask,
            perturbations_per_eval=perturbations_per_eval,
            show_progress=show_progress,
        )
        return _unwrap(out, was_tuple)

    def attribute_future(
        self,
        inputs: Tensor | tuple[Tensor, ...],
        baselines: Any = None,
        target: Any = None,
        additional_forward_args: Any = None,
        feature_mask: Tensor | tuple[Tensor, ...] | None = None,
        perturbations_per_eval: int = 1,
        show_progress: bool = False,
        **kwargs: Any,
    ) -> torch.futures.Future:
        """As :meth:`attribute` for a ``forward_func`` returning a Future; returns a Future."""
        formatted, was_tuple = as_tuple(inputs)
        fut = feature_ablation_future(
            self.forward_func,
            formatted,
            baselines=baselines,
            target=target,
            additional_forward_args=additional_forward_args,
            feature_mask=feature_mask,
            perturbations_per_eval=perturbations_per_eval,
            show_progress=show_progress,
        )
        return fut.then(lambda f: _unwrap(f.value(), was_tuple))


class LayerFeatureAblation:
    """Ablate groups of a layer's output (or input) values and record the change of the output."""

    def __init__(
        self,
        forward_func: Callable,
        layer: nn.Module,
        device_ids: list[int] | None = None,
    ) -> None:
        self.forward_func = _check_callable(forward_func)
        if not isinstance(layer, nn.Module):
            raise TypeError(f"layer must be a torch.nn.Module, got {type(layer).__name__}")
        self.layer = layer
        self.device_ids = device_ids

    def attribute(
        self,
        inputs: Tensor | tuple[Tensor, ...],
        layer_baselines: Any = None,
        target: Any = None,
        additional_forward_args: Any = None,
        layer_mask: Tensor | tuple[Tensor, ...] | None = None,
        attribute_to_layer_input: bool = False,
        perturbations_per_eval: int = 1,
    ) -> Tensor | tuple[Tensor, ...]:
        """Attributions with the shape of the layer's value; a tuple if it holds several tensors."""
        formatted, _ = as_tuple(inputs)
        out, was_tuple = layer_feature_ablation(
            self.forward_func,
            self.layer,
            formatted,
            layer_baselines=layer_baselines,
            target=target,
            additional_forward_args=additional_forward_args,
            layer_mask=layer_mask,
            attribute_to_layer_input=attribute_to_layer_input,
            perturbations_per_eval=perturbations_per_eval,
            device_ids=self.device_ids,
        )
        return _unwrap(out, was_tuple)


class NeuronGradient:
    """Gradient of one neuron (or a sum of neurons) of a layer with respect to the inputs."""

    def __init__(
        self,
        forward_func: Callable,
        layer: nn.Module,
        device_ids: list[int] | None = None,
    ) -> None:
        self.forward_func = _check_callable(forward_func)
        if not isinstance(layer, nn.Module):
            raise TypeError(f"layer must be a torch.nn.Module, got {type(layer).__name__}")
        self.layer = layer
        self.device_ids = device_ids

    def attribute(
        self,
        inputs: Tensor | tuple[Tensor, ...],
        neuron_selector: int | tuple | Callable,
        additional_forward_args: Any = None,
        attribute_to_neuron_input: bool = False,
    ) -> Tensor | tuple[Tensor, ...]:
        """Gradients with the shape of ``inputs``."""
        formatted, was_tuple = as_tuple(inputs)
        out = neuron_gradient(
            self.forward_func,
            self.layer,
            formatted,
            neuron_selector,
            additional_forward_args=additional_forward_args,
            attribute_to_neuron_input=attribute_to_neuron_input,
            device_ids=self.device_ids,
        )
        return _unwrap(out, was_tuple)
