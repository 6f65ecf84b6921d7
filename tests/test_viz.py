"""Tests for hfattr.viz: HTML heatmaps (escaping, colours), save_html, plot, text_table."""

import os
import re

os.environ.setdefault("MPLBACKEND", "Agg")

import pytest
import torch

from hfattr import viz
from hfattr.result import Result

EVIL = "<script>alert(1)</script>"


def make_1d(scores=(0.0, 2.0, -4.0, 1.0, 8.0), tokens=("[CLS]", "good", "bad", "ok", "[SEP]"), **kw):
    n = len(tokens)
    base = dict(
        tokens=list(tokens),
        token_ids=list(range(n)),
        scores=torch.tensor(scores, dtype=torch.float32),
        special_mask=[i in (0, n - 1) for i in range(n)],
        target={"id": 1, "label": "POSITIVE"},
        probability=0.75,
        method="feature_ablation",
    )
    base.update(kw)
    return Result(**base)


def make_2d():
    s = torch.tensor([[1.0, -2.0, 0.0], [0.5, 0.0, -0.25]], dtype=torch.float64)
    return Result(
        tokens=["the", "cat", "$x$"],
        token_ids=[1, 2, 3],
        scores=s,
        rows=["blocks.0.attention", "blocks.0.mlp"],
        method="layer_ablation",
        target={"ids": [7], "tokens": ["sat"]},
        probability=[0.5],
    )


def _spans(fragment):
    """(attributes, inner text) of every element carrying class="hfattr-tok"."""
    return re.findall(r'<(?:span|td) class="hfattr-tok"([^>]*)>(.*?)</(?:span|td)>', fragment)


def _attr(attrs, name):
    return re.search(rf'{name}="([^"]*)"', attrs).group(1)


def _rgb(attrs):
    m = re.search(r"background-color:#([0-9a-f]{6})", attrs)
    h = m.group(1)
    return tuple(int(h[i : i + 2], 16) for i in (0, 2, 4))


# ----------------------------------------------------------------------------- HTML
def test_html_escapes_tokens_text_labels_and_method():
    r = make_1d(
        tokens=("[CLS]", EVIL, "x\"y'z", "&amp;", "[SEP]"),
        text=f"say {EVIL} <img src=x>",
        method='m"><b>',
        target={"id": 0, "label": EVIL},
        model_name=EVIL,
    )
    out = viz.html(r)
    assert "<script" not in out and "<img" not in out and "<b>" not in out
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in out
    assert "&amp;amp;" in out  # the literal token "&amp;" is shown, not interpreted
    inner = [t for _, t in _spans(out)]
    assert inner[1] == "&lt;script&gt;alert(1)&lt;/script&gt;"
    assert inner[2] == "x&quot;y&#x27;z"
    grid = make_2d()
    grid.rows = [EVIL, "ok"]
    grid.tokens[0] = EVIL
    out2 = viz.html(grid)
    assert "<script" not in out2 and out2.count("&lt;script&gt;") >= 2


def test_html_token_spans_scores_and_classes():
    r = make_1d()
    spans = _spans(viz.html(r))
    assert len(spans) == 5
    assert [float(_attr(a, "data-score")) for a, _ in spans] == r.scores.tolist()
    assert [t for _, t in spans] == r.tokens
    assert all(_attr(a, "title") for a, _ in spans)
    assert [_attr(a, "data-special") for a, _ in spans] == ["true", "false", "false", "false", "true"]
    assert "opacity" in spans[0][0] and "opacity" not in spans[1][0]  # specials muted
    assert "feature_ablation" in viz.html(r) and "POSITIVE" in viz.html(r) and "0.7500" in viz.html(r)


def test_html_colours_diverging_scale():
    spans = _spans(viz.html(make_1d()))
    white = (255, 255, 255)
    zero = _rgb(spans[0][0])
    pos, neg, pos_small = _rgb(spans[1][0]), _rgb(spans[2][0]), _rgb(spans[3][0])
    assert zero == white
    assert pos != white and pos[0] > pos[2]  # red-ish for positive
    assert neg != white and neg[2] > neg[0]  # blue-ish for negative
    # normalised by max |score| over non-special tokens (4): -4 is the full blue end
    assert neg == (37, 99, 235)
    # smaller magnitude is closer to white
    assert sum(pos_small) > sum(pos)


def test_score_color_properties():
    assert viz.score_color(0.0, 1.0) == "#ffffff"
    assert viz.score_color(3.0, 0.0) == "#ffffff"
    assert viz.score_color(1e-9, 1.0) != "#ffffff"
    assert viz.score_color(-1e-9, 1.0) != "#ffffff"
    assert viz.score_color(5.0, 1.0) == viz.score_color(1.0, 1.0)  # clamped
    assert viz.score_color(float("nan"), 1.0) == "#bbbbbb"


def test_html_2d_grid():
    r = make_2d()
    out = viz.html(r)
    cells = _spans(out)
    assert len(cells) == 6
    flat = r.scores.reshape(-1).tolist()
    assert [float(_attr(a, "data-score")) for a, _ in cells] == flat
    assert [int(_attr(a, "data-row")) for a, _ in cells] == [0, 0, 0, 1, 1, 1]
    for (a, _), v in zip(cells, flat):
        assert (_rgb(a) == (255, 255, 255)) == (v == 0.0)
    assert "blocks.0.attention" in out and "blocks.0.mlp" in out and "$x$" in out
    assert out.index("blocks.0.attention") < out.index("blocks.0.mlp")


def test_save_html_one_and_many(tmp_path):
    a, b = make_1d(), make_2d()
    p = viz.save_html(a, tmp_path / "one.html")
    page = p.read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    assert viz.html(a) in page
    page2 = viz.save_html([a, b], tmp_path / "two.html").read_text(encoding="utf-8")
    assert viz.html(a) in page2 and viz.html(b) in page2
    with pytest.raises(TypeError, match="result_or_results"):
        viz.save_html([a, "nope"], tmp_path / "bad.html")
    with pytest.raises(TypeError, match="result_or_results"):
        viz.save_html(3, tmp_path / "bad.html")


# ----------------------------------------------------------------------------- matplotlib
def test_plot_1d_bars():
    plt = pytest.importorskip("matplotlib.pyplot")
    r = make_1d(tokens=("[CLS]", "$5", "a$b$c", "ok", "[SEP]"))
    ax = r.plot()
    try:
        heights = [p.get_height() for p in ax.patches]
        assert heights == pytest.approx(r.scores.tolist(), abs=0)
        labels = [t.get_text() for t in ax.get_xticklabels()]
        assert labels == ["[CLS]", r"\$5", r"a\$b\$c", "ok", "[SEP]"]
        ax.figure.canvas.draw()  # renders without mathtext errors
    finally:
        plt.close(ax.figure)


def test_plot_2d_heatmap_and_given_axes():
    plt = pytest.importorskip("matplotlib.pyplot")
    fig, given = plt.subplots()
    try:
        r = make_2d()
        ax = viz.plot(r, ax=given)
        assert ax is given
        image = ax.get_images()[0]
        assert torch.equal(torch.as_tensor(image.get_array().data), r.scores)
        assert image.get_clim() == (-2.0, 2.0)
        assert [t.get_text() for t in ax.get_yticklabels()] == r.rows
        assert len(ax.get_xticklabels()) == 3
        fig.canvas.draw()
    finally:
        plt.close(fig)


# ----------------------------------------------------------------------------- terminal
def test_text_table_tokens_and_bars():
    r = make_1d()
    out = viz.text_table(r, color=False, width=60)
    assert "\x1b" not in out
    for tok in r.tokens:
        assert tok in out
    assert out.splitlines()[1] == "scale \u00b14: red = toward the target, blue = away from it"
    lines = {line.split()[1]: line for line in out.splitlines()[3:]}
    bars = {tok: line.count("\u2588") for tok, line in lines.items()}
    assert bars["[CLS]"] == 0
    full = bars["bad"]  # |-4| is the largest non-special score: a full-width bar
    assert full >= 10
    assert bars["good"] == round(full * 2 / 4) and bars["ok"] == round(full * 1 / 4)
    assert bars["[SEP]"] == bars["bad"]  # special above the scale is clamped
    assert all(len(line) <= 60 for line in out.splitlines()[1:])


def test_text_table_colors():
    r = make_1d()
    out = viz.text_table(r, color=True, width=80)
    assert "\x1b[31m+2.0000" in out and "\x1b[34m-4.0000" in out and "\x1b[0m" in out  # red toward, blue away
    plain = re.sub(r"\x1b\[[0-9;]*m", "", out)
    assert plain == viz.text_table(r, color=False, width=80)


def test_text_table_control_chars_in_tokens_are_shown_escaped():
    r = make_1d(tokens=("[CLS]", "\x1b[31mred", "new\nline", "ok", "[SEP]"))
    out = viz.text_table(r, color=False, width=80)
    assert "\x1b" not in out and "\\x1b[31mred" in out and "new\\nline" in out
    assert len(out.splitlines()) == 3 + 5


def test_text_table_2d_grid_and_wrapping():
    r = make_2d()
    out = viz.text_table(r, color=False, width=100)
    assert "\x1b" not in out
    for s in r.tokens + r.rows:
        assert s in out
    assert "-2.00" in out and "+0.50" in out
    many = Result(
        tokens=[f"t{i}" for i in range(30)],
        token_ids=list(range(30)),
        scores=torch.linspace(-1, 1, 60).reshape(2, 30),
        rows=["r0", "r1"],
    )
    narrow = viz.text_table(many, color=False, width=40)
    assert all(len(line) <= 40 for line in narrow.splitlines()[1:])
    for i in range(30):
        assert re.search(rf"\bt{i}\b", narrow)
    assert sum(line.startswith("r0 ") for line in narrow.splitlines()) > 1  # wrapped into blocks
