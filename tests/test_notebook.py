"""Execute notebooks/quickstart.ipynb end to end with nbclient.

The notebook runs in a temporary working directory (the files it saves land there, not in the
repository) with ``MPLBACKEND=Agg``; it must run without errors, show HTML heatmaps and write its
JSON result, PNG figure and HTML report.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK = REPO / "notebooks" / "quickstart.ipynb"


def test_committed_notebook_has_no_outputs():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    assert nb.metadata.get("kernelspec", {}).get("name") == "python3"
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code, "the notebook has no code cells"
    assert all(c.outputs == [] and c.execution_count is None for c in code), (
        "clear the notebook's outputs before committing"
    )


@pytest.fixture(scope="module")
def executed(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("notebook")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    saved = {k: os.environ.get(k) for k in ("MPLBACKEND", "PYTHONPATH")}
    os.environ["MPLBACKEND"] = "Agg"  # the kernel inherits this environment
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), saved["PYTHONPATH"]) if p)
    try:
        client = nbclient.NotebookClient(
            nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(workdir)}}
        )
        client.execute()  # raises CellExecutionError on the first failing cell
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    return nb, workdir


def _outputs(nb):
    return [out for cell in nb.cells if cell.cell_type == "code" for out in cell.outputs]


def _stdout(nb) -> str:
    return "".join(
        out.get("text", "") for out in _outputs(nb) if out.output_type == "stream" and out.get("name") == "stdout"
    )


def test_notebook_runs_without_errors(executed):
    nb, _ = executed
    errors = [out for out in _outputs(nb) if out.output_type == "error"]
    assert not errors, f"cell errors: {[(e.ename, e.evalue) for e in errors]}"
    assert "round-trips exactly" in _stdout(nb)
    assert all(c.execution_count is not None for c in nb.cells if c.cell_type == "code")


def test_notebook_shows_html_for_every_method(executed):
    nb, _ = executed
    htmls = [
        out["data"]["text/html"]
        for out in _outputs(nb)
        if out.output_type in ("display_data", "execute_result") and "text/html" in out.get("data", {})
    ]
    heatmaps = [h for h in htmls if 'class="hfattr"' in h and "hfattr-tok" in h]
    assert heatmaps, "no hfattr HTML output"
    import hfattr

    stdout = _stdout(nb)
    for method in hfattr.list_methods():  # a heatmap per method, or a message saying why not
        shown = any(f"method: {method} " in h for h in heatmaps)
        assert shown or f"skipping {method}:" in stdout, f"no HTML shown for {method}"
        if method in ("ablation", "layer_ablation", "neuron_gradient"):
            assert shown, f"no HTML shown for {method}"
    assert any("hfattr-grid" in h and "blocks.1.attention" in h for h in heatmaps)


def test_notebook_writes_its_files(executed):
    _, workdir = executed
    import hfattr

    result = hfattr.Result.load(workdir / "ablation_result.json")
    assert result.method == "ablation" and result.n_tokens > 2
    assert json.loads((workdir / "ablation_result.json").read_text())["format"] == "hfattr.Result"
    png = (workdir / "layer_grid.png").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 1000
    report = (workdir / "report.html").read_text(encoding="utf-8")
    assert report.startswith("<!DOCTYPE html>") and report.count('class="hfattr"') >= 3
    assert not (REPO / "notebooks" / "ablation_result.json").exists()
