"""Attach LRP rules to a model for the duration of a ``with`` block, and leave no trace.

Everything is per instance and undone in ``finally`` (also when the block raises): module hooks,
a torch-function mode active only inside classification heads (for their functional ``tanh``),
and, for transformers models, an attention function registered in transformers'
``AttentionInterface`` (and the matching mask function) under a fresh name that the model's
configs point to only while the block runs.
"""

from __future__ import annotations

import contextlib
import itertools
import sys
import weakref
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

from ..core.hooks import HookSet
from ..core.locking import model_lock
from .composites import Composite, Plan, build_plan
from .rules import PropagationRule, gelu_tanh_ratio, phi, scale_grad, substitute, tanh_ratio, wide

__all__ = ["attach_rules", "Attachment", "KERNEL_PREFIX"]

KERNEL_PREFIX = "hfattr_lrp"
_COUNTER = itertools.count()


@dataclass
class Attachment:
    """What an attached plan did; ``check()`` after a forward pass catches attention it missed."""

    plan: Plan
    kernel_calls: int = 0
    kernel_modules: set = field(default_factory=set)
    attention_ran: set = field(default_factory=set)
    switched: bool = False

    def check(self) -> None:
        """Raise if an attention module ran without going through the attention kernel."""
        missed = [i for i in self.attention_ran if i not in self.kernel_modules]
        if missed:
            name = self.plan.names.get(missed[0], "?")
            kind = self.plan.attention.get(missed[0], self.plan.composite.attention).kind
            raise RuntimeError(
                f"attention module {name!r} ran without calling transformers' attention interface, so its "
                "attention rule was not applied; set the rule at its projections instead, e.g. "
                f"rules={{{name!r}: AttentionRule({kind!r}, at='projections')}}"
            )


def _first_tensor(args: tuple, kwargs: dict) -> Tensor | None:
    return next((a for a in list(args) + list(kwargs.values()) if isinstance(a, Tensor)), None)


def _rule_hooks(name: str, rule: PropagationRule) -> tuple[Callable, Callable]:
    """A pre-hook noting the input's version and the rule hook, which refuses an input changed in place."""
    versions: list[tuple[int, int] | None] = []

    def pre(module: nn.Module, args: tuple, kwargs: dict) -> None:
        x = _first_tensor(args, kwargs)
        versions.append(None if x is None else (id(x), x._version))

    def hook(module: nn.Module, args: tuple, kwargs: dict, output: Any) -> Any:
        before = versions.pop() if versions else None
        x = _first_tensor(args, kwargs)
        if before is not None and x is not None and id(x) == before[0] and x._version != before[1]:
            raise RuntimeError(
                f"module {name!r} ({type(module).__name__}) changed its input in place, so {rule!r} cannot see "
                "the input it needs; make the module out-of-place (e.g. inplace=False)"
            )
        return rule.apply(module, args, kwargs, output)

    return pre, hook


@contextlib.contextmanager
def _out_of_place(modules: list[nn.Module]) -> Iterator[None]:
    """Switch ``inplace=True`` off on ruled modules (their rule reads the input), restored on exit."""
    switched: list[Any] = [m for m in modules if getattr(m, "inplace", None) is True]  # nn.ReLU, nn.Dropout, ...
    try:
        for m in switched:
            m.inplace = False
        yield
    finally:
        for m in switched:
            m.inplace = True


# --------------------------------------------------------------------------- functional activations
def _fn_ratio(func: Callable, args: tuple, kwargs: dict) -> Callable[[Tensor], Tensor] | None:
    if func in (torch.tanh, Tensor.tanh):
        return tanh_ratio
    if func is F.silu:
        return torch.sigmoid
    if func is F.gelu:
        approx = kwargs.get("approximate", args[1] if len(args) > 1 else "none")
        return gelu_tanh_ratio if approx == "tanh" else phi
    return None


class _FunctionalActivations(TorchFunctionMode):
    """Identity rule for functional ``tanh``/``gelu``/``silu`` calls (classification heads use them)."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        ratio = _fn_ratio(func, args, kwargs)
        if ratio is None or not args or not isinstance(args[0], Tensor) or not isinstance(out, Tensor):
            return out
        x = args[0]
        if not x.requires_grad or out.shape != x.shape:
            return out
        return substitute(out, x, ratio(wide(x.detach())))


# --------------------------------------------------------------------------- attention kernel switch
def _configs(model: nn.Module) -> list[Any]:
    """Every transformers config reachable from the model's modules (sub-configs included)."""
    try:
        from transformers import PretrainedConfig
    except ImportError:  # pragma: no cover
        return []
    found: dict[int, Any] = {}
    stack = [getattr(m, "config", None) for m in model.modules()]
    while stack:
        cfg = stack.pop()
        if not isinstance(cfg, PretrainedConfig) or id(cfg) in found:
            continue
        found[id(cfg)] = cfg
        for key in getattr(cfg, "sub_configs", {}) or {}:
            stack.append(getattr(cfg, key, None))
    return list(found.values())


def _eager_attention(module: nn.Module) -> Callable:
    for cls in type(module).__mro__:
        fn = getattr(sys.modules.get(cls.__module__), "eager_attention_forward", None)
        if callable(fn):
            return fn
    raise RuntimeError(
        f"cannot find the eager attention function of {type(module).__name__}; load the model "
        "with attn_implementation='sdpa'"
    )


class _KernelSwitch:
    """Registers an attention function per original implementation and points the configs to it."""

    def __init__(self, model: nn.Module, att: Attachment, verbose: bool) -> None:
        self.model, self.att, self.verbose = model, att, verbose
        self.saved: list[tuple[Any, Any]] = []
        self.keys: list[str] = []

    def on(self) -> None:
        configs = _configs(self.model)
        if not configs:
            return
        from transformers.masking_utils import AttentionMaskInterface
        from transformers.modeling_utils import AttentionInterface

        by_impl: dict[str, str] = {}
        for cfg in configs:
            impl = cfg.__dict__.get("_attn_implementation_internal")
            if not isinstance(impl, str):
                continue
            if impl.startswith(KERNEL_PREFIX):
                raise RuntimeError(
                    "LRP rules are already attached to this model (nested LRP calls on one model are not supported)"
                )
            if impl not in by_impl:
                key = f"{KERNEL_PREFIX}{next(_COUNTER)}_{impl}"
                kernel = self._kernel(impl)
                masks = AttentionMaskInterface._global_mapping
                AttentionInterface._global_mapping[key] = kernel
                self.keys.append(key)
                if impl in masks:
                    masks[key] = masks[impl]
                by_impl[impl] = key
            self.saved.append((cfg, impl))
            cfg._attn_implementation_internal = by_impl[impl]
        self.att.switched = bool(self.saved)

    def off(self) -> None:
        while self.saved:
            cfg, impl = self.saved.pop()
            cfg._attn_implementation_internal = impl
        if self.keys:
            from transformers.masking_utils import AttentionMaskInterface
            from transformers.modeling_utils import AttentionInterface

            while self.keys:
                key = self.keys.pop()
                AttentionInterface._global_mapping.pop(key, None)
                AttentionMaskInterface._global_mapping.pop(key, None)

    def _kernel(self, impl: str) -> Callable:
        from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

        inner = ALL_ATTENTION_FUNCTIONS[impl] if impl != "eager" and impl in ALL_ATTENTION_FUNCTIONS else None
        plan, att, verbose = self.att.plan, self.att, self.verbose

        def kernel(module: nn.Module, query: Tensor, key: Tensor, value: Tensor, *args: Any, **kwargs: Any):
            rule = plan.attention_rule(module)
            att.kernel_calls += 1
            if id(module) not in att.kernel_modules:
                att.kernel_modules.add(id(module))
                if verbose:
                    print(
                        f"Applied {rule!r} on layer {plan.names.get(id(module), '?')} "
                        f"({type(module).__name__}, attention kernel)"
                    )
            if rule.at == "kernel":
                query, key, value = rule.kernel_inputs(query, key, value)
            fn = inner if inner is not None else _eager_attention(module)
            return fn(module, query, key, value, *args, **kwargs)

        return kernel


# --------------------------------------------------------------------------- attach
def _half_input(module: nn.Module, args: tuple) -> Any:
    if args and isinstance(args[0], Tensor) and args[0].requires_grad:
        return (scale_grad(args[0], 0.5),) + tuple(args[1:])
    return None


def _detach_output(module: nn.Module, args: tuple, output: Any) -> Any:
    return output.detach() if isinstance(output, Tensor) else None


def _detach_gate_half(module: nn.Module, args: tuple, output: Any) -> Any:
    """A fused [gate | up] projection: no gradient through the gate half of its output."""
    if not isinstance(output, Tensor) or not output.requires_grad:
        return None
    width = output.shape[-1]
    if width % 2:
        raise ValueError(f"fused gate/up projection {type(module).__name__} has an odd output width {width}")
    ones = torch.ones(width, dtype=output.dtype, device=output.device)
    ones[: width // 2] = 0
    return scale_grad(output, ones)


def _projection_hook(segments: tuple[tuple[str, int], ...], rule: Any) -> Callable:
    table = dict(zip("qkv", rule.scales))

    def hook(module: nn.Module, args: tuple, output: Any) -> Any:
        if not isinstance(output, Tensor) or not output.requires_grad:
            return None
        width = output.shape[-1]
        if width != sum(w for _, w in segments):
            raise ValueError(f"projection output of width {width} does not match its q/k/v parts {segments}")
        factors = {table[p] for p, _ in segments}
        if len(factors) == 1:
            return scale_grad(output, factors.pop())
        vec = torch.cat([torch.full((w,), table[p], dtype=output.dtype, device=output.device) for p, w in segments])
        return scale_grad(output, vec)

    return hook


_ATTACHED: "weakref.WeakSet[nn.Module]" = weakref.WeakSet()  # models with rules attached right now


@contextlib.contextmanager
def attach_rules(
    model: nn.Module, *, composite: str | Composite = "attnlrp", rules: Mapping | None = None, verbose: bool = False
) -> Iterator[Attachment]:
    """Run the block with LRP rules attached to ``model``; everything is undone on exit.

    Inside the block, ``input * input.grad`` (and ``activation * activation.grad`` at any layer) is
    the LRP relevance of the explained score. Raises ``TypeError`` before touching the model if a
    module has no rule.
    """
    with model_lock(model):  # one attachment at a time per model (and per shared config)
        with _attached(model, composite, rules, verbose) as att:
            yield att


@contextlib.contextmanager
def _attached(model: nn.Module, composite: Any, rules: Any, verbose: bool) -> Iterator[Attachment]:
    if any(m is model for m in _ATTACHED):
        raise RuntimeError(
            "LRP rules are already attached to this model (nested LRP calls on one model are not supported)"
        )
    plan = build_plan(model, composite, rules)
    att = Attachment(plan)
    hooks = HookSet()
    switch = _KernelSwitch(model, att, verbose)
    modes: list[_FunctionalActivations] = []
    stack = contextlib.ExitStack()
    _ATTACHED.add(model)
    try:
        if verbose:
            for line in plan.describe():
                print(line)
        stack.enter_context(_out_of_place([m for _, m, _ in plan.module_rules]))
        for name, module, rule in plan.module_rules:
            pre, hook = _rule_hooks(name, rule)
            hooks.add(module.register_forward_pre_hook(pre, with_kwargs=True))
            hooks.add(module.register_forward_hook(hook, with_kwargs=True))
        for _, rule, g in plan.products:
            if rule.kind == "uniform":
                hooks.add(g.down.register_forward_pre_hook(_half_input))
            elif rule.kind == "detach_gate" and g.gate is not None:
                hooks.add(g.gate.register_forward_hook(_detach_output))
            elif rule.kind == "detach_gate":
                assert g.fused is not None, "a gated MLP holds gate and up, or one fused projection"
                hooks.add(g.fused.register_forward_hook(_detach_gate_half))
        for _, rule, proj, segments in plan.projections:
            hooks.add(proj.register_forward_hook(_projection_hook(segments, rule)))
        if plan.heads:
            _watch_heads(model, plan, hooks, modes)
        _watch_attention(plan, att, hooks)
        switch.on()
        yield att
    finally:
        _ATTACHED.discard(model)
        hooks.remove()
        stack.close()
        while modes:
            modes.pop().__exit__(None, None, None)
        switch.off()


def _watch_heads(model: nn.Module, plan: Plan, hooks: HookSet, modes: list) -> None:
    """Functional activations get the identity rule from a head's start to the end of the model's
    forward (what follows the head, such as Gemma-2's logit soft-capping ``tanh``, included)."""
    running: list[bool] = []

    def enter(module: nn.Module, args: tuple) -> None:
        mode = _FunctionalActivations()
        mode.__enter__()
        modes.append(mode)

    def leave_head(module: nn.Module, args: tuple, output: Any) -> None:
        if not running and modes:  # a head called on its own, outside the model's forward
            modes.pop().__exit__(None, None, None)

    def start(module: nn.Module, args: tuple) -> None:
        running.append(True)

    def finish(module: nn.Module, args: tuple, output: Any) -> None:
        if running:
            running.pop()
        if not running:
            while modes:
                modes.pop().__exit__(None, None, None)

    hooks.add(model.register_forward_pre_hook(start))
    hooks.add(model.register_forward_hook(finish, always_call=True))
    for _, head in plan.heads:
        hooks.add(head.register_forward_pre_hook(enter))
        hooks.add(head.register_forward_hook(leave_head, always_call=True))


def _watch_attention(plan: Plan, att: Attachment, hooks: HookSet) -> None:
    """Record which attention modules (found by their q/k/v children) run under a kernel rule."""

    def ran(mod: nn.Module, args: tuple) -> None:
        att.attention_ran.add(id(mod))

    for module in plan.attention_modules:
        hooks.add(module.register_forward_pre_hook(ran))
