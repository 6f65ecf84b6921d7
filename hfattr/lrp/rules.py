"""LRP rules written as changes to the gradient, so that input x gradient *is* the relevance.

With the rules attached, the relevance of any tensor ``a`` on the path from the inputs to the
explained score is ``a * d(score)/da``; one forward and one backward pass give the relevance of
the inputs and of every layer. A rule only changes how the gradient crosses one module (or the
attention kernel, or a gated product); the forward values are never changed.

Rules under the reference names (``EpsilonRule``, ``GammaRule``, ``Alpha1_Beta0_Rule``,
``IdentityRule``) reproduce the reference's numbers; ``NormRule``, ``AttentionRule`` and
``ProductRule`` are the transformer rules of AttnLRP (Achtibat et al. 2024) and CP-LRP
(Ali et al. 2022).
"""

from __future__ import annotations

import math
from typing import Any, Callable

import torch
from torch import Tensor, nn

__all__ = [
    "PropagationRule",
    "ModifiedWeightsRule",
    "EpsilonRule",
    "GammaRule",
    "Alpha1_Beta0_Rule",
    "IdentityRule",
    "NormRule",
    "AttentionRule",
    "ProductRule",
    "scale_grad",
    "substitute",
    "wide",
    "phi",
    "gelu_tanh_ratio",
    "tanh_ratio",
    "activation_ratio",
]

_LOW = (torch.float16, torch.bfloat16)


# --------------------------------------------------------------------------- gradient primitives
def wide(t: Tensor) -> Tensor:
    """``t`` in at least float32 (factors are computed there and cast back)."""
    return t.float() if t.dtype in _LOW else t


def _sign0(z: Tensor) -> Tensor:
    """sign(z) with sign(0) = +1, so that ``z + eps * sign0(z)`` is never zero."""
    return torch.where(z >= 0, 1.0, -1.0).to(z.dtype)


def scale_grad(t: Tensor, factor: Tensor | float | Callable[[], Tensor]) -> Tensor:
    """A copy of ``t`` whose incoming gradient is multiplied by ``factor`` (forward value unchanged).

    ``factor`` may be a number, a tensor broadcastable to ``t`` or a function returning one
    (evaluated during the backward pass). A factor of 0 detaches.
    """
    if not t.requires_grad:
        return t
    if isinstance(factor, (int, float)):
        if factor == 1:
            return t
        if factor == 0:
            return t.detach()
    # a copy, not a view: an in-place change of a view (``h += x``, ``relu_``) reroutes the gradient
    # around the view's node, and the hook on it would never run
    alias = t.clone()

    def hook(g: Tensor) -> Tensor:
        f = factor() if callable(factor) else factor
        return g * (f.to(g.dtype) if isinstance(f, Tensor) else f)

    alias.register_hook(hook)
    return alias


def substitute(value: Tensor, source: Tensor, factor: Tensor) -> Tensor:
    """``value`` in the forward pass; in the backward pass the gradient reaches ``source`` times ``factor``.

    ``factor`` (broadcastable to ``source``, finite) replaces the Jacobian of ``source -> value``
    by a diagonal one. The forward value is exactly ``value``.
    """
    delta = source - source.detach()  # exact zeros that carry the gradient
    factor = factor.to(source.dtype)
    if value.dtype == source.dtype:
        return torch.addcmul(value.detach(), factor, delta)
    return value.detach() + (factor * delta).to(value.dtype)


def _first_input(args: tuple, kwargs: dict) -> Tensor | None:
    for a in args:
        if isinstance(a, Tensor):
            return a
    if isinstance(kwargs.get("hidden_states"), Tensor):
        return kwargs["hidden_states"]
    return next((v for v in kwargs.values() if isinstance(v, Tensor)), None)


def _output_tensors(out: Any) -> list[Tensor]:
    if isinstance(out, Tensor):
        return [out]
    if isinstance(out, (tuple, list)):
        return [o for o in out if isinstance(o, Tensor)][:1]
    return []


def _call_with_params(module: nn.Module, params: dict[str, Tensor], args: tuple, kwargs: dict) -> Any:
    """``module.forward`` with some parameters temporarily replaced (no hooks run)."""
    saved: dict[str, nn.Parameter | None] = {}
    try:
        for name, value in params.items():
            saved[name] = module._parameters[name]
            module._parameters[name] = value  # type: ignore[assignment]
        return module.forward(*args, **kwargs)
    finally:
        for name, old in saved.items():
            module._parameters[name] = old


# --------------------------------------------------------------------------- rule classes
class PropagationRule:
    """Base class of every rule.

    ``apply(module, args, kwargs, output)`` runs as a forward hook of the module the rule is set
    on and returns a replacement output (same values, changed gradient) or ``None``.
    """

    def apply(self, module: nn.Module, args: tuple, kwargs: dict, output: Any) -> Any:
        return None

    def _params(self) -> dict:
        return {}

    def __repr__(self) -> str:
        inner = ", ".join(f"{k}={v!r}" for k, v in self._params().items())
        return f"{type(self).__name__}({inner})"

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other._params() == self._params()  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash((type(self).__name__, tuple(self._params().items())))


class EpsilonRule(PropagationRule):
    """ε-rule: ``R_in = a * J^T (R_out / (z + ε sign(z)))`` (ε = 0: the gradient itself).

    Small ε for middle layers; larger ε absorbs weak, contradictory relevance.
    """

    def __init__(self, epsilon: float = 1e-9) -> None:
        if isinstance(epsilon, bool) or not isinstance(epsilon, (int, float)) or epsilon < 0:
            raise ValueError(f"epsilon must be a number >= 0, got {epsilon!r}")
        self.epsilon = float(epsilon)

    def _params(self) -> dict:
        return {"epsilon": self.epsilon}

    def apply(self, module: nn.Module, args: tuple, kwargs: dict, output: Any) -> Any:
        if self.epsilon == 0:
            return None
        outs = _output_tensors(output)
        if not outs or not outs[0].requires_grad:
            return None
        z, eps = outs[0], self.epsilon
        # computed now: the model may change its output in place later (``out += residual``)
        zw = wide(z.detach())
        new = scale_grad(z, zw / (zw + eps * _sign0(zw)))
        return _replace_first(output, new)


class ModifiedWeightsRule(PropagationRule):
    """A rule that propagates through a copy of the module with changed weight/bias (z')."""

    set_bias_to_zero = False
    STABILITY_FACTOR = 1e-9

    def _weight(self, w: Tensor) -> Tensor:
        raise NotImplementedError

    def apply(self, module: nn.Module, args: tuple, kwargs: dict, output: Any) -> Any:
        if not isinstance(output, Tensor):
            raise TypeError(
                f"{type(self).__name__} needs a module returning one tensor; "
                f"{type(module).__name__} returns {type(output).__name__}"
            )
        if not output.requires_grad:
            return None
        params: dict[str, Tensor] = {}
        w = module._parameters.get("weight")
        if w is not None:
            params["weight"] = self._weight(w.detach())
        b = module._parameters.get("bias")
        if b is not None and self.set_bias_to_zero:
            params["bias"] = torch.zeros_like(b)
        eps = self.STABILITY_FACTOR
        changed = output
        if params:
            changed = _call_with_params(module, params, args, kwargs)
            if not isinstance(changed, Tensor) or changed.shape != output.shape:
                raise TypeError(
                    f"{type(self).__name__}: {type(module).__name__} gave an output of another "
                    "shape with changed weights"
                )
        z = output.detach()
        # computed now: the model may change its output in place later (an in-place activation)
        zc = wide(changed.detach())
        routed = scale_grad(changed, wide(z) / (zc + eps * _sign0(zc)))
        if changed is output:
            return routed
        return z + (routed - routed.detach())


class GammaRule(ModifiedWeightsRule):
    """γ-rule: propagate through ``W + γ W⁺`` (bias kept unless ``set_bias_to_zero``).

    Favours positive contributions; for lower layers.
    """

    def __init__(self, gamma: float = 0.25, set_bias_to_zero: bool = False) -> None:
        if isinstance(gamma, bool) or not isinstance(gamma, (int, float)) or gamma < 0:
            raise ValueError(f"gamma must be a number >= 0, got {gamma!r}")
        self.gamma = float(gamma)
        self.set_bias_to_zero = bool(set_bias_to_zero)

    def _params(self) -> dict:
        return {"gamma": self.gamma, "set_bias_to_zero": self.set_bias_to_zero}

    def _weight(self, w: Tensor) -> Tensor:
        return w + self.gamma * w.clamp(min=0)


class Alpha1_Beta0_Rule(ModifiedWeightsRule):  # noqa: N801  (reference name)
    """α1β0 (z⁺) rule: propagate through the positive weights ``W⁺`` only (bias kept unless
    ``set_bias_to_zero``). Exact z⁺ for non-negative inputs (after ReLU); not for BatchNorm."""

    def __init__(self, set_bias_to_zero: bool = False) -> None:
        self.set_bias_to_zero = bool(set_bias_to_zero)

    def _params(self) -> dict:
        return {"set_bias_to_zero": self.set_bias_to_zero}

    def _weight(self, w: Tensor) -> Tensor:
        return w.clamp(min=0)


def phi(x: Tensor) -> Tensor:
    """The standard normal CDF: GELU(x) / x."""
    return 0.5 * (1.0 + torch.erf(x / math.sqrt(2.0)))


def gelu_tanh_ratio(x: Tensor) -> Tensor:
    """GELU(x) / x for the tanh approximation of GELU."""
    return 0.5 * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x.pow(3))))


def tanh_ratio(x: Tensor) -> Tensor:
    """tanh(x) / x (1 at x = 0)."""
    safe = torch.where(x == 0, torch.ones_like(x), x)
    return torch.where(x == 0, torch.ones_like(x), torch.tanh(safe) / safe)


# f(x)/x in closed form (division-free where possible), keyed by activation class name.
_RATIOS: dict[str, Callable[[nn.Module, Tensor], Tensor]] = {
    "GELUActivation": lambda m, x: phi(x),
    "NewGELUActivation": lambda m, x: gelu_tanh_ratio(x),
    "GELUTanh": lambda m, x: gelu_tanh_ratio(x),
    "PytorchGELUTanh": lambda m, x: gelu_tanh_ratio(x),
    "FastGELUActivation": lambda m, x: gelu_tanh_ratio(x),
    "QuickGELUActivation": lambda m, x: torch.sigmoid(1.702 * x),
    "GELU": lambda m, x: gelu_tanh_ratio(x) if getattr(m, "approximate", "none") == "tanh" else phi(x),
    "SiLU": lambda m, x: torch.sigmoid(x),
    "SiLUActivation": lambda m, x: torch.sigmoid(x),
    "Tanh": lambda m, x: tanh_ratio(x),
    "ReLU": lambda m, x: (x > 0).to(x.dtype),
}


def activation_ratio(module: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    """``y / x`` for an element-wise module (closed form for known activations, 0 where x == 0)."""
    xw = wide(x.detach())
    fn = _RATIOS.get(type(module).__name__)
    if fn is not None:
        return fn(module, xw)
    yw = wide(y.detach())
    safe = torch.where(xw == 0, torch.ones_like(xw), xw)
    return torch.where(xw == 0, torch.zeros_like(xw), yw / safe)


class IdentityRule(EpsilonRule):
    """Identity rule: ``R_in = R_out`` element by element (activations, or BatchNorm).

    Implemented by replacing the Jacobian by ``f(x)/x``; needs an output of the input's shape.
    """

    def __init__(self) -> None:
        super().__init__(0.0)

    def _params(self) -> dict:
        return {}

    def apply(self, module: nn.Module, args: tuple, kwargs: dict, output: Any) -> Any:
        x = _first_input(args, kwargs)
        if not isinstance(output, Tensor) or x is None:
            raise TypeError(
                f"IdentityRule needs a module mapping one tensor to one tensor; {type(module).__name__} does not"
            )
        if x.shape != output.shape:
            raise TypeError(
                f"IdentityRule needs an output of the input's shape; {type(module).__name__} maps "
                f"{tuple(x.shape)} to {tuple(output.shape)}"
            )
        if not x.requires_grad:
            return None
        return substitute(output, x, activation_ratio(module, x, output))


# --------------------------------------------------------------------------- transformer rules
_OFFSET_WEIGHT = ("Gemma",)  # RMSNorm classes computing x * (1 + weight)


def norm_spec(module: nn.Module) -> tuple[bool, float, Tensor | None, int]:
    """``(centred, eps, effective weight, normalised dims)`` of a LayerNorm/RMSNorm-like module."""
    name = type(module).__name__
    eps = next(
        (
            getattr(module, a)
            for a in ("eps", "variance_epsilon", "epsilon")
            if isinstance(getattr(module, a, None), (int, float))
        ),
        None,
    )
    weight = getattr(module, "weight", None)
    weight = weight if isinstance(weight, Tensor) else None
    if isinstance(module, nn.LayerNorm):
        return True, float(module.eps), weight, len(module.normalized_shape)
    if name.endswith("RMSNorm") or name == "T5LayerNorm":
        if weight is not None and name.startswith(_OFFSET_WEIGHT):
            weight = 1.0 + weight
        return False, float(eps if eps is not None else 1e-6), weight, 1
    if name.endswith("LayerNorm") and eps is not None:
        return True, float(eps), weight, 1
    raise TypeError(
        f"NormRule does not know how {name} normalises (expected nn.LayerNorm, a *LayerNorm with an "
        "eps, or an *RMSNorm); set a rule for it explicitly"
    )


class NormRule(PropagationRule):
    """LayerNorm/RMSNorm with the normalising scale treated as a constant (AttnLRP identity rule).

    The centring ``x - mean(x)`` stays a linear map (ε = 0) unless ``detach_mean`` (CP-LRP's
    optional variant), which treats the mean as a constant too.
    """

    def __init__(self, detach_mean: bool = False) -> None:
        self.detach_mean = bool(detach_mean)

    def _params(self) -> dict:
        return {"detach_mean": self.detach_mean} if self.detach_mean else {}

    def apply(self, module: nn.Module, args: tuple, kwargs: dict, output: Any) -> Any:
        x = _first_input(args, kwargs)
        if not isinstance(output, Tensor) or x is None or x.shape != output.shape:
            raise TypeError(
                f"NormRule needs a norm module mapping a tensor to one of its shape; {type(module).__name__} does not"
            )
        if not x.requires_grad:
            return None
        centred, eps, weight, ndim = norm_spec(module)
        dims = tuple(range(-ndim, 0))
        xw = wide(x.detach())
        xc = xw - xw.mean(dims, keepdim=True) if centred else xw
        scale = torch.rsqrt(xc.pow(2).mean(dims, keepdim=True).add_(eps))
        factor = scale * wide(weight.detach()) if weight is not None else scale
        if centred and not self.detach_mean:
            delta = x - x.detach()
            delta = delta - delta.mean(dims, keepdim=True)
            return output.detach() + (factor.to(x.dtype) * delta).to(output.dtype)
        return substitute(output, x, factor)


_ATTENTION_KINDS = {"attnlrp": (0.25, 0.25, 0.5), "cp": (0.0, 0.0, 1.0), "gradient": (1.0, 1.0, 1.0)}
_ATTENTION_ALIASES = {"cp-lrp": "cp", "cplrp": "cp", "attn-lrp": "attnlrp", "none": "gradient"}
_AT = ("kernel", "projections")


class AttentionRule(PropagationRule):
    """Softmax attention. ``kind``:

    * ``"attnlrp"``: AttnLRP — softmax by its Taylor rule (the plain gradient, times input),
      ``Q·Kᵀ`` and ``A·V`` split uniformly: gradients at the kernel inputs scaled q/4, k/4, v/2;
    * ``"cp"``: CP-LRP — attention probabilities constant (q and k detached), relevance through v;
    * ``"gradient"``: unchanged gradient (naive LRP through attention).

    ``at="kernel"`` applies the scaling at the attention function's inputs (through transformers'
    ``AttentionInterface``, any attention implementation); ``at="projections"`` applies it at the
    q/k/v projection outputs (per channel for fused projections such as GPT-2's ``c_attn``), for
    attention modules that do not use the interface.
    """

    def __init__(self, kind: str = "attnlrp", *, at: str = "kernel") -> None:
        kind = _ATTENTION_ALIASES.get(kind, kind)
        if kind not in _ATTENTION_KINDS:
            raise ValueError(f"AttentionRule kind must be one of {sorted(_ATTENTION_KINDS)}, got {kind!r}")
        if at not in _AT:
            raise ValueError(f"AttentionRule at must be one of {_AT}, got {at!r}")
        self.kind, self.at = kind, at

    def _params(self) -> dict:
        return {"kind": self.kind} if self.at == "kernel" else {"kind": self.kind, "at": self.at}

    @property
    def scales(self) -> tuple[float, float, float]:
        """Gradient factors at (query, key, value)."""
        return _ATTENTION_KINDS[self.kind]

    def kernel_inputs(self, query: Tensor, key: Tensor, value: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        sq, sk, sv = self.scales
        return scale_grad(query, sq), scale_grad(key, sk), scale_grad(value, sv)


_PRODUCT_KINDS = ("uniform", "detach_gate", "gradient")


class ProductRule(PropagationRule):
    """Gated MLP product ``act(gate) * up``: ``"uniform"`` gives each factor half the relevance
    (AttnLRP), ``"detach_gate"`` treats the gate as a constant (CP-LRP), ``"gradient"`` changes
    nothing. Set on the MLP module (its gate/up/down parts come from the architecture table,
    see :mod:`hfattr.hf.parts`)."""

    def __init__(self, kind: str = "uniform") -> None:
        if kind not in _PRODUCT_KINDS:
            raise ValueError(f"ProductRule kind must be one of {_PRODUCT_KINDS}, got {kind!r}")
        self.kind = kind

    def _params(self) -> dict:
        return {"kind": self.kind}


def _replace_first(output: Any, new: Tensor) -> Any:
    if isinstance(output, Tensor):
        return new
    items = list(output)
    for i, o in enumerate(items):
        if isinstance(o, Tensor):
            items[i] = new
            break
    return type(output)(items) if isinstance(output, tuple) else items
