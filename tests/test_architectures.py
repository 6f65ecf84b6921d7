"""Tests for hfattr.hf.architectures (role names, generic fallback, site resolution)."""

import pytest
import torch
import torch.nn as nn

from hfattr.hf import (
    ArchSpec,
    Architecture,
    get_architecture,
    register_architecture,
    registered_architectures,
    resolve_sites,
)
from hfattr.hf import architectures as archmod
from hfattr.testing import ZOO, make_tokenizer, style_for, tiny_model

REGISTERED = [
    "bert",
    "roberta",
    "distilbert",
    "gpt2",
    "llama",
    "qwen2",
    "mistral",
    "bart",
    "t5",
    "electra",
    "albert",
    "gpt_neox",
    "opt",
    "phi",
    "gemma",
    "gemma2",
    "phi3",
]
# Model types that no code registers: they go through the generic fallback.
GENERIC = [
    "xlm-roberta",
    "megatron-bert",
    "stablelm",
    "starcoder2",
    "olmo",
    "gptj",
    "bloom",
    "mpt",
    "granite",
    "qwen3",
    "gpt_bigcode",
    "codegen",
    "mbart",
]
TEXT = "a great movie , i love it"


@pytest.fixture
def clean_registry():
    saved = dict(archmod._REGISTRY)
    yield
    archmod._REGISTRY.clear()
    archmod._REGISTRY.update(saved)


def _inputs(model):
    tok = make_tokenizer(style_for(model.config.model_type))
    enc = dict(tok([TEXT], return_tensors="pt"))
    enc.pop("token_type_ids", None)
    if model.config.is_encoder_decoder:
        enc["decoder_input_ids"] = torch.tensor([[model.config.decoder_start_token_id, 5, 7]])
    return enc


def _run(model):
    with torch.no_grad():
        return model(**_inputs(model))


def _hook_counts(model, modules):
    """Run one forward; return {id(module): number of calls} and the call order of modules."""
    counts, order, handles = {}, [], []
    for m in {id(m): m for m in modules}.values():

        def hook(mod, args, out, key=id(m)):  # noqa: B008 (binds the loop value)
            counts[key] = counts.get(key, 0) + 1
            order.append(key)

        handles.append(m.register_forward_hook(hook))
    try:
        _run(model)
    finally:
        for h in handles:
            h.remove()
    return counts, order


def _layer_counts(config):
    keys = ("num_hidden_layers", "n_layer", "num_layers", "n_layers", "encoder_layers", "decoder_layers")
    return {getattr(config, k) for k in keys if isinstance(getattr(config, k, None), int)}


def _check_on_forward_path(model, arch, *, shared=False):
    """Every role's module runs exactly once per forward, blocks fire in role order."""
    roles = arch.roles()
    counts, order = _hook_counts(model, [arch.module(r) for r in roles])
    for r in roles:
        expected = len(arch.blocks) if shared and r.startswith("blocks.") else 1
        assert counts.get(id(arch.module(r)), 0) == expected, (r, arch.name_of(r))
    if not shared:
        block_ids = [id(b) for b in arch.blocks]
        fired = [k for k in order if k in block_ids]
        assert fired == block_ids  # blocks are listed in call order


def _check_structure(arch):
    for prefix, blocks in arch.stacks.items():
        for i, block in enumerate(blocks):
            role = f"{prefix}.{i}"
            assert arch.module(role) is block
            inside = {id(m) for m in block.modules()}
            for kind in ("attention", "mlp"):
                sub = arch.module(f"{role}.{kind}")
                assert id(sub) in inside and sub is not block
                assert arch.name_of(sub).startswith(arch.name_of(block) + ".")
            norms = [r for r in arch.roles() if r.startswith(role + ".norm")]
            assert norms == [f"{role}.norm{k}" for k in range(1, len(norms) + 1)]
            for r in norms:
                assert id(arch.module(r)) in inside


# ---------------------------------------------------------------------------
# registered families and the generic fallback
# ---------------------------------------------------------------------------


def test_registry_table():
    assert set(REGISTERED) <= set(registered_architectures())
    assert not set(GENERIC) & set(registered_architectures())
    assert archmod._REGISTRY["albert"].shared_blocks


@pytest.mark.parametrize("model_type", REGISTERED)
def test_registered_roles_on_forward_path(model_type):
    model = tiny_model(model_type, "base", num_layers=3)
    arch = get_architecture(model)
    assert isinstance(arch, Architecture) and not arch.generic
    assert len(arch.blocks) == sum(len(b) for b in arch.stacks.values())
    layers = _layer_counts(model.config)
    for blocks in arch.stacks.values():
        assert len(blocks) in layers
    _check_structure(arch)
    _check_on_forward_path(model, arch, shared=arch.shared_blocks)
    assert "embed" in arch.roles() and arch.embed is arch.module("embed")


@pytest.mark.parametrize("model_type", GENERIC)
def test_generic_fallback(model_type):
    model = tiny_model(model_type, "base", num_layers=3)
    arch = get_architecture(model)
    assert arch.generic
    layers = _layer_counts(model.config)
    assert all(len(blocks) == 3 for blocks in arch.stacks.values()) and 3 in layers
    assert set(arch.stacks) == ({"encoder.blocks", "decoder.blocks"} if model.config.is_encoder_decoder else {"blocks"})
    _check_structure(arch)
    _check_on_forward_path(model, arch)
    assert any(r.endswith(".norm1") for r in arch.roles())


@pytest.mark.parametrize("name", list(ZOO))
def test_zoo_with_heads(name):
    """Role modules of task models (with heads) are found under the base-model prefix."""
    model = tiny_model(name)
    arch = get_architecture(model)
    prefix = model.base_model_prefix
    if hasattr(model, prefix):
        assert arch.name_of("blocks.0" if "blocks" in arch.stacks else "encoder.blocks.0").startswith(prefix + ".")
    _check_on_forward_path(model, arch)


@pytest.mark.parametrize(
    "model_type, role, name",
    [
        ("bert", "blocks.1.attention", "encoder.layer.1.attention.output.dense"),
        ("bert", "blocks.1.mlp", "encoder.layer.1.output.dense"),
        ("bert", "blocks.0.norm2", "encoder.layer.0.output.LayerNorm"),
        ("gpt2", "final_norm", "ln_f"),
        ("gpt2", "blocks.1.norm1", "h.1.ln_1"),
        ("llama", "blocks.0.attention", "layers.0.self_attn"),
        ("distilbert", "blocks.1.mlp", "transformer.layer.1.ffn"),
        ("opt", "blocks.0.mlp", "decoder.layers.0.fc2"),
        ("bart", "decoder.blocks.1.cross_attention", "decoder.layers.1.encoder_attn"),
        ("bart", "decoder.blocks.0.norm3", "decoder.layers.0.final_layer_norm"),
        ("t5", "decoder.blocks.1.mlp", "decoder.block.1.layer.2.DenseReluDense"),
        ("t5", "encoder.final_norm", "encoder.final_layer_norm"),
        ("phi3", "blocks.1.mlp", "layers.1.mlp"),
        ("gemma2", "blocks.0.norm4", "layers.0.post_feedforward_layernorm"),
        ("gpt_neox", "blocks.0.attention", "layers.0.attention"),
        ("t5", "embed", "encoder.embed_tokens"),
        ("t5", "decoder.embed", "decoder.embed_tokens"),
        ("gpt_neox", "embed", "embed_in"),
    ],
)
def test_registered_role_names(model_type, role, name):
    arch = get_architecture(tiny_model(model_type, "base"))
    assert arch.name_of(role) == name


def _capture(module, store, key):
    def pre(mod, args, kwargs):
        x = args[0] if args else kwargs["hidden_states"]
        store[key + ".in"] = x.detach().clone()

    def post(mod, args, out):
        store[key] = (out[0] if isinstance(out, tuple) else out).detach().clone()

    return [module.register_forward_pre_hook(pre, with_kwargs=True), module.register_forward_hook(post)]


@pytest.mark.parametrize("model_type", ["llama", "gpt2", "gpt_neox", "olmo"])
def test_attention_and_mlp_are_residual_updates_prenorm(model_type):
    """Pre-LN blocks: block_out == block_in + attention_out + mlp_out."""
    model = (
        tiny_model(model_type, "base", use_parallel_residual=False)
        if model_type == "gpt_neox"
        else tiny_model(model_type, "base")
    )
    arch = get_architecture(model)
    store, handles = {}, []
    for kind in ("", ".attention", ".mlp"):
        handles += _capture(arch.module("blocks.1" + kind), store, kind or "block")
    _run(model)
    for h in handles:
        h.remove()
    torch.testing.assert_close(
        store["block"], store["block.in"] + store[".attention"] + store[".mlp"], atol=1e-5, rtol=1e-5
    )


@pytest.mark.parametrize("model_type", ["bert", "xlm-roberta"])
def test_attention_is_residual_update_postnorm(model_type):
    """Post-LN (BERT-like) blocks: norm1's input == block_in + attention_out."""
    model = tiny_model(model_type, "base")
    arch = get_architecture(model)
    store, handles = {}, []
    handles += _capture(arch.module("blocks.1"), store, "block")
    handles += _capture(arch.module("blocks.1.attention"), store, "attn")
    handles += _capture(arch.module("blocks.1.norm1"), store, "norm1")
    handles += _capture(arch.module("blocks.1.mlp"), store, "mlp")
    handles += _capture(arch.module("blocks.1.norm2"), store, "norm2")
    _run(model)
    for h in handles:
        h.remove()
    torch.testing.assert_close(store["norm1.in"], store["block.in"] + store["attn"], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(store["norm2.in"], store["norm1"] + store["mlp"], atol=1e-5, rtol=1e-5)


def test_albert_shared_blocks():
    model = tiny_model("albert", "base", num_layers=4)
    arch = get_architecture(model)
    assert arch.shared_blocks and len(arch.blocks) == 4
    assert all(b is arch.blocks[0] for b in arch.blocks)
    assert arch.module("blocks.3.attention") is arch.module("blocks.0.attention")
    counts, _ = _hook_counts(model, [arch.blocks[0]])
    assert counts[id(arch.blocks[0])] == 4


@pytest.mark.parametrize("model_type", ["t5", "bart"])
def test_encoder_decoder_embed_is_on_path(model_type):
    """`embed` is the encoder's embedding module actually called, not the unused shared one."""
    model = tiny_model(model_type)
    arch = get_architecture(model)
    counts, _ = _hook_counts(model, [arch.embed, arch.module("decoder.embed")])
    assert counts == {id(arch.embed): 1, id(arch.module("decoder.embed")): 1}
    assert arch.is_encoder_decoder


# ---------------------------------------------------------------------------
# resolve_sites
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def llama():
    return tiny_model("llama", num_layers=3)


def test_resolve_roles_and_kinds(llama):
    arch = get_architecture(llama)
    assert resolve_sites(llama, "blocks.2.attention") == [("blocks.2.attention", llama.model.layers[2].self_attn)]
    att = resolve_sites(llama, "attention")
    assert [r for r, _ in att] == [f"blocks.{i}.attention" for i in range(3)]
    assert [m for _, m in att] == [layer.self_attn for layer in llama.model.layers]
    assert resolve_sites(llama, "block") == resolve_sites(llama, "blocks")
    assert [m for _, m in resolve_sites(llama, "blocks")] == list(llama.model.layers)
    assert [r for r, _ in resolve_sites(llama, "norm2")] == [f"blocks.{i}.norm2" for i in range(3)]
    both = resolve_sites(llama, ["embed", "mlp", "blocks.0.mlp", "final_norm"])
    assert [r for r, _ in both] == ["embed", "blocks.0.mlp", "blocks.1.mlp", "blocks.2.mlp", "final_norm"]
    assert both[0][1] is llama.model.embed_tokens and both[-1][1] is llama.model.norm
    assert [r for r, _ in resolve_sites(arch, "blocks.*.mlp")] == [f"blocks.{i}.mlp" for i in range(3)]


def test_resolve_module_names_and_objects(llama):
    sites = resolve_sites(llama, "model.layers.*.self_attn")
    assert [n for n, _ in sites] == [f"model.layers.{i}.self_attn" for i in range(3)]
    assert [m for _, m in sites] == [m for _, m in resolve_sites(llama, "attention")]
    assert resolve_sites(llama, "model.norm") == [("model.norm", llama.model.norm)]
    assert resolve_sites(llama, llama.model.layers[1].mlp) == [("blocks.1.mlp", llama.model.layers[1].mlp)]
    q = llama.model.layers[0].self_attn.q_proj
    assert resolve_sites(llama, q) == [("model.layers.0.self_attn.q_proj", q)]
    arch = get_architecture(llama)
    assert arch.name_of(q) == "model.layers.0.self_attn.q_proj"
    assert arch.name_of("blocks.1") == "model.layers.1"
    assert arch.role_of(llama.model.layers[1]) == "blocks.1" and arch.role_of(q) is None


def test_resolve_encoder_decoder_kinds():
    model = tiny_model("bart")
    cross = resolve_sites(model, "cross_attention")
    assert [r for r, _ in cross] == ["decoder.blocks.0.cross_attention", "decoder.blocks.1.cross_attention"]
    assert resolve_sites(model, "decoder.cross_attention") == cross
    att = [r for r, _ in resolve_sites(model, "attention")]
    assert att == [
        "encoder.blocks.0.attention",
        "encoder.blocks.1.attention",
        "decoder.blocks.0.attention",
        "decoder.blocks.1.attention",
    ]
    assert [r for r, _ in resolve_sites(model, "encoder.mlp")] == ["encoder.blocks.0.mlp", "encoder.blocks.1.mlp"]
    assert [r for r, _ in resolve_sites(model, "decoder.blocks")] == ["decoder.blocks.0", "decoder.blocks.1"]


def test_resolve_errors(llama):
    with pytest.raises(ValueError, match=r"model\.layers\.\*\.nonexistent.*blocks\.0\.attention"):
        resolve_sites(llama, "model.layers.*.nonexistent")
    with pytest.raises(ValueError, match="'blocks.7.mlp'"):
        resolve_sites(llama, "blocks.7.mlp")
    with pytest.raises(ValueError, match="cross_attention"):
        resolve_sites(llama, "cross_attention")  # a kind with no match in a decoder-only model
    with pytest.raises(ValueError, match="empty"):
        resolve_sites(llama, [])
    with pytest.raises(TypeError, match="site"):
        resolve_sites(llama, 3)
    with pytest.raises(ValueError, match="not part of this model"):
        resolve_sites(llama, nn.Linear(2, 2))
    with pytest.raises(ValueError, match="unknown role 'blocks.9'"):
        get_architecture(llama).module("blocks.9")
    with pytest.raises(TypeError, match="torch.nn.Module"):
        get_architecture("llama")


# ---------------------------------------------------------------------------
# registration
# ---------------------------------------------------------------------------


class ToyBlock(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.ln_a, self.mix, self.ln_b, self.ff = nn.LayerNorm(d), nn.Linear(d, d), nn.LayerNorm(d), nn.Linear(d, d)

    def forward(self, x):
        x = x + self.mix(self.ln_a(x))
        return x + self.ff(self.ln_b(x))


class ToyNet(nn.Module):
    def __init__(self, d=8, n=3):
        super().__init__()
        self.tok = nn.Embedding(20, d)
        self.stack = nn.ModuleList(ToyBlock(d) for _ in range(n))
        self.head_norm = nn.LayerNorm(d)

    def forward(self, ids):
        x = self.tok(ids)
        for block in self.stack:
            x = block(x)
        return self.head_norm(x)


TOY_SPEC = {
    "blocks": "stack",
    "attention": "mix",
    "mlp": "ff",
    "norms": ["ln_a", "ln_b"],
    "final_norm": "head_norm",
    "embed": "tok",
}


def test_register_custom_toy_model(clean_registry):
    net = ToyNet()
    spec = register_architecture("ToyNet", TOY_SPEC)
    assert isinstance(spec, ArchSpec) and "ToyNet" in registered_architectures()
    arch = get_architecture(net)
    assert not arch.generic and arch.model_type == "ToyNet"
    assert arch.embed is net.tok and arch.blocks == list(net.stack)
    assert arch.module("blocks.2.attention") is net.stack[2].mix
    assert arch.module("blocks.0.norm2") is net.stack[0].ln_b
    assert arch.module("final_norm") is net.head_norm
    assert arch.roles()[:6] == [
        "embed",
        "blocks.0",
        "blocks.0.attention",
        "blocks.0.mlp",
        "blocks.0.norm1",
        "blocks.0.norm2",
    ]
    assert [m for _, m in resolve_sites(net, "mlp")] == [b.ff for b in net.stack]
    counts = {}
    for r in arch.roles():
        arch.module(r).register_forward_hook(lambda m, a, o, r=r: counts.__setitem__(r, counts.get(r, 0) + 1))
    net(torch.tensor([[1, 2, 3]]))
    assert counts == {r: 1 for r in arch.roles()}


def test_register_overrides_hf_model_type(clean_registry):
    model = tiny_model("llama", "base")
    register_architecture("llama", {"blocks": "layers", "attention": "self_attn.o_proj", "mlp": "mlp.down_proj"})
    arch = get_architecture(model)
    assert arch.module("blocks.1.attention") is model.layers[1].self_attn.o_proj
    assert "final_norm" not in arch.roles() and "blocks.0.norm1" not in arch.roles()


def test_explicit_spec_and_encoder_decoder_dict():
    model = tiny_model("bart")
    spec = {
        "embed": "encoder.embed_tokens",
        "encoder": {"blocks": "encoder.layers", "attention": "self_attn", "mlp": "fc2"},
        "decoder": {
            "blocks": "decoder.layers",
            "attention": "self_attn",
            "mlp": "fc2",
            "cross_attention": "encoder_attn",
            "embed": "decoder.embed_tokens",
        },
    }
    arch = get_architecture(model, spec=spec)
    ref = get_architecture(model)
    for role in arch.roles():
        assert arch.module(role) is ref.module(role)
    assert set(ref.roles()) - set(arch.roles()) == {r for r in ref.roles() if "norm" in r}


def test_generic_fallback_plain_module():
    net = ToyNet(n=4)
    arch = get_architecture(net)  # not registered: structural fallback
    assert arch.generic and arch.blocks == list(net.stack)
    assert arch.embed is net.tok
    assert arch.module("final_norm") is net.head_norm
    assert [arch.module(f"blocks.0.norm{k}") for k in (1, 2)] == [net.stack[0].ln_a, net.stack[0].ln_b]


def test_register_errors():
    with pytest.raises(ValueError, match="model_type"):
        register_architecture("", TOY_SPEC)
    with pytest.raises(ValueError, match="unknown keys.*'attn'"):
        register_architecture("toy2", {"blocks": "stack", "attn": "mix"})
    with pytest.raises(ValueError, match="blocks"):
        register_architecture("toy2", {"encoder": {"attention": "mix"}})
    with pytest.raises(TypeError, match="spec"):
        register_architecture("toy2", ["stack"])
    assert "toy2" not in registered_architectures()
    with pytest.raises(ValueError, match="no submodule 'nope'"):
        get_architecture(ToyNet(), spec={"blocks": "stack", "attention": "nope"})
    with pytest.raises(ValueError, match="block paths"):
        get_architecture(ToyNet(), spec={"blocks": "missing.layers"})


def test_register_architecture_returns_a_handle_that_undoes_it():
    model = tiny_model("llama", "base")
    before = get_architecture(model).module("blocks.1.attention")
    handle = register_architecture(
        "llama", {"blocks": "layers", "attention": "self_attn.o_proj", "mlp": "mlp.down_proj"}
    )
    assert get_architecture(model).module("blocks.1.attention") is model.layers[1].self_attn.o_proj
    handle.remove()
    assert get_architecture(model).module("blocks.1.attention") is before  # the built-in facts are back
    handle.remove()  # a second remove is a no-op
    assert get_architecture(model).module("blocks.1.attention") is before
    toy = register_architecture("ToyNetOnce", TOY_SPEC)
    assert "ToyNetOnce" in registered_architectures()
    toy.remove()
    assert "ToyNetOnce" not in registered_architectures()
