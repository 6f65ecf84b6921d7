"""Torch-only core: attribution algorithms as functions of a forward function and tensors."""

from .ablation import feature_ablation, feature_ablation_future, format_feature_mask
from .attribution import FeatureAblation, LayerFeatureAblation, NeuronGradient, SequentialIntegratedGradients
from .sig import SIGInfo, sequential_integrated_gradients
from .hooks import HookSet, ModelState, capture_layer, hook_counts, preserved_state, replace_layer
from .layer import layer_eval, layer_feature_ablation, neuron_gradient, select_neuron

__all__ = [
    "FeatureAblation",
    "LayerFeatureAblation",
    "NeuronGradient",
    "SequentialIntegratedGradients",
    "sequential_integrated_gradients",
    "SIGInfo",
    "feature_ablation",
    "feature_ablation_future",
    "format_feature_mask",
    "layer_eval",
    "layer_feature_ablation",
    "neuron_gradient",
    "select_neuron",
    "HookSet",
    "ModelState",
    "capture_layer",
    "replace_layer",
    "preserved_state",
    "hook_counts",
]
