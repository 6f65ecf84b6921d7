"""Tiny, randomly initialised Hugging Face models and tokenizers for tests.

Nothing here touches the model hub: tokenizers are built with the
``tokenizers`` library over a small built-in English vocabulary, and models
are created from small configs with fixed seeds.

>>> model, tok = tiny("bert")                      # doctest: +SKIP
>>> model(**tok("a great movie", return_tensors="pt")).logits.shape  # doctest: +SKIP
torch.Size([1, 2])
"""

from __future__ import annotations

import os
from typing import Any, Iterable, Mapping

import torch

from .hf.generic_arch import LAYER_KEYS
from .hf.heads import AUTO_CLASSES

__all__ = [
    "VOCAB_WORDS",
    "STYLES",
    "TASKS",
    "ZOO",
    "ID2LABEL",
    "make_tokenizer",
    "style_for",
    "tiny_config",
    "tiny_model",
    "tiny",
    "list_tiny",
    "save_tiny",
]

# ---------------------------------------------------------------------------
# Vocabulary
# ---------------------------------------------------------------------------

_WORDS = """
the a an and or but if then so because than as of to in on at by for with from
about into over under after before between through during without again
i you he she it we they me him her us them my your his its our their this that
these those there here who what which when where why how all any some no not
never very too also just only more most less much many few other such same own
is are was were be been being am do does did done have has had having will
would can could should may might must shall get got make made go went gone come
came see saw seen know knew think thought say said tell told give gave take took
find found feel felt seem seemed look looked want like liked love loved hate
hated enjoy enjoyed watch watched recommend play played work worked try tried
movie movies film films show story plot acting actor actors actress cast scene
scenes script director music ending character characters performance effects
book books song game time times year years day days night way thing things
people man woman world life family friend friends home place part end
good great excellent wonderful amazing brilliant fantastic perfect beautiful
best better fun funny nice fine well enjoyable lovely superb awesome
bad terrible awful horrible worst worse boring poor dull stupid weak waste
disappointing mediocre annoying ugly sad slow mess
happy pleased fresh new old long short big small high low full real true
first last next whole different important interesting
really quite rather pretty still even ever always often almost enough yet
one two three four five six seven eight nine ten hundred
up down out off back away now today
cat dog sat mat paris france capital city
yes okay please thanks hello
user assistant system
""".split()

_DIGITS = [str(d) for d in range(10)]
_PUNCT = list(".,!?;:'\"()-/&%$#*+=<>[]@_")

VOCAB_WORDS: tuple[str, ...] = tuple(dict.fromkeys(_WORDS + _DIGITS + _PUNCT))
"""Built-in word list (lower case words, digits and punctuation) in id order."""

_ROBERTA_STYLE: dict[str, Any] = {
    "specials": ["<s>", "<pad>", "</s>", "<unk>", "<mask>"],
    "roles": {
        "bos_token": "<s>",
        "eos_token": "</s>",
        "cls_token": "<s>",
        "sep_token": "</s>",
        "pad_token": "<pad>",
        "unk_token": "<unk>",
        "mask_token": "<mask>",
    },
    "single": "<s> $A </s>",
    "pair": "<s> $A </s> </s> $B </s>",
}

# Special tokens per style: (special tokens in id order, role -> token).
_STYLES: dict[str, dict[str, Any]] = {
    "bert": {
        "specials": ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"],
        "roles": {
            "pad_token": "[PAD]",
            "unk_token": "[UNK]",
            "cls_token": "[CLS]",
            "sep_token": "[SEP]",
            "mask_token": "[MASK]",
        },
        "single": "[CLS] $A [SEP]",
        "pair": "[CLS] $A [SEP] $B:1 [SEP]:1",
        "inputs": ("input_ids", "token_type_ids", "attention_mask"),
    },
    "roberta": _ROBERTA_STYLE,
    "bart": _ROBERTA_STYLE,  # BART's tokenizer has RoBERTa's special tokens
    "gpt2": {
        "specials": ["<|endoftext|>", "<unk>"],
        "roles": {
            "bos_token": "<|endoftext|>",
            "eos_token": "<|endoftext|>",
            "pad_token": "<|endoftext|>",
            "unk_token": "<unk>",
        },
        "single": None,
        "pair": None,
    },
    "llama": {
        "specials": ["<unk>", "<s>", "</s>", "<pad>", "<|system|>", "<|user|>", "<|assistant|>"],
        "roles": {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<pad>"},
        "extra": ["<|system|>", "<|user|>", "<|assistant|>"],
        "single": "<s> $A",
        "pair": "<s> $A <s>:1 $B:1",
        "chat_template": (
            "{{ bos_token }}{% for message in messages %}"
            "<|{{ message['role'] }}|> {{ message['content'] }} </s> "
            "{% endfor %}"
            "{% if add_generation_prompt %}<|assistant|> {% endif %}"
        ),
    },
    "qwen2": {
        "specials": ["<|endoftext|>", "<unk>", "<|im_start|>", "<|im_end|>"],
        "roles": {"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>", "unk_token": "<unk>"},
        "extra": ["<|im_start|>", "<|im_end|>"],
        "single": None,
        "pair": None,
        "chat_template": (
            "{% for message in messages %}"
            "<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
            "{% endfor %}"
            "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
        ),
    },
    "t5": {
        "specials": ["<pad>", "</s>", "<unk>"],
        "roles": {"pad_token": "<pad>", "eos_token": "</s>", "unk_token": "<unk>"},
        "single": "$A </s>",
        "pair": "$A </s> $B:1 </s>:1",
    },
}
STYLES: tuple[str, ...] = tuple(_STYLES)


def make_tokenizer(
    style: str = "bert", vocab: Iterable[str] | None = None, *, padding_side: str = "right", model_max_length: int = 512
):
    """Build a word-level fast tokenizer that mimics a model family's special tokens.

    ``style`` is one of :data:`STYLES`. ``vocab`` replaces the built-in word list
    (lower-case words; special tokens are always prepended). Unknown words map to
    the unk token. Returns a ``transformers.PreTrainedTokenizerFast``.
    """
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    if style not in _STYLES:
        raise ValueError(f"make_tokenizer: unknown style {style!r}; expected one of {list(STYLES)}")
    if padding_side not in ("left", "right"):
        raise ValueError(f"make_tokenizer: padding_side must be 'left' or 'right', got {padding_side!r}")
    info = _STYLES[style]
    words = list(VOCAB_WORDS if vocab is None else vocab)
    if vocab is not None and not all(isinstance(w, str) and w for w in words):
        raise ValueError("make_tokenizer: vocab must be an iterable of non-empty strings")
    ids: dict[str, int] = {}
    for tok in list(info["specials"]) + [w.lower() for w in words]:
        ids.setdefault(tok, len(ids))

    backend = Tokenizer(models.WordLevel(ids, unk_token=info["roles"]["unk_token"]))
    backend.normalizer = normalizers.Lowercase()
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation(behavior="isolated")]
    )
    if info["single"] is not None:
        used = {t for t in info["specials"] if t in info["single"] or t in info["pair"]}
        backend.post_processor = processors.TemplateProcessing(
            single=info["single"],
            pair=info["pair"],
            special_tokens=[(t, ids[t]) for t in info["specials"] if t in used],
        )
    kwargs = dict(info["roles"])
    tok = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        model_max_length=model_max_length,
        padding_side=padding_side,
        model_input_names=list(info.get("inputs", ("input_ids", "attention_mask"))),
        **kwargs,
    )
    extra = info.get("extra")
    if extra:
        tok.add_special_tokens({"additional_special_tokens": list(extra)})
    # Make sure every special token of the style is treated as special (not split).
    tok.add_tokens([t for t in info["specials"] if t not in tok.all_special_tokens], special_tokens=True)
    if "chat_template" in info:
        tok.chat_template = info["chat_template"]
    return tok


# ---------------------------------------------------------------------------
# Configs
# ---------------------------------------------------------------------------

_STYLE_BY_TYPE = {
    **dict.fromkeys(
        [
            "bert",
            "distilbert",
            "electra",
            "albert",
            "megatron-bert",
            "mobilebert",
            "convbert",
            "ernie",
            "roformer",
            "squeezebert",
            "deberta",
            "deberta-v2",
            "funnel",
            "layoutlm",
            "canine",
        ],
        "bert",
    ),
    **dict.fromkeys(
        [
            "roberta",
            "xlm-roberta",
            "xlm-roberta-xl",
            "camembert",
            "longformer",
            "data2vec-text",
            "roberta-prelayernorm",
            "mpnet",
        ],
        "roberta",
    ),
    **dict.fromkeys(["bart", "mbart", "blenderbot", "blenderbot-small", "pegasus", "marian", "plbart"], "bart"),
    **dict.fromkeys(["t5", "mt5", "umt5", "longt5"], "t5"),
    **dict.fromkeys(
        [
            "gpt2",
            "gpt_neo",
            "gpt_neox",
            "gptj",
            "codegen",
            "bloom",
            "opt",
            "mpt",
            "gpt_bigcode",
            "phi",
            "falcon",
            "starcoder2",
            "stablelm",
        ],
        "gpt2",
    ),
    **dict.fromkeys(["qwen2", "qwen3", "qwen2_moe"], "qwen2"),
}


def style_for(model_type: str) -> str:
    """Tokenizer style used for ``model_type`` (``"llama"`` for unknown decoder types)."""
    return _STYLE_BY_TYPE.get(model_type, "llama")


# Candidate config field names, first present wins within each group.
_HIDDEN_KEYS = ("hidden_size", "n_embd", "d_model", "dim", "n_embed", "embedding_size")
_HEAD_KEYS = (
    "num_attention_heads",
    "n_head",
    "num_heads",
    "n_heads",
    "encoder_attention_heads",
    "decoder_attention_heads",
)
_FFN_KEYS = ("intermediate_size", "n_inner", "d_ff", "encoder_ffn_dim", "decoder_ffn_dim", "ffn_dim", "hidden_dim")
_POS_KEYS = ("max_position_embeddings", "n_positions", "n_ctx", "max_seq_len", "seq_length")
_INIT_KEYS = ("initializer_range", "init_std")


def _default_config_dict(model_type: str) -> dict:
    from transformers import CONFIG_MAPPING
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # default configs may warn about their own defaults
    try:
        return CONFIG_MAPPING[model_type]().to_dict()
    finally:
        hf_logging.set_verbosity(level)


def tiny_config(
    model_type: str,
    *,
    num_layers: int = 2,
    hidden: int = 32,
    heads: int = 4,
    vocab_size: int | None = None,
    **overrides,
):
    """A small ``PretrainedConfig`` for any ``model_type`` known to transformers.

    Layer count, width, heads, FFN size (2 x hidden), positions (512), init scale
    (0.2) and pad/bos/eos/decoder-start ids (from :func:`make_tokenizer` with
    :func:`style_for`) are set under whatever field names the family uses.
    ``vocab_size`` defaults to the tokenizer's length. ``overrides`` win.
    """
    from transformers import AutoConfig, CONFIG_MAPPING

    if model_type not in CONFIG_MAPPING:
        raise ValueError(f"tiny_config: unknown model_type {model_type!r} for this transformers version")
    if hidden % heads:
        raise ValueError(f"tiny_config: hidden ({hidden}) must be divisible by heads ({heads})")
    defaults = _default_config_dict(model_type)
    keys = set(defaults)
    tok = make_tokenizer(style_for(model_type))
    vocab = len(tok) if vocab_size is None else int(vocab_size)
    head_dim = hidden // heads
    kw: dict[str, Any] = {"vocab_size": vocab}

    def put(names, value, *, all_present=True):
        for n in names:
            if n in keys:
                kw[n] = value
                if not all_present:
                    return

    put(LAYER_KEYS, num_layers)
    put(_HIDDEN_KEYS[:-1], hidden, all_present=False)
    put(("embedding_size",), hidden)
    put(_HEAD_KEYS, heads)
    put(_FFN_KEYS if "dim" in keys else _FFN_KEYS[:-1], 2 * hidden)
    put(_POS_KEYS, 512)
    put(_INIT_KEYS, 0.2)
    put(("num_key_value_heads",), max(1, heads // 2))
    put(("head_dim", "d_kv", "attention_head_size"), head_dim)
    put(("rotary_dim",), head_dim)
    put(("ffn_dim",), 2 * hidden)
    for role, _field in (
        ("pad_token_id", "pad_token"),
        ("bos_token_id", "bos_token"),
        ("eos_token_id", "eos_token"),
        ("sep_token_id", "sep_token"),
    ):
        tid = getattr(tok, role, None)
        if tid is not None and (role in keys or role != "sep_token_id"):
            kw[role] = tid
        elif role in keys and role != "pad_token_id":
            kw[role] = None
    if "decoder_start_token_id" in keys or defaults.get("is_encoder_decoder"):
        kw["decoder_start_token_id"] = tok.pad_token_id if style_for(model_type) == "t5" else tok.eos_token_id
    if "forced_bos_token_id" in keys:
        kw["forced_bos_token_id"] = None
    if "forced_eos_token_id" in keys:
        kw["forced_eos_token_id"] = None
    kw.update(overrides)
    return AutoConfig.for_model(model_type, **kw)


# ---------------------------------------------------------------------------
# Models
# ---------------------------------------------------------------------------

TASKS: dict[str, str] = {"base": "AutoModel", **AUTO_CLASSES}
"""Task name -> transformers auto class name (the heads of :mod:`hfattr.hf.heads`, and the bare model)."""

_ENC = ("sequence-classification", "masked-lm", "token-classification", "base")
_DEC = ("causal-lm", "sequence-classification", "base")
ZOO: Mapping[str, tuple[str, ...]] = {
    "bert": _ENC,
    "roberta": _ENC,
    "distilbert": _ENC,
    "gpt2": _DEC,
    "llama": _DEC,
    "qwen2": _DEC,
    "bart": ("seq2seq", "base"),
    "t5": ("seq2seq", "base"),
    "phi3": _DEC,
    "mistral": _DEC,
    "gemma2": _DEC,
    "gpt_neox": _DEC,
    "opt": _DEC,
}
"""Zoo name -> supported tasks; the first task is the default for ``task="auto"``."""

ID2LABEL = {0: "NEGATIVE", 1: "POSITIVE"}


def list_tiny() -> list[str]:
    """Names of the zoo models."""
    return list(ZOO)


def _resolve_task(name: str, task: str) -> str:
    if task == "auto":
        if name not in ZOO:
            raise ValueError(
                f"tiny_model: task='auto' needs a zoo name ({list(ZOO)}); pass task= one of {list(TASKS)} for {name!r}"
            )
        return ZOO[name][0]
    if task not in TASKS:
        raise ValueError(f"tiny_model: unknown task {task!r}; expected 'auto' or one of {list(TASKS)}")
    if name in ZOO and task not in ZOO[name]:
        raise ValueError(f"tiny_model: task {task!r} is not supported for {name!r}; supported: {list(ZOO[name])}")
    return task


def tiny_model(
    name: str,
    task: str = "auto",
    *,
    seed: int = 0,
    num_layers: int = 2,
    dtype: torch.dtype = torch.float32,
    **config_overrides,
):
    """A tiny randomly initialised model in eval mode.

    ``name`` is a zoo name (see :data:`ZOO`) or any transformers ``model_type``
    (then ``task`` must be explicit). Weights depend only on ``seed``; the
    global RNG state is left untouched. ``attn_implementation`` may be passed in
    ``config_overrides``; otherwise transformers' default (sdpa) is used.
    """
    import transformers

    task = _resolve_task(name, task)
    attn = config_overrides.pop("attn_implementation", None)
    overrides = dict(config_overrides)
    if task in ("sequence-classification", "token-classification"):
        overrides.setdefault("num_labels", len(ID2LABEL))
        overrides.setdefault("id2label", dict(ID2LABEL))
        overrides.setdefault("label2id", {v: k for k, v in ID2LABEL.items()})
    config = tiny_config(name, num_layers=num_layers, **overrides)
    auto_cls = getattr(transformers, TASKS[task])
    extra = {} if attn is None else {"attn_implementation": attn}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        try:
            model = auto_cls.from_config(config, **extra)
        except ValueError as err:
            raise ValueError(f"tiny_model: {name!r} has no model for task {task!r}: {err}") from err
    if dtype != torch.float32:
        model = model.to(dtype)
    return model.eval()


def tiny(name: str, task: str = "auto", **kw):
    """``(model, tokenizer)`` for a zoo name; keywords go to :func:`tiny_model`."""
    model = tiny_model(name, task, **kw)
    return model, make_tokenizer(style_for(model.config.model_type))


def save_tiny(name: str, path: str | os.PathLike, task: str = "auto", **kw) -> str:
    """Save a tiny model and its tokenizer with ``save_pretrained``; returns the path."""
    model, tok = tiny(name, task, **kw)
    path = os.fspath(path)
    os.makedirs(path, exist_ok=True)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path
