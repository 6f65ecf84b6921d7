"""Each LRP rule against its explicit formula, computed by hand here (float64).

Relevance is propagated explicitly (R messages, no gradients) and compared with what the rules
give as ``input * gradient``.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from hfattr.lrp import (
    LRP,
    Alpha1_Beta0_Rule,
    AttentionRule,
    EpsilonRule,
    GammaRule,
    IdentityRule,
    NormRule,
    ProductRule,
    attach_rules,
)

D64 = torch.float64


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _randn(*shape, seed=0):
    return torch.randn(*shape, generator=_gen(seed), dtype=D64)


def _sign0(z):
    return torch.where(z >= 0, 1.0, -1.0).to(z.dtype)


class TwoLayer(nn.Module):
    def __init__(self, act: nn.Module | None = None, seed: int = 0):
        super().__init__()
        self.fc1 = nn.Linear(6, 5).to(D64)
        self.act = act if act is not None else nn.ReLU()
        self.fc2 = nn.Linear(5, 3).to(D64)
        g = _gen(seed)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g, dtype=D64))

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


def _explicit_two_layer(net, x, t, w1, b1, eps1, w2, b2, eps2, act_identity=True):
    """Explicit LRP through fc2 (weights w2, b2, stabiliser eps2), the activation, fc1."""
    z1 = x @ net.fc1.weight.T + net.fc1.bias
    h = net.act(z1)
    z2 = h @ net.fc2.weight.T + net.fc2.bias
    r2 = torch.zeros_like(z2)
    r2[:, t] = z2[:, t]
    z2m = h @ w2.T + b2
    r_h = h * ((r2 / (z2m + eps2 * _sign0(z2m))) @ w2)
    r_z1 = r_h  # ReLU / Tanh: identity
    z1m = x @ w1.T + b1
    return x * ((r_z1 / (z1m + eps1 * _sign0(z1m))) @ w1)


@pytest.mark.parametrize("eps1,eps2", [(1e-9, 1e-9), (0.3, 0.1), (0.0, 2.0)])
def test_epsilon_rule_matches_formula(eps1, eps2):
    net = TwoLayer()
    net.fc1.rule, net.fc2.rule = EpsilonRule(eps1), EpsilonRule(eps2)
    x = _randn(4, 6, seed=1)
    got = LRP(net).attribute(x, target=2)
    want = _explicit_two_layer(net, x, 2, net.fc1.weight, net.fc1.bias, eps1, net.fc2.weight, net.fc2.bias, eps2)
    torch.testing.assert_close(got, want, atol=1e-12, rtol=1e-10)


@pytest.mark.parametrize("gamma,zero_bias", [(0.25, False), (1.0, True)])
def test_gamma_rule_matches_formula(gamma, zero_bias):
    net = TwoLayer(nn.Tanh())
    net.fc1.rule = GammaRule(gamma=gamma, set_bias_to_zero=zero_bias)
    x = _randn(3, 6, seed=2)
    got = LRP(net).attribute(x, target=0)
    w1 = net.fc1.weight + gamma * net.fc1.weight.clamp(min=0)
    b1 = torch.zeros_like(net.fc1.bias) if zero_bias else net.fc1.bias
    want = _explicit_two_layer(net, x, 0, w1, b1, 1e-9, net.fc2.weight, net.fc2.bias, 1e-9)
    torch.testing.assert_close(got, want, atol=1e-12, rtol=1e-10)


@pytest.mark.parametrize("zero_bias", [False, True])
def test_alpha1_beta0_rule_matches_formula(zero_bias):
    net = TwoLayer()
    net.fc2.rule = Alpha1_Beta0_Rule(set_bias_to_zero=zero_bias)
    x = _randn(3, 6, seed=3).abs()
    got = LRP(net).attribute(x, target=1)
    w2 = net.fc2.weight.clamp(min=0)
    b2 = torch.zeros_like(net.fc2.bias) if zero_bias else net.fc2.bias
    want = _explicit_two_layer(net, x, 1, net.fc1.weight, net.fc1.bias, 1e-9, w2, b2, 1e-9)
    torch.testing.assert_close(got, want, atol=1e-12, rtol=1e-10)


def _relevance_around(module, model, x, *, composite="epsilon", rules=None, seed=0):
    """Relevance at ``module``'s input and output for the score ``sum(model(x) * w)``."""
    seen = {}

    def keep(mod, args, out):
        args[0].retain_grad()
        out.retain_grad()
        seen["in"], seen["out"] = args[0], out

    x = x.clone().requires_grad_(True)
    with attach_rules(model, composite=composite, rules=rules):
        h = module.register_forward_hook(keep)
        try:
            y = model(x)
        finally:
            h.remove()
        w = _randn(*y.shape, seed=seed)
        (y * w).sum().backward()
    return seen["in"] * seen["in"].grad, seen["out"] * seen["out"].grad, x * x.grad


@pytest.mark.parametrize("act", [nn.Tanh(), nn.GELU(), nn.GELU(approximate="tanh"), nn.SiLU(), nn.ReLU()])
def test_identity_rule_passes_relevance_unchanged(act):
    class Wrap(nn.Module):
        def __init__(self):
            super().__init__()
            self.pre = nn.Linear(4, 4, bias=False).to(D64)
            self.act = act
            self.post = nn.Linear(4, 2, bias=False).to(D64)

        def forward(self, x):
            return self.post(self.act(self.pre(x)))

    m = Wrap()
    r_in, r_out, r_x = _relevance_around(
        m.act, m, _randn(5, 4, seed=4), composite="attnlrp", rules={type(act): IdentityRule()}
    )
    torch.testing.assert_close(r_in, r_out, atol=1e-12, rtol=1e-10)
    # bias-free linear maps with ε -> 0 conserve: input relevance sums to the same total
    torch.testing.assert_close(r_x.sum(), r_out.sum(), atol=1e-6, rtol=1e-6)


def test_identity_rule_on_transformers_activations():
    from transformers.activations import GELUActivation, NewGELUActivation, QuickGELUActivation

    for act in (GELUActivation(), NewGELUActivation(), QuickGELUActivation()):
        seq = nn.Sequential(nn.Linear(3, 3).to(D64), act, nn.Linear(3, 1).to(D64))
        r_in, r_out, _ = _relevance_around(seq[1], seq, _randn(6, 3, seed=5), composite="attnlrp")
        torch.testing.assert_close(r_in, r_out, atol=1e-12, rtol=1e-10)


def test_norm_rule_layernorm_matches_formula():
    ln = nn.LayerNorm(6).to(D64)
    with torch.no_grad():
        ln.weight.copy_(_randn(6, seed=6))
        ln.bias.copy_(_randn(6, seed=7))
    seq = nn.Sequential(ln)
    x = _randn(4, 6, seed=8)
    r_in, r_out, r_x = _relevance_around(ln, seq, x, rules={nn.LayerNorm: NormRule()})
    y = ln(x)
    s = torch.rsqrt(x.var(-1, unbiased=False, keepdim=True) + ln.eps)
    centre = torch.eye(6, dtype=D64) - 1.0 / 6
    # y = A x + b with A = diag(w) s C (s held constant): ε-rule with ε = 0
    want = torch.stack([x[i] * ((r_out[i] / y[i]) @ (torch.diag(ln.weight * s[i]) @ centre)) for i in range(4)])
    torch.testing.assert_close(r_x, want, atol=1e-12, rtol=1e-10)
    # detach_mean: the centring is treated as a constant too, so relevance is R_out * (y - b) / y
    _, r_out2, r_x2 = _relevance_around(ln, seq, x, rules={nn.LayerNorm: NormRule(detach_mean=True)})
    torch.testing.assert_close(r_x2, x * ln.weight * s * r_out2 / y, atol=1e-12, rtol=1e-10)


def test_norm_rule_rmsnorm_is_identity_without_bias():
    from transformers.models.llama.modeling_llama import LlamaRMSNorm

    norm = LlamaRMSNorm(6, eps=1e-6).to(D64)
    with torch.no_grad():
        norm.weight.copy_(_randn(6, seed=9))
    r_in, r_out, _ = _relevance_around(norm, nn.Sequential(norm), _randn(3, 6, seed=10), composite="attnlrp")
    # (the module normalises in float32 internally, hence the looser tolerance)
    torch.testing.assert_close(r_in, r_out, atol=1e-6, rtol=1e-5)


# ----------------------------------------------------------------------------- attention kernel
def eager_attention_forward(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """Eager attention of the toy module below (found by the LRP kernel like a model's own)."""
    scores = torch.matmul(query, key.transpose(2, 3)) * scaling
    probs = scores.softmax(-1)
    return torch.matmul(probs, value).transpose(1, 2), probs


class ToyAttention(nn.Module):
    """Multi-head self-attention that dispatches through transformers' attention interface."""

    def __init__(self, d: int = 8, heads: int = 2, impl: str = "sdpa", seed: int = 0):
        from transformers import PretrainedConfig

        super().__init__()
        self.config = PretrainedConfig()
        self.config._attn_implementation = impl
        self.heads, self.scaling, self.is_causal = heads, (d // heads) ** -0.5, False
        self.q_proj = nn.Linear(d, d, bias=False).to(D64)
        self.k_proj = nn.Linear(d, d, bias=False).to(D64)
        self.v_proj = nn.Linear(d, d, bias=False).to(D64)
        g = _gen(seed)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g, dtype=D64) * 0.7)
        self.seen: list = []

    def forward(self, x):
        from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

        B, L, D = x.shape

        def split(t):
            return t.view(B, L, self.heads, -1).transpose(1, 2)

        q, k, v = split(self.q_proj(x)), split(self.k_proj(x)), split(self.v_proj(x))
        for t in (q, k, v):
            if t.requires_grad:
                t.retain_grad()
        self.seen[:] = [q, k, v]
        fn = ALL_ATTENTION_FUNCTIONS.get_interface(self.config._attn_implementation, eager_attention_forward)
        out, _ = fn(self, q, k, v, None, scaling=self.scaling, dropout=0.0)
        return out.reshape(B, L, D)


def _attention_case(kind, impl, at="kernel"):
    m = ToyAttention(impl=impl)
    x = _randn(2, 5, 8, seed=11).requires_grad_(True)
    w = _randn(2, 5, 8, seed=12)
    with attach_rules(m, composite="attnlrp", rules={ToyAttention: AttentionRule(kind, at=at)}) as att:
        out = m(x)
        (out * w).sum().backward()
        att.check()
    q, k, v = m.seen
    return m, x, w, out, q, k, v


@pytest.mark.parametrize("impl", ["sdpa", "eager"])
def test_attnlrp_kernel_matches_explicit_rules(impl):
    m, x, w, out, q, k, v = _attention_case("attnlrp", impl)
    with torch.no_grad():
        B, H, L, dh = q.shape
        s = torch.einsum("bhid,bhjd->bhij", q, k) * m.scaling
        a = s.softmax(-1)
        o = torch.einsum("bhij,bhjd->bhid", a, v)
        r_o = o * w.view(B, L, H, dh).transpose(1, 2)
        z = a.unsqueeze(-1) * v.unsqueeze(2)  # (b, h, i, j, d): A_ij V_jd
        msg = 0.5 * r_o.unsqueeze(3) / o.unsqueeze(3)  # uniform split of A·V
        r_a = (z * msg).sum(-1)
        r_v = (z * msg).sum(2)
        r_s = s * (r_a - a * r_a.sum(-1, keepdim=True))  # softmax: Taylor at x with bias
        u = q.unsqueeze(3) * k.unsqueeze(2) * m.scaling  # (b, h, i, j, d): q_id k_jd c
        msg = 0.5 * (r_s / s).unsqueeze(-1)  # uniform split of Q·Kᵀ
        r_q = (u * msg).sum(3)
        r_k = (u * msg).sum(2)
    for got, want in ((q * q.grad, r_q), (k * k.grad, r_k), (v * v.grad, r_v)):
        torch.testing.assert_close(got, want, atol=1e-12, rtol=1e-9)
    # the output relevance of A·V is split in halves
    torch.testing.assert_close(r_a.sum() + r_v.sum(), r_o.sum(), atol=1e-12, rtol=1e-10)


def test_cp_kernel_routes_all_relevance_through_values():
    m, x, w, out, q, k, v = _attention_case("cp", "sdpa")
    assert q.grad is None and k.grad is None
    with torch.no_grad():
        B, H, L, dh = q.shape
        a = (torch.einsum("bhid,bhjd->bhij", q, k) * m.scaling).softmax(-1)
        o = torch.einsum("bhij,bhjd->bhid", a, v)
        r_o = o * w.view(B, L, H, dh).transpose(1, 2)
        r_v = (a.unsqueeze(-1) * v.unsqueeze(2) * (r_o / o).unsqueeze(3)).sum(2)
    torch.testing.assert_close(v * v.grad, r_v, atol=1e-12, rtol=1e-9)
    # bias-free projections: CP-LRP is exactly conservative
    torch.testing.assert_close((x * x.grad).sum(), r_o.sum(), atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("kind", ["attnlrp", "cp"])
def test_projection_mode_equals_kernel_mode(kind):
    _, x1, *_ = _attention_case(kind, "sdpa")
    _, x2, *_ = _attention_case(kind, "sdpa", at="projections")
    torch.testing.assert_close(x1 * x1.grad, x2 * x2.grad, atol=1e-12, rtol=1e-10)


def test_attention_outside_the_interface_is_reported():
    class ManualAttention(nn.Module):
        def __init__(self):
            super().__init__()
            self.q_proj, self.k_proj, self.v_proj = (nn.Linear(4, 4).to(D64) for _ in range(3))

        def forward(self, x):
            a = (self.q_proj(x) @ self.k_proj(x).transpose(1, 2)).softmax(-1)
            return a @ self.v_proj(x)

    m = ManualAttention()
    x = _randn(1, 3, 4, seed=13).requires_grad_(True)
    with attach_rules(m, composite="attnlrp") as att:
        m(x)
        with pytest.raises(RuntimeError, match="at='projections'"):
            att.check()
    with attach_rules(m, composite="attnlrp", rules={ManualAttention: AttentionRule(at="projections")}) as att:
        m(x).sum().backward()
        att.check()


# ----------------------------------------------------------------------------- gated product
class ToyGated(nn.Module):
    def __init__(self, d=5, f=7, seed=0):
        super().__init__()
        self.gate_proj = nn.Linear(d, f, bias=False).to(D64)
        self.up_proj = nn.Linear(d, f, bias=False).to(D64)
        self.down_proj = nn.Linear(f, d, bias=False).to(D64)
        self.act_fn = nn.SiLU()
        g = _gen(seed)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g, dtype=D64))

    def forward(self, x):
        return self.down_proj(self.act_fn(self.gate_proj(x)) * self.up_proj(x))


@pytest.mark.parametrize("composite", ["attnlrp", "cp-lrp"])
def test_gated_product_rules_match_formula(composite):
    m = ToyGated()
    x = _randn(3, 5, seed=14)
    _, r_z, r_x = _relevance_around(m.down_proj, m, x, composite=composite, seed=15)
    with torch.no_grad():
        gate, up = m.gate_proj(x), m.up_proj(x)
        p = m.act_fn(gate) * up
        z = m.down_proj(p)
        r_p = p * ((r_z / z) @ m.down_proj.weight)
        share = 0.5 if composite == "attnlrp" else 1.0
        r_up = share * r_p
        r_gate = (1 - share) * r_p if composite == "attnlrp" else torch.zeros_like(r_p)  # identity through SiLU
        want = x * ((r_gate / gate) @ m.gate_proj.weight) + x * ((r_up / up) @ m.up_proj.weight)
    torch.testing.assert_close(r_x, want, atol=1e-12, rtol=1e-9)
    torch.testing.assert_close(r_x.sum(), r_z.sum(), atol=1e-10, rtol=1e-10)  # conservative


# ----------------------------------------------------------------------------- errors, verbose
def test_module_without_rule_gets_clear_error():
    net = nn.Sequential(nn.Linear(3, 3), nn.Softplus(), nn.Linear(3, 1))
    with pytest.raises(TypeError) as err:
        LRP(net).attribute(torch.randn(2, 3), target=0)
    msg = str(err.value)
    assert "'1'" in msg and "Softplus" in msg and ".rule = " in msg and "rules=" in msg
    net[1].rule = IdentityRule()  # the suggested fix works
    assert LRP(net).attribute(torch.randn(2, 3), target=0).shape == (2, 3)


def test_rule_of_wrong_type_is_refused():
    net = TwoLayer()
    net.fc1.rule = "epsilon"
    with pytest.raises(TypeError, match="PropagationRule"):
        LRP(net)
    with pytest.raises(TypeError, match="PropagationRule"):
        LRP(TwoLayer(), rules={"fc1": 0.1}).attribute(_randn(1, 6), target=0)


def test_bad_arguments():
    with pytest.raises(ValueError, match="epsilon"):
        EpsilonRule(-1)
    with pytest.raises(ValueError, match="kind"):
        AttentionRule("softmax")
    with pytest.raises(ValueError, match="kind"):
        ProductRule("half")
    with pytest.raises(ValueError, match="composite"):
        LRP(TwoLayer(), composite="zplus").attribute(_randn(1, 6), target=0)
    with pytest.raises(ValueError, match="matches no module"):
        LRP(TwoLayer(), rules={"fc9": EpsilonRule()}).attribute(_randn(1, 6), target=0)
    with pytest.raises(TypeError, match="nothing inside"):
        LRP(TwoLayer(), rules={"fc1": AttentionRule()}).attribute(_randn(1, 6), target=0)


def test_rules_keys_by_type_name_glob_and_precedence():
    x = _randn(2, 6, seed=16)
    base = LRP(TwoLayer(), rules={nn.Linear: EpsilonRule(0.5)}).attribute(x, target=0)
    by_name = LRP(TwoLayer(), rules={"Linear": EpsilonRule(0.5)}).attribute(x, target=0)
    by_glob = LRP(TwoLayer(), rules={"fc*": EpsilonRule(0.5)}).attribute(x, target=0)
    torch.testing.assert_close(base, by_name, atol=0, rtol=0)
    torch.testing.assert_close(base, by_glob, atol=0, rtol=0)
    net = TwoLayer()
    net.fc1.rule = EpsilonRule(0.5)  # module.rule wins over rules=
    net.fc2.rule = EpsilonRule(0.5)
    torch.testing.assert_close(
        LRP(net, rules={nn.Linear: EpsilonRule(3.0)}).attribute(x, target=0), base, atol=0, rtol=0
    )
    assert not torch.allclose(LRP(TwoLayer(), rules={nn.Linear: EpsilonRule(3.0)}).attribute(x, target=0), base)


def test_verbose_lists_every_layer_rule(capsys):
    net = TwoLayer(nn.Tanh())
    net.fc1.rule = GammaRule()
    LRP(net).attribute(_randn(1, 6), target=0, verbose=True)
    out = capsys.readouterr().out
    assert "GammaRule(gamma=0.25, set_bias_to_zero=False) on layer fc1 (Linear)" in out
    assert "IdentityRule() on layer act (Tanh)" in out
    assert "EpsilonRule(epsilon=1e-09) on layer fc2 (Linear)" in out
    LRP(net).attribute(_randn(1, 6), target=0)
    assert capsys.readouterr().out == ""
