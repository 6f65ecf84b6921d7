"""NaN/Inf never pass silently: in the prediction, a baseline, an output under a perturbation, the scores.

Each case asserts the error names where the non-finite value appeared, and that the model is left
exactly as it was. A generation's empty entries (NaN by design, after each row's own position) are
accepted; any other NaN in its scores is refused.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from hfattr import Explainer, FeatureAblation, NonFiniteError, SequentialIntegratedGradients
from hfattr.core import ModelState
from hfattr.explainer import check_result_finite, empty_entries
from hfattr.lrp import LRP
from hfattr.methods import register_method
from hfattr.methods.fields import per_text
from hfattr.testing import tiny


@pytest.fixture(scope="module")
def bert():
    torch.set_num_threads(1)
    return tiny("bert", num_layers=1, hidden=8, heads=2, dtype=torch.float64)


def _poisoned(bert, where):
    model, tok = bert
    saved = {n: p.detach().clone() for n, p in model.named_parameters()}
    param = dict(model.named_parameters())[where[0]]
    with torch.no_grad():
        param[where[1]] = float("nan")
    return model, tok, saved


def _restore(model, saved):
    with torch.no_grad():
        for n, p in model.named_parameters():
            p.copy_(saved[n])


@pytest.mark.parametrize(
    "method,fragment",
    [
        ("ablation", "output at the unperturbed input is not finite"),
        ("layer_ablation", "output at the unperturbed input is not finite"),
        ("lrp", "prediction (the explained logits) is not finite"),
        ("sig", "SIG path gradient of inputs[0] is not finite"),
    ],
)
def test_nan_weight_in_the_head(bert, method, fragment):
    model, tok, saved = _poisoned(bert, ("classifier.weight", (0, 0)))
    try:
        before = ModelState.of(model)
        with pytest.raises(
            NonFiniteError,
            match=fragment.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[").replace("]", r"\]"),
        ):
            Explainer(model, tok).explain("a good movie", method=method, target=0)
        assert ModelState.of(model) == before
    finally:
        _restore(model, saved)


def test_nan_baseline_embedding(bert):
    mask_id = bert[1].mask_token_id
    model, tok, saved = _poisoned(bert, ("bert.embeddings.word_embeddings.weight", (mask_id,)))
    try:
        with pytest.raises(NonFiniteError, match=f"baseline embedding \\(token id {tok.mask_token_id}\\)"):
            Explainer(model, tok).explain("a good movie")
        # another baseline works
        r = Explainer(model, tok).explain("a good movie", baseline="pad")
        assert torch.isfinite(r.scores).all()
    finally:
        _restore(model, saved)


def test_nan_input_embedding(bert):
    model, tok = bert
    tid = tok.convert_tokens_to_ids("movie")
    model, tok, saved = _poisoned(bert, ("bert.embeddings.word_embeddings.weight", (tid,)))
    try:
        with pytest.raises(NonFiniteError, match="input embeddings is not finite"):
            Explainer(model, tok).explain("a good movie")
    finally:
        _restore(model, saved)


def test_nan_only_under_a_perturbation():
    def forward(x):  # finite at the input, NaN when feature 1 is at its baseline (0)
        out = x.sum(1, keepdim=True)
        return torch.where(x[:, 1:2] == 0, torch.full_like(out, float("nan")), out)

    x = torch.ones(2, 3, dtype=torch.float64)
    with pytest.raises(NonFiniteError, match=r"feature id\(s\) \[1\] of input 0 ablated"):
        FeatureAblation(forward).attribute(x, target=0)


def test_inf_input_to_sig_and_lrp():
    net = nn.Sequential(nn.Linear(3, 2)).double()
    x = torch.tensor([[1.0, float("inf"), 0.0]], dtype=torch.float64)
    with pytest.raises(NonFiniteError, match=r"inputs\[0\] is not finite"):
        SequentialIntegratedGradients(net).attribute(x.unsqueeze(1).expand(1, 2, 3).contiguous(), target=0, n_steps=2)
    with pytest.raises(NonFiniteError, match="the explained output is not finite"):
        LRP(net).attribute(x, target=0)
    with pytest.raises(NonFiniteError, match=r"baselines\[0\] is not finite"):
        SequentialIntegratedGradients(net).attribute(
            torch.ones(1, 2, 3, dtype=torch.float64), target=0, baselines=float("nan"), n_steps=2
        )


def test_nan_scores_from_a_method_name_it(bert):
    model, tok = bert

    def broken(prep, *, where: int = 1):
        scores = torch.zeros(prep.enc.input_ids.shape, dtype=torch.float64)
        scores[:, where] = float("nan")
        return per_text(prep, scores)

    handle = register_method("broken_nan", broken)
    try:
        with pytest.raises(NonFiniteError, match="attribution scores of method 'broken_nan', result 0"):
            Explainer(model, tok).explain("a good movie", method="broken_nan")
    finally:
        handle.remove()


def _generation_fields(scores):
    return {
        "scores": scores,
        "target": {"kind": "generation", "prompt_length": 3},
        "probability": [0.5, 0.5],
        "text": "x",
    }


def test_generation_empty_entries_are_not_an_error():
    nan = float("nan")
    # 2 generated tokens after a 3-token prompt: row 0 explains from columns 0..2, row 1 from 0..3
    ok = torch.tensor([[0.1, 0.2, 0.3, nan, nan], [0.1, 0.2, 0.3, 0.4, nan]])
    check_result_finite(_generation_fields(ok), method="g", index=0)
    assert empty_entries(ok, {"kind": "generation", "prompt_length": 3}).sum() == 3
    bad = ok.clone()
    bad[1, 2] = nan  # a real entry
    with pytest.raises(NonFiniteError, match=r"index \(1, 2\)"):
        check_result_finite(_generation_fields(bad), method="g", index=0)
    inf = ok.clone()
    inf[0, 4] = float("inf")  # empty entries are NaN, never Inf... but an Inf there is ignored too
    check_result_finite(_generation_fields(inf), method="g", index=0)
    with pytest.raises(NonFiniteError, match="predicted probability"):
        check_result_finite({**_generation_fields(ok), "probability": [0.5, nan]}, method="g", index=0)
    # the same NaN pattern on a non-generation Result is refused
    with pytest.raises(NonFiniteError):
        check_result_finite({"scores": ok, "target": {"kind": "class"}}, method="g", index=0)
