"""hfattr.views: the shared colour scale, the generation matrix (terminal, HTML, plot), show(), plot layout."""

from __future__ import annotations

import io
import math
import os
import re
import sys
import types

os.environ.setdefault("MPLBACKEND", "Agg")

import pytest
import torch

from browser_helpers import generation_result, grid_result, token_result
from hfattr import Result, viz
from hfattr.views import colors
from hfattr.views.common import display_name, is_generation


def test_robust_scale_leaves_out_special_and_fixed_positions():
    r = token_result()  # [CLS] = 4.0 and [SEP] = -3.0 are special; the largest other |score| is 2.6
    assert colors.robust_scale(r) == 2.6
    masked = Result(
        tokens=["a", "[MASK]", "b"],
        token_ids=[1, 2, 3],
        scores=torch.tensor([0.5, 9.0, -1.5]),
        target={"kind": "masked", "positions": [1], "id": 7},
    )
    assert colors.robust_scale(masked) == 1.5  # the masked target position is fixed
    every = Result(tokens=["[CLS]"], token_ids=[1], scores=torch.tensor([2.0]), special_mask=[True])
    assert colors.robust_scale(every) == 2.0  # all fixed: fall back to every entry
    g = generation_result()
    finite = [abs(v) for row in g.scores.tolist() for v in row if not math.isnan(v)]
    assert colors.robust_scale(g) == max(finite)  # NaN (empty) entries are left out


def test_one_colour_language():
    # red = toward the target in every view: HTML background, ANSI colour, matplotlib colormap
    assert colors.score_color(1.0, 1.0) == "#{:02x}{:02x}{:02x}".format(*colors.POS)
    assert colors.score_color(-1.0, 1.0) == "#{:02x}{:02x}{:02x}".format(*colors.NEG)
    assert colors.ANSI["pos"] == "\x1b[31m" and colors.ANSI["neg"] == "\x1b[34m"  # red / blue
    cmap = colors.colormap()
    assert tuple(round(c * 255) for c in cmap(1.0)[:3]) == colors.POS
    assert tuple(round(c * 255) for c in cmap(0.0)[:3]) == colors.NEG
    assert tuple(round(c * 255) for c in cmap(0.5)[:3]) == (255, 255, 255)
    for view in (viz.html(token_result()), viz.html(grid_result()), viz.html(generation_result())):
        assert view.count('class="hfattr-legend"') == 1
    assert "scale \u00b12.6: red = toward the target" in viz.text_table(token_result(), color=False)


def test_explicit_scale_and_bad_scale():
    r = token_result()
    assert "+10" in viz.html(r, scale=10.0) and "\u00b110" in viz.text_table(r, color=False, scale=10.0)
    with pytest.raises(ValueError, match="scale"):
        viz.html(r, scale=float("nan"))


def test_generation_contract_detection():
    assert is_generation(generation_result())
    assert not is_generation(grid_result()) and not is_generation(token_result())


def test_generation_terminal_matrix():
    r = generation_result()
    out = viz.text_table(r, color=False, width=120)
    lines = out.splitlines()
    head = next(i for i, line in enumerate(lines) if "\u0120Paris" in line and "\u0120city" in line)
    assert lines[head].split() == r.rows  # generated tokens across the top
    body = lines[head + 1 : head + 1 + 12]  # 5 prompt tokens + 7 generated ones (the last is read by no row)
    assert [line.split()[0] for line in body] == r.tokens[:5] + ["*" + t for t in r.tokens[5:12]]
    for j, line in enumerate(body):  # row of source token j: the scores of the rows that read it, then blanks
        readers = [g for g in range(8) if j < 5 + g]
        values = [float(v) for v in line.split()[1:]]
        assert values == pytest.approx([round(r.scores[g, j].item(), 2) for g in readers], abs=0.006)
        assert len(values) == len(readers)
    prob = next(line for line in lines if line.startswith("probability"))
    assert prob.split()[1:] == [f"{p:.2f}" for p in r.extras["step_scores"]["probability"]]
    rank = next(line for line in lines if line.startswith("rank"))
    assert rank.split()[1:] == ["1", "1", "2", "1", "3", "1", "1", "1"]
    coloured = viz.text_table(r, color=True, width=120)
    assert re.sub(r"\x1b\[[0-9;]*m", "", coloured) == out
    narrow = viz.text_table(r, color=False, width=50)  # wraps into blocks of columns
    assert all(len(line) <= 50 for line in narrow.splitlines()[2:])
    assert sum(line.startswith("probability") for line in narrow.splitlines()) > 1


def test_generation_html_matrix():
    r = generation_result()
    out = viz.html(r)
    assert out.count('class="hfattr-empty"') == sum(
        math.isnan(v) for row in r.scores.tolist() for v in row[:-1]
    )  # the last column has no row of its own
    cells = re.findall(r'<td class="hfattr-tok"[^>]*data-row="(\d+)" data-index="(\d+)" data-score="([^"]+)"', out)
    assert len(cells) == sum(not math.isnan(v) for row in r.scores.tolist() for v in row)
    for g, j, v in cells:
        assert float(v) == r.scores[int(g), int(j)].item()
    assert out.count('class="hfattr-stepval"') == 4 * 8
    assert "nan" not in out.lower().replace("hfattr", "")


def test_plot_generation_and_savefig_keeps_labels(tmp_path):
    plt = pytest.importorskip("matplotlib.pyplot")
    r = generation_result()
    ax = r.plot()
    fig = ax.figure
    try:
        image = ax.get_images()[0]
        data = image.get_array()
        assert data.shape == (12, 8)  # source tokens (prompt + generated but the last) x generated tokens
        assert data.mask.sum() == sum(math.isnan(v) for row in r.scores.tolist() for v in row[:-1])
        assert [t.get_text() for t in ax.get_xticklabels()] == r.rows
        assert fig.get_layout_engine() is not None  # constrained layout
        path = tmp_path / "gen.png"
        fig.savefig(path)  # a plain savefig
        fig.canvas.draw()
        box = fig.bbox
        renderer = fig.canvas.get_renderer()
        for text in [ax.title] + ax.get_xticklabels() + ax.get_yticklabels():
            ext = text.get_window_extent(renderer)
            assert ext.x0 >= box.x0 - 1 and ext.x1 <= box.x1 + 1 and ext.y0 >= box.y0 - 1 and ext.y1 <= box.y1 + 1, (
                f"{text.get_text()!r} is cut off"
            )
    finally:
        plt.close(fig)


def test_plot_bars_title_without_paths_and_clipped_specials():
    plt = pytest.importorskip("matplotlib.pyplot")
    r = token_result()  # model_name is a local path; [CLS] (+4) and [SEP] (-3) exceed the others' range
    ax = r.plot()
    try:
        assert "/home/someone" not in ax.get_title() and "default-sentiment" in ax.get_title()
        lo, hi = ax.get_ylim()
        assert hi < 4.0 and lo > -3.0 and hi > 2.6  # specials clipped (and labelled), not squashing the rest
        notes = [t.get_text() for t in ax.texts]
        assert "+4" in notes and "-3" in notes
        assert len(ax.figure.axes) == 2  # the colour bar
    finally:
        plt.close(ax.figure)


def test_display_name():
    assert display_name("gpt2") == "gpt2" and display_name("org/model") == "org/model"
    assert display_name("/home/me/models/run7/checkpoint-500") == "checkpoint-500"
    assert display_name("./models/mine") == "mine" and display_name("C:\\models\\mine") == "mine"


def test_show_in_a_terminal_and_in_a_notebook(monkeypatch):
    r = token_result()
    buf = io.StringIO()
    r.show(file=buf)  # not a tty: no colour
    assert buf.getvalue() == viz.text_table(r, color=False) + "\n"
    buf = io.StringIO()
    r.show(file=buf, color=True, width=60)
    assert buf.getvalue() == viz.text_table(r, color=True, width=60) + "\n"

    shown = []
    display_mod = types.ModuleType("IPython.display")
    display_mod.HTML = lambda s: ("HTML", s)
    display_mod.display = shown.append
    ipython = types.ModuleType("IPython")
    ipython.get_ipython = lambda: types.SimpleNamespace(kernel=object())  # a notebook kernel
    ipython.display = display_mod
    monkeypatch.setitem(sys.modules, "IPython", ipython)
    monkeypatch.setitem(sys.modules, "IPython.display", display_mod)
    buf = io.StringIO()
    r.show(file=buf)
    assert shown == [("HTML", r.to_html())] and buf.getvalue() == ""
    ipython.get_ipython = lambda: types.SimpleNamespace()  # IPython in a terminal: the text view
    r.show(file=buf)
    assert buf.getvalue().startswith("method: ablation")
