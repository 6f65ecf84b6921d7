"""SIG chunk size -> time and peak memory on GPT-2-small (124M, random weights, CPU).

For each sequence length it runs SIG on a few positions (``--positions``) with ``--steps``
Gauss-Legendre steps through the core function (full forwards, no prefix reuse), once per
``internal_batch_size`` and once with the default budget, and prints seconds per row, process CPU
seconds per row, and the peak resident memory of the call (VmHWM, reset before each call through
``/proc/self/clear_refs``; Linux only).

    python benchmarks/sig_memory_curve.py [--lengths 128 512] [--chunks 1 2 4 8] [--steps 4]
"""

from __future__ import annotations

import argparse
import time

import torch

from hfattr.core.budget import TokenBudget
from hfattr.core.sig import sequential_integrated_gradients


def reset_peak() -> None:
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")


def peak_rss() -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def rss() -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def gpt2_small():
    from transformers import GPT2Config, GPT2LMHeadModel

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = GPT2LMHeadModel(GPT2Config()).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--lengths", type=int, nargs="+", default=[128, 512])
    ap.add_argument("--chunks", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--positions", type=int, default=4, help="attributed positions (rows = positions x steps)")
    a = ap.parse_args()
    model = gpt2_small()
    emb = model.get_input_embeddings()

    def forward(e):
        return model(inputs_embeds=e, use_cache=False, logits_to_keep=1).logits[:, -1, :]

    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; GPT-2-small fp32; "
        f"rows = {a.positions} positions x {a.steps} steps"
    )
    print(f"{'L':>5} {'chunk':>7} {'s/row':>8} {'cpu s/row':>10} {'peak MiB':>9} {'+MiB':>7}")
    for L in a.lengths:
        ids = torch.randint(100, 1000, (1, L), generator=torch.Generator().manual_seed(L))
        with torch.no_grad():
            x = emb(ids)
        pos = torch.zeros(L, dtype=torch.bool)
        pos[-a.positions :] = True
        rows = a.positions * a.steps
        for chunk in [c for c in a.chunks if c <= rows] + [None]:
            base_rss = rss()
            reset_peak()
            w0, c0 = time.perf_counter(), time.process_time()
            budget = TokenBudget((x,))
            sequential_integrated_gradients(
                forward, (x,), target=0, n_steps=a.steps, positions=pos, internal_batch_size=chunk
            )
            w, c = time.perf_counter() - w0, time.process_time() - c0
            label = str(chunk) if chunk else f"auto({budget.tokens // L}+)"
            print(
                f"{L:5d} {label:>7} {w / rows:8.3f} {c / rows:10.3f} {peak_rss() / 2**20:9.0f} "
                f"{(peak_rss() - base_rss) / 2**20:7.0f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
