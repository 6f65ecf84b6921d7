"""The unperturbed forward runs once: the target prediction's logits serve the ablation's unperturbed
evaluation and the step scores (probability, rank) — with the same numbers as separate forwards."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from captum.attr import FeatureAblation as CaptumFA

from hfattr import Explainer
from hfattr.hf.targets import input_logits, resolve_targets
from hfattr.hf.text import encode
from hfattr.testing import tiny

TEXT = "the quick brown fox jumps over the lazy dog again and again"


def counting(model):
    """Wrap ``model.forward``; returns the list of (batch, length) of every call."""
    calls = []
    orig = model.forward

    def wrapped(*args, **kw):
        x = kw.get("inputs_embeds") if kw.get("inputs_embeds") is not None else kw.get("input_ids")
        calls.append(tuple(x.shape[:2]))
        return orig(*args, **kw)

    model.forward = wrapped
    return calls


@pytest.mark.parametrize("ppe", [4, 16])
def test_classifier_ablation_runs_captums_number_of_forwards(ppe):
    """Prediction (= the unperturbed evaluation) + one call per batch of perturbations: what
    captum's FeatureAblation needs with a given target; the numbers match captum's (float64)."""
    model, tok = tiny("bert", "sequence-classification")
    model.double()
    ex = Explainer(model, tok)
    calls = counting(model)
    res = ex.explain(TEXT, method="ablation", perturbations_per_eval=ppe, keep_special=False, baseline="zero")
    n = res.n_tokens
    assert len(calls) == 1 + math.ceil(n / ppe), calls
    # oracle: captum on the same embeddings, for the predicted class
    emb = model.get_input_embeddings()(tok(TEXT, return_tensors="pt")["input_ids"]).detach()

    def fwd(e):  # the unwrapped forward (not counted)
        return type(model).forward(model, inputs_embeds=e, attention_mask=torch.ones(e.shape[:2])).logits

    with torch.no_grad():
        label = int(fwd(emb).argmax(-1))
        p = torch.softmax(fwd(emb)[0], -1)[label].item()
    ref = CaptumFA(fwd).attribute(emb, target=label, feature_mask=torch.arange(n).view(1, n, 1))[0, :, 0]
    assert torch.allclose(res.scores.double(), ref, atol=1e-10), (res.scores - ref).abs().max()
    assert res.probability == pytest.approx(p, abs=1e-10)  # the step score comes from the same logits


def test_causal_ablation_forwards_and_probability():
    """Causal LM: prediction + the prefix-cache forward + perturbation batches; no forward for the
    step scores, whose probability equals a plain forward's softmax."""
    model, tok = tiny("gpt2", "causal-lm")
    model.double()
    ex = Explainer(model, tok)
    calls = counting(model)
    res = ex.explain(TEXT, method="ablation", perturbations_per_eval=64, keep_special=False)
    assert len(calls) == 3, calls
    ids = tok(TEXT, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        logits = type(model).forward(model, input_ids=ids, use_cache=False).logits[0, -1]
    nxt = int(logits.argmax())
    assert res.probability == pytest.approx(torch.softmax(logits, -1)[nxt].item(), abs=1e-10)


def test_remembered_logits_are_dropped_when_the_ids_change():
    model, tok = tiny("bert", "sequence-classification")
    enc, _ = encode(tok, [TEXT])
    resolve_targets(model, tok, enc, None)
    assert input_logits(enc) is not None
    assert input_logits(enc.to("cpu")) is not None  # moved copies keep it
    other = dataclasses.replace(enc, input_ids=enc.input_ids.flip(-1))
    assert input_logits(other) is None
    masked = dataclasses.replace(enc, attention_mask=torch.zeros_like(enc.attention_mask))
    assert input_logits(masked) is None
