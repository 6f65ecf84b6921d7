"""Architecture adapters: stable role names for the parts of a transformer.

Every model gets the same vocabulary of *roles*:

* ``embed`` - the input (token) embedding module on the forward path
  (the encoder's for encoder-decoder models; ``decoder.embed`` for the decoder's),
* ``blocks.i`` - the i-th transformer block; ``blocks.i.attention``,
  ``blocks.i.mlp``, ``blocks.i.norm1``, ``blocks.i.norm2``, ... inside it,
* ``encoder.blocks.i...`` / ``decoder.blocks.i...`` (plus
  ``decoder.blocks.i.cross_attention``) for encoder-decoder models,
* ``final_norm`` (``encoder.final_norm`` / ``decoder.final_norm``) where present.

For registered families ``attention`` and ``mlp`` are the modules whose output
is the sub-layer's update to the residual stream (before the residual add).
Architecture facts are plain data (:class:`ArchSpec`) keyed by ``model_type``;
unregistered models go through a generic structural fallback.
"""

from __future__ import annotations

import dataclasses
import fnmatch
from typing import Any, Iterable, Mapping, cast

import torch.nn as nn

from .access import pretrained
from .arch_specs import ArchSpec, BlockSpec, StackSpec, as_spec
from .generic_arch import base_model, find_module, generic_spec

__all__ = [
    "BlockSpec",
    "StackSpec",
    "ArchSpec",
    "unregister_architecture",
    "Architecture",
    "register_architecture",
    "registered_architectures",
    "get_architecture",
    "resolve_sites",
    "BLOCK_KINDS",
]

BLOCK_KINDS = ("block", "attention", "cross_attention", "mlp")
"""Role kinds found inside every block (plus ``norm1``, ``norm2``, ...)."""


def _simple(blocks, attention, mlp, norms=(), final_norm=None, embed=None, parts=None, **kw) -> ArchSpec:
    block = BlockSpec(attention, mlp, tuple(norms), **(parts or {}))
    return ArchSpec({"": StackSpec(blocks, block, final_norm)}, embed, **kw)


def _qkv(prefix: str, q: str = "q_proj", k: str = "k_proj", v: str = "v_proj") -> tuple[str, str, str]:
    return (f"{prefix}.{q}", f"{prefix}.{k}", f"{prefix}.{v}")


_GATED = {"gated_mlp": ("mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"), "qkv": _qkv("self_attn")}


def _albert_blocks(base: nn.Module, config: Any) -> list[nn.Module]:
    groups = pretrained(base).encoder.albert_layer_groups
    n, g = config.num_hidden_layers, config.num_hidden_groups
    return [layer for i in range(n) for layer in groups[int(i / (n / g))].albert_layers]


_BERT = _simple(
    "encoder.layer",
    "attention.output.dense",
    "output.dense",
    ("attention.output.LayerNorm", "output.LayerNorm"),
    embed="embeddings.word_embeddings",
    parts={"qkv": _qkv("attention.self", "query", "key", "value")},
)
_LLAMA = _simple(
    "layers",
    "self_attn",
    "mlp",
    ("input_layernorm", "post_attention_layernorm"),
    "norm",
    embed="embed_tokens",
    parts=_GATED,
)
_T5_MLP = ("DenseReluDense.wi_0", "DenseReluDense.wi_1", "DenseReluDense.wo")


def _t5_mlp(layer: str) -> tuple[str, str, str]:
    gate, up, down = (f"{layer}.{p}" for p in _T5_MLP)
    return gate, up, down


_REGISTRY: dict[str, ArchSpec] = {
    "bert": _BERT,
    "roberta": _BERT,
    "electra": _BERT,
    "albert": ArchSpec(
        {
            "": StackSpec(
                _albert_blocks,
                BlockSpec(
                    "attention.dense",
                    "ffn_output",
                    ("attention.LayerNorm", "full_layer_layer_norm"),
                    qkv=_qkv("attention", "query", "key", "value"),
                ),
            )
        },
        "embeddings.word_embeddings",
        shared_blocks=True,
    ),
    "distilbert": _simple(
        "transformer.layer",
        "attention",
        "ffn",
        ("sa_layer_norm", "output_layer_norm"),
        embed="embeddings.word_embeddings",
        parts={"qkv": _qkv("attention", "q_lin", "k_lin", "v_lin")},
    ),
    "gpt2": _simple(
        "h",
        "attn",
        "mlp",
        ("ln_1", "ln_2"),
        "ln_f",
        embed="wte",
        parts={
            "fused_qkv": "attn.c_attn",
            "cross_qkv": ("crossattention.q_attn", "crossattention.c_attn", "crossattention.c_attn"),
        },
    ),
    "llama": _LLAMA,
    "qwen2": _LLAMA,
    "mistral": _LLAMA,
    "gemma": _LLAMA,
    "gemma2": _simple(
        "layers",
        "self_attn",
        "mlp",
        ("input_layernorm", "post_attention_layernorm", "pre_feedforward_layernorm", "post_feedforward_layernorm"),
        "norm",
        embed="embed_tokens",
        parts=_GATED,
    ),
    "phi3": _simple(
        "layers",
        "self_attn",
        "mlp",
        ("input_layernorm", "post_attention_layernorm"),
        "norm",
        embed="embed_tokens",
        parts={"fused_gate_up": ("mlp.gate_up_proj", "mlp.down_proj"), "fused_qkv": "self_attn.qkv_proj"},
    ),
    "gpt_neox": _simple(
        "layers",
        "attention",
        "mlp",
        ("input_layernorm", "post_attention_layernorm"),
        "final_layer_norm",
        embed="embed_in",
        parts={"fused_qkv": "attention.query_key_value", "qkv_layout": "per_head"},
    ),
    "opt": _simple(
        "decoder.layers",
        "self_attn",
        "fc2",
        ("self_attn_layer_norm", "final_layer_norm"),
        "decoder.final_layer_norm",
        embed="decoder.embed_tokens",
        parts={"qkv": _qkv("self_attn")},
    ),
    "phi": _simple(
        "layers",
        "self_attn",
        "mlp",
        ("input_layernorm",),
        "final_layernorm",
        embed="embed_tokens",
        parts={"qkv": _qkv("self_attn")},
    ),
    "bart": ArchSpec(
        {
            "encoder": StackSpec(
                "encoder.layers",
                BlockSpec("self_attn", "fc2", ("self_attn_layer_norm", "final_layer_norm"), qkv=_qkv("self_attn")),
                final_norm="encoder.layer_norm",
            ),
            "decoder": StackSpec(
                "decoder.layers",
                BlockSpec(
                    "self_attn",
                    "fc2",
                    ("self_attn_layer_norm", "encoder_attn_layer_norm", "final_layer_norm"),
                    cross_attention="encoder_attn",
                    qkv=_qkv("self_attn"),
                    cross_qkv=_qkv("encoder_attn"),
                ),
                final_norm="decoder.layer_norm",
                embed="decoder.embed_tokens",
            ),
        },
        embed="encoder.embed_tokens",
    ),
    "t5": ArchSpec(
        {
            "encoder": StackSpec(
                "encoder.block",
                BlockSpec(
                    "layer.0.SelfAttention",
                    "layer.1.DenseReluDense",
                    ("layer.0.layer_norm", "layer.1.layer_norm"),
                    gated_mlp=_t5_mlp("layer.1"),
                    qkv=_qkv("layer.0.SelfAttention", "q", "k", "v"),
                ),
                final_norm="encoder.final_layer_norm",
            ),
            "decoder": StackSpec(
                "decoder.block",
                BlockSpec(
                    "layer.0.SelfAttention",
                    "layer.2.DenseReluDense",
                    ("layer.0.layer_norm", "layer.1.layer_norm", "layer.2.layer_norm"),
                    cross_attention="layer.1.EncDecAttention",
                    gated_mlp=_t5_mlp("layer.2"),
                    qkv=_qkv("layer.0.SelfAttention", "q", "k", "v"),
                    cross_qkv=_qkv("layer.1.EncDecAttention", "q", "k", "v"),
                ),
                final_norm="decoder.final_layer_norm",
                embed="decoder.embed_tokens",
            ),
        },
        embed="encoder.embed_tokens",
    ),
}


def register_architecture(model_type: str, spec: ArchSpec | Mapping[str, Any]) -> ArchSpec:
    """Register (or replace) the architecture facts for ``model_type``.

    ``spec`` is an :class:`ArchSpec` or a dict such as
    ``{"blocks": "layers", "attention": "attn", "mlp": "mlp", "norms": ["ln1", "ln2"],
    "final_norm": "norm", "embed": "tok_emb"}`` (paths relative to the base model
    and to the block), or ``{"encoder": {...}, "decoder": {...}, "embed": ...}``.
    For modules without a ``config``, ``model_type`` is the class name.
    """
    if not isinstance(model_type, str) or not model_type:
        raise ValueError(f"register_architecture: model_type must be a non-empty string, got {model_type!r}")
    spec = dataclasses.replace(as_spec(spec))  # one object per registration, so remove() undoes exactly it
    _UNDO[id(spec)] = (model_type, spec, _REGISTRY.get(model_type))
    _REGISTRY[model_type] = spec
    return spec


def unregister_architecture(spec: ArchSpec) -> None:
    """Undo one registration (``spec`` as returned by :func:`register_architecture`); a no-op if already undone."""
    entry = _UNDO.pop(id(spec), None)
    if entry is None or entry[1] is not spec:
        return
    model_type, _, previous = entry
    if _REGISTRY.get(model_type) is spec:
        if previous is None:
            del _REGISTRY[model_type]
        else:
            _REGISTRY[model_type] = previous


_UNDO: dict[int, tuple[str, ArchSpec, ArchSpec | None]] = {}


def registered_architectures() -> list[str]:
    """Model types with registered architecture facts."""
    return sorted(_REGISTRY)


# ---------------------------------------------------------------------------
# Architecture object
# ---------------------------------------------------------------------------


class Architecture:
    """Role map of one model: ``.embed``, ``.blocks``, ``.module(role)``, ``.roles()``."""

    def __init__(
        self,
        model: nn.Module,
        roles: dict[str, nn.Module],
        stacks: dict[str, list[nn.Module]],
        *,
        model_type: str,
        generic: bool,
        shared_blocks: bool,
        specs: dict[str, BlockSpec] | None = None,
    ):
        self.model = model
        self.specs = dict(specs or {})
        self.model_type = model_type
        self.generic = generic
        self.shared_blocks = shared_blocks
        self.stacks = stacks
        self._roles = roles
        self._names: dict[int, str] | None = None

    @property
    def embed(self) -> nn.Module:
        return self._roles["embed"]

    @property
    def blocks(self) -> list[nn.Module]:
        """All blocks in call order (encoder blocks first for encoder-decoder models)."""
        return [b for blocks in self.stacks.values() for b in blocks]

    def block_specs(self) -> list[tuple[str, list[nn.Module], BlockSpec]]:
        """``(stack prefix, blocks, BlockSpec)`` per stack (the facts its blocks were read with)."""
        return [(p, blocks, self.specs.get(p, BlockSpec())) for p, blocks in self.stacks.items()]

    @property
    def is_encoder_decoder(self) -> bool:
        return "decoder.blocks" in self.stacks

    def roles(self) -> list[str]:
        """All role names, in forward order."""
        return list(self._roles)

    def module(self, role: str) -> nn.Module:
        """The module playing ``role``; ``ValueError`` if there is no such role."""
        try:
            return self._roles[role]
        except (KeyError, TypeError):
            raise ValueError(
                f"unknown role {role!r} for {self.model_type!r}; valid roles include {_examples(self)}"
            ) from None

    def __contains__(self, role: object) -> bool:
        return role in self._roles

    def name_of(self, module: nn.Module | str) -> str:
        """Dotted name of ``module`` (or of a role's module) in the model."""
        if isinstance(module, str):
            module = self.module(module)
        if self._names is None:
            self._names = {}
            for name, m in self.model.named_modules():
                self._names.setdefault(id(m), name)
        try:
            return self._names[id(module)]
        except KeyError:
            raise ValueError(f"name_of: module {type(module).__name__} is not part of this model") from None

    def role_of(self, module: nn.Module) -> str | None:
        """First role played by ``module``, or ``None``."""
        return next((r for r, m in self._roles.items() if m is module), None)

    def __repr__(self) -> str:
        sizes = ", ".join(f"{k}={len(v)}" for k, v in self.stacks.items())
        kind = "generic" if self.generic else "registered"
        return f"Architecture({self.model_type!r}, {kind}, {sizes}, roles={len(self._roles)})"


def _examples(arch: Architecture, n: int = 8) -> list[str]:
    roles = arch.roles()
    keep = [r for r in roles if ".blocks." not in r and not r.startswith("blocks.")]
    for prefix in arch.stacks:
        keep += [r for r in roles if r.startswith(prefix + ".0")]
    return sorted(set(keep), key=roles.index)[:n]


# ---------------------------------------------------------------------------
# Building the role map
# ---------------------------------------------------------------------------


def _stack_prefix(name: str) -> str:
    return f"{name}.blocks" if name else "blocks"


def _add_block(roles: dict, prefix: str, block: nn.Module, bspec: BlockSpec, *, strict: bool, what: str):
    roles[prefix] = block
    for kind in ("attention", "cross_attention", "mlp"):
        path = getattr(bspec, kind)
        if path is None:
            continue
        sub = find_module(block, block, path)
        if sub is None:
            if strict:
                raise ValueError(
                    f"{what}: block {prefix} has no submodule {path!r} ({kind}); "
                    "fix the spec with register_architecture"
                )
            continue
        roles[f"{prefix}.{kind}"] = sub
    for k, path in enumerate(bspec.norms, 1):
        sub = find_module(block, block, path)
        if sub is not None:
            roles[f"{prefix}.norm{k}"] = sub
        elif strict:
            raise ValueError(f"{what}: block {prefix} has no norm {path!r}; fix the spec with register_architecture")


def _from_spec(model: nn.Module, spec: ArchSpec, model_type: str, *, generic: bool = False) -> Architecture:
    base = base_model(model)
    config = getattr(model, "config", None)
    what = f"architecture {model_type!r}"
    roles: dict[str, nn.Module] = {}
    emb = find_module(base, model, spec.embed) if spec.embed else None
    if emb is None:
        emb = _input_embeddings(model)
    if emb is not None:
        roles["embed"] = emb
    stacks: dict[str, list[nn.Module]] = {}
    specs: dict[str, BlockSpec] = {}
    for sname, st in spec.stacks.items():
        if callable(st.blocks):
            blocks = list(st.blocks(base, config))
        else:
            found = find_module(base, model, st.blocks)
            if found is None:
                continue  # e.g. an encoder-only class of an encoder-decoder family
            blocks = list(cast("Iterable[nn.Module]", found))  # a block path names a ModuleList
        prefix = _stack_prefix(sname)
        if st.embed and sname:
            sub = find_module(base, model, st.embed)
            if sub is not None and sub is not roles.get("embed"):
                roles[f"{sname}.embed"] = sub
        stacks[prefix] = blocks
        specs[prefix] = st.block
        for i, block in enumerate(blocks):
            _add_block(roles, f"{prefix}.{i}", block, st.block, strict=not generic, what=what)
        if st.final_norm:
            sub = find_module(base, model, st.final_norm)
            if sub is not None:
                roles[f"{sname}.final_norm" if sname else "final_norm"] = sub
    if not stacks:
        paths = [s.blocks for s in spec.stacks.values()]
        raise ValueError(
            f"{what}: none of the block paths {paths} exists in {type(model).__name__}; "
            "fix the spec with register_architecture"
        )
    return Architecture(
        model, roles, stacks, model_type=model_type, generic=generic, shared_blocks=spec.shared_blocks, specs=specs
    )


def _input_embeddings(model: nn.Module) -> nn.Module | None:
    """Token embedding used in the forward pass (the encoder's for encoder-decoders)."""
    config = getattr(model, "config", None)
    if getattr(config, "is_encoder_decoder", False) and hasattr(model, "get_encoder"):
        enc = pretrained(model).get_encoder()
        emb = getattr(enc, "embed_tokens", None)
        if isinstance(emb, nn.Module):
            return emb
    getter = getattr(model, "get_input_embeddings", None)
    if getter is not None:
        try:
            emb = getter()
        except (NotImplementedError, AttributeError):
            emb = None
        if isinstance(emb, nn.Module):
            return emb
    return next((m for m in model.modules() if isinstance(m, nn.Embedding)), None)


def get_architecture(model: nn.Module | Architecture, *, spec: ArchSpec | Mapping | None = None) -> Architecture:
    """Role map for ``model``: an explicit ``spec``, the registry entry for its
    ``config.model_type`` (class name for plain modules), or the generic fallback."""
    if isinstance(model, Architecture):
        return model
    if not isinstance(model, nn.Module):
        raise TypeError(f"get_architecture: model must be a torch.nn.Module, got {type(model).__name__}")
    config = getattr(model, "config", None)
    model_type = getattr(config, "model_type", None) or type(model).__name__
    if spec is not None:
        return _from_spec(model, as_spec(spec), model_type)
    if model_type in _REGISTRY:
        return _from_spec(model, _REGISTRY[model_type], model_type)
    if type(model).__name__ in _REGISTRY:
        return _from_spec(model, _REGISTRY[type(model).__name__], model_type)
    return _from_spec(model, generic_spec(model), model_type, generic=True)


# ---------------------------------------------------------------------------
# Site resolution
# ---------------------------------------------------------------------------

_GLOB = set("*?[")
_KIND_ALIASES = {
    "blocks": "block",
    "layer": "block",
    "layers": "block",
    "attn": "attention",
    "self_attention": "attention",
    "ffn": "mlp",
    "cross_attn": "cross_attention",
}


def _kind_matches(arch: Architecture, spec: str) -> list[str]:
    stack, _, kind = spec.rpartition(".")
    kind = _KIND_ALIASES.get(kind, kind)
    if not (kind in BLOCK_KINDS or (kind.startswith("norm") and kind[4:].isdigit())):
        return []
    prefixes = [p for p in arch.stacks if not stack or p == f"{stack}.blocks"]
    out = []
    for prefix in prefixes:
        for i in range(len(arch.stacks[prefix])):
            role = f"{prefix}.{i}" if kind == "block" else f"{prefix}.{i}.{kind}"
            if role in arch:
                out.append(role)
    return out


def _resolve_one(arch: Architecture, spec: Any) -> list[tuple[str, nn.Module]]:
    if isinstance(spec, nn.Module):
        role = arch.role_of(spec)
        return [(role if role is not None else arch.name_of(spec), spec)]
    if not isinstance(spec, str):
        raise TypeError(
            f"resolve_sites: a site must be a role name, module-name pattern or module, got {type(spec).__name__}"
        )
    if spec in arch:
        return [(spec, arch.module(spec))]
    roles = _kind_matches(arch, spec)
    if not roles and _GLOB & set(spec):
        roles = [r for r in arch.roles() if fnmatch.fnmatchcase(r, spec)]
    if roles:
        return [(r, arch.module(r)) for r in roles]
    if _GLOB & set(spec):
        found = [(n, m) for n, m in arch.model.named_modules() if n and fnmatch.fnmatchcase(n, spec)]
    else:
        found = [(n, m) for n, m in arch.model.named_modules() if n == spec]
    if found:
        return found
    raise ValueError(
        f"resolve_sites: {spec!r} matches no role or module name of {arch.model_type!r}; "
        f"valid roles include {_examples(arch)} (also kinds {list(BLOCK_KINDS)}, "
        "role globs like 'blocks.*.mlp', and module-name globs)"
    )


def resolve_sites(model: nn.Module | Architecture, spec: Any) -> list[tuple[str, nn.Module]]:
    """Resolve ``spec`` into an ordered list of ``(role_or_name, module)``.

    ``spec`` may be a role (``"blocks.3.attention"``), a kind applied to every
    block (``"attention"``, ``"mlp"``, ``"block"``, ``"norm1"``, optionally
    stack-qualified: ``"decoder.cross_attention"``), a role glob
    (``"blocks.*.mlp"``), a module-name (glob) of ``named_modules()``
    (``"model.layers.*.self_attn"``), a module, or a list of these.
    Duplicates are dropped. Raises ``ValueError`` when something matches nothing.
    """
    arch = get_architecture(model)
    items: Iterable[Any] = spec if isinstance(spec, (list, tuple)) else [spec]
    if isinstance(spec, (list, tuple)) and not spec:
        raise ValueError("resolve_sites: spec is an empty list; expected at least one role or pattern")
    out: list[tuple[str, nn.Module]] = []
    seen: set[str] = set()
    for item in items:
        for label, mod in _resolve_one(arch, item):
            if label not in seen:
                seen.add(label)
                out.append((label, mod))
    return out
