"""LRP cost: time over one plain forward, and against Captum's LayerIntegratedGradients.

Model: a 6-layer Llama-like zoo model (``hfattr.testing.tiny_model("llama", num_layers=6)``,
``--hidden`` wide), one text of ``--length`` tokens (default 256), causal-LM head, explaining the
next-token logit. Reported (after a warm-up):

* ``forward``: one plain forward pass (no gradient);
* ``forward+backward``: one forward and one backward pass to the input embeddings, no rules
  (Input×Gradient) — the floor for any one-pass LRP;
* ``lrp <composite>``: ``hfattr.lrp.LRP(model, composite=...).attribute`` on the input embeddings;
* ``captum LIG 50``: Captum's ``LayerIntegratedGradients`` on the embedding layer, 50 steps,
  all steps in one batch (``--lig-batch`` to chunk).

The first four are timed in turns (best of ``--repeat``), so a changing machine load hits them
alike. Captum is imported only here, as the peer.

    python benchmarks/bench_lrp.py [--length 256] [--hidden 32] [--repeat 3] [--threads 0]
"""

from __future__ import annotations

import argparse
import time

import torch

from _timing import best_of


def best_of_warm(fn, repeat):
    return best_of(fn, repeat, warmup=True)


from hfattr.lrp import LRP
from hfattr.testing import tiny_model


def _interleaved(fns: dict, repeat: int) -> dict[str, float]:
    """Best time of each function, run in turns so that a changing machine load hits all alike."""
    for fn in fns.values():
        fn()  # warm-up
    best = {name: float("inf") for name in fns}
    for _ in range(repeat):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - t0)
    return best


def run(length: int, hidden: int, repeat: int, lig_batch: int | None) -> dict[str, float]:
    from captum.attr import LayerIntegratedGradients

    heads = max(4, hidden // 32)
    model = tiny_model("llama", num_layers=6, hidden=hidden, heads=heads)
    for p in model.parameters():
        p.requires_grad_(False)
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(10, model.config.vocab_size, (1, length), generator=gen)
    emb_layer = model.get_input_embeddings()
    embeds = emb_layer(ids).detach()

    class OnEmbeds(torch.nn.Module):  # the model as a function of its input embeddings
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, x):
            return self.model(inputs_embeds=x, use_cache=False).logits[:, -1, :]

    wrapped = OnEmbeds()
    with torch.no_grad():
        target = int(wrapped(embeds).argmax(-1))

    def forward():
        with torch.no_grad():
            return wrapped(embeds)

    def grad_x_input():
        x = embeds.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(wrapped(x)[:, target].sum(), x)
        return x * g

    attnlrp, cplrp = LRP(wrapped, composite="attnlrp"), LRP(wrapped, composite="cp-lrp")
    times = _interleaved(
        {
            "forward": forward,
            "forward+backward": grad_x_input,
            "lrp attnlrp": lambda: attnlrp.attribute(embeds, target=target),
            "lrp cp-lrp": lambda: cplrp.attribute(embeds, target=target),
        },
        repeat,
    )

    def ids_forward(input_ids):
        return model(input_ids=input_ids, use_cache=False).logits[:, -1, :]

    lig = LayerIntegratedGradients(ids_forward, emb_layer)
    times["captum LIG 50"], _ = best_of_warm(
        lambda: lig.attribute(ids, target=target, n_steps=50, internal_batch_size=lig_batch), max(1, repeat // 2)
    )
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--length", type=int, default=256)
    ap.add_argument("--hidden", type=int, default=32)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--lig-batch", type=int, default=None)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: leave as is)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    times = run(args.length, args.hidden, args.repeat, args.lig_batch)
    fwd = times["forward"]
    print(
        f"6-layer llama zoo model, hidden {args.hidden}, L={args.length}, "
        f"{torch.get_num_threads()} threads, best of {args.repeat}"
    )
    for name, t in times.items():
        print(f"  {name:<20} {t * 1e3:10.1f} ms   {t / fwd:6.2f}x forward")
    for comp in ("attnlrp", "cp-lrp"):
        t = times[f"lrp {comp}"]
        print(f"ratio lrp {comp} / forward           = {t / fwd:.2f}  (goal <= 3)")
        print(f"ratio lrp {comp} / forward+backward  = {t / times['forward+backward']:.2f}")
        print(f"ratio lrp {comp} / captum LIG 50     = {t / times['captum LIG 50']:.4f}")


if __name__ == "__main__":
    main()
