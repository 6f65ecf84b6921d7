"""Generation attribution: hfattr against inseq and captum's LLMAttribution, same model, same tokens.

Models (random weights, float32, CPU unless --device): a GPT-2-small-size model (``GPT2Config()``,
124M parameters) and the 6-layer Llama-like zoo model. A prompt of ``--prompt`` tokens (default
64) and ``--generate`` greedy tokens (default 16).

Cases, with matched settings (logit of each generated token, the unk token as baseline — inseq's
default for both methods —, no token kept fixed, the same generated tokens):
* ablation: ``hfattr`` (``method="ablation"``) vs inseq ``occlusion`` (compared as |hfattr|:
  inseq returns the absolute change) and captum ``LLMAttribution(FeatureAblation)`` (prompt columns
  only; ``attr_target="log_prob"`` there and in hfattr's matching run, ``use_cached_outputs=False``,
  the setting that is correct under transformers 5).
* SIG: ``hfattr`` (``method="sig"``) vs inseq ``sequential_integrated_gradients``, both with
  ``--steps`` Gauss-Legendre points.
Printed per case: wall times (hfattr: best of 2–3 runs; peers: one run), the ratio, the pass count hfattr's cost model predicts, and the
largest difference over every row's prefix.

inseq must not be installed in hfattr's environment (it pins another captum). Install it in a
separate virtual environment that still sees hfattr and its dependencies::

    python -m venv --system-site-packages /work/venv-bench
    /work/venv-bench/bin/pip install inseq          # may bring captum 0.9 into that venv only
    PYTHONPATH=$PWD /work/venv-bench/bin/python benchmarks/bench_generation.py [--prompt 64 --generate 16]

Peers that are not importable are skipped (hfattr's own timings are still printed).
"""

from __future__ import annotations

import argparse
import math
import time
import warnings

import torch

from hfattr import Explainer
from hfattr.testing import make_tokenizer, tiny_model, VOCAB_WORDS


def _model(name: str, device: str):
    if name == "gpt2-124M":
        from transformers import GPT2Config, GPT2LMHeadModel

        torch.manual_seed(0)
        tok = make_tokenizer("gpt2")  # word-level; filled up to GPT-2's 50257 ids so every id decodes
        tok = make_tokenizer("gpt2", vocab=list(VOCAB_WORDS) + [f"w{i}" for i in range(50257 - len(tok))])
        cfg = GPT2Config(bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
        model = GPT2LMHeadModel(cfg)
    else:
        model = tiny_model("llama", "causal-lm", num_layers=6, seed=0)
        tok = make_tokenizer("llama")
    return model.eval().to(device), tok


def _prompt(tok, n: int) -> str:
    gen = torch.Generator().manual_seed(1)
    words = [w for w in VOCAB_WORDS if w.isalpha()]
    while True:
        text = " ".join(words[int(i)] for i in torch.randint(len(words), (n,), generator=gen))
        ids = tok(text)["input_ids"]
        if len(ids) >= n:
            return tok.decode(ids[:n], skip_special_tokens=True)


def _timed(fn, repeat: int = 1):
    """Best wall time over ``repeat`` runs (a shared machine's load only ever adds time)."""
    best, out = math.inf, None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def _rows_diff(ours: torch.Tensor, theirs: torch.Tensor) -> float:
    """Largest |difference| over the entries both fill (each row's prefix)."""
    ok = ~torch.isnan(ours) & ~torch.isnan(theirs)
    return float((ours[ok] - theirs[ok]).abs().max()) if ok.any() else math.nan


def _inseq_matrix(out, G: int, n_cols: int) -> torch.Tensor:
    """inseq's (columns × generated) target attributions as a (G, columns) tensor."""
    seq = out.sequence_attributions[0]
    a = seq.target_attributions
    if a.dim() == 3:
        a = a.sum(-1)
    a = a.T.to(torch.float64)  # (G, columns)
    return a[:G, :n_cols]


def bench(name: str, P: int, G: int, steps: int, device: str, peers: set[str], methods: set[str]):
    """Measure one model; each row is printed as soon as it is measured."""
    model, tok = _model(name, device)
    ex = Explainer(model, tok)
    prompt = _prompt(tok, P)
    unk = tok.unk_token_id
    rows = _Rows()
    common = dict(generate=G, baseline=unk, keep_special=False)
    with torch.no_grad():
        ex.explain(prompt, generate=2, baseline=unk)  # warm-up
    t_gen, gen = _timed(lambda: ex.explain(prompt, method="ablation", **common))
    gen_text = gen.target["generated_text"]
    # the peers are given the generated text: time hfattr on the same continuation
    common = dict(target=gen_text, baseline=unk, keep_special=False)
    t_abl, abl = _timed(lambda: ex.explain(prompt, method="ablation", **common), 3)
    assert abl.target["ids"] == gen.target["ids"]
    n_prompt = abl.target["prompt_length"]
    n_cols = len(abl.tokens)
    passes_abl = n_cols - 1  # one perturbed sequence per column a row reads, each from that column on
    rows.append(
        (
            name,
            "ablation",
            "hfattr",
            t_abl,
            None,
            None,
            f"{passes_abl} perturbed suffixes; with generate={G}: {t_gen:.2f}s",
        )
    )

    if "inseq" in peers:
        try:
            import inseq

            m = inseq.load_model(model, "occlusion", tokenizer=tok)
            t, out = _timed(
                lambda: m.attribute(
                    prompt,
                    generated_texts=prompt + " " + gen_text if not gen_text.startswith(" ") else prompt + gen_text,
                    attributed_fn="logit",
                    show_progress=False,
                )
            )
            theirs = _inseq_matrix(out, G, n_cols)
            rows.append(
                (name, "ablation", "inseq occlusion", t, t / t_abl, _rows_diff(abl.scores.abs().double(), theirs), "")
            )
        except Exception as err:  # noqa: BLE001 - a peer's failure is reported, not fatal
            rows.append((name, "ablation", "inseq occlusion", math.nan, None, None, f"failed: {err!r}"[:120]))
    if "captum" in peers:
        try:
            from captum.attr import FeatureAblation, LLMAttribution, TextTokenInput

            t_lp, abl_lp = _timed(lambda: ex.explain(prompt, method="ablation", score="log_prob", **common), 3)
            llm = LLMAttribution(FeatureAblation(model), tok, attr_target="log_prob")
            inp = TextTokenInput(prompt, tok, baselines=unk, skip_tokens=[])
            gen_ids = abl.target["ids"]
            kwargs = {}
            import inspect

            if "use_cached_outputs" in inspect.signature(llm.attribute).parameters:
                kwargs["use_cached_outputs"] = False
            t, out = _timed(lambda: llm.attribute(inp, target=torch.tensor(gen_ids), **kwargs))
            theirs = out.token_attr.to(torch.float64).cpu()  # (G, prompt)
            cols = theirs.shape[1]
            rows.append(
                (
                    name,
                    "ablation",
                    "captum LLMAttribution",
                    t,
                    t / t_lp,
                    _rows_diff(abl_lp.scores[:, n_prompt - cols : n_prompt].double(), theirs),
                    f"hfattr log_prob run {t_lp:.2f}s",
                )
            )
        except Exception as err:  # noqa: BLE001
            rows.append((name, "ablation", "captum LLMAttribution", math.nan, None, None, f"failed: {err!r}"[:120]))

    if "sig" not in methods:
        return
    t_sig, sig = _timed(lambda: ex.explain(prompt, method="sig", n_steps=steps, **common), 2)
    sig_rows = steps * sum(n_prompt + j for j in range(G))
    rows.append(
        (
            name,
            "sig",
            "hfattr",
            t_sig,
            None,
            None,
            f"{sig_rows} (row, position, step) sequences in {sig.extras['passes']} calls",
        )
    )
    err_fixed = max(abs(e) for row in sig.extras["completeness_error"] for e in row)
    # equal error: refine per token only until the completeness error is at most the fixed rule's
    t_auto, auto = _timed(
        lambda: ex.explain(prompt, method="sig", n_steps="auto", tol=max(err_fixed, 1e-6), **common), 2
    )
    err_auto = max(abs(e) for row in auto.extras["completeness_error"] for e in row)
    used = [s for row in auto.extras["steps"] for s in row if s]
    rows.append(
        (
            name,
            "sig",
            "hfattr auto steps",
            t_auto,
            None,
            None,
            f"mean {sum(used) / len(used):.1f} points/token, max completeness error {err_auto:.1e} "
            f"(fixed {steps}: {err_fixed:.1e})",
        )
    )
    if "inseq" in peers:
        try:
            import inseq

            m = inseq.load_model(model, "sequential_integrated_gradients", tokenizer=tok)
            t, out = _timed(
                lambda: m.attribute(
                    prompt,
                    generated_texts=prompt + " " + gen_text if not gen_text.startswith(" ") else prompt + gen_text,
                    attributed_fn="logit",
                    n_steps=steps,
                    show_progress=False,
                )
            )
            theirs = _inseq_matrix(out, G, n_cols)
            rows.append(
                (
                    name,
                    "sig",
                    "inseq SIG",
                    t,
                    t / t_sig,
                    _rows_diff(sig.scores.double(), theirs),
                    f"{t / t_auto:.1f}x hfattr auto steps at equal completeness error",
                )
            )
        except Exception as err:  # noqa: BLE001
            rows.append((name, "sig", "inseq SIG", math.nan, None, None, f"failed: {err!r}"[:120]))


class _Rows(list):
    """Prints each row as it is appended."""

    def append(self, row: tuple) -> None:
        super().append(row)
        model, method, who, t, ratio, diff, note = row
        r = "" if ratio is None else f"{ratio:.1f}x"
        d = "" if diff is None else f"{diff:.1e}"
        print(f"{model:<11} {method:<9} {who:<22} {t:8.2f} {r:>11} {d:>10}  {note}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--prompt", type=int, default=64)
    ap.add_argument("--generate", type=int, default=16)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--models", default="llama-6L,gpt2-124M")
    ap.add_argument("--peers", default="inseq,captum")
    ap.add_argument("--methods", default="ablation,sig", help="ablation always runs (it generates the tokens)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    torch.set_num_threads(max(1, torch.get_num_threads()))
    peers = set(filter(None, args.peers.split(",")))
    print(f"prompt {args.prompt} tokens, {args.generate} generated, SIG {args.steps} steps, device {args.device}")
    print(f"{'model':<11} {'method':<9} {'who':<22} {'seconds':>8} {'peer/hfattr':>11} {'max|diff|':>10}  note")
    for name in args.models.split(","):
        bench(name, args.prompt, args.generate, args.steps, args.device, peers, set(args.methods.split(",")))


if __name__ == "__main__":
    main()
