"""Tests for the tiny model zoo in hfattr.testing."""

import pytest
import torch
import transformers

from hfattr.testing import (
    ID2LABEL,
    STYLES,
    TASKS,
    VOCAB_WORDS,
    ZOO,
    list_tiny,
    make_tokenizer,
    save_tiny,
    style_for,
    tiny,
    tiny_config,
    tiny_model,
)

TEXTS = ["A great movie, I love it!", "terrible film. i hate it", "the plot was boring"]
ZOO_TASKS = [(name, task) for name in ZOO for task in ZOO[name]]


def _forward(model, enc):
    with torch.no_grad():
        if model.config.is_encoder_decoder:
            start = model.config.decoder_start_token_id
            dec = torch.full((enc["input_ids"].shape[0], 2), start, dtype=torch.long)
            return model(**enc, decoder_input_ids=dec)
        return model(**enc)


def _main_output(out):
    return out.logits if hasattr(out, "logits") else out.last_hidden_state


# ---------------------------------------------------------------------------
# tokenizer
# ---------------------------------------------------------------------------


def test_vocab_contents():
    assert 250 <= len(VOCAB_WORDS) <= 450
    for w in ["good", "great", "bad", "terrible", "love", "hate", "not", "movie", "film", "0", "9", ".", ","]:
        assert w in VOCAB_WORDS
    assert len(set(VOCAB_WORDS)) == len(VOCAB_WORDS)


@pytest.mark.parametrize("style", STYLES)
def test_tokenizer_offsets_and_word_ids(style):
    tok = make_tokenizer(style)
    assert isinstance(tok, transformers.PreTrainedTokenizerFast)
    assert tok.model_max_length == 512
    text = "A GREAT movie, xyzzy!"
    enc = tok(text, return_offsets_mapping=True)
    ids, offs, wids = enc["input_ids"], enc["offset_mapping"], enc.word_ids()
    toks = tok.convert_ids_to_tokens(ids)
    words = [t for t, w in zip(toks, wids) if w is not None]
    assert words == ["a", "great", "movie", ",", tok.unk_token, "!"]
    assert [w for w in wids if w is not None] == [0, 1, 2, 3, 4, 5]
    spans = [text[a:b] for (a, b), w in zip(offs, wids) if w is not None]
    assert spans == ["A", "GREAT", "movie", ",", "xyzzy", "!"]
    # special positions have no word and an empty span
    for (a, b), w in zip(offs, wids):
        if w is None:
            assert a == b == 0
    assert tok.convert_tokens_to_ids("good") != tok.unk_token_id
    assert tok.pad_token_id is not None


@pytest.mark.parametrize(
    "style, single, pair",
    [
        ("bert", ["[CLS]", "good", "[SEP]"], ["[CLS]", "good", "[SEP]", "bad", "[SEP]"]),
        ("roberta", ["<s>", "good", "</s>"], ["<s>", "good", "</s>", "</s>", "bad", "</s>"]),
        ("bart", ["<s>", "good", "</s>"], ["<s>", "good", "</s>", "</s>", "bad", "</s>"]),
        ("gpt2", ["good"], ["good", "bad"]),
        ("llama", ["<s>", "good"], ["<s>", "good", "<s>", "bad"]),
        ("qwen2", ["good"], ["good", "bad"]),
        ("t5", ["good", "</s>"], ["good", "</s>", "bad", "</s>"]),
    ],
)
def test_tokenizer_special_templates(style, single, pair):
    tok = make_tokenizer(style)
    assert tok.convert_ids_to_tokens(tok("good")["input_ids"]) == single
    assert tok.convert_ids_to_tokens(tok("good", "bad")["input_ids"]) == pair
    assert tok("good", add_special_tokens=False)["input_ids"] == [tok.convert_tokens_to_ids("good")]


def test_tokenizer_special_token_roles():
    bert = make_tokenizer("bert")
    assert (bert.pad_token, bert.unk_token, bert.cls_token, bert.sep_token, bert.mask_token) == (
        "[PAD]",
        "[UNK]",
        "[CLS]",
        "[SEP]",
        "[MASK]",
    )
    assert bert("good", "bad")["token_type_ids"] == [0, 0, 0, 1, 1]
    rob = make_tokenizer("roberta")
    assert (rob.pad_token, rob.unk_token, rob.mask_token, rob.bos_token, rob.eos_token) == (
        "<pad>",
        "<unk>",
        "<mask>",
        "<s>",
        "</s>",
    )
    gpt = make_tokenizer("gpt2")
    assert gpt.eos_token == gpt.pad_token == "<|endoftext|>"
    llama = make_tokenizer("llama")
    assert (llama.bos_token, llama.eos_token, llama.unk_token) == ("<s>", "</s>", "<unk>")
    assert llama.pad_token is not None and llama.pad_token_id not in (llama.eos_token_id, llama.bos_token_id)
    t5 = make_tokenizer("t5")
    assert (t5.pad_token, t5.eos_token, t5.unk_token) == ("<pad>", "</s>", "<unk>")
    bart = make_tokenizer("bart")
    assert (bart.pad_token, bart.mask_token, bart.bos_token, bart.eos_token) == ("<pad>", "<mask>", "<s>", "</s>")
    # mask token is not split into pieces
    enc = bert("the [MASK] was good", add_special_tokens=False)["input_ids"]
    assert enc[1] == bert.mask_token_id


def test_tokenizer_padding_and_custom_vocab():
    tok = make_tokenizer("bert")
    enc = tok(["good", "a good movie"], padding=True)
    assert enc["input_ids"][0][-1] == tok.pad_token_id
    assert enc["attention_mask"][0] == [1, 1, 1, 0, 0]
    left = make_tokenizer("gpt2", padding_side="left")
    assert left(["good", "a good movie"], padding=True)["attention_mask"][0] == [0, 0, 1]
    small = make_tokenizer("bert", vocab=["Alpha", "beta"])
    assert len(small) == 5 + 2
    ids = small("alpha BETA gamma", add_special_tokens=False)["input_ids"]
    assert small.convert_ids_to_tokens(ids) == ["alpha", "beta", "[UNK]"]


@pytest.mark.parametrize("style", ["llama", "qwen2"])
def test_chat_template(style):
    tok = make_tokenizer(style)
    msgs = [{"role": "user", "content": "is this movie good ?"}]
    text = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    assert "movie good" in text
    out = tok.apply_chat_template(msgs, add_generation_prompt=True)
    ids = out["input_ids"] if isinstance(out, dict) or hasattr(out, "keys") else out
    toks = tok.convert_ids_to_tokens(ids)
    assert tok.unk_token not in toks
    role_tokens = {"llama": ["<|user|>", "<|assistant|>"], "qwen2": ["<|im_start|>", "<|im_end|>"]}[style]
    for rt in role_tokens:
        assert rt in tok.all_special_tokens
        assert rt in toks  # kept whole, not split by the pre-tokenizer
    if style == "llama":
        assert toks[0] == "<s>" and toks.count("<s>") == 1


def test_make_tokenizer_errors():
    with pytest.raises(ValueError, match="style"):
        make_tokenizer("xlnet")
    with pytest.raises(ValueError, match="padding_side"):
        make_tokenizer("bert", padding_side="middle")


# ---------------------------------------------------------------------------
# configs and models
# ---------------------------------------------------------------------------


def test_zoo_listing():
    assert list_tiny() == list(ZOO)
    for name in ["bert", "roberta", "distilbert", "gpt2", "llama", "qwen2", "bart", "t5"]:
        assert name in ZOO
    assert ZOO["bert"][0] == "sequence-classification"
    assert ZOO["llama"][0] == "causal-lm"
    assert ZOO["t5"][0] == "seq2seq"
    for tasks in ZOO.values():
        assert set(tasks) <= set(TASKS)


@pytest.mark.parametrize("name, task", ZOO_TASKS)
def test_zoo_builds_and_runs(name, task):
    model, tok = tiny(name, task)
    assert not model.training
    assert model.config.model_type == name
    # transformers' default; Gemma-2 defaults to eager attention (it returns real attention weights)
    assert model.config._attn_implementation == ("eager" if name == "gemma2" else "sdpa")
    assert model.config.vocab_size >= len(tok)
    assert model.config.pad_token_id == tok.pad_token_id
    enc = tok(TEXTS, return_tensors="pt", padding=True)
    out = _main_output(_forward(model, enc))
    assert torch.isfinite(out).all()
    if task == "sequence-classification":
        assert out.shape == (3, 2)
        assert model.config.id2label == ID2LABEL
    elif task == "token-classification":
        assert out.shape == (*enc["input_ids"].shape, 2)
    elif task in ("masked-lm", "causal-lm"):
        assert out.shape == (*enc["input_ids"].shape, model.config.vocab_size)
    # weights are not degenerate: different texts give visibly different outputs
    assert (out[0] - out[1]).abs().max() > 1e-2
    assert (out[1] - out[2]).abs().max() > 1e-2


@pytest.mark.parametrize("name", list(ZOO))
def test_zoo_seed_determinism(name):
    state = torch.get_rng_state()
    a = tiny_model(name, seed=1)
    b = tiny_model(name, seed=1)
    c = tiny_model(name, seed=2)
    assert torch.equal(torch.get_rng_state(), state)  # global RNG untouched
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert sa.keys() == sb.keys()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert any(not torch.equal(sa[k], sc[k]) for k in sa)


@pytest.mark.parametrize("name", ["gpt2", "llama", "qwen2"])
def test_decoder_classification_with_padding(name):
    model, tok = tiny(name, "sequence-classification")
    assert model.config.pad_token_id is not None
    enc = tok(TEXTS, return_tensors="pt", padding=True)
    batched = _forward(model, enc).logits
    for i, text in enumerate(TEXTS):
        single = _forward(model, tok([text], return_tensors="pt")).logits
        torch.testing.assert_close(batched[i], single[0], atol=1e-5, rtol=1e-5)


def test_num_layers_dtype_and_attn_override():
    m = tiny_model("llama", num_layers=3, dtype=torch.bfloat16, attn_implementation="eager")
    assert m.config.num_hidden_layers == 3 and len(m.model.layers) == 3
    assert m.config._attn_implementation == "eager"
    assert next(m.parameters()).dtype == torch.bfloat16
    m = tiny_model("bert", hidden_act="relu")
    assert m.config.hidden_act == "relu"


@pytest.mark.parametrize(
    "model_type, layer_attr",
    [
        ("gpt2", "n_layer"),
        ("bart", "encoder_layers"),
        ("bart", "decoder_layers"),
        ("t5", "num_layers"),
        ("t5", "num_decoder_layers"),
        ("distilbert", "n_layers"),
        ("mistral", "num_hidden_layers"),
        ("electra", "num_hidden_layers"),
        ("gpt_neox", "num_hidden_layers"),
    ],
)
def test_tiny_config_field_names(model_type, layer_attr):
    cfg = tiny_config(model_type, num_layers=3, hidden=16, heads=2)
    assert cfg.model_type == model_type
    assert getattr(cfg, layer_attr) == 3
    assert cfg.hidden_size == 16
    assert cfg.vocab_size == len(make_tokenizer(style_for(model_type)))


def test_tiny_config_family_details():
    llama = tiny_config("llama")
    assert llama.num_key_value_heads == 2 and llama.max_position_embeddings >= 512
    assert llama.head_dim == 8
    t5 = tiny_config("t5")
    assert t5.d_kv == 8 and t5.decoder_start_token_id == make_tokenizer("t5").pad_token_id
    bart = tiny_config("bart")
    assert bart.decoder_start_token_id == make_tokenizer("bart").eos_token_id
    assert bart.init_std == pytest.approx(0.2)
    gpt2 = tiny_config("gpt2")
    assert gpt2.n_positions >= 512 and gpt2.n_embd == 32 and gpt2.n_head == 4
    assert tiny_config("bert", vocab_size=1000).vocab_size == 1000
    # a model type outside the zoo builds with an explicit task
    m = tiny_model("mistral", "causal-lm")
    assert len(m.model.layers) == 2


def test_tiny_model_errors():
    with pytest.raises(ValueError, match="task"):
        tiny_model("bert", "causal-lm")
    with pytest.raises(ValueError, match="task"):
        tiny_model("bert", "translation")
    with pytest.raises(ValueError, match="auto"):
        tiny_model("falcon")
    with pytest.raises(ValueError, match="model_type"):
        tiny_config("no-such-model")
    with pytest.raises(ValueError, match="divisible"):
        tiny_config("bert", hidden=30, heads=4)


@pytest.mark.parametrize(
    "name, task",
    [
        ("bert", "sequence-classification"),
        ("llama", "causal-lm"),
        ("t5", "seq2seq"),
        ("gpt2", "sequence-classification"),
    ],
)
def test_save_tiny_roundtrip(tmp_path, name, task):
    path = save_tiny(name, tmp_path / name, task=task, seed=3)
    model, tok = tiny(name, task, seed=3)
    loaded = getattr(transformers, TASKS[task]).from_pretrained(path).eval()
    loaded_tok = transformers.AutoTokenizer.from_pretrained(path)
    enc = tok(TEXTS, return_tensors="pt", padding=True)
    enc2 = loaded_tok(TEXTS, return_tensors="pt", padding=True)
    assert torch.equal(enc["input_ids"], enc2["input_ids"])
    assert loaded_tok.all_special_tokens == tok.all_special_tokens
    torch.testing.assert_close(_forward(loaded, enc2).logits, _forward(model, enc).logits, atol=0, rtol=0)
