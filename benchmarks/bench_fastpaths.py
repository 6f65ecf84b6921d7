"""Fast paths against Captum, and against the pass-count bound, in one process on the same inputs.

- per-block LayerFeatureAblation on a 6-layer Llama-like zoo model (suffix-only: the blocks
  before the site reuse their recorded output) vs Captum's LayerFeatureAblation;
- token-level ablation on the same decoder (prefix reuse: only positions from the ablated token
  on are recomputed) and on a 6-layer BERT-like encoder vs Captum's FeatureAblation;
- each hfattr run against its pass-count bound: the number of forward calls it needs times the
  time of one plain forward call of the same batch size.

    python benchmarks/bench_fastpaths.py [--length 128] [--ppe 16] [--repeat 3] [--hidden 32]
"""

from __future__ import annotations

import argparse

import torch
from _timing import best_of

import hfattr
from hfattr.core.ablation import feature_ablation
from hfattr.core.layer import layer_feature_ablation
from hfattr.methods.layer_ablation import SummedRows
from hfattr.hf.prepare import prepare
from hfattr.hf.targets import resolve_targets
from hfattr.hf.text import Encoded
from hfattr.testing import tiny_model


def prepared(name: str, length: int, hidden: int):
    task = "causal-lm" if name == "llama" else "sequence-classification"
    model = tiny_model(name, task, num_layers=6, hidden=hidden)
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(5, model.config.vocab_size, (1, length), generator=gen)
    enc = Encoded(ids, torch.ones_like(ids), torch.zeros_like(ids, dtype=torch.bool), ["x"])
    rows = resolve_targets(model, None, enc, None) if task != "causal-lm" else _next_token_rows(model, enc)
    prep = prepare(model, _NoTokenizer(), enc, rows, baseline="zero", keep_special=False)
    return model, prep


class _NoTokenizer:
    """Enough of a tokenizer for prepare() with a zero baseline and resolved targets."""

    def convert_ids_to_tokens(self, ids):
        return [str(i) for i in ids]


def _next_token_rows(model, enc):
    from hfattr.hf.targets import TargetRows

    with torch.no_grad():
        nxt = int(model(input_ids=enc.input_ids, use_cache=False).logits[0, -1].argmax())
    return [TargetRows([enc.input_ids.shape[1] - 1], [nxt], [str(nxt)], "next_token")]


def blocks_of(model):
    return list(model.model.layers) if hasattr(model, "model") else list(model.bert.encoder.layer)


def main() -> None:
    from captum.attr import FeatureAblation as CaptumFA
    from captum.attr import LayerFeatureAblation as CaptumLFA

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--length", type=int, default=128)
    parser.add_argument("--ppe", type=int, default=16)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--hidden", type=int, default=32, help="model width (the zoo default is 32)")
    args = parser.parse_args()
    L, ppe, rep = args.length, args.ppe, args.repeat
    print(
        f"torch {torch.__version__}, threads {torch.get_num_threads()}, L={L}, hidden={args.hidden}, "
        f"perturbations_per_eval={ppe}, best of {rep}"
    )
    print(f"{'case':52s} {'hfattr s':>9s} {'captum s':>9s} {'speed-up':>9s} {'max|diff|':>10s} {'vs bound':>9s}")
    mask = torch.arange(L).view(1, L, 1)

    for name in ("llama", "bert"):
        model, prep = prepared(name, L, args.hidden)
        args_ = prep.forward_args()

        def plain(x):
            return prep.forward(x, *[a.expand(x.shape[0], *a.shape[1:]) if torch.is_tensor(a) else a for a in args_])[
                :, 0
            ]

        with torch.no_grad():  # warm-up and the time of one call at each batch size used
            for _ in range(2):
                plain(prep.embeds.expand(ppe, -1, -1))
        t1, _ = best_of(lambda: plain(prep.embeds), rep)
        tb, _ = best_of(lambda: plain(prep.embeds.expand(ppe, -1, -1)), rep)

        # token-level ablation
        def ours():
            fwd = prep.perturbation_forward(fast=True)
            return feature_ablation(
                fwd,
                (prep.embeds,),
                additional_forward_args=args_,
                target=0,
                feature_mask=(mask,),
                perturbations_per_eval=ppe,
            )[0]

        t_h, a_h = best_of(ours, rep)
        t_c, a_c = best_of(
            lambda: CaptumFA(plain).attribute(prep.embeds, feature_mask=mask, perturbations_per_eval=ppe), rep
        )
        calls = -(-L // ppe)
        bound = t1 + calls * tb
        print(
            f"{name + '-6L token ablation':52s} {t_h:9.3f} {t_c:9.3f} {t_c / t_h:8.2f}x "
            f"{float((a_h[..., 0] - a_c[..., 0]).abs().max()):10.2e} {t_h / bound:8.2f}x"
        )

        # per-block layer ablation
        blocks = blocks_of(model)
        t_h, a_h = best_of(
            lambda: [
                hfattr.LayerFeatureAblation(plain, b).attribute(
                    prep.embeds, layer_mask=mask, perturbations_per_eval=ppe
                )
                for b in blocks
            ],
            rep,
        )
        t_c, a_c = best_of(
            lambda: [
                CaptumLFA(plain, b).attribute(prep.embeds, layer_mask=mask, perturbations_per_eval=ppe) for b in blocks
            ],
            rep,
        )
        diff = max(float((x - y).abs().max()) for x, y in zip(a_h, a_c))
        bound = len(blocks) * (2 * t1 + calls * tb)  # capture + unperturbed + perturbation calls, full depth
        print(
            f"{name + '-6L per-block LayerFeatureAblation':52s} {t_h:9.3f} {t_c:9.3f} {t_c / t_h:8.2f}x "
            f"{diff:10.2e} {t_h / bound:8.2f}x"
        )

        # the Explainer's layer_ablation path: on causal LMs also only positions from the ablated one on
        def explainer_path():
            total = SummedRows(prep.perturbation_forward(fast=True))
            return [
                layer_feature_ablation(
                    total,
                    b,
                    (prep.embeds,),
                    additional_forward_args=args_,
                    layer_mask=mask,
                    perturbations_per_eval=ppe,
                    root=model,
                )[0][0]
                for b in blocks
            ]

        t_e, a_e = best_of(explainer_path, rep)
        diff = max(float((x - y).abs().max()) for x, y in zip(a_e, a_c))
        print(
            f"{name + '-6L per-block layer_ablation (Explainer path)':52s} {t_e:9.3f} {t_c:9.3f} "
            f"{t_c / t_e:8.2f}x {diff:10.2e} {t_e / bound:8.2f}x"
        )
    print(
        "vs bound: wall time over (forward calls needed × time of one plain call at that batch size); "
        "below 1 means the fast path does less work than full forwards."
    )


if __name__ == "__main__":
    main()
