"""Property-based differential tests of FeatureAblation against captum 0.8.0.

Random input shapes, masks (none / shared / per-example / broadcast, with gaps), baselines, targets,
extra arguments and ``perturbations_per_eval``. The hypothesis profile registered in conftest.py
is derandomized, so every CI run checks the same 750 cases.
"""

from __future__ import annotations

import math
import warnings

import torch
from hypothesis import event, given, settings
from hypothesis import strategies as st

from hfattr import FeatureAblation

from conftest import oracle
from nets import FlatTanhNet, assert_same

CaptumFA = oracle("captum.attr").FeatureAblation

ATOL = 1e-10


def _rand(shape, gen):
    return torch.randn(*shape, generator=gen, dtype=torch.float64)


@st.composite
def feature_shape(draw, max_elements=8):
    """1-3 feature dims of size 1-3, at most ``max_elements`` per example (keeps runs fast)."""
    dims = draw(st.lists(st.integers(1, 3), min_size=1, max_size=3))
    while math.prod(dims) > max_elements:
        dims.pop()
    return tuple(dims)


@st.composite
def feature_shapes(draw):
    return [draw(feature_shape()) for _ in range(draw(st.integers(1, 3)))]


@st.composite
def mask_for(draw, batch, feat, gen, *, shared_only=False):
    """A same-rank integer mask: shared or per-example, some dims broadcast, ids with gaps."""
    first = 1 if shared_only or draw(st.booleans()) else batch
    dims = tuple(1 if draw(st.integers(0, 3)) == 0 else f for f in feat)
    shape = (first,) + dims
    ids = draw(st.lists(st.integers(0, 7), min_size=1, max_size=4, unique=True))
    pick = torch.randint(0, len(ids), shape, generator=gen)
    return torch.tensor(ids)[pick]


@st.composite
def baseline_for(draw, x, gen):
    kind = draw(st.sampled_from(["scalar", "int", "full", "first1", "trailing", "ones"]))
    feat = tuple(x.shape[1:])
    if kind == "scalar":
        return draw(st.floats(-2, 2, allow_nan=False, width=32))
    if kind == "int":
        return draw(st.integers(-2, 2))
    if kind == "full":
        return _rand(x.shape, gen)
    if kind == "first1":
        return _rand((1,) + feat, gen)
    if kind == "trailing":
        k = draw(st.integers(1, len(feat)))
        return _rand(feat[len(feat) - k :], gen)
    # broadcast with some size-1 feature dims
    return _rand((1,) + tuple(1 if draw(st.booleans()) else f for f in feat), gen)


def _target_for(draw, batch, n_out):
    if n_out is None:
        return None
    kind = draw(st.sampled_from(["int", "negative", "0d", "list", "tensor", "tuples"]))
    if kind == "int":
        return draw(st.integers(0, n_out - 1))
    if kind == "negative":
        return draw(st.integers(-n_out, -1))
    if kind == "0d":
        return torch.tensor(draw(st.integers(0, n_out - 1)))
    per_example = draw(st.lists(st.integers(0, n_out - 1), min_size=batch, max_size=batch))
    if kind == "list":
        return per_example
    if kind == "tensor":
        return torch.tensor(per_example)
    return [(t,) for t in per_example]


@st.composite
def cases(draw):
    shapes = draw(feature_shapes())
    batch = draw(st.integers(1, 4))
    gen = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    n_out = draw(st.integers(0, 4)) or None  # 0: one scalar per example, no target
    net = FlatTanhNet(shapes, n_out, hidden=5, seed=draw(st.integers(0, 1000)))
    xs = tuple(_rand((batch,) + s, gen) for s in shapes)
    kw = {}

    mask_mode = draw(st.sampled_from(["none", "masks"]))
    if mask_mode == "masks":
        kw["feature_mask"] = tuple(draw(mask_for(batch, s, gen)) for s in shapes)

    base_mode = draw(st.sampled_from(["none", "per-input"]))
    if base_mode == "per-input":
        kw["baselines"] = tuple(draw(baseline_for(x, gen)) for x in xs)

    kw["target"] = _target_for(draw, batch, n_out)

    extra = draw(st.sampled_from(["none", "tensor", "float", "both"]))
    scale = _rand((batch, 1) if n_out is not None else (batch,), gen)
    if extra == "none":
        forward = net
    else:

        def forward(*args):
            out = net(*args[: len(shapes)])
            for a in args[len(shapes) :]:
                out = out * a
            return out

        kw["additional_forward_args"] = {"tensor": scale, "float": 0.5, "both": (scale, -1.5)}[extra]

    n_features = (
        max(len(torch.unique(m)) for m in kw["feature_mask"])
        if "feature_mask" in kw
        else max(math.prod(s) for s in shapes)
    )
    kw["perturbations_per_eval"] = draw(st.integers(1, n_features + 2))

    inputs = xs
    if len(xs) == 1 and draw(st.booleans()):
        inputs = xs[0]
        for key in ("feature_mask", "baselines"):
            if key in kw:
                kw[key] = kw[key][0]
    return forward, inputs, kw


def _captum(forward, inputs, kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return CaptumFA(forward).attribute(inputs, **kw)


@settings(max_examples=400)
@given(cases())
def test_matches_captum(case):
    forward, inputs, kw = case
    _record(inputs, kw)
    ours = FeatureAblation(forward).attribute(inputs, **kw)
    assert_same(ours, _captum(forward, inputs, kw), atol=ATOL)
    # attributions keep the input structure
    outs = ours if isinstance(ours, tuple) else (ours,)
    ins = inputs if isinstance(inputs, tuple) else (inputs,)
    assert isinstance(ours, tuple) == isinstance(inputs, tuple)
    if kw["target"] is not None or forward(*ins, *_extra(kw)).dim() == 1:
        assert [o.shape for o in outs] == [x.shape for x in ins]


def _record(inputs, kw):
    """Label the case for ``--hypothesis-show-statistics``."""
    masks = kw.get("feature_mask")
    if masks is not None:
        masks = masks if isinstance(masks, tuple) else (masks,)
        event("mask: " + ("per-example" if any(m.shape[0] > 1 for m in masks) else "shared"))
    else:
        event("mask: none")
    event(f"inputs: {'tuple' if isinstance(inputs, tuple) else 'tensor'}")
    event(f"target: {type(kw['target']).__name__}")
    event(f"ppe > 1: {kw['perturbations_per_eval'] > 1}")


def _extra(kw):
    extra = kw.get("additional_forward_args")
    if extra is None:
        return ()
    return extra if isinstance(extra, tuple) else (extra,)


@st.composite
def aggregate_cases(draw):
    shapes = draw(feature_shapes())
    batch = draw(st.integers(1, 4))
    gen = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    n_out = draw(st.sampled_from([None, 2]))
    net = FlatTanhNet(shapes, n_out, hidden=5, seed=draw(st.integers(0, 1000)))
    xs = tuple(_rand((batch,) + s, gen) for s in shapes)
    reduce = draw(st.sampled_from(["sum", "mean", "float"]))
    if reduce == "float" and n_out is not None:
        reduce = "sum"

    def forward(*args):
        out = net(*args)
        if reduce == "sum":
            return out.sum(0)
        if reduce == "mean":
            return out.mean(0)
        return float(out.sum())

    kw = {}
    if draw(st.booleans()):
        kw["feature_mask"] = tuple(draw(mask_for(batch, s, gen, shared_only=True)) for s in shapes)
    if draw(st.booleans()):
        kw["baselines"] = tuple(draw(baseline_for(x, gen)) for x in xs)
    return forward, xs, kw, (1 if n_out is None else n_out)


@settings(max_examples=150)
@given(aggregate_cases())
def test_aggregate_output_matches_captum(case):
    forward, inputs, kw, n_out = case
    ours = FeatureAblation(forward).attribute(inputs, **kw)
    assert_same(ours, _captum(forward, inputs, kw), atol=ATOL)
    assert [o.shape for o in ours] == [(n_out,) + tuple(x.shape[1:]) for x in inputs]


@st.composite
def linear_cases(draw):
    feat = draw(feature_shape())
    batch = draw(st.integers(1, 4))
    gen = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    x = _rand((batch,) + feat, gen)
    w = _rand(feat, gen)
    mask = draw(mask_for(batch, feat, gen)).expand(x.shape)
    baseline = draw(baseline_for(x, gen))
    return x, w, mask, baseline


@settings(max_examples=200)
@given(linear_cases(), st.data())
def test_linear_closed_form_and_ppe_invariance(case, data):
    x, w, mask, baseline = case

    def forward(inp):
        return (inp * w).reshape(inp.shape[0], -1).sum(1)

    fa = FeatureAblation(forward)
    out = fa.attribute(x, baselines=baseline, feature_mask=mask)
    # closed form: each element gets the sum over its group of (x - b) * w
    contrib = (x - torch.as_tensor(baseline, dtype=x.dtype)) * w
    expected = torch.zeros_like(x)
    for b in range(x.shape[0]):
        for g in mask[b].unique():
            sel = mask[b] == g
            expected[b][sel] = contrib[b][sel].sum()
    torch.testing.assert_close(out, expected, atol=ATOL, rtol=0)
    n_groups = len(mask.unique())
    ppe = data.draw(st.integers(2, n_groups + 2), label="perturbations_per_eval")
    assert_same(fa.attribute(x, baselines=baseline, feature_mask=mask, perturbations_per_eval=ppe), out, atol=ATOL)
