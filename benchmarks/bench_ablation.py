"""hfattr against Captum on the same inputs, in one process: time ratio and max difference.

Cases: token-level FeatureAblation and per-block LayerFeatureAblation on a 6-layer Llama-like
and a 6-layer BERT-like zoo model, sequence length 128 (``--length``). Captum is only imported
here, as the peer and the oracle.

    python benchmarks/bench_ablation.py [--length 128] [--ppe 16] [--repeat 1]
"""

from __future__ import annotations

import argparse

import torch
from _timing import best_of

import hfattr
from hfattr.testing import tiny_model


def _setup(name: str, length: int, seed: int = 0):
    task = "causal-lm" if name == "llama" else "sequence-classification"
    model = tiny_model(name, task, num_layers=6, seed=seed)
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, model.config.vocab_size, (1, length), generator=gen)
    embeds = model.get_input_embeddings()(ids).detach()

    if task == "causal-lm":

        def forward(x):
            return model(inputs_embeds=x, use_cache=False).logits[:, -1, :]

        blocks = list(model.model.layers)
    else:

        def forward(x):
            return model(inputs_embeds=x).logits

        blocks = list(model.bert.encoder.layer)
    with torch.no_grad():
        target = int(forward(embeds).argmax(-1))
        for _ in range(3):  # warm up kernels and allocator before any timing
            forward(embeds.expand(16, -1, -1))
    return model, forward, embeds, target, blocks


def run(length: int, ppe: int, repeat: int) -> list[tuple[str, float, float, float]]:
    from captum.attr import FeatureAblation as CaptumFA
    from captum.attr import LayerFeatureAblation as CaptumLFA

    rows = []
    mask = torch.arange(length).view(1, length, 1)
    for name in ("llama", "bert"):
        model, forward, embeds, target, blocks = _setup(name, length)
        kw = dict(target=target, feature_mask=mask, perturbations_per_eval=ppe)
        t_h, a_h = best_of(lambda: hfattr.FeatureAblation(forward).attribute(embeds, **kw), repeat)
        t_c, a_c = best_of(lambda: CaptumFA(forward).attribute(embeds, **kw), repeat)
        rows.append((f"{name}-6L token FeatureAblation", t_h, t_c, float((a_h - a_c).abs().max())))

        lkw = dict(target=target, layer_mask=mask, perturbations_per_eval=ppe)

        def per_block(cls):
            return [cls(forward, b).attribute(embeds, **lkw) for b in blocks]

        t_h, a_h = best_of(lambda: per_block(hfattr.LayerFeatureAblation), repeat)
        t_c, a_c = best_of(lambda: per_block(CaptumLFA), repeat)
        diff = max(float((x - y).abs().max()) for x, y in zip(a_h, a_c))
        rows.append((f"{name}-6L per-block LayerFeatureAblation", t_h, t_c, diff))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--length", type=int, default=128)
    parser.add_argument("--ppe", type=int, default=16, help="perturbations_per_eval for both")
    parser.add_argument("--repeat", type=int, default=1, help="best of N timings")
    args = parser.parse_args()
    torch.manual_seed(0)
    print(
        f"torch {torch.__version__}, threads {torch.get_num_threads()}, L={args.length}, "
        f"perturbations_per_eval={args.ppe}"
    )
    print(f"{'case':44s} {'hfattr s':>9s} {'captum s':>9s} {'speed-up':>9s} {'max |diff|':>11s}")
    for case, t_h, t_c, diff in run(args.length, args.ppe, args.repeat):
        print(f"{case:44s} {t_h:9.3f} {t_c:9.3f} {t_c / t_h:8.2f}x {diff:11.2e}")


if __name__ == "__main__":
    main()
