"""The one colour language of every view: a diverging scale, its range and its legend.

Red means the token pushes the output toward the explained target, blue that it pushes away
from it, white is zero; the strength is ``|score| / scale``, clamped to 1. The default scale is
the largest finite ``|score|`` outside the *fixed* positions (special tokens, target positions read
by the head, empty generation entries), so that one special token does not wash out the rest.
"""

from __future__ import annotations

import html as _html
import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from ..result import Result

__all__ = [
    "POS",
    "NEG",
    "ANSI",
    "MEANING",
    "score_color",
    "unit",
    "fixed_positions",
    "robust_scale",
    "legend_html",
    "legend_text",
    "colormap",
    "text_color",
]

POS = (220, 38, 38)  # red: pushes toward the target
NEG = (37, 99, 235)  # blue: pushes away from the target
ANSI = {"pos": "\x1b[31m", "neg": "\x1b[34m", "dim": "\x1b[2m", "bold": "\x1b[1m", "reset": "\x1b[0m"}
MEANING = ("red: pushes toward the target", "blue: pushes away from it")


def unit(value: float, scale: float) -> float:
    """``value / scale`` clamped to [-1, 1]; 0 for a zero scale; NaN stays NaN."""
    if not math.isfinite(value):
        return value if math.isnan(value) else math.copysign(1.0, value)
    if scale <= 0:
        return 0.0
    return max(-1.0, min(1.0, value / scale))


def score_color(value: float, scale: float) -> str:
    """Hex colour of ``value`` on the diverging scale ``[-scale, scale]``.

    Zero (or a zero scale) is pure white; any non-zero value differs from white; NaN is grey.
    """
    a = unit(float(value), float(scale))
    if math.isnan(a):
        return "#bbbbbb"
    end = POS if a > 0 else NEG
    rgb = [255 - math.ceil(abs(a) * (255 - c)) for c in end]
    return "#{:02x}{:02x}{:02x}".format(*rgb)


def text_color(value: float, scale: float) -> str:
    """Black or white text, whichever reads on the background of ``value``."""
    a = unit(float(value), float(scale))
    return "#ffffff" if (not math.isnan(a) and abs(a) > 0.6) else "#111111"


def fixed_positions(result: "Result") -> list[bool]:
    """Columns left out of the default range: special tokens and target positions the head reads."""
    n = len(result.tokens)
    fixed = list(result.special_mask) if result.special_mask is not None else [False] * n
    target = result.target or {}
    if target.get("kind") in ("masked", "token"):
        for p in target.get("positions", []) or []:
            if isinstance(p, int) and 0 <= p < n:
                fixed[p] = True
    return fixed


def robust_scale(result: "Result") -> float:
    """Largest finite ``|score|`` outside the fixed positions (all finite entries if every one is fixed)."""
    attributions = result.scores.detach().cpu().double()
    rows = [attributions.tolist()] if attributions.dim() == 1 else attributions.tolist()
    fixed = fixed_positions(result)
    keep = [j for j, f in enumerate(fixed) if not f] or list(range(len(fixed)))
    vals = [abs(r[j]) for r in rows for j in keep if math.isfinite(r[j])]
    return max(vals, default=0.0)


def legend_text(scale: float) -> str:
    """The legend of the terminal views (no colour codes)."""
    return f"scale \u00b1{scale:.3g}: red = toward the target, blue = away from it"


def legend_html(scale: float) -> str:
    """A colour bar with its range and meaning (an HTML fragment)."""
    neg = "rgb({},{},{})".format(*NEG)
    pos = "rgb({},{},{})".format(*POS)
    label = _html.escape(legend_text(scale) + "; scores beyond the range are drawn at full colour", quote=True)
    return (
        f'<div class="hfattr-legend" role="img" aria-label="{label}" style="display:flex;align-items:center;'
        f'gap:6px;font-size:0.8em;color:#333;margin:4px 0">'
        f'<span class="hfattr-legend-min">&minus;{scale:.3g}</span>'
        f'<span class="hfattr-legend-bar" style="display:inline-block;width:160px;height:12px;'
        f'border:1px solid #999;background:linear-gradient(to right,{neg},#ffffff,{pos})"></span>'
        f'<span class="hfattr-legend-max">+{scale:.3g}</span>'
        f'<span style="color:#555">&nbsp;<b style="color:{pos}">red</b>: pushes toward the target, '
        f'<b style="color:{neg}">blue</b>: pushes away from it</span>'
        f"</div>"
    )


def colormap():
    """The same scale as a matplotlib colormap (empty/NaN entries drawn white)."""
    from matplotlib.colors import LinearSegmentedColormap

    cmap = LinearSegmentedColormap.from_list(
        "hfattr", [tuple(c / 255 for c in NEG), (1.0, 1.0, 1.0), tuple(c / 255 for c in POS)], N=511
    )
    return cmap.with_extremes(bad=(1.0, 1.0, 1.0, 0.0))
