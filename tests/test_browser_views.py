"""Every HTML view rendered in headless Chromium: what a reader sees.

For the token heatmap, the sites × tokens grid, the generation matrix (a Result built by hand to the
generation contract) and the dataset-run report, the rendered page must show a legend with its
range, column and row headers that do not overlap, a screenshot that is not blank, and no script
error; focusing a token shows its score. Skipped when Chromium is not installed.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from browser_helpers import (
    chromium_path,
    css_rgb,
    generation_result,
    grid_result,
    nonwhite_fraction,
    overlap,
    rect,
    render,
    token_result,
)
from hfattr.viz import save_html

FOCUS_PROBE = """<script>
window.addEventListener('load', function () {
  var el = document.querySelector('.hfattr-tok[tabindex]');
  el.focus();
  document.documentElement.setAttribute('data-focus-tip', getComputedStyle(el, '::after').content);
  document.documentElement.setAttribute('data-focus-active', String(document.activeElement === el));
});
</script>"""


@pytest.fixture(scope="module")
def tmp(tmp_path_factory):
    if chromium_path() is None:
        pytest.skip("chromium not installed (/usr/bin/chromium or `chromium` on PATH)")
    return tmp_path_factory.mktemp("views")


def _show(page: Path, tmp: Path, window=(1200, 900), extra: str = ""):
    if extra:
        text = page.read_text(encoding="utf-8")
        page.write_text(text.replace("</body>", extra + "\n</body>"), encoding="utf-8")
    dom, shot, err = render(page, tmp, window=window)
    assert dom is not None, f"chromium did not render {page.name}: {err[-800:]}"
    assert json.loads(dom.root["attrs"]["data-probe-errors"]) == [], "script errors on the page"
    assert shot.is_file() and nonwhite_fraction(shot) > 0.02, "the screenshot is blank"
    return dom


def _legend(dom, scale: float) -> None:
    legends = dom.by_class("hfattr-legend")
    assert legends, "no legend"
    for el in legends:
        assert el["attrs"]["data-probe-visible"] == "true"
        text = el["attrs"]["data-probe-text"]
        assert f"+{scale:.3g}" in text and f"\u2212{scale:.3g}" in text and "toward the target" in text


def _no_overlap(els: list[dict], what: str) -> None:
    boxes = [
        (e["attrs"].get("data-probe-text", ""), rect(e)) for e in els if e["attrs"]["data-probe-visible"] == "true"
    ]
    for i in range(len(boxes)):
        for j in range(i + 1, len(boxes)):
            assert not overlap(boxes[i][1], boxes[j][1]), f"{what}: {boxes[i][0]!r} overlaps {boxes[j][0]!r}"


def _headers_apart(dom) -> None:
    cols, rows = dom.by_class("hfattr-col"), dom.by_class("hfattr-row")
    assert cols and rows
    _no_overlap(cols, "column headers")
    _no_overlap(rows, "row headers")
    _no_overlap(cols + rows, "column vs row headers")
    for el in dom.by_class("hfattr-tok"):  # legible cells
        _, _, w, h = rect(el)
        assert w >= 20 and h >= 16, f"cell {el['attrs'].get('data-index')} is only {w}x{h} px"


def test_token_heatmap(tmp):
    r = token_result()
    dom = _show(save_html(r, tmp / "tokens.html"), tmp, extra=FOCUS_PROBE)
    _legend(dom, 2.6)  # the robust range leaves out [CLS] (4.0) and [SEP] (-3.0)
    spans = dom.by_class("hfattr-tok")
    assert [s["attrs"]["data-probe-text"] for s in spans] == r.tokens
    _no_overlap(spans, "tokens")
    assert all(s["attrs"]["tabindex"] == "0" for s in spans)
    assert dom.root["attrs"]["data-focus-active"] == "true"
    assert dom.root["attrs"]["data-focus-tip"] == '"[CLS]: +4 (special)"'  # the score shows on keyboard focus


def test_grid(tmp):
    r = grid_result()
    dom = _show(save_html(r, tmp / "grid.html"), tmp)
    scale = max(abs(v) for row in r.scores.tolist() for v, s in zip(row, r.special_mask) if not s)
    _legend(dom, scale)
    _headers_apart(dom)
    assert [c["attrs"]["data-probe-text"] for c in dom.by_class("hfattr-col")] == r.tokens
    assert [c["attrs"]["data-probe-text"] for c in dom.by_class("hfattr-row")] == r.rows
    assert all(not c["attrs"]["data-probe-text"].strip() for c in dom.by_class("hfattr-tok"))  # values on request


def test_grid_values_on_request(tmp):
    r = grid_result()
    dom = _show(save_html(r, tmp / "grid_values.html", values=True), tmp)
    cells = dom.by_class("hfattr-tok")
    assert all(c["attrs"]["data-probe-text"].strip() for c in cells), "values requested but not shown"
    _headers_apart(dom)


def test_generation_matrix(tmp):
    r = generation_result()
    dom = _show(save_html(r, tmp / "generation.html"), tmp)
    _legend(dom, 2.4)
    _headers_apart(dom)
    n_p, n_g = 5, 8
    # source rows: the prompt and every generated token but the last (no row reads it)
    assert [e["attrs"]["data-probe-text"] for e in dom.by_class("hfattr-row")][: n_p + n_g - 1] == r.tokens[:-1]
    assert [e["attrs"]["data-probe-text"] for e in dom.by_class("hfattr-col")] == r.rows
    cells = dom.by_class("hfattr-tok")
    empty = dom.by_class("hfattr-empty")
    nan = sum(math.isnan(v) for row in r.scores.tolist() for v in row[: n_p + n_g - 1])
    assert len(empty) == nan and len(cells) == n_g * (n_p + n_g - 1) - nan
    for e in empty:  # blank: white, no text
        assert css_rgb(e["attrs"]["data-probe-bg"]) in (None, (255, 255, 255)) and not e["attrs"]["data-probe-text"]
    for c in cells:  # row g = generated token, column j = source token
        g, j = int(c["attrs"]["data-row"]), int(c["attrs"]["data-index"])
        assert j < n_p + g and float(c["attrs"]["data-score"]) == r.scores[g, j].item()
    steps = dom.by_class("hfattr-stepval")
    assert len(steps) == 4 * n_g
    probs = [s["attrs"]["data-probe-text"] for s in steps if s["attrs"]["data-step"] == "probability"]
    assert probs == [f"{p:.2f}" for p in r.extras["step_scores"]["probability"]]


@pytest.fixture(scope="module")
def run_dir(tmp):
    import datasets

    import hfattr
    from hfattr.hf.default_model import DEFAULT_MODEL_NAME, load_default_model

    model, tok = load_default_model()
    explainer = hfattr.Explainer(model, tok, model_name=DEFAULT_MODEL_NAME)
    texts = [
        "the movie was great",
        "a dull and boring film",
        "the food was lovely",
        "awful service",
        "i liked the ending",
        "the plot was terrible",
    ] * 6
    out = tmp / "run"
    hfattr.attribute_dataset(
        explainer,
        datasets.Dataset.from_dict({"text": texts}),
        text_column="text",
        method="ablation",
        output_dir=out,
        batch_size=16,
        progress=False,
    )
    (out / "faithfulness.csv").write_text(
        "row_id,comprehensiveness,sufficiency,error\n"
        + "".join(f"{i},0.5,{0.1 if i % 2 else 0.3},\n" for i in range(35))
        + "35,,,no result\n",
        encoding="utf-8",
    )
    return out, texts


SEARCH_PROBE = """<script>
window.addEventListener('load', function () {
  var visible = function () {
    return Array.prototype.filter.call(document.querySelectorAll('.hfattr-report-row'),
                                       function (r) { return !r.hidden && r.offsetHeight > 0; });
  };
  var root = document.documentElement;
  root.setAttribute('data-page1', String(visible().length));
  document.getElementById('hfattr-next').click();
  root.setAttribute('data-page2-first', visible()[0].getAttribute('data-row-id'));
  var q = document.getElementById('hfattr-search');
  q.value = 'BORING';
  q.dispatchEvent(new Event('input'));
  root.setAttribute('data-search', visible().map(function (r) { return r.getAttribute('data-row-id'); }).join(','));
  root.setAttribute('data-info', document.getElementById('hfattr-pageinfo').textContent);
});
</script>"""


def test_dataset_report(tmp, run_dir):
    from hfattr.views.report import write_report

    out, texts = run_dir
    page = write_report(out, tmp / "report.html", page_size=10)
    dom = _show(page, tmp, window=(1200, 1400), extra=SEARCH_PROBE)
    html_text = page.read_text(encoding="utf-8")
    assert "http://" not in html_text and "https://" not in html_text and "src=" not in html_text  # self-contained
    legend = dom.by_class("hfattr-legend")
    assert legend and legend[0]["attrs"]["data-probe-visible"] == "true"
    summary = dom.by_class("hfattr-summary")[0]["attrs"]["data-probe-text"]
    assert "36 of 36 done, 0 failed" in summary and "hfattr/default-sentiment" in summary
    ranks = dom.by_class("hfattr-rank")
    assert ranks and "NEGATIVE" + ": most toward the label" in " ".join(r["attrs"]["data-probe-text"] for r in ranks)
    assert "boring\t6" in " ".join(r["attrs"]["data-probe-text"] for r in ranks)  # token and its count
    faith = dom.by_class("hfattr-faith")[0]["attrs"]["data-probe-text"]
    suff = (18 * 0.3 + 17 * 0.1) / 35  # rows 0..34 (row 35 was skipped)
    assert "comprehensiveness\t+0.5000" in faith and f"sufficiency\t{suff:+.4f}" in faith
    root = dom.root["attrs"]
    assert root["data-page1"] == "10" and root["data-page2-first"] == "10"  # paged
    want = [str(i) for i, t in enumerate(texts) if "boring" in t]
    assert root["data-search"] == ",".join(want) and root["data-info"].endswith(f"{len(want)} of 36 rows")
    rows = dom.by_class("hfattr-report-row")
    assert len(rows) == 36
    _no_overlap([r for r in rows if r["attrs"]["data-probe-visible"] == "true"], "report rows")
