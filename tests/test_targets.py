"""Targets through ``Explainer.explain``: label ids and names, defaults (argmax), masked LM, token
classification, continuations, seq2seq targets, ``score=`` and ``Result.probability``.

Every expected value comes from a plain transformers forward pass written here.
"""

from __future__ import annotations

import functools

import pytest
import torch

from hfattr import Explainer
from hfattr.testing import tiny

TEXT = "the movie was great"
F64 = torch.float64


@functools.lru_cache(maxsize=None)
def zoo(name: str, task: str = "auto", dtype: torch.dtype = torch.float32):
    return tiny(name, task, dtype=dtype)


def logits_of(model, tok, text: str, **kw) -> torch.Tensor:
    with torch.no_grad():
        return model(**tok(text, return_tensors="pt"), **kw).logits[0]


def default_baseline(tok) -> int:
    return next(i for i in (tok.mask_token_id, tok.pad_token_id, tok.unk_token_id) if i is not None)


def ablation_oracle(model, tok, text: str, value) -> torch.Tensor:
    """``value(e) - value(e with token i's embedding replaced by the baseline's)``, (R, L); special
    tokens 0."""
    enc = tok(text, return_tensors="pt")
    ids = enc["input_ids"]
    emb = model.get_input_embeddings()
    special = set(tok.all_special_ids)
    with torch.no_grad():
        e = emb(ids)
        base = emb(torch.tensor([[default_baseline(tok)]]))[0, 0]
        ref = value(e, enc)
        out = torch.zeros(ref.shape[0], ids.shape[1], dtype=ref.dtype)
        for i, t in enumerate(ids[0].tolist()):
            if t in special:
                continue
            e2 = e.clone()
            e2[0, i] = base
            out[:, i] = ref - value(e2, enc)
    return out


def close(actual, expected, atol=1e-6):
    torch.testing.assert_close(actual.to(F64), expected.to(F64), atol=atol, rtol=0)


# --------------------------------------------------------------------------- classification
def test_label_id_and_label_name_name_the_same_class():
    model, tok = zoo("bert")
    ex = Explainer(model, tok)
    scores = []
    for idx, name in model.config.id2label.items():
        by_id, by_name = ex.explain(TEXT, target=idx), ex.explain(TEXT, target=name)
        assert by_id.target == by_name.target == {"kind": "class", "id": idx, "label": name}
        assert torch.equal(by_id.scores, by_name.scores)
        scores.append(by_id.scores)
    assert not torch.allclose(scores[0], scores[1])


@pytest.mark.parametrize(
    "name, task",
    [
        ("bert", "auto"),
        ("roberta", "auto"),
        ("distilbert", "auto"),
        ("gpt2", "sequence-classification"),
        ("llama", "sequence-classification"),
    ],
)
def test_class_default_is_the_prediction_and_probability_is_its_softmax(name, task):
    model, tok = zoo(name, task)
    logits = logits_of(model, tok, TEXT)
    pred = int(logits.argmax())
    ex = Explainer(model, tok)
    r = ex.explain(TEXT)
    assert r.target == {"kind": "class", "id": pred, "label": model.config.id2label[pred]}
    assert r.probability == pytest.approx(float(logits.softmax(-1)[pred]), abs=1e-6)
    other = ex.explain(TEXT, target=1 - pred)
    assert other.probability == pytest.approx(float(logits.softmax(-1)[1 - pred]), abs=1e-6)


def test_class_ablation_values_for_an_explicit_label():
    model, tok = zoo("bert", "auto", F64)
    r = Explainer(model, tok).explain(TEXT, target="NEGATIVE")
    expected = ablation_oracle(
        model,
        tok,
        TEXT,
        lambda e, enc: model(
            inputs_embeds=e, attention_mask=enc["attention_mask"], token_type_ids=enc["token_type_ids"]
        ).logits[0, [0]],
    )
    close(r.scores, expected[0])


def test_a_target_list_gives_one_target_per_text():
    model, tok = zoo("bert")
    ex = Explainer(model, tok)
    texts = [TEXT, "bad film"]
    rs = ex.explain(texts, target=["POSITIVE", 0])
    assert [r.target["id"] for r in rs] == [1, 0]
    for text, target, r in zip(texts, ["POSITIVE", 0], rs):
        close(r.scores, ex.explain(text, target=target).scores, atol=1e-5)


# --------------------------------------------------------------------------- causal LM
@pytest.mark.parametrize("name", ["gpt2", "llama", "qwen2"])
def test_next_token_default_is_the_argmax(name):
    model, tok = zoo(name)
    logits = logits_of(model, tok, TEXT)[-1]
    pred = int(logits.argmax())
    r = Explainer(model, tok).explain(TEXT)
    assert r.target == {
        "kind": "next_token",
        "id": pred,
        "label": tok.convert_ids_to_tokens(pred),
        "positions": [len(r.tokens) - 1],
    }
    assert r.probability == pytest.approx(float(logits.softmax(-1)[pred]), abs=1e-6)


def test_token_id_target_equals_one_token_continuation():
    model, tok = zoo("gpt2")
    ex = Explainer(model, tok)
    great = tok.convert_tokens_to_ids("great")
    by_id, by_text = ex.explain(TEXT, target=great), ex.explain(TEXT, target=" great")
    assert by_id.target["id"] == great and by_text.target["ids"] == [great]
    assert by_id.target["positions"] == by_text.target["positions"]
    # a continuation is a generation matrix: prompt + continuation columns, the last one empty
    assert by_text.tokens == by_id.tokens + ["great"]
    assert by_text.scores.shape == (1, len(by_id.tokens) + 1) and torch.isnan(by_text.scores[0, -1])
    close(by_id.scores.reshape(-1), by_text.scores[0, :-1], atol=1e-6)
    logits = logits_of(model, tok, TEXT)[-1]
    assert by_id.probability == pytest.approx(float(logits.softmax(-1)[great]), abs=1e-6)
    assert by_text.probability == pytest.approx([by_id.probability], abs=1e-9)


@pytest.mark.parametrize("name", ["gpt2", "llama"])
def test_continuation_has_one_row_per_token_and_teacher_forced_probabilities(name):
    model, tok = zoo(name)
    prompt, cont = "the movie was", " great and good"
    c_ids = tok(cont, add_special_tokens=False)["input_ids"]
    full = tok(prompt)["input_ids"] + c_ids
    r = Explainer(model, tok).explain(prompt, target=cont)
    assert r.rows == tok.convert_ids_to_tokens(c_ids) == ["great", "and", "good"]
    assert r.tokens == tok.convert_ids_to_tokens(full)
    assert r.scores.shape == (3, len(full))
    assert r.target["kind"] == "continuation" and r.target["ids"] == c_ids
    n_prompt = len(tok(prompt)["input_ids"])
    assert r.target["positions"] == [n_prompt - 1, n_prompt, n_prompt + 1]
    assert r.target["prompt_length"] == n_prompt
    with torch.no_grad():
        probs = model(input_ids=torch.tensor([full])).logits[0].softmax(-1)
    expected = [float(probs[n_prompt - 1 + k, t]) for k, t in enumerate(c_ids)]
    assert r.probability == pytest.approx(expected, abs=1e-6)
    assert r.extras["step_scores"]["probability"] == pytest.approx(expected, abs=1e-6)
    special = torch.tensor(r.special_mask)
    assert torch.all(r.scores[:, special] == 0)
    for k, pos in enumerate(r.target["positions"]):  # row k is read at position pos: causal
        seen = ~special & (torch.arange(len(full)) <= pos)
        assert torch.all(r.scores[k, seen] != 0)
        assert torch.isnan(r.scores[k, pos + 1 :]).all()  # later tokens: empty
        assert not torch.isnan(r.scores[k, : pos + 1]).any()


# --------------------------------------------------------------------------- seq2seq
@pytest.mark.parametrize("name", ["t5", "bart"])
def test_seq2seq_default_and_target_text_rows(name):
    model, tok = zoo(name)
    ex = Explainer(model, tok)
    start = model.config.decoder_start_token_id
    first = logits_of(model, tok, TEXT, decoder_input_ids=torch.tensor([[start]]))[0]
    r = ex.explain(TEXT)
    pred = int(first.argmax())
    assert r.target["kind"] == "seq2seq" and r.target["id"] == pred
    assert r.scores.shape == (len(r.tokens),)
    assert r.probability == pytest.approx(float(first.softmax(-1)[pred]), abs=1e-6)

    tgt = tok("great movie", add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    r = ex.explain(TEXT, target="great movie")
    assert r.rows == ["great", "movie", tok.eos_token]
    assert r.tokens == tok.convert_ids_to_tokens(tok(TEXT)["input_ids"])  # the encoder input
    assert r.scores.shape == (3, len(r.tokens))
    probs = logits_of(model, tok, TEXT, decoder_input_ids=torch.tensor([[start] + tgt[:-1]])).softmax(-1)
    assert r.probability == pytest.approx([float(probs[k, t]) for k, t in enumerate(tgt)], abs=1e-6)


# --------------------------------------------------------------------------- masked LM
def test_masked_lm_targets_the_mask_position():
    model, tok = zoo("bert", "masked-lm", F64)
    text = "the movie was [MASK] ."
    ids = tok(text)["input_ids"]
    where = ids.index(tok.mask_token_id)
    logits = logits_of(model, tok, text)[where]
    ex = Explainer(model, tok)
    r = ex.explain(text)
    pred = int(logits.argmax())
    assert r.target == {"kind": "masked", "id": pred, "label": tok.convert_ids_to_tokens(pred), "positions": [where]}
    assert r.probability == pytest.approx(float(logits.softmax(-1)[pred]), abs=1e-6)

    great = tok.convert_tokens_to_ids("great")
    r = ex.explain(text, target="great")
    assert r.target["id"] == great
    assert r.probability == pytest.approx(float(logits.softmax(-1)[great]), abs=1e-6)
    expected = ablation_oracle(
        model,
        tok,
        text,
        lambda e, enc: model(inputs_embeds=e, attention_mask=enc["attention_mask"]).logits[0, where, [great]],
    )
    close(r.scores, expected[0])


def test_special_tokens_inside_the_text_are_kept_fixed():
    # [MASK] typed in the text is a special token: keep_special=True must never ablate it (with a
    # pad baseline, ablating it would change the output).
    model, tok = zoo("bert", "masked-lm")
    text = "the movie was [MASK] ."
    where = tok(text)["input_ids"].index(tok.mask_token_id)
    r = Explainer(model, tok).explain(text, baseline="pad")
    assert r.special_mask[where] is True
    assert r.scores[where] == 0


def test_masked_lm_with_two_masks_gives_two_rows():
    model, tok = zoo("bert", "masked-lm")
    text = "the [MASK] was [MASK] ."
    ids = tok(text)["input_ids"]
    where = [i for i, t in enumerate(ids) if t == tok.mask_token_id]
    r = Explainer(model, tok).explain(text, target="movie great")
    assert r.rows == ["movie", "great"] and r.scores.shape == (2, len(ids))
    assert r.target["positions"] == where
    probs = logits_of(model, tok, text).softmax(-1)
    wanted = tok.convert_tokens_to_ids(["movie", "great"])
    assert r.probability == pytest.approx([float(probs[p, w]) for p, w in zip(where, wanted)], abs=1e-6)


# --------------------------------------------------------------------------- token classification
@pytest.mark.parametrize("target", [(2, "POSITIVE"), (-4, 1)])
def test_token_classification_target_is_index_and_label(target):
    model, tok = zoo("bert", "token-classification", F64)
    n = len(tok(TEXT)["input_ids"])  # [CLS] the movie was great [SEP]
    pos = target[0] % n
    assert pos == 2
    r = Explainer(model, tok).explain(TEXT, target=target)
    assert r.target == {"kind": "token", "id": 1, "label": "POSITIVE", "positions": [pos]}
    logits = logits_of(model, tok, TEXT)[pos]
    assert r.probability == pytest.approx(float(logits.softmax(-1)[1]), abs=1e-6)
    expected = ablation_oracle(
        model,
        tok,
        TEXT,
        lambda e, enc: model(
            inputs_embeds=e, attention_mask=enc["attention_mask"], token_type_ids=enc["token_type_ids"]
        ).logits[0, pos, [1]],
    )
    close(r.scores, expected[0])


# --------------------------------------------------------------------------- score=
def test_score_prob_and_log_prob_are_differences_of_probabilities():
    model, tok = zoo("bert", "auto", F64)
    ex = Explainer(model, tok)

    def value(fn):
        return lambda e, enc: fn(
            model(inputs_embeds=e, attention_mask=enc["attention_mask"], token_type_ids=enc["token_type_ids"]).logits
        )[0, [1]]

    p = ex.explain(TEXT, target=1, score="prob")
    assert p.options["score"] == "prob"
    close(p.scores, ablation_oracle(model, tok, TEXT, value(lambda x: x.softmax(-1)))[0])
    assert torch.all(p.scores.abs() <= 1)
    perturbed = p.probability - p.scores  # the probability with each token ablated
    assert torch.all((perturbed >= 0) & (perturbed <= 1))
    lp = ex.explain(TEXT, target=1, score="log_prob")
    close(lp.scores, ablation_oracle(model, tok, TEXT, value(lambda x: x.log_softmax(-1)))[0])
    logit = ex.explain(TEXT, target=1)
    assert not torch.allclose(logit.scores.to(F64), p.scores.to(F64))
    assert p.probability == pytest.approx(logit.probability, abs=1e-12)  # unaffected by score=


def test_prob_scores_keep_float64_precision():
    # A float64 model should give float64 prob/log_prob scores and probabilities (no float32 step).
    model, tok = zoo("bert", "auto", F64)
    ex = Explainer(model, tok)
    p = ex.explain(TEXT, target=1, score="prob")
    assert p.scores.dtype == F64
    logits = logits_of(model, tok, TEXT)
    assert p.probability == pytest.approx(float(logits.softmax(-1)[1]), abs=1e-12)

    def value(e, enc):
        return model(
            inputs_embeds=e, attention_mask=enc["attention_mask"], token_type_ids=enc["token_type_ids"]
        ).logits.softmax(-1)[0, [1]]

    close(p.scores, ablation_oracle(model, tok, TEXT, value)[0], atol=1e-12)


def test_score_prob_on_a_language_model_is_bounded():
    model, tok = zoo("gpt2")
    r = Explainer(model, tok).explain(TEXT, target=" great and", score="prob")
    assert torch.all(r.scores.nan_to_num().abs() <= 1)
    perturbed = (torch.tensor(r.probability).unsqueeze(1) - r.scores).nan_to_num(0.5)
    assert torch.all((perturbed >= -1e-6) & (perturbed <= 1 + 1e-6))
