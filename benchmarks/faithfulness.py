"""Faithfulness of every token-attribution method: comprehensiveness, sufficiency, log-odds, AOPC.

Two settings:
  * the embedded default sentiment model on the first ``--n`` sentences of its test corpus
    ``data/sentiment/test.tsv``, explaining the predicted class;
  * the planted-token task (``hfattr.planted``): a tiny BERT trained with seed 0 on 3000 examples,
    explained on ``--n`` held-out examples (seed 12345) at their label; here the share of examples
    whose planted tokens lead the ranking is reported too.

Methods: every registered Explainer method that attributes the explained output to the input
tokens (``ablation``, ``sig``, ``lrp`` when registered — ``layer_ablation`` and
``neuron_gradient`` explain sites and neurons, so they are left out), gradient × input
(the ``input_x_gradient`` method), plain Integrated Gradients as the reference point
(implemented below with torch: the same mask-token baseline and Gauss-Legendre rule as SIG, one
path for the whole text) and random scores as the floor.

Metrics (``hfattr.evaluate``), all at the top 20% of the non-special tokens ranked by signed score:
comprehensiveness (tokens removed; higher is better), sufficiency (only they kept; lower is
better), log-odds (they are replaced by [MASK]; lower is better), and AOPC over the deletion and
insertion curves at 10%, 20%, ..., 100% (removal).

    python benchmarks/faithfulness.py [--n 200] [--steps 50] [--write docs/faithfulness.md]

``--write`` replaces the part of the file between the ``faithfulness-table`` markers with the
tables. ``--quick`` runs a smoke version (20 texts, 8 steps).
"""

from __future__ import annotations

import argparse
import csv
import math
import platform
import re
import time
from pathlib import Path

import numpy as np
import torch

import hfattr
from hfattr import evaluate as ev
from hfattr.explainer import slice_encoded
from hfattr.hf.default_model import load_default_model
from hfattr.hf.prepare import prepare
from hfattr.hf.text import encode
from hfattr.methods.fields import as_result_kwargs, result_fields
from hfattr.planted import PlantedTask, hit_rate, train_planted_model
from hfattr.result import Result

ROOT = Path(__file__).resolve().parent.parent
METRICS = ("comprehensiveness", "sufficiency", "log_odds", "aopc_deletion", "aopc_insertion")
HEAD = ("comp. ↑", "suff. ↓", "log-odds ↓", "AOPC del. ↑", "AOPC ins. ↓")
START, END = "<!-- faithfulness-table:start -->", "<!-- faithfulness-table:end -->"


def integrated_gradients(
    explainer: hfattr.Explainer, texts: list[str], targets: list, *, n_steps: int = 50, batch_size: int = 16
) -> list[Result]:
    """Plain IG on the input embeddings from the mask-token baseline (special tokens keep their own
    embedding), Gauss-Legendre rule; a token's score is the sum over its embedding."""
    model, tok = explainer.model, explainer.tokenizer
    nodes, weights = np.polynomial.legendre.leggauss(n_steps)
    alphas = torch.tensor(0.5 * (nodes + 1))
    w = torch.tensor(0.5 * weights)
    enc_all, _ = encode(tok, texts)
    out = []
    model.eval()
    for a in range(0, len(texts), batch_size):
        b = min(len(texts), a + batch_size)
        prep = prepare(model, tok, slice_encoded(enc_all, a, b), targets[a:b], baseline="mask")
        x = prep.embeds
        base = torch.where(prep.fixed.unsqueeze(-1), x, prep.baseline)
        B = x.shape[0]
        path = base.unsqueeze(0) + alphas.view(-1, 1, 1, 1).to(x) * (x - base).unsqueeze(0)  # (m, B, L, D)
        path = path.reshape(n_steps * B, *x.shape[1:]).requires_grad_(True)
        args = [
            t.repeat(n_steps, *([1] * (t.dim() - 1))) if isinstance(t, torch.Tensor) else t for t in prep.forward_args()
        ]
        with torch.enable_grad():
            y = prep.forward(path, *args)[:, 0]
            (g,) = torch.autograd.grad(y.sum(), path)
        avg = (g.reshape(n_steps, B, *x.shape[1:]) * w.view(-1, 1, 1, 1).to(g)).sum(0)
        scores = ((x - base) * avg).sum(-1)
        for i in range(B):
            out.append(
                Result(
                    method="integrated_gradients",
                    options={"n_steps": n_steps},
                    model_name=explainer.model_name,
                    **as_result_kwargs(result_fields(prep, i, scores[i]), "grad_x_input"),
                )
            )
    return out


def random_scores(results: list[Result], seed: int = 0) -> list[Result]:
    g = torch.Generator().manual_seed(seed)
    return [
        Result(
            tokens=r.tokens,
            token_ids=r.token_ids,
            scores=torch.rand(r.n_tokens, generator=g),
            special_mask=r.special_mask,
            word_ids=r.word_ids,
            target=r.target,
            method="random",
        )
        for r in results
    ]


def ensure_lrp() -> bool:
    """Register ``hfattr.methods.lrp`` for this process when the package has it but does not list it
    yet; returns True when it did."""
    if "lrp" in hfattr.list_methods():
        return False
    try:
        from hfattr.methods.lrp import lrp
    except ImportError:
        return False
    hfattr.register_method("lrp", lrp, needs_grad=True, description="LRP (registered by the benchmark)")
    return True


def methods(steps: int) -> list[tuple[str, dict]]:
    names = hfattr.list_methods()
    out = [("ablation", {})]
    if "sig" in names:
        out.append(("sig", {"n_steps": steps}))
    if "lrp" in names:
        out += [("lrp", {"composite": "attnlrp"}), ("lrp", {"composite": "cp-lrp"})]
    return out


def run_setting(explainer: hfattr.Explainer, texts: list[str], targets: list, steps: int, examples=None) -> list[dict]:
    rows = []

    def record(label: str, results: list[Result], seconds: float | None) -> None:
        vals = ev.faithfulness(explainer, results, metrics=METRICS, top_k=0.2, steps=10)
        row = {"method": label, "seconds": seconds, "n": len(results)}
        for m in METRICS:
            v = vals[m]
            row[m] = float(v.mean())
            row[m + "_se"] = float(v.std() / math.sqrt(len(v))) if len(v) > 1 else float("nan")
        if examples is not None:
            row["hit_value"] = hit_rate(results, examples)
            row["hit_abs"] = hit_rate(results, examples, by="abs")
        rows.append(row)
        print(
            f"  {label:<26} "
            + "  ".join(f"{m}={row[m]:+.4f}" for m in METRICS)
            + (f"  hits={row['hit_value']:.3f}/{row['hit_abs']:.3f}" if examples is not None else "")
            + (f"  {seconds:.2f}s" if seconds is not None else ""),
            flush=True,
        )

    first = None
    for name, opts in methods(steps):
        t0 = time.perf_counter()
        res = explainer.explain(texts, method=name, target=targets, **opts)
        label = name + (f" ({opts['composite']})" if "composite" in opts else "")
        record(label, res, time.perf_counter() - t0)
        first = first or res
    t0 = time.perf_counter()
    res = explainer.explain(texts, method="input_x_gradient", target=targets, baseline="zero", from_baseline=True)
    record("gradient × input", res, time.perf_counter() - t0)
    t0 = time.perf_counter()
    res = integrated_gradients(explainer, texts, targets, n_steps=steps)
    record("Integrated Gradients (ref.)", res, time.perf_counter() - t0)
    record("random (floor)", random_scores(first), None)
    return rows


def table(rows: list[dict], planted: bool) -> str:
    head = ["method", *HEAD] + (["planted on top (signed / abs)"] if planted else []) + ["time (s)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    best = {
        m: (max if m in ("comprehensiveness", "aopc_deletion") else min)(
            round(r[m], 3) for r in rows if r["method"] != "random (floor)"
        )
        for m in METRICS
    }
    for r in rows:
        cells = [r["method"]]
        for m in METRICS:
            s = f"{r[m]:+.3f}"
            top = round(r[m], 3) == best[m] and r["method"] != "random (floor)"
            cells.append(f"**{s}**" if top else s)
        if planted:
            cells.append(f"{r['hit_value']:.1%} / {r['hit_abs']:.1%}")
        cells.append("—" if r["seconds"] is None else f"{r['seconds']:.2f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=200, help="texts per setting (default 200)")
    ap.add_argument("--steps", type=int, default=50, help="integration steps of SIG and IG (default 50)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1: fastest for tiny models)")
    ap.add_argument("--write", default=None, metavar="MD", help="put the tables into this Markdown file")
    ap.add_argument("--quick", action="store_true", help="smoke run: 20 texts, 8 steps")
    args = ap.parse_args()
    if args.quick:
        args.n, args.steps = 20, 8
    torch.set_num_threads(args.threads)
    registered_lrp = ensure_lrp()

    with open(ROOT / "data" / "sentiment" / "test.tsv", encoding="utf-8") as fh:
        texts = [row["text"] for row in csv.DictReader(fh, delimiter="\t")][: args.n]
    model, tok = load_default_model()
    default = hfattr.Explainer(model, tok, model_name="hfattr/default-sentiment")
    print(f"default model, {len(texts)} test sentences (predicted class)")
    rows_default = run_setting(default, texts, [None] * len(texts), args.steps)

    task = PlantedTask()
    t0 = time.perf_counter()
    pmodel, ptok = train_planted_model(task, seed=0)
    train_s = time.perf_counter() - t0
    examples = task.generate(args.n, seed=12345)
    planted = hfattr.Explainer(pmodel, ptok, model_name="planted")
    with torch.no_grad():
        enc = ptok([e.text for e in examples], padding=True, return_tensors="pt")
        acc = (pmodel(**enc).logits.argmax(-1) == torch.tensor([e.label for e in examples])).double().mean()
    print(
        f"planted task, {len(examples)} held-out examples (label); trained in {train_s:.1f} s, "
        f"held-out accuracy {acc:.3f}"
    )
    rows_planted = run_setting(planted, [e.text for e in examples], [e.label for e in examples], args.steps, examples)

    se = ", ".join(
        f"{h.rsplit(' ', 1)[0]} {max(r[m + '_se'] for rows in (rows_default, rows_planted) for r in rows):.3f}"
        for m, h in zip(METRICS, HEAD)
    )
    info = (
        f"Produced by `python benchmarks/faithfulness.py --n {args.n} --steps {args.steps}"
        f"{'' if args.threads == 1 else ' --threads ' + str(args.threads)} --write docs/faithfulness.md` "
        f"(hfattr {hfattr.__version__}, torch {torch.__version__}, {platform.machine()} CPU, "
        f"{torch.get_num_threads()} thread(s)). Registered methods: {', '.join(hfattr.list_methods())}"
        f"{' (lrp registered by the benchmark from hfattr.methods.lrp; the package did not list it yet)' if registered_lrp else ''}. "
        f"Means over the texts; largest standard error per column: {se}. "
        f"Planted model: trained in {train_s:.1f} s, held-out accuracy {acc:.1%}. "
        "Times are attribution wall seconds for all texts on this machine (not the metrics)."
    )
    md = (
        f"### Embedded default model: `data/sentiment/test.tsv`, first {len(texts)} sentences, predicted class\n\n"
        + table(rows_default, False)
        + f"\n\n### Planted-token task: {len(examples)} held-out examples, at their label\n\n"
        + table(rows_planted, True)
        + "\n\n"
        + info
        + "\n"
    )
    print()
    print(md)
    if args.write:
        path = Path(args.write)
        text = path.read_text(encoding="utf-8")
        if START not in text or END not in text:
            raise SystemExit(f"{path} has no {START} ... {END} markers")
        new = re.sub(re.escape(START) + ".*?" + re.escape(END), lambda _: f"{START}\n{md}{END}", text, flags=re.S)
        path.write_text(new, encoding="utf-8")
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
