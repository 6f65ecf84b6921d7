"""The embedded default sentiment model: offline loading, accuracy, sensible ablations, packaging."""

from __future__ import annotations

import fnmatch
import glob
import importlib.util
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import torch

from hfattr.hf.default_model import DEFAULT_MODEL_DIR, DEFAULT_MODEL_NAME, load_default_model

REPO = Path(__file__).resolve().parents[1]
CORPUS = REPO / "data" / "sentiment"
LABEL_IDS = {"negative": 0, "positive": 1}


def _load_script(name: str):
    path = REPO / "scripts" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"_hfattr_script_{name}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _read_tsv(path: Path) -> list[tuple[str, str]]:
    lines = path.read_text(encoding="utf-8").splitlines()
    assert lines[0] == "text\tlabel"
    return [tuple(line.split("\t")) for line in lines[1:]]


@pytest.fixture(scope="module")
def loaded():
    return load_default_model()


def _loo_drops(model, tokenizer, text: str):
    """Predicted class, word tokens, and drop of that class's logit when each is [MASK]ed."""
    ids = tokenizer(text, return_tensors="pt")["input_ids"]
    n = ids.shape[1]
    batch = ids.repeat(n - 1, 1)  # row 0: original; row i: token i masked (1..n-2)
    for i in range(1, n - 1):
        batch[i, i] = tokenizer.mask_token_id
    with torch.no_grad():
        logits = model(input_ids=batch).logits
    cls = int(logits[0].argmax())
    drops = (logits[0, cls] - logits[1:, cls]).tolist()
    tokens = tokenizer.convert_ids_to_tokens(ids[0].tolist())[1:-1]
    return cls, tokens, drops


def test_loads_offline_in_eval_mode(loaded):
    model, tokenizer = loaded
    assert DEFAULT_MODEL_NAME == "hfattr/default-sentiment"
    assert DEFAULT_MODEL_DIR.is_dir()
    assert DEFAULT_MODEL_DIR.parent.parent == Path(sys.modules["hfattr"].__file__).resolve().parent
    assert not model.training
    assert type(model).__name__ == "BertForSequenceClassification"
    assert model.config.id2label == {0: "NEGATIVE", 1: "POSITIVE"}
    assert model.config.hidden_size == 64 and model.config.num_hidden_layers == 2
    for name in ("pad", "unk", "cls", "sep", "mask"):
        assert getattr(tokenizer, f"{name}_token") == f"[{name.upper()}]"
    assert tokenizer.vocab_size == model.config.vocab_size


def test_tokenizer_is_bert_style_with_offsets(loaded):
    _, tokenizer = loaded
    text = "The Movie was GREAT, truly!"
    enc = tokenizer(text, return_offsets_mapping=True)
    tokens = tokenizer.convert_ids_to_tokens(enc["input_ids"])
    assert tokens == ["[CLS]", "the", "movie", "was", "great", ",", "truly", "!", "[SEP]"]
    spans = [text[a:b].lower() for a, b in enc["offset_mapping"][1:-1]]
    assert spans == tokens[1:-1]
    assert enc["offset_mapping"][0] == (0, 0) and enc["offset_mapping"][-1] == (0, 0)
    assert tokenizer.convert_ids_to_tokens(tokenizer("zyzzyva")["input_ids"])[1] == "[UNK]"


def test_test_set_accuracy_at_least_090(loaded):
    model, tokenizer = loaded
    rows = _read_tsv(CORPUS / "test.tsv")
    correct = 0
    with torch.no_grad():
        for start in range(0, len(rows), 250):
            chunk = rows[start : start + 250]
            enc = tokenizer([t for t, _ in chunk], padding=True, return_tensors="pt")
            pred = model(**enc).logits.argmax(-1)
            correct += int((pred == torch.tensor([LABEL_IDS[y] for _, y in chunk])).sum())
    accuracy = correct / len(rows)
    assert accuracy >= 0.9, accuracy


@pytest.mark.parametrize(
    "text, label, sentiment_words",
    [
        ("the movie was great and the acting was wonderful", 1, {"great", "wonderful"}),
        ("the food was terrible", 0, {"terrible"}),
        ("honestly , the service was awful", 0, {"awful"}),
        ("what a delightful book", 1, {"delightful"}),
        ("i loved this film", 1, {"loved"}),
        ("this book is amazing", 1, {"amazing"}),
        ("the plot was boring and the ending was dull", 0, {"boring", "dull"}),
        ("the movie was not good", 0, {"not", "good"}),
    ],
)
def test_sentiment_word_has_largest_leave_one_out_drop(loaded, text, label, sentiment_words):
    model, tokenizer = loaded
    cls, tokens, drops = _loo_drops(model, tokenizer, text)
    assert cls == label
    ranked = sorted(zip(drops, tokens), reverse=True)
    assert ranked[0][1] in sentiment_words, ranked
    assert ranked[0][0] > 0.5, ranked  # a real effect, not noise around zero


def test_leave_one_out_top_token_is_a_sentiment_word_on_test_slice(loaded):
    model, tokenizer = loaded
    gen = _load_script("make_sentiment_corpus")
    lexicon = set(gen.POSITIVE_ADJ + gen.NEGATIVE_ADJ + gen.POSITIVE_VERB + gen.NEGATIVE_VERB)
    lexicon |= set(gen._BASE_FORM.values())
    lexicon |= {w.split()[-1] for w in gen.POSITIVE_NOUN + gen.NEGATIVE_NOUN} | {"waste", "time"}
    lexicon |= {"not", "never", "t", "best", "worst", "better", "worse", "recommend"}
    lexicon |= {"definitely", "happily", "totally"}  # "i would definitely recommend ..."
    rows = _read_tsv(CORPUS / "test.tsv")[:150]
    # All masked variants of all sentences in one padded batch.
    variants, owners, tokens_of = [], [], []
    for k, (text, _) in enumerate(rows):
        ids = tokenizer(text)["input_ids"]
        tokens_of.append(tokenizer.convert_ids_to_tokens(ids)[1:-1])
        for i in range(len(ids) - 1):  # i = 0: original; else token i masked
            v = list(ids)
            if i:
                v[i] = tokenizer.mask_token_id
            variants.append(v)
            owners.append(k)
    enc = tokenizer.pad({"input_ids": variants}, return_tensors="pt")
    with torch.no_grad():
        logits = model(**enc).logits
    hits, pos = 0, 0
    for _k, tokens in enumerate(tokens_of):
        block = logits[pos : pos + len(tokens) + 1]
        pos += len(tokens) + 1
        cls = int(block[0].argmax())
        drops = block[0, cls] - block[1:, cls]
        hits += tokens[int(drops.argmax())] in lexicon
    assert pos == len(owners)
    assert hits / len(rows) >= 0.9, hits


def test_corpus_format_and_reproducible():
    train, test = _read_tsv(CORPUS / "train.tsv"), _read_tsv(CORPUS / "test.tsv")
    assert len(train) >= 2000 and len(test) >= 500
    for rows in (train, test):
        assert {y for _, y in rows} == {"negative", "positive"}
        assert all(len(r) == 2 and r[0].strip() for r in rows)
    assert not {t.lower() for t, _ in train} & {t.lower() for t, _ in test}
    gen = _load_script("make_sentiment_corpus")
    regen_train, regen_test = gen.make_corpus(n_train=len(train), n_test=len(test), seed=0)
    assert regen_train == train and regen_test == test


def test_packaged_files_are_covered_by_package_data():
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    patterns = pyproject["tool"]["setuptools"]["package-data"]["hfattr"]
    package_dir = REPO / "hfattr"
    matched = set()
    for pattern in patterns:  # setuptools expands package-data globs recursively
        for hit in glob.glob(pattern, root_dir=package_dir, recursive=True):
            matched.add(Path(hit).as_posix())
    needed = ["config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "model_card.md"]
    shipped = sorted(p.name for p in DEFAULT_MODEL_DIR.iterdir() if p.is_file())
    assert set(needed) <= set(shipped), shipped
    for name in shipped:
        assert f"data/default_model/{name}" in matched, (name, patterns)
    manifest = REPO / "MANIFEST.in"
    if manifest.exists():
        for line in manifest.read_text(encoding="utf-8").splitlines():
            words = line.split()
            if words and words[0] in {"exclude", "global-exclude", "recursive-exclude", "prune"}:
                for name in shipped:
                    rel = f"hfattr/data/default_model/{name}"
                    assert not any(
                        fnmatch.fnmatch(rel, w) or fnmatch.fnmatch(name, w) or rel.startswith(w.rstrip("/") + "/")
                        for w in words[1:]
                    ), line
    if shutil.which("git") and (REPO / ".git").exists():
        paths = [f"hfattr/data/default_model/{name}" for name in shipped]
        paths += ["data/sentiment/train.tsv", "data/sentiment/test.tsv"]
        ignored = subprocess.run(
            ["git", "check-ignore", *paths], cwd=REPO, capture_output=True, text=True
        ).stdout.split()
        assert not ignored, ignored
