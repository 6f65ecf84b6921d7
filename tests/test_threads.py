"""Concurrent calls on one model: every result equals the sequential one, the model is left as it was.

Each *round* starts 2–4 threads at a barrier, each running one call; rounds mix methods at random
(seeded). Scenarios: one Explainer shared by the threads, two Explainers on one model, two models
sharing one config object (``from_config(m1.config)``: the attention-implementation switch of LRP
is shared), and the drop-in classes on one torch model. The oracle is the same call run alone.
"""

from __future__ import annotations

import random
import threading

import pytest
import torch
import transformers
from torch import nn

from hfattr import Explainer, FeatureAblation, LayerFeatureAblation, NeuronGradient, SequentialIntegratedGradients
from hfattr.core import hook_counts
from hfattr.lrp import LRP
from hfattr.testing import tiny

TEXTS = ["a good movie", "the plot was bad"]
EXPLAINER_JOBS = [
    ("ablation", {}),
    ("layer_ablation", {"sites": "attention"}),
    ("sig", {"n_steps": 3}),
    ("lrp", {}),
]
ROUNDS_PER_EXPLAINER_SCENARIO = 12
DROPIN_ROUNDS = 300
COUNTED: dict[str, int] = {}


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def state(model: nn.Module) -> tuple:
    """Everything a call must leave unchanged: flags, hooks, attention implementation."""
    cfg = getattr(model, "config", None)
    return (
        tuple((n, p.requires_grad) for n, p in model.named_parameters()),
        tuple((n, m.training) for n, m in model.named_modules()),
        tuple((n, hook_counts(m)) for n, m in model.named_modules()),
        None if cfg is None else getattr(cfg, "_attn_implementation", None),
        None if cfg is None else cfg.__dict__.get("_attn_implementation_internal"),
    )


def run_rounds(calls: list, rounds: int, seed: int, name: str) -> None:
    """``calls``: (function, expected) pairs; each round runs 2–4 of them at once and compares."""
    rng = random.Random(seed)
    for _ in range(rounds):
        chosen = [rng.choice(calls) for _ in range(rng.randint(2, 4))]
        barrier = threading.Barrier(len(chosen))
        out: list = [None] * len(chosen)

        def work(k: int) -> None:
            fn, _ = chosen[k]
            barrier.wait()
            try:
                out[k] = fn()
            except BaseException as err:  # reported below, in the main thread
                out[k] = err

        threads = [threading.Thread(target=work, args=(k,)) for k in range(len(chosen))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for (_, expected), got in zip(chosen, out):
            if isinstance(got, BaseException):
                raise got
            assert torch.equal(got, expected), f"{name}: a concurrent call gave a different result"
    COUNTED[name] = rounds


def explainer_calls(ex: Explainer) -> list:
    calls = []
    for method, opts in EXPLAINER_JOBS:
        for text in TEXTS:

            def fn(ex=ex, method=method, opts=opts, text=text) -> torch.Tensor:
                return ex.explain(text, method=method, **opts).scores

            calls.append((fn, fn()))  # sequential oracle
    return calls


@pytest.fixture(scope="module")
def llama():
    return tiny("llama", num_layers=1, hidden=8, heads=2, dtype=torch.float64)


def test_one_explainer_many_threads(llama):
    model, tok = llama
    before = state(model)
    ex = Explainer(model, tok)
    run_rounds(explainer_calls(ex), ROUNDS_PER_EXPLAINER_SCENARIO, 1, "one explainer")
    assert state(model) == before
    model(input_ids=torch.tensor([[5, 6, 7]]))  # still runs plainly


def test_two_explainers_one_model(llama):
    model, tok = llama
    before = state(model)
    calls = explainer_calls(Explainer(model, tok)) + explainer_calls(Explainer(model, tok))
    run_rounds(calls, ROUNDS_PER_EXPLAINER_SCENARIO, 2, "two explainers, one model")
    assert state(model) == before


def test_two_models_sharing_a_config(llama):
    m1, tok = llama
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1)
        m2 = transformers.AutoModelForCausalLM.from_config(m1.config).to(torch.float64).eval()
    assert m2.config is m1.config
    before = (state(m1), state(m2))
    calls = explainer_calls(Explainer(m1, tok)) + explainer_calls(Explainer(m2, tok))
    run_rounds(calls, ROUNDS_PER_EXPLAINER_SCENARIO, 3, "two models, one config")
    assert (state(m1), state(m2)) == before
    ids = torch.tensor([[5, 6, 7]])
    m1(input_ids=ids), m2(input_ids=ids)


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.l1 = nn.Linear(6, 8).double()
        self.l2 = nn.Linear(8, 3).double()
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype))
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.l2(self.act(self.l1(x)))


def test_dropin_classes_many_threads():
    net = Net()
    net.l1.weight.requires_grad_(False)  # a mixed state must come back exactly
    net.train()
    before = state(net)
    x = torch.randn(3, 6, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    lfa, fa = LayerFeatureAblation(net, net.l1), FeatureAblation(net)
    sig, ng, lrp = SequentialIntegratedGradients(net), NeuronGradient(net, net.l1), LRP(net)
    fns = [
        lambda: lfa.attribute(x, target=0, layer_mask=torch.arange(8).view(1, 8)),
        lambda: lfa.attribute(x, target=2, layer_baselines=0.5),
        lambda: fa.attribute(x, target=1),
        lambda: sig.attribute(x, target=1, n_steps=4),
        lambda: ng.attribute(x, neuron_selector=3),
        lambda: lrp.attribute(x, target=0),
        lambda: lrp.attribute(x, target=2),
    ]
    calls = [(fn, fn()) for fn in fns]
    run_rounds(calls, DROPIN_ROUNDS, 4, "drop-in classes")
    assert state(net) == before


def test_interleavings_counted():
    """Several hundred concurrent rounds in all (3 Explainer scenarios + the drop-in classes)."""
    assert 3 * ROUNDS_PER_EXPLAINER_SCENARIO + DROPIN_ROUNDS >= 300
    for name, n in COUNTED.items():  # the scenarios that ran in this session ran all their rounds
        assert n in (ROUNDS_PER_EXPLAINER_SCENARIO, DROPIN_ROUNDS), name


def test_locks_die_with_their_objects():
    import gc

    from hfattr.core import locking

    class Config:  # weakly referenceable, like transformers configs (which are unhashable)
        __hash__ = None

    net = Net()
    cfg = Config()
    net.config = cfg
    with locking.model_lock(net):
        keys = {id(net), id(cfg)}
        assert keys <= set(locking._LOCKS)
    del net, cfg
    gc.collect()
    assert not keys & set(locking._LOCKS)
