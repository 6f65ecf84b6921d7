"""hfattr's drop-in classes inside captum's wrappers and metrics (captum 0.8.0, the oracle):
``NoiseTunnel(hfattr.X(...))`` and ``captum.metrics.infidelity`` / ``sensitivity_max`` give the
numbers captum's own classes (time-interpret 0.3.0 for SIG) give under the same seed.

float64 throughout; atol 1e-10 (SIG: atol = rtol = 1e-6, time-interpret rounds its quadrature
weights to float32).

time-interpret's SIG itself fails inside ``NoiseTunnel`` and ``sensitivity_max``: both call it under
``torch.no_grad()`` and it builds its interpolated inputs there, so they do not require grad. The
SIG oracle is therefore time-interpret's class with gradients switched back on (``GradTintSIG``).
``sensitivity_max`` with a layer attribution shaped unlike the input fails in captum itself; there
the test asserts hfattr fails the same way.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from conftest import oracle

import hfattr

captum_attr = oracle("captum.attr")
captum_metrics = oracle("captum.metrics")

D = torch.float64
TOL = dict(atol=1e-10, rtol=0.0)
SIG_TOL = dict(atol=1e-6, rtol=1e-6)


def _net() -> nn.Module:
    g = torch.Generator().manual_seed(0)
    net = nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3)).to(D)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=D))
    return net.eval()


class SeqNet(nn.Module):
    """``(B, L=3, 2) -> (B, 3)``: mixes positions (for SIG)."""

    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(1)
        self.w = nn.Parameter(torch.randn(2, 3, generator=g, dtype=D))

    def forward(self, x):
        h = torch.tanh(x @ self.w)
        return (h + h.mean(1, keepdim=True)).sum(1)


NET = _net()
SEQ = SeqNet()
X = torch.randn(2, 6, generator=torch.Generator().manual_seed(2), dtype=D)
XS = torch.randn(2, 3, 2, generator=torch.Generator().manual_seed(3), dtype=D)


def _grad_tint_sig(tint_attr):
    base = tint_attr.SequentialIntegratedGradients

    class GradTintSIG(base):
        def attribute(self, *args, **kwargs):
            with torch.enable_grad():
                return base.attribute.__wrapped__(self, *args, **kwargs)

    GradTintSIG.attribute.__wrapped__ = GradTintSIG.attribute  # what NoiseTunnel calls
    return GradTintSIG


def test_tint_sig_fails_under_no_grad_where_hfattr_works(tint_attr):
    with torch.no_grad(), pytest.raises(RuntimeError, match="does not require grad"):
        tint_attr.SequentialIntegratedGradients(SEQ).attribute(XS, target=1, n_steps=4)
    with torch.no_grad():
        ours = hfattr.SequentialIntegratedGradients(SEQ).attribute(XS, target=1, n_steps=4)
    ref = tint_attr.SequentialIntegratedGradients(SEQ).attribute(XS, target=1, n_steps=4)
    torch.testing.assert_close(ours, ref, **SIG_TOL)


def _cases(tint_attr):
    """name -> (ours, reference, inputs, attribute kwargs, tolerance)."""
    mask = torch.tensor([[0, 0, 1, 1, 2, 2]])
    return {
        "FeatureAblation": (
            hfattr.FeatureAblation(NET),
            captum_attr.FeatureAblation(NET),
            X,
            dict(target=1, feature_mask=mask, baselines=torch.full((1, 6), 0.2, dtype=D), perturbations_per_eval=2),
            TOL,
        ),
        "LayerFeatureAblation": (
            hfattr.LayerFeatureAblation(NET, NET[1]),
            captum_attr.LayerFeatureAblation(NET, NET[1]),
            X,
            dict(target=2, layer_mask=torch.tensor([[0, 1, 1, 2, 2]]), layer_baselines=0.1),
            TOL,
        ),
        "NeuronGradient": (
            hfattr.NeuronGradient(NET, NET[0]),
            captum_attr.NeuronGradient(NET, NET[0]),
            X,
            dict(neuron_selector=(3,)),
            TOL,
        ),
        "LRP": (hfattr.LRP(NET), captum_attr.LRP(NET), X, dict(target=0), TOL),
        "SIG": (
            hfattr.SequentialIntegratedGradients(SEQ),
            _grad_tint_sig(tint_attr)(SEQ),
            XS,
            dict(target=1, baselines=0.1, n_steps=6),
            SIG_TOL,
        ),
    }


@pytest.fixture(scope="module")
def cases(tint_attr):
    return _cases(tint_attr)


def _seeded(fn, seed=7):
    torch.manual_seed(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # captum's "requires_grad" notices
        return fn()


NAMES = ["FeatureAblation", "LayerFeatureAblation", "NeuronGradient", "LRP", "SIG"]


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("nt_type", ["smoothgrad", "smoothgrad_sq", "vargrad"])
def test_noise_tunnel_matches_the_reference(cases, name, nt_type):
    ours, ref, x, kw, tol = cases[name]
    nt_kw = dict(nt_type=nt_type, nt_samples=5, nt_samples_batch_size=2, stdevs=0.1, **kw)
    mine = _seeded(lambda: captum_attr.NoiseTunnel(ours).attribute(x, **nt_kw))
    theirs = _seeded(lambda: captum_attr.NoiseTunnel(ref).attribute(x, **nt_kw))
    assert mine.shape == theirs.shape
    torch.testing.assert_close(mine, theirs, **tol)
    assert captum_attr.NoiseTunnel(ours).multiplies_by_inputs is captum_attr.NoiseTunnel(ref).multiplies_by_inputs


@pytest.mark.parametrize("name", ["LRP", "SIG"])
def test_noise_tunnel_convergence_delta_matches_the_reference(cases, name):
    ours, ref, x, kw, tol = cases[name]
    nt_kw = dict(nt_samples=3, stdevs=0.1, return_convergence_delta=True, **kw)
    mine, mine_delta = _seeded(lambda: captum_attr.NoiseTunnel(ours).attribute(x, **nt_kw))
    theirs, their_delta = _seeded(lambda: captum_attr.NoiseTunnel(ref).attribute(x, **nt_kw))
    torch.testing.assert_close(mine, theirs, **tol)
    assert mine_delta.shape == their_delta.shape == (3 * x.shape[0],)
    torch.testing.assert_close(mine_delta, their_delta, **tol)


@pytest.mark.parametrize("name", NAMES)
def test_sensitivity_max_accepts_hfattr_attribute(cases, name):
    ours, ref, x, kw, tol = cases[name]
    if name == "LayerFeatureAblation":  # layer-shaped explanations: captum's metric fails for both
        with pytest.raises(RuntimeError) as theirs:
            _seeded(lambda: captum_metrics.sensitivity_max(ref.attribute, x, n_perturb_samples=4, **kw))
        with pytest.raises(RuntimeError) as mine:
            _seeded(lambda: captum_metrics.sensitivity_max(ours.attribute, x, n_perturb_samples=4, **kw))
        assert str(mine.value) == str(theirs.value)
        return
    mine = _seeded(
        lambda: captum_metrics.sensitivity_max(ours.attribute, x, n_perturb_samples=4, max_examples_per_batch=4, **kw)
    )
    theirs = _seeded(
        lambda: captum_metrics.sensitivity_max(ref.attribute, x, n_perturb_samples=4, max_examples_per_batch=4, **kw)
    )
    assert mine.shape == (x.shape[0],)
    torch.testing.assert_close(mine, theirs, **tol)


def _perturb(inputs):
    noise = torch.randn_like(inputs) * 0.05
    return noise, inputs - noise


@pytest.mark.parametrize("name", ["FeatureAblation", "LRP", "SIG"])
@pytest.mark.parametrize("normalize", [False, True])
def test_infidelity_of_hfattr_attributions(cases, name, normalize):
    ours, ref, x, kw, tol = cases[name]
    model = ours.forward_func
    mine_attr = ours.attribute(x, **kw)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        their_attr = ref.attribute(x, **kw)
    torch.testing.assert_close(mine_attr, their_attr, **tol)
    mine = _seeded(
        lambda: captum_metrics.infidelity(
            model, _perturb, x, mine_attr, target=kw["target"], n_perturb_samples=6, normalize=normalize
        )
    )
    theirs = _seeded(
        lambda: captum_metrics.infidelity(
            model, _perturb, x, their_attr, target=kw["target"], n_perturb_samples=6, normalize=normalize
        )
    )
    torch.testing.assert_close(mine, theirs, **tol)
