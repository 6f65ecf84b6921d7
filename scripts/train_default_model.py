"""Train the tiny sentiment classifier that ships inside hfattr as its default model.

Steps: build a lowercase WordLevel tokenizer (BERT-style ``[CLS] x [SEP]``) from
``data/sentiment/train.tsv``, build a tiny ``BertForSequenceClassification`` from a
config, train it on CPU with a fixed seed, report test accuracy, and save model +
tokenizer + ``model_card.md`` into ``hfattr/data/default_model/``.

Usage::

    python scripts/make_sentiment_corpus.py     # (re)generate the corpus first
    python scripts/train_default_model.py [--out DIR] [--epochs N] [--seed S]

Runs in well under two minutes on two CPU cores.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import time
from pathlib import Path

import torch
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
from transformers import BertConfig, BertForSequenceClassification, PreTrainedTokenizerFast

REPO_ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = REPO_ROOT / "data" / "sentiment"
DEFAULT_OUT = REPO_ROOT / "hfattr" / "data" / "default_model"
DISPLAY_NAME = "hfattr/default-sentiment"
LABELS = {"negative": 0, "positive": 1}
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
MAX_LEN = 128


def read_tsv(path: Path) -> list[tuple[str, int]]:
    """Read a ``text<TAB>label`` file (with header) into ``(text, label_id)`` pairs."""
    rows = []
    with open(path, encoding="utf-8") as fh:
        header = fh.readline().rstrip("\n").split("\t")
        if header != ["text", "label"]:
            raise ValueError(f"{path}: expected header 'text<TAB>label', got {header!r}")
        for line in fh:
            text, label = line.rstrip("\n").split("\t")
            rows.append((text, LABELS[label]))
    return rows


def build_tokenizer(texts: list[str]) -> PreTrainedTokenizerFast:
    """WordLevel tokenizer over lowercased words and punctuation, wrapped for transformers."""
    tok = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True, strip_accents=True, clean_text=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    trainer = trainers.WordLevelTrainer(special_tokens=SPECIALS, min_frequency=1)
    tok.train_from_iterator(texts, trainer=trainer)
    cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        model_max_length=MAX_LEN,
        padding_side="right",
    )


def build_model(vocab_size: int, pad_id: int) -> BertForSequenceClassification:
    config = BertConfig(
        vocab_size=vocab_size,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=128,
        max_position_embeddings=MAX_LEN,
        type_vocab_size=2,
        hidden_dropout_prob=0.1,
        attention_probs_dropout_prob=0.1,
        pad_token_id=pad_id,
        num_labels=2,
        id2label={0: "NEGATIVE", 1: "POSITIVE"},
        label2id={"NEGATIVE": 0, "POSITIVE": 1},
    )
    return BertForSequenceClassification(config)


def _mask_augment(ids: torch.Tensor, special: torch.Tensor, mask_id: int, p: float, gen) -> torch.Tensor:
    """Replace a fraction ``p`` of ordinary tokens by [MASK] so the model sees masked inputs."""
    hit = (torch.rand(ids.shape, generator=gen) < p) & ~special
    return torch.where(hit, torch.full_like(ids, mask_id), ids)


@torch.no_grad()
def evaluate(model, tokenizer, rows, *, batch_size: int = 256) -> float:
    model.eval()
    correct = 0
    for i in range(0, len(rows), batch_size):
        chunk = rows[i : i + batch_size]
        enc = tokenizer([t for t, _ in chunk], padding=True, return_tensors="pt")
        pred = model(**enc).logits.argmax(-1)
        correct += int((pred == torch.tensor([y for _, y in chunk])).sum())
    return correct / len(rows)


def write_model_card(out: Path, *, stats: dict) -> None:
    card = f"""# {DISPLAY_NAME}

The default model embedded in the `hfattr` package, so that `hfattr explain "TEXT"`
works offline. It is a **toy**: a tiny BERT sentiment classifier trained from scratch
on a small synthetic, template-generated English corpus (`data/sentiment/` in the
hfattr repository). Use it for demos and tests of attribution methods, not for real
sentiment analysis.

- Architecture: `BertForSequenceClassification`, hidden size 64, 2 layers, 4 heads,
  intermediate size 128, max 128 positions; {stats["n_params"]:,} parameters.
- Labels: `0 = NEGATIVE`, `1 = POSITIVE`.
- Tokenizer: `tokenizers` WordLevel over lowercased words and punctuation
  (BertNormalizer + BertPreTokenizer), `[CLS] x [SEP]`, specials
  `[PAD] [UNK] [CLS] [SEP] [MASK]`; vocabulary of {stats["vocab_size"]} entries built
  from the training split. Words outside it map to `[UNK]`.
- Training: {stats["n_train"]} sentences, {stats["epochs"]} epochs, AdamW lr {stats["lr"]}
  (weight decay {stats["weight_decay"]}, linear warmup/decay), batch {stats["batch_size"]},
  seed {stats["seed"]}, CPU, with {stats["mask_prob"]:.0%} of ordinary tokens replaced by
  `[MASK]` during training (so leave-one-token-out ablation with `[MASK]` stays in
  distribution).
- Test accuracy: **{stats["test_accuracy"]:.4f}** on {stats["n_test"]} held-out sentences
  from the same templates (not real reviews).
- Limitations: the vocabulary is tiny (other words become `[UNK]`), the sentences are
  synthetic, and when several sentiment words agree the prediction is saturated, so
  removing any single one of them changes the logit only a little.
- Made with torch {torch.__version__} and `scripts/train_default_model.py`; retrain with
  `python scripts/make_sentiment_corpus.py && python scripts/train_default_model.py`.
"""
    (out / "model_card.md").write_text(card, encoding="utf-8")


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA_DIR)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--mask-prob", type=float, default=0.1, help="[MASK] augmentation rate")
    parser.add_argument("--weight-decay", type=float, default=0.01)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)

    t0 = time.perf_counter()
    torch.set_num_threads(args.threads)
    random.seed(args.seed)
    torch.manual_seed(args.seed)
    gen = torch.Generator().manual_seed(args.seed)

    train = read_tsv(args.data / "train.tsv")
    test = read_tsv(args.data / "test.tsv")
    tokenizer = build_tokenizer([t for t, _ in train])
    model = build_model(len(tokenizer), tokenizer.pad_token_id)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"vocab {len(tokenizer)}, params {n_params:,}")

    special_ids = torch.tensor(tokenizer.all_special_ids)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    steps_per_epoch = math.ceil(len(train) / args.batch_size)
    total = steps_per_epoch * args.epochs
    warmup = max(1, total // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min((s + 1) / warmup, max(0.0, (total - s) / max(1, total - warmup)))
    )

    rng = random.Random(args.seed)
    for epoch in range(args.epochs):
        model.train()
        order = list(range(len(train)))
        rng.shuffle(order)
        loss_sum = 0.0
        for i in range(0, len(order), args.batch_size):
            chunk = [train[j] for j in order[i : i + args.batch_size]]
            enc = tokenizer([t for t, _ in chunk], padding=True, return_tensors="pt")
            special = torch.isin(enc["input_ids"], special_ids)
            enc["input_ids"] = _mask_augment(enc["input_ids"], special, tokenizer.mask_token_id, args.mask_prob, gen)
            out = model(**enc, labels=torch.tensor([y for _, y in chunk]))
            opt.zero_grad()
            out.loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            loss_sum += out.loss.item() * len(chunk)
        acc = evaluate(model, tokenizer, test)
        print(f"epoch {epoch + 1}: train loss {loss_sum / len(train):.4f}, test acc {acc:.4f}")

    model.eval()
    test_acc = evaluate(model, tokenizer, test)
    args.out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(args.out, safe_serialization=True)
    tokenizer.save_pretrained(args.out)
    stats = {
        "n_params": n_params,
        "vocab_size": len(tokenizer),
        "n_train": len(train),
        "n_test": len(test),
        "epochs": args.epochs,
        "lr": args.lr,
        "batch_size": args.batch_size,
        "seed": args.seed,
        "mask_prob": args.mask_prob,
        "weight_decay": args.weight_decay,
        "test_accuracy": test_acc,
    }
    write_model_card(args.out, stats=stats)
    size = sum(p.stat().st_size for p in args.out.iterdir() if p.is_file())
    print(json.dumps(stats))
    print(f"saved to {args.out} ({size / 1e6:.2f} MB) in {time.perf_counter() - t0:.1f}s")
    return stats


if __name__ == "__main__":
    main()
