"""LRP on transformers models: conservation, unchanged forward, untouched model, precision,
kernel vs projections vs eager, and the Explainer method on every zoo family."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import hfattr
from hfattr import Explainer
from hfattr.core import hook_counts
from hfattr.lrp import LRP, AttentionRule, EpsilonRule, attach_rules
from hfattr.methods.lrp import lrp
from hfattr.testing import ZOO, tiny, tiny_model

D64 = torch.float64


@pytest.fixture(scope="module", autouse=True)
def _registered():
    from hfattr.methods import get_method

    before = get_method("lrp")
    handle = hfattr.register_method("lrp", lrp, overwrite=True, needs_grad=True)
    yield
    handle.remove()
    hfattr.register_method(
        before.name, before.fn, description=before.description, batched=before.batched, needs_grad=before.needs_grad
    )


def _bias_free(name: str, *, dtype=D64, **kw):
    m = tiny_model(name, attention_bias=False, mlp_bias=False, **kw).to(dtype)
    with torch.no_grad():
        for n, p in m.named_parameters():
            if n.endswith("bias"):  # Qwen2's q/k/v projections always have one
                p.zero_()
    for p in m.parameters():
        p.requires_grad_(False)
    return m


def _ids(model, B=3, L=12, seed=0):
    return torch.randint(10, 100, (B, L), generator=torch.Generator().manual_seed(seed))


def _last_logit(model, embeds, token=None):
    logits = model(inputs_embeds=embeds, use_cache=False).logits[:, -1]
    idx = logits.argmax(-1, keepdim=True) if token is None else torch.full_like(logits[:, :1], token, dtype=torch.long)
    return logits.gather(1, idx)[:, 0]


def _relevance(model, embeds, composite, token=7, **kw):
    x = embeds.clone().requires_grad_(True)
    with attach_rules(model, composite=composite, **kw) as att:
        score = _last_logit(model, x, token=token)
        att.check()
        (g,) = torch.autograd.grad(score.sum(), x)
    return (x * g).sum(-1), score.detach()


# ----------------------------------------------------------------------------- conservation
def _embedding_relevance(model, composite, B=3, L=10):
    """Per-example relevance summed over every token/position/type embedding output (the inputs of
    a bias-free model), and the explained logit (last position's token 7, or class 1)."""
    hidden = model.get_input_embeddings().weight.shape[1]
    ids = _ids(model, B=B, L=L)
    kw = {"input_ids": ids}
    if model.config.is_encoder_decoder:
        kw["decoder_input_ids"] = ids[:, :4]
    leaves = []

    def as_leaf(module, args, out):
        if out.shape[-1] != hidden:  # T5's relative position bias: part of the attention scores
            return None
        t = out.detach().expand(B, -1, -1) if out.dim() == 3 and out.shape[0] == 1 else out.detach()
        leaves.append(t.clone().requires_grad_(True))
        return leaves[-1]

    handles = [e.register_forward_hook(as_leaf) for e in model.modules() if isinstance(e, nn.Embedding)]
    try:
        with attach_rules(model, composite=composite) as att:
            logits = model(**kw).logits
            att.check()
            score = logits[:, -1, 7] if logits.dim() == 3 else logits[:, 1]
            grads = torch.autograd.grad(score.sum(), leaves, allow_unused=True)
    finally:
        for h in handles:
            h.remove()
    rel = sum((t * g).reshape(B, -1).sum(1) for t, g in zip(leaves, grads) if g is not None)
    return rel, score.detach()


@pytest.mark.parametrize("name", list(ZOO))
def test_cp_lrp_conserves_on_bias_free_models_of_every_family(name):
    """Fused projections (Phi-3's gate_up_proj and qkv_proj), Gemma-2's logit soft-capping, learned
    position embeddings (counted as inputs) and classification heads included; observed <= 3e-7."""
    m = _bias_free(name)
    rel, score = _embedding_relevance(m, "cp-lrp")
    torch.testing.assert_close(rel, score, rtol=1e-4, atol=0)


@pytest.mark.parametrize("name,dtype", [("qwen2", D64), ("llama", torch.float32)])
def test_cp_lrp_conserves_on_input_embeddings(name, dtype):
    m = _bias_free(name, dtype=dtype)
    emb = m.get_input_embeddings()(_ids(m)).detach()
    rel, score = _relevance(m, emb, "cp-lrp")
    torch.testing.assert_close(rel.sum(-1).to(D64), score.to(D64), rtol=1e-4, atol=0)


def capture_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """Eager attention that keeps its scores and probabilities (for the softmax bias term)."""
    from transformers.integrations.sdpa_attention import repeat_kv

    n_rep = query.shape[1] // key.shape[1]
    key, value = repeat_kv(key, n_rep), repeat_kv(value, n_rep)
    scores = torch.matmul(query, key.transpose(2, 3)) * scaling
    if attention_mask is not None:
        scores = scores + attention_mask
    probs = scores.softmax(-1)
    if scores.requires_grad:
        scores.retain_grad()
        probs.retain_grad()
        CAPTURED.append((scores, probs))
    return torch.matmul(probs, value).transpose(1, 2).contiguous(), probs


CAPTURED: list = []


@pytest.fixture
def capture_impl():
    from transformers.masking_utils import AttentionMaskInterface, eager_mask
    from transformers.modeling_utils import AttentionInterface

    AttentionInterface._global_mapping["hfattr_test_capture"] = capture_attention
    AttentionMaskInterface._global_mapping["hfattr_test_capture"] = eager_mask
    try:
        yield "hfattr_test_capture"
    finally:
        AttentionInterface._global_mapping.pop("hfattr_test_capture")
        AttentionMaskInterface._global_mapping.pop("hfattr_test_capture")


# (OPT is left out: its learned position embeddings take relevance too; the CP-LRP test counts them)
@pytest.mark.parametrize(
    "name,bound",
    [("llama", 0.05), ("qwen2", 0.05), ("mistral", 0.05), ("gpt_neox", 0.05), ("phi3", 0.1), ("gemma2", 0.8)],
)
def test_attnlrp_conservation(name, bound, capture_impl):
    """AttnLRP loses exactly the softmax rule's bias term; at the standard init (0.02) that is within
    5% of the logit for most families (observed: Phi-3 8%, Gemma-2 66%: its attention is flatter).

    At the zoo's larger init (0.2) attention logits spread widely and the bias term reaches
    20-50% of the logit; the exact accounting holds there too.
    """
    for init, L, limit in ((0.02, 64, bound), (0.2, 12, None)):
        m = _bias_free(name, initializer_range=init, attn_implementation=capture_impl)
        emb = m.get_input_embeddings()(_ids(m, B=8, L=L)).detach()
        CAPTURED.clear()
        rel, score = _relevance(m, emb, "attnlrp", token=None)  # the top logit
        total = rel.sum(-1)
        # relevance the softmax rule absorbs, per example (kernel gradients are 2x AttnLRP's here,
        # the q/k/v scalings sit at the kernel inputs)
        absorbed = sum(
            0.5 * ((a * a.grad).sum((1, 2, 3)) - torch.where(a > 0, s * s.grad, 0.0).sum((1, 2, 3)))
            for s, a in CAPTURED
        )
        assert len(CAPTURED) == m.config.num_hidden_layers
        torch.testing.assert_close(total + absorbed, score, rtol=1e-5, atol=0)
        if limit is not None:
            assert ((total - score).abs() / score.abs()).max() <= limit


def test_site_relevance_is_conserved_layer_by_layer():
    m, tok = tiny("llama")
    with torch.no_grad():
        for n, p in m.named_parameters():
            if n.endswith("bias"):
                p.zero_()
    r = Explainer(m, tok).explain(
        "the movie was great", method="lrp", composite="cp-lrp", target=" fun", site=["blocks.0", "blocks.1"]
    )
    score = r.scores.nansum() + r.delta  # a one-token continuation: (1, P + 1), the last entry empty
    for site in ("blocks.0", "blocks.1"):
        torch.testing.assert_close(r.extras["site_relevance"][site].sum(), score, rtol=1e-4, atol=1e-6)
    assert abs(r.delta) < 1e-4 * max(1.0, abs(float(score)))


# ----------------------------------------------------------------------------- forward and state
def _inputs(name, model):
    ids = _ids(model, B=2, L=7)
    kw = {"input_ids": ids}
    if model.config.is_encoder_decoder:
        kw["decoder_input_ids"] = ids[:, :3]
    return kw


@pytest.mark.parametrize("name", list(ZOO))
def test_forward_unchanged_while_attached(name):
    m = tiny_model(name)
    kw = _inputs(name, m)
    plain = m(**kw).logits.detach()  # with autograd on, like the attached pass (kernels may differ)
    for composite in ("attnlrp", "cp-lrp", "epsilon"):
        with attach_rules(m, composite=composite) as att:
            attached = m(**kw).logits
            att.check()
            assert att.kernel_calls > 0
        assert torch.equal(attached, plain), composite


def _snapshot(model):
    from transformers.masking_utils import AttentionMaskInterface
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    from hfattr.lrp.attach import _configs

    return dict(
        params={k: v.clone() for k, v in model.state_dict().items()},
        training={n: m.training for n, m in model.named_modules()},
        requires_grad={n: p.requires_grad for n, p in model.named_parameters()},
        hooks={n: hook_counts(m) for n, m in model.named_modules()},
        attrs={n: sorted(m.__dict__) for n, m in model.named_modules()},
        forward_patched=[n for n, m in model.named_modules() if "forward" in m.__dict__],
        attn=[c._attn_implementation for c in _configs(model)],
        attention_functions=dict(ALL_ATTENTION_FUNCTIONS.items()),
        mask_functions=dict(AttentionMaskInterface._global_mapping),
        torch_function_modes=torch._C._len_torch_function_stack(),
    )


def _assert_same_state(before, after):
    assert before.keys() == after.keys()
    for key in before:
        if key == "params":
            assert before[key].keys() == after[key].keys()
            assert all(torch.equal(before[key][k], after[key][k]) for k in before[key])
        else:
            assert before[key] == after[key], key


@pytest.mark.parametrize("name", ["roberta", "gpt2", "t5"])
def test_model_exactly_as_before_after_calls_and_errors(name):
    m = tiny_model(name, "base" if name == "t5" else "auto")
    m.train()  # a non-default flag the call must not change
    before = _snapshot(m)
    kw = _inputs(name, m)
    kw.pop("decoder_input_ids", None) if name != "t5" else None
    with attach_rules(m, composite="attnlrp"):
        m(**kw)
    _assert_same_state(before, _snapshot(m))

    with pytest.raises(KeyError):  # an error inside the block
        with attach_rules(m, composite="cp-lrp"):
            m(**kw)
            raise KeyError("user error")
    _assert_same_state(before, _snapshot(m))

    def boom(module, args, output):
        raise ValueError("hook failure")

    last = list(m.modules())[-1]
    h = last.register_forward_hook(boom)  # an error in the middle of the forward pass
    try:
        before_hooked = _snapshot(m)
        with pytest.raises(ValueError, match="hook failure"):
            with attach_rules(m, composite="attnlrp"):
                m(**kw)
        _assert_same_state(before_hooked, _snapshot(m))
    finally:
        h.remove()
    _assert_same_state(before, _snapshot(m))


def test_error_inside_classification_head_leaves_no_mode_behind():
    m, tok = tiny("roberta")
    before = _snapshot(m)

    def boom(module, args, output):
        raise RuntimeError("inside the head")

    h = m.classifier.dense.register_forward_hook(boom)
    try:
        with pytest.raises(RuntimeError, match="inside the head"):
            LRP(m).attribute(_ids(m, B=1, L=5), target=0)
    finally:
        h.remove()
    _assert_same_state(before, _snapshot(m))


def test_missing_rule_and_nested_attach_leave_model_untouched():
    m = tiny_model("llama")

    class Gate(nn.Module):  # a module type LRP has no rule for
        def forward(self, x):
            return x * torch.sigmoid(x)

    m.model.layers[0].mlp.extra = Gate()
    before = _snapshot(m)
    with pytest.raises(TypeError, match=r"model\.layers\.0\.mlp\.extra.*Gate.*\.rule = "):
        LRP(m).attribute(_ids(m, B=1, L=4), target=(-1, 3))
    _assert_same_state(before, _snapshot(m))
    del m.model.layers[0].mlp.extra
    before = _snapshot(m)
    with pytest.raises(RuntimeError, match="already attached"):
        with attach_rules(m):
            with attach_rules(m):
                pass
    _assert_same_state(before, _snapshot(m))


# ----------------------------------------------------------------------------- implementations
@pytest.mark.parametrize("composite", ["attnlrp", "cp-lrp"])
def test_eager_and_sdpa_give_the_same_relevance(composite):
    emb = None
    out = []
    for impl in ("sdpa", "eager"):
        m = _bias_free("llama", attn_implementation=impl)
        emb = m.get_input_embeddings()(_ids(m)).detach() if emb is None else emb
        out.append(_relevance(m, emb, composite)[0])
    # (Llama's eager softmax runs in float32 even in a float64 model)
    torch.testing.assert_close(out[0], out[1], atol=1e-6, rtol=1e-4)


@pytest.mark.parametrize("name", ["gpt2", "llama", "bert", "t5", "phi3", "gpt_neox", "opt", "gemma2"])
@pytest.mark.parametrize("kind", ["attnlrp", "cp"])
def test_projection_mode_equals_kernel_mode(name, kind):
    """Gradient scaling at the q/k/v projections (per channel of fused ones: GPT-2's c_attn, Phi-3's
    qkv_proj with fewer k/v heads, GPT-NeoX's per-head query_key_value) equals the scaling at the
    attention kernel."""
    m = tiny_model(name, "base" if name == "t5" else "auto").double()
    kw = _inputs(name, m)
    ids = kw.pop("input_ids")
    emb = m.get_input_embeddings()(ids).detach()
    rel = []
    for at in ("kernel", "projections"):
        x = emb.clone().requires_grad_(True)
        with attach_rules(m, composite="attnlrp", rules={m: AttentionRule(kind, at=at)}) as att:
            out = m(inputs_embeds=x, **kw)
            att.check()
            y = out.logits if hasattr(out, "logits") else out.last_hidden_state
            (g,) = torch.autograd.grad(y[..., -1, :3].sum(), x)
        rel.append(x * g)
    torch.testing.assert_close(rel[0], rel[1], atol=1e-10, rtol=1e-8)


@pytest.mark.parametrize("name", ["llama", "gpt2"])
def test_bfloat16_models_work(name):
    ref = tiny_model(name)
    low = tiny_model(name, dtype=torch.bfloat16)
    ids = _ids(ref, B=2, L=9)
    r32, d32 = LRP(ref, composite="cp-lrp").attribute(ids, target=(-1, 5), return_convergence_delta=True)
    r16, d16 = LRP(low, composite="cp-lrp").attribute(ids, target=(-1, 5), return_convergence_delta=True)
    assert r16.dtype == torch.float32 and r16.shape == ids.shape and torch.isfinite(r16).all()
    scale = r32.abs().max()
    assert (r16 - r32).abs().max() <= 0.1 * scale
    assert torch.corrcoef(torch.stack([r16.flatten(), r32.flatten()]))[0, 1] > 0.98
    if name == "llama":  # bias-free family: CP-LRP conserves up to bfloat16 rounding
        with torch.no_grad():
            score = low(input_ids=ids).logits[:, -1, 5].float()
        assert ((r16.sum(1) - score).abs() <= 0.05 * score.abs() + 0.02).all()


def test_integer_ids_equal_embedding_relevance():
    m = tiny_model("llama").double()
    ids = _ids(m, B=2, L=6)
    got = LRP(m, composite="cp-lrp").attribute(ids, target=(-1, 4))

    class OnEmbeds(nn.Module):
        def __init__(self):
            super().__init__()
            self.m = m

        def forward(self, x, unused_ids=None):
            return self.m(inputs_embeds=x).logits

    emb = m.get_input_embeddings()(ids).detach()
    want = LRP(OnEmbeds(), composite="cp-lrp").attribute(emb, target=(-1, 4)).sum(-1)
    torch.testing.assert_close(got, want, atol=1e-12, rtol=1e-10)
    with pytest.raises(ValueError, match="no nn.Embedding"):
        LRP(OnEmbeds()).attribute((emb, ids), target=(-1, 4))


def test_rules_by_role_and_pattern():
    m = _bias_free("llama")
    emb = m.get_input_embeddings()(_ids(m)).detach()
    base, _ = _relevance(m, emb, "attnlrp")
    cp, _ = _relevance(m, emb, "cp-lrp")
    # the composite's attention rule overridden on every block by role kind and by name glob
    by_role, _ = _relevance(m, emb, "attnlrp", rules={"attention": AttentionRule("cp"), "mlp": None})
    by_glob, _ = _relevance(m, emb, "attnlrp", rules={"model.layers.*.self_attn": AttentionRule("cp")})
    torch.testing.assert_close(by_role, by_glob, atol=0, rtol=0)
    assert not torch.allclose(by_role, base) and not torch.allclose(by_role, cp)
    eps, _ = _relevance(m, emb, "attnlrp", rules={"lm_head": EpsilonRule(10.0)})
    assert not torch.allclose(eps, base)


# ----------------------------------------------------------------------------- Explainer method
@pytest.mark.parametrize("name", list(ZOO))
def test_explainer_method_on_every_family(name):
    m, tok = tiny(name)
    ex = Explainer(m, tok)
    texts = ["a great movie", "the worst film ever made"]
    encoder = name in ("bart", "t5")
    site = "encoder.blocks.0.mlp" if encoder else "blocks.1"
    for composite in ("attnlrp", "cp-lrp", "epsilon"):
        rs = ex.explain(texts, method="lrp", composite=composite, site=site)
        for r in rs:
            n = len(r.tokens)
            assert r.scores.shape == (n,) and torch.isfinite(r.scores).all()
            assert isinstance(r.delta, float)
            assert r.extras["site_relevance"][site].shape == (n,)
            assert r.extras["composite"] == composite
    if name in ("gpt2", "llama", "qwen2", "bart", "t5"):  # several target rows
        r = ex.explain("a great movie", method="lrp", target="the plot")
        assert r.scores.dim() == 2 and r.scores.shape[1] == len(r.tokens) and r.rows is not None
        assert r.delta.shape == (r.scores.shape[0],)


def test_explainer_method_matches_the_class():
    m, tok = tiny("gpt2")
    r = Explainer(m, tok).explain("the movie was great", method="lrp", target=" fun")
    enc = tok("the movie was great", return_tensors="pt")
    want = LRP(m).attribute(enc["input_ids"], target=(-1, tok.convert_tokens_to_ids("fun")))
    assert r.scores.shape == (1, want.shape[1] + 1) and torch.isnan(r.scores[0, -1])
    torch.testing.assert_close(r.scores[0, :-1], want[0], atol=1e-5, rtol=1e-4)


def test_explainer_method_rejects_probability_scores():
    m, tok = tiny("bert")
    with pytest.raises(ValueError, match="logits"):
        Explainer(m, tok).explain("a great movie", method="lrp", score="prob")


def test_verbose_lists_layers_and_attention_kernels(capsys):
    m = tiny_model("llama", num_layers=1)
    LRP(m, composite="cp-lrp").attribute(_ids(m, B=1, L=4), target=(-1, 3), verbose=True)
    out = capsys.readouterr().out
    for line in (
        "NormRule() on layer model.layers.0.input_layernorm (LlamaRMSNorm)",
        "IdentityRule() on layer model.layers.0.mlp.act_fn",
        "ProductRule(kind='detach_gate') on layer model.layers.0.mlp (gated product)",
        "EpsilonRule(epsilon=0.0) on layer lm_head (Linear)",
        "no rule (plain gradient) on layer model.embed_tokens (Embedding)",
        "AttentionRule(kind='cp') on layer model.layers.0.self_attn (LlamaAttention, attention kernel)",
    ):
        assert "Applied " + line in out, line


def test_functional_tanh_in_classification_head_gets_the_identity_rule():
    m = tiny_model("roberta").double()
    seen = {}

    def keep(name):
        def hook(module, args, out):
            t = args[0] if name == "out_in" else out
            t.retain_grad()
            seen[name] = t

        return hook

    x = m.get_input_embeddings()(_ids(m, B=2, L=6)).detach().requires_grad_(True)
    with attach_rules(m, composite="attnlrp"):
        h1 = m.classifier.dense.register_forward_hook(keep("dense_out"))
        h2 = m.classifier.out_proj.register_forward_hook(keep("out_in"))
        try:
            m(inputs_embeds=x).logits[:, 1].sum().backward()
        finally:
            h1.remove()
            h2.remove()
    r_pre = seen["dense_out"] * seen["dense_out"].grad  # before torch.tanh
    r_post = seen["out_in"] * seen["out_in"].grad  # after it (dropout is the identity in eval)
    torch.testing.assert_close(r_pre, r_post, atol=1e-12, rtol=1e-9)
    assert torch._C._len_torch_function_stack() == 0


def test_loss_modules_of_task_heads_need_no_rule():
    """DistilBERT's masked-LM head holds a CrossEntropyLoss that never runs in an attribution."""
    import hfattr
    from hfattr.testing import tiny as _tiny

    model, tok = _tiny("distilbert", "masked-lm")
    res = hfattr.Explainer(model, tok).explain("the movie was [MASK] .", method="lrp")
    assert res.scores.shape == (len(res.tokens),)
    assert torch.isfinite(res.scores).all()


def test_lrp_method_works_inside_inference_mode():
    import hfattr
    from hfattr.testing import tiny as _tiny

    model, tok = _tiny("bert")
    ex = hfattr.Explainer(model, tok)
    plain = ex.explain("the movie was great", method="lrp")
    with torch.inference_mode():
        inside = ex.explain("the movie was great", method="lrp")
    torch.testing.assert_close(inside.scores, plain.scores)


def test_nested_attachment_on_a_plain_torch_model_is_refused():
    from hfattr.lrp import attach_rules

    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    with attach_rules(net, composite="epsilon"):
        with pytest.raises(RuntimeError, match="already attached"):
            with attach_rules(net, composite="epsilon"):
                pass
    with attach_rules(net, composite="epsilon"):  # released after the block
        pass
