"""hfattr: feature attribution for Hugging Face transformers models."""

from ._version import __version__
from .core import FeatureAblation, LayerFeatureAblation, NeuronGradient, SequentialIntegratedGradients
from .dataset import attribute_dataset, load_results
from .explainer import Explainer, list_methods, register_method
from .lrp import LRP
from .hf.architectures import get_architecture, register_architecture, resolve_sites
from .hf.scores import list_scores, register_score
from .pipeline import AttributionPipeline, pipeline
from .result import Result
import sys as _sys

from . import evaluate
from .evaluate import planted

_sys.modules[__name__ + ".planted"] = planted  # the documented path ``hfattr.planted`` (now hfattr.evaluate.planted)

__all__ = [
    "__version__",
    "FeatureAblation",
    "LayerFeatureAblation",
    "NeuronGradient",
    "SequentialIntegratedGradients",
    "LRP",
    "Explainer",
    "Result",
    "attribute_dataset",
    "load_results",
    "evaluate",
    "planted",
    "pipeline",
    "AttributionPipeline",
    "list_methods",
    "register_method",
    "register_architecture",
    "get_architecture",
    "resolve_sites",
    "register_score",
    "list_scores",
]
