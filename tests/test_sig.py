"""Sequential Integrated Gradients: time-interpret oracle, per-position completeness, captum-IG oracle,
batched == per-position loop, skipped positions, adaptive steps, progress bar and argument errors.

tint (time-interpret 0.3.0) rounds its quadrature weights to float32 while hfattr uses exact float64
weights, so the two agree to ~1e-7 relative, not bitwise: oracle comparisons use atol = rtol = 1e-6.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor, nn

from conftest import oracle
from hfattr import SequentialIntegratedGradients
from hfattr.core.sig import METHODS, quadrature, sequential_integrated_gradients

D64 = torch.float64
ORACLE = dict(atol=1e-6, rtol=1e-6)
B, L, DIM = 3, 5, 3


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def rnd(*shape: int, seed: int = 0, scale: float = 1.0) -> Tensor:
    return torch.randn(*shape, generator=_gen(seed), dtype=D64) * scale


class MixNet(nn.Module):
    """``W2 tanh(W1 [x_0.flat, x_1.flat, ...] * scale + shift) + b2``: smooth, every position interacts.

    Optional extra forward arguments: a per-example tensor ``scale`` of shape ``(B,)`` and a Python
    float ``shift``. Output ``(B, n_out)``.
    """

    def __init__(self, n_in: int, n_out: int = 4, hidden: int = 8, *, seed: int = 0) -> None:
        super().__init__()
        g = _gen(seed)
        self.w1 = nn.Parameter(torch.randn(n_in, hidden, generator=g, dtype=D64) / math.sqrt(n_in))
        self.b1 = nn.Parameter(torch.randn(hidden, generator=g, dtype=D64) * 0.1)
        self.w2 = nn.Parameter(torch.randn(hidden, n_out, generator=g, dtype=D64))
        self.b2 = nn.Parameter(torch.randn(n_out, generator=g, dtype=D64))
        self.calls: list[int] = []  # rows per forward call

    def forward(self, *xs_and_args):
        xs = [a for a in xs_and_args if isinstance(a, Tensor) and a.dim() >= 2]
        rest = [a for a in xs_and_args if not (isinstance(a, Tensor) and a.dim() >= 2)]
        scale = rest[0].view(-1, 1) if rest and isinstance(rest[0], Tensor) else 1.0
        shift = rest[1] if len(rest) > 1 else 0.0
        flat = torch.cat([x.reshape(x.shape[0], -1) for x in xs], dim=1)
        self.calls.append(flat.shape[0])
        return torch.tanh((flat @ self.w1 + self.b1) * scale + shift) @ self.w2 + self.b2


class SeqOutNet(nn.Module):
    """``(B, L, D) -> (B, L, V)``: per-position head on ``tanh(h_i) + mean_j tanh(h_j)``."""

    def __init__(self, d: int = DIM, v: int = 4, *, seed: int = 0) -> None:
        super().__init__()
        g = _gen(seed)
        self.proj = nn.Parameter(torch.randn(d, d, generator=g, dtype=D64))
        self.head = nn.Parameter(torch.randn(d, v, generator=g, dtype=D64))

    def forward(self, x: Tensor) -> Tensor:
        h = torch.tanh(x @ self.proj)
        return (h + h.mean(dim=1, keepdim=True)) @ self.head


@pytest.fixture(scope="module")
def TSIG(tint_attr):
    """time-interpret 0.3.0's class (conftest imports tint once per session: it takes ~20 s)."""
    return tint_attr.SequentialIntegratedGradients


@pytest.fixture(scope="module")
def net() -> MixNet:
    return MixNet(L * DIM)


X = rnd(B, L, DIM, seed=1)


def _both(TSIG, forward, inputs, *, mbi: bool = True, delta: bool = False, **kw):
    ours = SequentialIntegratedGradients(forward, multiply_by_inputs=mbi)
    theirs = TSIG(forward, multiply_by_inputs=mbi)
    if delta:
        kw["return_convergence_delta"] = True
    return ours.attribute(inputs, **kw), theirs.attribute(inputs, **kw)


def _close(a, b, **tol) -> None:
    tol = tol or ORACLE
    if isinstance(b, tuple):
        assert isinstance(a, tuple) and len(a) == len(b)
        for u, v in zip(a, b):
            _close(u, v, **tol)
        return
    assert isinstance(a, Tensor) and a.shape == b.shape and a.dtype == b.dtype, (a, b)
    torch.testing.assert_close(a, b, **tol)


# --------------------------------------------------------------------------- oracle: time-interpret


@pytest.mark.parametrize(
    "baselines",
    [None, 0.5, -2, rnd(B, L, DIM, seed=2), rnd(1, L, DIM, seed=3)],
    ids=["none", "float", "int", "tensor", "broadcast"],
)
def test_oracle_baselines(TSIG, net, baselines):
    ours, theirs = _both(TSIG, net, X, baselines=baselines, target=1)
    _close(ours, theirs)
    assert ours.abs().max() > 1e-3  # not trivially zero


@pytest.mark.parametrize(
    "target", [2, torch.tensor(2), [0, 3, 1], torch.tensor([1, 0, 2])], ids=["int", "0d", "list", "tensor"]
)
def test_oracle_targets(TSIG, net, target):
    ours, theirs = _both(TSIG, net, X, baselines=0.3, target=target)
    _close(ours, theirs)


@pytest.mark.parametrize("target", [(2, 1), [(0, 1), (4, 3), (2, 0)]], ids=["tuple", "list-of-tuples"])
def test_oracle_tuple_targets_3d_output(TSIG, target):
    model = SeqOutNet()
    ours, theirs = _both(TSIG, model, X, baselines=rnd(1, L, DIM, seed=4), target=target)
    _close(ours, theirs)
    assert ours.abs().max() > 1e-3


@pytest.mark.parametrize(
    "args",
    [rnd(B, seed=5).abs() + 0.5, (rnd(B, seed=5).abs() + 0.5, 0.7)],
    ids=["tensor", "tensor+float"],
)
def test_oracle_additional_forward_args(TSIG, net, args):
    ours, theirs = _both(TSIG, net, X, baselines=0.1, target=[1, 2, 0], additional_forward_args=args)
    _close(ours, theirs)
    plain = SequentialIntegratedGradients(net).attribute(X, baselines=0.1, target=[1, 2, 0])
    assert (ours - plain).abs().max() > 1e-3  # the arguments were used


def test_oracle_non_tensor_additional_arg(TSIG):
    """A non-tensor extra argument is passed unchanged to every call."""

    def fwd(x, power):
        return torch.tanh(x).pow(power).sum(dim=(1, 2)) + x[:, 0, 0] * x[:, -1, -1]

    ours, theirs = _both(TSIG, fwd, X, baselines=0.2, additional_forward_args=3, delta=True)
    _close(ours, theirs)


@pytest.mark.parametrize(
    "baselines",
    [None, (0.5, rnd(1, L, 2, seed=6)), (rnd(B, L, DIM, seed=7), -1.0)],
    ids=["none", "scalar+bcast", "tensor+scalar"],
)
def test_oracle_tuple_inputs(TSIG, baselines):
    model = MixNet(L * DIM + L * 2)
    inputs = (X, rnd(B, L, 2, seed=8))
    (ours, d1), (theirs, d2) = _both(TSIG, model, inputs, baselines=baselines, target=0, delta=True)
    assert isinstance(ours, tuple) and len(ours) == 2
    _close(ours, theirs)
    _close(d1, d2)


def test_oracle_2d_inputs(TSIG):
    """Inputs with no feature dimension: ``(B, L)``."""
    model = MixNet(L)
    x = rnd(B, L, seed=9)
    ours, theirs = _both(TSIG, model, x, baselines=0.25, target=3)
    _close(ours, theirs)


def test_oracle_4d_inputs_and_float32(TSIG):
    """Inputs with several feature dimensions ``(B, L, 2, 3)``; float32 inputs stay float32."""
    w = rnd(L * 2 * 3, 3, seed=22)

    def fwd(x):
        return torch.tanh(x.reshape(x.shape[0], -1).to(D64) @ w).to(x.dtype)

    x = rnd(2, L, 2, 3, seed=23)
    ours, theirs = _both(TSIG, fwd, x, baselines=rnd(1, L, 2, 3, seed=24), target=1)
    _close(ours, theirs)
    ours, theirs = _both(TSIG, fwd, x.float(), baselines=0.1, target=[2, 0])
    assert ours.dtype == torch.float32
    _close(ours, theirs, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("n_steps", [2, 7, 50])
def test_oracle_methods_and_steps(TSIG, net, method, n_steps):
    ours, theirs = _both(TSIG, net, X, baselines=0.3, target=1, method=method, n_steps=n_steps)
    _close(ours, theirs)


def test_oracle_gausslegendre_one_step(TSIG, net):
    ours, theirs = _both(TSIG, net, X, target=1, n_steps=1)
    _close(ours, theirs)


@pytest.mark.parametrize("ibs", [None, B, 7, 20, 1000])
def test_internal_batch_size_does_not_change_results(TSIG, net, ibs):
    kw = dict(baselines=0.3, target=[0, 1, 2], n_steps=10, internal_batch_size=ibs)
    ours, theirs = _both(TSIG, net, X, **kw)
    _close(ours, theirs)
    whole = SequentialIntegratedGradients(net).attribute(X, baselines=0.3, target=[0, 1, 2], n_steps=10)
    torch.testing.assert_close(ours, whole, atol=1e-12, rtol=0)


def test_internal_batch_size_chunks_rows(net):
    sig = SequentialIntegratedGradients(net)
    net.calls.clear()
    sig.attribute(X, baselines=0.3, target=1, n_steps=10, internal_batch_size=7)
    total = B * L * 10
    assert sig.last_info.rows == total
    assert sig.last_info.passes == math.ceil(total / 7) == len(net.calls)
    assert max(net.calls) <= 7 and sum(net.calls) == total
    net.calls.clear()
    sig.attribute(X, baselines=0.3, target=1, n_steps=10)  # default: everything in one call
    assert net.calls == [total] and sig.last_info.passes == 1


def test_internal_batch_size_auto(net):
    """``internal_batch_size="auto"`` sizes chunks from free memory; the numbers do not change."""
    x = rnd(4, 12, DIM, seed=25)
    model = MixNet(12 * DIM, seed=8)
    sig = SequentialIntegratedGradients(model)
    model.calls.clear()
    auto = sig.attribute(x, baselines=0.1, target=[0, 1, 2, 3], n_steps=30, internal_batch_size="auto")
    assert sig.last_info.rows == 4 * 12 * 30 == sum(model.calls)
    whole = sig.attribute(x, baselines=0.1, target=[0, 1, 2, 3], n_steps=30)
    torch.testing.assert_close(auto, whole, atol=1e-12, rtol=0)


@pytest.mark.parametrize("target", [1, [2, 0, 1]])
@pytest.mark.parametrize("baselines", [0.0, rnd(1, L, DIM, seed=10)], ids=["scalar", "broadcast"])
def test_oracle_convergence_delta(TSIG, net, target, baselines):
    (ours, d1), (theirs, d2) = _both(TSIG, net, X, baselines=baselines, target=target, delta=True, n_steps=20)
    _close(ours, theirs)
    assert d1.shape == (B,)
    _close(d1, d2)
    # the reference's delta is NOT SIG's identity: it is far from 0 on this net
    assert d1.abs().max() > 1e-3


@pytest.mark.parametrize("baselines", [0.4, rnd(B, L, DIM, seed=11)], ids=["scalar", "tensor"])
def test_oracle_not_multiply_by_inputs(TSIG, net, baselines):
    x = X.clone()
    base = baselines if isinstance(baselines, Tensor) else torch.full_like(X, baselines)
    x[0, 2] = base[0, 2]  # position equal to its baseline: still attributed (gradient at that point)
    x[:, 4] = base[:, 4]
    ours, theirs = _both(TSIG, net, x, mbi=False, baselines=baselines, target=2)
    _close(ours, theirs)
    assert ours[0, 2].abs().max() > 1e-3 and ours[:, 4].abs().min() > 0
    # with multiply_by_inputs the same positions are exactly zero
    mult = SequentialIntegratedGradients(net).attribute(x, baselines=baselines, target=2)
    assert torch.equal(mult[0, 2], torch.zeros(DIM, dtype=D64)) and not mult[:, 4].any()
    # multiplying the local attributions by (x - b) gives the global ones
    torch.testing.assert_close(ours * (x - base), mult, atol=1e-12, rtol=1e-10)


# --------------------------------------------------------------------------- per-position identity


def _replaced(inputs: tuple[Tensor, ...], bases: tuple[Tensor, ...], i: int) -> tuple[Tensor, ...]:
    out = []
    for x, b in zip(inputs, bases):
        y = x.clone()
        y[:, i] = b.expand_as(x)[:, i]
        out.append(y)
    return tuple(out)


def _closed_form(forward, inputs, bases, target_col: int) -> Tensor:
    """``(B, L)``: F(x) − F(x with position i at its baseline), computed directly."""
    with torch.no_grad():
        fx = forward(*inputs)[:, target_col]
        cols = [fx - forward(*_replaced(inputs, bases, i))[:, target_col] for i in range(inputs[0].shape[1])]
    return torch.stack(cols, dim=1)


def test_per_position_completeness_identity(net):
    base = rnd(1, L, DIM, seed=12)
    sig = SequentialIntegratedGradients(net)
    attr = sig.attribute(X, baselines=base, target=2, n_steps=50)
    want = _closed_form(net, (X,), (base,), 2)
    got = attr.sum(-1)
    assert (want.abs() > 1e-4).all()
    torch.testing.assert_close(got, want, atol=1e-8, rtol=0)
    err = sig.compute_completeness_error(attr, X, base, target=2)
    assert err.shape == (B, L)
    torch.testing.assert_close(err, got - want, atol=1e-12, rtol=0)
    assert err.abs().max() < 1e-8
    # the identity holds for each input of a tuple summed together
    model = MixNet(L * DIM + L * 2, seed=3)
    inputs, bases = (X, rnd(B, L, 2, seed=13)), (base, torch.zeros(1, L, 2, dtype=D64))
    attrs = SequentialIntegratedGradients(model).attribute(inputs, baselines=bases, target=1)
    got = attrs[0].sum(-1) + attrs[1].sum(-1)
    torch.testing.assert_close(got, _closed_form(model, inputs, bases, 1), atol=1e-8, rtol=0)


def test_completeness_error_reflects_quadrature_error(net):
    """Few steps leave a visible error, and compute_completeness_error reports exactly that error."""
    sig = SequentialIntegratedGradients(net)
    attr = sig.attribute(X, baselines=0.0, target=0, method="riemann_right", n_steps=3)
    want = attr.sum(-1) - _closed_form(net, (X,), (torch.zeros_like(X),), 0)
    err = sig.compute_completeness_error(attr, X, 0.0, target=0)
    assert want.abs().max() > 1e-4
    torch.testing.assert_close(err, want, atol=1e-12, rtol=0)


def test_core_reports_completeness_error(net):
    base = rnd(B, L, DIM, seed=14)
    (attr,), info = sequential_integrated_gradients(
        net, (X,), baselines=base, target=1, n_steps=6, with_completeness=True
    )
    want = attr.sum(-1) - _closed_form(net, (X,), (base,), 1)
    torch.testing.assert_close(info.completeness_error, want, atol=1e-12, rtol=0)
    assert (info.steps == 6).all()


def test_position_additive_model_equals_ig(net):
    """For F(x) = Σ_i g(x_i), SIG equals ordinary IG from the all-baseline point (notes §4 d)."""
    w = rnd(DIM, 2, seed=15)

    def additive(x):
        return torch.tanh(x @ w).sum(dim=1)

    ig = oracle("captum.attr").IntegratedGradients(additive).attribute(X, baselines=0.3, target=1, n_steps=50)
    sig = SequentialIntegratedGradients(additive).attribute(X, baselines=0.3, target=1, n_steps=50)
    torch.testing.assert_close(sig, ig, **ORACLE)


# --------------------------------------------------------------------------- oracle: captum IG


@pytest.mark.parametrize("method,n_steps", [("gausslegendre", 50), ("riemann_trapezoid", 9)])
def test_equals_captum_ig_with_per_position_baseline(net, method, n_steps):
    captum_attr = oracle("captum.attr")
    base = rnd(B, L, DIM, seed=16)
    sig = SequentialIntegratedGradients(net).attribute(
        X, baselines=base, target=[2, 0, 1], method=method, n_steps=n_steps
    )
    ig = captum_attr.IntegratedGradients(net)
    for i in range(L):
        (xi,) = _replaced((X,), (base,), i)
        col = ig.attribute(X, baselines=xi, target=[2, 0, 1], method=method, n_steps=n_steps)[:, i]
        torch.testing.assert_close(sig[:, i], col, **ORACLE)
        # IG with that baseline gives nothing to the other positions
        others = ig.attribute(X, baselines=xi, target=[2, 0, 1], method=method, n_steps=n_steps)
        assert not torch.cat([others[:, :i], others[:, i + 1 :]], 1).any()


# --------------------------------------------------------------------------- batched == per-position loop


@pytest.mark.parametrize("ibs", [None, 4])
def test_batched_equals_per_position_loop(net, ibs):
    base = rnd(1, L, DIM, seed=17)
    inputs = (X, rnd(B, L, 2, seed=18))
    model = MixNet(L * DIM + L * 2, seed=5)
    kw = dict(baselines=(base, 0.2), target=[1, 0, 3], n_steps=12, internal_batch_size=ibs)
    batched, info = sequential_integrated_gradients(model, inputs, **kw)
    loop = [torch.zeros_like(x) for x in inputs]
    for i in range(L):
        onehot = torch.zeros(L, dtype=torch.bool)
        onehot[i] = True
        part, pinfo = sequential_integrated_gradients(model, inputs, positions=onehot, **kw)
        assert pinfo.rows == B * 12
        for k, p in enumerate(part):
            assert not torch.cat([p[:, :i], p[:, i + 1 :]], 1).any()  # only position i
            loop[k][:, i] = p[:, i]
    for b_, l_ in zip(batched, loop):
        torch.testing.assert_close(b_, l_, atol=1e-12, rtol=0)
    assert info.rows == B * L * 12


def test_positions_mask_per_example(net):
    pos = torch.tensor([[1, 0, 1, 0, 0], [0, 0, 0, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)
    (attr,), info = sequential_integrated_gradients(net, (X,), target=0, n_steps=5, positions=pos)
    full = SequentialIntegratedGradients(net).attribute(X, target=0, n_steps=5)
    assert info.rows == int(pos.sum()) * 5
    torch.testing.assert_close(attr, full * pos.unsqueeze(-1), atol=1e-12, rtol=0)
    assert torch.equal(info.steps, pos.long() * 5)


# --------------------------------------------------------------------------- skipped positions


def test_positions_equal_to_baseline_are_exact_zero_and_free(TSIG, net):
    base = rnd(B, L, DIM, seed=19)
    x = X.clone()
    x[0, 0] = base[0, 0]
    x[1, [1, 3]] = base[1, [1, 3]]
    x[:, 4] = base[:, 4]
    x[2, 2, 0] = base[2, 2, 0]  # only one feature equal: position still attributed
    skipped = torch.zeros(B, L, dtype=torch.bool)
    skipped[0, 0] = skipped[1, 1] = skipped[1, 3] = True
    skipped[:, 4] = True
    n_active = int((~skipped).sum())
    sig = SequentialIntegratedGradients(net)
    net.calls.clear()
    attr = sig.attribute(x, baselines=base, target=[0, 1, 2], n_steps=8)
    info = sig.last_info
    assert info.rows == n_active * 8 and sum(net.calls) == n_active * 8
    assert torch.equal(info.steps, (~skipped).long() * 8)
    assert attr[skipped].eq(0).all()
    assert (attr[~skipped].abs().sum(-1) > 0).all()
    theirs = TSIG(net).attribute(x, baselines=base, target=[0, 1, 2], n_steps=8)
    _close(attr, theirs)


def test_all_positions_skipped(net):
    sig = SequentialIntegratedGradients(net)
    net.calls.clear()
    attr = sig.attribute(X, baselines=X.clone(), target=1)
    assert torch.equal(attr, torch.zeros_like(X))
    assert sig.last_info.rows == 0 and sig.last_info.passes == 0 and net.calls == []


def test_skip_in_tuple_inputs_needs_every_input_equal():
    model = MixNet(L * DIM + L * 2, seed=6)
    x0, x1 = X.clone(), rnd(B, L, 2, seed=20)
    x0[:, 1] = 0.0  # input 0 at its baseline at position 1, input 1 is not: position 1 is attributed
    x0[:, 3] = 0.0
    x1[:, 3] = 0.0  # both at baseline at position 3: skipped
    sig = SequentialIntegratedGradients(model)
    a0, a1 = sig.attribute((x0, x1), target=0, n_steps=4)
    assert sig.last_info.rows == B * (L - 1) * 4
    assert not a0[:, 1].any() and a1[:, 1].abs().min() > 0
    assert not a0[:, 3].any() and not a1[:, 3].any()


# --------------------------------------------------------------------------- adaptive steps


@pytest.fixture(scope="module")
def bert64():
    from hfattr.testing import tiny

    model, tok = tiny("bert", dtype=D64)
    enc = tok(["the movie was great and fun", "a boring film"], padding=True, return_tensors="pt")
    emb = model.get_input_embeddings()
    with torch.no_grad():
        x = emb(enc["input_ids"])
        base = emb(torch.full_like(enc["input_ids"][:1], tok.mask_token_id))
    rows: list[int] = []

    def forward(e, mask):
        rows.append(e.shape[0])
        return model(inputs_embeds=e, attention_mask=mask).logits

    return forward, x, base, enc["attention_mask"], rows


@pytest.mark.parametrize("tol", [1e-4, 1e-8])
def test_auto_meets_tolerance_with_fewer_rows(bert64, tol):
    forward, x, base, mask, rows = bert64
    Bx, Lx = x.shape[:2]
    sig = SequentialIntegratedGradients(forward)
    rows.clear()
    attr = sig.attribute(x, baselines=base, target=1, additional_forward_args=mask, n_steps="auto", tol=tol)
    info = sig.last_info
    auto_rows = sum(rows)  # gradient rows and the completeness checks' forward rows together
    err = info.completeness_error
    assert err.shape == (Bx, Lx) and err.abs().max() <= tol
    # the recorded error is the true one
    want = sig.compute_completeness_error(attr, x, base, target=1, additional_forward_args=mask)
    torch.testing.assert_close(err, want, atol=1e-12, rtol=0)
    # steps per position are recorded, are sizes of the nested Clenshaw-Curtis rules (2**k + 1), and
    # every point is evaluated once: one shared row per example at alpha = 1, n - 1 rows per position
    assert info.steps.shape == (Bx, Lx) and (info.steps >= 1).all()
    assert int(info.steps.max()) < 50
    assert all(s in (5, 9, 17, 33) for s in info.steps.flatten().tolist())
    assert info.rows == Bx + int(sum(_rows_for(s) for s in info.steps.flatten().tolist()))
    rows.clear()
    fixed = sig.attribute(x, baselines=base, target=1, additional_forward_args=mask, n_steps=50)
    assert sig.last_info.rows == sum(rows) == Bx * Lx * 50
    assert auto_rows < sum(rows)
    torch.testing.assert_close(attr, fixed, atol=10 * tol, rtol=0)


def _rows_for(final_steps: int) -> int:
    """Rows spent on one position that ended at ``final_steps`` points of nested rules whose point at
    alpha = 1 is shared by all positions."""
    return final_steps - 1 if final_steps else 0


def test_auto_refines_only_positions_that_need_it():
    """Position 0 enters through a strongly curved function, the others linearly."""

    def fwd(x):
        return torch.sin(4 * x[:, 0]).sum(-1) + 0.5 * x[:, 1:].sum(dim=(1, 2))

    x = rnd(2, 4, 2, seed=21)
    sig = SequentialIntegratedGradients(fwd)
    sig.attribute(x, n_steps="auto", tol=1e-9)
    steps = sig.last_info.steps
    assert (steps[:, 1:] == 5).all()  # linear positions: exact at the first rule
    assert (steps[:, 0] > 5).all()
    assert sig.last_info.completeness_error.abs().max() <= 1e-9


def test_auto_without_multiply_by_inputs():
    """Completeness needs the multiplied attributions: either refuse clearly or refine on them."""
    model = MixNet(L * DIM, seed=7)
    sig = SequentialIntegratedGradients(model, multiply_by_inputs=False)
    try:
        local = sig.attribute(X, baselines=0.3, target=0, n_steps="auto", tol=1e-6)
    except ValueError as err:
        assert "multiply_by_inputs" in str(err)
        return
    info = sig.last_info
    mult = local * (X - 0.3)
    err = mult.sum(-1) - _closed_form(model, (X,), (torch.full_like(X, 0.3),), 0)
    assert err.abs().max() <= 1e-6
    assert int(info.steps.max()) < 128, "every position was refined to the cap"


# --------------------------------------------------------------------------- progress bar


def test_show_progress_prints_a_tqdm_bar(net, capsys):
    pytest.importorskip("tqdm")
    SequentialIntegratedGradients(net).attribute(X, target=0, n_steps=4, internal_batch_size=10, show_progress=True)
    err = capsys.readouterr().err
    assert "SIG" in err and "6/6" in err  # 3*5*4 = 60 rows in chunks of 10
    SequentialIntegratedGradients(net).attribute(X, target=0, n_steps=4)
    assert capsys.readouterr().err == ""


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "kwargs,exc,words",
    [
        (dict(n_steps=0), ValueError, ["n_steps", ">= 1"]),
        (dict(n_steps=-3), ValueError, ["n_steps"]),
        (dict(n_steps=1, method="riemann_left"), ValueError, ["n_steps", ">= 2"]),
        (dict(n_steps=1, method="riemann_trapezoid"), ValueError, ["n_steps", ">= 2"]),
        (dict(n_steps=5.0), TypeError, ["n_steps"]),
        (dict(n_steps="many"), TypeError, ["n_steps"]),
        (dict(method="simpson"), ValueError, ["method", "simpson", "gausslegendre"]),
        (dict(n_steps="auto", method="riemann_middle"), ValueError, ["auto", "gausslegendre"]),
        (dict(internal_batch_size=0), ValueError, ["internal_batch_size"]),
        (dict(target=[0, 1]), ValueError, ["target", str(B)]),
        (dict(baselines=torch.zeros(2, L, DIM)), ValueError, ["baselines", "shape"]),
        (dict(baselines=(0.0, 1.0)), ValueError, ["baselines"]),
    ],
)
def test_bad_arguments(net, kwargs, exc, words):
    kwargs.setdefault("target", 0)
    net.calls.clear()
    with pytest.raises(exc) as info:
        SequentialIntegratedGradients(net).attribute(X, **kwargs)
    for w in words:
        assert w in str(info.value), (w, str(info.value))
    assert net.calls == []  # refused before any forward pass


def test_inputs_whose_dimension_1_differs():
    model = MixNet(L * DIM + (L + 1) * 2)
    with pytest.raises(ValueError, match="dimension 1") as info:
        SequentialIntegratedGradients(model).attribute((X, rnd(B, L + 1, 2)), target=0)
    assert str(L) in str(info.value) and str(L + 1) in str(info.value)


def test_integer_inputs_are_refused():
    emb = nn.Embedding(10, 3)
    ids = torch.randint(0, 10, (2, 4), generator=_gen(0))
    with pytest.raises(TypeError, match="floating point"):
        SequentialIntegratedGradients(lambda t: emb(t).sum(dim=(1, 2))).attribute(ids)


def test_inputs_without_sequence_dimension():
    with pytest.raises(ValueError, match="dim 1"):
        SequentialIntegratedGradients(lambda t: t * 2).attribute(rnd(4))


def test_quadrature_rules():
    """Gauss-Legendre with n points is exact for degree 2n-1; the Riemann rules are the reference's.

    The reference's ``riemann_trapezoid`` uses step 1/n on n points from 0 to 1 with halved ends, so its
    weights sum to 1 - 1/n (not 1): kept for compatibility, and visible in the completeness error.
    """
    for method in METHODS:
        w, a = quadrature(method, 6)
        assert len(w) == len(a) == 6 and all(0.0 <= t <= 1.0 for t in a)
        total = 1 - 1 / 6 if method == "riemann_trapezoid" else 1.0
        assert math.isclose(sum(w), total, rel_tol=1e-12), method
    w, a = quadrature("gausslegendre", 5)
    for deg in range(10):
        assert math.isclose(sum(wi * ai**deg for wi, ai in zip(w, a)), 1 / (deg + 1), rel_tol=1e-12)
    w, a = quadrature("riemann_middle", 10)
    assert math.isclose(sum(wi * ai for wi, ai in zip(w, a)), 0.5, rel_tol=1e-6)
    assert quadrature("riemann_left", 4)[1] == pytest.approx([0, 0.25, 0.5, 0.75])
    assert quadrature("riemann_right", 4)[1] == pytest.approx([0.25, 0.5, 0.75, 1.0])


def test_long_input_runs_in_chunks_bounded_by_internal_batch_size():
    """1024 positions: every call holds at most internal_batch_size rows, and the identity holds."""
    torch.manual_seed(0)
    L, D = 1024, 4
    proj = torch.nn.Linear(D, 1).double()
    rows_seen = []

    def forward(x):
        rows_seen.append(x.shape[0])
        h = torch.tanh(proj(x)).squeeze(-1)  # (N, L)
        return (h * h.roll(1, dims=1)).sum(1, keepdim=True)  # couples neighbouring positions

    x = torch.randn(1, L, D, dtype=torch.float64)
    sig = SequentialIntegratedGradients(forward)
    attr = sig.attribute(x, target=0, n_steps=16, internal_batch_size=256)
    assert max(rows_seen) <= 256
    assert sig.last_info.rows == L * 16
    err = sig.compute_completeness_error(attr, x, target=0)
    assert err.abs().max() < 1e-8  # 16 Gauss-Legendre points on a smooth path
