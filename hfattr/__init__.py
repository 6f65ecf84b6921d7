"""hfattr: feature attribution for Hugging Face transformers models."""

from ._version import __version__
from .core import FeatureAblation, LayerFeatureAblation, NeuronGradient

__all__ = ["__version__", "FeatureAblation", "LayerFeatureAblation", "NeuronGradient"]
