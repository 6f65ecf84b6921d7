"""Explainer end to end on the tiny zoo: shapes, values against direct transformers computations,
batching, word granularity, JSON/HTML, model state, loading, accelerate offload and chat prompts.

Direct computations ("oracles") below use plain ``model(inputs_embeds=...)`` calls and the test's
own forward hooks; tolerances are 1e-6 in float64 and 1e-5 for batched-vs-single in float32.
"""

from __future__ import annotations

import functools
import html as html_lib
from html.parser import HTMLParser
from typing import Callable

import pytest
import torch

from hfattr import Explainer, Result, resolve_sites
from hfattr.core import hook_counts
from hfattr.testing import ZOO, make_tokenizer, save_tiny, tiny

TEXT = "the movie was great"
SEQ2SEQ = ("bart", "t5")
METHODS = ("ablation", "layer_ablation", "neuron_gradient")
F64 = torch.float64


@functools.lru_cache(maxsize=None)
def zoo(name: str, task: str = "auto", dtype: torch.dtype = torch.float32):
    """Shared (read-only) tiny models; tests that change a model build their own with ``tiny``."""
    return tiny(name, task, dtype=dtype)


def attn_sites(name: str) -> str:
    return "encoder.attention" if name in SEQ2SEQ else "attention"


def neuron_site(name: str) -> str:
    return "encoder.blocks.0.mlp" if name in SEQ2SEQ else "blocks.0.mlp"


def method_options(name: str, method: str) -> dict:
    if method == "layer_ablation":
        return {"sites": attn_sites(name)}
    if method == "neuron_gradient":
        return {"site": neuron_site(name), "neuron": 3}
    return {}


# --------------------------------------------------------------------------- direct computations
def first_tensor(out):
    return out[0] if isinstance(out, (tuple, list)) else out


def zero_at(positions):
    """Forward hook setting the module's (first) output tensor to 0 at ``positions``."""

    def hook(module, args, out):
        t = first_tensor(out).clone()
        t[:, positions] = 0
        if isinstance(out, tuple):
            return (t, *out[1:])
        return t

    return hook


def ablation_oracle(
    model, ids: torch.Tensor, value: Callable, baseline_id: int | None, groups: list[list[int]]
) -> torch.Tensor:
    """``value(e) - value(e with each group's embeddings replaced by the baseline's)`` -> (R, L)."""
    emb = model.get_input_embeddings()
    with torch.no_grad():
        e = emb(ids)
        base = torch.zeros_like(e[0, 0]) if baseline_id is None else emb(torch.tensor([[baseline_id]]))[0, 0]
        ref = value(e)
        out = torch.zeros(ref.shape[0], ids.shape[1], dtype=ref.dtype)
        for group in groups:
            e2 = e.clone()
            e2[0, group] = base
            diff = ref - value(e2)
            for i in group:
                out[:, i] = diff
    return out


def layer_oracle(model, ids: torch.Tensor, value: Callable, modules) -> tuple[torch.Tensor, torch.Tensor]:
    """Grid (S, L) of ``sum(value(x)) - sum(value(x with the site output at i set to 0))`` and
    the whole-site scores (S,)."""
    emb = model.get_input_embeddings()
    L = ids.shape[1]
    with torch.no_grad():
        e = emb(ids)
        ref = value(e).sum()
        grid = torch.zeros(len(modules), L, dtype=ref.dtype)
        whole = torch.zeros(len(modules), dtype=ref.dtype)
        for s, module in enumerate(modules):
            for i in range(L):
                h = module.register_forward_hook(zero_at([i]))
                try:
                    grid[s, i] = ref - value(e).sum()
                finally:
                    h.remove()
            h = module.register_forward_hook(zero_at(slice(None)))
            try:
                whole[s] = ref - value(e).sum()
            finally:
                h.remove()
    return grid, whole


def neuron_oracle(model, ids: torch.Tensor, run: Callable, module, neuron: int, position, reduce: str):
    """Autograd gradient of the site's neuron w.r.t. ``inputs_embeds``, reduced per token -> (L,)."""
    e = model.get_input_embeddings()(ids).detach().requires_grad_(True)
    store = {}
    h = module.register_forward_hook(lambda m, a, o: store.__setitem__("v", first_tensor(o)))
    try:
        run(e)
    finally:
        h.remove()
    v = store["v"]
    val = v[0, :, neuron].sum() if position == "all" else v[0, position, neuron]
    (g,) = torch.autograd.grad(val, e)
    g, e = g[0].detach(), e[0].detach()
    if reduce == "norm":
        return g.norm(dim=-1)
    if reduce == "sum":
        return g.sum(-1)
    return (g * e).sum(-1)


def enc_inputs(tok, text: str):
    out = tok(text, return_tensors="pt")
    return out["input_ids"], out["attention_mask"], out.get("token_type_ids")


def default_baseline(tok) -> int:
    """The documented default baseline: the first of the mask, pad and unk tokens."""
    return next(i for i in (tok.mask_token_id, tok.pad_token_id, tok.unk_token_id) if i is not None)


def token_groups(tok, ids: torch.Tensor, *, keep_special: bool = True) -> list[list[int]]:
    special = set(tok.all_special_ids)
    return [[i] for i, t in enumerate(ids[0].tolist()) if not (keep_special and t in special)]


def close(actual, expected, atol=1e-6):
    torch.testing.assert_close(actual.to(F64), expected.to(F64), atol=atol, rtol=0)


# --------------------------------------------------------------------------- 1. shapes everywhere
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("name", list(ZOO))
def test_every_method_on_every_architecture_has_the_right_shape(name, method):
    model, tok = zoo(name)
    r = Explainer(model, tok).explain(TEXT, method=method, **method_options(name, method))
    ids = tok(TEXT)["input_ids"]
    n = len(ids)
    assert isinstance(r, Result) and r.method == method
    assert r.tokens == tok.convert_ids_to_tokens(ids)
    assert r.token_ids == ids
    assert r.special_mask == [i in tok.all_special_ids for i in ids]
    assert r.scores.shape[-1] == n == r.n_tokens
    assert torch.isfinite(r.scores).all()
    special = torch.tensor(r.special_mask)
    if method == "ablation":
        assert r.scores.shape == (n,)
        assert torch.all(r.scores[special] == 0)
        assert torch.all(r.scores[~special] != 0)  # a random model: every real token matters
    elif method == "layer_ablation":
        names = [s for s, _ in resolve_sites(model, attn_sites(name))]
        assert len(names) == 2  # two blocks in the zoo models
        assert r.rows == names == r.extras["sites"]
        assert r.scores.shape == (len(names), n)
        assert len(r.extras["site_scores"]) == len(names)
        assert r.scores.abs().sum() > 0
    else:
        assert r.scores.shape == (n,)
        assert r.target == {"kind": "neuron", "site": neuron_site(name), "neuron": 3, "position": n - 1}
        assert torch.all(r.scores >= 0)  # reduce="norm"
        assert r.scores[-1] > 0  # the neuron at the last token depends on the last token


@pytest.mark.parametrize("name", SEQ2SEQ)
def test_layer_ablation_default_sites_work_on_seq2seq(name):
    # The default ``sites`` should give an encoder grid on encoder-decoder models, not an error.
    model, tok = zoo(name)
    r = Explainer(model, tok).explain(TEXT, method="layer_ablation")
    assert r.rows == [s for s, _ in resolve_sites(model, "encoder.attention")]
    assert r.scores.shape == (2, len(r.tokens))


def test_list_input_gives_a_list_of_results():
    model, tok = zoo("bert")
    rs = Explainer(model, tok).explain(["a movie", "the film was bad"], batch_size=2)
    assert isinstance(rs, list) and len(rs) == 2
    assert [r.text for r in rs] == ["a movie", "the film was bad"]
    assert [r.n_tokens for r in rs] == [4, 6]


# --------------------------------------------------------------------------- 2. values = direct computation
@pytest.fixture(scope="module")
def bert64():
    return zoo("bert", "auto", F64)


def bert_value(model, tok, text, label):
    _, mask, tt = enc_inputs(tok, text)
    return lambda e: model(inputs_embeds=e, attention_mask=mask, token_type_ids=tt).logits[0, [label]]


@pytest.mark.parametrize(
    "baseline, keep_special", [(None, True), ("zero", True), ("unk", True), (7, True), ("pad", False)]
)
def test_bert_ablation_equals_direct_computation(bert64, baseline, keep_special):
    model, tok = bert64
    ex = Explainer(model, tok)
    r = ex.explain(TEXT, target="POSITIVE", baseline=baseline, keep_special=keep_special)
    ids, _, _ = enc_inputs(tok, TEXT)
    bid = {None: tok.mask_token_id, "zero": None, "unk": tok.unk_token_id, 7: 7, "pad": tok.pad_token_id}[baseline]
    expected = ablation_oracle(
        model, ids, bert_value(model, tok, TEXT, 1), bid, token_groups(tok, ids, keep_special=keep_special)
    )[0]
    assert r.scores.dtype == F64
    close(r.scores, expected)
    if not keep_special:
        assert r.scores[0] != 0 and r.scores[-1] != 0


def test_bert_default_target_is_the_predicted_class_and_matches_oracle(bert64):
    model, tok = bert64
    ids, mask, tt = enc_inputs(tok, TEXT)
    with torch.no_grad():
        pred = int(model(input_ids=ids, attention_mask=mask, token_type_ids=tt).logits[0].argmax())
    r = Explainer(model, tok).explain(TEXT)
    assert r.target["id"] == pred
    close(
        r.scores,
        ablation_oracle(model, ids, bert_value(model, tok, TEXT, pred), tok.mask_token_id, token_groups(tok, ids))[0],
    )


@pytest.mark.parametrize("sites", ["attention", "mlp", "blocks.1"])
def test_bert_layer_ablation_equals_direct_computation(bert64, sites):
    model, tok = bert64
    r = Explainer(model, tok).explain(TEXT, method="layer_ablation", sites=sites, target=1)
    ids, _, _ = enc_inputs(tok, TEXT)
    found = resolve_sites(model, sites)
    grid, whole = layer_oracle(model, ids, bert_value(model, tok, TEXT, 1), [m for _, m in found])
    assert r.rows == [s for s, _ in found]
    close(r.scores, grid)
    close(torch.tensor(r.extras["site_scores"], dtype=F64), whole)


@pytest.mark.parametrize("position, reduce", [("last", "norm"), ("all", "sum"), (1, "input_x_gradient"), (-2, "norm")])
def test_bert_neuron_gradient_equals_autograd(bert64, position, reduce):
    model, tok = bert64
    r = Explainer(model, tok).explain(
        TEXT, method="neuron_gradient", site="blocks.0.mlp", neuron=5, position=position, reduce=reduce
    )
    ids, mask, tt = enc_inputs(tok, TEXT)
    L = ids.shape[1]
    pos = {"last": L - 1, "all": "all"}.get(position, position if position != -2 else L - 2)
    module = resolve_sites(model, "blocks.0.mlp")[0][1]
    expected = neuron_oracle(
        model, ids, lambda e: model(inputs_embeds=e, attention_mask=mask, token_type_ids=tt), module, 5, pos, reduce
    )
    close(r.scores, expected)
    assert r.target["position"] == ("all" if position == "all" else pos)


@pytest.mark.parametrize("method", ["neuron_gradient", "layer_ablation", "lrp"])
def test_gemma2_eager_attention_site(method):
    """Gemma-2's eager attention returns (hidden states, attention weights): the site is the first."""
    model, tok = zoo("gemma2", "auto", F64)
    assert model.config._attn_implementation == "eager"
    ids, mask, _ = enc_inputs(tok, TEXT)
    L = ids.shape[1]
    module = resolve_sites(model, "blocks.0.attention")[0][1]
    ex = Explainer(model, tok)
    if method == "neuron_gradient":
        r = ex.explain(TEXT, method=method, site="blocks.0.attention", neuron=3)
        expected = neuron_oracle(
            model, ids, lambda e: model(inputs_embeds=e, attention_mask=mask, use_cache=False), module, 3, L - 1, "norm"
        )
        close(r.scores, expected, atol=1e-10)
    elif method == "layer_ablation":
        r = ex.explain(TEXT, method=method, sites="blocks.0.attention")
        with torch.no_grad():
            pred = int(model(input_ids=ids, attention_mask=mask).logits[0, -1].argmax())

        def value(e):
            return model(inputs_embeds=e, attention_mask=mask, use_cache=False).logits[0, -1, [pred]]

        grid, _ = layer_oracle(model, ids, value, [module])
        close(r.scores, grid, atol=1e-10)
    else:
        r = ex.explain(TEXT, method=method, site="blocks.0.attention")
        assert r.extras["site_relevance"]["blocks.0.attention"].shape == (L,)
        assert torch.isfinite(r.scores).all()


@pytest.fixture(scope="module")
def llama64():
    return zoo("llama", "auto", F64)


def test_llama_next_token_ablation_and_layers_equal_direct_computation(llama64):
    model, tok = llama64
    ex = Explainer(model, tok)
    ids, mask, _ = enc_inputs(tok, TEXT)
    with torch.no_grad():
        pred = int(model(input_ids=ids, attention_mask=mask).logits[0, -1].argmax())

    def value(e):
        return model(inputs_embeds=e, attention_mask=mask, use_cache=False).logits[0, -1, [pred]]

    r = ex.explain(TEXT)
    assert r.target["id"] == pred and r.target["kind"] == "next_token"
    close(r.scores, ablation_oracle(model, ids, value, default_baseline(tok), token_groups(tok, ids))[0])

    sites = "model.layers.*.self_attn"  # a module-name glob
    r = ex.explain(TEXT, method="layer_ablation", sites=sites)
    found = resolve_sites(model, sites)
    assert r.rows == [n for n, _ in found] == ["model.layers.0.self_attn", "model.layers.1.self_attn"]
    grid, whole = layer_oracle(model, ids, value, [m for _, m in found])
    close(r.scores, grid)
    close(torch.tensor(r.extras["site_scores"], dtype=F64), whole)

    r = ex.explain(TEXT, method="neuron_gradient", site="blocks.1.mlp", neuron=7)
    module = resolve_sites(model, "blocks.1.mlp")[0][1]
    close(
        r.scores,
        neuron_oracle(
            model, ids, lambda e: model(inputs_embeds=e, attention_mask=mask), module, 7, ids.shape[1] - 1, "norm"
        ),
    )


def test_llama_continuation_rows_equal_teacher_forced_direct_computation(llama64):
    model, tok = llama64
    ex = Explainer(model, tok)
    prompt, cont = "the movie was", "great and good"
    p_ids = tok(prompt)["input_ids"]
    c_ids = tok(cont, add_special_tokens=False)["input_ids"]
    ids = torch.tensor([p_ids + c_ids])
    mask = torch.ones_like(ids)
    pos = torch.arange(len(p_ids) - 1, len(p_ids) - 1 + len(c_ids))

    def value(e):
        return model(inputs_embeds=e, attention_mask=mask, use_cache=False).logits[0, pos, c_ids]

    r = ex.explain(prompt, target=cont)
    assert r.tokens == tok.convert_ids_to_tokens(ids[0].tolist())
    assert r.rows == ["great", "and", "good"]
    assert r.scores.shape == (3, ids.shape[1])
    expected = ablation_oracle(model, ids, value, default_baseline(tok), token_groups(tok, ids))
    empty = torch.arange(ids.shape[1]).unsqueeze(0) > pos.unsqueeze(1)  # after each row's read position
    assert torch.isnan(r.scores[empty]).all() and not torch.isnan(r.scores[~empty]).any()
    close(r.scores[~empty], expected[~empty])
    assert expected[empty].abs().max() < 1e-12  # causal: those tokens cannot matter

    r = ex.explain(prompt, target=cont, method="layer_ablation", sites="mlp")
    grid, whole = layer_oracle(model, ids, value, [m for _, m in resolve_sites(model, "mlp")])
    close(r.scores, grid)  # several rows are explained by their sum
    close(torch.tensor(r.extras["site_scores"], dtype=F64), whole)


@pytest.mark.parametrize("name", SEQ2SEQ)
def test_seq2seq_rows_equal_teacher_forced_direct_computation(name):
    model, tok = zoo(name, "auto", F64)
    ex = Explainer(model, tok)
    ids, mask, _ = enc_inputs(tok, TEXT)
    tgt = tok("great movie", add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    start = model.config.decoder_start_token_id
    dec = torch.tensor([[start] + tgt[:-1]])

    def value(e):
        out = model(inputs_embeds=e, attention_mask=mask, decoder_input_ids=dec, use_cache=False)
        return out.logits[0, torch.arange(len(tgt)), tgt]

    r = ex.explain(TEXT, target="great movie")
    assert r.rows == ["great", "movie", tok.eos_token]
    expected = ablation_oracle(model, ids, value, default_baseline(tok), token_groups(tok, ids))
    close(r.scores, expected)

    if name == "t5":
        r = ex.explain(TEXT, target="great movie", method="layer_ablation", sites="encoder.mlp")
        found = resolve_sites(model, "encoder.mlp")
        grid, whole = layer_oracle(model, ids, value, [m for _, m in found])
        close(r.scores, grid)
        close(torch.tensor(r.extras["site_scores"], dtype=F64), whole)


@pytest.mark.parametrize("name, target", [("t5", "great movie"), ("llama", "great and good")])
def test_neuron_gradient_with_a_several_token_target_equals_autograd(name, target):
    # The neuron does not depend on the target, but the forward pass does (teacher-forced
    # continuation tokens / decoder inputs); the scores stay one value per input token.
    model, tok = zoo(name, "auto", F64)
    site = "encoder.blocks.1.attention" if name == "t5" else "blocks.1.attention"
    r = Explainer(model, tok).explain(
        TEXT, target=target, method="neuron_gradient", site=site, neuron=2, position="all", reduce="sum"
    )
    ids, mask, _ = enc_inputs(tok, TEXT)
    kw = {}
    if name == "t5":
        tgt = tok(target, add_special_tokens=False)["input_ids"]
        kw["decoder_input_ids"] = torch.tensor([[model.config.decoder_start_token_id] + tgt])
    else:
        ids = torch.tensor([ids[0].tolist() + tok(target, add_special_tokens=False)["input_ids"]])
        mask = torch.ones_like(ids)
    assert r.tokens == tok.convert_ids_to_tokens(ids[0].tolist())
    assert r.scores.shape == (ids.shape[1],)
    expected = neuron_oracle(
        model,
        ids,
        lambda e: model(inputs_embeds=e, attention_mask=mask, **kw),
        resolve_sites(model, site)[0][1],
        2,
        "all",
        "sum",
    )
    close(r.scores, expected)


# --------------------------------------------------------------------------- 3. batching
TEXTS = ["the movie was great", "bad", "i did not like this film"]


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("name", ["bert", "gpt2", "llama"])
def test_batched_equals_one_by_one(name, method):
    model, tok = zoo(name)
    ex = Explainer(model, tok)
    opts = method_options(name, method)
    if method == "neuron_gradient":
        opts["position"] = "all"
    batched = ex.explain(TEXTS, method=method, batch_size=2, **opts)  # chunks of 2 and 1
    assert len(batched) == len(TEXTS)
    for text, rb in zip(TEXTS, batched):
        rs = ex.explain(text, method=method, **opts)
        assert rb.tokens == rs.tokens and rb.target == rs.target and rb.rows == rs.rows
        close(rb.scores, rs.scores, atol=1e-5)
        if method == "layer_ablation":
            close(torch.tensor(rb.extras["site_scores"]), torch.tensor(rs.extras["site_scores"]), atol=1e-5)
        if method != "neuron_gradient":
            assert rb.probability == pytest.approx(rs.probability, abs=1e-6)


def test_left_padding_tokenizer_gives_the_same_scores():
    model, tok = zoo("llama")
    left = make_tokenizer("llama", padding_side="left")
    ref = Explainer(model, tok).explain(TEXTS, batch_size=3)
    got = Explainer(model, left).explain(TEXTS, batch_size=3)
    for g, r in zip(got, ref):
        assert g.tokens == r.tokens and g.target == r.target
        close(g.scores, r.scores, atol=1e-5)


def test_batched_targets_and_continuations_equal_one_by_one():
    model, tok = zoo("gpt2")
    ex = Explainer(model, tok)
    texts, targets = ["the movie", "it was a really"], [" was great", 17]
    batched = ex.explain(texts, target=targets, batch_size=2)
    for text, target, rb in zip(texts, targets, batched):
        rs = ex.explain(text, target=target)
        assert rb.target == rs.target and rb.tokens == rs.tokens
        torch.testing.assert_close(rb.scores, rs.scores, atol=1e-5, rtol=0, equal_nan=True)
    assert batched[0].scores.shape == (2, 4) and batched[1].target["id"] == 17


# --------------------------------------------------------------------------- 4. words
def wordpiece_bert_tokenizer():
    """The zoo's bert tokenizer with WordPiece, and ``##s`` in place of 'hundred' (same vocab size)."""
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    tok = make_tokenizer("bert")
    vocab = tok.get_vocab()
    vocab["##s"] = vocab.pop("hundred")
    backend = Tokenizer.from_str(tok.backend_tokenizer.to_str())
    backend.model = models.WordPiece(vocab, unk_token="[UNK]", continuing_subword_prefix="##")
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        model_max_length=512,
        model_input_names=["input_ids", "token_type_ids", "attention_mask"],
        pad_token="[PAD]",
        unk_token="[UNK]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
    )


def test_word_granularity_ablates_whole_words(bert64):
    model, _ = bert64
    tok = wordpiece_bert_tokenizer()
    text = "the cats sat"
    enc = tok(text)
    assert tok.convert_ids_to_tokens(enc["input_ids"]) == ["[CLS]", "the", "cat", "##s", "sat", "[SEP]"]
    assert enc.word_ids() == [None, 0, 1, 1, 2, None]
    ex = Explainer(model, tok)
    r = ex.explain(text, granularity="word", target=1)
    assert r.word_ids == [None, 0, 1, 1, 2, None]
    assert r.scores[2] == r.scores[3]
    ids = torch.tensor([enc["input_ids"]])
    expected = ablation_oracle(model, ids, bert_value(model, tok, text, 1), tok.mask_token_id, [[1], [2, 3], [4]])[0]
    close(r.scores, expected)

    tokens = ex.explain(text, target=1)
    assert tokens.scores[2] != tokens.scores[3]
    agg = tokens.aggregate("word")
    assert agg.tokens == ["[CLS]", "the", "cats", "sat", "[SEP]"]
    s = tokens.scores
    close(agg.scores, torch.stack([s[0], s[1], s[2] + s[3], s[4], s[5]]), atol=0)
    assert r.aggregate("word", reduce="mean").scores[2] == r.scores[2]


def test_zoo_tokenizers_split_punctuation_into_words():
    # The zoo's word-level tokenizers make every punctuation piece its own word, so word and token
    # granularity agree there.
    model, tok = zoo("bert")
    ex = Explainer(model, tok)
    assert tok("well-made").word_ids() == [None, 0, 1, 2, None]
    a = ex.explain("a well-made film", granularity="word")
    b = ex.explain("a well-made film")
    assert torch.equal(a.scores, b.scores)


# --------------------------------------------------------------------------- 6. JSON and HTML
def real_results() -> list[Result]:
    out = []
    for name, kw in [
        ("bert", {}),
        ("bert", {"method": "layer_ablation", "sites": "mlp"}),
        ("bert", {"method": "neuron_gradient", "site": "blocks.1.attention", "neuron": 0}),
        ("gpt2", {"target": " great and"}),
        ("t5", {"target": "good"}),
        ("llama", {"chat": True, "method": "layer_ablation"}),
    ]:
        model, tok = zoo(name)
        out.append(Explainer(model, tok).explain(TEXT, **kw))
    out.append(out[0].aggregate("word"))
    return out


class _TokenText(HTMLParser):
    """Text of the elements that show tokens (spans for 1-D, column headers for 2-D)."""

    def __init__(self):
        super().__init__()
        self.tokens, self.row_heads, self._in = [], [], False
        self._into = self.tokens

    def handle_starttag(self, tag, attrs):
        cls = dict(attrs).get("class", "")
        if (tag == "span" and cls == "hfattr-tok") or (tag == "th" and cls in ("hfattr-col", "hfattr-row")):
            self._in = True
            (self.row_heads if cls == "hfattr-row" else self.tokens).append("")
            self._into = self.row_heads if cls == "hfattr-row" else self.tokens

    def handle_endtag(self, tag):
        if tag in ("span", "th"):
            self._in = False

    def handle_data(self, data):
        if self._in:
            self._into[-1] += data


def test_results_round_trip_through_json_and_show_every_token_in_html(tmp_path):
    for k, r in enumerate(real_results()):
        path = r.save(tmp_path / f"r{k}.json")
        back = Result.load(path)
        for field in Result.__dataclass_fields__:
            a, b = getattr(r, field), getattr(back, field)
            if isinstance(a, torch.Tensor):  # exact, NaN (an empty generation cell) included
                assert a.dtype == b.dtype and a.shape == b.shape, field
                torch.testing.assert_close(a, b, atol=0, rtol=0, equal_nan=True, msg=field)
            else:
                assert a == b and type(a) is type(b), field
        page = r.to_html()
        parser = _TokenText()
        parser.feed(page)
        if r.target.get("kind") in ("generation", "continuation"):  # source tokens down, generated across
            steps = set(r.extras.get("step_scores") or {})  # the step scores are extra rows at the bottom
            heads = [h for h in parser.row_heads if h not in steps]
            assert len(heads) == len(parser.row_heads) - len(steps)
            assert parser.tokens == r.rows and heads == r.tokens[: len(heads)]
            assert len(heads) >= len(r.tokens) - 1  # the last generated token may have no row
        else:
            assert parser.tokens == r.tokens
        for t in r.tokens:
            assert html_lib.escape(t) in page


# --------------------------------------------------------------------------- 7. model untouched
def snapshot(model):
    return dict(
        training={n: m.training for n, m in model.named_modules()},
        grad={n: p.requires_grad for n, p in model.named_parameters()},
        hooks={n: hook_counts(m) for n, m in model.named_modules()},
        attn=model.config._attn_implementation,
        params={n: p.detach().clone() for n, p in model.named_parameters()},
    )


def assert_same_state(model, before):
    after = snapshot(model)
    for key in ("training", "grad", "hooks", "attn"):
        assert after[key] == before[key], key
    for n, p in before["params"].items():
        assert torch.equal(after["params"][n], p), n
    assert all(p.grad is None for p in model.parameters())


@pytest.mark.parametrize("name", ["bert", "llama"])
def test_model_state_is_restored_after_each_method(name):
    model, tok = tiny(name)
    model.train()
    model.get_input_embeddings().weight.requires_grad_(False)
    some_block = resolve_sites(model, "blocks.1")[0][1]
    some_block.eval()  # mixed training flags must come back as they were
    before = snapshot(model)
    ex = Explainer(model, tok)
    r0 = ex.explain(TEXT)
    for method in METHODS:
        ex.explain(TEXT, method=method, **method_options(name, method))
        assert_same_state(model, before)
    model.eval()
    close(Explainer(model, tok).explain(TEXT).scores, r0.scores, atol=0)  # explained in eval mode


def test_model_state_is_restored_after_an_error():
    model, tok = tiny("bert")
    model.train()
    ex = Explainer(model, tok)
    before = snapshot(model)
    with pytest.raises(ValueError):
        ex.explain(TEXT, method="layer_ablation", sites="no.such.site")
    assert_same_state(model, before)
    with pytest.raises(ValueError):  # raised after the forward pass with hooks in place
        ex.explain(TEXT, method="neuron_gradient", site="blocks.0.mlp", neuron=10_000)
    assert_same_state(model, before)

    # an exception inside the model's forward, while the method's hooks are registered (the first
    # forward, the target prediction, passes; the method's first forward through block 0 raises)
    calls = {"n": 0}

    def boom(module, args):
        calls["n"] += 1
        if calls["n"] > 1:
            raise RuntimeError("boom")

    layer = resolve_sites(model, "blocks.0")[0][1]
    handle = layer.register_forward_pre_hook(boom)
    try:
        with_boom = snapshot(model)
        for method in METHODS:
            calls["n"] = 0
            with pytest.raises(RuntimeError, match="boom"):
                ex.explain(TEXT, method=method, **method_options("bert", method))
            assert_same_state(model, with_boom)
    finally:
        handle.remove()
    assert_same_state(model, before)


# --------------------------------------------------------------------------- 8. loading
def test_from_pretrained_local_path_without_remote_code(tmp_path, monkeypatch):
    import transformers

    seen = []

    def recorder(cls_name):
        original = getattr(transformers, cls_name).from_pretrained

        def wrapped(*args, **kwargs):
            seen.append((cls_name, kwargs.get("trust_remote_code", "missing")))
            return original(*args, **kwargs)

        monkeypatch.setattr(getattr(transformers, cls_name), "from_pretrained", wrapped)

    for cls_name in ("AutoConfig", "AutoTokenizer", "AutoModelForSequenceClassification", "AutoModelForCausalLM"):
        recorder(cls_name)

    bert_dir = save_tiny("bert", tmp_path / "bert")
    ex = Explainer.from_pretrained(bert_dir)
    assert type(ex.model).__name__ == "BertForSequenceClassification"
    assert not ex.model.training
    assert ex.model_name == str(bert_dir)
    names = {c for c, _ in seen}
    assert {"AutoConfig", "AutoTokenizer", "AutoModelForSequenceClassification"} <= names
    assert all(flag is False for _, flag in seen), seen
    ref_model, ref_tok = zoo("bert")
    r = ex.explain(TEXT)
    assert r.tokens == Explainer(ref_model, ref_tok).explain(TEXT).tokens
    close(r.scores, Explainer(ref_model, ref_tok).explain(TEXT).scores, atol=1e-6)
    assert r.model_name == str(bert_dir)

    seen.clear()
    gpt_dir = save_tiny("gpt2", tmp_path / "gpt2")
    ex = Explainer.from_pretrained(gpt_dir, trust_remote_code=True)
    assert type(ex.model).__name__ == "GPT2LMHeadModel"
    assert seen and all(flag is True for _, flag in seen), seen


# --------------------------------------------------------------------------- 9. accelerate
def test_accelerate_dispatched_and_offloaded_models_give_the_same_scores():
    from accelerate import cpu_offload, dispatch_model

    model, tok = zoo("llama")
    opts = [
        {},
        {"method": "layer_ablation", "sites": "blocks.1.mlp"},
        {"method": "neuron_gradient", "site": "blocks.1.mlp", "neuron": 2},
    ]
    ref = [Explainer(model, tok).explain(TEXTS[:2], **o) for o in opts]

    dispatched, _ = tiny("llama")
    device_map = {
        "model.embed_tokens": "cpu",
        "model.layers.0": "cpu",
        "model.layers.1": "cpu",
        "model.norm": "cpu",
        "model.rotary_emb": "cpu",
        "lm_head": "cpu",
    }
    dispatched = dispatch_model(dispatched, device_map=device_map)
    offloaded, _ = tiny("llama")
    cpu_offload(offloaded.model.layers[1], execution_device="cpu")  # weights of one block on 'meta'
    assert offloaded.model.layers[1].mlp.up_proj.weight.device.type == "meta"
    for m, n_opts in ((dispatched, 1), (offloaded, 3)):
        for o, expected in zip(opts[:n_opts], ref):
            got = Explainer(m, tok).explain(TEXTS[:2], **o)
            for g, e in zip(got, expected):
                assert g.tokens == e.tokens
                close(g.scores, e.scores, atol=1e-6)
    assert offloaded.model.layers[1].mlp.up_proj.weight.device.type == "meta"  # still offloaded


# --------------------------------------------------------------------------- 11. chat prompts
@pytest.mark.parametrize("name", ["llama", "qwen2"])
def test_chat_template_tokens_are_special(name):
    model, tok = zoo(name)
    rendered = tok.apply_chat_template([{"role": "user", "content": TEXT}], tokenize=False, add_generation_prompt=True)
    ids = tok(rendered, add_special_tokens=False)["input_ids"]
    tokens = tok.convert_ids_to_tokens(ids)
    r = Explainer(model, tok).explain(TEXT, chat=True)
    assert r.text == rendered
    assert r.tokens == tokens
    content = [t in TEXT.split() for t in tokens]
    assert sum(content) == 4
    assert r.special_mask == [not c for c in content]
    assert "user" in tokens or "<|user|>" in tokens  # the template's role word/token is there...
    special = torch.tensor(r.special_mask)
    assert torch.all(r.scores[special] == 0)  # ...and is never ablated
    assert torch.all(r.scores[~special] != 0)
    # same scores as explaining the rendered prompt with the template tokens fixed by hand
    groups = [[i] for i, c in enumerate(content) if c]
    with torch.no_grad():
        pred = int(model(input_ids=torch.tensor([ids])).logits[0, -1].argmax())
    value = lambda e: model(inputs_embeds=e, use_cache=False).logits[0, -1, [pred]]  # noqa: E731
    close(r.scores, ablation_oracle(model, torch.tensor([ids]), value, default_baseline(tok), groups)[0], atol=1e-5)
