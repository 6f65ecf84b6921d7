"""Typed access to what a transformers model adds to ``nn.Module``.

``nn.Module.__getattr__`` types every attribute it serves as ``Tensor | Module``, so ``model.config``
or ``model.get_input_embeddings()`` on a model typed ``nn.Module`` look wrong to a type checker.
These helpers read the same attributes and say what they are; they change nothing at run time.
"""

from __future__ import annotations

from typing import Any, cast

from torch import nn

__all__ = ["model_config", "pretrained"]


def pretrained(model: nn.Module) -> Any:
    """``model`` as a transformers model: its methods (``generate``, ``get_input_embeddings``,
    ``get_encoder``, ...) and ``config`` are not known to ``nn.Module``'s typing."""
    return cast(Any, model)


def model_config(model: nn.Module) -> Any:
    """``model.config`` (a transformers ``PretrainedConfig``)."""
    return pretrained(model).config
