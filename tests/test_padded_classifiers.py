"""Decoder sequence classifiers (GPT-2, Llama, ...) read the class at the last non-padding token,
which they find from input ids; on embeddings they read the last column. A padded batch must give
the numbers of each text alone (it gave 0.26-0.54 off for the shorter text before)."""

from __future__ import annotations

import pytest
import torch
from captum.attr import FeatureAblation as CaptumFA

from hfattr import Explainer
from hfattr.hf.targets import pools_last_token
from hfattr.testing import tiny

TEXTS = ["a b c d e f g h", "a b"]


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
@pytest.mark.parametrize("method", ["ablation", "sig"])
def test_padded_batch_equals_each_text_alone(arch, method):
    model, tok = tiny(arch, "sequence-classification")
    model.config.pad_token_id = tok.pad_token_id
    assert pools_last_token(model)
    ex = Explainer(model, tok)
    opts = {"n_steps": 4} if method == "sig" else {}
    both = ex.explain(TEXTS, method=method, **opts)
    for text, b in zip(TEXTS, both):
        one = ex.explain(text, method=method, **opts)
        assert b.target == one.target
        assert torch.allclose(b.scores, one.scores, atol=1e-6), (b.scores - one.scores).abs().max()
        assert b.probability == pytest.approx(one.probability, abs=1e-6)


def test_short_text_in_a_padded_batch_matches_captum():
    """Oracle: captum FeatureAblation on the short text's own embeddings, for the class the model
    predicts from its input ids (float64)."""
    model, tok = tiny("gpt2", "sequence-classification")
    model.config.pad_token_id = tok.pad_token_id
    model.double()
    res = Explainer(model, tok).explain(TEXTS, method="ablation", baseline="zero", keep_special=False)[1]
    ids = tok(TEXTS[1], return_tensors="pt")["input_ids"]
    with torch.no_grad():
        label = int(model(input_ids=ids).logits.argmax(-1))
    emb = model.get_input_embeddings()(ids).detach()
    n = emb.shape[1]
    ref = CaptumFA(lambda e: model(inputs_embeds=e).logits).attribute(
        emb, target=label, feature_mask=torch.arange(n).view(1, n, 1)
    )[0, :, 0]
    assert model.config.id2label[label] == res.target["label"]
    assert torch.allclose(res.scores.double(), ref, atol=1e-10)


def test_encoder_classifiers_keep_batching():
    model, _ = tiny("bert", "sequence-classification")
    assert not pools_last_token(model)
