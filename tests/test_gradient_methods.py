"""input_x_gradient, saliency and integrated_gradients (registered Explainer methods) against captum
0.8.0's InputXGradient, Saliency and IntegratedGradients on the input embeddings.

The oracle forward is written here from the model's own ``inputs_embeds`` call (not hfattr's target
forward). Float64 tiny models; tolerance 1e-9 absolute (the same arithmetic up to summation order),
plus 1e-6 relative for Integrated Gradients: captum casts its quadrature weights to float32.
"""

from __future__ import annotations

import warnings

import pytest
import torch

from hfattr import Explainer
from hfattr.planted import gradient_x_input
from hfattr.testing import tiny

captum_attr = pytest.importorskip("captum.attr")

TEXTS = ["the movie was great fun", "a terrible film"]
ATOL = 1e-9
IG_RTOL = 1e-6  # captum multiplies the gradients by float32 step sizes (relative error ~3e-8)


@pytest.fixture(scope="module")
def bert(bert64_explainer):
    return bert64_explainer


@pytest.fixture(scope="module")
def gpt2():
    model, tok = tiny("gpt2", dtype=torch.float64)
    return Explainer(model, tok)


def _inputs(explainer, result):
    """Embeddings of the Result's tokens, a forward on them, the special-token mask and the mask baseline."""
    model, tok = explainer.model, explainer.tokenizer
    ids = torch.tensor([result.token_ids])
    emb = model.get_input_embeddings()
    x = emb(ids).detach()
    special = torch.tensor([result.special_mask])
    mask_id = next(t for t in (tok.mask_token_id, tok.pad_token_id, tok.unk_token_id) if t is not None)
    base = emb(torch.full_like(ids, mask_id)).detach()
    base = torch.where(special.unsqueeze(-1), x, base)  # special tokens stay at their input
    return x, special, base


def _class_forward(model):
    return lambda e, c: model(inputs_embeds=e).logits[:, c]


def _token_forward(model, pos):
    return lambda e, t: model(inputs_embeds=e).logits[:, pos, t]


def _captum_rows(explainer, result, cls, **attr_kw):
    """captum's per-token scores (summed over the embedding) for every explained row of ``result``."""
    model = explainer.model
    x, special, base = _inputs(explainer, result)
    t = result.target
    if "ids" in t:  # several rows: (position, token) pairs
        pairs = list(zip(t["positions"], t["ids"]))
    elif t["kind"] == "class":
        pairs = [(None, t["id"])]
    else:
        pairs = [(t["positions"][0], t["id"])]
    rows = []
    for pos, idx in pairs:
        fwd = _class_forward(model) if pos is None else _token_forward(model, pos)
        method = cls(fwd)
        kw = dict(attr_kw)
        if cls is captum_attr.IntegratedGradients:
            kw["baselines"] = base
        if cls is captum_attr.Saliency:
            kw.setdefault("abs", True)
        attr = method.attribute(x.clone(), additional_forward_args=(idx,), **kw)
        rows.append(attr.sum(-1)[0].masked_fill(special[0], 0.0))
    return torch.stack(rows) if len(rows) > 1 else rows[0]


@pytest.mark.parametrize(
    "method,cls,kw,captum_kw",
    [
        ("input_x_gradient", "InputXGradient", {}, {}),
        ("saliency", "Saliency", {}, {}),
        ("saliency", "Saliency", {"abs": False}, {"abs": False}),
        ("integrated_gradients", "IntegratedGradients", {"n_steps": 16}, {"n_steps": 16, "method": "gausslegendre"}),
        (
            "integrated_gradients",
            "IntegratedGradients",
            {"n_steps": 12, "integration": "riemann_trapezoid", "internal_batch_size": 5},
            {"n_steps": 12, "method": "riemann_trapezoid"},
        ),
    ],
)
def test_matches_captum_on_a_classifier(bert, method, cls, kw, captum_kw):
    results = bert.explain(TEXTS, method=method, target=[1, 0], **kw)
    for r in results:
        want = _captum_rows(bert, r, getattr(captum_attr, cls), **captum_kw)
        rtol = IG_RTOL if method == "integrated_gradients" else 0
        torch.testing.assert_close(r.scores, want, rtol=rtol, atol=ATOL)
        assert r.scores[torch.tensor(r.special_mask)].eq(0).all()


@pytest.mark.parametrize(
    "method,cls,kw",
    [
        ("input_x_gradient", "InputXGradient", {}),
        ("saliency", "Saliency", {}),
        ("integrated_gradients", "IntegratedGradients", {"n_steps": 8}),
    ],
)
def test_matches_captum_on_a_continuation(gpt2, method, cls, kw):
    r = gpt2.explain("the movie was", method=method, target=" great fun", **kw)
    assert r.scores.dim() == 2 and r.scores.shape[0] == len(r.target["ids"])
    captum_kw = {"n_steps": 8, "method": "gausslegendre"} if "n_steps" in kw else {}
    want = _captum_rows(gpt2, r, getattr(captum_attr, cls), **captum_kw)
    # the generation contract: row j is empty (NaN) from its own position on; captum's causal
    # gradients are exactly 0 there
    empty = r.scores.isnan()
    P = r.target["prompt_length"]
    cols = torch.arange(r.scores.shape[1])
    assert torch.equal(empty, cols.unsqueeze(0) >= P + torch.arange(r.scores.shape[0]).unsqueeze(1))
    assert want[empty[:, : want.shape[1]]].eq(0).all()
    rtol = IG_RTOL if method == "integrated_gradients" else 0
    torch.testing.assert_close(r.scores[~empty], want[~empty[:, : want.shape[1]]], rtol=rtol, atol=ATOL)


def test_integrated_gradients_delta_is_its_completeness_error(bert):
    r = bert.explain(TEXTS[0], method="integrated_gradients", target=1, n_steps=16)
    x, _, base = _inputs(bert, r)
    f = _class_forward(bert.model)
    with torch.no_grad():
        change = float(f(x, 1) - f(base, 1))
    assert r.delta == pytest.approx(float(r.scores.sum()) - change, abs=1e-9)
    assert abs(r.delta) < 1e-2  # 16 Gauss-Legendre points on a tiny model


def test_input_x_gradient_from_the_baseline(bert):
    plain = bert.explain(TEXTS[0], method="input_x_gradient", target=1)
    zero = bert.explain(TEXTS[0], method="input_x_gradient", target=1, baseline="zero", from_baseline=True)
    torch.testing.assert_close(zero.scores, plain.scores, rtol=0, atol=0)
    masked = bert.explain(TEXTS[0], method="input_x_gradient", target=1, from_baseline=True)
    x, special, base = _inputs(bert, masked)
    xg = captum_attr.InputXGradient(_class_forward(bert.model)).attribute(x.clone(), additional_forward_args=(1,))
    grad = xg / torch.where(x == 0, torch.ones_like(x), x)
    want = ((x - base) * grad).sum(-1)[0].masked_fill(special[0], 0.0)
    torch.testing.assert_close(masked.scores, want, rtol=0, atol=1e-8)


def test_bad_options_fail_before_any_work(bert):
    with pytest.raises(ValueError, match="integration must be one of"):
        bert.explain(TEXTS[0], method="integrated_gradients", integration="simpson")
    with pytest.raises(ValueError, match="n_steps"):
        bert.explain(TEXTS[0], method="integrated_gradients", n_steps=0)
    with pytest.raises(TypeError, match="abs must be a bool"):
        bert.explain(TEXTS[0], method="saliency", abs="yes")
    with pytest.raises(TypeError, match="unknown option"):
        bert.explain(TEXTS[0], method="input_x_gradient", n_steps=3)


def test_planted_gradient_x_input_is_a_deprecated_alias(bert):
    with pytest.warns(DeprecationWarning, match="gradient_x_input is deprecated"):
        old = gradient_x_input(bert, TEXTS, target=[1, 0])
    new = bert.explain(TEXTS, method="input_x_gradient", target=[1, 0], baseline="zero", from_baseline=True)
    assert [r.method for r in old] == ["input_x_gradient"] * 2
    for a, b in zip(old, new):
        torch.testing.assert_close(a.scores, b.scores, rtol=0, atol=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        with pytest.raises(TypeError, match="pass tokenizer="):
            gradient_x_input(bert.model, TEXTS[0])
        one = gradient_x_input(bert.model, TEXTS[0], tokenizer=bert.tokenizer, target=1, baseline="mask")
    assert one.options["baseline"] == "mask"
