"""HTML views: the token heatmap (1-D scores), the rows × tokens grid and the generation matrix.

Every fragment is self-contained (inline styles plus one scoped ``<style>`` block, no script, no
network), escapes every string it shows, and carries a legend with the colour scale's range.
Each scored element has ``class="hfattr-tok"``, ``data-score``, a ``title`` and, for keyboard
users, ``tabindex="0"`` with the value shown while focused.
"""

from __future__ import annotations

import hashlib
import html as _html
import math
from pathlib import Path
from typing import TYPE_CHECKING, Iterable

from ..viz import BIDI, printable
from .colors import fixed_positions, legend_html, robust_scale, score_color, text_color
from .common import describe, fmt_step, is_generation, matrix, prompt_length, row_labels, specials, step_stats

if TYPE_CHECKING:  # pragma: no cover
    from ..result import Result

__all__ = ["html", "html_body", "save_html", "page", "STYLE", "esc"]

STYLE = """<style>
.hfattr{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:6px 0;color:#111}
.hfattr .hfattr-tok{position:relative}
.hfattr .hfattr-tok:focus{outline:2px solid #111;outline-offset:1px;z-index:3}
.hfattr .hfattr-tok:hover::after,.hfattr .hfattr-tok:focus::after{content:attr(data-tip);position:absolute;
 left:0;top:100%;margin-top:3px;background:#222;color:#fff;font:12px/1.3 system-ui,sans-serif;padding:2px 6px;
 border-radius:3px;white-space:pre;z-index:10;pointer-events:none;font-style:normal;opacity:1}
.hfattr table.hfattr-grid{border-collapse:separate;border-spacing:1px;font-size:12px;font-family:ui-monospace,monospace}
.hfattr .hfattr-grid td{min-width:2.6em;width:2.6em;height:1.7em;padding:0;text-align:center;font-size:11px}
.hfattr .hfattr-grid th{font-weight:normal}
.hfattr .hfattr-col{vertical-align:bottom;padding:2px 0;min-width:2.6em;max-width:2.6em}
.hfattr .hfattr-colhead{writing-mode:vertical-rl;transform:rotate(180deg);max-height:9em;overflow:hidden;
 text-overflow:ellipsis;white-space:pre;margin:0 auto;line-height:1.3;padding:0 2px}
.hfattr .hfattr-row{text-align:right;padding:0 6px;white-space:pre;max-width:16em;overflow:hidden;
 text-overflow:ellipsis}
.hfattr .hfattr-val{display:none}
.hfattr .hfattr-show:checked ~ .hfattr-scroll .hfattr-val{display:inline}
.hfattr .hfattr-empty{background:#ffffff}
.hfattr tr.hfattr-first-gen th,.hfattr tr.hfattr-first-gen td{border-top:2px solid #888}
.hfattr tr.hfattr-step th,.hfattr tr.hfattr-step td{color:#333;background:#f4f4f4;font-size:11px;padding:0 3px}
.hfattr tr.hfattr-step-first th,.hfattr tr.hfattr-step-first td{border-top:2px solid #888}
.hfattr .hfattr-scroll{overflow-x:auto;max-width:100%;padding-bottom:2em}
.hfattr .hfattr-toggle{font-size:0.8em;color:#333;user-select:none}
</style>"""


def esc(value: object) -> str:
    """HTML-escaped, with control characters shown as escapes."""
    return _html.escape(printable(str(value)), quote=True)


def html(result: "Result", *, scale: float | None = None, values: bool = False) -> str:
    """A self-contained HTML fragment showing ``result`` with a legend.

    1-D scores: a line of coloured token ``<span>``; 2-D scores: a rows × tokens grid; a generation:
    the source × generated matrix with the step scores as extra rows. ``scale`` fixes the colour
    range (default: :func:`hfattr.views.colors.robust_scale`); ``values=True`` shows the numbers in
    grid cells from the start (a checkbox toggles them).
    """
    scale = robust_scale(result) if scale is None else float(scale)
    if not math.isfinite(scale) or scale < 0:
        raise ValueError(f"scale must be a finite number >= 0, got {scale!r}")
    header = (
        f'<div class="hfattr-header" style="font-size:0.9em;color:#333;margin-bottom:2px">{esc(describe(result))}</div>'
    )
    body = html_body(result, scale, values=values)
    text = ""
    if result.text is not None:
        text = (
            '<details class="hfattr-text" style="font-size:0.85em;color:#555">'
            '<summary>text</summary><pre style="white-space:pre-wrap">'
            f"{_html.escape(result.text.translate(BIDI), quote=True)}</pre></details>"
        )
    return f'<div class="hfattr">{STYLE}{header}{legend_html(scale)}{body}{text}</div>'


def html_body(result: "Result", scale: float, *, values: bool = False) -> str:
    """The view of ``result`` alone (no header, legend or style block), on the colour range ``scale``."""
    if result.scores.dim() == 1:
        return _tokens(result, scale)
    if is_generation(result):
        return _generation(result, scale, values)
    return _grid(result, scale, values)


def _style(value: float, scale: float, muted: bool) -> str:
    style = f"background-color:{score_color(value, scale)};color:{text_color(value, scale)};"
    return style + ("opacity:0.45;font-style:italic;" if muted else "")


def _tokens(result: "Result", scale: float) -> str:
    values, fixed, special = matrix(result)[0], fixed_positions(result), specials(result)
    spans = []
    for i, (tok, v) in enumerate(zip(result.tokens, values)):
        tip = f"{printable(tok)}: {v:+.4g}" + (" (special)" if special[i] else " (fixed)" if fixed[i] else "")
        spans.append(
            f'<span class="hfattr-tok" tabindex="0" data-index="{i}" data-score="{v!r}" '
            f'data-special="{str(special[i]).lower()}" title="{esc(tip)}" data-tip="{esc(tip)}" '
            f'aria-label="{esc(tip)}" style="{_style(v, scale, fixed[i])}padding:1px 3px;margin:1px;'
            f'border-radius:3px;white-space:pre;display:inline-block">{esc(tok)}</span>'
        )
    return (
        '<div class="hfattr-tokens" style="line-height:2;font-family:ui-monospace,monospace;'
        'padding-bottom:1.6em">' + "".join(spans) + "</div>"
    )


def _toggled(table: str, values: bool) -> str:
    """``table`` after a "show values" checkbox (CSS only: the checkbox is the table's sibling)."""
    ident = "hfattr-v" + hashlib.sha1(table.encode("utf-8")).hexdigest()[:12]
    checked = " checked" if values else ""
    return (
        f'<input type="checkbox" class="hfattr-show" id="{ident}"{checked}>'
        f'<label class="hfattr-toggle" for="{ident}"> show values</label>'
        f'<div class="hfattr-scroll">{table}</div>'
    )


def _col_head(j: int, tok: str, muted: bool) -> str:
    return (
        f'<th class="hfattr-col" data-index="{j}" title="{esc(tok)}" scope="col"'
        f"{' style=' + chr(34) + 'opacity:0.5' + chr(34) if muted else ''}>"
        f'<div class="hfattr-colhead">{esc(tok)}</div></th>'
    )


def _cell(r: int, j: int, v: float, scale: float, muted: bool, tip: str) -> str:
    if math.isnan(v):
        return f'<td class="hfattr-empty" data-row="{r}" data-index="{j}"></td>'
    return (
        f'<td class="hfattr-tok" tabindex="0" data-row="{r}" data-index="{j}" data-score="{v!r}" '
        f'title="{esc(tip)}" data-tip="{esc(tip)}" aria-label="{esc(tip)}" style="{_style(v, scale, muted)}">'
        f'<span class="hfattr-val">{_short(v)}</span></td>'
    )


def _short(v: float) -> str:
    s = f"{v:.2g}"
    return s.replace("e+0", "e").replace("e-0", "e-")


def _grid(result: "Result", scale: float, values: bool) -> str:
    rows, fixed = matrix(result), fixed_positions(result)
    labels = row_labels(result)
    head = ['<th class="hfattr-corner"></th>'] + [_col_head(j, t, fixed[j]) for j, t in enumerate(result.tokens)]
    lines = ["<tr>" + "".join(head) + "</tr>"]
    for r, (label, row) in enumerate(zip(labels, rows)):
        cells = [f'<th class="hfattr-row" scope="row" title="{esc(label)}">{esc(label)}</th>']
        for j, v in enumerate(row):
            tip = f"{printable(label)} / {printable(result.tokens[j])}: {v:+.4g}"
            cells.append(_cell(r, j, v, scale, fixed[j], tip))
        lines.append("<tr>" + "".join(cells) + "</tr>")
    return _toggled('<table class="hfattr-grid">' + "".join(lines) + "</table>", values)


def _generation(result: "Result", scale: float, values: bool) -> str:
    """Source tokens down the side, generated tokens across the top (as inseq draws it)."""
    rows, fixed = matrix(result), fixed_positions(result)
    gen = row_labels(result)
    n_prompt = prompt_length(result)
    head = [
        '<th class="hfattr-corner" style="font-size:10px;color:#666;text-align:right;vertical-align:bottom">'
        "source \u2193 / generated \u2192</th>"
    ]
    head += [_col_head(g, tok, False) for g, tok in enumerate(gen)]
    lines = ['<tr class="hfattr-head">' + "".join(head) + "</tr>"]
    for j, tok in enumerate(result.tokens):
        column = [row[j] for row in rows]
        if all(math.isnan(v) for v in column):
            continue  # e.g. the last generated token: no row reads it
        first_gen = j == n_prompt
        cls = ' class="hfattr-first-gen"' if first_gen else ""
        kind = "generated" if j >= n_prompt else "prompt"
        label = (
            f'<th class="hfattr-row" scope="row" data-index="{j}" data-kind="{kind}" title="{esc(tok)} '
            f'({kind})"{" style=" + chr(34) + "font-style:italic" + chr(34) if j >= n_prompt else ""}>'
            f"{esc(tok)}</th>"
        )
        cells = [label]
        for g, v in enumerate(column):
            tip = f"{printable(tok)} \u2192 {printable(gen[g])}: {v:+.4g}"
            cells.append(_cell(g, j, v, scale, fixed[j], tip))
        lines.append(f"<tr{cls}>" + "".join(cells) + "</tr>")
    for k, (name, vals) in enumerate(step_stats(result).items()):
        cls = "hfattr-step hfattr-step-first" if k == 0 else "hfattr-step"
        cells = [f'<th class="hfattr-row" scope="row">{esc(name)}</th>']
        cells += [
            f'<td class="hfattr-stepval" data-row="{g}" data-step="{esc(name)}" '
            f'title="{esc(name)} of {esc(gen[g])}: {esc(fmt_step(name, v))}">{esc(fmt_step(name, v))}</td>'
            for g, v in enumerate(vals)
        ]
        lines.append(f'<tr class="{cls}">' + "".join(cells) + "</tr>")
    return _toggled('<table class="hfattr-grid hfattr-gen">' + "".join(lines) + "</table>", values)


def page(body: str, *, title: str = "hfattr attributions") -> str:
    """A complete HTML document around ``body`` (no external resources)."""
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{_html.escape(title)}</title>\n</head>\n<body>\n{body}\n</body>\n</html>\n"
    )


def save_html(result_or_results: "Result | Iterable[Result]", path: str | Path, **options) -> Path:
    """Write one Result or several as a complete HTML page; returns the path.

    ``options`` (``scale=``, ``values=``) go to :func:`html`.
    """
    from ..result import Result

    if isinstance(result_or_results, Result):
        results = [result_or_results]
    else:
        try:
            results = list(result_or_results)
        except TypeError:
            raise TypeError(
                f"result_or_results must be a Result or an iterable of Results, got {type(result_or_results).__name__}"
            ) from None
        bad = [type(r).__name__ for r in results if not isinstance(r, Result)]
        if bad:
            raise TypeError(f"result_or_results must contain only Results, got {bad[0]}")
    body = '\n<hr style="border:none;border-top:1px solid #ddd">\n'.join(html(r, **options) for r in results)
    path = Path(path)
    path.write_text(page(body), encoding="utf-8")
    return path
