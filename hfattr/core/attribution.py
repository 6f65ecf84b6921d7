"""Drop-in classes with the reference signatures, as thin shells over the core functions."""

from __future__ import annotations

import functools
import warnings
from typing import Any, Callable, TypeVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .ablation import feature_ablation, feature_ablation_future
from .inputs import as_tuple, format_additional_args
from .layer import layer_feature_ablation, neuron_gradient
from .locking import model_lock, owner_module
from .sig import SIGInfo, completeness_error, convergence_delta, full_baselines, sequential_integrated_gradients

__all__ = [
    "FeatureAblation",
    "LayerFeatureAblation",
    "NeuronGradient",
    "SequentialIntegratedGradients",
    "reference_method",
    "gradient_convergence_delta",
    "DropIn",
    "LayerDropIn",
    "GradientDropIn",
]

_F = TypeVar("_F", bound=Callable)


def reference_method(fn: _F) -> _F:
    """Wrap a public method so that ``method.__wrapped__`` is ``fn``, as on the reference classes.

    Wrappers written for the reference (a noise tunnel, for one) call
    ``instance.attribute.__wrapped__(instance, ...)``; the wrapper itself only forwards the call.
    """

    @functools.wraps(fn)
    def forward_call(*args: Any, **kwargs: Any) -> Any:
        return fn(*args, **kwargs)

    return forward_call  # type: ignore[return-value]


def gradient_convergence_delta(
    forward_func: Callable,
    attributions: Tensor | tuple[Tensor, ...],
    start_point: Any,
    end_point: Tensor | tuple[Tensor, ...],
    target: Any = None,
    additional_forward_args: Any = None,
) -> Tensor:
    """Σ attributions − (F(end_point) − F(start_point)) per example (the completeness gap)."""
    ends, _ = as_tuple(end_point, name="end_point")
    attrs, _ = as_tuple(attributions, name="attributions")
    if len(attrs) != len(ends):
        raise ValueError(f"attributions has {len(attrs)} tensor(s) but end_point has {len(ends)}; give one per input")
    for i, (a, x) in enumerate(zip(attrs, ends)):
        if a.shape[0] != x.shape[0]:
            raise ValueError(f"attributions[{i}] has {a.shape[0]} examples but end_point[{i}] has {x.shape[0]}")
    starts = full_baselines(start_point, ends, name="start_point")
    with torch.no_grad():
        return convergence_delta(
            forward_func, attrs, ends, starts, target, format_additional_args(additional_forward_args)
        )


def _unwrap(result: tuple[Tensor, ...], as_tuple_out: bool) -> Tensor | tuple[Tensor, ...]:
    return result if as_tuple_out else result[0]


class DropIn:
    """The reference's ``Attribution`` interface shared by the drop-in classes.

    ``forward_func``, the ``multiplies_by_inputs`` property and ``has_convergence_delta()``; a
    subclass states their values in the class attributes ``multiplies`` and ``has_delta``.
    """

    multiplies: bool = True
    has_delta: bool = False

    def __init__(self, forward_func: Callable) -> None:
        if not callable(forward_func):
            raise TypeError(f"forward_func must be callable, got {type(forward_func).__name__}")
        self.forward_func = forward_func

    @property
    def multiplies_by_inputs(self) -> bool:
        return self.multiplies

    def has_convergence_delta(self) -> bool:
        return self.has_delta


class LayerDropIn(DropIn):
    """A drop-in class that reads a ``layer`` of the model (``layer``, ``device_ids``)."""

    def __init__(self, forward_func: Callable, layer: nn.Module, device_ids: list[int] | None = None) -> None:
        super().__init__(forward_func)
        if not isinstance(layer, nn.Module):
            raise TypeError(f"layer must be a torch.nn.Module, got {type(layer).__name__}")
        self.layer = layer
        self.device_ids = device_ids


class GradientDropIn(DropIn):
    """A drop-in class with the reference's gradient ``compute_convergence_delta``."""

    @reference_method
    def compute_convergence_delta(
        self,
        attributions: Tensor | tuple[Tensor, ...],
        start_point: Any,
        end_point: Tensor | tuple[Tensor, ...],
        target: Any = None,
        additional_forward_args: Any = None,
    ) -> Tensor:
        """Σ attributions − (F(end_point) − F(start_point)) per example, as the reference defines it."""
        return gradient_convergence_delta(
            self.forward_func, attributions, start_point, end_point, target, additional_forward_args
        )


class FeatureAblation(DropIn):
    """Replace groups of input features by a baseline and record the change of the output."""

    @reference_method
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
        """Attributions with the shape of ``inputs`` (first dim 1 for per-batch outputs).

        Inputs may differ in dimension 0 (sparse id lists) only for a forward function that
        returns one value for the whole batch, with ``perturbations_per_eval=1``.
        """
        formatted, was_tuple = as_tuple(inputs, same_batch=False)
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

    @reference_method
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
        formatted, was_tuple = as_tuple(inputs, same_batch=False)
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


class LayerFeatureAblation(LayerDropIn):
    """Ablate groups of a layer's output (or input) values and record the change of the output."""

    def __init__(
        self,
        forward_func: Callable,
        layer: nn.Module,
        device_ids: list[int] | None = None,
        *,
        fast: bool = True,
        skip_prefix: bool | None = None,
    ) -> None:
        super().__init__(forward_func, layer, device_ids)
        if skip_prefix is not None:
            warnings.warn(
                "LayerFeatureAblation: skip_prefix= is deprecated; use fast=", DeprecationWarning, stacklevel=2
            )
            fast = skip_prefix
        self.fast = fast

    @property
    def attributor(self) -> type[FeatureAblation]:
        """The input-ablation class this layer method runs on the layer's value."""
        return FeatureAblation

    @staticmethod
    def interpolate(
        layer_attribution: Tensor, interpolate_dims: int | tuple[int, ...], interpolate_mode: str = "nearest"
    ) -> Tensor:
        """Resize a 3-D to 5-D layer attribution over its dimensions after (batch, channel)."""
        return F.interpolate(layer_attribution, interpolate_dims, mode=interpolate_mode)

    @reference_method
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
        """Attributions with the shape of the layer's value; a tuple if it holds several tensors.

        A single ``layer_mask`` tensor for a value holding several tensors applies to the first
        one; the others pass through unablated and the result is that tensor's attribution.
        """
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
                fast=self.fast,
                first_only=isinstance(layer_mask, Tensor),
            )
        return _unwrap(out, was_tuple)


class NeuronGradient(LayerDropIn, GradientDropIn):
    """Gradient of one neuron (or a sum of neurons) of a layer with respect to the inputs."""

    multiplies = False

    @reference_method
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


class SequentialIntegratedGradients(GradientDropIn):
    """Integrated Gradients per sequence position, every other position kept at its input value.

    After ``attribute``, ``last_info`` holds the steps used per position, the number of passes and
    (with ``n_steps="auto"``) the per-position completeness errors. ``compute_convergence_delta`` is
    the reference's delta, an identity SIG does not satisfy; ``compute_completeness_error`` gives
    the one it does.
    """

    has_delta = True

    def __init__(self, forward_func: Callable, multiply_by_inputs: bool = True) -> None:
        super().__init__(forward_func)
        self.multiply_by_inputs = bool(multiply_by_inputs)
        self.last_info: SIGInfo | None = None

    @property
    def multiplies_by_inputs(self) -> bool:
        return self.multiply_by_inputs

    @reference_method
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
        n = formatted[0].shape[0]
        if (
            isinstance(internal_batch_size, int)
            and not isinstance(internal_batch_size, bool)
            and 1 <= internal_batch_size < n
        ):
            warnings.warn(
                f"internal_batch_size ({internal_batch_size}) is smaller than the number of examples ({n}); using {n}",
                UserWarning,
                stacklevel=2,
            )
            internal_batch_size = n
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

    def compute_completeness_error(
        self,
        attributions: Tensor | tuple[Tensor, ...],
        inputs: Tensor | tuple[Tensor, ...],
        baselines: Any = None,
        target: Any = None,
        additional_forward_args: Any = None,
    ) -> Tensor:
        """``(B, L)``: Σ over position i's features − (F(x) − F(x with position i at its baseline))."""
        xs, _ = as_tuple(inputs)
        attrs, _ = as_tuple(attributions, name="attributions")
        bases = full_baselines(baselines, xs)
        active = torch.ones(xs[0].shape[:2], dtype=torch.bool, device=xs[0].device)
        return completeness_error(
            self.forward_func,
            attrs,
            xs,
            bases,
            target,
            format_additional_args(additional_forward_args),
            active,
            xs[0].shape[0],
        )
