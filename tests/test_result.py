"""Tests for hfattr.result.Result: validation, aggregation, top_k and exact JSON round trip."""

import json
import math

import pytest
import torch

from hfattr._version import __version__
from hfattr.result import Result

TEXT = "Hello worldwide <b>!"


def make_result(scores=None, **kw):
    """[CLS] hello world ##wide < b > ! [SEP] with word ids and offsets into TEXT."""
    if scores is None:
        scores = torch.tensor([0.5, 1.0, -2.0, 3.0, 0.25, 0.125, -1.0, -0.5, 4.0])
    base = dict(
        tokens=["[CLS]", "hello", "world", "##wide", "<", "b", ">", "!", "[SEP]"],
        token_ids=[101, 7592, 2088, 9466, 1026, 1038, 1028, 999, 102],
        scores=scores,
        text=TEXT,
        offsets=[(0, 0), (0, 5), (6, 11), (11, 15), (16, 17), (17, 18), (18, 19), (19, 20), (0, 0)],
        special_mask=[True] + [False] * 7 + [True],
        word_ids=[None, 0, 1, 1, 2, 2, 2, 3, None],
        target={"id": 1, "label": "POSITIVE"},
        probability=0.875,
        method="feature_ablation",
    )
    base.update(kw)
    return Result(**base)


# ----------------------------------------------------------------------------- validation
def test_defaults_and_version():
    r = make_result()
    assert r.hfattr_version == __version__
    assert r.n_tokens == 9 and r.rows is None and r.extras == {} and r.options == {}


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(scores=torch.zeros(8)), "scores"),
        (dict(scores=torch.zeros(2, 3, 9)), "scores"),
        (dict(token_ids=[1, 2]), "token_ids"),
        (dict(offsets=[(0, 1)]), "offsets"),
        (dict(special_mask=[False]), "special_mask"),
        (dict(word_ids=[0]), "word_ids"),
        (dict(rows=["a"]), "rows"),
        (dict(scores=torch.zeros(2, 9), rows=["a"]), "rows"),
    ],
)
def test_validation_errors(kw, match):
    with pytest.raises(ValueError, match=match):
        make_result(**kw)


def test_scores_must_be_tensor():
    with pytest.raises(TypeError, match="scores"):
        make_result(scores=[0.0] * 9)


def test_scores_are_detached():
    s = torch.ones(9, requires_grad=True) * 2
    assert not make_result(scores=s).scores.requires_grad


# ----------------------------------------------------------------------------- aggregation
def test_aggregate_sum_words_and_specials():
    w = make_result().aggregate("word")
    assert w.tokens == ["[CLS]", "Hello", "worldwide", "<b>", "!", "[SEP]"]
    torch.testing.assert_close(w.scores, torch.tensor([0.5, 1.0, 1.0, -0.625, -0.5, 4.0]), rtol=0, atol=0)
    assert w.special_mask == [True, False, False, False, False, True]
    assert w.word_ids == [None, 0, 1, 2, 3, None]
    assert w.offsets == [(0, 0), (0, 5), (6, 15), (16, 19), (19, 20), (0, 0)]
    for word, (s, e), sp in zip(w.tokens, w.offsets, w.special_mask):
        if not sp:
            assert TEXT[s:e] == word
    assert w.token_ids == [101, 7592, 2088, 1026, 999, 102]
    assert w.extras["aggregate"]["token_groups"] == [[0], [1], [2, 3], [4, 5, 6], [7], [8]]
    assert w.method == "feature_ablation" and w.target == {"id": 1, "label": "POSITIVE"}


@pytest.mark.parametrize(
    "reduce, expected",
    [
        ("mean", [0.5, 1.0, 0.5, -0.625 / 3, -0.5, 4.0]),
        ("max", [0.5, 1.0, 3.0, 0.25, -0.5, 4.0]),
        ("absmax", [0.5, 1.0, 3.0, -1.0, -0.5, 4.0]),
    ],
)
def test_aggregate_reductions(reduce, expected):
    w = make_result().aggregate(reduce=reduce)
    torch.testing.assert_close(w.scores, torch.tensor(expected), rtol=1e-6, atol=0)


def test_absmax_keeps_sign_of_negative_winner():
    s = torch.tensor([0.0, 0.0, 1.0, -3.0, 0.0, 0.0, 0.0, 0.0, 0.0])
    assert make_result(scores=s).aggregate(reduce="absmax").scores[2].item() == -3.0


def test_aggregate_2d_per_row_and_rows_kept():
    s = torch.arange(18, dtype=torch.float64).reshape(2, 9)
    w = make_result(scores=s, rows=["t0", "t1"]).aggregate()
    expected = torch.stack(
        [torch.tensor([r[0], r[1], r[2] + r[3], r[4] + r[5] + r[6], r[7], r[8]]) for r in s.tolist()]
    ).double()
    assert w.scores.dtype == torch.float64 and w.rows == ["t0", "t1"]
    assert torch.equal(w.scores, expected)


def test_aggregate_total_preserved_by_sum():
    g = torch.Generator().manual_seed(0)
    s = torch.randn(9, generator=g, dtype=torch.float64)
    w = make_result(scores=s).aggregate()
    assert math.isclose(w.scores.sum().item(), s.sum().item(), rel_tol=1e-12)


def test_aggregate_pair_word_ids_restart():
    # [CLS] a b [SEP] a c [SEP]: word ids restart in the second segment
    r = Result(
        tokens=["[CLS]", "a", "b", "[SEP]", "a", "c", "[SEP]"],
        token_ids=list(range(7)),
        scores=torch.arange(7.0),
        word_ids=[None, 0, 1, None, 0, 0, None],
    )
    w = r.aggregate()
    assert w.tokens == ["[CLS]", "a", "b", "[SEP]", "ac", "[SEP]"]
    assert w.scores.tolist() == [0.0, 1.0, 2.0, 3.0, 9.0, 6.0]
    assert w.special_mask == [True, False, False, True, False, True]  # from word_id None


def test_aggregate_fallback_without_offsets_strips_wordpiece():
    w = make_result(offsets=None).aggregate()
    assert w.tokens[2] == "worldwide" and w.offsets is None


def test_aggregate_idempotent_and_token_level_copy():
    w = make_result().aggregate()
    ww = w.aggregate()
    assert ww.tokens == w.tokens and torch.equal(ww.scores, w.scores)
    t = make_result().aggregate("token")
    assert t.tokens == make_result().tokens


def test_aggregate_errors():
    r = make_result()
    with pytest.raises(ValueError, match="level"):
        r.aggregate("sentence")
    with pytest.raises(ValueError, match="reduce"):
        r.aggregate(reduce="median")
    with pytest.raises(ValueError, match="word_ids"):
        make_result(word_ids=None).aggregate()


# ----------------------------------------------------------------------------- top_k
def test_top_k_by_abs_and_value_excludes_specials():
    r = make_result()
    assert r.top_k(3) == [("##wide", 3.0, 3), ("world", -2.0, 2), ("hello", 1.0, 1)]
    assert r.top_k(3, by="value") == [("##wide", 3.0, 3), ("hello", 1.0, 1), ("<", 0.25, 4)]
    everything = r.top_k(100)
    assert len(everything) == 7 and {i for _, _, i in everything} == set(range(1, 8))
    assert r.top_k(0) == []


def test_top_k_ties_broken_by_index():
    r = make_result(scores=torch.tensor([9.0, 1.0, -1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 9.0]))
    assert [i for _, _, i in r.top_k(3)] == [1, 2, 3]


def test_top_k_rows():
    s = torch.zeros(2, 9)
    s[0, 5] = -7.0
    s[1, 2] = 4.0
    r = make_result(scores=s, rows=["first", "second"])
    assert r.top_k(1, row=0) == [("b", -7.0, 5)]
    assert r.top_k(1, row="second") == [("world", 4.0, 2)]
    assert r.top_k(1, row=-1) == [("world", 4.0, 2)]
    with pytest.raises(ValueError, match="row"):
        r.top_k(1)
    with pytest.raises(ValueError, match="row"):
        r.top_k(1, row="third")
    with pytest.raises(ValueError, match="row"):
        r.top_k(1, row=2)


def test_top_k_bad_args():
    r = make_result()
    with pytest.raises(ValueError, match="k"):
        r.top_k(-1)
    with pytest.raises(ValueError, match="by"):
        r.top_k(2, by="rank")


# ----------------------------------------------------------------------------- JSON round trip
def _bits(t):
    view = {
        torch.float32: torch.int32,
        torch.float64: torch.int64,
        torch.float16: torch.int16,
        torch.bfloat16: torch.int16,
    }
    return t.view(view[t.dtype]) if t.dtype in view else t


def _assert_same_tensor(a, b):
    assert isinstance(b, torch.Tensor)
    assert a.dtype == b.dtype and a.shape == b.shape
    assert torch.equal(_bits(a.contiguous()), _bits(b.contiguous()))


def _awkward(shape, dtype, seed):
    g = torch.Generator().manual_seed(seed)
    span = 30 if torch.finfo(dtype).bits >= 32 else 4
    t = (
        torch.randn(shape, generator=g, dtype=torch.float64) * 10.0 ** torch.randint(-span, span, shape, generator=g)
    ).to(dtype)
    flat = t.view(-1)
    flat[0] = -0.0
    flat[1] = float("inf")
    flat[2] = torch.finfo(dtype).tiny / 4  # subnormal
    flat[3] = 1.0 / 3.0
    return t


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("two_d", [False, True])
def test_round_trip_exact(tmp_path, dtype, two_d):
    shape = (3, 9) if two_d else (9,)
    scores = _awkward(shape, dtype, seed=1)
    delta = _awkward((4,), dtype, seed=2)
    r = make_result(
        scores=scores,
        rows=["a", "b<", "blocks.0.attention"] if two_d else None,
        probability=[0.1, 0.2, 1 / 3] if two_d else 1 / 3,
        delta=delta,
        options={"baseline": "pad", "window": [1, 2], "nested": {"x": None, "y": True}},
        model_name="tiny-bert",
        extras={
            "site_scores": _awkward((2, 4), torch.float32, seed=3),
            "ids": torch.tensor([[1, -2], [2**40, 0]]),
            "flags": torch.tensor([True, False]),
            "plain": [1.5, -0.0, 7],
            "bad": float("nan"),
        },
    )
    path = r.save(tmp_path / "r.json")
    raw = path.read_text()
    json.loads(raw)  # plain, strict JSON
    assert "NaN" not in raw and "Infinity" not in raw
    back = Result.load(path)
    for name in (
        "tokens",
        "token_ids",
        "text",
        "offsets",
        "special_mask",
        "word_ids",
        "rows",
        "target",
        "probability",
        "method",
        "options",
        "model_name",
        "hfattr_version",
    ):
        assert getattr(back, name) == getattr(r, name), name
    assert all(isinstance(o, tuple) for o in back.offsets)
    _assert_same_tensor(r.scores, back.scores)
    _assert_same_tensor(r.delta, back.delta)
    for key in ("site_scores", "ids", "flags"):
        _assert_same_tensor(r.extras[key], back.extras[key])
    assert back.extras["plain"] == [1.5, -0.0, 7]
    assert math.copysign(1.0, back.extras["plain"][1]) == -1.0
    assert math.isnan(back.extras["bad"])
    # the dict form is JSON-able without custom encoders
    assert Result.from_dict(json.loads(json.dumps(r.to_dict()))).scores.dtype == dtype


def test_round_trip_float_delta_and_minimal(tmp_path):
    r = Result(
        tokens=["x"],
        token_ids=[5],
        scores=torch.tensor([0.1], dtype=torch.float64),
        delta=1e-300,
        hfattr_version="0.0.1",
    )
    back = Result.load(r.save(tmp_path / "m.json"))
    assert back.delta == 1e-300 and back.hfattr_version == "0.0.1"
    assert back.text is None and back.offsets is None and back.word_ids is None
    _assert_same_tensor(r.scores, back.scores)


def test_load_not_a_result(tmp_path):
    p = tmp_path / "other.json"
    p.write_text(json.dumps({"hello": 1}))
    with pytest.raises(ValueError, match="not .*hfattr Result"):
        Result.load(p)
    p.write_text("this is not json at all")
    with pytest.raises(ValueError, match="not an hfattr Result"):
        Result.load(p)
    p.write_text(json.dumps([1, 2, 3]))
    with pytest.raises(ValueError, match="hfattr Result"):
        Result.load(p)
    d = make_result().to_dict()
    d["format_version"] = 999
    p.write_text(json.dumps(d))
    with pytest.raises(ValueError, match="format_version"):
        Result.load(p)
    del d["scores"]
    d["format_version"] = 1
    with pytest.raises(ValueError, match="scores"):
        Result.from_dict(d)


def test_unstorable_extras_rejected():
    with pytest.raises(TypeError, match="extras"):
        make_result(extras={"f": object()}).to_dict()
    with pytest.raises(TypeError, match="keys must be str"):
        make_result(extras={1: "x"}).to_dict()
    with pytest.raises(TypeError, match="dtype"):
        make_result(extras={"c": torch.zeros(2, dtype=torch.complex64)}).to_dict()


# ----------------------------------------------------------------------------- views delegate
def test_views_delegate_to_viz():
    from hfattr import viz

    r = make_result()
    assert r.to_html() == viz.html(r) == r._repr_html_()
    assert str(r) == viz.text_table(r, color=False)
    assert r.to_text(color=True, width=60) == viz.text_table(r, color=True, width=60)
    assert "\x1b" not in str(r)
    assert "feature_ablation" in repr(r) and "(9,)" in repr(r)


@pytest.mark.parametrize(
    "patch",
    [
        {"text": 123},
        {"token_ids": "12"},
        {"word_ids": [0.5, 1]},
    ],
)
def test_load_rejects_fields_of_the_wrong_type(tmp_path, patch):
    r = Result(tokens=["a", "b"], token_ids=[1, 2], scores=torch.tensor([0.5, -0.5]), text="a b", word_ids=[0, 1])
    d = r.to_dict()
    d.update(patch)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(d), encoding="utf-8")
    with pytest.raises(ValueError, match="not a valid hfattr Result"):
        Result.load(path)


def test_load_rejects_deeply_nested_json(tmp_path):
    path = tmp_path / "deep.json"
    path.write_text("[" * 100000 + "]" * 100000, encoding="utf-8")
    with pytest.raises(ValueError, match="not an hfattr Result file"):
        Result.load(path)
