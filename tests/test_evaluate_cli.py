"""``hfattr evaluate``: per-row metrics of dataset runs and Result files, and their means."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest
import torch

from hfattr import evaluate as ev
from hfattr.cli import main
from hfattr.hf.default_model import load_default_model
from hfattr.result import Result

TEXTS = [
    "the movie was great",
    "i hated the ending",
    "the acting was not bad",
    "what a boring and dull film",
    "i loved it",
]
METRICS = ["comprehensiveness", "sufficiency", "log_odds", "aopc_deletion"]


@pytest.fixture(scope="module")
def default(default_explainer):
    return default_explainer


def _means(out: str) -> dict[str, float]:
    got = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] in ev.METRICS:
            got[parts[0]] = float(parts[1])
    return got


def _csv(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def test_result_files(default, tmp_path, capsys):
    results = default.explain(TEXTS[:3], method="ablation")
    paths = []
    for i, r in enumerate(results):
        paths.append(str(r.save(tmp_path / f"r{i}.json")))
    out_csv = tmp_path / "m.csv"
    rc = main(["evaluate", *paths, "--metrics", ",".join(METRICS), "--steps", "5", "--output", str(out_csv)])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    want = ev.faithfulness(default, [Result.load(p) for p in paths], metrics=METRICS, steps=5)
    means = _means(captured.out)
    for m in METRICS:
        assert means[m] == pytest.approx(float(want[m].mean()), abs=5e-5)
    rows = _csv(out_csv)
    assert [int(r["row_id"]) for r in rows] == [0, 1, 2]
    for m in METRICS:
        torch.testing.assert_close(
            torch.tensor([float(r[m]) for r in rows], dtype=torch.float64), want[m], atol=1e-12, rtol=0
        )
    assert all(r["error"] == "" for r in rows)
    assert "3 evaluated, 0 skipped" in captured.out


def test_dataset_run_directory(default, tmp_path, capsys):
    dataset = pytest.importorskip("hfattr.dataset")
    data = tmp_path / "data.csv"
    data.write_text("text\n" + "\n".join(TEXTS) + "\n", encoding="utf-8")
    run = tmp_path / "run"
    dataset.attribute_dataset(default, str(data), text_column="text", method="ablation", output_dir=run, progress=False)
    rc = main(["evaluate", str(run), "--top-k", "2", "--replacement", "mask"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert "warning" not in captured.err  # the same model as the run's (digest)
    results = dataset.load_results(run)
    want = ev.faithfulness(default, results, top_k=2, replacement="mask")
    rows = _csv(run / "faithfulness.csv")
    assert [int(r["row_id"]) for r in rows] == list(range(len(TEXTS)))
    for m in ("comprehensiveness", "sufficiency", "log_odds"):
        torch.testing.assert_close(
            torch.tensor([float(r[m]) for r in rows], dtype=torch.float64), want[m], atol=1e-12, rtol=0
        )
        assert _means(captured.out)[m] == pytest.approx(float(want[m].mean()), abs=5e-5)


def test_other_model_warns(default, tmp_path, capsys):
    dataset = pytest.importorskip("hfattr.dataset")
    data = tmp_path / "data.csv"
    data.write_text("text\n" + "\n".join(TEXTS[:2]) + "\n", encoding="utf-8")
    run = tmp_path / "run"
    dataset.attribute_dataset(default, str(data), text_column="text", method="ablation", output_dir=run, progress=False)
    other = tmp_path / "other"
    model, tok = load_default_model()
    with torch.no_grad():
        model.classifier.bias.add_(1.0)
    model.save_pretrained(other)
    tok.save_pretrained(other)
    rc = main(["evaluate", str(run), "--model", str(other), "--output", str(tmp_path / "x.csv")])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert "differs from the one the run used" in captured.err


def test_unsupported_rows_are_reported(default, tmp_path, capsys):
    good = default.explain(TEXTS[0], method="ablation").save(tmp_path / "good.json")
    grid = default.explain(TEXTS[1], method="layer_ablation").save(tmp_path / "grid.json")
    out_csv = tmp_path / "m.csv"
    rc = main(["evaluate", str(good), str(grid), "--output", str(out_csv)])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert "1 evaluated, 1 skipped" in captured.out
    rows = _csv(out_csv)
    assert rows[0]["error"] == "" and rows[1]["comprehensiveness"] == ""
    assert "rows of scores" in rows[1]["error"]
    assert all(math.isfinite(v) for v in _means(captured.out).values())
    rc = main(["evaluate", str(grid)])
    captured = capsys.readouterr()
    assert rc == 2 and "no row could be evaluated" in captured.err


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--metrics", "accuracy"], "--metrics"),
        (["--steps", "0"], "--steps"),
        (["--replacement", "zero"], "replacement"),
    ],
)
def test_bad_options(default, tmp_path, capsys, argv, message):
    path = default.explain(TEXTS[0]).save(tmp_path / "r.json")
    rc = main(["evaluate", str(path), *argv])
    captured = capsys.readouterr()
    assert rc == 2
    assert message in captured.err and "\n" == captured.err[-1] and captured.err.count("\n") == 1


def test_bad_paths(tmp_path, capsys):
    assert main(["evaluate", str(tmp_path / "missing.json")]) == 2
    assert "no such file" in capsys.readouterr().err
    assert main(["evaluate", str(tmp_path)]) == 2  # a directory without shards
    assert "shard" in capsys.readouterr().err
    assert main(["evaluate", "--top-k", "1.5", str(tmp_path)]) == 2
    capsys.readouterr()
