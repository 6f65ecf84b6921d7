"""Matplotlib views: bar chart (1-D), rows × tokens heatmap (2-D), source × generated matrix.

Figures made here use constrained layout, so a plain ``fig.savefig(path)`` keeps the title and
labels; every figure has a colour bar with the scale of :mod:`hfattr.views.colors`; titles name
the model by its hub id or its folder name, never a machine path.
"""

from __future__ import annotations

import math
import textwrap
from typing import TYPE_CHECKING

from ..viz import printable
from .colors import colormap, fixed_positions, robust_scale, score_color
from .common import describe, fmt_step, is_generation, matrix, prompt_length, row_labels, step_stats

if TYPE_CHECKING:  # pragma: no cover
    from ..result import Result

__all__ = ["plot"]

_CBAR_LABEL = "\u2190 pushes away from the target   |   toward the target \u2192"


def _mpl_text(s: str) -> str:
    """Stop matplotlib from reading ``$...$`` in tokens as math."""
    return printable(s).replace("$", r"\$")


def _figure(width: float, height: float, rows: int = 1, ratios=None):
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=(width, height), layout="constrained")
    axes = fig.subplots(rows, 1, squeeze=False, gridspec_kw={"height_ratios": ratios} if ratios else None)
    return fig, [a[0] for a in axes]


def _title(ax, result: "Result", width_in: float) -> None:
    chars = max(int(width_in * 13), 40)
    ax.set_title("\n".join(textwrap.wrap(_mpl_text(describe(result)), chars, break_on_hyphens=False)), fontsize=9)


def _colorbar(fig, ax, scale: float, *, orientation: str = "vertical"):
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    vmax = scale if scale > 0 else 1.0
    mappable = ScalarMappable(norm=Normalize(-vmax, vmax), cmap=colormap())
    bar = fig.colorbar(mappable, ax=ax, orientation=orientation, fraction=0.05, pad=0.02, aspect=30)
    bar.set_label(_CBAR_LABEL if orientation == "horizontal" else "attribution (red: toward the target)", fontsize=8)
    return bar


def plot(result: "Result", *, ax=None, scale: float | None = None):
    """Bar chart (1-D), heatmap (2-D) or the source × generated matrix; returns the main Axes.

    With ``ax=None`` a new figure (constrained layout) is made; ``scale`` fixes the colour range.
    Uses the current matplotlib backend (set ``MPLBACKEND=Agg`` for headless use).
    """
    try:
        import matplotlib  # noqa: F401
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError("plot() needs matplotlib: pip install 'hfattr[plot]'") from err
    scale = robust_scale(result) if scale is None else float(scale)
    if result.scores.dim() == 1:
        return _bars(result, ax, scale)
    if is_generation(result):
        return _generation(result, ax, scale)
    return _heatmap(result, ax, scale)


def _token_ticks(ax, tokens: list[str], fixed: list[bool], axis: str = "x") -> None:
    ticks = [_mpl_text(t) for t in tokens]
    if axis == "x":
        ax.set_xticks(range(len(ticks)))
        ax.set_xticklabels(ticks, rotation=90, fontsize=8)
        labels = ax.get_xticklabels()
    else:
        ax.set_yticks(range(len(ticks)))
        ax.set_yticklabels(ticks, fontsize=8)
        labels = ax.get_yticklabels()
    for label, muted in zip(labels, fixed):
        if muted:
            label.set_color("#999999")


def _bars(result: "Result", ax, scale: float):
    values, fixed = matrix(result)[0], fixed_positions(result)
    n = len(values)
    width = min(max(6.0, 0.32 * n + 2.0), 30.0)
    if ax is None:
        fig, (ax,) = _figure(width, 3.8)
    else:
        fig = ax.figure
    ax.bar(
        range(n),
        [0.0 if math.isnan(v) else v for v in values],
        color=[score_color(v, scale) for v in values],
        edgecolor="#555555",
        linewidth=0.5,
    )
    ax.axhline(0.0, color="#444444", linewidth=0.8)
    ax.set_ylabel("attribution")
    ax.set_xlim(-0.6, n - 0.4)
    kept = [v for v, f in zip(values, fixed) if not f and math.isfinite(v)]
    if kept and scale > 0:  # fixed positions beyond the range are clipped and labelled, not squashing the rest
        lo, hi = min(0.0, min(kept)), max(0.0, max(kept))
        pad = 0.12 * (hi - lo or scale)
        ax.set_ylim(lo - pad, hi + pad)
        for i, v in enumerate(values):
            if math.isfinite(v) and (v > hi + pad or v < lo - pad):
                y = hi + pad * 0.5 if v > 0 else lo - pad * 0.5
                ax.annotate(
                    f"{v:+.3g}",
                    (i, y),
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="#333333",
                    bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "#999999", "lw": 0.5},
                )
    _token_ticks(ax, result.tokens, fixed)
    _title(ax, result, fig.get_size_inches()[0])
    _colorbar(fig, ax, scale)
    return ax


def _heatmap(result: "Result", ax, scale: float):
    fixed = fixed_positions(result)
    labels = row_labels(result)
    n_rows, n = result.scores.shape
    width = min(max(6.0, 0.3 * n + 0.09 * max(len(s) for s in labels) + 2.5), 30.0)
    if ax is None:
        fig, (ax,) = _figure(width, max(2.8, 0.3 * n_rows + 2.2))
    else:
        fig = ax.figure
    vmax = scale if scale > 0 else 1.0
    ax.imshow(
        result.scores.detach().cpu().double().numpy(),
        cmap=colormap(),
        vmin=-vmax,
        vmax=vmax,
        aspect="auto",
        interpolation="nearest",
    )
    ax.set_yticks(range(n_rows))
    ax.set_yticklabels([_mpl_text(r) for r in labels], fontsize=8)
    _token_ticks(ax, result.tokens, fixed)
    _title(ax, result, fig.get_size_inches()[0])
    _colorbar(fig, ax, scale)
    return ax


def _generation(result: "Result", ax, scale: float):
    import numpy as np

    data = result.scores.detach().cpu().double().numpy().T  # (P + G, G): source down, generated across
    keep = [j for j in range(data.shape[0]) if not np.isnan(data[j]).all()]
    data = data[keep]
    fixed = fixed_positions(result)
    n_prompt = prompt_length(result)
    src = [("*" if j >= n_prompt else "") + result.tokens[j] for j in keep]
    gen = row_labels(result)
    steps = step_stats(result)
    step_ax = None
    if ax is None:
        width = min(max(5.5, 0.42 * len(gen) + 3.5), 30.0)
        height = min(max(3.5, 0.24 * len(keep) + 2.5), 40.0)
        if steps:
            fig, (ax, step_ax) = _figure(
                width, height + 0.25 * len(steps) + 0.4, 2, ratios=[max(len(keep), 1), max(len(steps), 1) + 0.6]
            )
        else:
            fig, (ax,) = _figure(width, height)
    else:
        fig = ax.figure
    vmax = scale if scale > 0 else 1.0
    ax.imshow(
        np.ma.masked_invalid(data), cmap=colormap(), vmin=-vmax, vmax=vmax, aspect="auto", interpolation="nearest"
    )
    ax.set_facecolor("white")
    _token_ticks(ax, src, [fixed[j] for j in keep], axis="y")
    ax.set_xticks(range(len(gen)))
    ax.set_xticklabels([_mpl_text(g) for g in gen], rotation=90, fontsize=8)
    ax.xaxis.tick_top()
    if n_prompt in keep and keep.index(n_prompt) > 0:
        ax.axhline(keep.index(n_prompt) - 0.5, color="#555555", linewidth=1.0)
    ax.set_ylabel("source (* = generated)", fontsize=8)
    _title(ax, result, fig.get_size_inches()[0])
    _colorbar(fig, [ax] + ([step_ax] if step_ax is not None else []), scale)
    if step_ax is not None:
        names = list(steps)
        step_ax.imshow(np.zeros((len(names), len(gen))), cmap="Greys", vmin=0, vmax=1, aspect="auto")
        for r, name in enumerate(names):
            for g, v in enumerate(steps[name]):
                step_ax.text(g, r, fmt_step(name, v), ha="center", va="center", fontsize=7)
        step_ax.set_yticks(range(len(names)))
        step_ax.set_yticklabels(names, fontsize=8)
        step_ax.set_xticks([])
        step_ax.set_title("step scores", fontsize=8, loc="left")
    return ax
