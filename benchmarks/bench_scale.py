"""hfattr against its peers on real-size models (random weights from the real configs, no download).

Models: GPT-2-small (124M, causal LM), BERT-base (110M, sequence classification) and, with
``--models llama1b`` and enough free memory, a Llama-3.2-1B-shaped causal LM (1.24B). Cases, each
timed in one process against its peer on the same forward function and inputs:

* ``ablation``: token-level FeatureAblation (drop-in class) vs captum 0.8 FeatureAblation, and
  ``Explainer.explain(method="ablation")`` (prefix reuse on causal models) vs the same captum run;
* ``layer``: LayerFeatureAblation of the middle block's output, per token, vs captum;
* ``sig``: SIG with ``--steps`` Gauss-Legendre steps (drop-in class and Explainer) and
  ``n_steps="auto"`` (tol = time-interpret's own max completeness error) vs time-interpret 0.3;
  captum IntegratedGradients with the same steps as a cost reference (SIG costs ~L× IG). SIG runs on
  ``--sig-length`` tokens (default 8: 128 or 512 positions x 50 steps of a 124M model take hours on
  a CPU);
* ``lrp``: ``hfattr.lrp.LRP`` (AttnLRP) vs one plain forward and one forward+backward.

Every line prints both times, the ratio peer / hfattr (> 1: hfattr faster) and the peak resident
memory of the hfattr call (VmHWM, reset before each call; Linux). inseq is not used: it is not
installed in the main environment (it pins captum below the 0.8.0 the tests need); see
docs/performance.md.

    python benchmarks/bench_scale.py [--models gpt2 bert] [--lengths 128 512] [--cases ablation sig]
                                     [--steps 50] [--sig-length 8] [--ppe 16] [--quick]

``--quick``: GPT-2-small only, L=16, SIG on 4 tokens with 4 steps (a couple of minutes).
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any, Callable

import torch

import hfattr
from hfattr.core.batching import free_memory

CASES = ("ablation", "layer", "sig", "lrp")


def _proc(field: str) -> int:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def timed(fn: Callable[[], Any]) -> tuple[float, float, int, Any]:
    """(wall s, process cpu s, peak RSS bytes during the call, result)."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")  # resets VmHWM to the current RSS
    except OSError:
        pass
    w0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    return time.perf_counter() - w0, time.process_time() - c0, _proc("VmHWM"), out


def build(name: str):
    """(model, tokenizer, kind) with random weights from the real config; parameters frozen."""
    import transformers as tf

    from hfattr.testing import make_tokenizer

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        if name == "gpt2":
            model, kind, style = tf.GPT2LMHeadModel(tf.GPT2Config()), "causal", "gpt2"
        elif name == "bert":
            model, kind, style = tf.BertForSequenceClassification(tf.BertConfig(num_labels=2)), "class", "bert"
        elif name == "llama1b":
            cfg = tf.LlamaConfig(
                hidden_size=2048,
                intermediate_size=8192,
                num_hidden_layers=16,
                num_attention_heads=32,
                num_key_value_heads=8,
                vocab_size=128256,
                tie_word_embeddings=True,
                max_position_embeddings=4096,
            )
            model, kind, style = tf.LlamaForCausalLM(cfg), "causal", "llama"
        else:
            raise ValueError(name)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model, make_tokenizer(style), kind


def embeds_forward(model, kind: str) -> Callable:
    if kind == "causal":
        return lambda e: model(inputs_embeds=e, use_cache=False, logits_to_keep=1).logits[:, -1, :]
    return lambda e: model(inputs_embeds=e).logits


def inputs_for(model, tok, L: int, seed: int = 0):
    gen = torch.Generator().manual_seed(seed + L)
    ids = torch.randint(200, 1000, (1, L), generator=gen)
    with torch.no_grad():
        x = model.get_input_embeddings()(ids)
    return ids, x


def line(case: str, t_h: tuple, t_p: tuple | None, peer: str, extra: str = "") -> None:
    h_w, h_c, h_mem = t_h[:3]
    if t_p is None:
        print(f"  {case:<34} hfattr {h_w:8.2f} s ({h_c:7.2f} cpu)  peak {h_mem / 2**30:5.2f} GiB  {extra}", flush=True)
        return
    p_w, p_c, p_mem = t_p[:3]
    print(
        f"  {case:<34} hfattr {h_w:8.2f} s ({h_c:7.2f} cpu)  {peer} {p_w:8.2f} s ({p_c:7.2f} cpu)  "
        f"ratio {p_w / h_w:5.2f}x wall {p_c / h_c:5.2f}x cpu  peak {h_mem / 2**30:5.2f} / {p_mem / 2**30:5.2f} GiB"
        f"  {extra}",
        flush=True,
    )


def completeness(forward, scores: torch.Tensor, x, base, target: int) -> float:
    """max |Σ_d attr_i − (F(x) − F(x with i at its baseline))| over positions."""
    L = x.shape[1]
    s = scores.double() if scores.dim() == 1 else scores[0].double().sum(-1)
    with torch.no_grad():
        fx = forward(x)[0, target].double()
        rows = x.expand(L, -1, -1).clone()
        rows[torch.arange(L), torch.arange(L)] = base[0]
        fi = torch.cat([forward(rows[i : i + 8])[:, target] for i in range(0, L, 8)]).double()
    return float((s - (fx - fi)).abs().max())


def run_model(name: str, a: argparse.Namespace) -> None:
    from captum.attr import FeatureAblation as CFA
    from captum.attr import LayerFeatureAblation as CLFA

    model, tok, kind = build(name)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"\n{name}: {n_params / 1e6:.0f}M parameters, {kind}", flush=True)
    forward = embeds_forward(model, kind)
    ex = hfattr.Explainer(model, tok)
    blocks = (
        model.transformer.h if name == "gpt2" else (model.bert.encoder.layer if name == "bert" else model.model.layers)
    )
    mid = blocks[len(blocks) // 2]
    for L in a.lengths:
        ids, x = inputs_for(model, tok, L)
        with torch.no_grad():
            target = int(forward(x).argmax(-1))
        mask = torch.arange(L).view(1, L, 1)
        enc = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
        print(f" L={L}", flush=True)
        if "ablation" in a.cases:
            kw = dict(target=target, feature_mask=mask, perturbations_per_eval=a.ppe)
            t_p = timed(lambda: CFA(forward).attribute(x, **kw))
            t_h = timed(lambda: hfattr.FeatureAblation(forward).attribute(x, **kw))
            line(
                "token ablation (drop-in)", t_h, t_p, "captum", f"max|diff| {float((t_h[3] - t_p[3]).abs().max()):.1e}"
            )
            t_e = timed(
                lambda: ex.explain(
                    enc,
                    method="ablation",
                    target=target,
                    baseline="zero",
                    perturbations_per_eval=a.ppe,
                    keep_special=False,
                )
            )
            line("token ablation (Explainer)", t_e, t_p, "captum")
        if "layer" in a.cases:
            lkw = dict(target=target, layer_mask=mask, perturbations_per_eval=a.ppe)
            t_p = timed(lambda: CLFA(forward, mid).attribute(x, **lkw))
            t_h = timed(lambda: hfattr.LayerFeatureAblation(forward, mid).attribute(x, **lkw))
            line(
                "layer ablation, middle block",
                t_h,
                t_p,
                "captum",
                f"max|diff| {float((t_h[3] - t_p[3]).abs().max()):.1e}",
            )
        if "lrp" in a.cases:
            from hfattr.lrp import LRP

            class OnEmbeds(torch.nn.Module):
                def __init__(self) -> None:
                    super().__init__()
                    self.model = model

                def forward(self, e):
                    return forward(e)

            wrapped = OnEmbeds()
            lrp = LRP(wrapped, composite="attnlrp")
            lrp.attribute(x, target=target)  # warm-up
            with torch.no_grad():
                t_f = timed(lambda: wrapped(x))

            def fwd_bwd():
                e = x.clone().requires_grad_(True)
                return torch.autograd.grad(wrapped(e)[:, target].sum(), e)[0]

            t_fb = timed(fwd_bwd)
            t_h = timed(lambda: lrp.attribute(x, target=target))
            line("lrp attnlrp", t_h, t_f, "forward", f"lrp / forward = {t_h[0] / t_f[0]:.2f} (goal <= 3)")
            line("lrp attnlrp", t_h, t_fb, "fwd+bwd", f"lrp / (forward+backward) = {t_h[0] / t_fb[0]:.2f}")
    if "sig" in a.cases:
        run_sig(name, model, tok, kind, forward, ex, a)


def run_sig(name, model, tok, kind, forward, ex, a) -> None:
    from captum.attr import IntegratedGradients as CIG
    from tint.attr import SequentialIntegratedGradients as TSIG

    from hfattr.hf.text import baseline_token_id

    L = a.sig_length
    ids, x = inputs_for(model, tok, L)
    bid = baseline_token_id(tok, None)
    with torch.no_grad():
        target = int(forward(x).argmax(-1))
        base = model.get_input_embeddings()(torch.full_like(ids, bid)) if bid is not None else torch.zeros_like(x)
    enc = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    print(f" SIG on L={L}, {a.steps} Gauss-Legendre steps, baseline token {bid}", flush=True)
    kw = dict(baselines=base, target=target, n_steps=a.steps)
    t_t = timed(lambda: TSIG(forward).attribute(x, **kw))
    err_t = completeness(forward, t_t[3], x, base, target)
    t_h = timed(lambda: hfattr.SequentialIntegratedGradients(forward).attribute(x, **kw))
    line(
        "sig fixed (drop-in)",
        t_h,
        t_t,
        "tint",
        f"max|diff| {float((t_h[3] - t_t[3]).abs().max()):.1e}  "
        f"err {completeness(forward, t_h[3], x, base, target):.1e} (tint {err_t:.1e})",
    )
    opts = dict(method="sig", target=target, keep_special=False)
    t_e = timed(lambda: ex.explain(enc, n_steps=a.steps, **opts)[0])
    line("sig fixed (Explainer)", t_e, t_t, "tint", f"err {completeness(forward, t_e[3].scores, x, base, target):.1e}")
    tol = max(err_t, 1e-12)
    sig = hfattr.SequentialIntegratedGradients(forward)
    t_a = timed(lambda: sig.attribute(x, baselines=base, target=target, n_steps="auto", tol=tol))
    line(
        "sig auto, tol = tint's error",
        t_a,
        t_t,
        "tint",
        f"err {completeness(forward, t_a[3], x, base, target):.1e} steps {sorted(set(sig.last_info.steps.flatten().tolist()))}",
    )
    t_ea = timed(lambda: ex.explain(enc, n_steps="auto", tol=tol, **opts)[0])
    line("sig auto (Explainer)", t_ea, t_t, "tint", f"err {completeness(forward, t_ea[3].scores, x, base, target):.1e}")
    t_ig = timed(lambda: CIG(forward).attribute(x, baselines=base, target=target, n_steps=a.steps))
    line("sig fixed vs captum IG (cost ref)", t_h, t_ig, "IG")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", nargs="+", default=["gpt2", "bert"], choices=["gpt2", "bert", "llama1b"])
    p.add_argument("--lengths", nargs="+", type=int, default=[128, 512])
    p.add_argument("--cases", nargs="+", default=list(CASES), choices=CASES)
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--sig-length", type=int, default=8)
    p.add_argument("--ppe", type=int, default=16, help="perturbations_per_eval for ablation (both libraries)")
    p.add_argument("--quick", action="store_true", help="GPT-2-small, L=16, SIG on 4 tokens x 4 steps")
    a = p.parse_args()
    if a.quick:
        a.models, a.lengths, a.sig_length, a.steps = ["gpt2"], [16], 4, 4
    import captum
    import transformers

    print(
        f"torch {torch.__version__}, transformers {transformers.__version__}, captum {captum.__version__}, "
        f"{torch.get_num_threads()} threads, {free_memory(torch.device('cpu')) / 2**30:.1f} GiB available; "
        f"python {sys.version.split()[0]}"
    )
    for name in a.models:
        if name == "llama1b" and free_memory(torch.device("cpu")) < 16 * 2**30:
            print("\nllama1b: skipped (needs 16 GiB of available memory for fp32 weights and activations)")
            continue
        run_model(name, a)


if __name__ == "__main__":
    main()
