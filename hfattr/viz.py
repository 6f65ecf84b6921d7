"""Views of :class:`hfattr.result.Result`: HTML heatmaps, matplotlib plots, terminal tables.

Everything here only reads Result objects. Colours use one diverging scale:
red for positive scores, blue for negative, white at zero, normalised by the
largest absolute finite score of the non-special tokens (special tokens are
clamped to the same scale and drawn muted).
"""

from __future__ import annotations

import html as _html
import json
import math
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Iterable

if TYPE_CHECKING:  # pragma: no cover
    from .result import Result

__all__ = ["html", "save_html", "plot", "text_table", "score_color", "describe", "printable"]

_POS = (220, 38, 38)   # red end of the scale
_NEG = (37, 99, 235)   # blue end of the scale
_ANSI = {"pos": "\x1b[32m", "neg": "\x1b[31m", "dim": "\x1b[2m", "bold": "\x1b[1m",
         "reset": "\x1b[0m"}


# --------------------------------------------------------------------------- helpers
def _matrix(result: "Result") -> list[list[float]]:
    """Scores as a list of rows of python floats (1-D scores give one row)."""
    scores = result.scores.detach().cpu().double()
    return [scores.tolist()] if scores.dim() == 1 else scores.tolist()


def _specials(result: "Result") -> list[bool]:
    if result.special_mask is None:
        return [False] * len(result.tokens)
    return list(result.special_mask)


def _scale(result: "Result") -> float:
    """Largest |score| over finite non-special entries (all entries if every token is special)."""
    rows, special = _matrix(result), _specials(result)
    keep = [j for j, s in enumerate(special) if not s] or list(range(len(special)))
    vals = [abs(r[j]) for r in rows for j in keep if math.isfinite(r[j])]
    return max(vals, default=0.0)


def _unit(value: float, scale: float) -> float:
    """``value / scale`` clamped to [-1, 1]; 0 for a zero scale; NaN stays NaN."""
    if not math.isfinite(value):
        return value if math.isnan(value) else math.copysign(1.0, value)
    if scale <= 0:
        return 0.0
    return max(-1.0, min(1.0, value / scale))


def score_color(value: float, scale: float) -> str:
    """Hex colour for ``value`` on the diverging scale ``[-scale, scale]``.

    Zero (or a zero scale) is pure white; any non-zero value differs from white.
    NaN is grey.
    """
    a = _unit(float(value), float(scale))
    if math.isnan(a):
        return "#bbbbbb"
    end = _POS if a > 0 else _NEG
    rgb = [255 - math.ceil(abs(a) * (255 - c)) for c in end]
    return "#{:02x}{:02x}{:02x}".format(*rgb)


_BIDI = {c: f"\\u{c:04x}" for c in (*range(0x202A, 0x202F), *range(0x2066, 0x206A))}  # shown escaped


def printable(token: str) -> str:
    """Show control characters (newlines, escapes, bidirectional overrides...) as backslash escapes."""
    out = []
    for ch in token:
        code = ord(ch)
        if code < 32 or 0x7F <= code < 0xA0 or 0x202A <= code <= 0x202E or 0x2066 <= code <= 0x2069:
            out.append(ch.encode("unicode_escape").decode("ascii"))
        else:
            out.append(ch)
    return "".join(out)


def _fmt_target(target: dict) -> str:
    if not target:
        return ""
    if "label" in target:
        return f"{target['label']}" + (f" (id {target['id']})" if "id" in target else "")
    if "tokens" in target:
        return " ".join(str(t) for t in target["tokens"])
    if "id" in target:
        return f"id {target['id']}"
    if "ids" in target:
        return "ids " + ", ".join(str(i) for i in target["ids"])
    return json.dumps(target, default=str)


def describe(result: "Result") -> str:
    """One-line summary: method, target, probability (and model, delta when known)."""
    parts = [f"method: {result.method or '?'}"]
    target = _fmt_target(result.target)
    if target:
        parts.append(f"target: {target}")
    p = result.probability
    if isinstance(p, (int, float)):
        parts.append(f"p = {p:.4f}")
    elif isinstance(p, (list, tuple)):
        parts.append("p = [" + ", ".join(f"{float(x):.4f}" for x in p) + "]")
    if result.model_name:
        parts.append(f"model: {result.model_name}")
    delta = result.delta
    if delta is not None:
        if hasattr(delta, "numel"):
            delta = delta.detach().cpu().double()
            delta = float(delta.abs().max()) if delta.numel() else None
        if delta is not None:
            parts.append(f"|delta| = {delta:.3g}")
    return printable(" | ".join(parts))


# --------------------------------------------------------------------------- HTML
def _esc(value: object) -> str:
    return _html.escape(printable(str(value)), quote=True)


def html(result: "Result") -> str:
    """A self-contained HTML fragment showing the result as a coloured heatmap.

    1-D scores give a line of token ``<span class="hfattr-tok">`` elements;
    2-D scores a rows x tokens table whose cells carry ``class="hfattr-tok"``.
    Each carries ``data-score`` and a ``title`` with the score. All strings are
    HTML-escaped.
    """
    scale = _scale(result)
    header = (f'<div class="hfattr-header" style="font-size:0.9em;color:#333;'
              f'margin-bottom:4px">{_esc(describe(result))} | scale: &plusmn;{scale:.3g}</div>')
    body = _html_tokens(result, scale) if result.scores.dim() == 1 else _html_grid(result, scale)
    text = ""
    if result.text is not None:
        text = ('<details class="hfattr-text" style="font-size:0.85em;color:#555">'
                '<summary>text</summary><pre style="white-space:pre-wrap">'
                f"{_html.escape(result.text.translate(_BIDI), quote=True)}</pre></details>")
    return (f'<div class="hfattr" style="font-family:sans-serif;margin:6px 0">'
            f"{header}{body}{text}</div>")


def _cell_style(value: float, scale: float, special: bool) -> str:
    a = _unit(value, scale)
    fg = "#ffffff" if (not math.isnan(a) and abs(a) > 0.6) else "#111111"
    style = f"background-color:{score_color(value, scale)};color:{fg};"
    if special:
        style += "opacity:0.45;font-style:italic;"
    return style


def _html_tokens(result: "Result", scale: float) -> str:
    values, special = _matrix(result)[0], _specials(result)
    spans = []
    for i, (tok, v) in enumerate(zip(result.tokens, values)):
        title = f"{v:.6g}" + (" (special)" if special[i] else "")
        spans.append(
            f'<span class="hfattr-tok" data-index="{i}" data-score="{v!r}" '
            f'data-special="{str(special[i]).lower()}" title="{_esc(title)}" '
            f'style="{_cell_style(v, scale, special[i])}padding:1px 3px;margin:1px;'
            f'border-radius:3px;white-space:pre;display:inline-block">{_esc(tok)}</span>')
    return ('<div class="hfattr-tokens" style="line-height:1.9;font-family:monospace">'
            + "".join(spans) + "</div>")


def _html_grid(result: "Result", scale: float) -> str:
    matrix, special = _matrix(result), _specials(result)
    labels = result.rows or [f"row {r}" for r in range(len(matrix))]
    head = ['<th></th>'] + [
        f'<th class="hfattr-col" data-index="{j}" title="{_esc(tok)}" style="writing-mode:'
        f'vertical-rl;font-weight:normal;padding:2px;{"opacity:0.45;" if special[j] else ""}">'
        f"{_esc(tok)}</th>" for j, tok in enumerate(result.tokens)]
    lines = ["<tr>" + "".join(head) + "</tr>"]
    for r, (label, row) in enumerate(zip(labels, matrix)):
        cells = [f'<th class="hfattr-row" style="text-align:right;font-weight:normal;'
                 f'padding:0 6px;white-space:nowrap">{_esc(label)}</th>']
        for j, v in enumerate(row):
            title = f"{label} / {result.tokens[j]}: {v:.6g}"
            cells.append(
                f'<td class="hfattr-tok" data-row="{r}" data-index="{j}" data-score="{v!r}" '
                f'title="{_esc(title)}" style="{_cell_style(v, scale, special[j])}'
                f'min-width:1.2em;height:1.2em;border:1px solid #f2f2f2"></td>')
        lines.append("<tr>" + "".join(cells) + "</tr>")
    return ('<table class="hfattr-grid" style="border-collapse:collapse;font-size:0.8em;'
            'font-family:monospace">' + "".join(lines) + "</table>")


def save_html(result_or_results: "Result | Iterable[Result]", path: str | Path) -> Path:
    """Write one Result or several as a complete HTML page; returns the path."""
    from .result import Result

    if isinstance(result_or_results, Result):
        results = [result_or_results]
    else:
        try:
            results = list(result_or_results)
        except TypeError:
            raise TypeError("result_or_results must be a Result or an iterable of Results, "
                            f"got {type(result_or_results).__name__}") from None
        bad = [type(r).__name__ for r in results if not isinstance(r, Result)]
        if bad:
            raise TypeError(f"result_or_results must contain only Results, got {bad[0]}")
    body = '\n<hr style="border:none;border-top:1px solid #ddd">\n'.join(html(r) for r in results)
    page = ('<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            "<title>hfattr attributions</title>\n</head>\n<body>\n" + body + "\n</body>\n</html>\n")
    path = Path(path)
    path.write_text(page, encoding="utf-8")
    return path


# --------------------------------------------------------------------------- matplotlib
def _mpl_text(s: str) -> str:
    """Stop matplotlib from reading ``$...$`` in tokens as math."""
    return printable(s).replace("$", r"\$")


def plot(result: "Result", *, ax=None):
    """Bar chart (1-D scores) or rows x tokens heatmap (2-D); returns the Axes.

    Uses the current matplotlib backend (set ``MPLBACKEND=Agg`` for headless use).
    """
    try:
        import matplotlib  # noqa: F401
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError("plot() needs matplotlib: pip install 'hfattr[plot]'") from err
    matrix, special = _matrix(result), _specials(result)
    n = len(result.tokens)
    if ax is None:
        import matplotlib.pyplot as plt

        height = 3.5 if result.scores.dim() == 1 else max(2.5, 0.35 * len(matrix) + 1.5)
        _, ax = plt.subplots(figsize=(max(6.0, 0.4 * n + 1.5), height))
    scale = _scale(result)
    ticks = [_mpl_text(t) for t in result.tokens]
    if result.scores.dim() == 1:
        values = matrix[0]
        ax.bar(range(n), values, color=[score_color(v, scale) for v in values],
               edgecolor="#555555", linewidth=0.5)
        ax.axhline(0.0, color="#444444", linewidth=0.8)
        ax.set_ylabel("attribution")
        ax.set_xlim(-0.6, n - 0.4)
    else:
        vmax = scale if scale > 0 else 1.0
        image = ax.imshow(result.scores.detach().cpu().double().numpy(), cmap="RdBu_r",
                          vmin=-vmax, vmax=vmax, aspect="auto", interpolation="nearest")
        labels = result.rows or [f"row {r}" for r in range(len(matrix))]
        ax.set_yticks(range(len(labels)))
        ax.set_yticklabels([_mpl_text(r) for r in labels])
        ax.figure.colorbar(image, ax=ax, fraction=0.04, pad=0.02)
    ax.set_xticks(range(n))
    ax.set_xticklabels(ticks, rotation=90)
    for label, is_special in zip(ax.get_xticklabels(), special):
        if is_special:
            label.set_color("#999999")
    ax.set_title(_mpl_text(describe(result)), fontsize=9)
    return ax


# --------------------------------------------------------------------------- terminal
def _paint(s: str, kind: str, color: bool) -> str:
    return f"{_ANSI[kind]}{s}{_ANSI['reset']}" if color and s else s


def _clip(s: str, width: int) -> str:
    return s if len(s) <= width else s[: max(width - 1, 0)] + "\u2026"


def text_table(result: "Result", *, color: bool = True, width: int | None = None) -> str:
    """A terminal table: one line per token with score and a bar (1-D), or a
    rows x tokens grid of scores (2-D). ANSI colours (green positive, red
    negative) only when ``color=True``.
    """
    if width is None:
        width = shutil.get_terminal_size(fallback=(100, 24)).columns
    width = max(int(width), 40)
    lines = [describe(result)]
    if result.scores.dim() == 1:
        lines += _text_bars(result, color, width)
    else:
        lines += _text_grid(result, color, width)
    return "\n".join(lines)


def _num_format(scale: float, digits: int) -> str:
    """Fixed-point for ordinary magnitudes, scientific for tiny or huge ones."""
    return f"+.{digits}f" if scale == 0 or 1e-3 <= scale < 1e4 else f"+.{max(digits - 1, 1)}e"


def _sign_kind(v: float) -> str:
    return "pos" if v > 0 else "neg" if v < 0 else "dim"


def _text_bars(result: "Result", color: bool, width: int) -> list[str]:
    values, special, scale = _matrix(result)[0], _specials(result), _scale(result)
    toks = [printable(t) for t in result.tokens]
    tok_w = min(max([len(t) for t in toks] + [5]), 24)
    fmt = _num_format(scale, 4)
    nums = [format(v, fmt) for v in values]
    num_w = max([len(s) for s in nums] + [5])
    idx_w = max(len(str(len(toks) - 1)), 3)
    bar_w = max(width - (idx_w + tok_w + num_w + 6), 10)
    lines = [f"{'idx':>{idx_w}}  {'token':<{tok_w}}  {'score':>{num_w}}  bar"]
    for i, (tok, v, num) in enumerate(zip(toks, values, nums)):
        a = _unit(v, scale)
        bar = "" if math.isnan(a) else "\u2588" * round(abs(a) * bar_w)
        kind = "dim" if special[i] else _sign_kind(v)
        line = (f"{i:>{idx_w}}  {_clip(tok, tok_w):<{tok_w}}  "
                f"{_paint(f'{num:>{num_w}}', kind, color)}  {_paint(bar, kind, color)}")
        lines.append(line.rstrip())
    return lines


def _text_grid(result: "Result", color: bool, width: int) -> list[str]:
    matrix, special, scale = _matrix(result), _specials(result), _scale(result)
    labels = [printable(r) for r in (result.rows or [f"row {r}" for r in range(len(matrix))])]
    lab_w = min(max([len(s) for s in labels] + [3]), 30)
    fmt = _num_format(scale, 2)
    cells = [[format(v, fmt) for v in row] for row in matrix]
    cell_w = max([len(c) for row in cells for c in row] + [7])
    per_block = max((width - lab_w - 1) // (cell_w + 1), 1)
    toks = [printable(t) for t in result.tokens]
    lines: list[str] = []
    for start in range(0, len(toks), per_block):
        cols = range(start, min(start + per_block, len(toks)))
        head = " ".join(_clip(toks[j], cell_w).rjust(cell_w) for j in cols)
        lines.append(" " * lab_w + " " + _paint(head, "bold", color))
        for label, row, vals in zip(labels, cells, matrix):
            parts = [_paint(row[j].rjust(cell_w), "dim" if special[j] else _sign_kind(vals[j]),
                            color) for j in cols]
            lines.append(f"{_clip(label, lab_w):<{lab_w}} " + " ".join(parts))
        if start + per_block < len(toks):
            lines.append("")
    return lines
