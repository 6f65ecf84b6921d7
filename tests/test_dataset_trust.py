"""Dataset runs notice corruption and misuse: shard checksums, truncation, label columns, all-failed
runs, formula-safe CSVs, the stored-dtype allow-list and safetensors-only evaluate loads."""

from __future__ import annotations

import csv
import json
import warnings
from pathlib import Path

import datasets
import pyarrow.parquet as pq
import pytest
import torch

import hfattr
from hfattr.cli import main
from hfattr.dataset import attribute_dataset, load_results
from hfattr.dataset.run import AllRowsFailedError
from hfattr.dataset.storage import csv_cell, list_shards, read_manifest, record_to_result, write_shard
from hfattr.hf.default_model import DEFAULT_MODEL_NAME, load_default_model
from hfattr.testing import save_tiny, tiny

ROOT = Path(__file__).resolve().parents[1]
TEXTS = [
    "the movie was great",
    "a terrible waste of time",
    "fantastic acting",
    "boring",
    "worst app",
    "quite pleasant weekend",
]


@pytest.fixture(scope="module")
def explainer():
    torch.set_num_threads(1)
    model, tok = load_default_model()
    return hfattr.Explainer(model, tok, model_name=DEFAULT_MODEL_NAME)


def _ds(texts=TEXTS, labels=None):
    d = {"text": list(texts)}
    if labels is not None:
        d["label"] = list(labels)
    return datasets.Dataset.from_dict(d)


def test_checksums_recorded_verified_on_load_and_recomputed_on_resume(explainer, tmp_path):
    out = tmp_path / "run"
    attribute_dataset(
        explainer, _ds(), text_column="text", method="ablation", output_dir=out, shard_size=2, progress=False
    )
    manifest = read_manifest(out)
    assert all(len(s["sha256"]) == 64 for s in manifest["shards"]) and len(manifest["shards"]) == 3
    good = load_results(out)
    shard = list_shards(out)[1]
    original = shard.read_bytes()
    # a valid shard of the same run, but with other scores: only the checksum can notice
    table = pq.read_table(shard)
    rows = table.to_pylist()
    rows[0]["scores"] = [v + 1.0 for v in rows[0]["scores"]]
    info = json.loads(table.schema.metadata[b"hfattr"])
    write_shard(shard, rows, info)
    with pytest.raises(ValueError, match="shard-00001.parquet does not match the checksum"):
        load_results(out)
    with pytest.warns(RuntimeWarning, match="shard-00001.parquet does not match the checksum.*recomputed"):
        s = attribute_dataset(explainer, _ds(), text_column="text", method="ablation", output_dir=out, progress=False)
    assert (s.rows_new, s.rows_resumed) == (2, 4)
    assert shard.read_bytes() == original  # recomputed: the same bytes as the first run wrote
    for a, b in zip(load_results(out), good):
        assert torch.equal(a.scores, b.scores)
    # bytes that are not Parquet at all
    shard.write_bytes(b"PAR1 truncated")
    with pytest.raises(ValueError, match="shard-00001.parquet"):
        load_results(out)


def test_truncation_in_dataset_runs(explainer, tmp_path):
    long = " ".join(["great"] * 40)
    ds = _ds([long, "boring"])
    s = attribute_dataset(
        explainer,
        ds,
        text_column="text",
        method="ablation",
        output_dir=tmp_path / "a",
        truncation=True,
        max_length=8,
        progress=False,
    )
    assert s.failures == 0
    res = load_results(tmp_path / "a")
    assert len(res[0].tokens) == 8
    ref = explainer.explain(long, truncation=True, max_length=8)
    torch.testing.assert_close(res[0].scores, ref.scores, atol=1e-5, rtol=0)
    # the CLI flags
    code = main(
        [
            "attribute-dataset",
            "--data",
            str(ROOT / "data/sentiment/test.tsv"),
            "--text-column",
            "text",
            "--output",
            str(tmp_path / "b"),
            "--max-rows",
            "3",
            "--truncation",
            "--max-length",
            "5",
            "--no-progress",
            "--no-corpus-summary",
        ]
    )
    assert code == 0
    assert all(len(r.tokens) <= 5 for r in load_results(tmp_path / "b"))


def test_labels_case_insensitive_and_numeric_strings(explainer, tmp_path):
    labels = ["positive", "NEGATIVE", "Positive", "0", "1", "negative"]
    s = attribute_dataset(
        explainer,
        _ds(labels=labels),
        text_column="text",
        target_column="label",
        method="ablation",
        output_dir=tmp_path / "r",
        progress=False,
    )
    assert s.failures == 0
    got = [r.target["id"] for r in load_results(tmp_path / "r")]
    names = {v.lower(): k for k, v in explainer.model.config.id2label.items()}
    assert got == [names["positive"], names["negative"], names["positive"], 0, 1, names["negative"]]


def test_labels_checked_up_front(explainer, tmp_path):
    with pytest.raises(ValueError, match="none of its first 6 labels is a class of the model"):
        attribute_dataset(
            explainer,
            _ds(labels=["good", "bad"] * 3),
            text_column="text",
            target_column="label",
            method="ablation",
            output_dir=tmp_path / "r",
            progress=False,
        )
    assert not (tmp_path / "r").exists()  # nothing written


def test_shipped_sentiment_data_with_target_column(tmp_path):
    code = main(
        [
            "attribute-dataset",
            "--data",
            str(ROOT / "data/sentiment/test.tsv"),
            "--text-column",
            "text",
            "--target-column",
            "label",
            "--output",
            str(tmp_path / "s"),
            "--max-rows",
            "4",
            "--no-progress",
            "--no-corpus-summary",
        ]
    )
    assert code == 0
    assert read_manifest(tmp_path / "s")["failures"] == 0


def test_api_raises_when_every_row_failed(explainer, tmp_path):
    with pytest.raises(AllRowsFailedError, match="every row failed") as info:
        attribute_dataset(
            explainer,
            _ds(["   ", "", None]),
            text_column="text",
            method="ablation",
            output_dir=tmp_path / "f",
            progress=False,
        )
    assert info.value.summary.failures == 3


def test_csv_cells_never_formulas(explainer, tmp_path):
    for v in ("=1+1", "+cmd", "-x", "@SUM(A1)", "\t1", "\r=2"):
        assert csv_cell(v).startswith("'")
    for v in ("-0.5", "+3", "text", 1.5, None, ""):
        assert csv_cell(v) == v
    from hfattr.dataset import write_corpus_summary

    res = [
        hfattr.Result(
            tokens=["=cmd|' /C calc'!A0", "@SUM(1)", "-2+3", "great"],
            token_ids=[5, 6, 7, 8],
            scores=torch.tensor([0.5, -0.25, 1.0, 2.0]),
            target={"id": 1, "label": "+label"},
        )
    ]

    path, _ = write_corpus_summary(res, csv_path=tmp_path / "c.csv", plot_path=False)
    cells = [c for row in csv.reader(path.open()) for c in row]
    assert not any(c.startswith(("=", "+", "@", "\t", "\r")) for c in cells)
    assert any(c.startswith("'=") for c in cells)


def test_stored_dtype_allow_list(explainer, tmp_path):
    out = tmp_path / "d"
    attribute_dataset(explainer, _ds(TEXTS[:2]), text_column="text", method="ablation", output_dir=out, progress=False)
    row = pq.read_table(list_shards(out)[0]).to_pylist()[0]
    for bad in ("Tensor", "manual_seed", "int64", "__class__"):
        meta = json.loads(row["result_meta"])
        meta["scores_dtype"] = bad
        with pytest.raises(ValueError, match="stored scores dtype"):
            record_to_result({**row, "result_meta": json.dumps(meta)})


def test_evaluate_loads_named_models_from_safetensors_only(tmp_path, capsys):
    model, tok = tiny("bert", num_layers=1, hidden=8, heads=2)
    path = tmp_path / "pickled"
    model.save_pretrained(path)
    tok.save_pretrained(path)
    (path / "model.safetensors").unlink()
    torch.save(model.state_dict(), path / "pytorch_model.bin")  # a pickle-based checkpoint
    assert (path / "pytorch_model.bin").exists() and not (path / "model.safetensors").exists()
    res = hfattr.Explainer(model, tok, model_name=str(path)).explain("a good movie")
    res.save(tmp_path / "r.json")
    code = main(["evaluate", str(tmp_path / "r.json"), "--metrics", "comprehensiveness"])
    assert code == 2
    assert "only from safetensors" in capsys.readouterr().err
    code = main(["evaluate", str(tmp_path / "r.json"), "--metrics", "comprehensiveness", "--allow-unsafe-weights"])
    assert code == 0
    safe = save_tiny("bert", tmp_path / "safe", num_layers=1, hidden=8, heads=2)
    m2, t2 = tiny("bert", num_layers=1, hidden=8, heads=2)
    hfattr.Explainer(m2, t2, model_name=safe).explain("a good movie").save(tmp_path / "s.json")
    assert main(["evaluate", str(tmp_path / "s.json"), "--metrics", "comprehensiveness"]) == 0


def test_truncation_warns_once_per_run(explainer, tmp_path):
    """Many batches of long texts: one TruncationWarning at the end counting every cut text (not one
    per batch); the Results are those of each text truncated alone."""
    from hfattr.hf.text import TruncationWarning

    long = " ".join(["great"] * 40)
    ds = _ds([long, "boring", long + " movie", "fine", long])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        attribute_dataset(
            explainer,
            ds,
            text_column="text",
            method="ablation",
            output_dir=tmp_path / "a",
            truncation=True,
            max_length=8,
            batch_size=1,
            progress=False,
        )
    cut = [w.message for w in caught if isinstance(w.message, TruncationWarning)]
    assert len(cut) == 1, [str(w.message) for w in caught]
    assert (cut[0].count, cut[0].limit) == (3, 8)
    res = load_results(tmp_path / "a")
    assert [len(r.tokens) for r in res] == [8, 3, 8, 3, 8]
