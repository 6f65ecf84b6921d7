"""Rows per second of ``attribute_dataset`` (token ablation, batched) vs a per-row Captum loop.

Both sides explain the predicted class of the same model on the same rows with token-level
feature ablation, the mask token's embedding as the baseline. The hfattr side is the whole
dataset run (length-sorted batches, Parquet shards, manifest); the peer is the loop people write:
one ``captum.attr.FeatureAblation.attribute`` call per row (default ``perturbations_per_eval=1``,
and 16 as a second peer setting). Captum is only imported here, as the peer and the oracle.

    python benchmarks/bench_dataset.py [--rows 256] [--model default|bert|roberta] [--layers 4]
                                       [--batch-size 16] [--threads 1]
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time

import torch


def _texts(n: int, vocab: list[str], seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(vocab) for _ in range(rng.randint(6, 40))) for _ in range(n)]


def _load(name: str, layers: int):
    if name == "default":
        from hfattr.hf.default_model import DEFAULT_MODEL_NAME, load_default_model

        model, tok = load_default_model()
        return model, tok, DEFAULT_MODEL_NAME
    from hfattr.testing import tiny

    model, tok = tiny(name, "sequence-classification", num_layers=layers, hidden=64)
    return model, tok, f"tiny-{name}-{layers}L"


def _captum_loop(model, tok, texts: list[str], ppe: int) -> list[torch.Tensor]:
    from captum.attr import FeatureAblation

    emb = model.get_input_embeddings()
    out = []
    for text in texts:
        enc = tok(text, return_tensors="pt")
        extra = {k: v for k, v in enc.items() if k == "token_type_ids"}

        def forward(x, mask=enc["attention_mask"]):
            return model(inputs_embeds=x, attention_mask=mask, **extra).logits

        with torch.no_grad():
            x = emb(enc["input_ids"])
            base = emb(torch.tensor([[tok.mask_token_id]])).expand_as(x)
            target = int(forward(x).argmax(-1))
        L = x.shape[1]
        attr = FeatureAblation(forward).attribute(
            x, baselines=base, target=target, feature_mask=torch.arange(L).view(1, L, 1), perturbations_per_eval=ppe
        )
        out.append(attr[0, :, 0])
    return out


def _hfattr_run(explainer, texts: list[str], batch_size: int):
    import datasets

    from hfattr.dataset import attribute_dataset, load_results

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        summary = attribute_dataset(
            explainer,
            datasets.Dataset.from_dict({"text": texts}),
            text_column="text",
            method="ablation",
            output_dir=tmp,
            batch_size=batch_size,
            progress=False,
        )
        wall = time.perf_counter() - t0
        results = load_results(tmp)
    return wall, summary, results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=256)
    parser.add_argument("--model", default="default", help="'default' (embedded model) or a zoo name")
    parser.add_argument("--layers", type=int, default=4, help="layers of a zoo model")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--threads", type=int, default=1, help="torch threads for both sides")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    import datasets

    import hfattr

    datasets.disable_progress_bars()
    model, tok, name = _load(args.model, args.layers)
    vocab = [w for w in tok.get_vocab() if w.isalpha() and not w.startswith("[")]
    texts = _texts(args.rows, vocab)
    explainer = hfattr.Explainer(model, tok, model_name=name)

    _hfattr_run(explainer, texts[:8], args.batch_size)  # warm up both sides
    _captum_loop(model, tok, texts[:8], 1)

    t_h, summary, results = _hfattr_run(explainer, texts, args.batch_size)
    t0 = time.perf_counter()
    peer = _captum_loop(model, tok, texts, 1)
    t_c1 = time.perf_counter() - t0
    t0 = time.perf_counter()
    _captum_loop(model, tok, texts, 16)
    t_c16 = time.perf_counter() - t0

    # oracle check: the same scores on every non-special token
    diff = 0.0
    for res, ref in zip(results, peer):
        keep = torch.tensor([not s for s in res.special_mask])
        diff = max(diff, float((res.scores[keep] - ref[keep]).abs().max()))

    n = len(texts)
    print(
        f"model {name}, {n} rows ({summary.tokens_new} tokens, 6-40 words each), torch {torch.__version__}, "
        f"threads {torch.get_num_threads()}, batch size {args.batch_size}"
    )
    print(f"{'run':52s} {'wall s':>8s} {'rows/s':>8s}")
    print(f"{'hfattr attribute_dataset (ablation, shards written)':52s} {t_h:8.2f} {n / t_h:8.1f}")
    print(f"{'captum FeatureAblation per row (ppe=1, default)':52s} {t_c1:8.2f} {n / t_c1:8.1f}")
    print(f"{'captum FeatureAblation per row (ppe=16)':52s} {t_c16:8.2f} {n / t_c16:8.1f}")
    print(f"speed-up vs per-row captum (ppe=1):  {t_c1 / t_h:.2f}x")
    print(f"speed-up vs per-row captum (ppe=16): {t_c16 / t_h:.2f}x")
    print(f"max |score diff| on non-special tokens vs captum: {diff:.2e}")


if __name__ == "__main__":
    main()
