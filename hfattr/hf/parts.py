"""The parts of a model that LRP rules act on: gated MLPs and q/k/v projections.

Registered families state them in their :class:`~hfattr.hf.arch_specs.BlockSpec`; otherwise
they are found by structure (a gated MLP is two projections ``D -> I`` and one ``I -> D``, or a
fused ``D -> 2I`` and an ``I -> D``; q/k/v projections by their usual child names). MLPs whose
structure is neither plain nor gated are reported in ``ModelParts.unrecognised``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from .arch_specs import BlockSpec

__all__ = ["GatedMLP", "Projection", "AttentionParts", "ModelParts", "model_parts", "linear_dims"]


@dataclass(frozen=True)
class GatedMLP:
    """``down(act(gate(x)) * up(x))``: separate ``gate``/``up`` or one ``fused`` [gate | up] projection."""

    container: nn.Module
    down: nn.Module
    gate: nn.Module | None = None
    up: nn.Module | None = None
    fused: nn.Module | None = None
    guessed: bool = False  # the gate was told from the up projection by position only


@dataclass(frozen=True)
class Projection:
    """A projection and what its output channels are: ``(part, width)`` runs, part in ``"qkv"``
    (empty: a fused projection whose channel layout is not known)."""

    module: nn.Module
    segments: tuple[tuple[str, int], ...]


@dataclass(frozen=True)
class AttentionParts:
    """An attention module (the common parent of its projections) and its q/k/v projections."""

    module: nn.Module
    projections: tuple[Projection, ...]


@dataclass
class ModelParts:
    gated: list[GatedMLP] = field(default_factory=list)
    attention: list[AttentionParts] = field(default_factory=list)
    unrecognised: list[tuple[str, nn.Module]] = field(default_factory=list)  # MLPs neither plain nor gated


def linear_dims(module: nn.Module) -> tuple[int, int] | None:
    """``(in, out)`` widths of a Linear or of transformers' ``Conv1D``; ``None`` for anything else."""
    if isinstance(module, nn.Linear):
        return module.in_features, module.out_features
    w = getattr(module, "weight", None)
    if type(module).__name__ == "Conv1D" and w is not None and w.dim() == 2:
        return int(w.shape[0]), int(w.shape[1])
    return None


def _get(root: nn.Module, path: str | None) -> nn.Module | None:
    if not path:
        return None
    try:
        return root.get_submodule(path)
    except AttributeError:
        return None


def _common_parent(root: nn.Module, paths: list[str]) -> nn.Module:
    prefix = os.path.commonprefix([p.split(".")[:-1] for p in paths])
    return root.get_submodule(".".join(prefix)) if prefix else root


# --------------------------------------------------------------------------- gated MLPs
_GATE_HINTS = ("gate", "w1", "wi_0")


def _detect_gated(module: nn.Module) -> tuple[GatedMLP | None, bool]:
    """``(gated MLP or None, recognised)`` from the module's direct Linear children."""
    if linear_dims(module) is not None:
        return None, True  # the role is a projection itself (BERT, OPT): no product inside
    lin = [(n, c, d) for n, c in module.named_children() if (d := linear_dims(c)) is not None]
    if len(lin) == 2:
        (na, a, (ai, ao)), (nb, b, (bi, bo)) = lin
        if ao == bi and bo == ai:
            return None, True  # plain two-layer MLP
        if ao == 2 * bi and bo == ai:
            return GatedMLP(module, down=b, fused=a, guessed="gate" not in na.lower()), True
        return None, False
    if len(lin) == 3:
        for k, (_, down, (di, do)) in enumerate(lin):
            ups = [x for j, x in enumerate(lin) if j != k]
            if di != do and all(d == (do, di) for _, _, d in ups):
                hinted = [x for x in ups if x[0].lower().startswith(_GATE_HINTS)]
                gate = hinted[0] if hinted else ups[0]
                up = next(x for x in ups if x is not gate)
                return GatedMLP(module, down=down, gate=gate[1], up=up[1], guessed=not hinted), True
        return None, False
    if not any(True for _ in module.parameters()):
        return None, True
    return None, False


def _gated_from_spec(block: nn.Module, bs: BlockSpec) -> GatedMLP | None:
    if bs.gated_mlp:
        mods = [m for p in bs.gated_mlp if (m := _get(block, p)) is not None]
        if len(mods) == len(bs.gated_mlp):
            return GatedMLP(_common_parent(block, list(bs.gated_mlp)), down=mods[2], gate=mods[0], up=mods[1])
    if bs.fused_gate_up:
        mods = [m for p in bs.fused_gate_up if (m := _get(block, p)) is not None]
        if len(mods) == len(bs.fused_gate_up):
            return GatedMLP(_common_parent(block, list(bs.fused_gate_up)), down=mods[1], fused=mods[0])
    return None


# --------------------------------------------------------------------------- attention projections
_NAMES = {
    "q": ("q_proj", "query", "q_lin", "q", "wq", "q_attn"),
    "k": ("k_proj", "key", "k_lin", "k", "wk"),
    "v": ("v_proj", "value", "v_lin", "v", "wv"),
}
_FUSED = ("qkv_proj", "query_key_value", "c_attn", "wqkv", "qkv", "in_proj")


def _segments(
    parts: str, out: int, attention: nn.Module, config: Any, layout: str | None
) -> tuple[tuple[str, int], ...]:
    """Channel runs of a projection holding ``parts`` (q, k, v in that order) in ``out`` channels;
    empty when they cannot be told (a fused projection of unknown ``layout``)."""
    if len(parts) == 1:
        return ((parts, out),)
    if layout is None:
        return ()
    heads = getattr(config, "num_attention_heads", None) or getattr(config, "n_head", None)
    head_dim = getattr(attention, "head_dim", None) or getattr(attention, "head_size", None)
    if not isinstance(head_dim, int) and heads and getattr(config, "hidden_size", None):
        head_dim = config.hidden_size // heads
    if layout == "per_head" and isinstance(head_dim, int) and out % (len(parts) * head_dim) == 0:
        return tuple((p, head_dim) for _ in range(out // (len(parts) * head_dim)) for p in parts)
    if (
        parts == "qkv"
        and isinstance(heads, int)
        and isinstance(head_dim, int)
        and heads * head_dim < out
        and (out - heads * head_dim) % 2 == 0
    ):
        q = heads * head_dim
        return (("q", q), ("k", (out - q) // 2), ("v", (out - q) // 2))
    return tuple((p, out // len(parts)) for p in parts) if out % len(parts) == 0 else ()


def _attention_from_paths(
    block: nn.Module, paths: tuple[str, ...], config: Any, layout: str | None
) -> AttentionParts | None:
    mods = [m for p in paths if (m := _get(block, p)) is not None]
    if len(mods) != len(paths):
        return None
    parent = _common_parent(block, list(paths))
    by_module: dict[int, tuple[nn.Module, str]] = {}
    for letter, m in zip("qkv", mods):
        held = by_module.get(id(m), (m, ""))
        by_module[id(m)] = (m, held[1] + letter)
    projections = []
    for m, parts in by_module.values():
        dims = linear_dims(m)
        if dims is None:
            return None
        projections.append(Projection(m, _segments(parts, dims[1], parent, config, layout)))
    return AttentionParts(parent, tuple(projections))


def _detect_attention(module: nn.Module, config: Any) -> AttentionParts | None:
    """q/k/v projections among the direct children of ``module``, found by their usual names."""
    children = {n.lower(): n for n, c in module.named_children() if linear_dims(c) is not None}
    found = [next((children[n] for n in _NAMES[p] if n in children), None) for p in "qkv"]
    named = [n for n in found if n]
    if len(named) == len(found):
        return _attention_from_paths(module, tuple(named), config, "concat")
    # a fused projection found by name: how its channels are laid out is not known
    fused = next((children[n] for n in _FUSED if n in children), None)
    if fused is not None and found[0] and found[0] != fused:  # GPT-2 cross-attention: q alone, k|v fused
        return _attention_from_paths(module, (found[0], fused, fused), config, None)
    if fused is not None:
        return _attention_from_paths(module, (fused,) * 3, config, None)
    return None


# --------------------------------------------------------------------------- whole model
def model_parts(model: nn.Module) -> ModelParts:
    """Gated MLPs and attention projections of ``model``.

    Transformers models: per block, the registered facts, else structure. Other modules: every
    module is examined by structure (gated MLPs only where the module is not a ``Sequential``).
    """
    from .architectures import get_architecture

    parts = ModelParts()
    config = getattr(model, "config", None)
    try:
        arch = get_architecture(model) if config is not None else None
    except ValueError:
        arch = None
    if arch is None:
        for m in model.modules():
            if not isinstance(m, (nn.Sequential, nn.ModuleList, nn.ModuleDict)):
                gated, _ = _detect_gated(m)
                if gated is not None:
                    parts.gated.append(gated)
            found = _detect_attention(m, config)
            if found is not None:
                parts.attention.append(found)
        return parts
    seen: set[int] = set()
    for prefix, blocks, bs in arch.block_specs():
        for i, block in enumerate(blocks):
            if id(block) in seen:
                continue
            seen.add(id(block))
            _block_parts(parts, arch, f"{prefix}.{i}", block, bs, config)
    return parts


def _block_parts(parts: ModelParts, arch: Any, role: str, block: nn.Module, bs: BlockSpec, config: Any) -> None:
    gated = _gated_from_spec(block, bs)
    mlp = arch.module(f"{role}.mlp") if f"{role}.mlp" in arch else None
    if gated is None and mlp is not None:
        gated, recognised = _detect_gated(mlp)
        if not recognised:
            parts.unrecognised.append((arch.name_of(mlp), mlp))
    if gated is not None:
        parts.gated.append(gated)
    self_paths = bs.qkv or ((bs.fused_qkv,) * 3 if bs.fused_qkv else None)
    for paths, kind in ((self_paths, "attention"), (bs.cross_qkv, "cross_attention")):
        found = _attention_from_paths(block, paths, config, bs.qkv_layout) if paths else None
        if found is None and f"{role}.{kind}" in arch:
            module = arch.module(f"{role}.{kind}")
            found = _detect_attention(module, config)
        if found is not None:
            parts.attention.append(found)
