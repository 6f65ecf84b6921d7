"""Argument forms the reference accepts, against captum 0.8.0 / time-interpret 0.3.0 in float64:

* integer (and bool) inputs with a float baseline: the ablated input is promoted by torch's rules,
  the forward function sees the same dtypes as under captum, atol 1e-12;
* inputs of another length in dimension 0 ("sparse" id lists) with a one-value-per-batch output;
* SIG with ``internal_batch_size`` smaller than the batch: a warning, then the batch size, as
  time-interpret does (atol/rtol 1e-6: time-interpret rounds its quadrature weights to float32);
* a single ``layer_mask`` for a layer whose output holds several tensors (eager attention with
  real attention weights, Gemma-2): the mask applies to the first tensor, the others pass
  through; compared with the first member of captum's result for a tuple of masks, atol 1e-10.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import Tensor, nn

from conftest import oracle

import hfattr
from hfattr.testing import tiny_model

captum_attr = oracle("captum.attr")

D = torch.float64


class DtypeRecorder(nn.Module):
    """``(B, 3) -> (B, 2)``, any input dtype; records the dtype of every call's input."""

    def __init__(self) -> None:
        super().__init__()
        self.w = torch.tensor([[1.0, -2.0], [0.5, 3.0], [-1.5, 0.25]], dtype=D)
        self.seen: list[torch.dtype] = []

    def forward(self, x: Tensor) -> Tensor:
        self.seen.append(x.dtype)
        return torch.tanh(x.to(D) @ self.w)


def _fa_both(x, **kw):
    ours_net, ref_net = DtypeRecorder(), DtypeRecorder()
    ours = hfattr.FeatureAblation(ours_net).attribute(x, **kw)
    ref = captum_attr.FeatureAblation(ref_net).attribute(x, **kw)
    return ours, ref, ours_net.seen, ref_net.seen


INT_X = torch.tensor([[3, 1, 2], [4, 0, 5]])


@pytest.mark.parametrize("ppe", [1, 2])
@pytest.mark.parametrize(
    "baselines",
    [
        0.5,
        (0.5,),
        2,
        torch.tensor([[0.5, 1.5, 2.5]]),
        torch.tensor([0.5, 1.5, 2.5], dtype=D),
        torch.tensor([[1, 2, 3]]),
    ],
    ids=["float", "float-tuple", "int", "float32-tensor", "float64-tensor", "int-tensor"],
)
def test_integer_inputs_are_promoted_like_the_reference(baselines, ppe):
    ours, ref, seen, ref_seen = _fa_both(INT_X, baselines=baselines, target=1, perturbations_per_eval=ppe)
    assert seen == ref_seen  # same dtypes reach the model, call by call
    assert ours.dtype == ref.dtype
    torch.testing.assert_close(ours, ref, atol=1e-12, rtol=0)


@pytest.mark.parametrize("baselines", [None, True, False, 0.5], ids=["default", "True", "False", "float"])
def test_bool_inputs_are_promoted_like_the_reference(baselines):
    x = torch.tensor([[True, False, True], [False, False, True]])
    ours, ref, seen, ref_seen = _fa_both(x, baselines=baselines, target=0, perturbations_per_eval=2)
    assert seen == ref_seen
    torch.testing.assert_close(ours, ref, atol=1e-12, rtol=0)


def test_float32_input_with_float64_baseline_is_widened_like_the_reference():
    x = torch.tensor([[0.3, -1.2, 2.0]], dtype=torch.float32)
    ours, ref, seen, ref_seen = _fa_both(x, baselines=torch.tensor([[0.1, 0.2, 0.3]], dtype=D), target=1)
    assert seen == ref_seen and torch.float64 in seen
    torch.testing.assert_close(ours, ref, atol=1e-12, rtol=0)


def test_promotion_reaches_layer_ablation_too():
    # an integer layer value (an index tensor passed through an nn.Identity) with a float baseline
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.ids = nn.Identity()
            self.rec = DtypeRecorder()

        def forward(self, x: Tensor) -> Tensor:
            return self.rec(self.ids(x))

    ours_net, ref_net = Net(), Net()
    kw = dict(layer_baselines=0.5, target=1)
    ours = hfattr.LayerFeatureAblation(ours_net, ours_net.ids).attribute(INT_X, **kw)
    ref = captum_attr.LayerFeatureAblation(ref_net, ref_net.ids).attribute(INT_X, **kw)
    assert ours_net.rec.seen[1:] == ref_net.rec.seen[1:] and torch.float32 in ref_net.rec.seen
    torch.testing.assert_close(ours, ref, atol=1e-12, rtol=0)


class SparseSum(nn.Module):
    """One value for the whole batch; the second input is a list of ids of any length."""

    def forward(self, x: Tensor, ids: Tensor) -> Tensor:
        w = torch.tensor([3.0, 1.0, 2.0], dtype=D)
        return (x @ w + (ids[0] if ids.numel() else 0)).sum()


@pytest.mark.parametrize(
    "ids", [torch.tensor([], dtype=D), torch.tensor([1.0, 7.0, 2.0, 4.0, 5.0], dtype=D)], ids=["empty", "five"]
)
@pytest.mark.parametrize("mask", [None, (torch.tensor([[0, 0, 1]]), torch.tensor([0]))], ids=["no-mask", "mask"])
def test_sparse_inputs_of_another_length_with_an_aggregate_output(ids, mask):
    x = torch.tensor([[1.0, -2.0, 3.0], [2.0, -1.0, 3.0]], dtype=D)
    if mask is not None and ids.numel() == 0:
        mask = (mask[0], torch.zeros(0, dtype=torch.long))
    ours = hfattr.FeatureAblation(SparseSum()).attribute((x, ids), feature_mask=mask)
    ref = captum_attr.FeatureAblation(SparseSum()).attribute((x, ids), feature_mask=mask)
    assert [a.shape for a in ours] == [a.shape for a in ref] == [(1, 3), (1,) + tuple(ids.shape[1:])]
    for a, b in zip(ours, ref):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=0)


# ---------------------------------------------------------------------------------------------
# SIG: internal_batch_size below the batch size
# ---------------------------------------------------------------------------------------------


class SeqNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(5)
        self.w = nn.Parameter(torch.randn(3, 2, generator=g, dtype=D))

    def forward(self, x: Tensor) -> Tensor:
        h = torch.tanh(x @ self.w)
        return (h + h.mean(1, keepdim=True)).sum(1)


def test_sig_internal_batch_size_below_the_batch_warns_and_uses_the_batch(tint_attr):
    net = SeqNet()
    x = torch.randn(4, 3, 3, generator=torch.Generator().manual_seed(6), dtype=D)
    kw = dict(baselines=0.1, target=1, n_steps=6, internal_batch_size=2)
    with pytest.warns(UserWarning, match="internal_batch_size"):
        ours = hfattr.SequentialIntegratedGradients(net).attribute(x, **kw)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = tint_attr.SequentialIntegratedGradients(net).attribute(x, **kw)
    torch.testing.assert_close(ours, ref, atol=1e-6, rtol=1e-6)  # tint's float32 step sizes
    whole = hfattr.SequentialIntegratedGradients(net).attribute(x, **{**kw, "internal_batch_size": 4})
    torch.testing.assert_close(ours, whole, atol=1e-12, rtol=0)


# ---------------------------------------------------------------------------------------------
# a single layer_mask for a layer whose output holds several tensors
# ---------------------------------------------------------------------------------------------


class TwoOut(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(7)
        self.lin = nn.Linear(3, 4).to(D)
        with torch.no_grad():
            for p in self.lin.parameters():
                p.copy_(torch.randn(p.shape, generator=g, dtype=D))

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        h = self.lin(x)
        return h, torch.softmax(h, -1)


class UsesBoth(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.block = TwoOut()

    def forward(self, x: Tensor) -> Tensor:
        h, p = self.block(x)
        return torch.stack([(h * p).sum(-1), h.sum(-1)], -1)


def test_single_layer_mask_on_a_tuple_output_applies_to_the_first_tensor():
    net = UsesBoth()
    x = torch.randn(3, 3, generator=torch.Generator().manual_seed(8), dtype=D)
    mask = torch.tensor([[0, 0, 1, 2]])
    ref = captum_attr.LayerFeatureAblation(net, net.block).attribute(
        x, target=0, layer_mask=(mask, torch.zeros(1, 4, dtype=torch.long))
    )
    for ppe in (1, 2):
        ours = hfattr.LayerFeatureAblation(net, net.block).attribute(
            x, target=0, layer_mask=mask, perturbations_per_eval=ppe
        )
        assert isinstance(ours, Tensor)
        torch.testing.assert_close(ours, ref[0], atol=1e-10, rtol=0)
    # the reference itself fails on this form (it indexes a mask per tensor)
    with pytest.raises(IndexError):
        captum_attr.LayerFeatureAblation(net, net.block).attribute(x, target=0, layer_mask=mask)


def test_single_layer_mask_on_gemma2_eager_attention():
    """Gemma-2 eager attention returns (hidden, attention weights): a single mask ablates token
    positions of the hidden part; the weights pass through (computed from the same inputs)."""
    model = tiny_model("gemma2", "causal-lm", attn_implementation="eager", dtype=D)
    attn = model.model.layers[0].self_attn
    ids = torch.tensor([[1, 5, 7, 9, 3]])
    n = ids.shape[1]

    def fwd(x):
        return model(input_ids=x, use_cache=False).logits[:, -1]

    pos = torch.arange(n).view(1, n, 1)
    ours = hfattr.LayerFeatureAblation(fwd, attn).attribute(ids, target=11, layer_mask=pos, perturbations_per_eval=2)
    weights_mask = torch.full((1, 1, n, n), n, dtype=torch.long)
    ref = captum_attr.LayerFeatureAblation(fwd, attn).attribute(ids, target=11, layer_mask=(pos, weights_mask))
    assert isinstance(ours, Tensor) and ours.shape == ref[0].shape
    torch.testing.assert_close(ours, ref[0], atol=1e-10, rtol=0)
