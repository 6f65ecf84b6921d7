"""LayerFeatureAblation: captum 0.8.0 as the oracle on small nets, direct computations on the zoo.

Oracles used here:
* captum 0.8.0 ``LayerFeatureAblation`` on float64 torch nets (and on HF modules whose output is a
  single tensor, where captum works), atol 1e-6;
* a direct computation on every zoo architecture: the target recomputed with the module's output
  (or input) at one token position replaced by the baseline through a forward (pre-)hook written
  here, in float64, atol 1e-6.
"""

from __future__ import annotations


import pytest
import torch
from torch import Tensor, nn

from hfattr import LayerFeatureAblation

from conftest import oracle  # noqa: E402

captum_attr = oracle("captum.attr")
CaptumLFA = captum_attr.LayerFeatureAblation

from layer_helpers import ATOL, DT, _gen, _init, _randn, assert_close, one_thread  # noqa: F401


@pytest.fixture(autouse=True, scope="module")
def _one_thread(one_thread):
    yield


class Net(nn.Module):
    """``fc2(tanh(fc1(x) * scale + shift))``: (B, 5) -> (B, 3)."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        self.fc1 = nn.Linear(5, 7)
        self.act = nn.Tanh()
        self.fc2 = nn.Linear(7, 3)
        _init(self, seed)

    def forward(self, x: Tensor, scale: Tensor | float = 1.0, shift: float = 0.0) -> Tensor:
        return self.fc2(self.act(self.fc1(x) * scale + shift))


class Split(nn.Module):
    """A layer returning a tuple of two tensors of different widths."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(4, 3)
        self.b = nn.Linear(4, 2)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return self.a(x), self.b(x)


class TupleNet(nn.Module):
    """(B, 4) -> (B, 3) through a layer that returns two tensors."""

    def __init__(self, seed: int = 1) -> None:
        super().__init__()
        self.split = Split()
        self.head = nn.Linear(5, 3)
        _init(self, seed)

    def forward(self, x: Tensor) -> Tensor:
        a, b = self.split(x)
        return self.head(torch.tanh(torch.cat([a * b.sum(1, keepdim=True), b], dim=1)))


class SeqNet(nn.Module):
    """(B, L, D) -> (B, L, V), positions mixed, for tuple targets."""

    def __init__(self, seed: int = 2) -> None:
        super().__init__()
        self.proj = nn.Linear(4, 6)
        self.head = nn.Linear(6, 5)
        _init(self, seed)

    def forward(self, x: Tensor) -> Tensor:
        h = torch.tanh(self.proj(x))
        return self.head(h + h.mean(dim=1, keepdim=True))


class TwiceNet(nn.Module):
    """Calls the same Linear twice in one forward."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 4)
        self.head = nn.Linear(4, 2)
        _init(self, 3)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.lin(torch.tanh(self.lin(x))))


def _both(forward_func, layer, inputs, *, captum_ppe=None, **kw):
    """(hfattr result, captum result) for the same arguments (captum optionally with another ppe)."""
    ours = LayerFeatureAblation(forward_func, layer).attribute(inputs, **kw)
    ckw = dict(kw)
    if captum_ppe is not None:
        ckw["perturbations_per_eval"] = captum_ppe
    theirs = CaptumLFA(forward_func, layer).attribute(inputs, **ckw)
    return ours, theirs


# ---------------------------------------------------------------------------------------------
# 1. equality with captum 0.8.0 on small torch nets
# ---------------------------------------------------------------------------------------------


X = _randn(4, 5, seed=10)


@pytest.mark.parametrize("to_input", [False, True])
@pytest.mark.parametrize("ppe", [1, 2, 3, 4, 5])
def test_default_mask_matches_captum(to_input, ppe):
    net = Net()
    ours, theirs = _both(net, net.fc1, X, target=1, attribute_to_layer_input=to_input, perturbations_per_eval=ppe)
    assert_close(ours, theirs)
    assert ours.shape == ((4, 5) if to_input else (4, 7))
    # and the captum result is itself a genuine drop: zeroing fc1's output unit 0
    if not to_input:
        with torch.no_grad():
            h = net.fc1(X)
            h0 = h.clone()
            h0[:, 0] = 0
            drop = net.fc2(net.act(h))[:, 1] - net.fc2(net.act(h0))[:, 1]
        torch.testing.assert_close(ours[:, 0], drop, atol=1e-12, rtol=0)


@pytest.mark.parametrize(
    "mask",
    [
        torch.tensor([[0, 0, 1, 1, 2, 2, 2]]),
        torch.tensor([[0, 3, 3, 5, 0, 5, 1]]),  # gaps in the ids
        torch.tensor([[1, 0, 1, 0, 1, 0, 1], [2, 2, 2, 0, 0, 0, 1], [0] * 7, [0, 1, 2, 3, 4, 5, 6]]),
    ],
    ids=["grouped", "gaps", "per-example"],
)
@pytest.mark.parametrize("ppe", [1, 3])
def test_grouped_layer_mask_matches_captum(mask, ppe):
    net = Net()
    ours, theirs = _both(net, net.fc1, X, target=2, layer_mask=mask, perturbations_per_eval=ppe)
    assert_close(ours, theirs)
    # every element of a group gets the same value
    full = mask.expand(4, 7) if mask.dim() == 2 else mask.expand(4, 7)
    for b in range(4):
        for g in full[b].unique():
            vals = ours[b][full[b] == g]
            assert torch.allclose(vals, vals[0].expand_as(vals), atol=0, rtol=0)


@pytest.mark.parametrize("ppe", [1, 3])
def test_mask_without_batch_dim_broadcasts(ppe):
    # captum 0.8.0 itself fails here for ppe > 1; compare with the same mask given a batch dim
    net = Net()
    mask = torch.tensor([0, 3, 3, 5, 0, 5, 1])
    lfa = LayerFeatureAblation(net, net.fc1)
    got = lfa.attribute(X, target=2, layer_mask=mask, perturbations_per_eval=ppe)
    expected = CaptumLFA(net, net.fc1).attribute(X, target=2, layer_mask=mask.unsqueeze(0))
    assert_close(got, expected)


@pytest.mark.parametrize(
    "baseline",
    [0.5, -1, _randn(1, 7, seed=3), _randn(7, seed=4), _randn(4, 7, seed=5)],
    ids=["float", "int", "tensor-1x7", "tensor-7", "tensor-per-example"],
)
@pytest.mark.parametrize("ppe", [1, 4])
def test_layer_baselines_match_captum(baseline, ppe):
    net = Net()
    mask = torch.tensor([[0, 1, 1, 2, 3, 3, 4]])
    ours, theirs = _both(
        net,
        net.fc1,
        X,
        target=0,
        layer_baselines=baseline,
        layer_mask=mask,
        perturbations_per_eval=ppe,
    )
    assert_close(ours, theirs)


@pytest.mark.parametrize(
    "target",
    [0, 2, torch.tensor(1), torch.tensor([1])],
    ids=["int0", "int2", "0d-tensor", "1elem-tensor"],
)
@pytest.mark.parametrize("ppe", [1, 2, 5])
def test_shared_targets_match_captum(target, ppe):
    net = Net()
    ours, theirs = _both(net, net.fc1, X, target=target, perturbations_per_eval=ppe)
    assert_close(ours, theirs)


@pytest.mark.parametrize(
    "target",
    [[0, 2, 1, 1], torch.tensor([2, 0, 0, 1])],
    ids=["list", "tensor"],
)
@pytest.mark.parametrize("ppe", [1, 2, 3, 4, 5])
def test_per_example_targets_match_captum_ppe1(target, ppe):
    # captum 0.8.0 does not expand per-example targets for ppe > 1, so its ppe=1 is the oracle
    net = Net()
    ours, theirs = _both(net, net.fc1, X, target=target, perturbations_per_eval=ppe, captum_ppe=1)
    assert_close(ours, theirs)


@pytest.mark.parametrize("target", [(2, 4), [(0, 1), (3, 0), (1, 4)]], ids=["tuple", "list-of-tuples"])
@pytest.mark.parametrize("ppe", [1, 2, 3])
def test_tuple_targets_on_3d_output_match_captum(target, ppe):
    net = SeqNet()
    x = _randn(3, 4, 4, seed=6)
    mask = torch.arange(4).view(1, 4, 1)  # one group per position
    ours, theirs = _both(
        net,
        net.proj,
        x,
        target=target,
        layer_mask=mask,
        perturbations_per_eval=ppe,
        captum_ppe=1 if isinstance(target, list) else None,
    )
    assert_close(ours, theirs)
    assert ours.shape == (3, 4, 6)


@pytest.mark.parametrize("ppe", [1, 3])
@pytest.mark.parametrize("to_input", [False, True])
def test_additional_forward_args_match_captum(ppe, to_input):
    net = Net()
    scale = _randn(4, 1, seed=7)  # per-example tensor arg: must be expanded with the batch
    ours, theirs = _both(
        net,
        net.fc1,
        X,
        target=1,
        additional_forward_args=(scale, 0.3),
        attribute_to_layer_input=to_input,
        perturbations_per_eval=ppe,
    )
    assert_close(ours, theirs)
    # a single non-tuple additional arg
    ours1, theirs1 = _both(net, net.fc1, X, target=1, additional_forward_args=scale, perturbations_per_eval=ppe)
    assert_close(ours1, theirs1)
    # the extra arguments really reach the model
    plain = LayerFeatureAblation(net, net.fc1).attribute(X, target=1, perturbations_per_eval=ppe)
    assert not torch.allclose(ours1, plain)


def test_multiple_inputs_match_captum():
    class Two(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(5, 4)
            self.out = nn.Linear(4, 2)
            _init(self, 8)

        def forward(self, a, b):
            return self.out(torch.tanh(self.fc(a) + b))

    net = Two()
    a, b = _randn(3, 5, seed=1), _randn(3, 4, seed=2)
    for ppe in (1, 2, 4):
        ours, theirs = _both(net, net.fc, (a, b), target=0, perturbations_per_eval=ppe)
        assert_close(ours, theirs)


@pytest.mark.parametrize("ppe", [1, 2, 5])
def test_layer_returning_two_tensors_gives_tuple(ppe):
    net = TupleNet()
    x = _randn(3, 4, seed=9)
    ours, theirs = _both(net, net.split, x, target=2, perturbations_per_eval=ppe)
    assert isinstance(ours, tuple) and len(ours) == 2
    assert ours[0].shape == (3, 3) and ours[1].shape == (3, 2)
    assert_close(ours, theirs)
    # grouped, with tuple masks and tuple baselines
    masks = (torch.tensor([[0, 1, 1]]), torch.tensor([[2, 3]]))
    base = (0.25, _randn(1, 2, seed=3))
    ours, theirs = _both(
        net, net.split, x, target=1, layer_mask=masks, layer_baselines=base, perturbations_per_eval=ppe
    )
    assert_close(ours, theirs)


@pytest.mark.parametrize("to_input", [False, True])
def test_ppe_1_to_5_identical(to_input):
    net = Net()
    scale = _randn(4, 1, seed=11)
    results = [
        LayerFeatureAblation(net, net.fc1).attribute(
            X,
            target=[0, 1, 2, 0],
            additional_forward_args=(scale,),
            layer_mask=torch.tensor([[0, 1, 2, 0, 1]]) if to_input else torch.tensor([[0, 1, 2, 3, 4, 5, 6]]),
            attribute_to_layer_input=to_input,
            perturbations_per_eval=ppe,
        )
        for ppe in range(1, 6)
    ]
    for r in results[1:]:
        torch.testing.assert_close(r, results[0], atol=1e-12, rtol=0)


class InplaceAfterNet(nn.Module):
    """fc1's output is modified in place by the code that follows the layer (and fc2 by its own)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(5, 7)
        self.fc2 = nn.Linear(7, 3)
        _init(self, 12)

    def forward(self, x: Tensor) -> Tensor:
        h = self.fc1(x)
        h.mul_(2.0)
        return self.fc2(torch.relu(h))


@pytest.mark.parametrize("ppe", [1, 3])
def test_in_place_use_of_the_layer_value_does_not_corrupt_attributions(ppe):
    """The model may modify a layer's output in place after the layer; the substituted value
    must not be the stored one, or every later perturbation starts from a modified value."""
    net = InplaceAfterNet()
    with torch.no_grad():
        base = net(X)[:, 0]
        drops = []
        for j in range(7):

            def hook(m, a, out, j=j):
                out = out.clone()
                out[:, j] = 0
                return out

            h = net.fc1.register_forward_hook(hook)
            try:
                drops.append(base - net(X)[:, 0])
            finally:
                h.remove()
    expected = torch.stack(drops, dim=1)
    got = LayerFeatureAblation(net, net.fc1).attribute(X, target=0, perturbations_per_eval=ppe)
    torch.testing.assert_close(got, expected, atol=ATOL, rtol=0)


def test_return_type_follows_layer_not_inputs():
    net = Net()
    # a tuple of inputs with a single-tensor layer still gives a tensor (as captum does)
    ours, theirs = _both(net, net.fc1, (X,), target=0)
    assert isinstance(ours, Tensor) and isinstance(theirs, Tensor)
    assert_close(ours, theirs)
