"""attribute_dataset on in-memory Datasets and local files: output, reading back, resume, errors.

The oracle for every stored row is ``Explainer.explain`` on that row's text alone. Rows are
attributed in length-sorted batches, so scores may differ from the one-text call by float
rounding only (atol 1e-5 on scores of size ~1); every other field must be equal.
"""

from __future__ import annotations

import json
import math

import datasets
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

import hfattr
from hfattr.dataset import attribute_dataset, load_data, load_results
from hfattr.dataset.storage import list_shards, read_manifest, schema
from hfattr.hf.default_model import DEFAULT_MODEL_NAME, load_default_model

TEXTS = [
    "the movie was great",
    "a terrible waste of time",
    "the pizza was tasty but the service was annoying",
    "fantastic acting",
    "boring",
    "i admired the author and the writing was excellent",
    "the concert was a mess",
    "quite pleasant weekend",
    "worst app",
    "the series seemed forgettable",
]
LABELS = [1, 0, 0, 1, 0, 1, 0, 1, 0, 0]


@pytest.fixture(scope="module")
def explainer(default_explainer):
    return default_explainer


def _same(stored: hfattr.Result, ref: hfattr.Result, *, atol: float = 1e-5) -> None:
    a, b = stored.to_dict(), ref.to_dict()
    for key in a:
        if key in ("scores", "probability", "delta", "extras"):
            continue
        assert a[key] == b[key], key
    assert stored.scores.dtype == ref.scores.dtype
    assert stored.scores.shape == ref.scores.shape
    torch.testing.assert_close(stored.scores, ref.scores, atol=atol, rtol=0)
    if isinstance(ref.probability, float):
        assert stored.probability == pytest.approx(ref.probability, abs=1e-6)


def _explain_each(explainer, texts, targets=None, **kw):
    targets = targets or [None] * len(texts)
    return [explainer.explain(t, target=g, **kw) for t, g in zip(texts, targets)]


# --------------------------------------------------------------------------- the main path
def test_in_memory_dataset_matches_explain_and_loads_with_datasets(explainer, tmp_path):
    ds = datasets.Dataset.from_dict({"text": TEXTS, "label": LABELS})
    out = tmp_path / "run"
    summary = attribute_dataset(
        explainer, ds, text_column="text", method="ablation", output_dir=out, batch_size=4, shard_size=4, progress=False
    )
    assert (summary.rows_total, summary.rows_done, summary.rows_new, summary.failures) == (10, 10, 10, 0)
    assert summary.complete and summary.rows_resumed == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "manifest.json",
        "shard-00000.parquet",
        "shard-00001.parquet",
        "shard-00002.parquet",
    ]

    results = load_results(out)
    refs = _explain_each(explainer, TEXTS, method="ablation")
    assert len(results) == len(TEXTS)
    for stored, ref in zip(results, refs):
        _same(stored, ref)
    assert summary.tokens_new == sum(len(r.tokens) for r in refs)

    table = datasets.load_dataset(
        "parquet", data_files=str(out / "shard-*.parquet"), split="train", cache_dir=str(tmp_path / "cache")
    )
    assert table.num_rows == 10 and table.column_names == schema().names
    rows = sorted(table, key=lambda r: r["row_id"])
    assert [r["row_id"] for r in rows] == list(range(10))
    assert [r["text"] for r in rows] == TEXTS
    for r, ref in zip(rows, refs):
        assert r["status"] == "ok" and r["error"] is None
        assert r["tokens"] == ref.tokens and r["n_tokens"] == len(ref.tokens)
        assert r["scores"] == pytest.approx(ref.scores.tolist(), abs=1e-5) and r["scores_2d"] is None
        # the default target is the prediction, so prediction == target
        assert r["target_id"] == r["prediction_id"] == ref.target["id"]
        assert r["target_label"] == r["prediction_label"] == ref.target["label"]
        assert r["prediction_probability"] == r["probability"]
        assert r["delta"] is None  # ablation has no delta
        assert json.loads(r["target"]) == ref.target

    m = read_manifest(out)
    assert m["status"] == "complete" and m["model"] == DEFAULT_MODEL_NAME and m["method"] == "ablation"
    assert m["hfattr_version"] == hfattr.__version__ and m["rows_done"] == 10 and m["num_processes"] == 1
    assert [(s["file"], s["start"], s["stop"], s["rows"]) for s in m["shards"]] == [
        ("shard-00000.parquet", 0, 4, 4),
        ("shard-00001.parquet", 4, 8, 4),
        ("shard-00002.parquet", 8, 10, 2),
    ]
    for k, path in list_shards(out).items():  # each shard stores its rows in row order
        ids = pq.read_table(path, columns=["row_id"]).column("row_id").to_pylist()
        assert ids == list(range(4 * k, min(10, 4 * k + 4)))


def test_target_column_sig_delta_and_predictions(explainer, tmp_path):
    # explicit targets, some against the prediction; SIG has a delta (completeness error)
    ds = datasets.Dataset.from_dict({"t": TEXTS[:4], "y": ["NEGATIVE", "NEGATIVE", "POSITIVE", "POSITIVE"]})
    out = tmp_path / "sig"
    attribute_dataset(
        explainer,
        ds,
        text_column="t",
        target_column="y",
        method="sig",
        output_dir=out,
        batch_size=2,
        progress=False,
        n_steps=8,
    )
    refs = _explain_each(explainer, ds["t"], ds["y"], method="sig", n_steps=8)
    results = load_results(out)
    for stored, ref in zip(results, refs):
        _same(stored, ref, atol=1e-4)
        assert stored.options == {"n_steps": 8}
    rows = sorted(pq.read_table(out / "shard-00000.parquet").to_pylist(), key=lambda r: r["row_id"])
    preds = [explainer.explain(t, method="ablation") for t in ds["t"]]  # default target = prediction
    for r, ref, pred in zip(rows, refs, preds):
        assert r["target_label"] == ref.target["label"]
        assert r["delta"] == pytest.approx(float(ref.delta), abs=1e-5)
        assert r["prediction_label"] == pred.target["label"]
        assert r["prediction_probability"] == pytest.approx(pred.probability, abs=1e-6)
    assert any(r["prediction_label"] != r["target_label"] for r in rows)


def test_two_dimensional_scores_round_trip(explainer, tmp_path):
    ds = datasets.Dataset.from_dict({"text": TEXTS[:3]})
    out = tmp_path / "grid"
    attribute_dataset(
        explainer, ds, text_column="text", method="layer_ablation", output_dir=out, progress=False, sites="attention"
    )
    refs = _explain_each(explainer, TEXTS[:3], method="layer_ablation", sites="attention")
    row = pq.read_table(out / "shard-00000.parquet").to_pylist()[0]
    assert row["scores"] is None and len(row["scores_2d"]) == 2
    assert row["score_rows"] == ["blocks.0.attention", "blocks.1.attention"]
    for stored, ref in zip(load_results(out), refs):
        assert stored.scores.dim() == 2
        _same(stored, ref)
        assert stored.extras["sites"] == ref.extras["sites"]


@pytest.mark.parametrize("kind", ["csv", "jsonl", "parquet", "txt"])
def test_local_files(explainer, tmp_path, kind):
    texts, labels = TEXTS[:5], ["POSITIVE", "NEGATIVE", "NEGATIVE", "POSITIVE", "NEGATIVE"]
    path = tmp_path / f"data.{kind}"
    if kind == "csv":
        path.write_text("review,label\n" + "".join(f'"{t}",{y}\n' for t, y in zip(texts, labels)))
    elif kind == "jsonl":
        path.write_text("".join(json.dumps({"review": t, "label": y}) + "\n" for t, y in zip(texts, labels)))
    elif kind == "parquet":
        pq.write_table(pa.table({"review": texts, "label": labels}), path)
    else:
        path.write_text("\n".join(texts) + "\n")
    text_col, target_col = ("text", None) if kind == "txt" else ("review", "label")
    out = tmp_path / "out"
    summary = attribute_dataset(
        explainer,
        str(path),
        text_column=text_col,
        target_column=target_col,
        method="ablation",
        output_dir=out,
        progress=False,
    )
    assert summary.rows_done == 5 and summary.failures == 0
    targets = None if target_col is None else labels
    for stored, ref in zip(load_results(out), _explain_each(explainer, texts, targets, method="ablation")):
        _same(stored, ref)


def test_max_rows_split_and_dataset_dict(explainer, tmp_path):
    dd = datasets.DatasetDict(
        {
            "train": datasets.Dataset.from_dict({"text": TEXTS}),
            "test": datasets.Dataset.from_dict({"text": TEXTS[::-1]}),
        }
    )
    with pytest.raises(ValueError, match=r"splits \['train', 'test'\].*split="):
        attribute_dataset(explainer, dd, text_column="text", method="ablation", output_dir=tmp_path / "x")
    assert not (tmp_path / "x").exists()
    out = tmp_path / "test3"
    s = attribute_dataset(
        explainer, dd, split="test", max_rows=3, text_column="text", method="ablation", output_dir=out, progress=False
    )
    assert s.rows_total == 3
    assert [r.text for r in load_results(out)] == TEXTS[::-1][:3]


# --------------------------------------------------------------------------- failures and bad input
def test_failed_rows_are_recorded_and_the_run_goes_on(explainer, tmp_path):
    long_text = " ".join(["great"] * 200)  # more tokens than the model's 128 positions
    texts = ["the movie was great", None, "", "   ", long_text, "boring", "fantastic acting"]
    labels = ["POSITIVE", "NEGATIVE", "POSITIVE", "POSITIVE", "POSITIVE", "neutral", None]
    ds = datasets.Dataset.from_dict({"text": texts, "label": labels})
    out = tmp_path / "fails"
    s = attribute_dataset(
        explainer,
        ds,
        text_column="text",
        target_column="label",
        method="ablation",
        output_dir=out,
        batch_size=8,
        progress=False,
    )
    assert (s.rows_done, s.failures) == (7, 5)
    rows = sorted(pq.read_table(out / "shard-00000.parquet").to_pylist(), key=lambda r: r["row_id"])
    status = [(r["status"], r["error"]) for r in rows]
    assert status[0] == ("ok", None) and status[6] == ("ok", None)
    assert status[1] == ("failed", "text is missing (None)")
    assert status[2] == status[3] == ("failed", "text is empty")
    assert status[4][0] == "failed" and "more than the model's maximum of 128" in status[4][1]
    assert status[5][0] == "failed" and "unknown label name 'neutral'" in status[5][1]
    assert rows[5]["target_label"] == "neutral" and rows[5]["text"] == "boring"
    # the good rows in the same batch as the bad ones are still right
    refs = _explain_each(explainer, [texts[0], texts[6]], ["POSITIVE", None], method="ablation")
    got = load_results(out)
    assert len(got) == 2
    for stored, ref in zip(got, refs):
        _same(stored, ref)
    aligned = load_results(out, failed="none")
    assert [r is None for r in aligned] == [False, True, True, True, True, True, False]


def _ds():
    return datasets.Dataset.from_dict({"text": TEXTS[:3], "n": [1, 2, 3]})


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        (dict(text_column="review"), ValueError, r"text_column 'review' is not a column.*\['text', 'n'\]"),
        (dict(text_column="text", target_column="y"), ValueError, r"target_column 'y' is not a column"),
        (dict(text_column="n"), TypeError, r"text_column 'n' holds int64 values, not text"),
        (dict(text_column="text", method="nope"), ValueError, r"unknown method 'nope'"),
        (dict(text_column="text", bogus=1), TypeError, r"unknown option\(s\) \['bogus'\]"),
        (dict(text_column="text", batch_size=0), ValueError, r"batch_size must be an int >= 1"),
        (dict(text_column="text", max_rows=0), ValueError, r"max_rows must be an int >= 1"),
        (dict(text_column="text", target_column="n", target=1), ValueError, r"not both"),
    ],
)
def test_bad_arguments_fail_before_any_work(explainer, tmp_path, kwargs, exc, match):
    kwargs = {"method": "ablation", **kwargs}
    with pytest.raises(exc, match=match):
        attribute_dataset(explainer, _ds(), output_dir=tmp_path / "out", **kwargs)
    assert not (tmp_path / "out").exists()


def test_bad_data(explainer, tmp_path):
    empty = datasets.Dataset.from_dict({"text": []}, features=datasets.Features({"text": datasets.Value("string")}))
    with pytest.raises(ValueError, match=r"dataset is empty \(0 rows\)"):
        attribute_dataset(explainer, empty, text_column="text", method="ablation", output_dir=tmp_path / "o")
    lists = datasets.Dataset.from_dict({"text": [["a", "b"]]})
    with pytest.raises(TypeError, match=r"text_column 'text' holds List values"):
        attribute_dataset(explainer, lists, text_column="text", method="ablation", output_dir=tmp_path / "o")
    (tmp_path / "d.xlsx").write_text("x")
    with pytest.raises(ValueError, match=r"unknown extension '.xlsx'"):
        attribute_dataset(
            explainer, str(tmp_path / "d.xlsx"), text_column="text", method="ablation", output_dir=tmp_path / "o"
        )
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_data(str(tmp_path / "missing" / "dir"))
    with pytest.raises(TypeError, match="data must be a datasets.Dataset"):
        load_data(123)
    (tmp_path / "header_only.csv").write_text("text\n")
    with pytest.raises(ValueError, match="empty"):
        attribute_dataset(
            explainer,
            str(tmp_path / "header_only.csv"),
            text_column="text",
            method="ablation",
            output_dir=tmp_path / "o",
        )
    assert not (tmp_path / "o").exists()


# --------------------------------------------------------------------------- resume and refusal
def test_resume_recomputes_only_missing_shards(explainer, tmp_path):
    ds = datasets.Dataset.from_dict({"text": TEXTS})
    out = tmp_path / "run"
    kw = dict(text_column="text", method="ablation", output_dir=out, shard_size=3, progress=False)
    attribute_dataset(explainer, ds, **kw)
    before = {k: pq.read_table(p) for k, p in list_shards(out).items()}
    (out / "shard-00001.parquet").unlink()
    (out / ".tmp-shard-00002.parquet.abc").write_bytes(b"half a file")  # as left by a kill
    s = attribute_dataset(explainer, ds, **kw)
    assert (s.rows_new, s.rows_resumed, s.rows_done) == (3, 7, 10)
    assert not list(out.glob(".tmp-*"))
    after = {k: pq.read_table(p) for k, p in list_shards(out).items()}
    assert after.keys() == before.keys()
    for k in before:
        assert after[k].equals(before[k])
    s = attribute_dataset(explainer, ds, **{**kw, "shard_size": None, "batch_size": 2})  # all done
    assert (s.rows_new, s.rows_resumed) == (0, 10)


def test_resume_with_other_settings_is_refused(explainer, tmp_path):
    ds = datasets.Dataset.from_dict({"text": TEXTS[:4]})
    out = tmp_path / "run"
    kw = dict(text_column="text", method="ablation", output_dir=out, progress=False)
    attribute_dataset(explainer, ds, **kw)
    manifest = (out / "manifest.json").read_text()
    with pytest.raises(
        ValueError,
        match=r"different settings \(method options: \{\} there, "
        r"\{\"perturbations_per_eval\": 4\} now\)",
    ):
        attribute_dataset(explainer, ds, **kw, perturbations_per_eval=4)
    with pytest.raises(ValueError, match=r"method: \"ablation\" there, \"sig\" now"):
        attribute_dataset(explainer, ds, **{**kw, "method": "sig"})
    with pytest.raises(ValueError, match=r"target: null there, \"NEGATIVE\" now"):
        attribute_dataset(explainer, ds, **kw, target="NEGATIVE")
    with pytest.raises(ValueError, match=r"data rows: 4 rows .* there, 3 rows .* now"):
        attribute_dataset(explainer, ds, **kw, max_rows=3)
    with pytest.raises(ValueError, match=r"shard size: 1000 there, 2 now"):
        attribute_dataset(explainer, ds, **kw, shard_size=2)
    model, tok = load_default_model()
    with torch.no_grad():
        model.classifier.bias.add_(0.5)  # same name and config, other weights
    other = hfattr.Explainer(model, tok, model_name=DEFAULT_MODEL_NAME)
    with pytest.raises(ValueError, match=r"model: hfattr/default-sentiment \(weights/config digest \w+\) there"):
        attribute_dataset(other, ds, **kw)
    assert (out / "manifest.json").read_text() == manifest  # nothing was touched


def test_output_dir_with_foreign_files_is_refused(explainer, tmp_path):
    out = tmp_path / "busy"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match=r"not empty and holds no hfattr manifest \(found \['notes.txt'\]\)"):
        attribute_dataset(explainer, _ds(), text_column="text", method="ablation", output_dir=out)
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="exists and is not a directory"):
        attribute_dataset(explainer, _ds(), text_column="text", method="ablation", output_dir=tmp_path / "file")


def test_load_results_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="neither a dataset-run directory"):
        load_results(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="no shard"):
        load_results(tmp_path)
    with pytest.raises(ValueError, match="failed must be 'skip' or 'none'"):
        load_results(tmp_path, failed="drop")


# --------------------------------------------------------------------------- corpus summary
def test_corpus_summary_csv_and_plot(explainer, tmp_path):
    import csv

    from hfattr.dataset.corpus import corpus_summary, plot_corpus_summary, write_corpus_summary

    ds = datasets.Dataset.from_dict({"text": TEXTS + ["", "the movie was boring"]})
    out = tmp_path / "run"
    attribute_dataset(explainer, ds, text_column="text", method="ablation", output_dir=out, progress=False)
    results = load_results(out)
    # oracle: mean score of each non-special token per explained label
    sums: dict = {}
    for r in results:
        for tok, s, special in zip(r.tokens, r.scores.tolist(), r.special_mask):
            if not special:
                acc = sums.setdefault((r.target["label"], tok), [0.0, 0])
                acc[0] += s
                acc[1] += 1
    csv_path, png_path = write_corpus_summary(out, top_k=5)
    assert csv_path == out / "corpus_summary.csv" and png_path == out / "corpus_summary.png"
    with open(csv_path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert {(r["label"], r["token"]) for r in rows} == set(sums)
    for r in rows:
        total, n = sums[(r["label"], r["token"])]
        assert int(r["count"]) == n
        assert math.isclose(float(r["mean_score"]), total / n, rel_tol=1e-12, abs_tol=1e-15)
    for label in {r["label"] for r in rows}:
        group = [r for r in rows if r["label"] == label]
        assert [int(r["rank"]) for r in group] == list(range(1, len(group) + 1))
        means = [float(r["mean_score"]) for r in group]
        assert means == sorted(means, reverse=True)
    assert ("NEGATIVE", "the") in sums and int(
        next(r for r in rows if r["token"] == "the" and r["label"] == "NEGATIVE")["count"]
    ) >= 2
    assert png_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the same from Result objects; min_count filters rare tokens
    assert corpus_summary(results) == corpus_summary(out)
    assert all(r["count"] >= 2 for r in corpus_summary(out, min_count=2))
    fig = plot_corpus_summary(corpus_summary(out), top_k=3)
    assert len(fig.axes) == len({r["label"] for r in rows})
    assert all(len(ax.patches) == 3 for ax in fig.axes)


def test_label_ids_read_as_floats(explainer, tmp_path):
    # a CSV label column with a gap is read as float64: 1.0 -> 1, empty -> the prediction, 0.5 fails
    path = tmp_path / "gap.csv"
    path.write_text("text,label\nthe movie was great,1\nboring,\nbad film,0.5\nfantastic acting,0\n")
    out = tmp_path / "run"
    s = attribute_dataset(
        explainer,
        str(path),
        text_column="text",
        target_column="label",
        method="ablation",
        output_dir=out,
        progress=False,
    )
    assert (s.rows_done, s.failures) == (4, 1)
    rows = sorted(pq.read_table(out / "shard-00000.parquet").to_pylist(), key=lambda r: r["row_id"])
    assert rows[2]["status"] == "failed" and rows[2]["error"] == "target 0.5 is not a label id (a whole number)"
    got = load_results(out)
    refs = _explain_each(
        explainer, ["the movie was great", "boring", "fantastic acting"], [1, None, 0], method="ablation"
    )
    for stored, ref in zip(got, refs):
        _same(stored, ref)
    assert [r.target["id"] for r in got] == [1, refs[1].target["id"], 0]
