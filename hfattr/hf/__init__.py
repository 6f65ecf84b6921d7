"""Everything in hfattr that knows about transformers models."""

from .architectures import (
    BLOCK_KINDS,
    ArchSpec,
    Architecture,
    BlockSpec,
    StackSpec,
    get_architecture,
    register_architecture,
    registered_architectures,
    resolve_sites,
)

__all__ = [
    "BLOCK_KINDS",
    "ArchSpec",
    "Architecture",
    "BlockSpec",
    "StackSpec",
    "get_architecture",
    "register_architecture",
    "registered_architectures",
    "resolve_sites",
]
