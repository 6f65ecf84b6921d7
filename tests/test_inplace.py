"""In-place operations in the model never change a recorded value or gradient.

Every net here exists twice: with in-place operations (``nn.ReLU(inplace=True)``, ``h += x``,
``x.mul_(2)`` on the input) and as an out-of-place twin with the same weights. Oracles: closed
forms, Captum 0.8.0 on the twin, or the twin itself where it is checked against Captum elsewhere.
float64; tolerance 1e-10 unless stated.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from hfattr import FeatureAblation, LayerFeatureAblation, NeuronGradient, SequentialIntegratedGradients
from hfattr.lrp import LRP, EpsilonRule, IdentityRule

captum_attr = pytest.importorskip("captum.attr")
D64 = torch.float64
ATOL = 1e-10


def _seeded(module: nn.Module, seed: int = 0) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=D64) * 0.7)
    return module.to(D64).eval()


def _x(*shape: int, seed: int = 1) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=D64)


def _mlp(inplace: bool) -> nn.Sequential:
    return _seeded(nn.Sequential(nn.Linear(3, 4), nn.ReLU(inplace=inplace), nn.Linear(4, 2)))


class Residual(nn.Module):
    """``relu(fc1(x) + x)`` then ``fc2``; the in-place form adds and rectifies in place."""

    def __init__(self, inplace: bool) -> None:
        super().__init__()
        self.inplace = inplace
        self.fc1, self.act, self.fc2 = nn.Linear(4, 4), nn.ReLU(inplace=inplace), nn.Linear(4, 2)
        _seeded(self, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.fc1(x)
        if self.inplace:
            h += x
        else:
            h = h + x
        return self.fc2(self.act(h))


class Blocks(nn.Module):
    """A ModuleList of residual blocks (the layer-ablation fast path records their outputs)."""

    def __init__(self, inplace: bool) -> None:
        super().__init__()
        self.inplace = inplace
        self.blocks = nn.ModuleList([nn.Linear(4, 4) for _ in range(3)])
        self.head = nn.Linear(4, 2)
        _seeded(self, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x
        for block in self.blocks:
            out = block(h)
            if self.inplace:
                out += h  # changes the block's recorded output in place
                h = out.tanh_()
            else:
                h = (out + h).tanh()
        return self.head(h)


class DoublesInput(nn.Module):
    """Starts by doubling its input, in place or not."""

    def __init__(self, inplace: bool) -> None:
        super().__init__()
        self.inplace = inplace
        self.fc1, self.act, self.fc2 = nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)
        _seeded(self, 7)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.mul_(2) if self.inplace else x * 2
        return self.fc2(self.act(self.fc1(x)))


# --------------------------------------------------------------------------- neuron gradient
def test_neuron_gradient_of_a_linear_before_an_inplace_relu_is_its_weight_row():
    net, x = _mlp(True), _x(5, 3)
    assert (net[0](x)[:, 0] < 0).any() and (net[0](x)[:, 0] > 0).any()  # the ReLU zeroes some rows
    ours = NeuronGradient(net, net[0]).attribute(x, 0)
    torch.testing.assert_close(ours, net[0].weight[0].detach().expand(5, 3), atol=ATOL, rtol=0)
    twin = _mlp(False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = captum_attr.NeuronGradient(twin, twin[0]).attribute(x, 0)
    torch.testing.assert_close(ours, ref, atol=ATOL, rtol=0)


def test_neuron_gradient_before_an_inplace_residual_add():
    net, x = Residual(True), _x(4, 4)
    ours = NeuronGradient(net, net.fc1).attribute(x, 2)
    torch.testing.assert_close(ours, net.fc1.weight[2].detach().expand(4, 4), atol=ATOL, rtol=0)


def test_neuron_gradient_to_the_input_of_an_inplace_module():
    net, x = _mlp(True), _x(5, 3)
    ours = NeuronGradient(net, net[1]).attribute(x, 3, attribute_to_neuron_input=True)
    torch.testing.assert_close(ours, net[0].weight[3].detach().expand(5, 3), atol=ATOL, rtol=0)


def test_neuron_gradient_of_a_forward_that_changes_its_input_in_place():
    net, x = DoublesInput(True), _x(5, 3)
    kept = x.clone()
    ours = NeuronGradient(net, net.fc1).attribute(x, 0)
    torch.testing.assert_close(ours, 2 * net.fc1.weight[0].detach().expand(5, 3), atol=ATOL, rtol=0)
    assert torch.equal(x, kept)


# --------------------------------------------------------------------------- layer ablation
@pytest.mark.parametrize(
    "make, layer", [(_mlp, lambda m: m[0]), (Residual, lambda m: m.fc1), (Blocks, lambda m: m.blocks[1])]
)
def test_layer_ablation_matches_captum_on_the_out_of_place_twin(make, layer):
    net, twin = make(True), make(False)
    x = _x(3, 3 if make is _mlp else 4)
    ref = captum_attr.LayerFeatureAblation(twin, layer(twin)).attribute(x, target=1)
    for ppe in (1, 3):
        ours = LayerFeatureAblation(net, layer(net)).attribute(x, target=1, perturbations_per_eval=ppe)
        torch.testing.assert_close(ours, ref, atol=ATOL, rtol=0)


def test_ablation_refuses_a_forward_that_changes_its_input_in_place():
    net, x = DoublesInput(True), _x(2, 3)
    with pytest.raises(ValueError, match=r"changed inputs\[0\] in place"):
        FeatureAblation(net).attribute(x, target=0)
    with pytest.raises(ValueError, match=r"changed inputs\[0\] in place"):
        LayerFeatureAblation(net, net.fc1).attribute(_x(2, 3), target=0)


# --------------------------------------------------------------------------- LRP
def test_lrp_epsilon_factor_is_taken_before_an_inplace_residual_add():
    net, x = Residual(True), _x(3, 4)
    net.fc1.rule, net.fc2.rule = EpsilonRule(0.5), EpsilonRule(0.0)
    ours = LRP(net).attribute(x, target=1)
    # closed form: the gradient through fc1 is scaled by z / (z + 0.5 sign z), z = fc1(x)
    with torch.no_grad():
        z = net.fc1(x)
        g_h = net.fc2.weight[1] * ((z + x) > 0)
        grad = g_h + (g_h * z / (z + 0.5 * torch.where(z >= 0, 1.0, -1.0).to(D64))) @ net.fc1.weight
    torch.testing.assert_close(ours, x * grad, atol=ATOL, rtol=0)
    twin = Residual(False)
    twin.fc1.rule, twin.fc2.rule = EpsilonRule(0.5), EpsilonRule(0.0)
    torch.testing.assert_close(ours, LRP(twin).attribute(x, target=1), atol=ATOL, rtol=0)


@pytest.mark.parametrize(
    "act",
    [
        lambda ip: nn.Hardtanh(-0.5, 0.5, inplace=ip),
        lambda ip: nn.ELU(inplace=ip),
        lambda ip: nn.LeakyReLU(0.1, inplace=ip),
    ],
)
def test_lrp_identity_rule_on_an_inplace_activation(act):
    nets = [_seeded(nn.Sequential(nn.Linear(3, 4), act(ip), nn.Linear(4, 2)), 9) for ip in (True, False)]
    x = _x(4, 3) * 2
    ours, twin = (LRP(n).attribute(x, target=0) for n in nets)
    # closed form (epsilon composite: ε = 1e-9 on the linear maps, identity on the activation)
    with torch.no_grad():
        z = nets[1][0](x)
        ratio = nets[1][1](z) / z
        expected = x * ((nets[1][2].weight[0] * ratio) @ nets[1][0].weight)
    torch.testing.assert_close(ours, expected, atol=1e-7, rtol=0)
    torch.testing.assert_close(ours, twin, atol=ATOL, rtol=0)
    assert nets[0][1].inplace is True  # switched back after the call


def test_lrp_refuses_a_ruled_module_that_changes_its_input_in_place():
    class Squash(nn.Module):
        def forward(self, x):
            return x.tanh_()

    net = _seeded(nn.Sequential(nn.Linear(3, 4), Squash(), nn.Linear(4, 2)))
    net[1].rule = IdentityRule()
    with pytest.raises(RuntimeError, match=r"'1' \(Squash\) changed its input in place"):
        LRP(net).attribute(_x(2, 3), target=0)


def test_lrp_of_a_forward_that_changes_its_input_in_place():
    net, twin, x = DoublesInput(True), DoublesInput(False), _x(4, 3)
    kept = x.clone()
    ours = LRP(net).attribute(x, target=1)
    assert torch.equal(x, kept)
    torch.testing.assert_close(ours, LRP(twin).attribute(x, target=1), atol=ATOL, rtol=0)


# --------------------------------------------------------------------------- SIG
def test_sig_of_a_forward_that_changes_its_input_in_place():
    w = _x(4, 2, seed=11)

    def forward(inplace):
        def f(x):
            x = x.mul_(2) if inplace else x * 2
            return (x.tanh() @ w).sum(1)

        return f

    x = _x(2, 3, 4)
    kept = x.clone()
    ours, delta = SequentialIntegratedGradients(forward(True)).attribute(
        x, target=1, n_steps=8, return_convergence_delta=True
    )
    assert torch.equal(x, kept)
    ref, ref_delta = SequentialIntegratedGradients(forward(False)).attribute(
        x, target=1, n_steps=8, return_convergence_delta=True
    )
    torch.testing.assert_close(ours, ref, atol=ATOL, rtol=0)
    torch.testing.assert_close(delta, ref_delta, atol=ATOL, rtol=0)


# --------------------------------------------------------------------------- Explainer: LRP site relevance
def test_lrp_site_relevance_is_read_before_an_inplace_change_downstream():
    from hfattr import Explainer
    from hfattr.testing import tiny

    model, tok = tiny("llama")
    nxt = model.model.layers[1]

    def shift(inplace):
        def pre(module, args, kwargs):
            x = kwargs.get("hidden_states", args[0] if args else None)
            if inplace:
                x.add_(0.5)
                return None
            new = x + 0.5
            if args:
                return (new,) + tuple(args[1:]), kwargs
            return args, {**kwargs, "hidden_states": new}

        return pre

    out = []
    for inplace in (True, False):
        h = nxt.register_forward_pre_hook(shift(inplace), with_kwargs=True)
        try:
            r = Explainer(model, tok).explain("the movie was great", method="lrp", composite="cp-lrp", site="blocks.0")
        finally:
            h.remove()
        out.append(r)
    torch.testing.assert_close(
        out[0].extras["site_relevance"]["blocks.0"], out[1].extras["site_relevance"]["blocks.0"], atol=1e-6, rtol=1e-5
    )
    torch.testing.assert_close(out[0].scores, out[1].scores, atol=1e-6, rtol=1e-5)
