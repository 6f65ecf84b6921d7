"""A planted-token classification task with a known answer, and a tiny model trained on it.

Every text is a run of distractor words with a few *planted* signal words inserted at random
places. Each class owns a few signal words; the label is the class whose signal words are in the
majority, always by exactly one (``(1, 0)``, ``(2, 1)``, ... planted words). So every planted word
of the winning class is necessary for the label, and a faithful attribution method must rank
those words above all others. Distractors are drawn from the same distribution for every class.

>>> task = PlantedTask()                                   # doctest: +SKIP
>>> model, tokenizer = train_planted_model(task, seed=0)   # a few seconds on one CPU core
>>> examples = task.generate(200, seed=1)                  # held-out texts with known planted words
>>> results = Explainer(model, tokenizer).explain([e.text for e in examples], method="ablation")
>>> hit_rate(results, examples)                            # share with the planted words on top
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch

__all__ = [
    "PlantedTask",
    "PlantedExample",
    "SIGNAL_WORDS",
    "DISTRACTOR_WORDS",
    "train_planted_model",
    "planted_tokens",
    "hit_rate",
    "gradient_x_input",
]

SIGNAL_WORDS: tuple[tuple[str, ...], ...] = (
    ("zork", "blip", "quax"),  # class 0
    ("frob", "wump", "glim"),  # class 1
)
"""Default signal words per class (invented words with no other meaning)."""

DISTRACTOR_WORDS: tuple[str, ...] = tuple(
    """
the a of to in on at by for with from and or but so then when where there here this that
these those it they we you he she is are was were be been have has had do did will would
can could some any many few more most other such same own very just only also still even
""".split()
)
"""Default distractor words (frequent English function words)."""


@dataclass(frozen=True)
class PlantedExample:
    """One text: its label, and the word indices of the deciding and of the opposing planted words."""

    text: str
    label: int
    planted: tuple[int, ...]  # word indices of the winning class's signal words
    opposing: tuple[int, ...] = ()  # word indices of the other classes' signal words
    words: tuple[str, ...] = field(default=(), repr=False)


@dataclass(frozen=True)
class PlantedTask:
    """The generator's settings.

    ``patterns`` lists ``(winning, opposing)`` counts of planted words; each example draws one.
    Texts have ``min_words``..``max_words`` words in all (planted words included).
    """

    signal_words: tuple[tuple[str, ...], ...] = SIGNAL_WORDS
    distractor_words: tuple[str, ...] = DISTRACTOR_WORDS
    patterns: tuple[tuple[int, int], ...] = ((1, 0), (2, 1))
    min_words: int = 8
    max_words: int = 14

    def __post_init__(self) -> None:
        if len(self.signal_words) < 2 or any(not ws for ws in self.signal_words):
            raise ValueError("signal_words must give at least two classes, each with at least one word")
        flat = [w for ws in self.signal_words for w in ws]
        if len(set(flat)) != len(flat) or set(flat) & set(self.distractor_words):
            raise ValueError("signal words must be distinct from each other and from the distractor words")
        if not self.distractor_words:
            raise ValueError("distractor_words must not be empty")
        for p in self.patterns:
            if len(p) != 2 or p[0] <= p[1] or p[1] < 0:
                raise ValueError(f"each pattern must be (winning, opposing) with winning > opposing >= 0, got {p!r}")
        most = max(a + b for a, b in self.patterns)
        if not most <= self.min_words <= self.max_words:
            raise ValueError(f"need {most} <= min_words <= max_words, got {self.min_words}, {self.max_words}")

    @property
    def n_classes(self) -> int:
        return len(self.signal_words)

    @property
    def vocab(self) -> list[str]:
        """Every word the texts use (distractors, then signal words)."""
        return list(self.distractor_words) + [w for ws in self.signal_words for w in ws]

    def tokenizer(self):
        """A word-level BERT-style fast tokenizer over :attr:`vocab` (one token per word)."""
        from ..testing import make_tokenizer

        return make_tokenizer("bert", self.vocab, model_max_length=self.max_words + 2)

    def generate(self, n: int, *, seed: int = 0, ties: float = 0.0) -> list[PlantedExample]:
        """``n`` examples, reproducible from ``seed``; labels are balanced in expectation.

        A share ``ties`` of them (used in training) has no majority: two classes with the same
        count of planted words (a count seen in ``patterns``, 0 included); their label is ``-1``.
        """
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"n must be a positive int, got {n!r}")
        if not 0.0 <= ties < 1.0:
            raise ValueError(f"ties must be a share in [0, 1), got {ties!r}")
        rng = random.Random(seed)
        counts = sorted({c for p in self.patterns for c in p} | {0})
        out = []
        for _ in range(n):
            label = rng.randrange(self.n_classes)
            win, opp = self.patterns[rng.randrange(len(self.patterns))]
            length = rng.randint(self.min_words, self.max_words)
            others = [c for c in range(self.n_classes) if c != label]
            other = rng.choice(others)
            if ties and rng.random() < ties:
                win = opp = rng.choice([c for c in counts if 2 * c <= self.min_words])
                label_out = -1
            else:
                label_out = label
            planted = [(rng.choice(self.signal_words[label]), True) for _ in range(win)]
            planted += [(rng.choice(self.signal_words[other]), False) for _ in range(opp)]
            words: list[tuple[str, bool | None]] = [
                (rng.choice(self.distractor_words), None) for _ in range(length - len(planted))
            ]
            for item in planted:
                words.insert(rng.randint(0, len(words)), item)
            text = " ".join(w for w, _ in words)
            out.append(
                PlantedExample(
                    text=text,
                    label=label_out,
                    planted=tuple(i for i, (_, s) in enumerate(words) if s is True),
                    opposing=tuple(i for i, (_, s) in enumerate(words) if s is False),
                    words=tuple(w for w, _ in words),
                )
            )
        return out


def train_planted_model(
    task: PlantedTask | None = None,
    *,
    seed: int = 0,
    n_train: int = 3000,
    epochs: int = 4,
    batch_size: int = 64,
    lr: float = 3e-3,
    hidden: int = 32,
    layers: int = 2,
    heads: int = 2,
    ties: float = 0.25,
):
    """Train a tiny BERT classifier on ``task`` (seeded; a few seconds on CPU).

    Returns ``(model, tokenizer)`` with the model in eval mode and labels ``CLASS_0``, ``CLASS_1``...
    The global torch random state is left as it was.
    """
    from transformers import BertConfig, BertForSequenceClassification

    task = task or PlantedTask()
    tok = task.tokenizer()
    config = BertConfig(  # type: ignore[call-arg]  # (config keywords are not in the stubs)
        vocab_size=len(tok),
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=2 * hidden,
        max_position_embeddings=task.max_words + 2,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        num_labels=task.n_classes,
        pad_token_id=tok.pad_token_id,
        id2label={i: f"CLASS_{i}" for i in range(task.n_classes)},
        label2id={f"CLASS_{i}": i for i in range(task.n_classes)},
    )
    data = task.generate(n_train, seed=seed + 1_000_003, ties=ties)
    enc = tok([e.text for e in data], padding=True, return_tensors="pt")
    labels = torch.full((n_train, task.n_classes), 1.0 / task.n_classes)  # ties: a uniform target
    for i, e in enumerate(data):
        if e.label >= 0:
            labels[i] = torch.nn.functional.one_hot(torch.tensor(e.label), task.n_classes).float()
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)  # fastest for a model this small, and the same weights on any machine
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = BertForSequenceClassification(config)
            _fit(model, enc, labels, epochs=epochs, batch_size=batch_size, lr=lr, seed=seed)
    finally:
        torch.set_num_threads(threads)
    model.eval()
    return model, tok


def _fit(model: Any, enc: Any, labels: torch.Tensor, *, epochs: int, batch_size: int, lr: float, seed: int) -> None:
    n = labels.shape[0]
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(n, generator=gen)
        for start in range(0, n, batch_size):
            idx = order[start : start + batch_size]
            logits = model(input_ids=enc["input_ids"][idx], attention_mask=enc["attention_mask"][idx]).logits
            loss = torch.nn.functional.cross_entropy(logits, labels[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()


def planted_tokens(result: Any, example: PlantedExample, *, opposing: bool = False) -> list[int]:
    """Token indices of ``result`` that belong to the example's deciding (or opposing) planted words."""
    if result.word_ids is None:
        raise ValueError("planted_tokens needs a Result with word_ids (made with a fast tokenizer)")
    words = set(example.opposing if opposing else example.planted)
    special = result.special_mask or [False] * result.n_tokens
    return [i for i, w in enumerate(result.word_ids) if w is not None and w in words and not special[i]]


def hit_rate(
    results: Sequence[Any], examples: Sequence[PlantedExample], *, by: str = "value", k: int | None = None
) -> float:
    """Share of examples whose planted tokens are all among the ``k`` top-ranked tokens.

    ``by="value"``: the deciding planted tokens must lead the ranking by signed score (a higher
    score supports the explained class). ``by="abs"``: every planted token, deciding or opposing,
    must lead the ranking by magnitude. ``k`` defaults to the number of tokens asked for; ties
    are broken by position.
    """
    if by not in ("value", "abs"):
        raise ValueError(f"by must be 'value' or 'abs', got {by!r}")
    if len(results) != len(examples):
        raise ValueError(f"got {len(results)} results for {len(examples)} examples")
    if not examples:
        raise ValueError("hit_rate needs at least one example")
    hits = 0
    for res, ex in zip(results, examples):
        want = planted_tokens(res, ex)
        if by == "abs":
            want += planted_tokens(res, ex, opposing=True)
        top = {i for _, _, i in res.top_k(len(want) if k is None else k, by=by)}
        hits += set(want) <= top
    return hits / len(examples)


def gradient_x_input(
    model: Any,
    texts: str | list[str],
    *,
    tokenizer: Any = None,
    target: Any = None,
    baseline: Any = "zero",
    batch_size: int = 32,
) -> Any:
    """Deprecated: ``Explainer.explain(texts, method="input_x_gradient", from_baseline=True, baseline=...)``.

    Gradient × input per token, ``Σ_d (e − b)_d · ∂target/∂e_d`` on the input embeddings.
    ``model`` is an :class:`~hfattr.Explainer` or a model (then pass ``tokenizer=``);
    ``baseline="zero"`` gives the classic gradient × input, ``"mask"`` etc. measure the input from
    that token's embedding. Special tokens score 0. Returns a Result (or a list for a list of
    texts), with ``method="input_x_gradient"``.
    """
    import warnings

    from ..explainer import Explainer

    warnings.warn(
        "hfattr.planted.gradient_x_input is deprecated; use Explainer.explain(..., "
        "method='input_x_gradient', from_baseline=True)",
        DeprecationWarning,
        stacklevel=2,
    )
    if not isinstance(model, Explainer):
        if tokenizer is None:
            raise TypeError("gradient_x_input: pass tokenizer= with a model (or give an Explainer)")
        model = Explainer(model, tokenizer)
    return model.explain(
        texts, method="input_x_gradient", target=target, batch_size=batch_size, baseline=baseline, from_baseline=True
    )
