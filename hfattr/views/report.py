"""The dataset-run report: one self-contained HTML page (``hfattr report RUN_DIR``).

It holds the run summary, the corpus token rankings per label (with counts), the faithfulness
means when ``hfattr evaluate`` wrote ``faithfulness.csv``, and every record as a heatmap, paged and
searchable by text with a small inline script (without script every record is shown). Nothing is
loaded from the network. All records share one colour range: the 99th percentile of ``|attribution|`` over
the non-fixed entries, stated in the legend.
"""

from __future__ import annotations

import csv
import json
import math
import os
from pathlib import Path
from typing import Any

from .colors import NEG, POS, fixed_positions, legend_html
from .common import display_name, fmt_target, is_generation
from .html import STYLE, esc, html_body, page

__all__ = ["build_report", "write_report", "DEFAULT_MAX_ROWS", "FAITHFULNESS_FILE"]

DEFAULT_MAX_ROWS = 1000
FAITHFULNESS_FILE = "faithfulness.csv"
_HEX_POS = "#{:02x}{:02x}{:02x}".format(*POS)
_HEX_NEG = "#{:02x}{:02x}{:02x}".format(*NEG)

_REPORT_STYLE = """<style>
body{margin:16px 24px;font-family:system-ui,-apple-system,'Segoe UI',sans-serif;color:#111}
h1{font-size:1.4em;margin:0 0 8px} h2{font-size:1.1em;margin:22px 0 6px;border-bottom:1px solid #ddd}
table.hfattr-table{border-collapse:collapse;font-size:13px}
table.hfattr-table th,table.hfattr-table td{padding:2px 10px 2px 0;text-align:left;vertical-align:top}
table.hfattr-table td.num{text-align:right;font-variant-numeric:tabular-nums}
.hfattr-ranks{display:flex;flex-wrap:wrap;gap:12px 36px}
.hfattr-rank h3{font-size:0.95em;margin:6px 0}
.hfattr-bar{display:inline-block;height:10px;vertical-align:middle}
.hfattr-controls{position:sticky;top:0;background:#fff;padding:6px 0;z-index:20;border-bottom:1px solid #eee;
 display:flex;gap:10px;align-items:center;flex-wrap:wrap;font-size:13px}
.hfattr-controls input[type=search]{width:22em;padding:3px 6px}
.hfattr-report-row{border-bottom:1px solid #eee;padding:4px 0 2px}
.hfattr-report-row .hfattr-meta{font-size:12px;color:#555}
.hfattr-report-row .hfattr-tokens{padding-bottom:0.4em !important}
.hfattr-failed{color:#a33;font-size:13px}
.hfattr-note{font-size:12px;color:#555}
</style>"""

_SCRIPT = """<script>
(function () {
  var rows = Array.prototype.slice.call(document.querySelectorAll('.hfattr-report-row'));
  var q = document.getElementById('hfattr-search'), lab = document.getElementById('hfattr-label');
  var info = document.getElementById('hfattr-pageinfo'), size = %d, page = 0, shown = rows;
  function apply() {
    var s = q.value.toLowerCase(), l = lab.value;
    shown = rows.filter(function (r) {
      return (!s || r.getAttribute('data-search').indexOf(s) >= 0) && (!l || r.getAttribute('data-label') === l);
    });
    var pages = Math.max(1, Math.ceil(shown.length / size));
    if (page >= pages) page = pages - 1;
    rows.forEach(function (r) { r.hidden = true; });
    shown.slice(page * size, (page + 1) * size).forEach(function (r) { r.hidden = false; });
    info.textContent = 'page ' + (page + 1) + ' of ' + pages + ' \\u00b7 ' + shown.length + ' of '
      + rows.length + ' rows';
    document.getElementById('hfattr-prev').disabled = page === 0;
    document.getElementById('hfattr-next').disabled = page >= pages - 1;
  }
  q.addEventListener('input', function () { page = 0; apply(); });
  lab.addEventListener('change', function () { page = 0; apply(); });
  document.getElementById('hfattr-prev').addEventListener('click', function () { page--; apply(); });
  document.getElementById('hfattr-next').addEventListener('click', function () { page++; apply(); });
  apply();
})();
</script>"""


# --------------------------------------------------------------------------- data
def _bar(items: list, desc: str, progress: bool) -> Any:
    if not progress or len(items) <= 200:
        return items
    from tqdm.auto import tqdm

    return tqdm(items, desc=desc, unit="rows", leave=False)


def _load(run_dir: Path, max_rows: int, progress: bool = False) -> tuple[list[dict], int]:
    """``(records, total)``: each record a dict with row_id, status, error, text, result (or None)."""
    from ..dataset.storage import read_records, record_to_result

    records: list[dict] = []
    total = 0
    for record in _bar(list(read_records(run_dir)), "reading rows", progress):
        total += 1
        if len(records) >= max_rows:
            continue
        result = record_to_result(record) if record["status"] == "ok" else None
        records.append(
            {
                "row_id": record["row_id"],
                "status": record["status"],
                "error": record.get("error"),
                "text": record.get("text"),
                "result": result,
                "prediction": (record.get("prediction_label"), record.get("prediction_probability")),
            }
        )
    return records, total


def _shared_scale(results: list[Any]) -> float:
    """99th percentile of |attribution| over the finite non-fixed entries (max of all when few)."""
    vals: list[float] = []
    for r in results:
        fixed = fixed_positions(r)
        attributions = r.scores.detach().cpu().double()
        grid = [attributions.tolist()] if attributions.dim() == 1 else attributions.tolist()
        vals.extend(abs(v) for row in grid for j, v in enumerate(row) if not fixed[j] and math.isfinite(v))
    if not vals:
        return 0.0
    vals.sort()
    return vals[min(len(vals) - 1, int(math.ceil(0.99 * len(vals))) - 1)] if len(vals) >= 100 else vals[-1]


def _faithfulness(run_dir: Path) -> tuple[list[str], dict[str, float], dict[int, dict], int] | None:
    path = run_dir / FAITHFULNESS_FILE
    if not path.is_file():
        return None
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        metrics = [c for c in (reader.fieldnames or []) if c not in ("row_id", "error")]
        per_record: dict[int, dict] = {}
        skipped = 0
        for rec in reader:
            if rec.get("error"):
                skipped += 1
                continue
            try:
                per_record[int(rec["row_id"])] = {m: float(rec[m]) for m in metrics if rec.get(m) not in (None, "")}
            except (KeyError, ValueError):
                skipped += 1
    means = {}
    for m in metrics:
        vals = [v[m] for v in per_record.values() if m in v and math.isfinite(v[m])]
        means[m] = sum(vals) / len(vals) if vals else math.nan
    return metrics, means, per_record, skipped


# --------------------------------------------------------------------------- sections
def _summary(run_dir: Path, manifest: dict, records: list[dict], total: int) -> str:
    last = manifest.get("last_run") or {}
    ident = manifest.get("identity") or {}
    ok = sum(r["status"] == "ok" for r in records)
    target = manifest.get("target") if manifest.get("target") is not None else ident.get("target_column")
    items = [
        ("model", display_name(manifest.get("model", "?"))),
        ("method", manifest.get("method", "?")),
        ("options", json.dumps(manifest.get("options") or {}, sort_keys=True, default=str)),
        (
            "target",
            "the prediction" if target is None else (f"column {target}" if ident.get("target_column") else str(target)),
        ),
        ("data", str((manifest.get("source") or {}).get("data", "?"))),
        (
            "rows",
            f"{manifest.get('rows_done', total)} of {manifest.get('rows_total', total)} done, "
            f"{manifest.get('failures', total - ok)} failed ({manifest.get('status', '?')})",
        ),
        ("tokens", str(sum(s.get("tokens", 0) for s in manifest.get("shards", [])))),
        ("speed", f"{last.get('rows_per_s', 0):.1f} rows/s, {last.get('wall_s', 0):.1f} s (last run)"),
        ("hfattr", str(manifest.get("hfattr_version", "?"))),
    ]
    body = "".join(f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in items)
    return f'<h2>Run</h2><table class="hfattr-table hfattr-summary">{body}</table>'


def _bar_cell(v: float, vmax: float) -> str:
    w = 0 if vmax <= 0 else round(80 * min(abs(v) / vmax, 1.0))
    return (
        f'<td class="num">{v:+.3f}</td><td><span class="hfattr-bar" style="width:{w}px;'
        f'background:{_HEX_POS if v > 0 else _HEX_NEG}"></span></td>'
    )


def _rankings(results: list[Any], min_count: int, top_k: int) -> str:
    from ..dataset.corpus import corpus_summary

    flat = [r for r in results if r.scores.dim() == 1]
    head = "<h2>Tokens ranked by mean score, per label</h2>"
    if not flat:
        return head + (
            '<p class="hfattr-note hfattr-rank">No ranking: this run\'s rows have no single score per '
            "token (a grid or a generation matrix per row).</p>"
        )
    summary = corpus_summary(flat, min_count=min_count)
    note = (
        f'<p class="hfattr-note">Mean attribution of each token over the {len(flat)} rows shown, per explained '
        f"label; tokens seen at least {min_count} time{'s' if min_count > 1 else ''}, special tokens left out. "
        f"Count = occurrences.</p>"
    )
    blocks = []
    for label in sorted({r["label"] for r in summary}):
        pair = []
        group = [r for r in summary if r["label"] == label]
        toward, away = group[:top_k], [r for r in reversed(group) if r["mean_score"] < 0][:top_k]
        vmax = max((abs(r["mean_score"]) for r in group), default=0.0)
        for title, part in (("toward", toward), ("away from", away)):
            lines = "".join(
                f'<tr><td>{esc(r["token"])}</td><td class="num">{r["count"]}</td>'
                f"{_bar_cell(r['mean_score'], vmax)}</tr>"
                for r in part
            )
            pair.append(
                f'<div class="hfattr-rank"><h3>{esc(label)}: most {title} the label</h3>'
                f'<table class="hfattr-table"><tr><th>token</th><th>count</th><th>mean</th><th></th></tr>'
                f"{lines or '<tr><td colspan=4>none</td></tr>'}</table></div>"
            )
        blocks.append('<div class="hfattr-ranks">' + "".join(pair) + "</div>")
    if not blocks:
        return head + note + f'<p class="hfattr-note hfattr-rank">No token was seen {min_count} times.</p>'
    return head + note + "".join(blocks)


def _faith_section(faith) -> str:
    if faith is None:
        return ""
    metrics, means, per_record, skipped = faith
    cells = "".join(f'<tr><th>{esc(m)}</th><td class="num">{means[m]:+.4f}</td></tr>' for m in metrics)
    return (
        f'<h2>Faithfulness</h2><p class="hfattr-note">Means over {len(per_record)} evaluated rows '
        f"({skipped} skipped), from {FAITHFULNESS_FILE} (<code>hfattr evaluate</code>).</p>"
        f'<table class="hfattr-table hfattr-faith">{cells}</table>'
    )


def _label(result: Any) -> str:
    t = result.target or {}
    if is_generation(result):
        return t.get("kind", "generation")
    return str(t.get("label", t.get("id", "all")))


def _record_html(record: dict, scale: float, faith_record: dict | None) -> tuple[str, str]:
    rid, result = record["row_id"], record["result"]
    text = record["text"] or ""
    if result is None:
        body = f'<div class="hfattr-failed">failed: {esc(record["error"] or "?")}</div>'
        label, meta = "(failed)", f"row {rid}"
    else:
        label = _label(result)
        bits = [f"row {rid}", f"target: {fmt_target(result.target)}"]
        if isinstance(result.probability, (int, float)):
            bits.append(f"p = {result.probability:.3f}")
        pred, pprob = record["prediction"]
        if pred is not None:
            bits.append(f"predicted: {pred}" + (f" ({pprob:.3f})" if isinstance(pprob, float) else ""))
        if faith_record:
            bits += [f"{m} {v:+.3f}" for m, v in faith_record.items()]
        meta = " \u00b7 ".join(bits)
        body = html_body(result, scale)
    search = esc(f"#{rid} {text}".lower())
    return label, (
        f'<div class="hfattr-report-row" data-row-id="{rid}" data-label="{esc(label)}" '
        f'data-search="{search}"><div class="hfattr-meta">{esc(meta)}</div>{body}</div>'
    )


# --------------------------------------------------------------------------- page
def build_report(
    run_dir: str | os.PathLike,
    *,
    min_count: int | None = None,
    top_k: int = 15,
    page_size: int = 25,
    max_rows: int = DEFAULT_MAX_ROWS,
    progress: bool = False,
) -> str:
    """The report page of a dataset run as an HTML string (see the module docstring).

    ``min_count`` (default: 3, or 1 for runs of fewer than 30 successful records) filters the
    rankings; ``max_rows`` caps the records drawn (the rankings use the same records).
    """
    from ..dataset.storage import read_manifest

    for name, v, lo in (("top_k", top_k, 1), ("page_size", page_size, 1), ("max_rows", max_rows, 1)):
        if isinstance(v, bool) or not isinstance(v, int) or v < lo:
            raise ValueError(f"{name} must be an int >= {lo}, got {v!r}")
    run_dir = Path(run_dir)
    manifest = read_manifest(run_dir) if run_dir.is_dir() else None
    if manifest is None:
        raise FileNotFoundError(
            f"{run_dir} is not a dataset-run directory (no manifest.json); make one with `hfattr attribute-dataset`"
        )
    records, total = _load(run_dir, max_rows, progress)
    results = [r["result"] for r in records if r["result"] is not None]
    if min_count is None:
        min_count = 3 if len(results) >= 30 else 1
    elif isinstance(min_count, bool) or not isinstance(min_count, int) or min_count < 1:
        raise ValueError(f"min_count must be an int >= 1, got {min_count!r}")
    scale = _shared_scale(results)
    faith = _faithfulness(run_dir)
    per_record = faith[2] if faith else {}
    rendered, labels = [], set()
    for record in _bar(records, "drawing rows", progress):
        label, markup = _record_html(record, scale, per_record.get(record["row_id"]))
        labels.add(label)
        rendered.append(markup)
    shown = f"{len(records)} of {total}" if total > len(records) else f"all {total}"
    options = "".join(f'<option value="{esc(lab)}">{esc(lab)}</option>' for lab in sorted(labels))
    controls = (
        f'<div class="hfattr-controls"><input type="search" id="hfattr-search" placeholder="search the texts" '
        f'aria-label="search the texts"><select id="hfattr-label" aria-label="label">'
        f'<option value="">all labels'
        f'</option>{options}</select><button id="hfattr-prev" type="button">\u2190 previous</button>'
        f'<button id="hfattr-next" type="button">next \u2192</button><span id="hfattr-pageinfo"></span></div>'
    )
    body = (
        f'<div class="hfattr">{STYLE}<h1>hfattr report: {esc(run_dir.resolve().name)}</h1>'
        + _summary(run_dir, manifest, records, total)
        + _rankings(results, min_count, top_k)
        + _faith_section(faith)
        + f"<h2>Rows ({shown})</h2>"
        + legend_html(scale)
        + '<p class="hfattr-note">One colour range for every row (the 99th percentile of |score|); '
        "hover or focus a token for its score.</p>"
        + controls
        + '<div id="hfattr-rows">'
        + "".join(rendered)
        + "</div></div>"
        + _SCRIPT % page_size
    )
    return page(_REPORT_STYLE + body, title=f"hfattr report: {run_dir.resolve().name}")


def write_report(run_dir: str | os.PathLike, output: str | os.PathLike | None = None, **options: Any) -> Path:
    """Write :func:`build_report` to ``output`` (default ``RUN_DIR/report.html``); returns the path."""
    from ..dataset.storage import atomic_write_text

    out = Path(output) if output is not None else Path(run_dir) / "report.html"
    atomic_write_text(out, build_report(run_dir, **options))
    return out
