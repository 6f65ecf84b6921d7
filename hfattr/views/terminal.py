"""Terminal views: token bars (1-D), a rows × tokens grid (2-D) and the generation matrix.

Colours follow :mod:`hfattr.views.colors` (red toward the target, blue away, dim for fixed
positions) and are ANSI codes only when ``color=True``; a legend line states the range.
"""

from __future__ import annotations

import math
import shutil
import textwrap
from typing import TYPE_CHECKING, Sequence

from ..viz import printable
from .colors import ANSI, fixed_positions, legend_text, robust_scale, unit
from .common import describe, fmt_step, is_generation, matrix, prompt_length, row_labels, step_stats

if TYPE_CHECKING:  # pragma: no cover
    from ..result import Result

__all__ = ["text_table"]


def _paint(s: str, kind: str, color: bool) -> str:
    return f"{ANSI[kind]}{s}{ANSI['reset']}" if color and s else s


def _clip(s: str, width: int) -> str:
    return s if len(s) <= width else s[: max(width - 1, 0)] + "\u2026"


def text_table(result: "Result", *, color: bool = True, width: int | None = None, scale: float | None = None) -> str:
    """The terminal view: summary line, legend line, then one line per token with its score and a bar
    (1-D), a rows × tokens grid (2-D) or the source × generated matrix with step scores (generation).
    """
    if width is None:
        width = shutil.get_terminal_size(fallback=(100, 24)).columns
    width = max(int(width), 40)
    scale = robust_scale(result) if scale is None else float(scale)
    lines = [describe(result), *_legend(scale, color, width)]
    if result.scores.dim() == 1:
        lines += _bars(result, color, width, scale)
    elif is_generation(result):
        lines += _generation(result, color, width, scale)
    else:
        lines += _grid(result, color, width, scale)
    return "\n".join(lines)


def _legend(scale: float, color: bool, width: int) -> list[str]:
    lines = textwrap.wrap(legend_text(scale), width)
    if color:
        lines = [
            s.replace("red", _paint("red", "pos", True)).replace("blue", _paint("blue", "neg", True)) for s in lines
        ]
    return lines


def _num_format(scale: float, digits: int) -> str:
    """Fixed-point for ordinary magnitudes, scientific for tiny or huge ones."""
    return f"+.{digits}f" if scale == 0 or 1e-3 <= scale < 1e4 else f"+.{max(digits - 1, 1)}e"


def _kind(v: float, muted: bool) -> str:
    if muted or math.isnan(v):
        return "dim"
    return "pos" if v > 0 else "neg" if v < 0 else "dim"


def _bars(result: "Result", color: bool, width: int, scale: float) -> list[str]:
    values, fixed = matrix(result)[0], fixed_positions(result)
    toks = [printable(t) for t in result.tokens]
    tok_w = min(max([len(t) for t in toks] + [5]), 24)
    fmt = _num_format(scale, 4)
    nums = [format(v, fmt) for v in values]
    num_w = max([len(s) for s in nums] + [5])
    idx_w = max(len(str(len(toks) - 1)), 3)
    bar_w = max(width - (idx_w + tok_w + num_w + 6), 10)
    lines = [f"{'idx':>{idx_w}}  {'token':<{tok_w}}  {'score':>{num_w}}  bar"]
    for i, (tok, v, num) in enumerate(zip(toks, values, nums)):
        a = unit(v, scale)
        bar = "" if math.isnan(a) else "\u2588" * round(abs(a) * bar_w)
        kind = _kind(v, fixed[i])
        line = (
            f"{i:>{idx_w}}  {_clip(tok, tok_w):<{tok_w}}  "
            f"{_paint(f'{num:>{num_w}}', kind, color)}  {_paint(bar, kind, color)}"
        )
        lines.append(line.rstrip())
    return lines


def _blocks(
    labels: list[str],
    heads: list[str],
    cells: list[list[str]],
    kinds: list[list[str]],
    color: bool,
    width: int,
    extra: Sequence[tuple[str, list[str]]] = (),
) -> list[str]:
    """Rows of right-aligned cells under column heads, wrapped into blocks of columns to fit ``width``."""
    lab_w = min(max([len(s) for s in labels + [e[0] for e in extra]] + [3]), 30)
    cell_w = max(
        [len(c) for row in cells for c in row]
        + [len(c) for _, row in extra for c in row]
        + [7]
        + [min(max(len(h) for h in heads), 10)]
    )
    per_block = max((width - lab_w - 1) // (cell_w + 1), 1)
    lines: list[str] = []
    for start in range(0, len(heads), per_block):
        cols = range(start, min(start + per_block, len(heads)))
        head = " ".join(_clip(heads[j], cell_w).rjust(cell_w) for j in cols)
        lines.append(" " * lab_w + " " + _paint(head, "bold", color))
        for label, row, kind in zip(labels, cells, kinds):
            parts = [_paint(row[j].rjust(cell_w), kind[j], color) if row[j] else " " * cell_w for j in cols]
            lines.append((f"{_clip(label, lab_w):<{lab_w}} " + " ".join(parts)).rstrip())
        if extra:
            lines.append(" " * lab_w + " " + "\u2500" * (len(cols) * (cell_w + 1) - 1))
            for name, row in extra:
                joined = " ".join(row[j].rjust(cell_w) for j in cols)
                lines.append((f"{_clip(name, lab_w):<{lab_w}} " + joined).rstrip())
        if start + per_block < len(heads):
            lines.append("")
    return lines


def _grid(result: "Result", color: bool, width: int, scale: float) -> list[str]:
    rows, fixed = matrix(result), fixed_positions(result)
    fmt = _num_format(scale, 2)
    cells = [[format(v, fmt) for v in row] for row in rows]
    kinds = [[_kind(v, fixed[j]) for j, v in enumerate(row)] for row in rows]
    labels = [printable(r) for r in row_labels(result)]
    return _blocks(labels, [printable(t) for t in result.tokens], cells, kinds, color, width)


def _generation(result: "Result", color: bool, width: int, scale: float) -> list[str]:
    """Source tokens down the side (generated ones marked ``*``), generated tokens across."""
    rows, fixed = matrix(result), fixed_positions(result)
    fmt = _num_format(scale, 2)
    n_prompt = prompt_length(result)
    labels, cells, kinds = [], [], []
    for j, tok in enumerate(result.tokens):
        column = [row[j] for row in rows]
        if all(math.isnan(v) for v in column):
            continue
        labels.append(("*" if j >= n_prompt else " ") + printable(tok))
        cells.append(["" if math.isnan(v) else format(v, fmt) for v in column])
        kinds.append([_kind(v, fixed[j]) for v in column])
    extra = [(name, [fmt_step(name, v) for v in vals]) for name, vals in step_stats(result).items()]
    heads = [printable(g) for g in row_labels(result)]
    note = textwrap.wrap("rows: source tokens (* = generated), columns: generated tokens", width)
    return note + _blocks(labels, heads, cells, kinds, color, width, extra)
