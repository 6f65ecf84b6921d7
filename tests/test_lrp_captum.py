"""``hfattr.lrp.LRP`` against Captum 0.8.0's LRP (the oracle) on the networks Captum supports.

float64 networks of Linear, Conv2d, ReLU, Tanh, Dropout, MaxPool2d, AvgPool2d, AdaptiveAvgPool2d
and BatchNorm2d; default rules, ``module.rule`` overrides, every target form, tuple inputs with
extra forward arguments and ``return_convergence_delta``. Tolerance 1e-6 (observed ~1e-16).
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from hfattr.core import hook_counts
from hfattr.lrp import LRP, Alpha1_Beta0_Rule, EpsilonRule, GammaRule, IdentityRule

from conftest import oracle  # noqa: E402

captum_attr = oracle("captum.attr")
captum_rules = oracle("captum.attr._utils.lrp_rules")

D64 = torch.float64
TOL = dict(atol=1e-6, rtol=0.0)


def _init(module: nn.Module, seed: int) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _name, p in module.named_parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=D64) * 0.5)
        for m in module.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g, dtype=D64) * 0.3)
                m.running_var.copy_(torch.rand(m.num_features, generator=g, dtype=D64) + 0.5)
    return module.eval()


class ConvNet(nn.Module):
    def __init__(self, seed: int = 0):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3)
        self.bn = nn.BatchNorm2d(4)
        self.relu1 = nn.ReLU()
        self.pool1 = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(4, 6, 3)
        self.relu2 = nn.ReLU()
        self.pool2 = nn.AvgPool2d(2)
        self.pool3 = nn.AdaptiveAvgPool2d((1, 1))
        self.fc1 = nn.Linear(6, 8)
        self.relu3 = nn.ReLU()
        self.fc2 = nn.Linear(8, 4)
        self.to(D64)
        _init(self, seed)

    def forward(self, x):
        x = self.pool1(self.relu1(self.bn(self.conv1(x))))
        x = self.pool3(self.pool2(self.relu2(self.conv2(x))))
        return self.fc2(self.relu3(self.fc1(torch.flatten(x, 1))))


class TanhNet(nn.Module):
    def __init__(self, seed: int = 1):
        super().__init__()
        self.fc1 = nn.Linear(7, 9)
        self.act = nn.Tanh()
        self.drop = nn.Dropout(0.3)
        self.fc2 = nn.Linear(9, 3)
        self.to(D64)
        _init(self, seed)

    def forward(self, x):
        return self.fc2(self.drop(self.act(self.fc1(x))))


class TwoInputNet(nn.Module):
    """Two inputs through their own layers, joined; an extra forward argument picks the join order.

    (Only reshapes and concatenation between layers: the reference's relevance passes functional
    arithmetic between layers as a gradient, which differs from LRP for e.g. a scaled output.)
    """

    def __init__(self, seed: int = 2):
        super().__init__()
        self.conv = nn.Conv2d(2, 3, 3)
        self.relu_a = nn.ReLU()
        self.pool = nn.MaxPool2d(2)
        self.fc_b = nn.Linear(5, 4)
        self.relu_b = nn.ReLU()
        self.head = nn.Linear(3 * 3 * 3 + 4, 3)
        self.head_b = nn.Linear(4 + 3 * 3 * 3, 3)
        self.to(D64)
        _init(self, seed)

    def forward(self, a, b, b_first=False):
        ha = self.pool(self.relu_a(self.conv(a))).flatten(1)
        hb = self.relu_b(self.fc_b(b))
        if b_first:
            return self.head_b(torch.cat([hb, ha], dim=1))
        return self.head(torch.cat([ha, hb], dim=1))


@pytest.fixture(autouse=True)
def _quiet():
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Input Tensor")
        yield


def _images(n=3, seed=5):
    return torch.randn(n, 3, 12, 12, generator=torch.Generator().manual_seed(seed), dtype=D64)


def _both(net, rules, inputs, **kw):
    """Captum's result and ours with the same per-module rules (Captum deletes them afterwards)."""
    for name, (theirs, _) in rules.items():
        net.get_submodule(name).rule = theirs()
    want = captum_attr.LRP(net).attribute(inputs, **kw)
    for name, (_, ours) in rules.items():
        net.get_submodule(name).rule = ours()
    got = LRP(net).attribute(inputs, **kw)
    for name in rules:
        del net.get_submodule(name).rule
    return got, want


def _close(got, want):
    if isinstance(want, tuple):
        assert isinstance(got, tuple) and len(got) == len(want)
        for g, w in zip(got, want):
            _close(g, w)
        return
    assert got.shape == want.shape and got.dtype == want.dtype
    torch.testing.assert_close(got, want.detach(), **TOL)


C = captum_rules
RULE_SETS = {
    "defaults": {},
    "gamma-conv1": {"conv1": (C.GammaRule, GammaRule)},
    "gamma-zero-bias": {
        "conv2": (
            lambda: C.GammaRule(gamma=0.7, set_bias_to_zero=True),
            lambda: GammaRule(gamma=0.7, set_bias_to_zero=True),
        )
    },
    "alpha1beta0-fc1": {"fc1": (C.Alpha1_Beta0_Rule, Alpha1_Beta0_Rule)},
    "alpha1beta0-zero-bias": {
        "fc2": (lambda: C.Alpha1_Beta0_Rule(set_bias_to_zero=True), lambda: Alpha1_Beta0_Rule(set_bias_to_zero=True))
    },
    "identity-bn": {"bn": (C.IdentityRule, IdentityRule)},
    "epsilon-large": {
        "conv2": (lambda: C.EpsilonRule(0.1), lambda: EpsilonRule(0.1)),
        "fc1": (lambda: C.EpsilonRule(1.0), lambda: EpsilonRule(1.0)),
    },
    "mixed": {
        "conv1": (lambda: C.GammaRule(0.1), lambda: GammaRule(0.1)),
        "bn": (C.IdentityRule, IdentityRule),
        "conv2": (lambda: C.EpsilonRule(0.01), lambda: EpsilonRule(0.01)),
        "fc1": (C.Alpha1_Beta0_Rule, Alpha1_Beta0_Rule),
    },
}


@pytest.mark.parametrize("case", list(RULE_SETS))
def test_convnet_equals_captum(case):
    net = ConvNet()
    got, want = _both(net, RULE_SETS[case], _images(), target=2)
    _close(got, want)


@pytest.mark.parametrize("target", [0, [0, 3, 1], torch.tensor([2, 2, 0]), torch.tensor(1)])
def test_target_forms_equal_captum(target):
    net = ConvNet(seed=3)
    got, want = _both(net, {}, _images(seed=6), target=target)
    _close(got, want)


def test_convergence_delta_equals_captum():
    net = ConvNet(seed=4)
    rules = RULE_SETS["mixed"]
    (got, d_got), (want, d_want) = _both(net, rules, _images(seed=7), target=1, return_convergence_delta=True)
    _close(got, want)
    assert d_got.shape == (3,)
    torch.testing.assert_close(d_got, d_want.detach(), **TOL)
    lrp = LRP(net)
    out = net(_images(seed=7))[:, 1]
    torch.testing.assert_close(lrp.compute_convergence_delta(got, out), out - got.flatten(1).sum(1), atol=0, rtol=0)


def test_tanh_dropout_net_equals_captum():
    net = TanhNet()
    x = torch.randn(5, 7, generator=torch.Generator().manual_seed(8), dtype=D64)
    for rules in (
        {},
        {"fc1": (lambda: C.EpsilonRule(0.25), lambda: EpsilonRule(0.25))},
        {"fc2": (C.GammaRule, GammaRule)},
    ):
        got, want = _both(net, rules, x, target=[0, 1, 2, 1, 0])
        _close(got, want)


def test_tuple_inputs_and_additional_args_equal_captum():
    net = TwoInputNet()
    g = torch.Generator().manual_seed(9)
    a = torch.randn(2, 2, 8, 8, generator=g, dtype=D64)
    b = torch.randn(2, 5, generator=g, dtype=D64)
    rules = {"fc_b": (C.GammaRule, GammaRule)}
    for flag in (False, True):
        (got, d_got), (want, d_want) = _both(
            net, rules, (a, b), target=1, additional_forward_args=(flag,), return_convergence_delta=True
        )
        _close(got, want)
        torch.testing.assert_close(d_got, d_want.detach(), **TOL)


def test_model_left_as_it_was():
    net = ConvNet(seed=5)
    net.conv1.rule = GammaRule()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    dicts = {n: set(m.__dict__) for n, m in net.named_modules()}
    hooks = {n: hook_counts(m) for n, m in net.named_modules()}
    x = _images(seed=10)
    LRP(net).attribute(x, target=0, verbose=False)
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    assert {n: set(m.__dict__) for n, m in net.named_modules()} == dicts
    assert {n: hook_counts(m) for n, m in net.named_modules()} == hooks
    assert isinstance(net.conv1.rule, GammaRule)  # the user's rule stays (the reference deletes it)
    assert not x.requires_grad and x.grad is None
    assert all(p.grad is None for p in net.parameters())


def test_interface_attributes():
    lrp = LRP(ConvNet())
    assert lrp.multiplies_by_inputs is True
    assert lrp.has_convergence_delta() is True
    with pytest.raises(ValueError, match="one value per example"):
        lrp.attribute(_images())  # no target for a (B, 4) output
    with pytest.raises(TypeError, match="torch.nn.Module"):
        LRP(lambda x: x)
