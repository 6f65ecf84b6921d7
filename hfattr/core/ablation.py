"""Feature ablation: the output drop when a group of input features is set to its baseline.

Each input tensor's groups are ablated independently of the other inputs' groups; every element of
a group receives the drop caused by ablating the whole group. Several groups are evaluated in one
forward call by stacking perturbed copies of the batch along dimension 0, feature-major.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import torch
from torch import Tensor

from .inputs import (
    as_output_tensor,
    call_forward,
    check_same_batch,
    check_target,
    expand_additional_args,
    expand_target,
    format_additional_args,
    format_baselines,
    run_forward,
    same_batch_error,
    select_target,
)
from .finite import check_finite, nonfinite_where
from .batching import MemoryProbe, auto_samples, is_auto, is_out_of_memory
from .progress import progress_bar

__all__ = ["feature_ablation", "feature_ablation_future", "format_feature_mask"]


def format_feature_mask(
    feature_mask: Any, inputs: tuple[Tensor, ...], *, name: str = "feature_mask"
) -> tuple[Tensor, ...]:
    """One integer mask per input, with the input's rank; default: every scalar its own feature."""
    if feature_mask is None:
        return tuple(
            torch.arange(math.prod(x.shape[1:]), device=x.device).reshape((1,) + tuple(x.shape[1:])) for x in inputs
        )
    masks = feature_mask if isinstance(feature_mask, tuple) else (feature_mask,)
    if len(masks) != len(inputs):
        raise ValueError(f"{name} must have one mask per input tensor: expected {len(inputs)}, got {len(masks)}")
    out = []
    for i, (m, x) in enumerate(zip(masks, inputs)):
        where = f"{name}[{i}]" if len(inputs) > 1 else name
        if not isinstance(m, Tensor):
            raise TypeError(f"{where} must be an integer torch.Tensor, got {type(m).__name__}")
        if m.is_floating_point() or m.is_complex() or m.dtype == torch.bool:
            raise TypeError(f"{where} must hold integer feature ids, got dtype {m.dtype}")
        if m.dim() > x.dim():
            raise ValueError(
                f"{where} has {m.dim()} dimensions but the input has only {x.dim()} "
                f"(mask shape {tuple(m.shape)}, input shape {tuple(x.shape)})"
            )
        m = m.reshape((1,) * (x.dim() - m.dim()) + tuple(m.shape))
        try:
            ok = torch.broadcast_shapes(m.shape, x.shape) == x.shape
        except RuntimeError:
            ok = False
        if not ok:
            raise ValueError(
                f"{where} of shape {tuple(m.shape)} is not broadcastable to the input's shape {tuple(x.shape)}"
            )
        out.append(m.to(device=x.device, dtype=torch.long))
    return tuple(out)


def _check_ppe(perturbations_per_eval: Any) -> int:
    if isinstance(perturbations_per_eval, bool) or not isinstance(perturbations_per_eval, int):
        raise TypeError(f"perturbations_per_eval must be an int >= 1 or 'auto', got {perturbations_per_eval!r}")
    if perturbations_per_eval < 1:
        raise ValueError(f"perturbations_per_eval must be >= 1, got {perturbations_per_eval}")
    return perturbations_per_eval


def _baseline_tensor(b: Any, x: Tensor) -> Tensor:
    """``b`` as a tensor of the ablated input's dtype: torch's promotion of ``x`` and ``b``.

    As in the reference, an integer input with a float baseline is ablated as a floating point
    input, a bool input with an integer baseline as int64, and a tensor baseline of a wider dtype
    widens the input.
    """
    if isinstance(b, Tensor):
        return b.to(dtype=torch.promote_types(x.dtype, b.dtype)).unsqueeze(0)
    return torch.as_tensor(b, dtype=torch.result_type(x, b), device=x.device)


@dataclass
class _Step:
    """One forward call: which input and feature ids it ablates, and its batch."""

    index: int  # which input tensor
    stacked_mask: Tensor  # (n, *mask.shape) bool
    inputs: tuple[Tensor, ...]
    args: tuple[Any, ...] | None
    target: Any
    ids: Any = None  # the feature ids ablated (one per block of samples)

    @property
    def n(self) -> int:
        return self.stacked_mask.shape[0]


class _Plan:
    """Formats arguments once and yields the perturbed batches of one attribution."""

    def __init__(
        self,
        inputs: tuple[Tensor, ...],
        *,
        baselines: Any,
        target: Any,
        additional_forward_args: Any,
        feature_mask: Any,
        perturbations_per_eval: int,
        skip_id: int | None = None,
        mask_name: str = "feature_mask",
        baseline_name: str = "baselines",
    ) -> None:
        self.inputs = inputs
        self.auto = is_auto(perturbations_per_eval)
        self.ppe = 1 if self.auto else _check_ppe(perturbations_per_eval)
        self.batch = inputs[0].shape[0]
        # inputs of other lengths in dimension 0 (e.g. a list of sparse ids): only for a forward
        # function returning one value for the whole batch, one perturbation per call
        self.ragged = any(x.shape[0] != self.batch for x in inputs)
        if self.ragged and (self.auto or self.ppe != 1):
            check_same_batch(inputs, why=" when perturbations_per_eval is not 1")
        check_target(target, self.batch)
        self.target = target
        self.args = format_additional_args(additional_forward_args)
        self.mask_name = mask_name
        self.masks = format_feature_mask(feature_mask, inputs, name=mask_name)
        raw = format_baselines(baselines, inputs, name=baseline_name)
        self.baselines = tuple(_baseline_tensor(b, x) for b, x in zip(raw, inputs))
        self.ids = tuple(torch.unique(m) if x.numel() > 0 else m.new_empty(0) for m, x in zip(self.masks, inputs))
        if skip_id is not None:
            self.ids = tuple(ids[ids != skip_id] for ids in self.ids)

    def n_calls(self) -> int:
        return sum(math.ceil(len(ids) / self.ppe) for ids in self.ids)

    def check_masks(self, n_outputs: int) -> None:
        for i, (m, x) in enumerate(zip(self.masks, self.inputs)):
            if x.numel() > 0 and m.shape[0] not in (1, n_outputs):  # an empty input has no features
                where = f"{self.mask_name}[{i}]" if len(self.masks) > 1 else self.mask_name
                raise ValueError(
                    f"{where} has first dimension {m.shape[0]}, but forward_func gives "
                    f"{n_outputs} value(s) per evaluation after target selection; the mask's first "
                    "dimension must be 1 (shared) or match the number of outputs"
                )

    def choose_size(self, probe: MemoryProbe) -> None:
        """With ``perturbations_per_eval='auto'``: as many perturbations as fit in memory."""
        if self.auto:
            most = max([len(ids) for ids in self.ids] + [1])
            self.ppe = max(
                1,
                auto_samples(self.inputs, samples_measured=self.batch, probe=probe, limit=most * self.batch)
                // self.batch,
            )

    def step(self, i: int, chunk: Tensor) -> _Step:
        """The batch ablating feature ids ``chunk`` of input ``i`` (one block of samples per id)."""
        n = len(chunk)
        if self._repeated is None or self._repeated[0] != n:
            self._repeated = (
                n,
                tuple(torch.cat([t] * n, dim=0) if n > 1 else t for t in self.inputs),
                expand_additional_args(self.args, n),
                expand_target(self.target, n),
            )
        _, repeated, args, target = self._repeated
        x, mask = self.inputs[i], self.masks[i]
        stacked = mask.unsqueeze(0) == chunk.view((n,) + (1,) * mask.dim())
        base = self.baselines[i]
        ablated = torch.where(stacked, base, x.unsqueeze(0).to(base.dtype))
        batch = list(repeated)
        batch[i] = ablated.reshape((n * x.shape[0],) + tuple(x.shape[1:]))
        return _Step(i, stacked, tuple(batch), args, target, chunk)

    _repeated: tuple | None = None

    def steps(self) -> Iterator[_Step]:
        for i in range(len(self.inputs)):
            ids = self.ids[i]
            for start in range(0, len(ids), self.ppe):
                yield self.step(i, ids[start : start + self.ppe])

    def run(self, evaluate: Callable[[_Step], Tensor], totals: "_Totals", bar: Any) -> None:
        """Evaluate every perturbation; in auto mode an out-of-memory call is retried smaller."""
        for i in range(len(self.inputs)):
            ids, start = self.ids[i], 0
            while start < len(ids):
                n = min(self.ppe, len(ids) - start)
                step = self.step(i, ids[start : start + n])
                try:
                    out = evaluate(step)
                except Exception as err:  # noqa: BLE001 - only memory errors are handled
                    if not (self.auto and n > 1 and is_out_of_memory(err)):
                        raise
                    del step
                    self._repeated = None
                    self.ppe = max(1, n // 2)
                    if self.inputs[0].is_cuda:
                        torch.cuda.empty_cache()
                    continue
                totals.add(step, out)
                start += n
                bar.update()


class _Totals:
    """Accumulates output drops into per-input attribution tensors."""

    def __init__(self, plan: _Plan, initial: Tensor) -> None:
        self.plan = plan
        check_finite(
            initial,
            "the forward function's output at the unperturbed input",
            hint="check the model's weights and the inputs",
        )
        self.initial = initial
        self.n_outputs = initial.numel()
        if plan.ragged and self.n_outputs != 1:
            check_same_batch(
                plan.inputs,
                why=(
                    f" unless forward_func returns one value for the whole batch (it returned shape "
                    f"{tuple(initial.shape)})"
                ),
            )
        self.flat = initial.reshape(1, -1).clone()  # the forward may reuse (and overwrite) its output tensor
        plan.check_masks(self.n_outputs)
        self.totals = [
            torch.zeros((self.n_outputs,) + tuple(x.shape[1:]), dtype=initial.dtype, device=x.device)
            for x in plan.inputs
        ]

    def add(self, step: _Step, modified: Tensor) -> None:
        n = step.n
        if (self.plan.ppe > 1 or self.plan.auto) and (
            self.initial.dim() == 0 or modified.dim() == 0 or modified.shape[0] != n * self.initial.shape[0]
        ):
            raise ValueError(
                "perturbations_per_eval > 1 needs a forward_func whose output grows with the batch "
                f"(one value per example); with a batch of {self.plan.batch} the output has shape "
                f"{tuple(self.initial.shape)}, with {n * self.plan.batch} rows it has shape "
                f"{tuple(modified.shape)}. Use perturbations_per_eval=1 for aggregated outputs."
            )
        if modified.numel() != n * self.n_outputs:
            raise ValueError(
                f"forward_func returned {modified.numel()} values for {n} perturbation(s); expected "
                f"{n * self.n_outputs} (the unperturbed call returned {self.n_outputs})"
            )
        if nonfinite_where(modified) is not None:
            ids = step.ids.tolist() if isinstance(step.ids, Tensor) else step.ids
            check_finite(
                modified,
                f"the forward function's output with feature id(s) {ids} of input {step.index} ablated",
                hint="the model gives NaN/Inf under this perturbation",
            )
        x = self.plan.inputs[step.index]
        diff = self.flat - modified.reshape(n, self.n_outputs).to(self.flat.device)
        diff = diff.reshape(diff.shape + (1,) * (x.dim() - 1)).to(x.device)
        contrib = (diff * step.stacked_mask.to(diff.dtype)).sum(dim=0)
        self.totals[step.index] += contrib

    def result(self) -> tuple[Tensor, ...]:
        return tuple(self.totals)


def feature_ablation(
    forward_func: Callable,
    inputs: tuple[Tensor, ...],
    *,
    baselines: Any = None,
    target: Any = None,
    additional_forward_args: Any = None,
    feature_mask: Any = None,
    perturbations_per_eval: int = 1,
    show_progress: bool = False,
    skip_id: int | None = None,
    mask_name: str = "feature_mask",
    baseline_name: str = "baselines",
) -> tuple[Tensor, ...]:
    """Ablation attributions for a tuple of input tensors; returns one tensor per input.

    Features whose mask id equals ``skip_id`` are never ablated (attribution 0, no pass spent).
    """
    plan = _Plan(
        inputs,
        baselines=baselines,
        target=target,
        additional_forward_args=additional_forward_args,
        feature_mask=feature_mask,
        perturbations_per_eval=perturbations_per_eval,
        skip_id=skip_id,
        mask_name=mask_name,
        baseline_name=baseline_name,
    )
    probe = MemoryProbe(inputs[0].device)
    with torch.no_grad():
        with probe.measure():
            try:
                initial = run_forward(forward_func, inputs, target, plan.args)
            except Exception as err:
                # ragged: most likely per-example inputs of different lengths by mistake
                problem = (
                    same_batch_error(
                        inputs,
                        why=" unless forward_func returns one value for the "
                        f"whole batch (it raised {type(err).__name__} on these inputs)",
                    )
                    if plan.ragged
                    else None
                )
                if problem is not None:
                    raise problem from err
                raise
        totals = _Totals(plan, initial)
        plan.choose_size(probe)
        with progress_bar(1 + plan.n_calls(), show_progress, "Feature Ablation attribution") as bar:
            bar.update()
            plan.run(lambda step: run_forward(forward_func, step.inputs, step.target, step.args), totals, bar)
    return totals.result()


def feature_ablation_future(
    forward_func: Callable,
    inputs: tuple[Tensor, ...],
    *,
    baselines: Any = None,
    target: Any = None,
    additional_forward_args: Any = None,
    feature_mask: Any = None,
    perturbations_per_eval: int = 1,
    show_progress: bool = False,
) -> torch.futures.Future:
    """As :func:`feature_ablation` for a ``forward_func`` returning ``torch.futures.Future``."""
    plan = _Plan(
        inputs,
        baselines=baselines,
        target=target,
        additional_forward_args=additional_forward_args,
        feature_mask=feature_mask,
        perturbations_per_eval=perturbations_per_eval,
    )

    def launch(batch: tuple[Tensor, ...], args: Any, tgt: Any) -> Any:  # a torch.futures.Future
        with torch.no_grad():
            fut = call_forward(forward_func, batch, args)
        if not isinstance(fut, torch.Future):
            raise TypeError(
                "attribute_future needs a forward_func that returns a torch.futures.Future, got "
                f"{type(fut).__name__}; use attribute() instead"
            )
        return fut.then(lambda f: select_target(as_output_tensor(f.value()), tgt))

    plan.choose_size(MemoryProbe(inputs[0].device))
    with progress_bar(1 + plan.n_calls(), show_progress, "Feature Ablation attribution") as bar:
        first = launch(inputs, plan.args, target)
        bar.update()
        steps = list(plan.steps())
        pending = []
        for step in steps:
            pending.append(launch(step.inputs, step.args, step.target))
            bar.update()

    def finish(all_done: torch.futures.Future) -> tuple[Tensor, ...]:
        done = all_done.value()
        with torch.no_grad():
            totals = _Totals(plan, done[0].value())
            for step, fut in zip(steps, done[1:]):
                totals.add(step, fut.value())
        return totals.result()

    return torch.futures.collect_all([first, *pending]).then(finish)
