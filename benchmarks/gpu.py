"""The scale benchmarks on a GPU in bf16 and fp16, plus 7B-class Llama items; writes a markdown table.

Items per model (GPT-2-small 124M, BERT-base 110M; random weights from the real configs) and dtype:
token ablation and middle-block layer ablation (vs captum), SIG fixed / ``internal_batch_size="auto"``
/ ``n_steps="auto"`` (vs time-interpret), LRP (vs one forward). Then a Llama-2-7B-shaped causal LM
(bf16, needs ~80 GB): LRP on a 4k-token prompt (goal <= 3x one forward), ablation of a 512-token
prompt for 32 generated tokens (teacher-forced sum of their log-probabilities, vs captum) and SIG
``n_steps="auto"`` on 128 tokens (vs time-interpret at 50 steps).

Times are wall seconds after a warm-up call, with ``torch.cuda.synchronize``; memory is the peak of
``torch.cuda.max_memory_allocated`` during the hfattr call (peak RSS on the CPU). A peer that fails
(e.g. a dtype it does not support) is reported as such, never silently dropped.

    python benchmarks/gpu.py [--dtypes bf16 fp16] [--items small 7b] [--out docs/gpu_table.md]
    python benchmarks/gpu.py --device cpu --tiny --peers captum   # smoke test: tiny models, seconds
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from typing import Any, Callable

import torch

import hfattr

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


class Meter:
    def __init__(self, device: torch.device, warmup: bool = True) -> None:
        self.device = device
        self.warmup = warmup

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def __call__(self, fn: Callable[[], Any]) -> tuple[float, int, Any]:
        """(seconds, peak bytes, result)."""
        if self.warmup:
            fn()
        self.sync()
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            base = torch.cuda.memory_allocated(self.device)
        else:
            try:
                with open("/proc/self/clear_refs", "w") as fh:
                    fh.write("5")
            except OSError:
                pass
            base = 0
        t0 = time.perf_counter()
        out = fn()
        self.sync()
        dt = time.perf_counter() - t0
        if self.device.type == "cuda":
            peak = torch.cuda.max_memory_allocated(self.device) - base
        else:
            peak = 0
            try:
                with open("/proc/self/status") as fh:
                    peak = next(int(ln.split()[1]) * 1024 for ln in fh if ln.startswith("VmHWM:"))
            except (OSError, StopIteration):
                pass
        return dt, peak, out


def build(name: str, dtype: torch.dtype, device: torch.device, tiny: bool):
    """(model, tokenizer, kind, middle block)."""
    import transformers as tf

    from hfattr.testing import make_tokenizer, tiny_model

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        if tiny:
            zoo = {
                "gpt2": ("gpt2", "causal-lm"),
                "bert": ("bert", "sequence-classification"),
                "llama7b": ("llama", "causal-lm"),
            }[name]
            model = tiny_model(zoo[0], zoo[1], num_layers=2)
            style = {"gpt2": "gpt2", "bert": "bert", "llama7b": "llama"}[name]
        elif name == "gpt2":
            model, style = tf.GPT2LMHeadModel(tf.GPT2Config()), "gpt2"
        elif name == "bert":
            model, style = tf.BertForSequenceClassification(tf.BertConfig(num_labels=2)), "bert"
        else:  # Llama-2-7B shape
            cfg = tf.LlamaConfig(
                hidden_size=4096,
                intermediate_size=11008,
                num_hidden_layers=32,
                num_attention_heads=32,
                num_key_value_heads=32,
                vocab_size=32000,
                max_position_embeddings=4096,
                torch_dtype=dtype,
            )
            with torch.device(device):
                model = tf.LlamaForCausalLM(cfg)
            style = "llama"
    model = model.to(device=device, dtype=dtype).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    kind = "class" if name == "bert" else "causal"
    base = getattr(model, "transformer", None) or getattr(model, "bert", None) or model.model
    blocks = getattr(base, "h", None) or getattr(getattr(base, "encoder", None), "layer", None) or base.layers
    return model, make_tokenizer(style), kind, blocks[len(blocks) // 2]


def forward_of(model, kind: str) -> Callable:
    if kind == "causal":
        return lambda e: model(inputs_embeds=e, use_cache=False, logits_to_keep=1).logits[:, -1, :].float()
    return lambda e: model(inputs_embeds=e).logits.float()


def embeds(model, L: int, device: torch.device, seed: int = 0):
    gen = torch.Generator().manual_seed(seed + L)
    ids = torch.randint(10, min(1000, model.config.vocab_size), (1, L), generator=gen).to(device)
    with torch.no_grad():
        return ids, model.get_input_embeddings()(ids)


class Table:
    def __init__(self) -> None:
        self.rows: list[list[str]] = []

    def add(
        self, model: str, dtype: str, item: str, ours: tuple | None, peer: str, theirs: Any, note: str = ""
    ) -> None:
        """``ours``/``theirs``: (seconds, peak bytes, result), or an exception for a failed run."""

        def cell(r):
            return f"{r[0]:.3f}" if isinstance(r, tuple) else f"failed: {type(r).__name__}"

        ratio = f"{theirs[0] / ours[0]:.2f}x" if isinstance(ours, tuple) and isinstance(theirs, tuple) else "-"
        mem = f"{ours[1] / 2**30:.2f}" if isinstance(ours, tuple) else "-"
        self.rows.append(
            [model, dtype, item, cell(ours), peer, cell(theirs) if theirs is not None else "-", ratio, mem, note]
        )
        print(" | ".join(self.rows[-1]), flush=True)

    def markdown(self, header: str) -> str:
        cols = ["model", "dtype", "item", "hfattr s", "peer", "peer s", "peer/hfattr", "hfattr peak GiB", "note"]
        out = [header, "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
        out += ["| " + " | ".join(r) + " |" for r in self.rows]
        return "\n".join(out) + "\n"


def attempt(fn: Callable[[], Any]) -> Any:
    try:
        return fn()
    except Exception as err:  # noqa: BLE001 - reported in the table
        print(f"    ({type(err).__name__}: {str(err)[:200]})", file=sys.stderr)
        return err


def small_items(name: str, dtype_name: str, a, meter: Meter, table: Table, peers: set[str]) -> None:
    dtype, dev = DTYPES[dtype_name], meter.device
    model, tok, kind, mid = build(name, dtype, dev, a.tiny)
    fwd = forward_of(model, kind)
    L = a.length
    _, x = embeds(model, L, dev)
    with torch.no_grad():
        target = int(fwd(x).argmax(-1))
    mask = torch.arange(L, device=dev).view(1, L, 1)
    kw = dict(target=target, feature_mask=mask, perturbations_per_eval=a.ppe)
    ours = attempt(lambda: meter(lambda: hfattr.FeatureAblation(fwd).attribute(x, **kw)))
    theirs = None
    if "captum" in peers:
        from captum.attr import FeatureAblation

        theirs = attempt(lambda: meter(lambda: FeatureAblation(fwd).attribute(x, **kw)))
    table.add(name, dtype_name, f"token ablation L={L}", ours, "captum FA", theirs)
    akw = dict(kw, perturbations_per_eval="auto")
    table.add(
        name,
        dtype_name,
        f"token ablation L={L}, ppe=auto",
        attempt(lambda: meter(lambda: hfattr.FeatureAblation(fwd).attribute(x, **akw))),
        "captum FA",
        theirs,
    )
    lkw = dict(target=target, layer_mask=mask, perturbations_per_eval=a.ppe)
    ours = attempt(lambda: meter(lambda: hfattr.LayerFeatureAblation(fwd, mid).attribute(x, **lkw)))
    theirs = None
    if "captum" in peers:
        from captum.attr import LayerFeatureAblation

        theirs = attempt(lambda: meter(lambda: LayerFeatureAblation(fwd, mid).attribute(x, **lkw)))
    table.add(name, dtype_name, f"layer ablation (middle block) L={L}", ours, "captum LFA", theirs)
    lrp_items(name, dtype_name, model, fwd, x, target, meter, table)
    sig_items(name, dtype_name, model, tok, fwd, a.sig_length, a.steps, meter, table, peers)


def lrp_items(name, dtype_name, model, fwd, x, target, meter, table) -> None:
    from hfattr.lrp import LRP

    class OnEmbeds(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, e):
            return fwd(e)

    wrapped = OnEmbeds()
    with torch.no_grad():
        plain = attempt(lambda: meter(lambda: wrapped(x)))
    ours = attempt(lambda: meter(lambda: LRP(wrapped, composite="attnlrp").attribute(x, target=target)))
    table.add(name, dtype_name, f"LRP attnlrp L={x.shape[1]}", ours, "one forward", plain, "goal <= 3x")


def sig_items(name, dtype_name, model, tok, fwd, L, steps, meter, table, peers) -> None:
    from hfattr.hf.text import baseline_token_id

    ids, x = embeds(model, L, meter.device, seed=1)
    bid = baseline_token_id(tok, None)
    with torch.no_grad():
        target = int(fwd(x).argmax(-1))
        base = model.get_input_embeddings()(torch.full_like(ids, bid)) if bid is not None else torch.zeros_like(x)
    kw = dict(baselines=base, target=target, n_steps=steps)
    theirs = None
    if "tint" in peers:
        from tint.attr import SequentialIntegratedGradients as TSIG

        theirs = attempt(lambda: meter(lambda: TSIG(fwd).attribute(x, **kw)))
    sig = hfattr.SequentialIntegratedGradients
    table.add(
        name,
        dtype_name,
        f"SIG {steps} steps L={L}",
        attempt(lambda: meter(lambda: sig(fwd).attribute(x, **kw))),
        "tint SIG",
        theirs,
    )
    table.add(
        name,
        dtype_name,
        f"SIG {steps} steps L={L}, batch auto",
        attempt(lambda: meter(lambda: sig(fwd).attribute(x, internal_batch_size="auto", **kw))),
        "tint SIG",
        theirs,
    )
    akw = dict(kw, n_steps="auto", tol=1e-2)
    table.add(
        name,
        dtype_name,
        f"SIG auto (tol 1e-2) L={L}",
        attempt(lambda: meter(lambda: sig(fwd).attribute(x, **akw))),
        "tint SIG",
        theirs,
        "tol vs tint's own error: see bench_sig.py",
    )


def big_items(a, meter: Meter, table: Table, peers: set[str]) -> None:
    dtype_name = "bf16"
    model, tok, kind, _ = build("llama7b", DTYPES[dtype_name], meter.device, a.tiny)
    fwd = forward_of(model, kind)
    label = "llama-tiny" if a.tiny else "llama-7b"
    L = 16 if a.tiny else 4096
    ids, x = embeds(model, L, meter.device)
    with torch.no_grad():
        target = int(fwd(x).argmax(-1))
    lrp_items(label, dtype_name, model, fwd, x, target, meter, table)
    # ablation of a prompt for generated tokens: teacher-forced sum of their log-probabilities
    P, G = (8, 2) if a.tiny else (512, 32)
    ids, _ = embeds(model, P, meter.device, seed=2)
    with torch.no_grad():
        full = model.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=G,
            min_new_tokens=G,
            do_sample=False,
            pad_token_id=0,
        )
        e_all = model.get_input_embeddings()(full)
    gen_ids = full[0, P:]

    def cont_logprob(e_prompt):
        e = torch.cat([e_prompt, e_all[:, P:].expand(e_prompt.shape[0], -1, -1)], 1)
        logits = model(inputs_embeds=e, use_cache=False, logits_to_keep=G + 1).logits[:, :-1].float()
        return logits.log_softmax(-1).gather(-1, gen_ids.view(1, G, 1).expand(e.shape[0], -1, -1)).sum((1, 2))

    x_p = e_all[:, :P]
    mask = torch.arange(P, device=meter.device).view(1, P, 1)
    kw = dict(feature_mask=mask, perturbations_per_eval=a.ppe)
    ours = attempt(lambda: meter(lambda: hfattr.FeatureAblation(cont_logprob).attribute(x_p, **kw)))
    theirs = None
    if "captum" in peers:
        from captum.attr import FeatureAblation

        theirs = attempt(lambda: meter(lambda: FeatureAblation(cont_logprob).attribute(x_p, **kw)))
    table.add(label, dtype_name, f"generation ablation {P}+{G}", ours, "captum FA", theirs)
    sig_items(label, dtype_name, model, tok, fwd, 4 if a.tiny else 128, 4 if a.tiny else 50, meter, table, peers)


def main(argv: list[str] | None = None) -> str:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--dtypes", nargs="+", default=None, choices=list(DTYPES), help="default bf16 fp16 (cpu: fp32)")
    p.add_argument("--items", nargs="+", default=["small", "7b"], choices=["small", "7b"])
    p.add_argument("--models", nargs="+", default=["gpt2", "bert"], choices=["gpt2", "bert"])
    p.add_argument("--peers", nargs="*", default=["captum", "tint"], choices=["captum", "tint"])
    p.add_argument("--length", type=int, default=512)
    p.add_argument("--sig-length", type=int, default=128)
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--ppe", type=int, default=64)
    p.add_argument("--tiny", action="store_true", help="tiny zoo models and short inputs (smoke test)")
    p.add_argument("--out", default=None, help="write the markdown table here")
    a = p.parse_args(argv)
    device = torch.device(a.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        p.error("no CUDA device; use --device cpu --tiny for a smoke run")
    if a.dtypes is None:
        a.dtypes = ["fp32"] if device.type == "cpu" else ["bf16", "fp16"]
    if a.tiny:
        a.length, a.sig_length, a.steps, a.ppe = 8, 4, 4, 8
    meter, table, peers = Meter(device, warmup=not a.tiny), Table(), set(a.peers)
    if "small" in a.items:
        for name in a.models:
            for dt in a.dtypes:
                small_items(name, dt, a, meter, table, peers)
    if "7b" in a.items:
        big_items(a, meter, table, peers)
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    import transformers

    header = (
        f"Measured on {gpu} ({device}), torch {torch.__version__}, transformers {transformers.__version__}, "
        f"{time.strftime('%Y-%m-%d')}{' (tiny smoke run)' if a.tiny else ''}"
    )
    text = table.markdown(header)
    if a.out:
        with open(a.out, "w", encoding="utf-8") as fh:
            fh.write(text)
    return text


if __name__ == "__main__":
    main()
