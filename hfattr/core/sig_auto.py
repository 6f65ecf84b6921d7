"""``n_steps="auto"`` for SIG: nested Clenshaw–Curtis rules refined per position (docs/sig.md).

Every evaluated point is reused when a position is refined; the gradient at the input is shared by
all positions and the completeness check comes from the forwards at the baseline end.
"""

from __future__ import annotations

import functools
import warnings
from typing import Any, Callable, cast

import torch
from torch import Tensor

from .inputs import run_forward
from .quadrature import cc_levels, cc_node_index, clenshaw_curtis
from .budget import TokenBudget
from .sig import FIRST_CHANGED, SIGInfo, integrate, path_points, per_example_sum, position_drops

__all__ = ["adaptive_sig", "gradient_at_input", "NOISE"]


NOISE = 16  # refinement stops where successive rules agree to NOISE × eps × the magnitudes involved


def gradient_at_input(
    forward_func: Callable, inputs: tuple[Tensor, ...], target: Any, args: tuple | None
) -> tuple[list[Tensor | None], Tensor]:
    """dF/dx at the inputs themselves (every position's path ends there) and F(x) per example."""
    leaves = tuple(x.detach().requires_grad_(True) for x in inputs)
    fwd = forward_func
    if getattr(forward_func, FIRST_CHANGED, False):
        fwd = functools.partial(forward_func, first_changed=0)
    with torch.enable_grad():
        out = run_forward(fwd, leaves, target, args)
        g = torch.autograd.grad(out.sum(), leaves, allow_unused=True)
    return list(g), per_example_sum(out.detach())


def adaptive_sig(
    forward_func: Callable,
    inputs: tuple[Tensor, ...],
    bases: tuple[Tensor, ...],
    target: Any,
    args: tuple | None,
    active: Tensor,
    info: SIGInfo,
    *,
    tol: float,
    start_steps: int,
    max_steps: int,
    multiply_by_inputs: bool,
    chunk: int | None,
    budget: TokenBudget | None,
    shrink_on_oom: bool,
    show_progress: bool,
    chunk_eval: int,
) -> tuple[tuple[Tensor, ...], SIGInfo]:
    """``n_steps="auto"``: nested Clenshaw-Curtis rules (3, 5, 9, 17, 33, ... points), refined per
    position while its completeness error exceeds ``tol``. Every evaluated point is reused by the
    finer rules; the gradient at ``alpha = 1`` (the input itself) is shared by all positions and the
    forward values at ``alpha = 0`` give the completeness check, so no round needs extra passes.

    Positions whose baseline is the zero vector are integrated in ``t`` with ``alpha = t**2``: the
    path then starts at the origin, where normalisation layers (RMSNorm, LayerNorm) are singular and
    the integrand has a spike of width ~sqrt(eps / mean(x**2)) at ``alpha = 0``; the substitution
    puts more nodes there (same nodes in ``t``, so still nested and with the same end points)."""
    B, L = active.shape
    dev = inputs[0].device
    levels = cc_levels(start_steps, max_steps)
    graded = active.clone()
    for b in bases:
        graded &= (b == 0).reshape(B, L, -1).all(-1)
    if not bool(active.any()):  # nothing to attribute: no passes
        info.completeness_error = torch.zeros(B, L, dtype=torch.float64, device=dev)
        info.extra.update(tol=tol, rule="clenshaw-curtis", at_noise_floor=0)
        return tuple(torch.zeros_like(x) for x in inputs), info
    finest = levels[-1]
    feat = [(1,) * (x.dim() - 2) for x in inputs]
    acc = [torch.promote_types(x.dtype, torch.float32) for x in inputs]
    diffs = [(x - b).to(torch.float64) for x, b in zip(inputs, bases)]
    eps = max(torch.finfo(x.dtype).eps for x in inputs)
    steps = info.steps
    node_grads: dict[int, list[Tensor]] = {}  # node index in the finest rule -> per-input (B, L, ...) gradients
    g1, f_x = gradient_at_input(forward_func, inputs, target, args)
    info.passes += 1
    info.rows += B
    node_grads[finest - 1] = [
        torch.zeros_like(x, dtype=a) if g is None else g.detach().to(a) for g, x, a in zip(g1, inputs, acc)
    ]
    f_start = torch.full((B, L), float("nan"), dtype=torch.float64, device=dev)  # F(x with i at its baseline)
    level_of = torch.zeros(B, L, dtype=torch.long, device=dev)  # index into levels
    todo = active.clone()
    attrs64 = [torch.zeros_like(d) for d in diffs]  # multiplied by (x - baseline)
    integrals = [torch.zeros_like(d) for d in diffs]
    err = torch.zeros(B, L, dtype=torch.float64, device=dev)
    prev_sum: Tensor | None = None
    at_floor = torch.zeros_like(active)
    for k, n in enumerate(levels):
        have = set(cc_node_index(levels[k - 1], finest)) if k else {finest - 1}
        new = [j for j in cc_node_index(n, finest) if j not in have]
        if bool(todo.any()) and new:
            _, alphas = clenshaw_curtis(finest)
            m = len(new)
            pt_ex, pt_pos, n_cells = path_points(todo, m)
            pt_slot = torch.arange(m, device=dev).repeat(n_cells)
            pt_alpha = torch.tensor([alphas[j] for j in new], dtype=torch.float64, device=dev).repeat(n_cells)
            pt_alpha = torch.where(graded[pt_ex, pt_pos], pt_alpha * pt_alpha, pt_alpha)
            pt_w = torch.ones(len(pt_ex), dtype=torch.float64, device=dev)
            grads = [torch.zeros((m,) + tuple(x.shape), dtype=a, device=dev) for x, a in zip(inputs, acc)]
            size = chunk or len(pt_ex)
            integrate(
                forward_func,
                inputs,
                bases,
                target,
                args,
                (pt_ex, pt_pos),
                pt_alpha,
                pt_w,
                size,
                grads,
                info,
                label=f"SIG ({n} points)",
                expected=-(-len(pt_ex) // size),
                show_progress=show_progress,
                budget=budget,
                shrink_on_oom=shrink_on_oom,
                slots=pt_slot,
                values=f_start,
            )
            for i, j in enumerate(new):
                node_grads[j] = [g[i] for g in grads]
        level_of[todo] = k
        steps[todo] = n
        if k == 0:
            missing = active & torch.isnan(f_start)
            if bool(missing.any()):  # the forward gives no per-sample values: evaluate the drops directly
                drops = position_drops(forward_func, inputs, bases, target, args, missing, chunk_eval)
                f_start = torch.where(missing, f_x.view(B, 1).to(torch.float64) - drops, f_start)
        # the n-point rule on every position that is at this level
        w_n, t_n = clenshaw_curtis(n)
        integral = [torch.zeros_like(d) for d in diffs]
        integral_t = [torch.zeros_like(d) for d in diffs]  # in t, alpha = t**2: d alpha = 2 t dt
        for j, wj, tj in zip(cc_node_index(n, finest), w_n, t_n):
            for t, tt, g in zip(integral, integral_t, node_grads[j]):
                g64 = g.to(torch.float64)
                t.add_(g64, alpha=wj)
                tt.add_(g64, alpha=wj * 2 * tj)
        integral = [torch.where(graded.view(B, L, *f), tt, t) for t, tt, f in zip(integral, integral_t, feat)]
        for t, a, i_, d, f in zip(integral, attrs64, integrals, diffs, feat):
            a.copy_(torch.where(todo.view(B, L, *f), t * d, a))
            i_.copy_(torch.where(todo.view(B, L, *f), t, i_))
        mult_sum = cast(Tensor, sum(a.reshape(B, L, -1).sum(-1) for a in attrs64))  # at least one input
        drop = f_x.view(B, 1).to(torch.float64) - f_start
        err = torch.where(active, mult_sum - drop, torch.zeros_like(mult_sum))
        if prev_sum is not None:  # successive rules agree to rounding: more points cannot help
            scale = (
                f_x.view(B, 1).abs().to(torch.float64)
                + f_start.abs().nan_to_num()
                + sum(a.abs().reshape(B, L, -1).sum(-1) for a in attrs64)
            )
            at_floor |= todo & ((mult_sum - prev_sum).abs() <= NOISE * eps * scale) & (err.abs() > tol)
        prev_sum = mult_sum
        todo = todo & (err.abs() > tol) & ~at_floor
        if not bool(todo.any()):
            break
    info.completeness_error = err
    info.extra.update(tol=tol, rule="clenshaw-curtis", at_noise_floor=int(at_floor.sum()), graded=int(graded.sum()))
    out = []
    for a, i_, x, f in zip(attrs64, integrals, inputs, feat):
        a = a if multiply_by_inputs else i_ * active.view(B, L, *f)
        out.append(a.to(x.dtype))
    bad = active & (err.abs() > tol)
    if bool((bad & ~at_floor).any()):
        warnings.warn(
            f"n_steps='auto' stopped at max_steps={levels[-1]} points with a completeness error of "
            f"{float(err[bad & ~at_floor].abs().max()):.3g} > tol={tol:g} at {int((bad & ~at_floor).sum())} "
            "position(s); the integrand is steep there (raise max_steps or use another baseline)",
            stacklevel=3,
        )
    if bool(at_floor.any()):
        warnings.warn(
            f"n_steps='auto': tol={tol:g} is below the rounding noise of {inputs[0].dtype} at {int(at_floor.sum())} "
            f"position(s) (largest completeness error {float(err[at_floor].abs().max()):.3g}); more points "
            "cannot lower it there",
            stacklevel=3,
        )
    return tuple(out), info
