"""Explainer methods: the registry, the result contract and the built-in methods (registered on import)."""

from .ablation import ablation
from .fields import ResultFields
from .input_x_gradient import input_x_gradient
from .integrated_gradients import integrated_gradients
from .layer_ablation import layer_ablation
from .lrp import lrp
from .neuron_gradient import neuron_gradient
from .registry import MethodSpec, get_method, list_methods, register_method
from .saliency import saliency
from .sig import sig

register_method("ablation", ablation, description="token-level feature ablation on the input embeddings",
                overwrite=True)
register_method("layer_ablation", layer_ablation,
                description="sites × tokens grid: ablate each site's output at each token", overwrite=True)
register_method("neuron_gradient", neuron_gradient, needs_grad=True,
                description="gradient of one neuron of a site on the input embeddings", overwrite=True)
register_method("sig", sig, needs_grad=True,
                description="Sequential Integrated Gradients per token (arXiv 2305.15853)", overwrite=True)
register_method("lrp", lrp, needs_grad=True, overwrite=True,
                description="layer-wise relevance propagation per token (AttnLRP, CP-LRP or epsilon): "
                            "one forward and one backward pass")

register_method("input_x_gradient", input_x_gradient, needs_grad=True,
                description="gradient × input per token on the input embeddings", overwrite=True)
register_method("saliency", saliency, needs_grad=True,
                description="absolute gradient per token on the input embeddings", overwrite=True)
register_method("integrated_gradients", integrated_gradients, needs_grad=True,
                description="Integrated Gradients per token on the input embeddings", overwrite=True)

__all__ = ["ablation", "layer_ablation", "neuron_gradient", "sig", "lrp", "input_x_gradient", "saliency",
           "integrated_gradients", "MethodSpec", "ResultFields", "register_method", "get_method", "list_methods"]
