"""Architecture facts as data: :class:`ArchSpec` (stacks of blocks) and :class:`BlockSpec` (paths
inside one block: role modules, norms, and the parts LRP needs: gated-MLP and q/k/v projections).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence, Union

import torch.nn as nn

__all__ = ["BlockSpec", "StackSpec", "ArchSpec", "as_spec", "QKV_LAYOUTS"]

QKV_LAYOUTS = ("concat", "per_head")
"""Channel layouts of a fused q/k/v projection: ``"concat"`` (all of q, then k, then v; k and v of
equal width) or ``"per_head"`` (q, k, v of one head next to each other, head after head)."""

BlocksGetter = Callable[[nn.Module, Any], Sequence[nn.Module]]


@dataclass(frozen=True)
class BlockSpec:
    """Child paths inside one block (dotted, relative to the block).

    Role modules (``attention``, ``mlp``, ``norms``, ``cross_attention``) and the parts LRP needs:
    ``gated_mlp`` = (gate, up, down) of an MLP computing ``down(act(gate(x)) * up(x))``, or
    ``fused_gate_up`` = (one projection whose output is [gate | up], down); ``qkv`` /
    ``cross_qkv`` = the (q, k, v) projections of the self / cross-attention, or ``fused_qkv`` (one
    projection, channels laid out as ``qkv_layout``, see :data:`QKV_LAYOUTS`). A part missing in
    a model (e.g. T5 v1.0 has no gated MLP) is simply absent.
    """

    attention: str | None = None
    mlp: str | None = None
    norms: tuple[str, ...] = ()
    cross_attention: str | None = None
    gated_mlp: tuple[str, str, str] | None = None
    fused_gate_up: tuple[str, str] | None = None
    qkv: tuple[str, str, str] | None = None
    fused_qkv: str | None = None
    qkv_layout: str = "concat"
    cross_qkv: tuple[str, str, str] | None = None

    def __post_init__(self) -> None:
        for name, n in (("gated_mlp", 3), ("fused_gate_up", 2), ("qkv", 3), ("cross_qkv", 3)):
            value = getattr(self, name)
            if value is not None and (
                not isinstance(value, (tuple, list))
                or len(value) != n
                or not all(isinstance(v, str) and v for v in value)
            ):
                raise ValueError(f"BlockSpec.{name} must be a tuple of {n} module paths, got {value!r}")
            if isinstance(value, list):
                object.__setattr__(self, name, tuple(value))
        if self.qkv_layout not in QKV_LAYOUTS:
            raise ValueError(f"BlockSpec.qkv_layout must be one of {QKV_LAYOUTS}, got {self.qkv_layout!r}")


@dataclass(frozen=True)
class StackSpec:
    """One stack of blocks. Paths are relative to the base model.

    ``blocks`` is the dotted path of the block ``ModuleList`` or a callable
    ``(base_model, config) -> list of blocks`` in call order.
    """

    blocks: Union[str, BlocksGetter]
    block: BlockSpec = field(default_factory=BlockSpec)
    final_norm: str | None = None
    embed: str | None = None


@dataclass(frozen=True)
class ArchSpec:
    """Architecture facts for one ``model_type``.

    ``stacks`` maps a stack name (``""`` for a single stack, else e.g.
    ``"encoder"``/``"decoder"``) to its :class:`StackSpec`. ``embed`` is the
    input embedding path (``None``: ``get_input_embeddings()``). ``shared_blocks``
    flags models that call one block module at several depths (ALBERT).
    """

    stacks: Mapping[str, StackSpec]
    embed: str | None = None
    shared_blocks: bool = False

    def remove(self) -> None:
        """Undo the :func:`register_architecture` call that returned this spec (the earlier facts return)."""
        from .architectures import unregister_architecture

        unregister_architecture(self)


_PARTS = ("gated_mlp", "fused_gate_up", "qkv", "fused_qkv", "qkv_layout", "cross_qkv")


def as_spec(spec: Any) -> ArchSpec:
    """Coerce an ``ArchSpec`` or a plain dict into an ``ArchSpec``."""
    if isinstance(spec, ArchSpec):
        return spec
    if not isinstance(spec, Mapping):
        raise TypeError(f"spec must be an ArchSpec or a dict, got {type(spec).__name__}")
    block_keys = {"attention", "mlp", "norms", "cross_attention"} | set(_PARTS)
    stack_keys = {"blocks", "final_norm", "embed"} | block_keys
    top_keys = {"embed", "shared_blocks", "stacks", "encoder", "decoder"}

    def stack(d: Mapping, where: str) -> StackSpec:
        bad = set(d) - stack_keys
        if bad:
            raise ValueError(f"spec{where}: unknown keys {sorted(bad)}; expected some of {sorted(stack_keys)}")
        if "blocks" not in d:
            raise ValueError(f"spec{where}: missing 'blocks' (path of the block ModuleList)")
        norms = d.get("norms", ())
        norms = (norms,) if isinstance(norms, str) else tuple(norms)
        parts = {k: d[k] for k in _PARTS if k in d}
        return StackSpec(
            d["blocks"],
            BlockSpec(d.get("attention"), d.get("mlp"), norms, d.get("cross_attention"), **parts),
            d.get("final_norm"),
            d.get("embed"),
        )

    if "blocks" in spec:  # single stack given flat
        flat = {k: v for k, v in spec.items() if k not in ("embed", "shared_blocks")}
        return ArchSpec({"": stack(flat, "")}, spec.get("embed"), bool(spec.get("shared_blocks", False)))
    bad = set(spec) - top_keys
    if bad:
        raise ValueError(
            f"spec: unknown keys {sorted(bad)}; expected 'blocks' (single stack) or "
            f"'encoder'/'decoder'/'stacks' plus optional 'embed', 'shared_blocks'"
        )
    stacks = dict(spec.get("stacks", {}))
    for name in ("encoder", "decoder"):
        if name in spec:
            stacks[name] = spec[name]
    if not stacks:
        raise ValueError("spec: no stacks given; pass 'blocks' or 'encoder'/'decoder'")
    return ArchSpec(
        {k: v if isinstance(v, StackSpec) else stack(v, f"[{k!r}]") for k, v in stacks.items()},
        spec.get("embed"),
        bool(spec.get("shared_blocks", False)),
    )
