"""Drop-in classes with the reference signatures, as thin shells over the core functions."""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import Tensor, nn

from ._args import as_tuple
from .ablation import feature_ablation, feature_ablation_future
from .layer import layer_feature_ablation, neuron_gradient
from .sig import SIGInfo, completeness_error, convergence_delta, sequential_integrated_gradients
from ._args import format_additional_args
from .locking import model_lock, owner_module

__all__ = ["FeatureAblation", "LayerFeatureAblation", "NeuronGradient", "SequentialIntegratedGradients"]


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
        with model_lock(owner_module(self.forward_func)):
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
        *,
        skip_prefix: bool = True,
    ) -> None:
        self.forward_func = _check_callable(forward_func)
        if not isinstance(layer, nn.Module):
            raise TypeError(f"layer must be a torch.nn.Module, got {type(layer).__name__}")
        self.layer = layer
        self.device_ids = device_ids
        self.skip_prefix = skip_prefix

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
        with model_lock(owner_module(self.forward_func), self.layer):
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
                skip_prefix=self.skip_prefix,
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
        with model_lock(owner_module(self.forward_func), self.layer):
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


class SequentialIntegratedGradients:
    """Integrated Gradients per sequence position, every other position kept at its input value.

    After ``attribute``, ``last_info`` holds the steps used per position, the number of passes and
    (with ``n_steps="auto"``) the per-position completeness errors.
    """

    def __init__(self, forward_func: Callable, multiply_by_inputs: bool = True) -> None:
        self.forward_func = _check_callable(forward_func)
        self.multiply_by_inputs = bool(multiply_by_inputs)
        self.last_info: SIGInfo | None = None

    def attribute(
        self,
        inputs: Tensor | tuple[Tensor, ...],
        baselines: Any = None,
        target: Any = None,
        additional_forward_args: Any = None,
        n_steps: int | str = 50,
        method: str = "gausslegendre",
        internal_batch_size: int | None = None,
        return_convergence_delta: bool = False,
        show_progress: bool = False,
        *,
        tol: float = 1e-3,
    ) -> Any:
        """Attributions shaped like ``inputs`` (and the reference's delta when asked)."""
        formatted, was_tuple = as_tuple(inputs)
        with model_lock(owner_module(self.forward_func)):
            attrs, info = sequential_integrated_gradients(
                self.forward_func,
                formatted,
                baselines=baselines,
                target=target,
                additional_forward_args=additional_forward_args,
                n_steps=n_steps,
                method=method,
                internal_batch_size=internal_batch_size,
                multiply_by_inputs=self.multiply_by_inputs,
                show_progress=show_progress,
                tol=tol,
            )
            self.last_info = info
            out = _unwrap(attrs, was_tuple)
            if return_convergence_delta:
                return out, self.compute_convergence_delta(
                    attrs, baselines, formatted, additional_forward_args=additional_forward_args, target=target
                )
        return out

    def compute_convergence_delta(
        self,
        attributions: Tensor | tuple[Tensor, ...],
        start_point: Any,
        end_point: Tensor | tuple[Tensor, ...],
        target: Any = None,
        additional_forward_args: Any = None,
    ) -> Tensor:
        """Σ attributions − (F(end_point) − F(start_point)) per example, as the reference defines it.

        SIG does not satisfy this identity; see ``compute_completeness_error`` for the one it does.
        """
        from .sig import _full_baselines

        ends, _ = as_tuple(end_point, name="end_point")
        attrs, _ = as_tuple(attributions, name="attributions")
        starts = _full_baselines(start_point, ends)
        return convergence_delta(self.forward_func, attrs, ends, starts, target,
                                 format_additional_args(additional_forward_args))

    def compute_completeness_error(
        self,
        attributions: Tensor | tuple[Tensor, ...],
        inputs: Tensor | tuple[Tensor, ...],
        baselines: Any = None,
        target: Any = None,
        additional_forward_args: Any = None,
    ) -> Tensor:
        """``(B, L)``: Σ over position i's features − (F(x) − F(x with position i at its baseline))."""
        from .sig import _full_baselines

        xs, _ = as_tuple(inputs)
        attrs, _ = as_tuple(attributions, name="attributions")
        bases = _full_baselines(baselines, xs)
        active = torch.ones(xs[0].shape[:2], dtype=torch.bool, device=xs[0].device)
        return completeness_error(self.forward_func, attrs, xs, bases, target,
                                  format_additional_args(additional_forward_args), active, xs[0].shape[0])
