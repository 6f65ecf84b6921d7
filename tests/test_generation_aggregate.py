"""Generation Results: aggregation over rows and subwords (against hand sums), storage of 2-D
scores with empty (NaN) entries, ``attribute_dataset(..., generate=N)`` and the CLI flags."""

from __future__ import annotations

import json
import math

import pytest
import torch

from hfattr import Explainer, Result, attribute_dataset, load_results
from hfattr.cli import main
from hfattr.testing import save_tiny, tiny

NAN = math.nan


def generation(tokens, P, scores, *, special=None, kind="generation") -> Result:
    G = len(tokens) - P
    return Result(
        tokens=tokens,
        token_ids=list(range(len(tokens))),
        scores=torch.tensor(scores, dtype=torch.float64),
        special_mask=special or [False] * len(tokens),
        rows=tokens[P:],
        target={
            "kind": kind,
            "ids": list(range(P, P + G)),
            "tokens": tokens[P:],
            "positions": [P - 1 + j for j in range(G)],
            "generated_text": "",
            "prompt_length": P,
            "score": "logit",
        },
        probability=[0.5, 0.25, 0.5, 0.8][:G],
        extras={
            "step_scores": {
                "probability": [0.5, 0.25, 0.5, 0.8][:G],
                "log_prob": [-1.0, -2.0, -3.0, -4.0][:G],
                "entropy": [1.0, 2.0, 3.0, 4.0][:G],
                "rank": [1, 2, 3, 4][:G],
            }
        },
    )


def triangle(G, P, seed=0):
    g = torch.Generator().manual_seed(seed)
    s = torch.randn(G, P + G, generator=g, dtype=torch.float64)
    for j in range(G):
        s[j, P + j :] = NAN
    return s.tolist()


def hand(values, how):
    vals = [v for v in values if not math.isnan(v)]
    if not vals:
        return NAN
    if how == "sum":
        return sum(vals)
    if how == "mean":
        return sum(vals) / len(vals)
    if how == "max":
        return max(vals)
    return max(vals, key=abs)


@pytest.mark.parametrize("how", ["sum", "mean", "max", "absmax"])
def test_aggregate_rows_ignores_empty_entries(how):
    s = triangle(4, 3)
    r = generation(["a", "b", "c", "d", "e", "f", "g"], 3, s)
    assert r.is_generation
    agg = r.aggregate_rows(how)
    assert agg.scores.shape == (7,) and agg.tokens == r.tokens and agg.rows is None
    for c in range(7):
        want = hand([s[j][c] for j in range(4)], how)
        got = float(agg.scores[c])
        assert (math.isnan(want) and math.isnan(got)) or got == pytest.approx(want, abs=1e-12)
    assert math.isnan(float(agg.scores[-1]))  # the last generated token is read by no row
    with pytest.raises(ValueError, match="reduce must be one of"):
        r.aggregate_rows("median")


@pytest.mark.parametrize("how", ["sum", "absmax"])
def test_bpe_words_merge_on_both_axes(how):
    # prompt: <s> | Th e | Ġcat ; generated: s | Ġsat | Ġo n   ("s" continues a prompt word: kept apart)
    tokens = ["<s>", "Th", "e", "Ġcat", "s", "Ġsat", "Ġo", "n"]
    P = 4
    s = triangle(4, P, seed=1)
    r = generation(tokens, P, s, special=[True] + [False] * 7)
    w = r.aggregate("word", reduce=how)
    col_groups = [[0], [1, 2], [3], [4], [5], [6, 7]]
    row_groups = [[0], [1], [2, 3]]
    assert w.extras["aggregate"]["token_groups"] == col_groups
    assert w.extras["aggregate"]["row_groups"] == row_groups
    assert w.scores.shape == (3, 6) and w.is_generation
    assert w.target["prompt_length"] == 3 and w.target["positions"] == [2, 3, 4]
    for a, rows in enumerate(row_groups):
        for b, cols in enumerate(col_groups):
            got = float(w.scores[a, b])
            if b >= 3 + a:  # the row's own word and later: empty
                assert math.isnan(got)
                continue
            per_row = [hand([s[j][c] for c in cols], how) for j in rows]
            want = hand(per_row, how)
            assert got == pytest.approx(want, abs=1e-12), (a, b)
    steps = w.extras["step_scores"]
    assert steps["probability"] == pytest.approx([0.5, 0.25, 0.5 * 0.8])
    assert steps["log_prob"] == pytest.approx([-1.0, -2.0, -7.0]) and steps["rank"] == [1, 2, 3]
    assert w.probability == pytest.approx([0.5, 0.25, 0.4])


def test_wordpiece_words_merge_on_both_axes():
    tokens = ["[CLS]", "the", "cat", "##s", "sat", "##is", "##fied", "now"]
    P = 4
    s = triangle(4, P, seed=2)
    r = generation(tokens, P, s, special=[True] + [False] * 7)
    w = r.aggregate("word")
    assert w.extras["aggregate"]["token_groups"] == [[0], [1], [2, 3], [4, 5, 6], [7]]
    assert w.rows == ["satisfied", "now"]
    # row "satisfied" = rows 0..2 summed; its column "cat##s" = columns 2 and 3
    want = sum(v for j in range(3) for v in (s[j][2], s[j][3]))
    assert float(w.scores[0, 2]) == pytest.approx(want, abs=1e-12)
    assert math.isnan(float(w.scores[0, 3]))  # own word
    want_now = sum(s[3][c] for c in (4, 5, 6))  # the generated word before "now"
    assert float(w.scores[1, 3]) == pytest.approx(want_now, abs=1e-12)


def test_a_real_generation_aggregates_and_round_trips_through_json(tmp_path):
    model, tok = tiny("gpt2", dtype=torch.float64)
    r = Explainer(model, tok).explain("the movie was", generate=3)
    w = r.aggregate("word")  # word-level zoo tokenizer: every token is a word
    torch.testing.assert_close(w.scores, r.scores, equal_nan=True, atol=0, rtol=0)
    back = Result.load(r.save(tmp_path / "g.json"))
    torch.testing.assert_close(back.scores, r.scores, equal_nan=True, atol=0, rtol=0)
    assert back.target == r.target and back.extras == r.extras and back.is_generation


def test_storage_keeps_2d_scores_with_empty_entries(tmp_path):
    from hfattr.dataset.storage import read_records, result_record, record_to_result, write_shard

    s = triangle(3, 2)
    r = generation(["a", "b", "c", "d", "e"], 2, s)
    write_shard(tmp_path / "part-00000.parquet", [result_record(0, r, (None, None, None))], {"fingerprint": "x"})
    (row,) = list(read_records(tmp_path / "part-00000.parquet"))
    back = record_to_result(row)
    torch.testing.assert_close(back.scores, r.scores, equal_nan=True, atol=0, rtol=0)
    assert back.target == r.target and back.rows == r.rows and back.is_generation


def test_attribute_dataset_with_generate_stores_one_matrix_per_row(tmp_path):
    model, tok = tiny("llama", dtype=torch.float64)
    ex = Explainer(model, tok)
    texts = ["the movie was", "i did not like this film", "a"]
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    attribute_dataset(
        ex,
        str(data),
        text_column="text",
        method="ablation",
        output_dir=tmp_path / "out",
        generate=3,
        progress=False,
        batch_size=2,
    )
    results = load_results(tmp_path / "out")
    assert len(results) == 3
    for text, got in zip(texts, results):
        want = ex.explain(text, generate=3)
        assert got.is_generation and got.tokens == want.tokens and got.target == want.target
        torch.testing.assert_close(got.scores, want.scores, equal_nan=True, atol=1e-10, rtol=0)


def test_cli_generate_and_contrast(tmp_path, capsys):
    path = save_tiny("gpt2", tmp_path / "gpt2", "causal-lm")
    out = tmp_path / "r.json"
    assert main(["explain", "the movie was", "--model", path, "--generate", "3", "--json", str(out), "--no-color"]) == 0
    r = Result.load(out)
    assert r.is_generation and r.scores.shape == (3, len(r.tokens)) and r.options["generate"] == 3
    capsys.readouterr()
    model, tok = tiny("gpt2")
    gen = Explainer(model, tok).explain("the movie was", generate=3)
    torch.testing.assert_close(r.scores, gen.scores, equal_nan=True, atol=1e-5, rtol=0)
    assert (
        main(
            [
                "explain",
                "the movie was",
                "--model",
                path,
                "--target",
                " great",
                "--contrast",
                " bad",
                "--json",
                str(out),
                "--no-color",
            ]
        )
        == 0
    )
    c = Result.load(out)
    assert c.target["score"] == "contrast" and c.target["contrast_tokens"] == ["bad"]
    assert main(["explain", "the movie was", "--model", path, "--target", " great", "--generate", "2"]) == 2
    assert "not both" in capsys.readouterr().err
    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps({"text": "the movie was"}) + "\n")
    assert (
        main(
            [
                "attribute-dataset",
                "--model",
                path,
                "--data",
                str(data),
                "--text-column",
                "text",
                "--output",
                str(tmp_path / "o"),
                "--generate",
                "2",
                "--no-progress",
                "--no-corpus-summary",
            ]
        )
        == 0
    )
    (stored,) = load_results(tmp_path / "o")
    assert stored.is_generation and stored.scores.shape == (2, len(stored.tokens))
