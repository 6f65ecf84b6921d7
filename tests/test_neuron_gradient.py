"""NeuronGradient: against captum 0.8.0 (the oracle) and ``torch.autograd.grad``; errors; hygiene.

All comparisons run in float64 at atol 1e-10.
"""

from __future__ import annotations

import functools
import inspect
import warnings

import pytest
import torch
from torch import nn

from conftest import oracle
from hfattr import NeuronGradient
from hfattr.core import hook_counts

CaptumNG = oracle("captum.attr").NeuronGradient

ATOL = 1e-10


def _captum(forward, layer, inputs, selector, **kw):
    # captum warns that it switched requires_grad on; it restores the flag afterwards
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return CaptumNG(forward, layer).attribute(inputs, selector, **kw)


def _both(forward, layer, inputs, selector, same, **kw):
    ours = NeuronGradient(forward, layer).attribute(inputs, selector, **kw)
    ref = _captum(forward, layer, inputs, selector, **kw)
    same(ours, ref, atol=ATOL)
    return ours


def _all_hooks(model: nn.Module):
    return {name: hook_counts(m) for name, m in model.named_modules()}


def _direct_grad(forward, layer, inputs, pick, *, to_input=False, args=()):
    """Reference: hook the layer by hand, pick the neuron, ``autograd.grad`` of its batch sum."""
    leaves = tuple(x.detach().clone().requires_grad_() for x in inputs)
    seen = []
    if to_input:
        handle = layer.register_forward_pre_hook(lambda m, a: seen.append(a[0]))
    else:
        handle = layer.register_forward_hook(lambda m, a, out: seen.append(out))
    try:
        forward(*leaves, *args)
    finally:
        handle.remove()
    return torch.autograd.grad(pick(seen[0]).sum(), leaves, allow_unused=True)


def test_signatures_match_the_reference():
    for ours, ref in [(NeuronGradient.__init__, CaptumNG.__init__), (NeuronGradient.attribute, CaptumNG.attribute)]:
        a = [(p.name, p.kind, p.default) for p in inspect.signature(ours).parameters.values()]
        b = [(p.name, p.kind, p.default) for p in inspect.signature(inspect.unwrap(ref)).parameters.values()]
        assert a == b


# ---------------------------------------------------------------------------------------------
# selector forms on a small torch net
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "selector",
    [
        pytest.param(2, id="int"),
        pytest.param(-1, id="negative-int"),
        pytest.param((4,), id="tuple"),
        pytest.param((slice(1, 5),), id="slice"),
        pytest.param((slice(None, None, 2),), id="strided-slice"),
        pytest.param(lambda out: out[:, 1] * out[:, 3], id="callable-per-example"),
        pytest.param(lambda out: out.pow(2).sum(), id="callable-scalar"),
    ],
)
@pytest.mark.parametrize("to_input", [False, True])
def test_selector_forms_mlp(nets, same, selector, to_input):
    net = nets.MLP(d_in=5, hidden=7, n_out=3)
    x = nets.randn(3, 5, seed=1)
    layer = net.fc2 if to_input else net.fc1
    out = _both(net, layer, x, selector, same, attribute_to_neuron_input=to_input)
    assert out.shape == x.shape and out.dtype == x.dtype


@pytest.mark.parametrize(
    "selector",
    [
        pytest.param((1, 2), id="ints"),
        pytest.param((-1, 0), id="negative"),
        pytest.param((slice(0, 2), 3), id="slice-int"),
        pytest.param((2, slice(None)), id="int-slice"),
        pytest.param((slice(None), slice(1, 3)), id="slices"),
        pytest.param(lambda out: out[:, 0].sum(-1), id="callable"),
    ],
)
@pytest.mark.parametrize("to_input", [False, True])
def test_selector_forms_3d_layer(nets, same, selector, to_input):
    net = nets.SeqNet(d=4, v=5)
    x = nets.randn(2, 3, 4, seed=2)
    layer = net.head if to_input else net.proj
    _both(net, layer, x, selector, same, attribute_to_neuron_input=to_input)


def test_slice_is_sum_of_neurons(nets, same):
    net = nets.MLP(d_in=5, hidden=7, n_out=3)
    x = nets.randn(2, 5, seed=3)
    ng = NeuronGradient(net, net.fc1)
    total = sum(ng.attribute(x, i) for i in range(1, 4))
    same(ng.attribute(x, (slice(1, 4),)), total, atol=ATOL)


@pytest.mark.parametrize("to_input", [False, True])
def test_tuple_inputs(nets, same, to_input):
    net = nets.FlatTanhNet([(4,), (2, 3)], 3, hidden=6)
    x = (nets.randn(2, 4, seed=4), nets.randn(2, 2, 3, seed=5))
    layer = net.out if to_input else net.hidden
    out = _both(net, layer, x, 5, same, attribute_to_neuron_input=to_input)
    assert isinstance(out, tuple) and [o.shape for o in out] == [t.shape for t in x]


def test_single_element_tuple_input_returns_tuple(nets, same):
    net = nets.MLP()
    out = _both(net, net.fc1, (nets.randn(2, 5, seed=6),), 1, same)
    assert isinstance(out, tuple) and len(out) == 1


@pytest.mark.parametrize(
    "args",
    [
        pytest.param("tensor", id="tensor"),
        pytest.param(0.5, id="scalar"),
        pytest.param("tuple", id="tuple"),
    ],
)
def test_additional_forward_args(nets, same, args):
    net = nets.MLP()
    x = nets.randn(3, 5, seed=7)
    if args == "tensor":
        args = nets.randn(3, 1, seed=8)
    elif args == "tuple":
        args = (nets.randn(3, 1, seed=8),)
    _both(net, net.fc2, x, 1, same, additional_forward_args=args)
    _both(net, net.fc2, x, 0, same, additional_forward_args=args, attribute_to_neuron_input=True)


@pytest.mark.parametrize("to_input", [False, True])
@pytest.mark.parametrize("selector", [3, (slice(0, 4),)])
def test_equals_autograd_grad(nets, same, to_input, selector):
    net = nets.MLP()
    x = nets.randn(3, 5, seed=9)
    layer = net.fc2 if to_input else net.fc1
    index = (slice(None), selector) if isinstance(selector, int) else (slice(None), *selector)
    (expected,) = _direct_grad(net, layer, (x,), lambda v: v[index], to_input=to_input)
    out = NeuronGradient(net, layer).attribute(x, selector, attribute_to_neuron_input=to_input)
    same(out, expected, atol=ATOL)


def test_linear_first_layer_gradient_is_weight_row(nets):
    net = nets.MLP()
    x = nets.randn(4, 5, seed=10)
    out = NeuronGradient(net, net.fc1).attribute(x, 2)
    torch.testing.assert_close(out, net.fc1.weight[2].detach().expand(4, 5), atol=ATOL, rtol=0)


def test_input_unused_by_neuron_gets_zero_gradient(nets):
    net = nets.MLP()
    x = (nets.randn(2, 5, seed=11), nets.randn(2, 3, seed=12))
    a, b = NeuronGradient(lambda u, v: net(u) + v, net.fc1).attribute(x, 0)
    torch.testing.assert_close(a, net.fc1.weight[0].detach().expand(2, 5), atol=ATOL, rtol=0)
    assert torch.equal(b, torch.zeros_like(b))


def test_float32(nets, same):
    net = nets.MLP().float()
    x = nets.randn(2, 5, seed=13).float()
    out = _both(net, net.fc1, x, 1, same)
    assert out.dtype == torch.float32


def test_module_running_twice_matches_reference_or_is_refused(nets, same):
    # A shared module runs twice per forward. captum 0.8.0 keeps the value of its LAST call;
    # hfattr must give the same gradient, or refuse the layer with a clear error.
    fc = nets.MLP(d_in=4, hidden=4, n_out=4).fc1

    def forward(x):
        return fc(torch.tanh(fc(x)))

    x = nets.randn(2, 4, seed=14)
    ref = _captum(forward, fc, x, 1)
    try:
        out = NeuronGradient(forward, fc).attribute(x, 1)
    except ValueError as err:
        assert "times" in str(err) or "more than once" in str(err)
        return
    same(out, ref, atol=ATOL)


# ---------------------------------------------------------------------------------------------
# zoo models: inputs_embeds, neurons of intermediate modules
# ---------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=None)
def _load(name):
    from hfattr.testing import tiny

    model, tok = tiny(name, dtype=torch.float64)
    enc = tok(["a great movie , i love it", "the plot was boring"], return_tensors="pt", padding=True)
    with torch.no_grad():
        embeds = model.get_input_embeddings()(enc["input_ids"])
    if name == "bert":
        block = model.bert.encoder.layer[0]
        mlp_linear = block.intermediate.dense
    else:
        block = model.model.layers[0]
        mlp_linear = block.mlp.up_proj
    return name, model, enc["attention_mask"], embeds, block, mlp_linear


@pytest.fixture(params=["bert", "llama"])
def zoo(request):
    return _load(request.param)


@pytest.mark.parametrize(
    "selector",
    [
        pytest.param((1, 3), id="tuple"),
        pytest.param((slice(None), 5), id="slice"),
        pytest.param(lambda out: out[:, 0, :4].sum(-1), id="callable"),
    ],
)
@pytest.mark.parametrize("to_input", [False, True])
def test_zoo_mlp_linear_neuron(zoo, same, selector, to_input):
    name, model, attn, embeds, _, layer = zoo

    def forward(emb, attention_mask):
        return model(inputs_embeds=emb, attention_mask=attention_mask).logits

    kw = dict(additional_forward_args=(attn,), attribute_to_neuron_input=to_input)
    before = _all_hooks(model)
    out = _both(forward, layer, embeds, selector, same, **kw)
    assert _all_hooks(model) == before
    assert out.shape == embeds.shape and out.abs().sum() > 0

    def pick(v):
        if callable(selector):
            return selector(v)
        picked = v[(slice(None), *selector)]
        return picked.reshape(picked.shape[0], -1).sum(1)

    (expected,) = _direct_grad(forward, layer, (embeds,), pick, to_input=to_input, args=(attn,))
    same(out, expected, atol=ATOL)


def test_zoo_block_output(zoo, same):
    name, model, attn, embeds, block, _ = zoo

    def forward(emb, attention_mask):
        return model(inputs_embeds=emb, attention_mask=attention_mask).logits

    _both(forward, block, embeds, (2, 7), same, additional_forward_args=(attn,))


def test_zoo_gradient_is_causal_for_llama():
    # a decoder's position-1 neuron cannot depend on later tokens
    name, model, attn, embeds, _, layer = _load("llama")
    out = NeuronGradient(lambda e: model(inputs_embeds=e).logits, layer).attribute(embeds, (1, 3))
    assert torch.all(out[:, 2:] == 0) and out[:, :2].abs().sum() > 0


# ---------------------------------------------------------------------------------------------
# errors
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("selector", [7, -8, (9,), (slice(0, 2), 3)])
def test_error_selector_out_of_range(nets, selector):
    net = nets.MLP(hidden=7)
    with pytest.raises((IndexError, ValueError), match="neuron_selector"):
        NeuronGradient(net, net.fc1).attribute(nets.randn(2, 5, seed=20), selector)


def test_error_selector_too_many_indices(nets):
    net = nets.MLP()
    with pytest.raises(ValueError, match=r"neuron_selector.*2 indices.*1 dimension"):
        NeuronGradient(net, net.fc1).attribute(nets.randn(2, 5, seed=21), (1, 2))


def test_error_selector_too_few_indices(nets):
    net = nets.SeqNet()
    with pytest.raises(ValueError, match="neuron_selector"):
        NeuronGradient(net, net.proj).attribute(nets.randn(2, 3, 4, seed=22), 1)


@pytest.mark.parametrize("selector", [1.0, "1", True, [1], (1.0,), None])
def test_error_selector_bad_type(nets, selector):
    net = nets.MLP()
    with pytest.raises(TypeError, match="neuron_selector"):
        NeuronGradient(net, net.fc1).attribute(nets.randn(2, 5, seed=23), selector)


def test_error_callable_selector_returning_non_tensor(nets):
    net = nets.MLP()
    with pytest.raises(TypeError, match="neuron_selector"):
        NeuronGradient(net, net.fc1).attribute(nets.randn(2, 5, seed=24), lambda out: 1.0)


def test_error_index_selector_on_multi_tensor_layer(nets, same):
    class Pair(nn.Module):
        def forward(self, x):
            return x * 2, x + 1

    pair = Pair()

    def forward(x):
        a, b = pair(x)
        return (a * b).sum(1)

    x = nets.randn(2, 3, seed=25)
    with pytest.raises(ValueError, match="neuron_selector.*callable"):
        NeuronGradient(forward, pair).attribute(x, 1)
    # a callable receives the tuple
    _both(forward, pair, x, lambda ab: ab[0][:, 1] + ab[1][:, 2], same)


def test_error_integer_inputs(nets):
    net = nets.EmbedNet()
    with pytest.raises(TypeError, match="inputs.*floating point"):
        NeuronGradient(net, net.head).attribute(torch.tensor([[1, 2, 3]]), 0)
    with pytest.raises(TypeError, match=r"inputs\[1\].*floating point"):
        NeuronGradient(lambda a, b: net(b), net.head).attribute(
            (nets.randn(1, 3, seed=26), torch.tensor([[1, 2, 3]])), 0
        )


def test_error_layer_not_in_model(nets):
    net = nets.MLP()
    other = nn.Linear(5, 7).double()
    with pytest.raises(ValueError, match="did not run"):
        NeuronGradient(net, other).attribute(nets.randn(2, 5, seed=27), 0)
    assert hook_counts(other) == (0, 0, 0, 0)


def test_error_layer_not_a_module(nets):
    net = nets.MLP()
    with pytest.raises(TypeError, match="layer"):
        NeuronGradient(net, lambda x: x)
    with pytest.raises(TypeError, match="forward_func"):
        NeuronGradient("net", net.fc1)


# ---------------------------------------------------------------------------------------------
# hygiene: inputs untouched, no hooks left, also after errors
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("requires_grad", [False, True])
def test_inputs_unchanged(nets, requires_grad):
    net = nets.MLP()
    x = nets.randn(2, 5, seed=30).requires_grad_(requires_grad)
    y = nets.randn(2, 1, seed=31)
    copy = x.detach().clone()
    out = NeuronGradient(net, net.fc1).attribute(x, 1, additional_forward_args=(y,))
    assert x.requires_grad is requires_grad and x.grad is None
    assert torch.equal(x.detach(), copy)
    assert not y.requires_grad
    assert not out.requires_grad
    assert all(p.grad is None for p in net.parameters())


def test_no_hooks_left_after_success(nets):
    net = nets.MLP()
    before = _all_hooks(net)
    for to_input in (False, True):
        NeuronGradient(net, net.fc2).attribute(nets.randn(2, 5, seed=32), 1, attribute_to_neuron_input=to_input)
    assert _all_hooks(net) == before == {n: (0, 0, 0, 0) for n in before}


@pytest.mark.parametrize(
    "selector",
    [9, (1, 2), "x", lambda out: 1.0, lambda out: out[:, 99]],
    ids=["out-of-range", "too-many", "bad-type", "callable-non-tensor", "callable-raises"],
)
@pytest.mark.parametrize("to_input", [False, True])
def test_no_hooks_left_after_errors(nets, selector, to_input):
    net = nets.MLP()
    x = nets.randn(2, 5, seed=33)
    before = _all_hooks(net)
    with pytest.raises((ValueError, TypeError, IndexError)):
        NeuronGradient(net, net.fc1).attribute(x, selector, attribute_to_neuron_input=to_input)
    assert _all_hooks(net) == before
    assert not x.requires_grad


def test_no_hooks_left_when_forward_raises(nets):
    net = nets.MLP()

    def forward(x):
        net.fc1(x)
        raise RuntimeError("boom")

    # the forward may be stopped right after the layer; either way no hook survives
    before = _all_hooks(net)
    try:
        NeuronGradient(forward, net.fc2).attribute(nets.randn(2, 5, seed=34), 0)
    except (RuntimeError, ValueError):
        pass
    assert _all_hooks(net) == before


def test_no_hooks_left_on_zoo_model_after_error(zoo):
    name, model, attn, embeds, _, layer = zoo
    before = _all_hooks(model)
    with pytest.raises(IndexError, match="neuron_selector"):
        NeuronGradient(lambda e: model(inputs_embeds=e).logits, layer).attribute(embeds, (0, 10_000))
    assert _all_hooks(model) == before
    assert all(p.grad is None for p in model.parameters())
