"""Every deliberate difference from the reference listed in docs/compatibility.md, pinned against
captum 0.8.0 / time-interpret 0.3.0 (the reference's behaviour is asserted too, so a test fails if
either side changes). Numbers in float64; closed forms at atol 1e-10.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import Tensor, nn

from conftest import oracle

import hfattr

captum_attr = oracle("captum.attr")

# captum's LRP notes that it switched requires_grad on for the inputs
pytestmark = pytest.mark.filterwarnings("ignore:Input Tensor.*did not already require gradients")

D = torch.float64


def _mlp(seed: int = 0, bias: bool = True) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    net = nn.Sequential(nn.Linear(3, 4, bias=bias), nn.ReLU(), nn.Linear(4, 2, bias=bias)).to(D)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=D))
    return net.eval()


X = torch.tensor([[0.5, -1.0, 2.0], [1.5, 0.25, -0.5]], dtype=D)


# ---------------------------------------------------------------------------------------------
# errors: ValueError / TypeError where the reference asserts
# ---------------------------------------------------------------------------------------------


def test_aggregate_output_with_several_perturbations_per_eval_is_a_value_error():
    net = _mlp()

    def total(x):
        return net(x).sum()

    with pytest.raises(AssertionError):
        captum_attr.FeatureAblation(total).attribute(X, perturbations_per_eval=2)
    with pytest.raises(ValueError, match="perturbations_per_eval"):
        hfattr.FeatureAblation(total).attribute(X, perturbations_per_eval=2)


def test_future_misuse_is_a_type_error():
    net = _mlp()

    def future(x):
        fut = torch.futures.Future()
        fut.set_result(net(x))
        return fut

    with pytest.raises(AssertionError):
        captum_attr.FeatureAblation(future).attribute(X, target=0)
    with pytest.raises(TypeError, match="attribute_future"):
        hfattr.FeatureAblation(future).attribute(X, target=0)
    with pytest.raises(AssertionError):
        captum_attr.FeatureAblation(net).attribute_future(X, target=0)
    with pytest.raises(TypeError, match="Future"):
        hfattr.FeatureAblation(net).attribute_future(X, target=0)


def test_inputs_of_other_lengths_need_an_aggregate_output():
    def per_example(x, extra):
        return x.sum(1) + extra.sum()

    sparse = torch.tensor([1.0, 7.0, 2.0])
    # the reference runs and returns numbers that mix the batch's examples; hfattr refuses
    captum_attr.FeatureAblation(per_example).attribute((X, sparse))
    with pytest.raises(ValueError, match=r"inputs\[1\] has batch size 3.*one value for the whole batch"):
        hfattr.FeatureAblation(per_example).attribute((X, sparse))
    with pytest.raises(ValueError, match="perturbations_per_eval"):
        hfattr.FeatureAblation(lambda x, e: per_example(x, e).sum()).attribute((X, sparse), perturbations_per_eval=2)


def test_sig_internal_batch_size_below_one_is_a_value_error(tint_attr):
    net = nn.Sequential(nn.Flatten(), nn.Linear(6, 2)).to(D)
    x = X.reshape(2, 3, 1).repeat(1, 1, 2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tint_attr.SequentialIntegratedGradients(net).attribute(x, target=0, n_steps=3, internal_batch_size=0)
    with pytest.raises(ValueError, match="internal_batch_size"):
        hfattr.SequentialIntegratedGradients(net).attribute(x, target=0, n_steps=3, internal_batch_size=0)


# ---------------------------------------------------------------------------------------------
# LRP: relevance conserved over summed inputs and reused modules; one output per example
# ---------------------------------------------------------------------------------------------


class SummedInputs(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = _mlp(1, bias=False)

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        return self.net(x + y)


def test_lrp_splits_relevance_over_summed_inputs():
    model = SummedInputs()
    x, y = X, 3 * X
    out = model(x, y)[:, 0].detach()
    (rx, ry), delta = hfattr.LRP(model).attribute((x, y), target=0, return_convergence_delta=True)
    # bias-free ReLU net, ε → 0: relevance is input × gradient, which sums to the output
    torch.testing.assert_close(delta, torch.zeros(2, dtype=D), atol=1e-7, rtol=0)
    torch.testing.assert_close(rx.sum(1) + ry.sum(1), out, atol=1e-7, rtol=0)
    torch.testing.assert_close(ry, 3 * rx, atol=1e-10, rtol=0)  # split in proportion to the summands
    (cx, cy), cdelta = captum_attr.LRP(model).attribute((x, y), target=0, return_convergence_delta=True)
    torch.testing.assert_close(cx.sum(1) + cy.sum(1), 2 * out, atol=1e-7, rtol=0)  # counted twice
    torch.testing.assert_close(cdelta, -out, atol=1e-7, rtol=0)


class ReusedLinear(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(2)
        self.lin = nn.Linear(3, 3, bias=False).to(D)
        self.relu = nn.ReLU()
        self.head = nn.Linear(3, 2, bias=False).to(D)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g, dtype=D))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.relu(self.lin(self.relu(self.lin(x)))))


def test_lrp_module_used_twice_conserves_relevance():
    model = ReusedLinear()
    with pytest.raises(RuntimeError, match="more than once"):
        captum_attr.LRP(model).attribute(X, target=1)
    rel, delta = hfattr.LRP(model).attribute(X, target=1, return_convergence_delta=True)
    torch.testing.assert_close(delta, torch.zeros(2, dtype=D), atol=1e-7, rtol=0)
    x = X.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(model(x)[:, 1].sum(), x)
    torch.testing.assert_close(rel, X * grad, atol=1e-7, rtol=0)  # ε-LRP of a bias-free ReLU net


def test_lrp_needs_one_output_per_example():
    net = _mlp()

    def first_only(x):
        return net(x)[0].unsqueeze(0)

    class FirstOnly(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = net

        def forward(self, x):
            return first_only(x)

    theirs = captum_attr.LRP(FirstOnly()).attribute(X, target=0)
    assert theirs.shape == X.shape
    with pytest.raises(ValueError, match="one value per example"):
        hfattr.LRP(FirstOnly()).attribute(X, target=0)


# ---------------------------------------------------------------------------------------------
# extensions: forms the reference fails on
# ---------------------------------------------------------------------------------------------


def test_single_layer_mask_on_a_tuple_value_is_an_extension():
    class Two(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = _mlp(3)[0]

        def forward(self, x):
            h = self.lin(x)
            return h, h.tanh()

    class Model(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.two = Two()

        def forward(self, x):
            a, b = self.two(x)
            return a + b

    model = Model()
    mask = torch.tensor([[0, 0, 1, 1]])
    with pytest.raises(IndexError):
        captum_attr.LayerFeatureAblation(model, model.two).attribute(X, target=1, layer_mask=mask)
    ours = hfattr.LayerFeatureAblation(model, model.two).attribute(X, target=1, layer_mask=mask)
    theirs = captum_attr.LayerFeatureAblation(model, model.two).attribute(
        X, target=1, layer_mask=(mask, torch.full_like(mask, 2))
    )
    torch.testing.assert_close(ours, theirs[0], atol=1e-12, rtol=0)
