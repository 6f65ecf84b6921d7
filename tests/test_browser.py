"""Render a saved HTML report in headless Chromium and check what a reader sees.

The report holds hostile token texts (a ``<script>`` tag, an ``<img onerror>``,
an attribute break-out) next to ordinary tokens with zero and non-zero scores.
Chromium loads it from disk twice:

* ``--dump-dom`` on a copy with one probe script appended; on the ``load``
  event the probe records, on each token element, its rendered text
  (``innerText``), computed background colour and box, and on ``<html>``
  whether any injected code set ``window.__pwned``;
* ``--screenshot`` of the unmodified report, whose pixels inside each token's
  box must be white for zero scores and coloured otherwise.

Skipped when Chromium is not installed (``/usr/bin/chromium`` from Debian's ``chromium``
package, or ``chromium`` on PATH).
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest
import torch

from browser_helpers import CHROMIUM, Dom, chromium_path
from browser_helpers import FLAGS as BASE_FLAGS
from hfattr import Result
from hfattr.viz import save_html

WINDOW = (1200, 900)
FLAGS = [*BASE_FLAGS, f"--window-size={WINDOW[0]},{WINDOW[1]}"]
WHITE = (255, 255, 255)

# Each hostile token would set window.__pwned and an attribute on <html> if it ran.
SCRIPT_TOKEN = "<script>window.__pwned=1;document.documentElement.setAttribute('data-pwned','1')</script>"
IMG_TOKEN = "<img src=x onerror=\"window.__pwned=2;document.documentElement.setAttribute('data-pwned','2')\">"
ATTR_TOKEN = 'x" onmouseover="window.__pwned=3" data-evil="1'
TOKENS = [
    "[CLS]",
    "the",
    SCRIPT_TOKEN,
    "film",
    IMG_TOKEN,
    "caf\u00e9 &amp;",
    ATTR_TOKEN,
    "</span></div>",
    "was",
    "[SEP]",
]
# zeros (including a special token), positives, negatives, one tiny non-zero
SCORES = [0.0, 0.0, 0.8, -0.5, 2.0, 1e-3, -2.0, 0.0, 0.25, 0.3]
SPECIAL = [True] + [False] * 8 + [True]
GRID = [[0.0, 1.0, -1.0, 0.0, 0.5, 0.0, 0.02, -0.3, 0.0, 0.0], [0.7, 0.0, 0.0, -0.04, 0.0, 1.5, 0.0, 0.0, -1.5, 0.2]]

PROBE = """<script id="hfattr-probe">
window.addEventListener('load', function () {
  var root = document.documentElement;
  root.setAttribute('data-probe-pwned', typeof window.__pwned === 'undefined' ? 'absent' : String(window.__pwned));
  var els = document.querySelectorAll('.hfattr-tok, .hfattr-col');
  for (var i = 0; i < els.length; i++) {
    var el = els[i], r = el.getBoundingClientRect();
    el.setAttribute('data-probe-text', el.innerText);
    el.setAttribute('data-probe-bg', getComputedStyle(el).backgroundColor);
    el.setAttribute('data-probe-rect', [r.left, r.top, r.width, r.height].join(','));
  }
  root.setAttribute('data-probe-done', String(els.length));
});
</script>"""


def _result_1d() -> Result:
    return Result(
        tokens=TOKENS,
        token_ids=list(range(len(TOKENS))),
        scores=torch.tensor(SCORES, dtype=torch.float64),
        text=" ".join(TOKENS[1:-1]),
        special_mask=SPECIAL,
        method="ablation",
        target={"label": SCRIPT_TOKEN, "id": 1},
        model_name=IMG_TOKEN,
    )


def _result_2d() -> Result:
    return Result(
        tokens=TOKENS,
        token_ids=list(range(len(TOKENS))),
        scores=torch.tensor(GRID, dtype=torch.float64),
        special_mask=SPECIAL,
        rows=["blocks.0.attention", SCRIPT_TOKEN],
        method="layer_ablation",
    )


# --------------------------------------------------------------------------- chromium
def _chromium(args: list[str], tmp: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "HOME": str(tmp), "DBUS_SESSION_BUS_ADDRESS": "disabled:"}
    cmd = [chromium_path(), *FLAGS, f"--user-data-dir={tmp / 'profile'}", *args]
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=90, env=env)
    except subprocess.TimeoutExpired:
        pytest.fail(f"chromium did not finish within 90 s: {' '.join(cmd)}")


def _skip_if_unusable(tmp: Path) -> None:
    """Skip (with the reason) when chromium cannot render even a trivial page."""
    page = tmp / "smoke.html"
    page.write_text("<!DOCTYPE html><html><body><p>ok</p></body></html>", encoding="utf-8")
    proc = _chromium(["--dump-dom", page.as_uri()], tmp)
    if proc.returncode != 0 or "<p>ok</p>" not in proc.stdout:
        pytest.skip(
            f"chromium installed but cannot render a page here (rc={proc.returncode}): {proc.stderr.strip()[-500:]}"
        )


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    """(report path, parsed probed DOM, screenshot path) for a two-result report."""
    if chromium_path() is None:
        pytest.skip(
            f"chromium not installed: no {CHROMIUM} and no `chromium` on PATH "
            "(install Debian's `chromium` package to run this test)"
        )
    tmp = tmp_path_factory.mktemp("browser")
    report = save_html([_result_1d(), _result_2d()], tmp / "report.html")
    page = report.read_text(encoding="utf-8")
    assert page.count("</body>") == 1
    probed = tmp / "probed.html"
    probed.write_text(page.replace("</body>", PROBE + "\n</body>"), encoding="utf-8")

    proc = _chromium(["--dump-dom", probed.as_uri()], tmp)
    if proc.returncode != 0 or "data-probe-done" not in proc.stdout:
        _skip_if_unusable(tmp)
        pytest.fail(
            f"chromium rendered a trivial page but not the report (rc={proc.returncode}); "
            f"stdout tail: {proc.stdout[-800:]!r}; stderr tail: {proc.stderr[-800:]!r}"
        )
    dom = Dom()
    dom.feed(proc.stdout)
    dom.close()

    shot = tmp / "report.png"
    proc = _chromium([f"--screenshot={shot}", report.as_uri()], tmp)
    assert proc.returncode == 0 and shot.is_file(), f"screenshot failed: {proc.stderr[-800:]}"
    return report, dom, shot


def _rgb(css: str) -> tuple[int, int, int]:
    m = re.fullmatch(r"rgba?\((\d+),\s*(\d+),\s*(\d+)(?:,\s*([\d.]+))?\)", css.strip())
    assert m, f"unexpected CSS colour {css!r}"
    assert m.group(4) in (None, "1"), f"token background is not opaque: {css!r}"
    return int(m.group(1)), int(m.group(2)), int(m.group(3))


def _hex(css_hex: str) -> tuple[int, int, int]:
    h = css_hex.lstrip("#")
    return int(h[0:2], 16), int(h[2:4], 16), int(h[4:6], 16)


def _inline_bg(style: str) -> tuple[int, int, int]:
    m = re.search(r"background-color:\s*(#[0-9a-fA-F]{6})", style)
    assert m, f"no inline background-color in {style!r}"
    return _hex(m.group(1))


def _check_colour(rgb: tuple[int, int, int], score: float, scale: float, where: str) -> None:
    if score == 0.0:
        assert rgb == WHITE, f"{where}: zero score should be white, got {rgb}"
        return
    assert rgb != WHITE, f"{where}: non-zero score {score} is drawn white"
    if abs(score) >= 0.25 * scale:  # clearly coloured: red for positive, blue for negative
        r, _, b = rgb
        assert (r > b) if score > 0 else (b > r), f"{where}: score {score} has colour {rgb}"


# --------------------------------------------------------------------------- tests
def test_no_injected_code_ran(rendered):
    _, dom, _ = rendered
    html_el = next(e for e in dom.elements if e["tag"] == "html")
    assert html_el["attrs"].get("data-probe-pwned") == "absent"
    assert "data-pwned" not in html_el["attrs"]
    scripts = [e for e in dom.elements if e["tag"] == "script"]
    assert [s["attrs"].get("id") for s in scripts] == ["hfattr-probe"], "token text became a <script>"
    assert not [e for e in dom.elements if e["tag"] in ("img", "iframe", "object", "embed")]
    handlers = [(e["tag"], k) for e in dom.elements for k in e["attrs"] if k.startswith("on")]
    assert not handlers, f"event-handler attributes leaked into the DOM: {handlers}"
    assert not [e for e in dom.elements if "data-evil" in e["attrs"]]


def test_every_token_is_shown_as_text(rendered):
    _, dom, _ = rendered
    spans = [e for e in dom.by_class("hfattr-tok") if e["tag"] == "span"]
    assert [s["attrs"]["data-probe-text"] for s in spans] == TOKENS
    assert [s["text"] for s in spans] == TOKENS  # as a text node, not markup
    headers = dom.by_class("hfattr-col")
    assert [h["attrs"]["data-probe-text"] for h in headers] == TOKENS
    for el in spans + headers:
        _, _, w, h = (float(v) for v in el["attrs"]["data-probe-rect"].split(","))
        assert w > 0 and h > 0, f"token {el['text']!r} has an empty box"
    # the header line and the raw text escape the hostile strings too
    header = dom.by_class("hfattr-header")[0]["text"]
    assert SCRIPT_TOKEN in header and IMG_TOKEN in header
    pre = [e for e in dom.elements if e["tag"] == "pre"]
    assert len(pre) == 1 and pre[0]["text"] == " ".join(TOKENS[1:-1])


def test_token_backgrounds_follow_scores(rendered):
    _, dom, _ = rendered
    spans = [e for e in dom.by_class("hfattr-tok") if e["tag"] == "span"]
    cells = [e for e in dom.by_class("hfattr-tok") if e["tag"] == "td"]
    assert len(spans) == len(TOKENS) and len(cells) == len(GRID) * len(TOKENS)
    scale_1d = max(abs(s) for s, sp in zip(SCORES, SPECIAL) if not sp)
    for i, el in enumerate(spans):
        computed = _rgb(el["attrs"]["data-probe-bg"])
        assert computed == _inline_bg(el["attrs"]["style"])
        assert float(el["attrs"]["data-score"]) == SCORES[i]
        _check_colour(computed, SCORES[i], scale_1d, f"token {i} {TOKENS[i]!r}")
    scale_2d = max(abs(v) for row in GRID for v, sp in zip(row, SPECIAL) if not sp)
    for el in cells:
        r, j = int(el["attrs"]["data-row"]), int(el["attrs"]["data-index"])
        computed = _rgb(el["attrs"]["data-probe-bg"])
        assert computed == _inline_bg(el["attrs"]["style"])
        _check_colour(computed, GRID[r][j], scale_2d, f"cell ({r}, {j})")


def test_screenshot_pixels_follow_scores(rendered):
    Image = pytest.importorskip("PIL.Image", reason="Pillow is needed to read the screenshot")
    _, dom, shot = rendered
    with Image.open(shot) as img:
        pixels = img.convert("RGB")
    assert pixels.size == WINDOW
    checked = 0
    for el in dom.by_class("hfattr-tok"):
        left, top, w, h = (float(v) for v in el["attrs"]["data-probe-rect"].split(","))
        if el["tag"] == "span":  # inside the left padding, clear of the glyphs
            x, y = int(left) + 1, int(top + h / 2)
            i = int(el["attrs"]["data-index"])
            score, where = SCORES[i], f"token {i} {TOKENS[i]!r}"
        else:  # empty table cell: its centre
            x, y = int(left + w / 2), int(top + h / 2)
            r, i = int(el["attrs"]["data-row"]), int(el["attrs"]["data-index"])
            score, where = GRID[r][i], f"cell ({r}, {i})"
        if not (0 <= x < WINDOW[0] and 0 <= y < WINDOW[1]):
            continue  # below the fold (the layout keeps everything well inside)
        pixel = pixels.getpixel((x, y))[:3]
        if score == 0.0:
            assert pixel == WHITE, f"{where}: zero score rendered as {pixel}"
        else:
            assert pixel != WHITE, f"{where}: non-zero score {score} rendered white"
            if not SPECIAL[i]:
                assert pixel == _inline_bg(el["attrs"]["style"]), f"{where}: pixel {pixel}"
        checked += 1
    assert checked == len(TOKENS) * (1 + len(GRID)), "some tokens fell outside the screenshot"
