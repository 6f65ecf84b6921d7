"""Fast paths give the numbers of the full computation, and really skip work.

* suffix-only layer ablation (blocks before the site return their recorded output) against
  ``skip_prefix=False`` on every zoo architecture, float64, 1e-10;
* prefix reuse on causal LMs (ablation and SIG) against ``fast=False``, float64, 1e-10, and the
  number of positions actually recomputed;
* automatic batch sizes: ``"auto"`` equals a fixed size, and a call that runs out of memory is
  retried with fewer rows instead of failing.
"""

from __future__ import annotations

import pytest
import torch

import hfattr
from hfattr.core import batching
from hfattr.core.fastpath import find_root
from hfattr.hf.prefix import PrefixReuseForward
from hfattr.testing import tiny, tiny_model

ATOL = 1e-10
FAMILIES = {
    "bert": ("sequence-classification", lambda m: m.bert.encoder.layer),
    "roberta": ("sequence-classification", lambda m: m.roberta.encoder.layer),
    "distilbert": ("sequence-classification", lambda m: m.distilbert.transformer.layer),
    "gpt2": ("causal-lm", lambda m: m.transformer.h),
    "llama": ("causal-lm", lambda m: m.model.layers),
    "qwen2": ("causal-lm", lambda m: m.model.layers),
    "bart": ("seq2seq", lambda m: m.model.encoder.layers),
    "t5": ("seq2seq", lambda m: m.encoder.block),
}


def _forward(model, task):
    if task == "seq2seq":
        return lambda x, dec: model(inputs_embeds=x, decoder_input_ids=dec, use_cache=False).logits[:, -1]
    if task == "causal-lm":
        return lambda x: model(inputs_embeds=x, use_cache=False).logits[:, -1]
    return lambda x: model(inputs_embeds=x).logits


class _CountCalls:
    def __init__(self, modules):
        self.calls = 0
        self.handles = [m.register_forward_hook(self._hook) for m in modules]

    def _hook(self, *args):
        self.calls += 1

    def remove(self):
        for h in self.handles:
            h.remove()


@pytest.mark.parametrize("arch", sorted(FAMILIES))
def test_suffix_only_layer_ablation_equals_full_forwards(arch):
    task, blocks_of = FAMILIES[arch]
    model = tiny_model(arch, task, num_layers=3, dtype=torch.float64)
    ids = torch.randint(5, 200, (2, 6), generator=torch.Generator().manual_seed(1))
    x = model.get_input_embeddings()(ids).detach()
    fwd = _forward(model, task)
    extra = (torch.zeros(2, 1, dtype=torch.long),) if task == "seq2seq" else None
    mask = torch.arange(6).view(1, 6, 1)
    blocks = list(blocks_of(model))
    assert find_root(fwd, blocks[-1]) is model
    for block in blocks:
        kw = dict(target=[1, 0], layer_mask=mask, perturbations_per_eval=4, additional_forward_args=extra)
        fast = hfattr.LayerFeatureAblation(fwd, block).attribute(x, **kw)
        full = hfattr.LayerFeatureAblation(fwd, block, skip_prefix=False).attribute(x, **kw)
        torch.testing.assert_close(fast, full, atol=ATOL, rtol=0)
        assert full.abs().max() > 0


def test_suffix_only_skips_the_blocks_before_the_site():
    model = tiny_model("llama", "causal-lm", num_layers=4, dtype=torch.float64)
    x = model.get_input_embeddings()(torch.randint(5, 200, (1, 5))).detach()
    fwd = _forward(model, "causal-lm")
    blocks = list(model.model.layers)
    counters = [_CountCalls([b.mlp]) for b in blocks]  # inside a block: runs only if the block computes
    try:
        hfattr.LayerFeatureAblation(fwd, blocks[2]).attribute(x, target=3, layer_mask=torch.arange(5).view(1, 5, 1))
        # capture pass + unperturbed pass + 5 perturbations: blocks 0 and 1 only run in the capture pass
        assert [c.calls for c in counters] == [1, 1, 7, 7]
    finally:
        for c in counters:
            c.remove()


def test_suffix_only_leaves_no_override_behind():
    model = tiny_model("bert", "sequence-classification", num_layers=2)
    x = model.get_input_embeddings()(torch.randint(5, 200, (1, 4))).detach()
    before = [dict(vars(m)).get("forward") for m in model.modules()]

    def failing(t):
        out = model(inputs_embeds=t).logits
        if t.shape[0] > 1:
            raise RuntimeError("boom")
        return out

    with pytest.raises(RuntimeError, match="boom"):
        hfattr.LayerFeatureAblation(failing, model.bert.encoder.layer[1]).attribute(
            x, target=0, layer_mask=torch.arange(4).view(1, 4, 1), perturbations_per_eval=2
        )
    assert [dict(vars(m)).get("forward") for m in model.modules()] == before


@pytest.mark.parametrize("arch", ["gpt2", "llama", "qwen2"])
@pytest.mark.parametrize(
    "method,options", [("ablation", {"perturbations_per_eval": 2}), ("sig", {"n_steps": 4, "internal_batch_size": 5})]
)
def test_prefix_reuse_equals_full_computation(arch, method, options):
    model, tok = tiny(arch)
    ex = hfattr.Explainer(model.double(), tok)
    texts = ["the movie was great and the acting was good", "a bad film"]
    fast = ex.explain(texts, method=method, **options)
    full = ex.explain(texts, method=method, fast=False, **options)
    for a, b in zip(fast, full):
        torch.testing.assert_close(a.scores, b.scores, atol=ATOL, rtol=0)
    cont = ex.explain("the movie was", method=method, target=" great and good", **options)
    cont_full = ex.explain("the movie was", method=method, target=" great and good", fast=False, **options)
    torch.testing.assert_close(cont.scores, cont_full.scores, atol=ATOL, rtol=0, equal_nan=True)


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
@pytest.mark.parametrize("sites", ["attention", "mlp", "block"])
def test_layer_ablation_suffix_on_causal_models_equals_full_computation(arch, sites):
    model, tok = tiny(arch)
    ex = hfattr.Explainer(model.double(), tok)
    texts = ["the movie was great and the acting was good", "a bad film"]
    fast = ex.explain(texts, method="layer_ablation", sites=sites, perturbations_per_eval=3)
    full = ex.explain(texts, method="layer_ablation", sites=sites, perturbations_per_eval=3, fast=False)
    for a, b in zip(fast, full):
        torch.testing.assert_close(a.scores, b.scores, atol=ATOL, rtol=0)
        assert a.extras["site_scores"] == pytest.approx(b.extras["site_scores"], abs=ATOL)


def test_prefix_reuse_recomputes_only_suffixes():
    model, tok = tiny("llama")
    from hfattr.hf.prepare import prepare
    from hfattr.hf.text import encode
    from hfattr.core.ablation import feature_ablation

    enc, _ = encode(tok, "the movie was great and the acting was good")
    prep = prepare(model, tok, enc, None)
    fwd = prep.perturbation_forward()
    assert isinstance(fwd, PrefixReuseForward)
    L = prep.embeds.shape[1]
    feature_ablation(
        fwd,
        (prep.embeds,),
        baselines=(prep.baseline,),
        additional_forward_args=prep.forward_args(),
        feature_mask=(torch.arange(L).view(1, L, 1),),
        perturbations_per_eval=1,
    )
    # one unperturbed call (no position recomputed) and one call per position i running L - i positions
    assert fwd.full_calls == 1  # position 0 changes everything
    assert fwd.positions_run == sum(L - i for i in range(L))


def test_auto_batch_size_equals_a_fixed_size():
    net = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.Tanh(), torch.nn.Linear(5, 3)).double()
    x = torch.randn(4, 6, dtype=torch.float64)
    fixed = hfattr.FeatureAblation(net).attribute(x, target=[0, 1, 2, 1], perturbations_per_eval=1)
    auto = hfattr.FeatureAblation(net).attribute(x, target=[0, 1, 2, 1], perturbations_per_eval="auto")
    torch.testing.assert_close(auto, fixed, atol=0, rtol=0)
    layer = hfattr.LayerFeatureAblation(net, net[1]).attribute(x, target=1, perturbations_per_eval="auto")
    torch.testing.assert_close(layer, hfattr.LayerFeatureAblation(net, net[1]).attribute(x, target=1), atol=0, rtol=0)


def test_out_of_memory_shrinks_the_batch_instead_of_failing():
    net = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.Tanh(), torch.nn.Linear(5, 3)).double()
    x = torch.randn(4, 6, dtype=torch.float64)
    rows = []

    def limited(inp):
        rows.append(inp.shape[0])
        if inp.shape[0] > 8:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return net(inp)

    out = hfattr.FeatureAblation(limited).attribute(x, target=1, perturbations_per_eval="auto")
    torch.testing.assert_close(out, hfattr.FeatureAblation(net).attribute(x, target=1), atol=0, rtol=0)
    assert max(rows) > 8 and rows[-1] <= 8  # tried big, finished small
    with pytest.raises(RuntimeError, match="out of memory"):  # a fixed size is never changed
        hfattr.FeatureAblation(limited).attribute(x, target=1, perturbations_per_eval=6)


def test_sig_out_of_memory_shrinks_the_chunk():
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 3)).double()
    x = torch.randn(2, 4, 3, dtype=torch.float64)

    def limited(inp):
        if inp.shape[0] > 4:
            raise torch.OutOfMemoryError("out of memory")
        return net(inp)

    sig = hfattr.SequentialIntegratedGradients
    out = sig(limited).attribute(x, target=1, n_steps=5, internal_batch_size="auto")
    torch.testing.assert_close(out, sig(net).attribute(x, target=1, n_steps=5), atol=1e-12, rtol=0)


def test_auto_samples_uses_free_memory(monkeypatch):
    x = torch.zeros(1, 100, 10)  # 4000 bytes of input per row
    monkeypatch.setattr(batching, "free_memory", lambda device: 4000 * batching.CPU_BYTES_PER_INPUT_BYTE * 10)
    assert batching.auto_samples((x,), samples_measured=1) == int(10 * batching.HEADROOM)
    monkeypatch.setattr(batching, "free_memory", lambda device: 10**15)
    assert batching.auto_samples((x,), samples_measured=1) == batching.CPU_SAMPLE_CAP
    assert batching.auto_samples((x,), samples_measured=1, limit=3) == 3
    assert batching.is_out_of_memory(RuntimeError("DefaultCPUAllocator: can't allocate memory"))
    assert not batching.is_out_of_memory(RuntimeError("shape mismatch"))


def test_bad_perturbations_per_eval_names_auto():
    net = torch.nn.Linear(3, 2)
    with pytest.raises(TypeError, match="perturbations_per_eval.*'auto'"):
        hfattr.FeatureAblation(net).attribute(torch.zeros(1, 3), target=0, perturbations_per_eval="many")
