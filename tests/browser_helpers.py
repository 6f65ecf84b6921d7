"""Headless Chromium for the browser-checked view tests and ``scripts/screenshots.py``.

:func:`render` loads a copy of a page with a probe script that records, after ``load``, each marked
element's text, box and background plus any script error, once, for both ``--dump-dom`` and
``--screenshot`` (the probe only sets ``data-`` attributes, so the picture is the page's own).
Sample Results (token heatmap, grid, generation matrix that follows the generation contract) are
built here by hand.
"""

from __future__ import annotations

import math
import os
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import torch

CHROMIUM = "/usr/bin/chromium"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--disable-default-apps",
    "--mute-audio",
    "--hide-scrollbars",
    "--force-device-scale-factor=1",
    "--force-color-profile=srgb",
]

PROBE = """<script id="hfattr-probe">
window.__errors = [];
window.addEventListener('error', function (e) { window.__errors.push(String(e.message)); });
window.addEventListener('load', function () {
  var root = document.documentElement;
  var sel = '.hfattr-tok, .hfattr-col, .hfattr-row, .hfattr-legend, .hfattr-empty, .hfattr-stepval, '
          + '.hfattr-report-row, .hfattr-rank, .hfattr-faith, .hfattr-summary';
  var els = document.querySelectorAll(sel);
  for (var i = 0; i < els.length; i++) {
    var el = els[i], r = el.getBoundingClientRect(), cs = getComputedStyle(el);
    el.setAttribute('data-probe-text', el.innerText);
    el.setAttribute('data-probe-bg', cs.backgroundColor);
    el.setAttribute('data-probe-visible', String(cs.display !== 'none' && r.width > 0 && r.height > 0));
    el.setAttribute('data-probe-rect', [r.left, r.top, r.width, r.height].join(','));
  }
  root.setAttribute('data-probe-errors', JSON.stringify(window.__errors));
  root.setAttribute('data-probe-done', String(els.length));
});
</script>"""


def chromium_path() -> str | None:
    if os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK):
        return CHROMIUM
    return shutil.which("chromium")


def chromium(args: list[str], tmp: Path, window=(1200, 900), timeout: int = 90) -> subprocess.CompletedProcess:
    env = {**os.environ, "HOME": str(tmp), "DBUS_SESSION_BUS_ADDRESS": "disabled:"}
    cmd = [
        chromium_path(),
        *FLAGS,
        f"--window-size={window[0]},{window[1]}",
        f"--user-data-dir={tmp / 'profile'}",
        *args,
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)


class Dom(HTMLParser):
    """Flat list of (tag, attrs, text) for every element of a dumped DOM."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.elements: list[dict] = []
        self._open: list[dict] = []

    def handle_starttag(self, tag, attrs):
        el = {"tag": tag, "attrs": dict(attrs), "text": ""}
        self.elements.append(el)
        if tag not in ("img", "br", "meta", "hr", "input", "link"):
            self._open.append(el)

    def handle_endtag(self, tag):
        while self._open:
            if self._open.pop()["tag"] == tag:
                break

    def handle_data(self, data):
        for el in self._open:
            el["text"] += data

    def by_class(self, cls: str) -> list[dict]:
        return [e for e in self.elements if cls in e["attrs"].get("class", "").split()]

    @property
    def root(self) -> dict:
        return next(e for e in self.elements if e["tag"] == "html")


def rect(el: dict) -> tuple[float, float, float, float]:
    return tuple(float(v) for v in el["attrs"]["data-probe-rect"].split(","))


def overlap(a: tuple, b: tuple) -> bool:
    """Whether two (left, top, width, height) boxes share more than a pixel."""
    return (
        min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]) > 1.0 and min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]) > 1.0
    )


def render(page: Path, tmp: Path, *, window=(1200, 900), shot: Path | None = None) -> tuple[Dom | None, Path, str]:
    """``(probed DOM or None when chromium failed, screenshot path, stderr)``."""
    text = page.read_text(encoding="utf-8")
    probed = tmp / (page.stem + ".probed.html")
    probed.write_text(text.replace("</body>", PROBE + "\n</body>"), encoding="utf-8")
    shot = shot or tmp / (page.stem + ".png")
    proc = chromium(["--dump-dom", f"--screenshot={shot}", probed.as_uri()], tmp, window)
    dom = None
    if proc.returncode == 0 and "data-probe-done" in proc.stdout:
        dom = Dom()
        dom.feed(proc.stdout)
        dom.close()
    return dom, shot, proc.stderr


# --------------------------------------------------------------------------- sample results
def token_result():
    from hfattr import Result

    toks = ["[CLS]", "the", "movie", "was", "wonderful", "but", "the", "ending", "was", "terrible", "[SEP]"]
    scores = [4.0, 0.05, -0.12, 0.02, -1.4, 0.31, -0.04, 0.22, 0.08, 2.6, -3.0]
    return Result(
        tokens=toks,
        token_ids=list(range(len(toks))),
        scores=torch.tensor(scores, dtype=torch.float64),
        text="the movie was wonderful but the ending was terrible",
        special_mask=[t.startswith("[") for t in toks],
        method="ablation",
        target={"id": 0, "label": "NEGATIVE"},
        probability=0.9957,
        model_name="/home/someone/models/default-sentiment",
    )


def grid_result():
    from hfattr import Result

    toks = ["[CLS]", "the", "movie", "was", "wonderful", "but", "the", "ending", "was", "terrible", "[SEP]"]
    sites = [f"blocks.{i}.{part}" for i in range(4) for part in ("attention", "mlp")]
    g = torch.Generator().manual_seed(0)
    scores = torch.randn(len(sites), len(toks), generator=g, dtype=torch.float64) * 0.3
    scores[:, 9] += torch.linspace(0.2, 1.6, len(sites), dtype=torch.float64)
    scores[:, 4] -= torch.linspace(0.1, 0.9, len(sites), dtype=torch.float64)
    return Result(
        tokens=toks,
        token_ids=list(range(len(toks))),
        scores=scores,
        rows=sites,
        special_mask=[t.startswith("[") for t in toks],
        method="layer_ablation",
        target={"id": 0, "label": "NEGATIVE"},
        probability=0.9957,
        model_name="hfattr/default-sentiment",
    )


def generation_result():
    """A generation Result as the contract specifies (illustrative numbers)."""
    from hfattr import Result

    prompt = ["The", "\u0120capital", "\u0120of", "\u0120France", "\u0120is"]
    gen = ["\u0120Paris", ".", "\u0120It", "\u0120is", "\u0120also", "\u0120the", "\u0120largest", "\u0120city"]
    n_p, n_g = len(prompt), len(gen)
    g = torch.Generator().manual_seed(1)
    scores = torch.randn(n_g, n_p + n_g, generator=g, dtype=torch.float64) * 0.4
    scores[0, 3] = 2.4
    scores[0, 1] = 1.3
    scores[2, n_p + 0] = 1.1
    scores[6, 3] = 0.9
    for j in range(n_g):
        scores[j, n_p + j :] = math.nan
    prob = [0.62, 0.41, 0.18, 0.55, 0.07, 0.49, 0.33, 0.71]
    steps = {
        "probability": prob,
        "log_prob": [math.log(p) for p in prob],
        "entropy": [1.9, 2.4, 3.8, 2.0, 4.1, 2.6, 3.0, 1.4],
        "rank": [1, 1, 2, 1, 3, 1, 1, 1],
    }
    return Result(
        tokens=prompt + gen,
        token_ids=list(range(n_p + n_g)),
        scores=scores,
        rows=gen,
        special_mask=[False] * (n_p + n_g),
        method="ablation",
        target={
            "kind": "generation",
            "ids": list(range(n_p, n_p + n_g)),
            "tokens": gen,
            "positions": list(range(n_p - 1, n_p + n_g - 1)),
            "generated_text": " Paris. It is also the largest city",
            "prompt_length": n_p,
            "score": "log_prob",
        },
        probability=prob,
        model_name="gpt2",
        extras={"step_scores": steps},
    )


def nonwhite_fraction(png: Path) -> float:
    from PIL import Image

    with Image.open(png) as img:
        small = img.convert("L").resize((200, 150))
        data = list(small.getdata())
    return sum(1 for v in data if v < 245) / len(data)


def css_rgb(css: str) -> tuple[int, int, int] | None:
    m = re.fullmatch(r"rgba?\((\d+),\s*(\d+),\s*(\d+)(?:,\s*([\d.]+))?\)", css.strip())
    if not m or m.group(4) == "0":
        return None
    return int(m.group(1)), int(m.group(2)), int(m.group(3))
