"""hfattr.evaluate: every metric against values computed here with plain model calls."""

from __future__ import annotations

import math

import pytest
import torch

import hfattr
from hfattr import evaluate as ev
from hfattr.result import Result
from hfattr.testing import tiny

TOL = 1e-10


@pytest.fixture(scope="module")
def cls():
    model, tok = tiny("bert", dtype=torch.float64)
    return model, tok


@pytest.fixture(scope="module")
def causal():
    model, tok = tiny("gpt2", dtype=torch.float64)
    return model, tok


def _ids(tok, text):
    return tok(text)["input_ids"]


def _result(tok, text, scores, target, *, kind="class", **extra):
    ids = _ids(tok, text)
    special = [i in set(tok.all_special_ids) for i in ids]
    assert len(scores) == len(ids)
    return Result(
        tokens=tok.convert_ids_to_tokens(ids),
        token_ids=ids,
        scores=torch.tensor(scores, dtype=torch.float64),
        special_mask=special,
        target={"kind": kind, "id": target, **extra},
    )


def _p(model, ids, target, pos=None):
    """p(target | ids) from one unpadded model call."""
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits[0].double()
    if logits.dim() == 2:
        logits = logits[len(ids) - 1 if pos is None else pos]
    return float(logits.softmax(-1)[target])


TEXT = "the movie was great but the ending was awful"  # 9 words -> [CLS] + 9 + [SEP]


def _scores():
    # token 4 ("great") first, then 9 ("awful"), then 2 ("movie"); specials get huge scores (ignored)
    s = [100.0, 0.1, 0.5, 0.2, 3.0, -0.3, 0.05, 0.0, -1.0, 2.0, 100.0]
    return s


# --------------------------------------------------------------------------- top-k arithmetic
@pytest.mark.parametrize(
    "top_k,n,want",
    [
        (0.2, 9, 1),
        (0.2, 10, 2),
        (0.2, 4, 1),
        (0.2, 0, 0),
        (0.29, 100, 29),
        (0.3, 10, 3),
        (1.0, 7, 7),
        (0.5, 5, 2),
        (3, 9, 3),
        (3, 2, 2),
        (0, 5, 0),
    ],
)
def test_n_top(top_k, n, want):
    assert ev.n_top(top_k, n) == want


@pytest.mark.parametrize("bad", [0.0, 1.5, -0.1, -1, True, "0.2", None])
def test_n_top_rejects(bad):
    with pytest.raises((ValueError, TypeError), match="top_k"):
        ev.n_top(bad, 5)


def test_ranking_skips_special_and_orders(cls):
    _, tok = cls
    r = _result(tok, TEXT, _scores(), 1)
    assert ev.ranking(r)[:4] == [4, 9, 2, 3]
    assert ev.ranking(r, by="abs")[:4] == [4, 9, 8, 2]
    assert 0 not in ev.ranking(r) and 10 not in ev.ranking(r)


# --------------------------------------------------------------------------- the metrics
def test_comprehensiveness_remove(cls):
    model, tok = cls
    r = _result(tok, TEXT, _scores(), 1)
    ids = r.token_ids
    full = _p(model, ids, 1)
    # 9 perturbable tokens, 20% -> 1 token: index 4 removed
    want = full - _p(model, ids[:4] + ids[5:], 1)
    got = ev.comprehensiveness(model, r, tokenizer=tok)
    assert isinstance(got, float)
    assert got == pytest.approx(want, abs=TOL)
    assert abs(want) > 1e-4  # the case is not trivially zero


def test_comprehensiveness_count_and_mask(cls):
    model, tok = cls
    r = _result(tok, TEXT, _scores(), 0)
    ids = list(r.token_ids)
    masked = [tok.mask_token_id if j in (4, 9, 2) else t for j, t in enumerate(ids)]
    want = _p(model, ids, 0) - _p(model, masked, 0)
    assert ev.comprehensiveness(model, r, tokenizer=tok, top_k=3, replacement="mask") == pytest.approx(want, abs=TOL)
    padded = [tok.pad_token_id if j in (4, 9, 2) else t for j, t in enumerate(ids)]
    want_pad = _p(model, ids, 0) - _p(model, padded, 0)
    assert ev.comprehensiveness(model, r, tokenizer=tok, top_k=3, replacement="pad") == pytest.approx(want_pad, abs=TOL)
    unk = tok.unk_token_id
    by_id = [unk if j in (4, 9, 2) else t for j, t in enumerate(ids)]
    assert ev.comprehensiveness(model, r, tokenizer=tok, top_k=3, replacement=unk) == pytest.approx(
        _p(model, ids, 0) - _p(model, by_id, 0), abs=TOL
    )


def test_sufficiency_remove_keeps_specials(cls):
    model, tok = cls
    r = _result(tok, TEXT, _scores(), 1)
    ids = r.token_ids
    kept = [ids[0], ids[4], ids[9], ids[-1]]  # [CLS] great awful [SEP]
    want = _p(model, ids, 1) - _p(model, kept, 1)
    assert ev.sufficiency(model, r, tokenizer=tok, top_k=0.25) == pytest.approx(want, abs=TOL)  # floor(2.25)=2


def test_log_odds_mask(cls):
    model, tok = cls
    r = _result(tok, TEXT, _scores(), 1)
    ids = list(r.token_ids)
    masked = [tok.mask_token_id if j in (4, 9) else t for j, t in enumerate(ids)]
    want = math.log(_p(model, masked, 1)) - math.log(_p(model, ids, 1))
    assert ev.log_odds(model, r, tokenizer=tok, top_k=2) == pytest.approx(want, abs=TOL)


def test_by_abs_removes_negative_tokens(cls):
    model, tok = cls
    r = _result(tok, TEXT, _scores(), 1)
    ids = r.token_ids
    want = _p(model, ids, 1) - _p(model, [t for j, t in enumerate(ids) if j not in (4, 9, 8)], 1)
    assert ev.comprehensiveness(model, r, tokenizer=tok, top_k=3, by="abs") == pytest.approx(want, abs=TOL)


def test_everything_removed_leaves_the_special_tokens(cls):
    model, tok = cls
    r = _result(tok, TEXT, _scores(), 0)
    ids = r.token_ids
    want = _p(model, ids, 0) - _p(model, [ids[0], ids[-1]], 0)
    assert ev.comprehensiveness(model, r, tokenizer=tok, top_k=1.0) == pytest.approx(want, abs=TOL)
    assert ev.sufficiency(model, r, tokenizer=tok, top_k=1.0) == pytest.approx(0.0, abs=TOL)


def test_batched_equals_one_by_one(cls):
    model, tok = cls
    texts = [TEXT, "a great film", "i hated the acting and the music was bad", "fun"]
    results = []
    for t, target in zip(texts, (1, 0, 0, 1)):
        n = len(_ids(tok, t))
        g = torch.Generator().manual_seed(n)
        results.append(_result(tok, t, torch.randn(n, generator=g).tolist(), target))
    for fn in (ev.comprehensiveness, ev.sufficiency, ev.log_odds):
        batched = fn(model, results, tokenizer=tok, batch_size=3)
        assert isinstance(batched, torch.Tensor) and batched.dtype == torch.float64 and batched.shape == (4,)
        single = torch.tensor([fn(model, r, tokenizer=tok) for r in results], dtype=torch.float64)
        torch.testing.assert_close(batched, single, atol=1e-10, rtol=0)


def test_faithfulness_matches_single_metrics(cls):
    model, tok = cls
    e = hfattr.Explainer(model, tok)
    results = e.explain([TEXT, "the acting was bad", "i loved this film"], method="ablation")
    out = ev.faithfulness(e, results, metrics=list(ev.METRICS), steps=4)
    assert set(out) == set(ev.METRICS)
    torch.testing.assert_close(out["comprehensiveness"], ev.comprehensiveness(e, results), atol=1e-12, rtol=0)
    torch.testing.assert_close(out["sufficiency"], ev.sufficiency(e, results), atol=1e-12, rtol=0)
    torch.testing.assert_close(out["log_odds"], ev.log_odds(e, results), atol=1e-12, rtol=0)
    torch.testing.assert_close(out["aopc_deletion"], ev.aopc(e, results, steps=4), atol=1e-12, rtol=0)
    torch.testing.assert_close(
        out["aopc_insertion"], ev.aopc(e, results, curve="insertion", steps=4), atol=1e-12, rtol=0
    )
    one = ev.faithfulness(e, results[0], metrics=["log_odds"], replacement="pad")
    assert isinstance(one["log_odds"], float)
    assert one["log_odds"] == pytest.approx(ev.log_odds(e, results[0], replacement="pad"), abs=1e-12)


# --------------------------------------------------------------------------- curves and AOPC
def test_deletion_and_insertion_curves(cls):
    model, tok = cls
    r = _result(tok, TEXT, _scores(), 1)
    ids = r.token_ids
    order = ev.ranking(r)
    full = _p(model, ids, 1)
    fr = [0.25, 0.5, 0.75, 1.0]
    ks = [ev.n_top(f, 9) for f in fr]
    assert ks == [2, 4, 6, 9]
    dele = [_p(model, [t for j, t in enumerate(ids) if j not in order[:k]], 1) for k in [0] + ks]
    ins = [_p(model, [t for j, t in enumerate(ids) if j not in order[k:]], 1) for k in [0] + ks]
    c = ev.perturbation_curve(model, [r], tokenizer=tok, steps=4)
    torch.testing.assert_close(c.fractions, torch.tensor([0.0] + fr, dtype=torch.float64))
    torch.testing.assert_close(c.probabilities[0], torch.tensor(dele, dtype=torch.float64), atol=TOL, rtol=0)
    assert c.full[0].item() == pytest.approx(full, abs=TOL) and dele[0] == pytest.approx(full, abs=TOL)
    ci = ev.perturbation_curve(model, [r], tokenizer=tok, kind="insertion", steps=4)
    torch.testing.assert_close(ci.probabilities[0], torch.tensor(ins, dtype=torch.float64), atol=TOL, rtol=0)
    assert ins[0] == pytest.approx(_p(model, [ids[0], ids[-1]], 1), abs=TOL)
    assert ev.aopc(model, r, tokenizer=tok, steps=4) == pytest.approx(sum(full - d for d in dele[1:]) / 4, abs=TOL)
    assert ev.aopc(model, r, tokenizer=tok, curve="insertion", steps=4) == pytest.approx(
        sum(full - p for p in ins[1:]) / 4, abs=TOL
    )


def test_aopc_with_eraser_bins(cls):
    model, tok = cls
    r = _result(tok, TEXT, _scores(), 0)
    ids = r.token_ids
    bins = [0.01, 0.05, 0.1, 0.2, 0.5]
    order = ev.ranking(r)
    full = _p(model, ids, 0)
    want = sum(
        full - _p(model, [t for j, t in enumerate(ids) if j not in order[: ev.n_top(f, 9)]], 0) for f in bins
    ) / len(bins)
    assert ev.aopc(model, r, tokenizer=tok, steps=bins) == pytest.approx(want, abs=TOL)


# --------------------------------------------------------------------------- other heads
def test_causal_next_token_reads_the_new_last_position(causal):
    model, tok = causal
    e = hfattr.Explainer(model, tok)
    r = e.explain("the cat sat on the", method="ablation")
    assert r.target["kind"] == "next_token"
    ids, t = r.token_ids, r.target["id"]
    order = ev.ranking(r)
    k = 2
    kept = [x for j, x in enumerate(ids) if j not in order[:k]]
    want = _p(model, ids, t) - _p(model, kept, t)  # _p reads the last position
    assert ev.comprehensiveness(e, r, top_k=k) == pytest.approx(want, abs=TOL)
    with pytest.raises(ValueError, match="empty input"):
        ev.comprehensiveness(e, r, top_k=1.0)
    with pytest.raises(ValueError, match="no mask token"):
        ev.log_odds(e, r)
    padded = [tok.pad_token_id if j in order[:k] else x for j, x in enumerate(ids)]
    assert ev.log_odds(e, r, top_k=k, replacement="pad") == pytest.approx(
        math.log(_p(model, padded, t)) - math.log(_p(model, ids, t)), abs=TOL
    )


def test_masked_lm_keeps_the_target_position():
    model, tok = tiny("bert", "masked-lm", dtype=torch.float64)
    text = "the movie was [MASK] and fun"
    ids = _ids(tok, text)
    p = ids.index(tok.mask_token_id)
    scores = [0.0] * len(ids)
    scores[p] = 50.0  # the best score sits on the target position, which must stay
    scores[2], scores[1] = 2.0, 1.0
    r = _result(tok, text, scores, 7, kind="masked", positions=[p])
    kept = [x for j, x in enumerate(ids) if j != 2]
    want = _p(model, ids, 7, p) - _p(model, kept, 7, p - 1)
    assert ev.comprehensiveness(model, r, tokenizer=tok, top_k=1) == pytest.approx(want, abs=TOL)
    assert p not in ev.ranking(r)


# --------------------------------------------------------------------------- errors and hygiene
def test_model_state_is_restored(cls):
    model, tok = cls
    r = _result(tok, TEXT, _scores(), 1)
    model.train()
    try:
        flags = [p.requires_grad for p in model.parameters()]
        ev.comprehensiveness(model, r, tokenizer=tok)
        assert model.training
        assert [p.requires_grad for p in model.parameters()] == flags
    finally:
        model.eval()


def test_errors(cls, causal):
    model, tok = cls
    r = _result(tok, TEXT, _scores(), 1)
    e = hfattr.Explainer(model, tok)
    with pytest.raises(TypeError, match="tokenizer="):
        ev.comprehensiveness(model, r)
    with pytest.raises(TypeError, match="tokenizer="):
        ev.comprehensiveness(e, r, tokenizer=causal[1])
    with pytest.raises(TypeError, match="model must be"):
        ev.comprehensiveness("bert", r, tokenizer=tok)
    with pytest.raises(ValueError, match="empty list"):
        ev.sufficiency(e, [])
    with pytest.raises(TypeError, match=r"results\[1\]"):
        ev.sufficiency(e, [r, "text"])
    with pytest.raises(ValueError, match="replacement"):
        ev.comprehensiveness(e, r, replacement="zero")
    with pytest.raises(ValueError, match="outside the vocabulary"):
        ev.comprehensiveness(e, r, replacement=10**6)
    with pytest.raises(ValueError, match="by must be"):
        ev.comprehensiveness(e, r, by="rank")
    with pytest.raises(ValueError, match="top_k"):
        ev.comprehensiveness(e, r, top_k=2.0)
    with pytest.raises(ValueError, match="metrics"):
        ev.faithfulness(e, r, metrics=["accuracy"])
    with pytest.raises(ValueError, match="steps"):
        ev.aopc(e, r, steps=[0.5, 0.2])
    with pytest.raises(ValueError, match="steps"):
        ev.aopc(e, r, steps=0)
    with pytest.raises(ValueError, match="curve"):
        ev.aopc(e, r, curve="both")
    grid = e.explain(TEXT, method="layer_ablation")
    with pytest.raises(ValueError, match="rows of scores"):
        ev.comprehensiveness(e, grid)
    neuron = e.explain(TEXT, method="neuron_gradient", site="blocks.0.mlp", neuron=1)
    with pytest.raises(ValueError, match=r"results\[1\] explains target"):
        ev.comprehensiveness(e, [r, neuron])
    with pytest.raises(ValueError, match="word-level"):
        ev.comprehensiveness(e, e.explain(TEXT).aggregate("word"))
    gpt_r = hfattr.Explainer(*causal).explain("the cat sat")
    with pytest.raises(ValueError, match="'causal' head"):
        ev.check_result(hfattr.Explainer(*causal), r)
    with pytest.raises(ValueError, match="'class' head"):
        ev.check_result(e, gpt_r)
    bad = _result(tok, TEXT, _scores(), 1)
    bad.token_ids[3] = 10**6
    with pytest.raises(ValueError, match="vocabulary"):
        ev.check_result(e, bad)
