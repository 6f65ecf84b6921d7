"""``LRP(model)``: layer-wise relevance propagation with the reference interface.

One forward and one backward pass with the rules attached (see :mod:`hfattr.lrp.attach`); the
attribution of each input is ``input * gradient``. Rules are chosen per module: ``module.rule``,
then ``rules=``, then the composite (``"epsilon"`` — the reference's defaults — for plain torch
models, ``"attnlrp"`` for transformers models).
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator, Mapping, cast

import torch
from torch import Tensor, nn

from ..core.finite import check_finite
from ..core.inputs import as_output_tensor, as_tuple, call_forward, check_target, format_additional_args, select_target
from ..core.attribution import DropIn, reference_method
from .attach import attach_rules
from .composites import Composite, rule_of

__all__ = ["LRP", "explained_output"]

_LOW = (torch.float16, torch.bfloat16)


def _is_transformers(model: nn.Module) -> bool:
    try:
        from transformers import PretrainedConfig
    except ImportError:  # pragma: no cover
        return False
    return isinstance(getattr(model, "config", None), PretrainedConfig)


def explained_output(out: Any) -> Tensor:
    """The tensor a target indexes: the output itself, ``.logits`` of a model output, or the first item."""
    if isinstance(out, Tensor):
        return out
    logits = getattr(out, "logits", None)
    if isinstance(logits, Tensor):
        return logits
    if isinstance(out, (tuple, list)) and out and isinstance(out[0], Tensor):
        return out[0]
    return as_output_tensor(out)


def _relevance(x: Tensor, g: Tensor | None) -> Tensor:
    dtype = torch.float32 if x.dtype in _LOW else x.dtype
    if g is None:
        return torch.zeros(x.shape, dtype=dtype, device=x.device)
    return x.detach().to(dtype) * g.to(dtype)


class _EmbeddingCapture:
    """Relevance of integer inputs, read at the output of the ``nn.Embedding`` that looks them up."""

    def __init__(self, model: nn.Module, ids: dict[int, Tensor]) -> None:
        self.model, self.ids = model, ids
        self.seen: list[tuple[int, Tensor]] = []

    @contextlib.contextmanager
    def active(self) -> Iterator["_EmbeddingCapture"]:
        handles = []
        if self.ids:
            for m in self.model.modules():
                if isinstance(m, nn.Embedding):
                    handles.append(m.register_forward_hook(self._hook))
        try:
            yield self
        finally:
            for h in handles:
                h.remove()

    def _hook(self, module: nn.Module, args: tuple, output: Any) -> Any:
        if not args or not isinstance(args[0], Tensor) or not isinstance(output, Tensor):
            return None
        a = args[0]
        for i, t in self.ids.items():
            # the ids themselves, or a view of them (models often reshape before the lookup)
            if a is t or (a.numel() == t.numel() and a.dtype == t.dtype and a.data_ptr() == t.data_ptr()):
                leaf = output.detach().requires_grad_(True)
                self.seen.append((i, leaf))
                return leaf.clone()  # the model may change the embedding in place; the leaf stays intact
        return None


class LRP(DropIn):
    """Layer-wise relevance propagation (Bach et al. 2015) for torch and transformers models.

    ``composite`` (keyword-only) picks the default rule set: ``"epsilon"``, ``"attnlrp"`` or
    ``"cp-lrp"`` (default: ``"attnlrp"`` for transformers models, ``"epsilon"`` otherwise);
    ``rules`` maps module types, class names, module names/globs or roles to rules. A rule set on a
    module as ``module.rule`` wins over both. The model is left exactly as it was.
    """

    has_delta = True

    def __init__(
        self, model: nn.Module, *, composite: str | Composite | None = None, rules: Mapping | None = None
    ) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        for m in model.modules():
            rule_of(m)  # raises TypeError on a rule of the wrong type
        super().__init__(model)
        self.model = model
        self.composite = composite
        self.rules = rules

    def _composite(self) -> str | Composite:
        if self.composite is not None:
            return self.composite
        return "attnlrp" if _is_transformers(self.model) else "epsilon"

    @reference_method
    def attribute(
        self,
        inputs: Tensor | tuple[Tensor, ...],
        target: Any = None,
        additional_forward_args: Any = None,
        return_convergence_delta: bool = False,
        verbose: bool = False,
    ) -> Tensor | tuple[Tensor, ...] | tuple[Any, Tensor]:
        """Relevance of each input element for the target score (same shapes as ``inputs``).

        The relevances sum to the target score up to what biases, ε and non-conservative rules
        absorb; ``return_convergence_delta=True`` also returns ``score - sum(relevance)`` per
        example. Integer inputs read by an ``nn.Embedding`` get one relevance per id (summed over
        the embedding vector). Half-precision inputs give float32 relevance.
        """
        formatted, was_tuple = as_tuple(inputs)
        n = formatted[0].shape[0]
        check_target(target, n)
        args = format_additional_args(additional_forward_args)
        leaves = tuple(x.detach().requires_grad_(True) if x.is_floating_point() else x for x in formatted)
        ids = {i: x for i, x in enumerate(leaves) if not x.is_floating_point()}
        if ids and not any(isinstance(m, nn.Embedding) for m in self.model.modules()):
            raise ValueError(
                f"inputs[{min(ids)}] is an integer tensor but the model has no nn.Embedding to read it; LRP "
                "attributes to float inputs (e.g. embeddings) or to ids looked up by an nn.Embedding"
            )
        capture = _EmbeddingCapture(self.model, ids)
        with (
            torch.enable_grad(),
            attach_rules(self.model, composite=self._composite(), rules=self.rules, verbose=verbose) as att,
            capture.active(),
        ):
            # copies of the float leaves: a model may change its input in place, the leaves stay intact
            fed = tuple(x.clone() if x.is_floating_point() else x for x in leaves)
            explained = select_target(explained_output(call_forward(self.model, fed, args, owned=True)), target)
            att.check()
            if explained.numel() != n:
                raise ValueError(
                    f"the selected output has shape {tuple(explained.shape)}, not one value per example ({n}); "
                    "pass a target that picks one output per example"
                )
            floats = [i for i in range(len(leaves)) if i not in ids]
            wrt = [leaves[i] for i in floats] + [t for _, t in capture.seen]
            check_finite(explained, "the explained output", hint="check the model's weights and the inputs")
            if not explained.requires_grad:
                raise ValueError("the explained output does not depend on the inputs through the model")
            grads = torch.autograd.grad(explained.sum(), wrt, allow_unused=True)
        result: list[Tensor | None] = [None] * len(leaves)
        for i, g in zip(floats, grads[: len(floats)]):
            result[i] = _relevance(leaves[i], g)
        for (i, emb), g in zip(capture.seen, grads[len(floats) :]):
            r = _relevance(emb, g).sum(-1).reshape(leaves[i].shape)
            prev = result[i]
            result[i] = r if prev is None else prev + r
        for i in ids:
            if result[i] is None:
                raise ValueError(
                    f"inputs[{i}] is an integer tensor that no nn.Embedding of the model received; LRP "
                    "attributes to float inputs (e.g. embeddings) or to ids looked up by an nn.Embedding"
                )
        relevance = [cast(Tensor, rel) for rel in result]  # all set: the float inputs above, the ids checked
        for i, rel in enumerate(relevance):
            check_finite(rel, f"the LRP relevance of inputs[{i}]")
        out = tuple(relevance) if was_tuple else relevance[0]
        if return_convergence_delta:
            return out, self.compute_convergence_delta(out, explained.detach().reshape(n))
        return out

    def attribute_future(self) -> Any:
        """Not available for LRP (as in the reference): relevance needs one synchronous backward pass."""
        raise NotImplementedError("attribute_future is not implemented for LRP")

    def compute_convergence_delta(self, attributions: Tensor | tuple[Tensor, ...], output: Tensor) -> Tensor:
        """``output - sum(attributions)`` per example (zero when relevance is fully conserved)."""
        attrs = attributions if isinstance(attributions, tuple) else (attributions,)
        total = sum(a.reshape(a.shape[0], -1).sum(1) for a in attrs)
        return output.flatten() - total.flatten()  # type: ignore[union-attr]
