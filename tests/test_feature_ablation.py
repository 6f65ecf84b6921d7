"""FeatureAblation: every argument form against captum 0.8.0 (the oracle), closed forms, errors.

All comparisons run in float64 at atol 1e-10 unless noted.
"""

from __future__ import annotations

import inspect
import re

import pytest
import torch
from conftest import oracle

from hfattr import FeatureAblation

CaptumFA = oracle("captum.attr").FeatureAblation

ATOL = 1e-10


def _both(forward, inputs, same, **kw):
    """Run hfattr and captum with the same arguments; assert equal; return hfattr's result."""
    ours = FeatureAblation(forward).attribute(inputs, **kw)
    ref = CaptumFA(forward).attribute(inputs, **kw)
    same(ours, ref, atol=ATOL)
    return ours


def test_signatures_match_the_reference():
    pairs = [
        (FeatureAblation.__init__, CaptumFA.__init__),
        (FeatureAblation.attribute, CaptumFA.attribute),
        (FeatureAblation.attribute_future, CaptumFA.attribute_future),
    ]
    for ours, ref in pairs:
        a = [(p.name, p.kind, p.default) for p in inspect.signature(ours).parameters.values()]
        b = [(p.name, p.kind, p.default) for p in inspect.signature(inspect.unwrap(ref)).parameters.values()]
        assert a == b


# ---------------------------------------------------------------------------------------------
# inputs and baselines
# ---------------------------------------------------------------------------------------------


def test_single_tensor_input_returns_tensor(nets, same):
    net = nets.FlatTanhNet([(4,)], 3)
    x = nets.randn(3, 4, seed=1)
    out = _both(net, x, same, target=2)
    assert isinstance(out, torch.Tensor) and out.shape == x.shape


def test_tuple_input_returns_tuple(nets, same):
    net = nets.FlatTanhNet([(4,), (2, 3)], 3)
    x = (nets.randn(2, 4, seed=1), nets.randn(2, 2, 3, seed=2))
    out = _both(net, x, same, target=0)
    assert isinstance(out, tuple) and [o.shape for o in out] == [t.shape for t in x]


def test_one_element_tuple_input_returns_tuple(nets, same):
    net = nets.FlatTanhNet([(4,)], 3)
    out = _both(net, (nets.randn(2, 4, seed=1),), same, target=1)
    assert isinstance(out, tuple) and len(out) == 1


@pytest.mark.parametrize(
    "make_baseline",
    [
        pytest.param(lambda x: None, id="none"),
        pytest.param(lambda x: 0.5, id="float"),
        pytest.param(lambda x: -2, id="int"),
        pytest.param(lambda x: torch.full_like(x, 0.3) + torch.arange(x.shape[1]), id="full"),
        pytest.param(lambda x: torch.linspace(-1, 1, x.shape[1], dtype=x.dtype)[None], id="1xD"),
        pytest.param(lambda x: torch.linspace(-1, 1, x.shape[1], dtype=x.dtype), id="D"),
        pytest.param(lambda x: torch.tensor(0.7, dtype=x.dtype), id="0d-tensor"),
    ],
)
@pytest.mark.parametrize("ppe", [1, 3])
def test_baseline_forms_single_input(nets, same, make_baseline, ppe):
    net = nets.FlatTanhNet([(5,)], 3)
    x = nets.randn(3, 5, seed=3)
    _both(net, x, same, baselines=make_baseline(x), target=1, perturbations_per_eval=ppe)


@pytest.mark.parametrize(
    "baselines",
    [
        pytest.param(None, id="none"),
        pytest.param((0.25, -1), id="scalars"),
        pytest.param((0.5, "tensor_1xD"), id="scalar+broadcast"),
        pytest.param(("tensor_full", 1.5), id="full+scalar"),
        pytest.param(("tensor_D", "tensor_full"), id="tensors"),
    ],
)
def test_baseline_forms_tuple_input(nets, same, baselines):
    net = nets.FlatTanhNet([(4,), (2, 3)], 2)
    x = (nets.randn(3, 4, seed=4), nets.randn(3, 2, 3, seed=5))

    def build(b, t, i):
        if b == "tensor_full":
            return nets.randn(*t.shape, seed=10 + i)
        if b == "tensor_1xD":
            return nets.randn(1, *t.shape[1:], seed=20 + i)
        if b == "tensor_D":
            return nets.randn(*t.shape[1:], seed=30 + i)
        return b

    if baselines is not None:
        baselines = tuple(build(b, t, i) for i, (b, t) in enumerate(zip(baselines, x)))
    _both(net, x, same, baselines=baselines, target=1, perturbations_per_eval=2)


# ---------------------------------------------------------------------------------------------
# targets
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "target",
    [
        pytest.param(2, id="int"),
        pytest.param(-1, id="negative-int"),
        pytest.param(torch.tensor(1), id="0d-tensor"),
        pytest.param(torch.tensor([1]), id="1-element-tensor"),
        pytest.param(torch.tensor([0, 2, 1]), id="1d-tensor"),
        pytest.param([2, 0, 1], id="list-of-ints"),
    ],
)
@pytest.mark.parametrize("ppe", [1, 2, 7])
def test_target_forms_2d_output(nets, same, target, ppe):
    net = nets.FlatTanhNet([(2, 3)], 3)
    x = nets.randn(3, 2, 3, seed=6)
    _both(net, x, same, target=target, perturbations_per_eval=ppe)


@pytest.mark.parametrize(
    "target",
    [
        pytest.param((1, 4), id="tuple"),
        pytest.param((-1, 0), id="negative-tuple"),
        pytest.param([(0, 1), (2, 3)], id="list-of-tuples"),
    ],
)
@pytest.mark.parametrize("ppe", [1, 2, 3])
def test_target_forms_3d_output(nets, same, target, ppe):
    net = nets.SeqNet(d=4, v=5)
    x = nets.randn(2, 3, 4, seed=7)
    mask = torch.arange(3).view(1, 3, 1)
    _both(net, x, same, target=target, feature_mask=mask, perturbations_per_eval=ppe)


@pytest.mark.parametrize("ppe", [1, 4])
def test_target_none_for_scalar_per_example_output(nets, same, ppe):
    net = nets.FlatTanhNet([(4,)], None)
    x = nets.randn(3, 4, seed=8)
    out = _both(net, x, same, target=None, perturbations_per_eval=ppe)
    assert out.shape == x.shape


def test_single_example_batch(nets, same):
    net = nets.FlatTanhNet([(4,)], 3)
    _both(net, nets.randn(1, 4, seed=9), same, target=[2], perturbations_per_eval=3)
    _both(net, nets.randn(1, 4, seed=9), same, target=torch.tensor([2]))


# ---------------------------------------------------------------------------------------------
# additional_forward_args
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("ppe", [1, 2, 5])
def test_additional_tensor_args_are_expanded_with_the_batch(nets, same, ppe):
    net = nets.MLP(d_in=4, n_out=3)
    x = nets.randn(3, 4, seed=10)
    scale = torch.tensor([[0.5], [2.0], [-1.0]], dtype=torch.float64)
    calls = []

    def forward(inp, s):
        calls.append((inp.shape[0], s.shape[0]))
        return net(inp, s)

    _both(forward, x, same, target=0, additional_forward_args=(scale,), perturbations_per_eval=ppe)
    assert all(a == b for a, b in calls), calls


@pytest.mark.parametrize("ppe", [1, 3])
def test_additional_non_tensor_args_pass_unchanged(nets, same, ppe):
    net = nets.MLP(d_in=4, n_out=3)
    x = nets.randn(2, 4, seed=11)
    seen = []

    def forward(inp, s, flag, options):
        seen.append((s, flag, options))
        return net(inp, s) if flag == "on" else -net(inp, s)

    _both(forward, x, same, target=1, perturbations_per_eval=ppe, additional_forward_args=(1.5, "on", {"k": 1}))
    assert all(item == (1.5, "on", {"k": 1}) for item in seen)


@pytest.mark.parametrize("arg", [pytest.param(2.0, id="scalar"), pytest.param("tensor", id="tensor")])
def test_single_non_tuple_additional_arg(nets, same, arg):
    net = nets.MLP(d_in=4, n_out=3)
    x = nets.randn(3, 4, seed=12)
    if arg == "tensor":
        arg = nets.randn(3, 1, seed=13)
    _both(net, x, same, target=2, additional_forward_args=arg, perturbations_per_eval=2)


def test_zero_dim_tensor_arg_is_not_expanded(nets, same):
    net = nets.MLP(d_in=4, n_out=3)
    x = nets.randn(2, 4, seed=14)
    _both(
        net, x, same, target=2, additional_forward_args=torch.tensor(0.3, dtype=torch.float64), perturbations_per_eval=3
    )


# ---------------------------------------------------------------------------------------------
# feature masks
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("ppe", [1, 2, 100])
@pytest.mark.parametrize(
    "mask",
    [
        pytest.param(torch.tensor([[0, 0, 1, 1, 2, 2]]), id="groups"),
        pytest.param(torch.tensor([[3, 3, 9, 0, 9, 3]]), id="gaps"),
        pytest.param(torch.tensor([[5, 5, 5, 5, 5, 5]]), id="one-group"),
        pytest.param(torch.tensor([[0, 1, 1, 0, 2, 2], [2, 2, 0, 0, 1, 1], [0, 0, 0, 1, 1, 1]]), id="per-example"),
        pytest.param(torch.tensor([[4, 1, 1, 4, 7, 7], [7, 7, 4, 4, 1, 1], [1, 1, 1, 1, 1, 4]]), id="per-example-gaps"),
    ],
)
def test_feature_mask_grouping(nets, same, mask, ppe):
    net = nets.FlatTanhNet([(6,)], 3)
    x = nets.randn(3, 6, seed=15)
    out = _both(net, x, same, target=[0, 1, 2], feature_mask=mask, perturbations_per_eval=ppe)
    # every member of a group shares one value
    full_mask = mask.expand(3, 6)
    for b in range(3):
        for g in full_mask[b].unique():
            vals = out[b][full_mask[b] == g]
            assert torch.all(vals == vals[0])


def test_mask_broadcast_over_trailing_dims(nets, same):
    net = nets.FlatTanhNet([(3, 4)], 2)
    x = nets.randn(2, 3, 4, seed=16)
    _both(net, x, same, target=1, feature_mask=torch.tensor([[[0], [1], [2]]]), perturbations_per_eval=2)
    _both(net, x, same, target=1, feature_mask=torch.tensor([[[0, 1, 1, 0]]]))


def test_lower_rank_mask_equals_full_rank_mask(nets, same):
    # (L, 1) mask for (B, L, D) input is aligned to the trailing dims like (1, L, 1)
    net = nets.FlatTanhNet([(3, 4)], 2)
    x = nets.randn(2, 3, 4, seed=17)
    fa = FeatureAblation(net)
    low = fa.attribute(x, target=0, feature_mask=torch.tensor([[0], [1], [2]]))
    full = fa.attribute(x, target=0, feature_mask=torch.tensor([[[0], [1], [2]]]))
    same(low, full, atol=0)


@pytest.mark.parametrize("ppe", [1, 3])
def test_multiple_inputs_same_ids_are_ablated_independently(nets, same, ppe):
    net = nets.FlatTanhNet([(3,), (3,)], 2)
    x = (nets.randn(2, 3, seed=18), nets.randn(2, 3, seed=19))
    masks = (torch.tensor([[0, 1, 1]]), torch.tensor([[0, 1, 1]]))
    a, b = _both(net, x, same, target=1, feature_mask=masks, perturbations_per_eval=ppe)
    # closed form: input 1's group 1 alone is ablated, input 0 unchanged
    with torch.no_grad():
        ablated = x[1].clone()
        ablated[:, 1:] = 0
        expected = net(*x)[:, 1] - net(x[0], ablated)[:, 1]
    torch.testing.assert_close(b[:, 1], expected, atol=ATOL, rtol=0)
    torch.testing.assert_close(b[:, 2], expected, atol=ATOL, rtol=0)


def test_additive_two_inputs_shared_ids_not_joint(same):
    # f(a, b) = sum(a + b), masks ([[0, 1]], [[0, 1]]): independent ablation gives the inputs themselves
    def f(a, b):
        return (a + b).sum(1)

    a = torch.tensor([[1.0, 2.0]], dtype=torch.float64)
    b = torch.tensor([[3.0, 4.0]], dtype=torch.float64)
    out = _both(f, (a, b), same, feature_mask=(torch.tensor([[0, 1]]), torch.tensor([[0, 1]])))
    same(out, (a, b), atol=0)


def test_mixed_shared_and_per_example_masks(nets, same):
    net = nets.FlatTanhNet([(4,), (2,)], 3)
    x = (nets.randn(3, 4, seed=20), nets.randn(3, 2, seed=21))
    masks = (torch.tensor([[0, 0, 1, 2]]), torch.tensor([[0, 1], [1, 0], [0, 0]]))
    _both(net, x, same, target=torch.tensor([2, 1, 0]), feature_mask=masks, perturbations_per_eval=2)


def test_perturbations_per_eval_does_not_change_results(nets, same):
    net = nets.FlatTanhNet([(2, 3), (2,)], 3)
    x = (nets.randn(2, 2, 3, seed=22), nets.randn(2, 2, seed=23))
    fa = FeatureAblation(net)
    reference = fa.attribute(x, target=[1, 2])
    n_features = 8
    for ppe in range(1, n_features + 3):
        same(fa.attribute(x, target=[1, 2], perturbations_per_eval=ppe), reference, atol=ATOL)


def test_forward_call_count(nets):
    net = nets.FlatTanhNet([(6,)], 3)
    x = nets.randn(2, 6, seed=24)
    calls = []

    def forward(inp):
        calls.append(inp.shape[0])
        return net(inp)

    FeatureAblation(forward).attribute(
        x, target=0, feature_mask=torch.tensor([[0, 0, 4, 4, 9, 9]]), perturbations_per_eval=2
    )
    # one unperturbed call, then ceil(3 present ids / 2) = 2 calls; gaps cost nothing
    assert calls == [2, 4, 2]


# ---------------------------------------------------------------------------------------------
# output modes
# ---------------------------------------------------------------------------------------------


def test_scalar_per_batch_output(nets, same):
    net = nets.FlatTanhNet([(4,)], 3)
    x = nets.randn(3, 4, seed=25)

    def agg(inp):
        return net(inp)[:, 1].sum()

    out = _both(agg, x, same)
    assert out.shape == (1, 4)
    out = _both(agg, x, same, feature_mask=torch.tensor([[0, 0, 1, 1]]))
    assert out.shape == (1, 4)


def test_fixed_size_vector_per_batch_output(nets, same):
    net = nets.FlatTanhNet([(4,)], 3)
    x = nets.randn(3, 4, seed=26)
    out = _both(lambda inp: net(inp).sum(0), x, same)
    assert out.shape == (3, 4)


def test_scalar_per_batch_tuple_inputs(nets, same):
    net = nets.FlatTanhNet([(2,), (3,)], 2)
    x = (nets.randn(2, 2, seed=27), nets.randn(2, 3, seed=28))
    out = _both(
        lambda a, b: net(a, b)[:, 0].mean(), x, same, feature_mask=(torch.tensor([[0, 1]]), torch.tensor([[1, 1, 0]]))
    )
    assert [o.shape for o in out] == [(1, 2), (1, 3)]


def test_forward_returning_python_float(nets, same):
    net = nets.FlatTanhNet([(4,)], 3)
    x = nets.randn(2, 4, seed=29)
    out = _both(lambda inp: float(net(inp)[:, 2].sum()), x, same)
    assert out.shape == (1, 4) and out.dtype == torch.float64
    expected = FeatureAblation(lambda inp: net(inp)[:, 2].sum()).attribute(x)
    same(out, expected, atol=ATOL)


def test_float32_model_keeps_dtype(nets, same):
    net = nets.FlatTanhNet([(4,)], 3).float()
    x = nets.randn(2, 4, seed=30).float()
    out = _both(net, x, same, target=1, perturbations_per_eval=2)
    assert out.dtype == torch.float32


def test_show_progress_writes_a_bar(nets, same, capsys):
    net = nets.FlatTanhNet([(6,)], 3)
    x = nets.randn(2, 6, seed=31)
    plain = FeatureAblation(net).attribute(x, target=0, perturbations_per_eval=4)
    capsys.readouterr()
    out = FeatureAblation(net).attribute(x, target=0, perturbations_per_eval=4, show_progress=True)
    err = capsys.readouterr().err
    same(out, plain, atol=0)
    # 1 unperturbed call + ceil(6 / 4) = 3 forward calls
    assert "3/3" in err, err
    assert "%" in err or "|" in err, err


def test_show_progress_false_is_silent(nets, capsys):
    net = nets.FlatTanhNet([(3,)], 3)
    FeatureAblation(net).attribute(nets.randn(2, 3, seed=32), target=0)
    captured = capsys.readouterr()
    assert captured.err == "" and captured.out == ""


def test_inputs_are_not_modified(nets):
    net = nets.FlatTanhNet([(4,), (2,)], 3)
    x = (nets.randn(2, 4, seed=33), nets.randn(2, 2, seed=34))
    copies = tuple(t.clone() for t in x)
    FeatureAblation(net).attribute(x, baselines=(1.0, -1.0), target=0, perturbations_per_eval=3)
    for t, c in zip(x, copies):
        assert torch.equal(t, c) and not t.requires_grad


# ---------------------------------------------------------------------------------------------
# futures
# ---------------------------------------------------------------------------------------------


def _as_future(fn):
    def forward(*args):
        fut = torch.futures.Future()
        fut.set_result(fn(*args))
        return fut

    return forward


@pytest.mark.parametrize("ppe", [1, 3])
@pytest.mark.parametrize("tuple_inputs", [False, True])
def test_attribute_future_equals_attribute(nets, same, ppe, tuple_inputs):
    if tuple_inputs:
        net = nets.FlatTanhNet([(3,), (2, 2)], 3)
        x = (nets.randn(2, 3, seed=35), nets.randn(2, 2, 2, seed=36))
        mask = (torch.tensor([[0, 1, 1]]), torch.tensor([[[0, 2], [2, 0]]]))
        baselines = (0.5, nets.randn(1, 2, 2, seed=37))
    else:
        net = nets.FlatTanhNet([(5,)], 3)
        x = nets.randn(3, 5, seed=35)
        mask = torch.tensor([[0, 3, 3, 1, 0]])
        baselines = -0.5
    kw = dict(baselines=baselines, target=[2, 0] if tuple_inputs else 1, feature_mask=mask, perturbations_per_eval=ppe)
    fut = FeatureAblation(_as_future(net)).attribute_future(x, **kw)
    assert isinstance(fut, torch.Future)  # the base class of every torch future
    result = fut.wait()
    plain = FeatureAblation(net).attribute(x, **kw)
    same(result, plain, atol=0)
    ref = CaptumFA(_as_future(net)).attribute_future(x, **kw).wait()
    same(result, ref, atol=ATOL)


def _as_chained_future(fn):
    # futures made by ``then`` / ``collect_all`` / RPC are ``torch.Future`` (the C++ base class),
    # not the Python subclass ``torch.futures.Future``
    def forward(*args):
        fut = torch.futures.Future()
        fut.set_result(args)
        return fut.then(lambda f: fn(*f.value()))

    return forward


def test_attribute_future_with_chained_future_forward(nets, same):
    net = nets.FlatTanhNet([(4,)], 3)
    x = nets.randn(2, 4, seed=39)
    kw = dict(target=1, perturbations_per_eval=2)
    assert not isinstance(_as_chained_future(net)(x), torch.futures.Future)
    # captum 0.8.0 itself fails on a chained future (it expects the Python Future subclass),
    # so the oracle is Captum on the plain forward
    ref = CaptumFA(net).attribute(x, **kw)
    result = FeatureAblation(_as_chained_future(net)).attribute_future(x, **kw).wait()
    same(result, ref, atol=ATOL)


def test_error_plain_attribute_on_chained_future_forward(nets):
    net = nets.FlatTanhNet([(4,)], 3)
    fa = FeatureAblation(_as_chained_future(net))
    with pytest.raises(TypeError, match="attribute_future"):
        fa.attribute(nets.randn(2, 4, seed=57), target=0)


def test_attribute_future_scalar_per_batch(nets, same):
    net = nets.FlatTanhNet([(4,)], 3)
    x = nets.randn(3, 4, seed=38)
    agg = lambda inp: net(inp)[:, 0].sum()  # noqa: E731
    result = FeatureAblation(_as_future(agg)).attribute_future(x).wait()
    same(result, FeatureAblation(agg).attribute(x), atol=0)
    same(result, CaptumFA(_as_future(agg)).attribute_future(x).wait(), atol=ATOL)


# ---------------------------------------------------------------------------------------------
# closed forms
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("ppe", [1, 4])
def test_linear_model_zero_baseline_is_x_times_w(nets, ppe):
    net = nets.LinearNet((2, 3), seed=40)
    x = nets.randn(4, 2, 3, seed=41)
    out = FeatureAblation(net).attribute(x, perturbations_per_eval=ppe)
    torch.testing.assert_close(out, x * net.weight.detach(), atol=ATOL, rtol=0)


def test_linear_model_baseline_is_x_minus_b_times_w(nets):
    net = nets.LinearNet((3,), seed=42)
    x = nets.randn(2, 3, seed=43)
    b = nets.randn(3, seed=44)
    out = FeatureAblation(net).attribute(x, baselines=b)
    torch.testing.assert_close(out, (x - b) * net.weight.detach(), atol=ATOL, rtol=0)


def test_linear_model_grouped_is_group_sum(nets):
    net = nets.LinearNet((4,), seed=45)
    x = nets.randn(2, 4, seed=46)
    mask = torch.tensor([[0, 1, 0, 1]])
    out = FeatureAblation(net).attribute(x, feature_mask=mask)
    xw = x * net.weight.detach()
    g0 = xw[:, [0, 2]].sum(1, keepdim=True)
    g1 = xw[:, [1, 3]].sum(1, keepdim=True)
    expected = torch.cat([g0, g1, g0, g1], dim=1)
    torch.testing.assert_close(out, expected, atol=ATOL, rtol=0)


def test_feature_equal_to_its_baseline_gets_zero(nets):
    net = nets.FlatTanhNet([(5,)], 3)
    x = nets.randn(3, 5, seed=47)
    baseline = x.clone()
    baseline[:, 1] += 1.0  # only feature 1 differs from the input
    out = FeatureAblation(net).attribute(x, baselines=baseline, target=2, perturbations_per_eval=2)
    keep = [0, 2, 3, 4]
    # f(x) - f(x) evaluated at another batch size: zero up to BLAS rounding (float64)
    assert torch.all(out[:, keep].abs() < 1e-12)
    assert torch.all(out[:, 1].abs() > 1e-6)


def test_single_feature_equals_direct_difference(nets):
    net = nets.FlatTanhNet([(4,)], 3)
    x = nets.randn(2, 4, seed=48)
    out = FeatureAblation(net).attribute(x, baselines=0.25, target=[0, 2])
    with torch.no_grad():
        base = net(x)[[0, 1], [0, 2]]
        for j in range(4):
            xm = x.clone()
            xm[:, j] = 0.25
            expected = base - net(xm)[[0, 1], [0, 2]]
            torch.testing.assert_close(out[:, j], expected, atol=ATOL, rtol=0)


@pytest.mark.parametrize("ppe", [1, 3])
def test_integer_token_inputs_with_integer_baseline(nets, same, ppe):
    net = nets.EmbedNet(vocab=11, d=4, n_out=3)
    ids = torch.tensor([[1, 5, 7, 2], [3, 3, 9, 10]])
    out = _both(net, ids, same, baselines=0, target=1, perturbations_per_eval=ppe)
    assert out.dtype == torch.float64 and out.shape == ids.shape
    with torch.no_grad():
        base = net(ids)[:, 1]
        for j in range(4):
            replaced = ids.clone()
            replaced[:, j] = 0
            torch.testing.assert_close(out[:, j], base - net(replaced)[:, 1], atol=ATOL, rtol=0)


def test_integer_inputs_integer_baselines(nets, same):
    net = nets.EmbedNet(vocab=11, d=4, n_out=3)
    ids = torch.tensor([[1, 5, 7, 2]])
    with_int = _both(net, ids, same, baselines=4, target=2)
    same(_both(net, ids, same, baselines=torch.tensor([4, 4, 4, 4]), target=2), with_int, atol=0)


# ---------------------------------------------------------------------------------------------
# zoo model: token-level ablation on inputs_embeds
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bert():
    from hfattr.testing import tiny

    model, tok = tiny("bert", dtype=torch.float64)
    enc = tok(["a great movie , i love it", "the plot was boring"], return_tensors="pt", padding=True)
    with torch.no_grad():
        embeds = model.get_input_embeddings()(enc["input_ids"])
    return model, enc, embeds


@pytest.mark.parametrize("ppe", [1, 4])
def test_bert_token_level_ablation(bert, same, ppe):
    model, enc, embeds = bert
    mask_ids = enc["attention_mask"]
    L = embeds.shape[1]

    def forward(emb, attention_mask):
        return model(inputs_embeds=emb, attention_mask=attention_mask).logits

    token_mask = torch.arange(L).view(1, L, 1)
    baseline = model.get_input_embeddings().weight[4].detach()  # [MASK] embedding, shape (D,)
    kw = dict(
        baselines=baseline,
        target=1,
        additional_forward_args=(mask_ids,),
        feature_mask=token_mask,
        perturbations_per_eval=ppe,
    )
    out = _both(forward, embeds, same, **kw)
    assert out.shape == embeds.shape
    with torch.no_grad():
        base = forward(embeds, mask_ids)[:, 1]
        for i in range(L):
            replaced = embeds.clone()
            replaced[:, i] = baseline
            drop = base - forward(replaced, mask_ids)[:, 1]
            torch.testing.assert_close(out[:, i, 0], drop, atol=1e-8, rtol=0)
            assert torch.all(out[:, i] == out[:, i, :1])


# ---------------------------------------------------------------------------------------------
# errors
# ---------------------------------------------------------------------------------------------


@pytest.fixture()
def small(nets):
    net = nets.FlatTanhNet([(4,)], 3)
    return FeatureAblation(net), nets.randn(2, 4, seed=50)


def test_error_mask_not_broadcastable(small):
    fa, x = small
    with pytest.raises(ValueError, match="feature_mask.*broadcast"):
        fa.attribute(x, target=0, feature_mask=torch.tensor([[0, 1, 2]]))
    with pytest.raises(ValueError, match="feature_mask"):
        fa.attribute(x, target=0, feature_mask=torch.zeros(3, 4, dtype=torch.long))


def test_error_mask_more_dims_than_input(small):
    fa, x = small
    with pytest.raises(ValueError, match="feature_mask"):
        fa.attribute(x, target=0, feature_mask=torch.zeros(1, 1, 4, dtype=torch.long))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bool])
def test_error_non_integer_mask(small, dtype):
    fa, x = small
    with pytest.raises(TypeError, match="feature_mask.*integer"):
        fa.attribute(x, target=0, feature_mask=torch.zeros(1, 4, dtype=dtype))


def test_error_wrong_number_of_masks(nets):
    net = nets.FlatTanhNet([(2,), (2,)], 3)
    x = (nets.randn(2, 2, seed=51), nets.randn(2, 2, seed=52))
    fa = FeatureAblation(net)
    with pytest.raises(ValueError, match=r"feature_mask.*expected 2, got 1"):
        fa.attribute(x, target=0, feature_mask=torch.tensor([[0, 1]]))
    with pytest.raises(ValueError, match=r"feature_mask.*expected 2, got 3"):
        fa.attribute(x, target=0, feature_mask=(torch.tensor([[0, 1]]),) * 3)


def test_error_mask_first_dim_with_aggregate_output(nets):
    net = nets.FlatTanhNet([(4,)], 3)
    x = nets.randn(2, 4, seed=53)
    fa = FeatureAblation(lambda inp: net(inp)[:, 0].sum())
    with pytest.raises(ValueError, match="feature_mask.*first dimension"):
        fa.attribute(x, feature_mask=torch.tensor([[0, 0, 1, 1], [1, 1, 0, 0]]))


@pytest.mark.parametrize("target", [3, -4, (5,), torch.tensor(3), [0, 3], torch.tensor([0, 7])])
def test_error_target_out_of_range(small, target):
    fa, x = small
    with pytest.raises(IndexError, match="target.*out of range"):
        fa.attribute(x, target=target)


def test_error_target_tuple_too_long(small):
    fa, x = small
    with pytest.raises(ValueError, match="target"):
        fa.attribute(x, target=(0, 1))


@pytest.mark.parametrize("target", [[0], [0, 1, 2], torch.tensor([0, 1, 2])])
def test_error_target_wrong_length(small, target):
    fa, x = small
    with pytest.raises(ValueError, match=r"target.*(3|1) (entries|elements).*\(2\)"):
        fa.attribute(x, target=target)


def test_error_target_bad_type(small):
    fa, x = small
    with pytest.raises(TypeError, match="target"):
        fa.attribute(x, target="1")
    with pytest.raises(TypeError, match="target"):
        fa.attribute(x, target=True)


@pytest.mark.parametrize(
    "baseline",
    [torch.zeros(2, 5), torch.zeros(3, 4), torch.zeros(5), torch.zeros(1, 2, 4)],
    ids=["2x5", "3x4", "5", "1x2x4"],
)
def test_error_baseline_wrong_shape(small, baseline):
    fa, x = small
    with pytest.raises(ValueError, match=r"baselines.*shape.*\(2, 4\)"):
        fa.attribute(x, target=0, baselines=baseline.double())


def test_error_wrong_number_of_baselines(nets):
    net = nets.FlatTanhNet([(2,), (2,)], 3)
    x = (nets.randn(2, 2, seed=54), nets.randn(2, 2, seed=55))
    fa = FeatureAblation(net)
    with pytest.raises(ValueError, match=r"baselines.*expected 2, got 3"):
        fa.attribute(x, target=0, baselines=(0.0, 0.0, 0.0))
    with pytest.raises(ValueError, match=r"baselines.*expected 2, got 1"):
        fa.attribute(x, target=0, baselines=0.0)


def test_error_baseline_bad_type(small):
    fa, x = small
    with pytest.raises(TypeError, match="baselines"):
        fa.attribute(x, target=0, baselines="zero")


@pytest.mark.parametrize("ppe", [0, -1])
def test_error_perturbations_per_eval_below_one(small, ppe):
    fa, x = small
    with pytest.raises(ValueError, match="perturbations_per_eval.*>= 1"):
        fa.attribute(x, target=0, perturbations_per_eval=ppe)


@pytest.mark.parametrize("ppe", [2.0, "2", None, True])
def test_error_perturbations_per_eval_not_int(small, ppe):
    fa, x = small
    with pytest.raises(TypeError, match="perturbations_per_eval"):
        fa.attribute(x, target=0, perturbations_per_eval=ppe)


def test_error_aggregate_output_with_perturbations_per_eval(nets):
    net = nets.FlatTanhNet([(4,)], 3)
    x = nets.randn(2, 4, seed=56)
    fa = FeatureAblation(lambda inp: net(inp)[:, 0].sum())
    with pytest.raises(ValueError, match="perturbations_per_eval"):
        fa.attribute(x, perturbations_per_eval=2)


def test_error_plain_attribute_on_future_forward(nets):
    net = nets.FlatTanhNet([(4,)], 3)
    fa = FeatureAblation(_as_future(net))
    with pytest.raises(TypeError, match="attribute_future"):
        fa.attribute(nets.randn(2, 4, seed=57), target=0)


def test_error_attribute_future_on_plain_forward(nets):
    net = nets.FlatTanhNet([(4,)], 3)
    fa = FeatureAblation(net)
    with pytest.raises(TypeError, match=re.escape("attribute_future") + ".*Future"):
        fa.attribute_future(nets.randn(2, 4, seed=58), target=0).wait()


@pytest.mark.parametrize("baseline", [4.0, torch.tensor([0.5, 1.0, 2.0, 3.0])], ids=["scalar", "tensor"])
def test_float_baseline_for_embedding_ids_fails_in_the_model_as_in_the_reference(nets, baseline):
    # a float baseline promotes integer inputs to floating point (see test_dropin_args.py), which
    # an nn.Embedding refuses: the same error as the reference, raised by the model
    net = nets.EmbedNet()
    ids = torch.tensor([[1, 2, 3, 4]])
    with pytest.raises(RuntimeError) as ref:
        CaptumFA(net).attribute(ids, baselines=baseline, target=0)
    with pytest.raises(RuntimeError) as ours:
        FeatureAblation(net).attribute(ids, baselines=baseline, target=0)
    assert str(ours.value) == str(ref.value)


def test_error_inputs_not_tensors(small):
    fa, _ = small
    with pytest.raises(TypeError, match="inputs"):
        fa.attribute([[1.0, 2.0]], target=0)
    with pytest.raises(ValueError, match=r"inputs\[1\].*batch size"):
        fa.attribute((torch.zeros(2, 4), torch.zeros(3, 4)), target=0)


def test_error_forward_func_not_callable():
    with pytest.raises(TypeError, match="forward_func"):
        FeatureAblation(3)


def test_error_forward_returning_non_tensor(nets):
    fa = FeatureAblation(lambda inp: "nope")
    with pytest.raises(TypeError, match="forward_func"):
        fa.attribute(nets.randn(2, 4, seed=59))


# ---------------------------------------------------------------------------------------------
# less common forms that captum 0.8.0 accepts
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("ppe", [1, 2])
def test_int_target_on_3d_output_keeps_one_map_per_output(nets, same, ppe):
    # target=int on (B, L, V) indexes dim 1 and leaves (B, V): one map per selected output value
    net = nets.SeqNet(d=4, v=5)
    x = nets.randn(2, 3, 4, seed=60)
    out = _both(net, x, same, target=1, feature_mask=torch.arange(3).view(1, 3, 1), perturbations_per_eval=ppe)
    assert out.shape == (10, 3, 4)


@pytest.mark.parametrize("ppe", [1, 3])
def test_no_target_on_2d_output(nets, same, ppe):
    net = nets.FlatTanhNet([(4,)], 3)
    out = _both(net, nets.randn(2, 4, seed=61), same, perturbations_per_eval=ppe)
    assert out.shape == (6, 4)


def test_list_of_one_tuples_on_2d_output(nets, same):
    net = nets.FlatTanhNet([(4,)], 3)
    x = nets.randn(2, 4, seed=62)
    out = _both(net, x, same, target=[(1,), (2,)], perturbations_per_eval=2)
    # ppe=2 vs ppe=1 evaluates batches of another shape: equal up to float64 BLAS rounding
    same(out, FeatureAblation(net).attribute(x, target=[1, 2]), atol=1e-12)


def test_integer_outputs(nets, same):
    net = nets.FlatTanhNet([(4,)], 3)
    x = nets.randn(2, 4, seed=63)
    out = _both(lambda a: int((net(a)[:, 0].sum() * 100).round()), x, same)
    assert out.dtype == torch.int64
    out = _both(lambda a: (net(a)[:, 0] * 100).round().long(), x, same, perturbations_per_eval=2)
    assert out.dtype == torch.int64


def test_empty_input_tensor_gets_empty_attribution(nets, same):
    net = nets.FlatTanhNet([(4,)], 3)
    x = (nets.randn(2, 4, seed=64), torch.zeros(2, 0, dtype=torch.float64))
    out = _both(lambda a, b: net(a), x, same, target=0)
    assert out[1].shape == (2, 0)


@pytest.mark.parametrize("dtype", [torch.int32, torch.int64, torch.uint8])
def test_mask_integer_dtypes_and_negative_ids(nets, same, dtype):
    net = nets.FlatTanhNet([(4,)], 3)
    x = nets.randn(2, 4, seed=65)
    _both(net, x, same, target=0, feature_mask=torch.tensor([[0, 1, 1, 2]], dtype=dtype))
    _both(net, x, same, target=0, feature_mask=torch.tensor([[-3, -1, -1, 2]]), perturbations_per_eval=2)


def test_inputs_requiring_grad(nets, same):
    net = nets.FlatTanhNet([(4,)], 3)
    x = nets.randn(2, 4, seed=66).requires_grad_()
    out = _both(net, x, same, target=0)
    assert not out.requires_grad and x.requires_grad and x.grad is None
