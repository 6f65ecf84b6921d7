"""Generate the small synthetic English sentiment corpus shipped in ``data/sentiment/``.

The corpus is built from templates and word lists with a fixed seed, so running
this script again reproduces ``train.tsv`` and ``test.tsv`` byte for byte.
Each file has a ``text<TAB>label`` header followed by one sentence per line,
with ``label`` in ``{negative, positive}``. No sentence occurs in both splits.

Usage::

    python scripts/make_sentiment_corpus.py [--out data/sentiment] [--seed 0]
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO_ROOT / "data" / "sentiment"

# --------------------------------------------------------------------------- word lists
SUBJECTS = [
    "movie",
    "film",
    "plot",
    "acting",
    "story",
    "soundtrack",
    "script",
    "ending",
    "cast",
    "director",
    "dialogue",
    "performance",
    "show",
    "series",
    "episode",
    "food",
    "service",
    "meal",
    "restaurant",
    "staff",
    "waiter",
    "pizza",
    "coffee",
    "dessert",
    "menu",
    "book",
    "novel",
    "author",
    "writing",
    "characters",
    "chapter",
    "hotel",
    "room",
    "view",
    "product",
    "phone",
    "battery",
    "screen",
    "camera",
    "delivery",
    "price",
    "game",
    "album",
    "song",
    "concert",
    "app",
    "course",
    "teacher",
    "trip",
    "car",
]
DETERMINERS = ["the", "the", "the", "this", "that", "my", "our", "their"]

POSITIVE_ADJ = [
    "good",
    "great",
    "excellent",
    "wonderful",
    "amazing",
    "fantastic",
    "brilliant",
    "superb",
    "delightful",
    "enjoyable",
    "lovely",
    "charming",
    "outstanding",
    "perfect",
    "beautiful",
    "impressive",
    "fun",
    "pleasant",
    "terrific",
    "moving",
    "memorable",
    "friendly",
    "tasty",
    "delicious",
    "awesome",
    "nice",
    "engaging",
    "clever",
    "gorgeous",
    "satisfying",
    "fabulous",
    "marvelous",
    "splendid",
    "funny",
    "reliable",
    "comfortable",
]
NEGATIVE_ADJ = [
    "bad",
    "terrible",
    "awful",
    "horrible",
    "boring",
    "dull",
    "poor",
    "disappointing",
    "mediocre",
    "weak",
    "bland",
    "annoying",
    "dreadful",
    "lousy",
    "painful",
    "stupid",
    "slow",
    "rude",
    "overpriced",
    "forgettable",
    "tedious",
    "ugly",
    "broken",
    "pathetic",
    "unbearable",
    "sloppy",
    "stale",
    "noisy",
    "awkward",
    "confusing",
    "messy",
    "useless",
    "disgusting",
    "miserable",
    "clumsy",
    "unpleasant",
]
POSITIVE_VERB = ["loved", "enjoyed", "adored", "liked", "appreciated", "admired"]
NEGATIVE_VERB = ["hated", "disliked", "regretted", "despised", "loathed"]
POSITIVE_NOUN = ["a joy", "a masterpiece", "a delight", "a treat", "a gem", "a triumph", "a pleasure"]
NEGATIVE_NOUN = ["a disaster", "a mess", "a waste of time", "a letdown", "a failure", "a nightmare", "a joke"]
INTENSIFIERS = [
    "very",
    "really",
    "so",
    "extremely",
    "truly",
    "incredibly",
    "quite",
    "pretty",
    "absolutely",
    "totally",
    "remarkably",
    "rather",
    "genuinely",
]
FILLERS = [
    "honestly",
    "overall",
    "frankly",
    "to be fair",
    "i think",
    "in my opinion",
    "all in all",
    "clearly",
    "to be honest",
    "as expected",
    "surprisingly",
    "in the end",
    "i must say",
    "for what it is worth",
]
CONTEXTS = [
    "we went there on friday",
    "i watched it last night",
    "we tried it yesterday",
    "i read it on the train",
    "my friend picked it",
    "we stayed for two nights",
    "i bought it last week",
    "we saw it at the weekend",
    "i used it for a month",
    "my sister recommended it",
    "we came here for lunch",
    "i finished it in one day",
]
PUNCT = ["", "", ".", ".", "!", " .", " !"]


def _polarity_words(rng: random.Random, positive: bool):
    adj = POSITIVE_ADJ if positive else NEGATIVE_ADJ
    verb = POSITIVE_VERB if positive else NEGATIVE_VERB
    noun = POSITIVE_NOUN if positive else NEGATIVE_NOUN
    return rng.choice(adj), rng.choice(verb), rng.choice(noun)


def _np(rng: random.Random) -> str:
    return f"{rng.choice(DETERMINERS)} {rng.choice(SUBJECTS)}"


def _maybe_int(rng: random.Random, adj: str, p: float = 0.45) -> tuple[str, float]:
    """Maybe prefix an intensifier; return the phrase and its evidence weight."""
    if rng.random() < p:
        return f"{rng.choice(INTENSIFIERS)} {adj}", 1.5
    return adj, 1.0


def _copula(rng: random.Random) -> str:
    return rng.choice(["was", "was", "is", "is", "seemed", "felt", "looked"])


_BASE_FORM = {
    "loved": "love",
    "enjoyed": "enjoy",
    "adored": "adore",
    "liked": "like",
    "appreciated": "appreciate",
    "admired": "admire",
    "hated": "hate",
    "disliked": "dislike",
    "regretted": "regret",
    "despised": "despise",
    "loathed": "loathe",
}


def make_sentence(rng: random.Random) -> tuple[str, float]:
    """Return one ``(text, score)`` pair drawn from the template mixture.

    ``score`` is the sentence's signed sentiment evidence: each sentiment word adds
    +-1 (+-1.5 when intensified or strong), negation flips the sign, and in
    "A but B" the clause before "but" counts half and the one after it 1.5 times.
    It is never zero; its sign is the gold label.
    """
    sign = 1.0 if rng.random() < 0.5 else -1.0
    positive = sign > 0
    adj, verb, noun = _polarity_words(rng, positive)
    kind = rng.choices(
        [
            "simple",
            "filler",
            "verb",
            "noun",
            "and",
            "but",
            "what",
            "list",
            "list3",
            "context",
            "negated",
            "recommend",
            "comparative",
        ],
        weights=[16, 10, 9, 6, 10, 8, 5, 5, 8, 8, 12, 5, 5],
    )[0]

    if kind == "simple":
        phrase, w = _maybe_int(rng, adj)
        text, score = f"{_np(rng)} {_copula(rng)} {phrase}", sign * w
    elif kind == "filler":
        phrase, w = _maybe_int(rng, adj)
        text, score = f"{rng.choice(FILLERS)} , {_np(rng)} {_copula(rng)} {phrase}", sign * w
    elif kind == "verb":
        adv = rng.choice(["", "", "really ", "truly ", "absolutely "])
        text, score = f"i {adv}{verb} {_np(rng)}", sign * (1.5 if adv else 1.0)
    elif kind == "noun":
        text, score = f"{_np(rng)} was {noun}", sign * 1.5
    elif kind == "and":
        p1, w1 = _maybe_int(rng, adj)
        p2, w2 = _maybe_int(rng, _polarity_words(rng, positive)[0])
        text, score = f"{_np(rng)} was {p1} and {_np(rng)} was {p2}", sign * (w1 + w2)
    elif kind == "but":
        p1, w1 = _maybe_int(rng, _polarity_words(rng, not positive)[0])
        p2, w2 = _maybe_int(rng, adj)
        text, score = f"{_np(rng)} was {p1} but {_np(rng)} was {p2}", sign * (1.5 * w2 - 0.5 * w1)
    elif kind == "what":
        article = "an" if adj[0] in "aeiou" else "a"
        text, score = f"what {article} {adj} {rng.choice(SUBJECTS)}", sign
    elif kind == "list":
        adj2 = _polarity_words(rng, positive)[0]
        text, score = f"{adj} {rng.choice(SUBJECTS)} , {adj2} {rng.choice(SUBJECTS)}", 2 * sign
    elif kind == "list3":
        # Three short verdicts of mixed polarity: the majority decides.
        signs = [sign, sign, -sign]
        rng.shuffle(signs)
        items = [f"{_polarity_words(rng, s > 0)[0]} {rng.choice(SUBJECTS)}" for s in signs]
        text, score = " , ".join(items), float(sum(signs))
    elif kind == "context":
        phrase, w = _maybe_int(rng, adj)
        text, score = f"{rng.choice(CONTEXTS)} and {_np(rng)} was {phrase}", sign * w
    elif kind == "negated":
        # "not <positive word>" -> negative; "not <negative word>" -> positive.
        flipped = _polarity_words(rng, not positive)
        form = rng.random()
        if form < 0.55:
            neg = rng.choice(["not", "not", "not at all", "never"] + ([] if positive else ["not very"]))
            if neg == "not at all":
                text = f"{_np(rng)} was not at all {flipped[0]}"
            else:
                text = f"{_np(rng)} {rng.choice(['was', 'is'])} {neg} {flipped[0]}"
        elif form < 0.85:
            aux = rng.choice(["did not", "didn't", "never"] + ([] if positive else ["did not really"]))
            text = f"i {aux} {_BASE_FORM[flipped[1]]} {_np(rng)}"
        else:
            text = f"{_np(rng)} was not {flipped[2]}"
        score = sign
    elif kind == "recommend":
        if positive:
            text = f"i would {rng.choice(['definitely', 'happily', 'totally'])} recommend {_np(rng)}"
        else:
            text = f"i would {rng.choice(['never', 'not'])} recommend {_np(rng)}"
        score = 1.5 * sign
    else:  # comparative
        if positive:
            phrase = rng.choice(["one of the best", "the best", "better than i expected"])
        else:
            phrase = rng.choice(["one of the worst", "the worst", "worse than i expected"])
        text, score = f"{_np(rng)} was {phrase}", sign * (1.0 if "expected" in phrase else 1.5)

    text = text + rng.choice(PUNCT)
    if rng.random() < 0.3:
        text = text[0].upper() + text[1:]
    return " ".join(text.split()), score


def make_corpus(*, n_train: int = 6000, n_test: int = 1000, seed: int = 0):
    """Return ``(train, test)`` lists of unique ``(text, label)`` pairs with no text in both.

    The label is the sign of the sentence score from :func:`make_sentence`.
    """
    rng = random.Random(seed)
    seen: set[str] = set()
    rows: list[tuple[str, str]] = []
    target = n_train + n_test
    attempts = 0
    while len(rows) < target:
        attempts += 1
        if attempts > 100 * target:
            raise RuntimeError("could not generate enough unique sentences")
        text, score = make_sentence(rng)
        key = text.lower().rstrip(" .!")
        if key in seen:
            continue
        seen.add(key)
        rows.append((text, "positive" if score > 0 else "negative"))
    rng.shuffle(rows)
    return rows[:n_train], rows[n_train:]


def write_tsv(path: Path, rows) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="\n") as fh:
        fh.write("text\tlabel\n")
        for text, label in rows:
            fh.write(f"{text}\t{label}\n")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n-train", type=int, default=6000)
    parser.add_argument("--n-test", type=int, default=1000)
    args = parser.parse_args(argv)
    train, test = make_corpus(n_train=args.n_train, n_test=args.n_test, seed=args.seed)
    write_tsv(args.out / "train.tsv", train)
    write_tsv(args.out / "test.tsv", test)
    for name, rows in (("train", train), ("test", test)):
        pos = sum(label == "positive" for _, label in rows)
        print(f"{name}: {len(rows)} sentences ({pos} positive, {len(rows) - pos} negative)")


if __name__ == "__main__":
    main()
