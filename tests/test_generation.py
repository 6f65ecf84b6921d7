"""Generation attribution: ``explain(prompt, generate=N)`` gives one Result per prompt whose rows are
the generated tokens (docs/generation.md). Rows are checked against direct computations on each
row's own prefix (captum 0.8.0 FeatureAblation / IntegratedGradients, a greedy loop, LRP per prefix),
against the teacher-forced continuation route, across batching, and on seq2seq models."""

from __future__ import annotations

import pytest
import torch

from hfattr import Explainer
from hfattr.testing import make_tokenizer, tiny

F64 = torch.float64
PROMPT = "the movie was"
PROMPTS = ["the movie was", "i did not like this film because", "a"]
_CACHE: dict[str, tuple] = {}


def zoo(name: str):
    if name not in _CACHE:
        model, tok = tiny(name, dtype=F64)
        _CACHE[name] = (model, tok, Explainer(model, tok))
    return _CACHE[name]


def baseline_id(tok) -> int:
    return next(i for i in (tok.mask_token_id, tok.pad_token_id, tok.unk_token_id) if i is not None)


def greedy(model, ids: list[int], n: int) -> list[int]:
    """A plain greedy loop without cache: the oracle for ``generate``."""
    out = list(ids)
    with torch.no_grad():
        for _ in range(n):
            nxt = int(model(input_ids=torch.tensor([out]), use_cache=False).logits[0, -1].argmax())
            out.append(nxt)
    return out[len(ids) :]


def empty_mask(res) -> torch.Tensor:
    """True where a generation Result's entry must be empty (after the row's read position)."""
    read = torch.tensor(res.target["positions"]).unsqueeze(1)
    return torch.arange(len(res.tokens)).unsqueeze(0) > read


def check_empty(res) -> torch.Tensor:
    empty = empty_mask(res)
    assert torch.isnan(res.scores[empty]).all(), "entries after a row's position must be NaN"
    assert torch.isfinite(res.scores[~empty]).all(), "every other entry must be finite"
    return empty


def row_value(model, ids: torch.Tensor, target: int):
    """logit of ``target`` read at the last position of ``ids``, as a function of embeddings."""

    def f(e):
        return model(inputs_embeds=e, use_cache=False).logits[:, -1, target]

    return f


# --------------------------------------------------------------------------- generation itself
@pytest.mark.parametrize("name", ["gpt2", "llama"])
def test_generate_is_greedy_and_keeps_text_probabilities_and_ranks(name):
    model, tok, ex = zoo(name)
    res = ex.explain(PROMPT, generate=4)
    p_ids = tok(PROMPT)["input_ids"]
    gen = greedy(model, p_ids, 4)
    assert res.target["kind"] == "generation" and res.target["ids"] == gen
    assert res.token_ids == p_ids + gen and res.rows == tok.convert_ids_to_tokens(gen)
    assert res.target["prompt_length"] == len(p_ids) and res.target["score"] == "logit"
    assert res.target["positions"] == list(range(len(p_ids) - 1, len(p_ids) + 3))
    assert res.target["generated_text"] == tok.decode(gen, skip_special_tokens=True)
    assert res.scores.shape == (4, len(p_ids) + 4)
    assert res.is_generation
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([p_ids + gen])).logits[0, len(p_ids) - 1 : -1]
    logp = logits.log_softmax(-1)
    picked = logp[torch.arange(4), gen]
    steps = res.extras["step_scores"]
    torch.testing.assert_close(torch.tensor(steps["log_prob"], dtype=F64), picked, atol=1e-12, rtol=0)
    torch.testing.assert_close(torch.tensor(res.probability, dtype=F64), picked.exp(), atol=1e-12, rtol=0)
    torch.testing.assert_close(
        torch.tensor(steps["entropy"], dtype=F64), -(logp.exp() * logp).sum(-1), atol=1e-12, rtol=0
    )
    assert steps["rank"] == [1, 1, 1, 1]  # greedy: every generated token is the argmax
    check_empty(res)


def test_generation_kwargs_sampling_with_a_seed_is_reproducible_and_ranks_are_recorded():
    model, tok, ex = zoo("gpt2")
    kw = dict(generate=5, generation_kwargs={"do_sample": True, "top_k": 0, "temperature": 3.0})
    a, b = ex.explain(PROMPT, seed=3, **kw), ex.explain(PROMPT, seed=3, **kw)
    assert a.target["ids"] == b.target["ids"]
    torch.testing.assert_close(a.scores, b.scores, equal_nan=True, atol=0, rtol=0)
    p_ids = tok(PROMPT)["input_ids"]
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([a.token_ids])).logits[0, len(p_ids) - 1 : -1]
    ids = torch.tensor(a.target["ids"])
    want = (logits > logits[torch.arange(5), ids].unsqueeze(1)).sum(-1) + 1
    assert a.extras["step_scores"]["rank"] == want.tolist()
    assert a.options["seed"] == 3 and a.options["generate"] == 5


def test_max_new_tokens_equals_generate_and_eos_ends_a_generation():
    model, tok, ex = zoo("llama")
    a, b = ex.explain(PROMPT, generate=3), ex.explain(PROMPT, max_new_tokens=3)
    assert a.target["ids"] == b.target["ids"]
    first = a.target["ids"][0]
    r = ex.explain(PROMPT, generate=4, generation_kwargs={"eos_token_id": first})
    assert r.target["ids"] == [first] and r.scores.shape == (1, len(r.tokens))


@pytest.mark.parametrize(
    "bad, match",
    [
        (dict(generate=0), "generate .* must be an int >= 1"),
        (dict(generate=2, target=" great"), "either target="),
        (dict(generate=2, generation_kwargs={"input_ids": 1}), "must not set"),
        (dict(generate=2, generation_kwargs=[1]), "generation_kwargs must be a dict"),
        (dict(seed=1), "only apply with generate"),
        (dict(generate=2, max_new_tokens=3), "disagree"),
        (dict(score="contrast"), "needs contrast="),
        (dict(target=" great", contrast=" good", score="logit"), "contrast= needs a contrastive score"),
        (dict(target=" great and", contrast=" good"), "contrast has 1 token.*target has 2"),
        (dict(score="nope"), "score must be one of"),
    ],
)
def test_bad_generation_arguments_are_refused_before_any_work(bad, match):
    _, _, ex = zoo("gpt2")
    with pytest.raises((ValueError, TypeError), match=match):
        ex.explain(PROMPT, **bad)


def test_generation_past_the_position_limit_is_refused_before_any_work():
    model, tok, ex = zoo("gpt2")
    limit = model.config.n_positions
    with pytest.raises(ValueError, match=f"exceeds the model's {limit} positions"):
        ex.explain(PROMPT, generate=limit)


def test_generate_needs_a_language_model():
    model, tok = tiny("bert", dtype=F64)
    with pytest.raises(ValueError, match="causal-LM or seq2seq"):
        Explainer(model, tok).explain(PROMPT, generate=2)


# --------------------------------------------------------------------------- rows = own prefix
@pytest.mark.parametrize("name", ["gpt2", "llama"])
def test_generated_rows_equal_the_teacher_forced_continuation(name):
    _, _, ex = zoo(name)
    for method, kw in [("ablation", {}), ("sig", {"n_steps": 6}), ("lrp", {})]:
        gen = ex.explain(PROMPT, method=method, generate=4, **kw)
        given = ex.explain(PROMPT, method=method, target=gen.target["generated_text"], **kw)
        assert given.target["kind"] == "continuation" and given.target["ids"] == gen.target["ids"]
        assert given.tokens == gen.tokens and given.rows == gen.rows
        torch.testing.assert_close(given.scores, gen.scores, atol=1e-10, rtol=0, equal_nan=True)


@pytest.mark.parametrize("name", ["gpt2", "llama"])
def test_ablation_rows_equal_captum_feature_ablation_on_each_prefix(name):
    from captum.attr import FeatureAblation

    model, tok, ex = zoo(name)
    res = ex.explain(PROMPT, generate=4)
    empty = check_empty(res)
    emb = model.get_input_embeddings()
    special = set(tok.all_special_ids)
    base = emb(torch.tensor([baseline_id(tok)])).detach()
    P = res.target["prompt_length"]
    for j, g in enumerate(res.target["ids"]):
        ids = torch.tensor([res.token_ids[: P + j]])
        e = emb(ids).detach()
        L = ids.shape[1]
        mask = torch.arange(L).view(1, L, 1)
        keep = torch.tensor([t in special for t in ids[0].tolist()]).view(1, L, 1)
        # special tokens are kept fixed: their baseline is their own embedding
        baselines = torch.where(keep, e, base.expand_as(e))
        want = FeatureAblation(row_value(model, ids, g)).attribute(e, baselines=baselines, feature_mask=mask)
        torch.testing.assert_close(res.scores[j, :L], want[0, :, 0], atol=1e-10, rtol=0)
    assert empty.sum() == 4 * 5 / 2 - 4 + 4  # 1 + 2 + 3 + 4 empty cells


@pytest.mark.parametrize("name", ["gpt2", "llama"])
def test_sig_rows_equal_captum_integrated_gradients_per_position_on_each_prefix(name):
    from captum.attr import IntegratedGradients

    model, tok, ex = zoo(name)
    res = ex.explain(PROMPT, method="sig", generate=3, n_steps=10)
    check_empty(res)
    assert res.extras["baseline_id"] == tok.unk_token_id  # SIG's default on decoders (non-zero embedding)
    emb = model.get_input_embeddings()
    special = set(tok.all_special_ids)
    base = emb(torch.tensor([tok.unk_token_id])).detach()[0]
    P = res.target["prompt_length"]
    for j, g in enumerate(res.target["ids"]):
        ids = res.token_ids[: P + j]
        e = emb(torch.tensor([ids])).detach()
        ig = IntegratedGradients(row_value(model, None, g), multiply_by_inputs=True)
        for i, t in enumerate(ids):
            if t in special:
                assert res.scores[j, i] == 0
                continue
            b = e.clone()
            b[0, i] = base  # SIG at position i == IG from "x with i at the baseline", read at i
            want = ig.attribute(e, baselines=b, n_steps=10, method="gausslegendre")[0, i].sum()
            # captum multiplies the gradients by float32 step weights: agreement to ~1e-8
            torch.testing.assert_close(res.scores[j, i], want, atol=1e-7, rtol=0)


@pytest.mark.parametrize("name", ["gpt2", "llama"])
def test_lrp_and_ablation_rows_equal_their_run_on_each_prefix(name):
    _, tok, ex = zoo(name)
    for method in ("lrp", "ablation"):
        res = ex.explain(PROMPT, method=method, generate=3)
        check_empty(res)
        P = res.target["prompt_length"]
        for j, g in enumerate(res.target["ids"]):
            prefix = res.token_ids[: P + j]
            text = tok.decode(prefix, skip_special_tokens=True)
            assert tok(text)["input_ids"] == prefix  # the zoo's word-level tokenizer round-trips
            one = ex.explain(text, method=method, target=g)
            assert one.tokens == res.tokens[: P + j]
            torch.testing.assert_close(res.scores[j, : P + j], one.scores, atol=1e-10, rtol=0)


def test_neuron_gradient_rows_are_the_neuron_at_each_generation_step():
    model, tok, ex = zoo("gpt2")
    from hfattr import resolve_sites

    site = "blocks.1.mlp"
    res = ex.explain(PROMPT, method="neuron_gradient", site=site, neuron=5, reduce="sum", generate=3)
    check_empty(res)
    module = resolve_sites(model, site)[0][1]
    P = res.target["prompt_length"]
    e = model.get_input_embeddings()(torch.tensor([res.token_ids])).detach()
    for j in range(3):
        x = e.clone().requires_grad_(True)
        kept = []
        h = module.register_forward_hook(lambda m, a, o, kept=kept: kept.append(o))
        try:
            model(inputs_embeds=x, use_cache=False)
        finally:
            h.remove()
        (grad,) = torch.autograd.grad(kept[0][0, P - 1 + j, 5], x)
        torch.testing.assert_close(res.scores[j, : P + j], grad[0, : P + j].sum(-1), atol=1e-10, rtol=0)
        assert grad[0, P + j :].abs().max() == 0  # causal: the later tokens have no gradient


# --------------------------------------------------------------------------- batching
@pytest.mark.parametrize("side", ["right", "left"])
@pytest.mark.parametrize("method, kw", [("ablation", {}), ("sig", {"n_steps": 4}), ("lrp", {})])
def test_batched_prompts_of_different_lengths_equal_one_by_one(method, kw, side):
    model, tok, ex = zoo("llama")
    padded = Explainer(model, make_tokenizer("llama", padding_side=side))
    batched = padded.explain(PROMPTS, method=method, generate=3, batch_size=3, **kw)
    for prompt, rb in zip(PROMPTS, batched):
        rs = ex.explain(prompt, method=method, generate=3, **kw)
        assert rb.tokens == rs.tokens and rb.target == rs.target and rb.rows == rs.rows
        torch.testing.assert_close(rb.scores, rs.scores, atol=1e-10, rtol=0, equal_nan=True)
        assert rb.extras["step_scores"] == pytest.approx(rs.extras["step_scores"], abs=1e-12)
        check_empty(rb)


# --------------------------------------------------------------------------- seq2seq
@pytest.mark.parametrize("name", ["t5", "bart"])
def test_seq2seq_generated_rows_equal_a_direct_computation(name):
    model, tok, ex = zoo(name)
    res = ex.explain(PROMPT, generate=3)
    src = tok(PROMPT)["input_ids"]
    start = model.config.decoder_start_token_id
    with torch.no_grad():
        gen = model.generate(input_ids=torch.tensor([src]), max_new_tokens=3)[0].tolist()
    gen = gen[1:] if gen[0] == start else gen
    eos = tok.eos_token_id
    gen = gen[: gen.index(eos) + 1] if eos in gen else gen
    assert res.target["kind"] == "generation" and res.target["ids"] == gen
    assert res.tokens == tok.convert_ids_to_tokens(src) and res.scores.shape == (len(gen), len(src))
    assert torch.isfinite(res.scores).all()  # every source token is seen by every row
    dec = torch.tensor([[start] + gen[:-1]])
    emb = model.get_input_embeddings()
    e = emb(torch.tensor([src])).detach()
    base = emb(torch.tensor([baseline_id(tok)])).detach()[0]
    special = set(tok.all_special_ids)

    def value(x):
        out = model(inputs_embeds=x, decoder_input_ids=dec.expand(x.shape[0], -1), use_cache=False).logits
        return out[0, torch.arange(len(gen)), gen]

    with torch.no_grad():
        ref = value(e)
        for i, t in enumerate(src):
            if t in special:
                assert res.scores[:, i].abs().max() == 0
                continue
            x = e.clone()
            x[0, i] = base
            torch.testing.assert_close(res.scores[:, i], ref - value(x), atol=1e-10, rtol=0)
    from captum.attr import IntegratedGradients

    left = Explainer(model, make_tokenizer(name, padding_side="left"))
    batched = left.explain([PROMPT, "a good film and a"], generate=3, batch_size=2)
    assert batched[0].target == res.target
    torch.testing.assert_close(batched[0].scores, res.scores, atol=1e-10, rtol=0)
    sig = ex.explain(PROMPT, method="sig", generate=3, n_steps=8)
    assert sig.target["ids"] == gen and torch.isfinite(sig.scores).all()
    i = next(k for k, t in enumerate(src) if t not in special)
    b = e.clone()
    b[0, i] = base
    for j in range(len(gen)):  # SIG at position i == IG from "x with i at the baseline", read at i

        def row(x, j=j):
            return model(inputs_embeds=x, decoder_input_ids=dec.expand(x.shape[0], -1), use_cache=False).logits[
                :, j, gen[j]
            ]

        ig = IntegratedGradients(row)
        want = ig.attribute(e, baselines=b, n_steps=8, method="gausslegendre")[0, i].sum()
        torch.testing.assert_close(sig.scores[j, i], want, atol=1e-7, rtol=0)


# --------------------------------------------------------------------------- contrast and scores
@pytest.mark.parametrize("method, kw", [("ablation", {}), ("sig", {"n_steps": 6}), ("lrp", {})])
def test_contrast_equals_the_difference_of_two_single_target_explanations(method, kw):
    # gpt2: the tiny float64 llama's backward is linear in the output only to ~5e-7 (its own rounding)
    model, tok, ex = zoo("gpt2")
    great, bad = tok.convert_tokens_to_ids("great"), tok.convert_tokens_to_ids("bad")
    both = ex.explain(PROMPT, method=method, target=great, contrast=[bad], **kw)
    a = ex.explain(PROMPT, method=method, target=great, **kw)
    b = ex.explain(PROMPT, method=method, target=bad, **kw)
    assert both.target.get("id") == great
    torch.testing.assert_close(both.scores, a.scores - b.scores, atol=1e-10, rtol=0)
    # on a generation: every row's contrast, the same prefix, equals logit(target) minus logit(contrast)
    gen = ex.explain(PROMPT, method=method, generate=3, **kw)
    alt = [bad, great, bad]
    con = ex.explain(PROMPT, method=method, target=gen.target["generated_text"], contrast=alt, **kw)
    assert con.target["score"] == "contrast" and con.target["contrast_ids"] == alt
    assert con.target["contrast_tokens"] == tok.convert_ids_to_tokens(alt)
    from hfattr.hf.scores import register_score

    table = torch.tensor(alt)
    handle = register_score(
        "alt_logit",
        lambda logits, ids, step: logits.gather(-1, table.to(logits.device)[step].unsqueeze(-1)).squeeze(-1),
    )
    try:
        foil = (
            ex.explain(PROMPT, method=method, target=gen.target["generated_text"], score="alt_logit", **kw)
            if method != "lrp"
            else None
        )
    finally:
        handle.remove()
    if foil is not None:
        torch.testing.assert_close(con.scores, gen.scores - foil.scores, atol=1e-10, rtol=0, equal_nan=True)
    with pytest.raises(ValueError, match="score must be one of"):
        ex.explain(PROMPT, target=great, score="alt_logit")


def test_contrast_prob_and_registered_scores_on_the_unperturbed_input():
    model, tok, ex = zoo("gpt2")
    great, bad = tok.convert_tokens_to_ids("great"), tok.convert_tokens_to_ids("bad")
    r = ex.explain(PROMPT, target=great, contrast="bad", score="contrast_prob")
    a = ex.explain(PROMPT, target=great, score="prob")
    b = ex.explain(PROMPT, target=bad, score="prob")
    torch.testing.assert_close(r.scores, a.scores - b.scores, atol=1e-12, rtol=0)
    from hfattr.hf.scores import register_score

    h = register_score("twice", lambda logits, ids, step: 2 * logits.gather(-1, ids.unsqueeze(-1)).squeeze(-1))
    try:
        with pytest.raises(ValueError, match="already registered"):
            register_score("twice", lambda *a: None)
        two = ex.explain(PROMPT, target=great, score="twice")
    finally:
        h.remove()
    torch.testing.assert_close(two.scores, 2 * ex.explain(PROMPT, target=great).scores, atol=1e-12, rtol=0)
    h = register_score("bad_shape", lambda logits, ids, step: logits)
    try:
        with pytest.raises(ValueError, match="one value per row"):
            ex.explain(PROMPT, target=great, score="bad_shape")
    finally:
        h.remove()
    with pytest.raises(ValueError, match="lrp explains"):
        ex.explain(PROMPT, method="lrp", target=great, score="prob")


def test_layer_ablation_on_a_generation_sums_the_generated_rows():
    _, _, ex = zoo("gpt2")
    r = ex.explain(PROMPT, method="layer_ablation", sites="mlp", generate=3)
    given = ex.explain(PROMPT, method="layer_ablation", sites="mlp", target=r.target["generated_text"])
    assert r.target["kind"] == "generation_sum" and not r.is_generation  # rows are sites
    assert r.rows == ["blocks.0.mlp", "blocks.1.mlp"] and torch.isfinite(r.scores).all()
    torch.testing.assert_close(r.scores, given.scores, atol=1e-10, rtol=0)


def test_register_score_is_exported_and_lists_the_built_ins():
    import hfattr

    assert {"logit", "prob", "log_prob", "contrast", "contrast_prob"} <= set(hfattr.list_scores())
    h = hfattr.register_score("zero", lambda logits, ids, step: logits[..., 0] * 0)
    assert "zero" in hfattr.list_scores()
    h.remove()
    h.remove()  # idempotent
    assert "zero" not in hfattr.list_scores()
