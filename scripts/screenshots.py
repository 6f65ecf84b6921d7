"""Render the screenshots in docs/img/ (README): every HTML view in headless Chromium, plus plots.

    PYTHONPATH=. python scripts/screenshots.py

The token heatmap, grid and report come from the embedded sentiment model; the generation matrix
is a Result built by hand to the generation contract (illustrative numbers).
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("MPLBACKEND", "Agg")
ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import datasets  # noqa: E402

import hfattr  # noqa: E402
from browser_helpers import generation_result, render  # noqa: E402
from hfattr.hf.default_model import DEFAULT_MODEL_NAME, load_default_model  # noqa: E402
from hfattr.viz import save_html  # noqa: E402
from hfattr.views.report import write_report  # noqa: E402

OUT = ROOT / "docs" / "img"
TEXT = "the movie was wonderful but the ending was terrible"


def _crop(png: Path) -> None:
    """Trim the white margin below and right of the content (keeps 16 px)."""
    from PIL import Image, ImageChops

    with Image.open(png) as img:
        rgb = img.convert("RGB")
    box = ImageChops.difference(rgb, Image.new("RGB", rgb.size, (255, 255, 255))).getbbox()
    if box:
        rgb.crop((0, 0, min(rgb.width, box[2] + 16), min(rgb.height, box[3] + 16))).save(png, optimize=True)


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    model, tok = load_default_model()
    explainer = hfattr.Explainer(model, tok, model_name=DEFAULT_MODEL_NAME)
    views = {
        "heatmap": (explainer.explain(TEXT, method="ablation"), (1000, 300)),
        "grid": (explainer.explain(TEXT, method="layer_ablation", sites="attention"), (1000, 420)),
        "generation": (generation_result(), (1000, 640)),
    }
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for name, (result, window) in views.items():
            page = save_html(result, tmp / f"{name}.html")
            render(page, tmp, window=window, shot=OUT / f"{name}.png")
            _crop(OUT / f"{name}.png")
            fig = result.plot().figure
            fig.savefig(OUT / f"plot_{name}.png", dpi=90)
        texts = [line.split("\t")[0] for line in (ROOT / "data/sentiment/test.tsv").read_text().splitlines()[1:61]]
        run = tmp / "run"
        hfattr.attribute_dataset(
            explainer,
            datasets.Dataset.from_dict({"text": texts}),
            text_column="text",
            method="ablation",
            output_dir=run,
            progress=False,
        )
        page = write_report(run, tmp / "report.html", page_size=8)
        render(page, tmp, window=(1100, 1500), shot=OUT / "report.png")
        _crop(OUT / "report.png")
    for png in sorted(OUT.glob("*.png")):
        print(png.relative_to(ROOT))


if __name__ == "__main__":
    main()
