"""The reference's Attribution interface on every drop-in class, checked against captum 0.8.0 and
time-interpret 0.3.0 instances: ``multiplies_by_inputs``, ``has_convergence_delta``,
``compute_convergence_delta``, the ``forward_func`` / ``layer`` / ``device_ids`` / ``model``
attributes, ``attribute.__wrapped__`` and ``attribute_future``. Numbers in float64 at atol 1e-12.
"""

from __future__ import annotations

import inspect
import subprocess
import sys

import pytest
import torch
from torch import nn

from conftest import oracle

import hfattr

captum_attr = oracle("captum.attr")

ATOL = 1e-12
D = torch.float64


def _net() -> nn.Module:
    g = torch.Generator().manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 5), nn.ReLU(), nn.Linear(5, 3)).to(D)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=D))
    return net.eval()


NET = _net()
X = torch.randn(3, 4, generator=torch.Generator().manual_seed(1), dtype=D)


def _pairs(tint_attr=None):
    """(name, ours, reference) instances built with the same arguments."""
    pairs = [
        ("FeatureAblation", hfattr.FeatureAblation(NET), captum_attr.FeatureAblation(NET)),
        (
            "LayerFeatureAblation",
            hfattr.LayerFeatureAblation(NET, NET[0], [0]),
            captum_attr.LayerFeatureAblation(NET, NET[0], [0]),
        ),
        ("NeuronGradient", hfattr.NeuronGradient(NET, NET[0]), captum_attr.NeuronGradient(NET, NET[0])),
        ("LRP", hfattr.LRP(NET), captum_attr.LRP(NET)),
    ]
    if tint_attr is not None:
        for mbi in (True, False):
            pairs.append(
                (
                    f"SIG(multiply_by_inputs={mbi})",
                    hfattr.SequentialIntegratedGradients(NET, multiply_by_inputs=mbi),
                    tint_attr.SequentialIntegratedGradients(NET, multiply_by_inputs=mbi),
                )
            )
    return pairs


@pytest.fixture(scope="module")
def pairs(tint_attr):
    return _pairs(tint_attr)


def test_flags_and_attributes_match_the_reference(pairs):
    for name, ours, ref in pairs:
        assert ours.multiplies_by_inputs is ref.multiplies_by_inputs, name
        assert isinstance(inspect.getattr_static(type(ours), "multiplies_by_inputs"), property), name
        assert ours.has_convergence_delta() is ref.has_convergence_delta(), name
        for attr in ("forward_func", "layer", "device_ids", "model"):
            if hasattr(ref, attr):
                assert getattr(ours, attr) is getattr(ref, attr) or getattr(ours, attr) == getattr(ref, attr), (
                    name,
                    attr,
                )
        assert hasattr(ours, "compute_convergence_delta") == hasattr(ref, "compute_convergence_delta"), name
        if hasattr(ref, "compute_convergence_delta"):
            theirs = list(inspect.signature(ref.compute_convergence_delta).parameters)
            assert list(inspect.signature(ours.compute_convergence_delta).parameters) == theirs, name
        assert hasattr(ours, "attribute_future") == hasattr(ref, "attribute_future"), name


def test_attribute_wrapped_is_the_undecorated_function(pairs):
    for name, ours, ref in pairs:
        for method in ("attribute", "attribute_future"):
            if not hasattr(ref, method) or not hasattr(getattr(ref, method), "__wrapped__"):
                continue
            bound = getattr(ours, method)
            wrapped = bound.__wrapped__
            assert inspect.isfunction(wrapped) and not hasattr(wrapped, "__wrapped__"), (name, method)
            mine = inspect.signature(bound).parameters
            theirs = list(inspect.signature(getattr(ref, method)).parameters)
            assert list(mine)[: len(theirs)] == theirs, (name, method)
            extra = list(mine.values())[len(theirs) :]
            assert all(p.kind is p.KEYWORD_ONLY for p in extra), (name, method)  # hfattr's own options
    fa = hfattr.FeatureAblation(NET)
    direct = fa.attribute.__wrapped__(fa, X, target=1)
    torch.testing.assert_close(direct, fa.attribute(X, target=1), atol=0, rtol=0)


def test_lrp_attribute_future_raises_like_the_reference():
    with pytest.raises(NotImplementedError, match="attribute_future"):
        captum_attr.LRP(NET).attribute_future()
    with pytest.raises(NotImplementedError, match="attribute_future"):
        hfattr.LRP(NET).attribute_future()


def test_neuron_gradient_convergence_delta_matches_the_reference():
    ours, ref = hfattr.NeuronGradient(NET, NET[0]), captum_attr.NeuronGradient(NET, NET[0])
    attrs = ours.attribute(X, (1,))
    for start in (0.0, torch.zeros(1, 4, dtype=D), 0.5 * X):
        mine = ours.compute_convergence_delta(attrs, start, X, target=2)
        theirs = ref.compute_convergence_delta(attrs, start, X, target=2)
        torch.testing.assert_close(mine, theirs, atol=ATOL, rtol=0)
    with pytest.raises(ValueError, match="start_point"):
        ours.compute_convergence_delta(attrs, torch.zeros(2, 5, dtype=D), X, target=2)


def test_lrp_convergence_delta_matches_the_reference():
    ours, ref = hfattr.LRP(NET), captum_attr.LRP(NET)
    attrs, delta = ours.attribute(X, target=0, return_convergence_delta=True)
    out = NET(X)[:, 0].detach()
    torch.testing.assert_close(delta, ref.compute_convergence_delta(attrs, out), atol=ATOL, rtol=0)
    torch.testing.assert_close(
        ours.compute_convergence_delta(attrs, out), ref.compute_convergence_delta(attrs, out), atol=ATOL, rtol=0
    )


def test_sig_convergence_delta_matches_the_reference(tint_attr):
    net = nn.Sequential(nn.Flatten(), NET[0]).to(D)
    x = torch.randn(2, 2, 2, generator=torch.Generator().manual_seed(3), dtype=D)
    ours = hfattr.SequentialIntegratedGradients(net)
    ref = tint_attr.SequentialIntegratedGradients(net)
    attrs = ours.attribute(x, target=1, n_steps=8)
    torch.testing.assert_close(
        ours.compute_convergence_delta(attrs, 0.2, x, target=1),
        ref.compute_convergence_delta(attrs, 0.2, x, target=1),
        atol=ATOL,
        rtol=0,
    )


def test_layer_interpolate_and_attributor():
    attr = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(4), dtype=D)
    for mode in ("nearest", "bilinear"):
        torch.testing.assert_close(
            hfattr.LayerFeatureAblation.interpolate(attr, (8, 8), mode),
            captum_attr.LayerFeatureAblation.interpolate(attr, (8, 8), mode),
            atol=0,
            rtol=0,
        )
    assert hfattr.LayerFeatureAblation(NET, NET[0]).attributor is hfattr.FeatureAblation


def test_hfattr_never_imports_the_oracles():
    code = (
        "import sys, hfattr, hfattr.lrp; "
        "bad = [m for m in sys.modules if m.split('.')[0] in ('captum', 'tint', 'inseq')]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    done = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
