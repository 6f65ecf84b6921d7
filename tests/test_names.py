"""One name per switch: ``sites=`` where a site is chosen, ``fast=`` for the prefix-skipping fast path
(old spellings accepted with a DeprecationWarning, same numbers)."""

from __future__ import annotations

import importlib

import pytest
import torch

from hfattr import LayerFeatureAblation
from hfattr.core import layer_feature_ablation

TEXT = "the movie was great"


@pytest.fixture(scope="module")
def bert(bert64_explainer):
    return bert64_explainer


def test_neuron_gradient_takes_sites_and_warns_on_site(bert):
    new = bert.explain(TEXT, method="neuron_gradient", sites="blocks.0.mlp", neuron=3)
    with pytest.warns(DeprecationWarning, match="site= is deprecated; use sites="):
        old = bert.explain(TEXT, method="neuron_gradient", site="blocks.0.mlp", neuron=3)
    torch.testing.assert_close(new.scores, old.scores, rtol=0, atol=0)
    assert new.target["site"] == old.target["site"]
    with pytest.raises(TypeError, match="pass sites= only"):
        bert.explain(TEXT, method="neuron_gradient", sites="blocks.0.mlp", site="blocks.0.mlp", neuron=3)
    with pytest.raises(TypeError, match="needs sites="):
        bert.explain(TEXT, method="neuron_gradient", neuron=3)


def test_lrp_takes_sites_and_warns_on_site(bert):
    new = bert.explain(TEXT, method="lrp", sites=["blocks.0"])
    with pytest.warns(DeprecationWarning, match="use sites="):
        old = bert.explain(TEXT, method="lrp", site=["blocks.0"])
    assert list(new.extras["site_relevance"]) == list(old.extras["site_relevance"])
    torch.testing.assert_close(new.scores, old.scores, rtol=0, atol=0)


def _net():
    g = torch.Generator().manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 5), torch.nn.Tanh(), torch.nn.Linear(5, 2)).double()
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float64))
    return net, torch.randn(3, 4, generator=g, dtype=torch.float64)


def test_layer_ablation_fast_is_the_one_switch():
    net, x = _net()
    fast, _ = layer_feature_ablation(net, net[1], (x,), target=0, fast=True)
    full, _ = layer_feature_ablation(net, net[1], (x,), target=0, fast=False)
    with pytest.warns(DeprecationWarning, match="skip_prefix= is deprecated; use fast="):
        old, _ = layer_feature_ablation(net, net[1], (x,), target=0, skip_prefix=False)
    torch.testing.assert_close(fast[0], full[0], rtol=0, atol=1e-12)
    torch.testing.assert_close(old[0], full[0], rtol=0, atol=0)
    with pytest.warns(DeprecationWarning, match="use fast="):
        shell = LayerFeatureAblation(net, net[1], skip_prefix=False)
    assert shell.fast is False and LayerFeatureAblation(net, net[1]).fast is True
    torch.testing.assert_close(shell.attribute(x, target=0), full[0], rtol=0, atol=0)


def test_argument_normalisation_module_is_core_inputs():
    inputs = importlib.import_module("hfattr.core.inputs")
    assert callable(inputs.as_tuple) and callable(inputs.format_baselines)
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module("hfattr.core._args")


def test_sig_auto_exposes_the_max_steps_its_warning_names(bert):
    # auto uses nested Clenshaw-Curtis sizes (5, 9, 17, 33): max_steps=9 is the second level
    with pytest.warns(UserWarning, match="stopped at max_steps=9"):
        r = bert.explain(TEXT, method="sig", n_steps="auto", tol=1e-12, max_steps=9)
    assert max(r.extras["steps"]) == 9
    with pytest.raises(ValueError, match="max_steps must be an int >= 1"):
        bert.explain(TEXT, method="sig", n_steps="auto", max_steps=0)
