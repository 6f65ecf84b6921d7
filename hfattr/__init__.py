"""hfattr: feature attribution for Hugging Face transformers models.

The top-level names are imported on first use (``hfattr.Explainer`` loads torch and
transformers then), so that ``import hfattr`` and the command line start quickly.
"""

from __future__ import annotations

import importlib
import sys as _sys
from typing import TYPE_CHECKING, Any

from ._version import __version__

# name -> (module, attribute or None for the module itself)
_LAZY: dict[str, tuple[str, str | None]] = {
    "FeatureAblation": ("hfattr.core", "FeatureAblation"),
    "LayerFeatureAblation": ("hfattr.core", "LayerFeatureAblation"),
    "NeuronGradient": ("hfattr.core", "NeuronGradient"),
    "SequentialIntegratedGradients": ("hfattr.core", "SequentialIntegratedGradients"),
    "LRP": ("hfattr.lrp", "LRP"),
    "Explainer": ("hfattr.explainer", "Explainer"),
    "Result": ("hfattr.result", "Result"),
    "attribute_dataset": ("hfattr.dataset", "attribute_dataset"),
    "load_results": ("hfattr.dataset", "load_results"),
    "evaluate": ("hfattr.evaluate", None),
    "planted": ("hfattr.evaluate.planted", None),
    "pipeline": ("hfattr.pipeline", "pipeline"),
    "AttributionPipeline": ("hfattr.pipeline", "AttributionPipeline"),
    "list_methods": ("hfattr.methods.registry", "list_methods"),
    "register_method": ("hfattr.methods.registry", "register_method"),
    "register_architecture": ("hfattr.hf.architectures", "register_architecture"),
    "get_architecture": ("hfattr.hf.architectures", "get_architecture"),
    "resolve_sites": ("hfattr.hf.architectures", "resolve_sites"),
    "NonFiniteError": ("hfattr.core.finite", "NonFiniteError"),
    "register_score": ("hfattr.hf.scores", "register_score"),
    "list_scores": ("hfattr.hf.scores", "list_scores"),
}

__all__ = ["__version__", *_LAZY]

if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs only
    from . import evaluate
    from .core import FeatureAblation, LayerFeatureAblation, NeuronGradient, SequentialIntegratedGradients
    from .core.finite import NonFiniteError
    from .dataset import attribute_dataset, load_results
    from .evaluate import planted
    from .explainer import Explainer
    from .hf.architectures import get_architecture, register_architecture, resolve_sites
    from .hf.scores import list_scores, register_score
    from .lrp import LRP
    from .methods.registry import list_methods, register_method
    from .pipeline import AttributionPipeline, pipeline
    from .result import Result


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'hfattr' has no attribute {name!r}")
    module_name, attr = _LAZY[name]
    module = importlib.import_module(module_name)
    if name == "planted":  # the documented path ``hfattr.planted`` (now hfattr.evaluate.planted)
        _sys.modules.setdefault(__name__ + ".planted", module)
    if name in ("list_methods", "register_method"):
        importlib.import_module("hfattr.methods")  # the built-in methods are registered
    value = module if attr is None else getattr(module, attr)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
