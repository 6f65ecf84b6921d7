"""Explainer methods: the registry, the result contract and the built-in methods (registered on import).

The built-in methods are registered by ``"module:function"`` and imported on first use, so that
listing them (``hfattr methods``) needs neither torch nor transformers.
"""

from __future__ import annotations

import importlib
from typing import Any

from .registry import MethodSpec, get_method, list_methods, register_method

register_method(
    "ablation",
    "hfattr.methods.ablation:ablation",
    description="token-level feature ablation on the input embeddings",
    overwrite=True,
)
register_method(
    "layer_ablation",
    "hfattr.methods.layer_ablation:layer_ablation",
    description="sites × tokens grid: ablate each site's output at each token",
    overwrite=True,
)
register_method(
    "neuron_gradient",
    "hfattr.methods.neuron_gradient:neuron_gradient",
    needs_grad=True,
    description="gradient of one neuron of a site on the input embeddings",
    overwrite=True,
)
register_method(
    "sig",
    "hfattr.methods.sig:sig",
    needs_grad=True,
    description="Sequential Integrated Gradients per token (arXiv 2305.15853)",
    overwrite=True,
)
register_method(
    "lrp",
    "hfattr.methods.lrp:lrp",
    needs_grad=True,
    overwrite=True,
    description="layer-wise relevance propagation per token (AttnLRP, CP-LRP or epsilon): "
    "one forward and one backward pass",
)
register_method(
    "input_x_gradient",
    "hfattr.methods.input_x_gradient:input_x_gradient",
    needs_grad=True,
    description="gradient × input per token on the input embeddings",
    overwrite=True,
)
register_method(
    "saliency",
    "hfattr.methods.saliency:saliency",
    needs_grad=True,
    description="absolute gradient per token on the input embeddings",
    overwrite=True,
)
register_method(
    "integrated_gradients",
    "hfattr.methods.integrated_gradients:integrated_gradients",
    needs_grad=True,
    description="Integrated Gradients per token on the input embeddings",
    overwrite=True,
)

__all__ = ["MethodSpec", "ResultFields", "register_method", "get_method", "list_methods"]


def __getattr__(name: str) -> Any:  # ResultFields (needs torch), imported on first use
    if name != "ResultFields":
        raise AttributeError(f"module 'hfattr.methods' has no attribute {name!r}")
    value = importlib.import_module(f"{__name__}.fields").ResultFields
    globals()[name] = value
    return value
