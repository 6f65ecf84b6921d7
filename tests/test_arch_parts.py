"""The parts LRP acts on (gated MLPs, q/k/v projections): registered facts, the structural
fallback, warnings, and relevance of fused against split projections (float64, 1e-10)."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from hfattr.hf import BlockSpec, get_architecture, register_architecture
from hfattr.hf import architectures as archmod
from hfattr.hf.parts import model_parts
from hfattr.lrp import LRP, AttentionRule, attach_rules
from hfattr.testing import ZOO, tiny_model

D64 = torch.float64

# family -> (gated MLPs, gate/up fused, attention modules, q/k/v runs of the first one's projections)
EXPECTED = {
    "bert": (0, None, 2, [(("q", 32),), (("k", 32),), (("v", 32),)]),
    "roberta": (0, None, 2, [(("q", 32),), (("k", 32),), (("v", 32),)]),
    "distilbert": (0, None, 2, [(("q", 32),), (("k", 32),), (("v", 32),)]),
    "gpt2": (0, None, 2, [(("q", 32), ("k", 32), ("v", 32))]),
    "llama": (2, False, 2, [(("q", 32),), (("k", 16),), (("v", 16),)]),
    "qwen2": (2, False, 2, [(("q", 32),), (("k", 16),), (("v", 16),)]),
    "mistral": (2, False, 2, [(("q", 32),), (("k", 16),), (("v", 16),)]),
    "gemma2": (2, False, 2, [(("q", 32),), (("k", 16),), (("v", 16),)]),
    "phi3": (2, True, 2, [(("q", 32), ("k", 16), ("v", 16))]),
    "gpt_neox": (0, None, 2, [(("q", 8), ("k", 8), ("v", 8)) * 4]),
    "opt": (0, None, 2, [(("q", 32),), (("k", 32),), (("v", 32),)]),
    "bart": (0, None, 6, [(("q", 32),), (("k", 32),), (("v", 32),)]),
    "t5": (0, None, 6, [(("q", 32),), (("k", 32),), (("v", 32),)]),  # T5 v1.0: not gated
}


@pytest.fixture
def clean_registry():
    saved = dict(archmod._REGISTRY)
    yield
    archmod._REGISTRY.clear()
    archmod._REGISTRY.update(saved)


def test_every_zoo_family_has_expected_parts():
    assert set(EXPECTED) == set(ZOO)


@pytest.mark.parametrize("name", list(ZOO))
def test_parts_of_every_zoo_family(name):
    n_gated, fused, n_attn, segments = EXPECTED[name]
    m = tiny_model(name)
    parts = model_parts(m)
    assert not parts.unrecognised
    assert len(parts.gated) == n_gated and len(parts.attention) == n_attn
    for g in parts.gated:
        assert (g.fused is not None) == fused and not g.guessed
        names = {id(mod): n for n, mod in m.named_modules()}
        if fused:
            assert names[id(g.fused)].endswith("mlp.gate_up_proj") and names[id(g.down)].endswith("mlp.down_proj")
        else:
            assert names[id(g.gate)].endswith("mlp.gate_proj") and names[id(g.up)].endswith("mlp.up_proj")
    assert [p.segments for p in parts.attention[0].projections] == segments
    arch = get_architecture(m)
    block = arch.blocks[0]
    assert any(parts.attention[0].module is c for c in block.modules())


def test_gated_t5_is_found_in_both_stacks():
    parts = model_parts(tiny_model("t5", feed_forward_proj="gated-gelu"))
    assert len(parts.gated) == 4 and all(g.gate is not None for g in parts.gated)


@pytest.mark.parametrize("name", ["llama", "phi3", "gemma2"])
def test_structural_fallback_finds_what_the_table_states(name, clean_registry):
    m = tiny_model(name)
    registered = model_parts(m)
    archmod._REGISTRY.pop(name)
    assert get_architecture(m).generic
    found = model_parts(m)
    key = [(id(g.container), id(g.down), id(g.gate), id(g.up), id(g.fused)) for g in registered.gated]
    assert key == [(id(g.container), id(g.down), id(g.gate), id(g.up), id(g.fused)) for g in found.gated]
    assert [a.module for a in registered.attention] == [a.module for a in found.attention]
    if name == "phi3":  # fused q/k/v found by name: its channel layout is not assumed
        assert all(not p.segments for a in found.attention for p in a.projections)
        with pytest.raises(TypeError, match=r"channel layout of the fused q/k/v projection .*qkv_proj"):
            with attach_rules(m, rules={m: AttentionRule("cp", at="projections")}):
                pass


def _bias_free(name, task="auto", **kw):
    m = tiny_model(name, task, attention_bias=False, mlp_bias=False, **kw).to(D64)
    for p in m.parameters():
        p.requires_grad_(False)
    return m


def test_unregistered_gated_family_conserves(clean_registry):
    m = _bias_free("qwen3", task="causal-lm")
    assert get_architecture(m).generic and len(model_parts(m).gated) == 2
    ids = torch.randint(10, 100, (2, 9), generator=torch.Generator().manual_seed(0))
    rel, delta = LRP(m, composite="cp-lrp").attribute(ids, target=(-1, 7), return_convergence_delta=True)
    score = rel.sum(1) + delta
    assert (delta.abs() <= 1e-4 * score.abs()).all()


class _Split(nn.Module):
    """Phi-3's MLP with its fused [gate | up] projection split in two."""

    def __init__(self, fused_mlp: nn.Module) -> None:
        super().__init__()
        w = fused_mlp.gate_up_proj.weight
        half = w.shape[0] // 2
        self.gate_proj = nn.Linear(w.shape[1], half, bias=False, dtype=w.dtype)
        self.up_proj = nn.Linear(w.shape[1], half, bias=False, dtype=w.dtype)
        with torch.no_grad():
            self.gate_proj.weight.copy_(w[:half])
            self.up_proj.weight.copy_(w[half:])
        self.down_proj, self.act_fn = fused_mlp.down_proj, fused_mlp.activation_fn

    def forward(self, x):
        return self.down_proj(self.act_fn(self.gate_proj(x)) * self.up_proj(x))


@pytest.mark.parametrize("composite", ["cp-lrp", "attnlrp"])
def test_fused_gate_up_equals_split_gate_and_up(composite):
    fused, split = _bias_free("phi3"), _bias_free("phi3")
    for layer in split.model.layers:
        layer.mlp = _Split(layer.mlp)
    ids = torch.randint(10, 100, (2, 9), generator=torch.Generator().manual_seed(1))
    a = LRP(fused, composite=composite).attribute(ids, target=(-1, 5))
    b = LRP(split, composite=composite).attribute(ids, target=(-1, 5))
    assert not torch.allclose(a, torch.zeros_like(a))
    torch.testing.assert_close(a, b, atol=1e-10, rtol=0)


def test_unrecognised_gated_mlp_warns_naming_it():
    m = tiny_model("llama")

    class Odd(nn.Module):  # three projections that fit no gated pattern
        def __init__(self):
            super().__init__()
            self.a, self.b, self.c = nn.Linear(32, 64), nn.Linear(32, 48), nn.Linear(64, 32)

        def forward(self, x):
            return self.c(self.a(x) * self.b(x).sum(-1, keepdim=True))

    m.model.layers[1].mlp = Odd()
    ids = torch.randint(10, 100, (1, 5))
    with pytest.warns(UserWarning, match=r"MLP 'model\.layers\.1\.mlp' \(Odd\) computes a gated product"):
        LRP(m, composite="cp-lrp").attribute(ids, target=(-1, 3))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the plain gradient through products: nothing to warn about
        LRP(m, composite="epsilon").attribute(ids, target=(-1, 3))


def test_gate_found_by_position_only_is_announced():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.mlp = nn.Module()
            self.mlp.w_a, self.mlp.w_b = nn.Linear(4, 8, bias=False), nn.Linear(4, 8, bias=False)
            self.mlp.w_c, self.mlp.act = nn.Linear(8, 4, bias=False), nn.SiLU()
            self.mlp.forward = lambda x: self.mlp.w_c(self.mlp.act(self.mlp.w_a(x)) * self.mlp.w_b(x))

        def forward(self, x):
            return self.mlp(x)

    net = Net().double()
    x = torch.randn(3, 4, dtype=D64, generator=torch.Generator().manual_seed(2))
    with pytest.warns(UserWarning, match=r"assumes 'mlp\.w_a' is the gate"):
        rel, delta = LRP(net, composite="cp-lrp").attribute(x, target=1, return_convergence_delta=True)
    assert delta.abs().max() <= 1e-12  # the gate held constant: the product is linear in the rest
    del net.mlp.forward


def test_register_architecture_with_parts(clean_registry):
    spec = register_architecture(
        "toy-gated",
        {
            "blocks": "layers",
            "attention": "attn",
            "mlp": "mlp",
            "gated_mlp": ["mlp.g", "mlp.u", "mlp.d"],
            "fused_qkv": "attn.qkv",
            "qkv_layout": "per_head",
        },
    )
    block = spec.stacks[""].block
    assert block.gated_mlp == ("mlp.g", "mlp.u", "mlp.d") and block.qkv_layout == "per_head"
    with pytest.raises(ValueError, match="gated_mlp must be a tuple of 3 module paths"):
        BlockSpec(gated_mlp=("a", "b"))
    with pytest.raises(ValueError, match="qkv_layout must be one of"):
        BlockSpec(fused_qkv="qkv", qkv_layout="interleaved")
    with pytest.raises(ValueError, match="unknown keys"):
        register_architecture("toy-bad", {"blocks": "layers", "gated": ("a", "b", "c")})
