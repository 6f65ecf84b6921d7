"""Which rule each module gets: composites (named rule sets), overrides, and the resulting plan.

Precedence, highest first: a rule set on the module as ``module.rule``; an entry of ``rules=``
(keyed by module type, class name, module name or glob, or an architecture role such as
``"blocks.0.attention"``); the composite's default for the module's type. Attention rules and
gated-product rules set on a module apply to everything inside it.

Model-specific facts (gated MLPs, q/k/v projections) come from the architecture table
(:mod:`hfattr.hf.parts`); a transformers MLP that is neither plain nor recognisably gated is
reported with a warning when a product rule would apply to it.
"""

from __future__ import annotations

import fnmatch
import warnings
from dataclasses import dataclass, field
from typing import Any, Mapping

from torch import nn

from ..hf.parts import GatedMLP, model_parts
from .rules import (
    AttentionRule,
    EpsilonRule,
    IdentityRule,
    NormRule,
    ProductRule,
    PropagationRule,
    ModifiedWeightsRule,
)

__all__ = ["Composite", "COMPOSITES", "get_composite", "Plan", "build_plan", "rule_of"]

# Module families by type or class name (class names avoid importing optional packages).
_LINEAR = (
    nn.Linear,
    nn.Bilinear,
    nn.Conv1d,
    nn.Conv2d,
    nn.Conv3d,
    nn.ConvTranspose1d,
    nn.ConvTranspose2d,
    nn.ConvTranspose3d,
)
_LINEAR_NAMES = ("Conv1D", "Addition_Module")
_POOL = (
    nn.MaxPool1d,
    nn.MaxPool2d,
    nn.MaxPool3d,
    nn.AvgPool1d,
    nn.AvgPool2d,
    nn.AvgPool3d,
    nn.AdaptiveAvgPool1d,
    nn.AdaptiveAvgPool2d,
    nn.AdaptiveAvgPool3d,
    nn.AdaptiveMaxPool1d,
    nn.AdaptiveMaxPool2d,
    nn.AdaptiveMaxPool3d,
)
_BATCHNORM = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
_ACTIVATION = (nn.GELU, nn.SiLU, nn.Tanh, nn.Mish, nn.LeakyReLU, nn.ELU, nn.ReLU6, nn.Hardswish, nn.Hardtanh)
_ACTIVATION_NAMES = (
    "GELUActivation",
    "NewGELUActivation",
    "GELUTanh",
    "PytorchGELUTanh",
    "FastGELUActivation",
    "QuickGELUActivation",
    "SiLUActivation",
    "AccurateGELUActivation",
    "ClippedGELUActivation",
    "MishActivation",
)
# Modules whose plain gradient already is the right propagation (or that carry no relevance).
_PASS = (
    nn.ReLU,
    nn.Dropout,
    nn.Dropout1d,
    nn.Dropout2d,
    nn.Dropout3d,
    nn.AlphaDropout,
    nn.Identity,
    nn.Flatten,
    nn.Unflatten,
    nn.Embedding,
)
_PASS_NAMES = ("LinearActivation",)
_PASS_SUFFIXES = ("RotaryEmbedding",)
_NORM_SUFFIXES = ("RMSNorm", "LayerNorm")


@dataclass(frozen=True)
class Composite:
    """A named rule set: one rule per module family, plus the attention and gated-product rules."""

    name: str
    linear: PropagationRule | None
    pooling: PropagationRule | None
    batchnorm: PropagationRule | None
    norm: PropagationRule | None
    activation: PropagationRule | None
    attention: AttentionRule
    product: ProductRule
    description: str = ""

    def default_rule(self, module: nn.Module) -> tuple[bool, PropagationRule | None]:
        """``(known, rule)`` for a module by its type; unknown types give ``(False, None)``."""
        name = type(module).__name__
        if isinstance(module, _LINEAR) or name in _LINEAR_NAMES:
            return True, self.linear
        if isinstance(module, _POOL):
            return True, self.pooling
        if isinstance(module, _BATCHNORM):
            return True, self.batchnorm
        if isinstance(module, nn.LayerNorm) or name.endswith(_NORM_SUFFIXES) or name == "T5LayerNorm":
            return True, self.norm
        if isinstance(module, _ACTIVATION) or name in _ACTIVATION_NAMES:
            return True, self.activation
        if isinstance(module, _PASS) or name in _PASS_NAMES or name.endswith(_PASS_SUFFIXES):
            return True, None
        return False, None


COMPOSITES: dict[str, Composite] = {
    "attnlrp": Composite(
        "attnlrp",
        EpsilonRule(0.0),
        EpsilonRule(),
        EpsilonRule(),
        NormRule(),
        IdentityRule(),
        AttentionRule("attnlrp"),
        ProductRule("uniform"),
        "AttnLRP (Achtibat et al. 2024): ε→0 on linear maps, identity on activations and on the norm "
        "scale, uniform split of the attention and gated products, softmax by its Taylor rule",
    ),
    "cp-lrp": Composite(
        "cp-lrp",
        EpsilonRule(0.0),
        EpsilonRule(),
        EpsilonRule(),
        NormRule(),
        IdentityRule(),
        AttentionRule("cp"),
        ProductRule("detach_gate"),
        "CP-LRP (Ali et al. 2022): attention probabilities, norm scale and MLP gates held constant",
    ),
    "epsilon": Composite(
        "epsilon",
        EpsilonRule(),
        EpsilonRule(),
        EpsilonRule(),
        NormRule(),
        IdentityRule(),
        AttentionRule("gradient"),
        ProductRule("gradient"),
        "ε-LRP (ε = 1e-9) on linear maps, pooling and BatchNorm, identity on activations and the norm "
        "scale, plain gradient through attention and products (the reference's defaults)",
    ),
}
_ALIASES = {"cplrp": "cp-lrp", "cp": "cp-lrp", "attn-lrp": "attnlrp", "eps": "epsilon"}


def get_composite(composite: str | Composite) -> Composite:
    """A composite by name (``"attnlrp"``, ``"cp-lrp"``, ``"epsilon"``) or as given."""
    if isinstance(composite, Composite):
        return composite
    if not isinstance(composite, str):
        raise TypeError(f"composite must be a name or a Composite, got {type(composite).__name__}")
    key = _ALIASES.get(composite.lower(), composite.lower())
    if key not in COMPOSITES:
        raise ValueError(f"unknown composite {composite!r}; expected one of {sorted(COMPOSITES)}")
    return COMPOSITES[key]


# --------------------------------------------------------------------------- plan
@dataclass
class Plan:
    """What to attach: per-module rules, attention rules per module, gated MLPs, projections."""

    model: nn.Module
    composite: Composite
    names: dict[int, str]
    module_rules: list[tuple[str, nn.Module, PropagationRule]] = field(default_factory=list)
    passed: list[tuple[str, nn.Module]] = field(default_factory=list)
    attention: dict[int, AttentionRule] = field(default_factory=dict)
    products: list[tuple[str, ProductRule, GatedMLP]] = field(default_factory=list)
    # (name, rule, projection, (part, width) runs of its output channels)
    projections: list[tuple[str, AttentionRule, nn.Module, tuple[tuple[str, int], ...]]] = field(default_factory=list)
    attention_modules: list[nn.Module] = field(default_factory=list)  # with q/k/v children, kernel rule
    heads: list[tuple[str, nn.Module]] = field(default_factory=list)

    def attention_rule(self, module: nn.Module) -> AttentionRule:
        return self.attention.get(id(module), self.composite.attention)

    def describe(self) -> list[str]:
        """One line per layer, in model order (for ``verbose``); kernel rules are reported when they run."""
        lines = [(n, f"{r!r} on layer {n} ({type(m).__name__})") for n, m, r in self.module_rules]
        lines += [(n, f"no rule (plain gradient) on layer {n} ({type(m).__name__})") for n, m in self.passed]
        lines += [(n, f"{r!r} on layer {n} (gated product)") for n, r, _ in self.products]
        lines += [
            (n, f"{r!r} on layer {n} ({type(m).__name__}, parts {''.join(dict.fromkeys(q for q, _ in p))})")
            for n, r, m, p in self.projections
        ]
        order = {n: i for i, n in enumerate(self.names.values())}
        return ["Applied " + text for n, text in sorted(lines, key=lambda item: order.get(item[0], -1))]


_NO_RULE = object()


def rule_of(module: nn.Module) -> Any:
    """The rule set on a module as ``module.rule`` (checked), or a sentinel if there is none."""
    if "rule" not in module.__dict__ and not hasattr(type(module), "rule"):
        return _NO_RULE
    rule = module.rule
    if rule is not None and not isinstance(rule, PropagationRule):
        raise TypeError(
            f"module.rule must be a PropagationRule (e.g. EpsilonRule()) or None, got "
            f"{type(rule).__name__} on {type(module).__name__}"
        )
    return rule


def _match_key(model: nn.Module, key: Any, mods: list[tuple[str, nn.Module]]) -> list[tuple[str, nn.Module]]:
    if isinstance(key, type):
        return [(n, m) for n, m in mods if isinstance(m, key)]
    if isinstance(key, nn.Module):
        return [(n, m) for n, m in mods if m is key]
    if not isinstance(key, str):
        raise TypeError(f"rules keys must be module types, class names, module names/globs or roles; got {key!r}")
    found = [(n, m) for n, m in mods if type(m).__name__ == key]
    if not found:
        found = [(n, m) for n, m in mods if n == key or (set("*?[") & set(key) and fnmatch.fnmatchcase(n, key))]
    if not found and getattr(model, "config", None) is not None:
        from ..hf.architectures import resolve_sites

        try:
            found = resolve_sites(model, key)
        except ValueError:
            found = []
        names = {id(m): n for n, m in mods}
        found = [(names[id(m)], m) for _, m in found if id(m) in names]
    if not found:
        raise ValueError(
            f"rules key {key!r} matches no module type, class name, module name or role of {type(model).__name__}"
        )
    return found


def _explicit(model: nn.Module, rules: Mapping | None, mods: list[tuple[str, nn.Module]]) -> dict[int, Any]:
    out: dict[int, Any] = {}
    if rules is not None:
        if not isinstance(rules, Mapping):
            raise TypeError(f"rules must be a dict {{module type / name / role: rule}}, got {type(rules).__name__}")
        for key, rule in rules.items():
            if rule is not None and not isinstance(rule, PropagationRule):
                raise TypeError(f"rules[{key!r}] must be a PropagationRule or None, got {type(rule).__name__}")
            for _, m in _match_key(model, key, mods):
                out[id(m)] = rule
    for _, m in mods:
        r = rule_of(m)
        if r is not _NO_RULE:
            out[id(m)] = r
    return out


def _missing_error(missing: list[tuple[str, nn.Module]], model: nn.Module) -> TypeError:
    name, mod = missing[0]
    tname = type(mod).__name__
    more = f" (and {len(missing) - 1} more: {', '.join(n for n, _ in missing[1:4])})" if len(missing) > 1 else ""
    return TypeError(
        f"no LRP rule for module {name!r} of type {tname}{more}. Set one on the module, e.g. "
        f"`model.get_submodule({name!r}).rule = EpsilonRule()` (IdentityRule() for an element-wise "
        f"activation, None for the plain gradient), or pass rules={{{tname!r}: EpsilonRule()}} or "
        f"rules={{{name!r}: ...}}"
    )


def _children(module: nn.Module) -> dict[str, nn.Module]:
    return {k: v for k, v in module._modules.items() if v is not None}


def _heads(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Top-level modules outside the base model of a transformers model (classification heads)."""
    if getattr(model, "config", None) is None:
        return []
    base = getattr(model, "base_model", None)
    if base is None or base is model:
        return []
    return [(n, m) for n, m in model.named_children() if m is not base and any(True for _ in m.parameters())]


def build_plan(model: nn.Module, composite: str | Composite = "attnlrp", rules: Mapping | None = None) -> Plan:
    """Decide every module's rule; raises ``TypeError`` naming a module type that has none."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    comp = get_composite(composite)
    mods = list(model.named_modules())
    explicit = _explicit(model, rules, mods)
    names: dict[int, str] = {}
    for n, m in mods:
        names.setdefault(id(m), n)
    plan = Plan(model, comp, names)
    missing: list[tuple[str, nn.Module]] = []
    seen: set[int] = set()
    parts = model_parts(model)
    gated_at = {id(g.container): g for g in parts.gated}
    attention_at = {id(a.module): a for a in parts.attention}
    product_at: dict[int, ProductRule] = {}

    def walk(name: str, module: nn.Module, attn: AttentionRule, product: ProductRule, projected: bool) -> None:
        if id(module) in seen:  # shared modules (tied embeddings, shared layers) are planned once
            return
        seen.add(id(module))
        children = _children(module)
        rule = explicit.get(id(module), _NO_RULE)
        leaf = not children
        if isinstance(rule, (AttentionRule, ProductRule)):
            if leaf:
                raise TypeError(
                    f"{type(rule).__name__} is set on {name!r} ({type(module).__name__}), a module with nothing "
                    "inside; set it on the attention / MLP module or on a block containing it (in BERT-like "
                    "models the role 'blocks.i.attention' is the output projection: use 'blocks.i')"
                )
            if isinstance(rule, AttentionRule):
                attn = rule
            else:
                product = rule
            rule = _NO_RULE
        if isinstance(module, nn.MultiheadAttention) and attn.kind != "gradient":
            raise TypeError(
                f"{name!r} is a torch nn.MultiheadAttention, whose attention the {attn.kind} rule cannot reach "
                "(it neither uses transformers' attention interface nor separate q/k/v projections); pass "
                f"rules={{{name!r}: AttentionRule('gradient')}} to propagate through it by the plain gradient"
            )
        if attn is not comp.attention:
            plan.attention[id(module)] = attn
        if rule is _NO_RULE:
            known, rule = comp.default_rule(module)
            if not known and leaf and name and not isinstance(module, nn.modules.loss._Loss):
                # (loss modules of task heads never run in an attribution forward)
                missing.append((name, module))
        if rule is not None and name:
            if isinstance(rule, ModifiedWeightsRule) and "weight" not in module._parameters and not leaf:
                raise TypeError(
                    f"{type(rule).__name__} changes a module's own weight; {name!r} "
                    f"({type(module).__name__}) has none. Set it on its Linear/Conv children"
                )
            plan.module_rules.append((name, module, rule))
        elif rule is None and name and (leaf or id(module) in explicit):
            plan.passed.append((name, module))
        product_at[id(module)] = product
        if leaf:
            return
        gated = gated_at.get(id(module))
        if gated is not None and product.kind != "gradient":
            plan.products.append((name, product, gated))
        found = attention_at.get(id(module))
        if attn.kind != "gradient" and not projected and found is not None:
            if attn.at == "projections":
                unknown = [p.module for p in found.projections if not p.segments]
                if unknown:
                    raise TypeError(
                        f"the channel layout of the fused q/k/v projection {plan.names.get(id(unknown[0]), '?')!r} "
                        f"is not known, so {attn!r} cannot be applied at it; use at='kernel' or describe it with "
                        "register_architecture (fused_qkv=..., qkv_layout='concat' or 'per_head')"
                    )
                for proj in found.projections:
                    plan.projections.append((plan.names[id(proj.module)], attn, proj.module, proj.segments))
                projected = True
            else:
                plan.attention_modules.append(module)
        for child_name, child in children.items():
            walk(f"{name}.{child_name}" if name else child_name, child, attn, product, projected)

    walk("", model, comp.attention, comp.product, False)
    if missing:
        raise _missing_error(missing, model)
    _warn_products(plan, parts.unrecognised, product_at)
    plan.heads = _heads(model)
    return plan


def _warn_products(plan: Plan, unrecognised: list[tuple[str, nn.Module]], product_at: dict[int, ProductRule]) -> None:
    """Warn where a product rule applies but the gated MLP is unknown or its gate only guessed."""
    for name, module in unrecognised:
        rule = product_at.get(id(module))
        if rule is not None and rule.kind != "gradient":
            warnings.warn(
                f"LRP cannot tell whether the MLP {name!r} ({type(module).__name__}) computes a gated product "
                f"act(gate(x)) * up(x); if it does, {rule!r} is not applied there and relevance is not conserved. "
                "Describe its parts with register_architecture (gated_mlp=(gate, up, down) or "
                "fused_gate_up=(gate_up, down))",
                stacklevel=4,
            )
    for name, rule, g in plan.products:
        if g.guessed and rule.kind == "detach_gate":
            gate = plan.names.get(id(g.gate if g.gate is not None else g.fused), "?")
            which = "" if g.gate is not None else " (first half of its output)"
            warnings.warn(
                f"LRP assumes {gate!r}{which} is the gate of the gated MLP {name!r} (found by structure, not "
                "by name); if not, describe it with register_architecture",
                stacklevel=4,
            )
