"""hfattr.pipeline: every way of giving a model, single vs list, defaults vs per-call options, gradients."""

from __future__ import annotations

import pytest
import torch

from hfattr import Explainer, Result
from hfattr.pipeline import AttributionPipeline, pipeline
from hfattr.testing import save_tiny, tiny

TEXT = "the movie was great"
TEXTS = ["the movie was great", "a boring film", "i loved the acting and the music"]


@pytest.fixture(scope="module")
def bert():
    return tiny("bert")


@pytest.fixture(scope="module")
def reference(bert):
    """Explainer results the pipeline must reproduce exactly."""
    model, tok = bert
    ex = Explainer(model, tok)
    return ex.explain(TEXT), ex.explain(TEXTS)


def _same(a: Result, b: Result) -> None:
    assert a.tokens == b.tokens
    assert a.target == b.target
    torch.testing.assert_close(a.scores, b.scores, atol=1e-6, rtol=0)


def test_model_object_and_tokenizer(bert, reference):
    model, tok = bert
    pipe = pipeline(model=model, tokenizer=tok)
    assert isinstance(pipe, AttributionPipeline)
    assert pipe.model is model and pipe.tokenizer is tok and pipe.method == "ablation"
    assert isinstance(pipe.explainer, Explainer)
    one = pipe(TEXT)
    assert isinstance(one, Result)
    _same(one, reference[0])
    many = pipe(TEXTS, batch_size=2)
    assert isinstance(many, list) and len(many) == len(TEXTS)
    for got, want in zip(many, reference[1]):
        _same(got, want)
    # padding in a batch must not change a text's scores: batch vs one at a time
    for got, text in zip(many, TEXTS):
        _same(got, pipe(text))


def test_local_path(tmp_path, bert, reference):
    path = save_tiny("bert", tmp_path / "bert")
    pipe = pipeline("text-classification", path)
    assert pipe.explainer.model_name == str(path)
    assert type(pipe.model).__name__ == "BertForSequenceClassification"
    _same(pipe(TEXT), reference[0])
    # a model object loaded from a local directory finds its tokenizer there
    pipe2 = pipeline(model=pipe.model)
    assert pipe2.tokenizer is not None
    _same(pipe2(TEXT), reference[0])


def test_transformers_pipeline(bert, reference):
    import transformers

    model, tok = bert
    hf = transformers.pipeline("text-classification", model=model, tokenizer=tok)
    pipe = pipeline(model=hf)
    assert pipe.model is model and pipe.tokenizer is tok
    _same(pipe(TEXT), reference[0])


def test_default_model():
    pytest.importorskip("hfattr.hf.default_model")
    from hfattr.hf.default_model import DEFAULT_MODEL_NAME

    pipe = pipeline()
    assert pipe.explainer.model_name == DEFAULT_MODEL_NAME
    res = pipe("the movie was great", target="POSITIVE")
    assert res.target["label"] == "POSITIVE"
    top_token = res.top_k(1, by="value")[0][0]
    assert top_token == "great"
    both = pipe(["the movie was great", "the movie was terrible"], target="POSITIVE")
    assert [r.top_k(1, by="abs")[0][0] for r in both] == ["great", "terrible"]
    assert both[1].top_k(1, by="abs")[0][1] < 0
    with pytest.raises(ValueError, match="needs a model"):
        pipeline("causal-lm")
    with pytest.raises(ValueError, match="device_map='auto' is not supported"):
        pipeline(device_map="auto")


def _masked_oracle(model, tok, text: str, cls: int) -> dict[int, float]:
    """Closed form of token ablation with the [MASK] baseline on logits:
    score_i = logit_c(x) - logit_c(x with token i replaced by [MASK]), for non-special i."""
    enc = tok(text, return_tensors="pt")
    ids = enc["input_ids"]
    special = set(tok.all_special_ids)
    with torch.no_grad():
        full = model(**enc).logits[0, cls]
        out = {}
        for i, tid in enumerate(ids[0].tolist()):
            if tid in special:
                continue
            masked = ids.clone()
            masked[0, i] = tok.mask_token_id
            out[i] = float(full - model(**{**enc, "input_ids": masked}).logits[0, cls])
    return out


def test_defaults_and_per_call_overrides(bert):
    model, tok = bert
    pipe = pipeline(model=model, tokenizer=tok, target=1, perturbations_per_eval=1)
    res = pipe(TEXT)
    assert res.target["id"] == 1 and res.options["perturbations_per_eval"] == 1
    over = pipe(TEXT, target=0, perturbations_per_eval=4)
    assert over.target["id"] == 0 and over.options["perturbations_per_eval"] == 4
    # the defaults themselves are unchanged by a call's overrides
    assert pipe.defaults == {"target": 1, "perturbations_per_eval": 1}
    # both against the closed form (default score is the logit, default baseline [MASK])
    for r, cls in ((res, 1), (over, 0)):
        oracle = _masked_oracle(model, tok, TEXT, cls)
        assert sorted(oracle) == [i for i, s in enumerate(r.special_mask) if not s]
        for i, want in oracle.items():
            assert float(r.scores[i]) == pytest.approx(want, abs=1e-5)
    assert not torch.allclose(res.scores, over.scores)
    # a list of targets, one per text
    out = pipe(TEXTS[:2], target=[0, 1])
    assert [r.target["id"] for r in out] == [0, 1]
    # a different method per call keeps the general defaults only (target), not ablation's options
    grid = pipe(TEXT, method="layer_ablation", sites="mlp")
    assert grid.method == "layer_ablation" and grid.target["id"] == 1
    assert grid.scores.dim() == 2 and "perturbations_per_eval" not in grid.options


def test_neuron_gradient_matches_autograd_even_inside_no_grad(bert):
    model, tok = bert
    pipe = pipeline(model=model, tokenizer=tok, method="neuron_gradient", site="blocks.0.mlp", neuron=2, reduce="sum")
    outside = pipe(TEXT)
    with torch.no_grad():
        inside = pipe(TEXT)
    assert torch.is_grad_enabled()  # grad mode restored after the block
    torch.testing.assert_close(inside.scores, outside.scores, atol=0, rtol=0)
    # oracle: autograd by hand, d site[last, 2] / d word-embeddings, summed over the hidden dim
    enc = tok(TEXT, return_tensors="pt")
    emb = model.get_input_embeddings()(enc["input_ids"]).detach().requires_grad_(True)
    site = model.bert.encoder.layer[0].output.dense  # what blocks.0.mlp resolves to for BERT
    box = {}
    handle = site.register_forward_hook(lambda m, i, o: box.__setitem__("v", o))
    try:
        with torch.enable_grad():
            model(inputs_embeds=emb, attention_mask=enc["attention_mask"], token_type_ids=enc["token_type_ids"])
            last = int(enc["attention_mask"][0].sum()) - 1
            (grad,) = torch.autograd.grad(box["v"][0, last, 2], emb)
    finally:
        handle.remove()
    assert outside.scores.abs().sum() > 0
    torch.testing.assert_close(outside.scores, grad[0].sum(-1), atol=1e-5, rtol=1e-4)
    # the model is left as it was: trainable parameters, no stray gradients
    assert all(p.requires_grad for p in model.parameters())
    assert all(p.grad is None for p in model.parameters())


def test_errors(bert):
    model, tok = bert
    with pytest.raises(ValueError, match="unknown method 'nope'"):
        pipeline(model=model, tokenizer=tok, method="nope")
    with pytest.raises(TypeError, match="unknown option"):
        pipeline(model=model, tokenizer=tok, bogus=1)
    with pytest.raises(ValueError, match="tokenizer is required"):
        pipeline(model=model)
    with pytest.raises(TypeError, match="model must be"):
        pipeline(model=42)
    with pytest.raises(ValueError, match="unknown task"):
        pipeline("not-a-task", model=model, tokenizer=tok)
    with pytest.raises(FileNotFoundError, match="not an existing directory"):
        pipeline(model="./does/not/exist")
    with pytest.raises(ValueError, match="device_map"):
        pipeline(model=model, tokenizer=tok, device_map="cpu")
    pipe = pipeline(model=model, tokenizer=tok)
    with pytest.raises(ValueError, match="unknown label name"):
        pipe(TEXT, target="NOPE")
    with pytest.raises(TypeError, match="unknown option"):
        pipe(TEXT, bogus=1)
