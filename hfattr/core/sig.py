"""Sequential Integrated Gradients (arXiv 2305.15853), batched across positions.

SIG at position ``i`` is Integrated Gradients from the baseline "``x`` with position ``i`` set to
its baseline" to ``x``, read at position ``i``. Every ``(position, step, example)`` is one path
point (one sample of a forward batch); points from all positions are packed into chunks of at most
``internal_batch_size`` and each chunk costs one forward and one backward pass. Positions whose
input equals the baseline get exactly 0 and cost nothing (with ``multiply_by_inputs``).
"""

from __future__ import annotations

import contextlib
import functools
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, cast

import torch
from torch import Tensor

from .finite import check_finite
from .inputs import format_additional_args, format_baselines, run_forward
from .batching import auto_samples, is_auto, is_out_of_memory
from .budget import TokenBudget
from .progress import progress_bar

__all__ = [
    "sequential_integrated_gradients",
    "quadrature",
    "SIGInfo",
    "METHODS",
    "convergence_delta",
    "full_baselines",
    "completeness_error",
]

_CHUNK_TOKENS = 16384  # default points per call × sequence length when internal_batch_size is None
FIRST_CHANGED = "accepts_first_changed"  # forward functions with this attribute get first_changed=

METHODS = ("riemann_left", "riemann_right", "riemann_middle", "riemann_trapezoid", "gausslegendre")


def quadrature(method: str, n_steps: int) -> tuple[list[float], list[float]]:
    """``(weights, alphas)`` of the integration rule on [0, 1]."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if isinstance(n_steps, bool) or not isinstance(n_steps, int):
        raise TypeError(f"n_steps must be an int, got {n_steps!r}")
    if method == "gausslegendre":
        if n_steps < 1:
            raise ValueError(f"n_steps must be >= 1 for gausslegendre, got {n_steps}")
        import numpy as np

        nodes, weights = np.polynomial.legendre.leggauss(n_steps)
        return (0.5 * weights).tolist(), (0.5 * (1 + nodes)).tolist()
    if n_steps < 2:
        raise ValueError(f"n_steps must be >= 2 for {method}, got {n_steps}")
    n = n_steps
    weights = [1 / n] * n
    kind = method.split("_")[1]
    if kind == "trapezoid":
        weights[0] /= 2
        weights[-1] /= 2
        alphas = torch.linspace(0, 1, n)
    elif kind == "left":
        alphas = torch.linspace(0, 1 - 1 / n, n)
    elif kind == "middle":
        alphas = torch.linspace(1 / (2 * n), 1 - 1 / (2 * n), n)
    else:
        alphas = torch.linspace(1 / n, 1, n)
    return weights, alphas.tolist()


@dataclass
class SIGInfo:
    """What a SIG run measured besides the attributions."""

    steps: Tensor  # (B, L) integration points used per position (0 where skipped)
    completeness_error: Tensor | None = None  # (B, L): Σ_features attr − (F(x) − F(x with i at baseline))
    passes: int = 0  # forward+backward calls made
    rows: int = 0  # path points (samples) evaluated in those calls
    extra: dict = field(default_factory=dict)


def _check_inputs(inputs: tuple[Tensor, ...]) -> int:
    for k, x in enumerate(inputs):
        if x.dim() < 2:
            raise ValueError(f"inputs[{k}] must have a sequence dimension (dim 1); got shape {tuple(x.shape)}")
        if not x.is_floating_point():
            raise TypeError(f"inputs[{k}] must be floating point to take gradients, got {x.dtype}")
    L = inputs[0].shape[1]
    for k, x in enumerate(inputs[1:], start=1):
        if x.shape[1] != L:
            raise ValueError(
                f"every input must share dimension 1 (the sequence): inputs[0] has {L}, inputs[{k}] has {x.shape[1]}"
            )
    return L


def full_baselines(baselines: Any, inputs: tuple[Tensor, ...], *, name: str = "baselines") -> tuple[Tensor, ...]:
    """One baseline tensor of each input's shape and dtype."""
    out = []
    for b, x in zip(format_baselines(baselines, inputs, name=name), inputs):
        if isinstance(b, Tensor):
            out.append(b.to(dtype=x.dtype).expand_as(x))
        else:
            out.append(torch.full_like(x, float(b)))
    return tuple(out)


def _active(
    inputs: tuple[Tensor, ...], bases: tuple[Tensor, ...], positions: Tensor | None, skip_equal: bool
) -> Tensor:
    B, L = inputs[0].shape[:2]
    act = torch.ones(B, L, dtype=torch.bool, device=inputs[0].device)
    if positions is not None:
        act &= positions.to(act.device).expand(B, L).bool()
    if skip_equal:
        differs = torch.zeros_like(act)
        for x, b in zip(inputs, bases):
            differs |= (x != b).reshape(B, L, -1).any(-1)
        act &= differs
    return act


def _gather_args(args: tuple | None, idx: Tensor, batch: int) -> tuple | None:
    if args is None:
        return None
    return tuple(
        a.index_select(0, idx.to(a.device)) if isinstance(a, Tensor) and a.dim() > 0 and a.shape[0] == batch else a
        for a in args
    )


def _gather_target(target: Any, idx: Tensor) -> Any:
    if isinstance(target, list):
        return [target[i] for i in idx.tolist()]
    if isinstance(target, Tensor) and target.numel() > 1:
        return target.index_select(0, idx.to(target.device))
    return target


def _chunks(n: int, size: int) -> Iterator[slice]:
    for start in range(0, n, size):
        yield slice(start, min(n, start + size))


def path_points(cells: Tensor, m: int) -> tuple[Tensor, Tensor, int]:
    """Example and position of the ``m`` path points of each cell set in a ``(B, L)`` mask, ordered
    by position, then example; and the number of cells."""
    ex, pos = cells.nonzero(as_tuple=True)
    order = torch.argsort(pos * cells.shape[0] + ex, stable=True)
    return ex[order].repeat_interleave(m), pos[order].repeat_interleave(m), len(ex)


def integrate(
    forward_func: Callable,
    inputs: tuple[Tensor, ...],
    bases: tuple[Tensor, ...],
    target: Any,
    args: tuple | None,
    points: tuple[Tensor, Tensor],
    alphas: Tensor,
    weights: Tensor,
    chunk: int,
    grads: list[Tensor],
    info: SIGInfo,
    *,
    label: str,
    expected: int,
    show_progress: bool = False,
    budget: TokenBudget | None = None,
    shrink_on_oom: bool = False,
    slots: Tensor | None = None,
    values: Tensor | None = None,
) -> None:
    """Add ``weight * dF/dx[b, i]`` at every path point ``(b, i, alpha)`` into ``grads``.

    Points are sorted by position. A call holds at most ``chunk`` points and, with ``budget``, at most
    ``budget.tokens`` tokens (on a prefix-reusing forward a point at position p runs ``L - p``).
    With ``shrink_on_oom`` a chunk that runs out of memory is retried with half the points.
    With ``slots`` (one per point) ``grads`` have a leading slot dimension (one slot per node of a
    rule); ``values`` ``(B, L)`` receives the forward value of points at ``alpha = 0``. The calls
    and points are counted in ``info``; a progress bar ``label`` expects ``expected`` calls.
    """
    ex, pos = points
    L = inputs[0].shape[1]
    suffix = bool(getattr(forward_func, FIRST_CHANGED, False))
    calls, start = 0, 0
    with progress_bar(expected, show_progress, label) as bar:
        while start < len(ex):
            size, cost = chunk, (L - int(pos[start]) if suffix else L)
            if budget is not None:  # points cost the positions they run: from their first change on
                size = min(chunk, max(1, budget.tokens // cost))
            sl = slice(start, min(len(ex), start + size))
            measure = budget.measure((sl.stop - sl.start) * cost) if budget is not None else contextlib.nullcontext()
            try:
                _integrate_chunk(
                    forward_func,
                    inputs,
                    bases,
                    target,
                    args,
                    ex[sl],
                    pos[sl],
                    alphas[sl],
                    weights[sl],
                    grads,
                    measure,
                    None if slots is None else slots[sl],
                    values,
                )
            except Exception as err:  # noqa: BLE001 - only memory errors are handled
                if not (shrink_on_oom and size > 1 and is_out_of_memory(err)):
                    raise
                chunk = max(1, size // 2)
                if budget is not None:
                    budget.shrink()
                if inputs[0].is_cuda:
                    torch.cuda.empty_cache()
                continue
            start = sl.stop
            calls += 1
            bar.update()
    info.passes += calls
    info.rows += len(ex)


def _integrate_chunk(
    forward_func: Callable,
    inputs: tuple[Tensor, ...],
    bases: tuple[Tensor, ...],
    target: Any,
    args: tuple | None,
    e: Tensor,
    p: Tensor,
    a: Tensor,
    w: Tensor,
    grads: list[Tensor],
    measure: Any = None,
    slot: Tensor | None = None,
    values: Tensor | None = None,
) -> None:
    """One forward + backward over the path points ``(e, p)`` at ``alpha = a``, weights ``w``."""
    B = inputs[0].shape[0]
    fwd = forward_func
    if getattr(forward_func, FIRST_CHANGED, False):
        # the points perturb positions p and later only (a point at alpha = 1 may equal its input)
        fwd = functools.partial(forward_func, first_changed=int(p.min()))
    # the batch is built with gradients on: under a caller's no_grad (a noise tunnel, a metric)
    # it would not depend on the leaves and every gradient would silently be zero
    with torch.enable_grad():
        leaves, batch = [], []
        for x, b in zip(inputs, bases):
            xr, br = x[e, p], b[e, p]
            shape = (-1,) + (1,) * (xr.dim() - 1)
            z = (br + a.to(x.dtype).view(shape) * (xr - br)).detach().requires_grad_(True)
            full = _with_positions(x, e, p, z)
            leaves.append(z)
            batch.append(full)
        with measure or contextlib.nullcontext():
            out = run_forward(fwd, tuple(batch), _gather_target(target, e), _gather_args(args, e, B), owned=True)
        g = torch.autograd.grad(out.sum(), leaves, allow_unused=True)
    if values is not None and out.dim() > 0 and out.shape[0] == len(e):
        start = a == 0
        if bool(start.any()):
            per_point = out.detach().reshape(len(e), -1).sum(1).to(values.dtype)
            values[e[start], p[start]] = per_point[start]
    where = (e, p) if slot is None else (slot, e, p)
    for k, gk in enumerate(g):
        if gk is None:
            continue
        acc = grads[k].dtype
        contrib = gk.detach().to(acc) * w.to(acc).view((-1,) + (1,) * (gk.dim() - 1))
        grads[k].index_put_(where, contrib, accumulate=True)


def _with_positions(x: Tensor, e: Tensor, p: Tensor, values: Tensor) -> Tensor:
    """Rows ``e`` of ``x``, row k with its position ``p[k]`` set to ``values[k]``."""
    return x.index_select(0, e).index_put((torch.arange(len(e), device=x.device), p), values)


def per_example_sum(out: Tensor) -> Tensor:
    """A forward's output summed per example (one value for a scalar output)."""
    return out.reshape(out.shape[0], -1).sum(1) if out.dim() > 0 else out.reshape(1)


@torch.no_grad()
def _sum_per_example(forward_func: Callable, inputs: tuple[Tensor, ...], target: Any, args: tuple | None) -> Tensor:
    # copies: a forward that changes its input in place must not change the caller's tensors
    return per_example_sum(run_forward(forward_func, tuple(x.clone() for x in inputs), target, args, owned=True))


@torch.no_grad()
def position_drops(
    forward_func: Callable,
    inputs: tuple[Tensor, ...],
    bases: tuple[Tensor, ...],
    target: Any,
    args: tuple | None,
    active: Tensor,
    chunk: int,
) -> Tensor:
    """``(B, L)`` float64: F(x) − F(x with position i at its baseline) where ``active`` (else 0)."""
    B, L = active.shape
    dev = inputs[0].device
    f_x = _sum_per_example(forward_func, inputs, target, args)
    drops = torch.zeros(B, L, dtype=torch.float64, device=dev)
    ex, pos = active.nonzero(as_tuple=True)
    for sl in _chunks(len(ex), chunk):
        e, p = ex[sl], pos[sl]
        batch = tuple(_with_positions(x, e, p, b[e, p]) for x, b in zip(inputs, bases))
        f_i = _sum_per_example(forward_func, batch, _gather_target(target, e), _gather_args(args, e, B))
        drops[e, p] = (f_x[e] - f_i).to(torch.float64)
    return drops


def completeness_error(
    forward_func: Callable,
    attributions: tuple[Tensor, ...],
    inputs: tuple[Tensor, ...],
    bases: tuple[Tensor, ...],
    target: Any,
    args: tuple | None,
    active: Tensor,
    chunk: int,
    *,
    drops: Tensor | None = None,
) -> Tensor:
    """``(B, L)``: Σ over position i's features of the attributions − (F(x) − F(x with i at baseline)).

    ``drops`` (from :func:`position_drops`) saves the forward passes when already known.
    """
    B, L = active.shape
    if drops is None:
        drops = position_drops(forward_func, inputs, bases, target, args, active, chunk)
    attr_sum = sum(a.reshape(B, L, -1).sum(-1).to(torch.float64) for a in attributions)
    return torch.where(active, attr_sum - drops, torch.zeros_like(drops))


def convergence_delta(
    forward_func: Callable,
    attributions: tuple[Tensor, ...],
    inputs: tuple[Tensor, ...],
    bases: tuple[Tensor, ...],
    target: Any,
    args: tuple | None,
) -> Tensor:
    """The reference's delta: Σ attributions − (F(x) − F(all-baseline input)), per example."""
    f_x = _sum_per_example(forward_func, inputs, target, args)
    f_b = _sum_per_example(forward_func, bases, target, args)
    total = sum(a.reshape(a.shape[0], -1).sum(1) for a in attributions)
    return total - (f_x - f_b)


def sequential_integrated_gradients(
    forward_func: Callable,
    inputs: tuple[Tensor, ...],
    *,
    baselines: Any = None,
    target: Any = None,
    additional_forward_args: Any = None,
    n_steps: int | str = 50,
    method: str = "gausslegendre",
    internal_batch_size: int | None = None,
    multiply_by_inputs: bool = True,
    show_progress: bool = False,
    positions: Tensor | None = None,
    tol: float = 1e-3,
    max_steps: int = 33,
    start_steps: int = 4,
    with_completeness: bool = False,
    memory_budget: int | None = None,
) -> tuple[tuple[Tensor, ...], SIGInfo]:
    """SIG attributions for inputs sharing dimension 1, and a ``SIGInfo``.

    ``positions`` (bool, ``(L,)`` or ``(B, L)``) limits which positions are attributed.
    ``n_steps="auto"`` integrates with nested Clenshaw-Curtis rules (``2**k + 1`` points, from the
    first >= ``start_steps`` to the last <= ``max_steps``), refining a position only while its
    completeness error exceeds ``tol``; evaluated points are reused (see ``_adaptive``).
    """
    L = _check_inputs(inputs)
    B = inputs[0].shape[0]
    if isinstance(tol, bool) or not isinstance(tol, (int, float)) or not math.isfinite(tol) or tol < 0:
        raise ValueError(f"tol must be a finite number >= 0, got {tol!r}")
    if (
        internal_batch_size is not None
        and not is_auto(internal_batch_size)
        and not isinstance(internal_batch_size, bool)
        and isinstance(internal_batch_size, int)
        and internal_batch_size < 1
    ):
        raise ValueError(f"internal_batch_size must be >= 1 (or None / 'auto'), got {internal_batch_size}")
    auto = n_steps == "auto"
    if auto and method != "gausslegendre":
        raise ValueError("n_steps='auto' chooses its own nested rules; leave method='gausslegendre' (the default)")
    if not auto:
        quadrature(method, cast(int, n_steps))  # validates n_steps and method early (an int or bad: not "auto")
    auto_chunk = is_auto(internal_batch_size)
    if auto_chunk:
        # forward + backward: budget twice the working memory of a forward sample
        internal_batch_size = max(inputs[0].shape[0], auto_samples(inputs, samples_measured=1) // 2)
    if internal_batch_size is not None:
        if isinstance(internal_batch_size, bool) or not isinstance(internal_batch_size, int):
            raise TypeError(f"internal_batch_size must be an int or None, got {internal_batch_size!r}")
        if internal_batch_size < B:
            raise ValueError(
                f"internal_batch_size ({internal_batch_size}) must be at least the number of examples ({B})"
            )
    if memory_budget is not None and (
        isinstance(memory_budget, bool) or not isinstance(memory_budget, int) or memory_budget < 1
    ):
        raise ValueError(f"memory_budget must be a positive number of bytes or None, got {memory_budget!r}")
    if isinstance(target, list) and len(target) != B:
        raise ValueError(f"target list has {len(target)} entries; expected one per example ({B})")
    args = format_additional_args(additional_forward_args)
    bases = full_baselines(baselines, inputs)
    for k, (x, b) in enumerate(zip(inputs, bases)):
        check_finite(x, f"inputs[{k}]")
        check_finite(b, f"baselines[{k}]")
    active = _active(inputs, bases, positions, skip_equal=multiply_by_inputs)
    steps = torch.zeros(B, L, dtype=torch.long, device=active.device)
    # results do not depend on chunking; by default a call holds up to a budget of tokens
    default_chunk = max(B, _CHUNK_TOKENS // max(L, 1))
    budget = None if internal_batch_size is not None else TokenBudget(inputs, memory_budget)
    info = SIGInfo(steps=steps)
    dev = inputs[0].device

    def run(act: Tensor, n: int, label: str) -> tuple[Tensor, ...]:
        weights, alphas = quadrature(method, n)
        # points ordered position-major (like the reference's blocks)
        pt_ex, pt_pos, n_cells = path_points(act, len(weights))
        pt_alpha = torch.tensor(alphas, dtype=torch.float64, device=dev).repeat(n_cells)
        pt_w = torch.tensor(weights, dtype=torch.float64, device=dev).repeat(n_cells)
        chunk = internal_batch_size or len(pt_ex) or 1
        # accumulate in at least float32 (half-precision sums lose the small step contributions)
        grads = [torch.zeros_like(x, dtype=torch.promote_types(x.dtype, torch.float32)) for x in inputs]
        integrate(
            forward_func,
            inputs,
            bases,
            target,
            args,
            (pt_ex, pt_pos),
            pt_alpha,
            pt_w,
            chunk,
            grads,
            info,
            label=label,
            expected=-(-len(pt_ex) // (internal_batch_size or default_chunk)),
            show_progress=show_progress,
            budget=budget,
            shrink_on_oom=auto_chunk or budget is not None,
        )
        steps[act] = n
        out = []
        for k, g in enumerate(grads):
            check_finite(
                g,
                f"the SIG path gradient of inputs[{k}]",
                hint="the model's gradient is NaN/Inf somewhere between the baseline and the input",
            )
        for g, x, b in zip(grads, inputs, bases):
            a = g * (x - b).to(g.dtype) if multiply_by_inputs else g
            a = a * act.view(B, L, *([1] * (x.dim() - 2))).to(a.dtype)
            out.append(a.to(x.dtype))
        return tuple(out)

    chunk_eval = internal_batch_size or default_chunk

    def multiplied(a: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
        # completeness holds for the attributions multiplied by (x - baseline)
        return a if multiply_by_inputs else tuple(t * (x - b) for t, x, b in zip(a, inputs, bases))

    if not auto:
        attrs = run(active, cast(int, n_steps), "SIG")  # not "auto" here
        if with_completeness:
            info.completeness_error = completeness_error(
                forward_func, multiplied(attrs), inputs, bases, target, args, active, chunk_eval
            )
        return attrs, info

    from .sig_auto import adaptive_sig  # the adaptive rule lives in its own module (imports this one)

    return adaptive_sig(
        forward_func,
        inputs,
        bases,
        target,
        args,
        active,
        info,
        tol=tol,
        start_steps=start_steps,
        max_steps=max_steps,
        multiply_by_inputs=multiply_by_inputs,
        chunk=internal_batch_size,
        budget=budget,
        shrink_on_oom=auto_chunk or budget is not None,
        show_progress=show_progress,
        chunk_eval=chunk_eval,
    )
