"""Explainer method "sig" on every zoo family: shapes, fixed special tokens, closed-form per-token
completeness, continuation rows, batched == one by one, default baseline token, adaptive steps."""

from __future__ import annotations

import pytest
import torch

from hfattr import Explainer, Result
from hfattr.hf.targets import head_kind
from hfattr.testing import make_tokenizer, tiny

D64 = torch.float64
TEXT = "the movie was great"
TEXTS = ["the movie was great", "a boring film", "i loved the acting and the music"]
FAMILIES = ["bert", "roberta", "distilbert", "gpt2", "llama", "qwen2", "bart", "t5"]
CAUSAL = ["gpt2", "llama", "qwen2"]

_CACHE: dict[str, tuple] = {}


def zoo(name: str):
    """``(model, tokenizer, Explainer)`` in float64, built once per module."""
    if name not in _CACHE:
        model, tok = tiny(name, dtype=D64)
        _CACHE[name] = (model, tok, Explainer(model, tok))
    return _CACHE[name]


def _default_baseline_id(tok, model=None) -> int:
    """SIG's documented default: on causal LMs the first of unk, eos, bos, pad, mask whose embedding
    is not zero; elsewhere the first of mask, pad, unk."""
    if model is not None and head_kind(model) == "causal":
        weight = model.get_input_embeddings().weight
        for kind in ("unk", "eos", "bos", "pad", "mask"):
            tid = getattr(tok, f"{kind}_token_id", None)
            if tid is not None and weight[tid].abs().max() > 0:
                return tid
    for kind in ("mask", "pad", "unk"):
        tid = getattr(tok, f"{kind}_token_id", None)
        if tid is not None:
            return tid
    raise AssertionError("zoo tokenizers all have one of mask/pad/unk")


@torch.no_grad()
def _score(model, ids: torch.Tensor, pos, idx: int) -> float:
    kind = head_kind(model)
    if kind == "class":
        return float(model(input_ids=ids).logits[0, idx])
    if kind == "causal":
        return float(model(input_ids=ids, use_cache=False).logits[0, pos, idx])
    start = model.config.decoder_start_token_id
    start = model.config.pad_token_id if start is None else start
    dec = torch.tensor([[start]])
    return float(model(input_ids=ids, decoder_input_ids=dec, use_cache=False).logits[0, 0, idx])


def closed_form(model, res: Result, baseline_id: int, row: int = 0) -> torch.Tensor:
    """Per token: target(x) − target(x with that token replaced by the baseline token); 0 if special."""
    t = res.target
    idx = t["id"] if "id" in t else t["ids"][row]
    pos = t.get("positions", [None])[row]
    ids = torch.tensor([res.token_ids])
    fx = _score(model, ids, pos, idx)
    out = []
    for j, special in enumerate(res.special_mask):
        if special:
            out.append(0.0)
            continue
        y = ids.clone()
        y[0, j] = baseline_id
        out.append(fx - _score(model, y, pos, idx))
    return torch.tensor(out, dtype=D64)


@pytest.mark.parametrize("name", FAMILIES)
def test_every_family(name):
    model, tok, ex = zoo(name)
    res = ex.explain(TEXT, method="sig", n_steps=8)
    assert isinstance(res, Result) and res.method == "sig"
    n = len(res.tokens)
    assert res.scores.shape == (n,) and res.scores.dtype == D64
    assert "movie" in res.tokens
    special = torch.tensor(res.special_mask)
    assert torch.equal(res.scores[special], torch.zeros(int(special.sum()), dtype=D64))
    assert (res.scores[~special] != 0).all()
    steps = torch.tensor(res.extras["steps"])
    assert torch.equal(steps, (~special).long() * 8)
    assert isinstance(res.extras["passes"], int) and res.extras["passes"] >= 1
    err = torch.tensor(res.extras["completeness_error"], dtype=D64)
    assert err.shape == (n,) and not err[special].any()
    # the reported per-token completeness error is the true one (closed form on input ids)
    want = res.scores - closed_form(model, res, _default_baseline_id(tok, model))
    torch.testing.assert_close(err, want, atol=1e-9, rtol=0)
    assert res.delta == pytest.approx(float(err.abs().max()), abs=1e-15)


def test_encoder_side_of_seq2seq_models():
    """bart and t5 attribute the encoder tokens only, reading the first decoder position."""
    for name in ("bart", "t5"):
        model, tok, ex = zoo(name)
        res = ex.explain(TEXT, method="sig", n_steps=4)
        enc = tok(TEXT)["input_ids"]
        assert res.token_ids == enc and res.target["kind"] == "seq2seq"
        assert res.scores.shape == (len(enc),)


def test_bert_per_token_completeness_float64():
    model, tok, ex = zoo("bert")
    res = ex.explain(TEXTS[2], method="sig", n_steps=50)
    err = torch.tensor(res.extras["completeness_error"])
    assert err.abs().max() < 1e-8 and res.delta < 1e-8
    want = closed_form(model, res, tok.mask_token_id)
    assert want.abs().max() > 1e-3
    torch.testing.assert_close(res.scores, want, atol=1e-8, rtol=0)


@pytest.mark.parametrize("name", CAUSAL)
def test_continuation_one_row_per_token(name):
    model, tok, ex = zoo(name)
    prompt, cont = "the movie was", " great fun"
    res = ex.explain(prompt, method="sig", target=cont, n_steps=8)
    cont_ids = tok(cont.strip(), add_special_tokens=False)["input_ids"]
    assert res.rows == ["great", "fun"] and res.target["ids"] == cont_ids
    assert res.tokens[-2:] == ["great", "fun"]  # the whole continuation is appended
    n = len(res.tokens)
    assert res.scores.shape == (2, n)
    steps = torch.tensor(res.extras["steps"])
    assert steps.shape == (2, n)
    special = torch.tensor(res.special_mask)
    assert not res.scores[:, special].any()
    positions = res.target["positions"]
    assert positions == [n - 3, n - 2]
    # causal: the entries after a row's read position are empty and never evaluated
    assert torch.isnan(res.scores[0, n - 2 :]).all() and torch.isnan(res.scores[1, n - 1])
    assert steps[0, n - 2 :].eq(0).all() and steps[1, n - 1] == 0
    # each row is the next-token explanation of its prefix
    first = ex.explain(prompt, method="sig", target=cont_ids[0], n_steps=8)
    torch.testing.assert_close(res.scores[0, : n - 2], first.scores, atol=1e-10, rtol=0)
    second = ex.explain(prompt + " great", method="sig", target=cont_ids[1], n_steps=8)
    torch.testing.assert_close(res.scores[1, : n - 1], second.scores, atol=1e-10, rtol=0)
    # and each row satisfies the per-token identity as reported
    err = torch.tensor(res.extras["completeness_error"], dtype=D64)
    for k in range(2):
        want = res.scores[k] - closed_form(model, res, _default_baseline_id(tok, model), row=k)
        valid = ~torch.isnan(res.scores[k])
        torch.testing.assert_close(err[k][valid], want[valid], atol=1e-9, rtol=0)


@pytest.mark.parametrize("name", FAMILIES)
def test_batched_equals_one_by_one(name):
    _, _, ex = zoo(name)
    many = ex.explain(TEXTS, method="sig", n_steps=6, batch_size=3)
    assert len(many) == len(TEXTS)
    for got, text in zip(many, TEXTS):
        one = ex.explain(text, method="sig", n_steps=6)
        assert got.tokens == one.tokens and got.target == one.target
        torch.testing.assert_close(got.scores, one.scores, atol=1e-10, rtol=0)
        assert got.extras["steps"] == one.extras["steps"]
        torch.testing.assert_close(
            torch.tensor(got.extras["completeness_error"]),
            torch.tensor(one.extras["completeness_error"]),
            atol=1e-10,
            rtol=0,
        )


# --------------------------------------------------------------------------- baseline token


def test_default_baseline_is_mask_when_there_is_one():
    _, tok, ex = zoo("bert")
    assert tok.mask_token_id is not None and tok.pad_token_id is not None
    default = ex.explain(TEXT, method="sig", n_steps=6)
    assert torch.equal(default.scores, ex.explain(TEXT, method="sig", n_steps=6, baseline="mask").scores)
    assert not torch.allclose(default.scores, ex.explain(TEXT, method="sig", n_steps=6, baseline="pad").scores)


@pytest.mark.parametrize("name", ["gpt2", "llama"])
def test_default_baseline_on_decoders_is_unk(name):
    model, tok, ex = zoo(name)
    assert tok.mask_token_id is None and tok.pad_token_id is not None
    default = ex.explain(TEXT, method="sig", n_steps=6)
    assert default.extras["baseline_id"] == tok.unk_token_id
    assert torch.equal(default.scores, ex.explain(TEXT, method="sig", n_steps=6, baseline="unk").scores)
    assert not torch.allclose(default.scores, ex.explain(TEXT, method="sig", n_steps=6, baseline="pad").scores)
    if name == "llama":  # its pad embedding is zero: a steep integrand, never the default
        assert model.get_input_embeddings().weight[tok.pad_token_id].abs().max() == 0


def _gpt2_without(*roles: str):
    model, _, _ = zoo("gpt2")
    tok = make_tokenizer("gpt2")
    for role in roles:
        setattr(tok, role, None)
    return model, tok


def test_default_baseline_is_unk_without_mask_and_pad():
    model, tok = _gpt2_without("pad_token")
    assert tok.mask_token_id is None and tok.pad_token_id is None and tok.unk_token_id is not None
    ex = Explainer(model, tok)
    # given as a BatchEncoding: no padding is needed
    enc = tok(TEXT, return_tensors="pt")
    (default,) = ex.explain(enc, method="sig", n_steps=6)
    (unk,) = ex.explain(enc, method="sig", n_steps=6, baseline="unk")
    (zero,) = ex.explain(enc, method="sig", n_steps=6, baseline="zero")
    assert torch.equal(default.scores, unk.scores) and not torch.allclose(default.scores, zero.scores)


def test_pad_less_tokenizer_explains_a_plain_string():
    """Real GPT-2/Llama tokenizers have no pad token; one text needs no padding."""
    model, tok = _gpt2_without("pad_token")
    ex = Explainer(model, tok)
    res = ex.explain(TEXT, method="sig", n_steps=6)
    (want,) = ex.explain(tok(TEXT, return_tensors="pt"), method="sig", n_steps=6)
    torch.testing.assert_close(res.scores, want.scores, atol=0, rtol=0)


def test_decoder_without_unk_uses_eos_and_without_any_special_the_zero_embedding():
    model, tok = _gpt2_without("pad_token", "unk_token")
    ex = Explainer(model, tok)
    enc = tok(TEXT, return_tensors="pt")
    (default,) = ex.explain(enc, method="sig", n_steps=6)
    (eos,) = ex.explain(enc, method="sig", n_steps=6, baseline=tok.eos_token_id)
    assert torch.equal(default.scores, eos.scores)
    model, tok = _gpt2_without("pad_token", "unk_token", "eos_token", "bos_token")
    ex = Explainer(model, tok)
    (default,) = ex.explain(enc, method="sig", n_steps=6)
    (zero,) = ex.explain(enc, method="sig", n_steps=6, baseline="zero")
    assert torch.equal(default.scores, zero.scores) and default.extras["baseline_id"] is None


def test_baseline_token_id_and_keep_special():
    model, tok, ex = zoo("bert")
    unk = tok.unk_token_id
    res = ex.explain(TEXT, method="sig", n_steps=30, baseline=unk)
    torch.testing.assert_close(res.scores, closed_form(model, res, unk), atol=1e-7, rtol=0)
    # with keep_special=False the [CLS]/[SEP] tokens are attributed too
    loose = ex.explain(TEXT, method="sig", n_steps=6, keep_special=False)
    special = torch.tensor(loose.special_mask)
    assert (loose.scores[special] != 0).all()
    assert (torch.tensor(loose.extras["steps"]) == 6).all()


# --------------------------------------------------------------------------- options


def test_auto_steps_through_the_explainer():
    _, _, ex = zoo("bert")
    res = ex.explain(TEXTS[2], method="sig", n_steps="auto", tol=1e-7)
    special = torch.tensor(res.special_mask)
    steps = torch.tensor(res.extras["steps"])
    err = torch.tensor(res.extras["completeness_error"])
    assert (steps[special] == 0).all() and (steps[~special] >= 4).all() and steps.max() < 50
    assert err.abs().max() <= 1e-7 and res.delta <= 1e-7
    fixed = ex.explain(TEXTS[2], method="sig", n_steps=50)
    torch.testing.assert_close(res.scores, fixed.scores, atol=1e-6, rtol=0)


def test_internal_batch_size_changes_passes_not_scores():
    _, _, ex = zoo("bert")
    whole = ex.explain(TEXT, method="sig", n_steps=5)
    small = ex.explain(TEXT, method="sig", n_steps=5, internal_batch_size=3)
    torch.testing.assert_close(small.scores, whole.scores, atol=1e-12, rtol=0)
    assert small.extras["passes"] == -(-4 * 5 // 3) > whole.extras["passes"]


def test_bad_options():
    _, _, ex = zoo("bert")
    with pytest.raises(ValueError, match="n_steps"):
        ex.explain(TEXT, method="sig", n_steps=0)
    with pytest.raises(TypeError, match="unknown option"):
        ex.explain(TEXT, method="sig", steps=5)


def test_every_sig_option_is_reachable_from_explain():
    """``Explainer.explain`` owns ``method`` (and ``target``, ``batch_size``): a method option with one
    of those names can never be passed, so the integration rule of "sig" must be named otherwise."""
    import inspect

    from hfattr.explainer import get_method

    fn = get_method("sig").fn
    options = {n for n, p in inspect.signature(fn).parameters.items() if p.kind is p.KEYWORD_ONLY}
    own = {n for n in inspect.signature(Explainer.explain).parameters if n not in ("self", "options")}
    assert not options & own, f"options {sorted(options & own)} are shadowed by explain()'s own parameters"


# --------------------------------------------------------------------------- prefix reuse, integration rule


@pytest.mark.parametrize("name", CAUSAL)
@pytest.mark.parametrize(
    "integration,ibs",
    [
        ("gausslegendre", None),
        ("gausslegendre", 3),
        ("riemann_middle", 5),
        ("riemann_left", 7),
        ("riemann_right", 3),
        ("riemann_right", 7),
        ("riemann_trapezoid", 5),
    ],
)
def test_prefix_reuse_equals_full_computation(name, integration, ibs):
    """On causal LMs the default (fast) path reuses the prefix's key/value cache; it must give the
    numbers of the full computation for every rule and every chunking, including rules whose last
    point is the input itself (alpha = 1: the perturbed token then equals the original)."""
    _, _, ex = zoo(name)
    kw = dict(method="sig", n_steps=4, integration=integration, internal_batch_size=ibs)
    full = ex.explain(TEXT, fast=False, **kw)
    fast = ex.explain(TEXT, **kw)
    torch.testing.assert_close(fast.scores, full.scores, atol=1e-10, rtol=0)
    torch.testing.assert_close(
        torch.tensor(fast.extras["completeness_error"]),
        torch.tensor(full.extras["completeness_error"]),
        atol=1e-10,
        rtol=0,
    )


@pytest.mark.parametrize("name", CAUSAL)
def test_prefix_reuse_with_continuation_and_auto(name):
    _, _, ex = zoo(name)
    kw = dict(method="sig", target=" great fun", n_steps="auto", tol=1e-4, internal_batch_size=5)
    fast, full = ex.explain("the movie was", **kw), ex.explain("the movie was", fast=False, **kw)
    torch.testing.assert_close(fast.scores, full.scores, atol=1e-10, rtol=0, equal_nan=True)
    assert fast.extras["steps"] == full.extras["steps"]


@pytest.mark.parametrize("name", ["bert", "t5"])
def test_fast_is_a_no_op_off_causal_models(name):
    _, _, ex = zoo(name)
    a = ex.explain(TEXT, method="sig", n_steps=4)
    b = ex.explain(TEXT, method="sig", n_steps=4, fast=False)
    assert torch.equal(a.scores, b.scores)


def test_integration_rule_option():
    model, tok, ex = zoo("bert")
    gl = ex.explain(TEXT, method="sig", n_steps=50)
    mid = ex.explain(TEXT, method="sig", n_steps=200, integration="riemann_middle")
    torch.testing.assert_close(mid.scores, gl.scores, atol=1e-5, rtol=0)
    assert not torch.equal(mid.scores, gl.scores)
    # the reference's trapezoid weights sum to 1 - 1/n: its completeness error shows it
    trap = ex.explain(TEXT, method="sig", n_steps=10, integration="riemann_trapezoid")
    want = closed_form(model, trap, tok.mask_token_id)
    special = torch.tensor(trap.special_mask)
    err = torch.tensor(trap.extras["completeness_error"], dtype=D64)
    torch.testing.assert_close(err, trap.scores - want, atol=1e-9, rtol=0)
    assert err[~special].abs().max() > 1e-3
    with pytest.raises(ValueError, match="gausslegendre"):
        ex.explain(TEXT, method="sig", n_steps="auto", integration="riemann_left")


def test_unknown_integration_rule_names_the_option():
    _, _, ex = zoo("bert")
    with pytest.raises(ValueError) as info:
        ex.explain(TEXT, method="sig", integration="simpson")
    assert "simpson" in str(info.value) and "gausslegendre" in str(info.value)
    assert "integration" in str(info.value), f"the message names another argument: {info.value}"
