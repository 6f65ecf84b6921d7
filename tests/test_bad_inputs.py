"""The bad-input catalogue: every entry is one distinct misuse, refused with a named error.

Each case gives the call, the exception type (or, for the command line, exit status 2) and a
fragment of the message; after every case the tiny models are checked to be exactly as before
(``requires_grad``, training flags, hooks on every module, attention implementation). Groups:
``api`` (Explainer, methods, registry), ``dropin`` (reference-compatible classes), ``result``
(Result files), ``dataset`` (dataset runs) and ``cli`` (``hfattr.cli.main``, in process).
"""

from __future__ import annotations

import json
import os
import types
import warnings
from collections import Counter
from pathlib import Path

import datasets
import pytest
import torch
import transformers
from torch import nn

from hfattr import (
    Explainer,
    FeatureAblation,
    LayerFeatureAblation,
    NeuronGradient,
    Result,
    SequentialIntegratedGradients,
)
from hfattr.cli import main
from hfattr.core import hook_counts
from hfattr.dataset import attribute_dataset, load_results
from hfattr.dataset.storage import read_manifest
from hfattr.lrp import LRP
from hfattr.methods import get_method, register_method
from hfattr.testing import tiny

CLI = "exit 2"  # the expected "exception" of a command-line case
T = "a good movie"
LONG = " ".join(["good"] * 30)


# --------------------------------------------------------------------------- the world (built once)
class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.l1 = nn.Linear(4, 6).double()
        self.l2 = nn.Linear(6, 3).double()

    def forward(self, x):
        return self.l2(torch.relu(self.l1(x)))


class SeqNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 2).double()

    def forward(self, x):
        return self.lin(x).sum(1)


class EmbNoConfig(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(10, 4)

    def get_input_embeddings(self):
        return self.emb


@pytest.fixture(scope="module")
def w(tmp_path_factory):
    torch.set_num_threads(1)
    tmp = tmp_path_factory.mktemp("bad")
    cls, tok = tiny("bert", num_layers=1, hidden=8, heads=2)
    mlm, mtok = tiny("bert", "masked-lm", num_layers=1, hidden=8, heads=2)
    causal, ctok = tiny("llama", num_layers=1, hidden=8, heads=2)
    small, _ = tiny("bert", num_layers=1, hidden=8, heads=2, vocab_size=40)
    with torch.device("meta"):
        meta = transformers.AutoModelForSequenceClassification.from_config(cls.config)
    net, seq = Net(), SeqNet()
    ns = types.SimpleNamespace(
        tmp=tmp,
        cls=cls,
        tok=tok,
        mlm=mlm,
        mtok=mtok,
        causal=causal,
        ctok=ctok,
        small=small,
        meta=meta,
        net=net,
        seq=seq,
        ex=Explainer(cls, tok),
        exm=Explainer(mlm, mtok),
        exc=Explainer(causal, ctok),
        x=torch.ones(2, 4, dtype=torch.float64),
        xs=torch.ones(2, 3, 4, dtype=torch.float64),
    )
    ns.models = [cls, mlm, causal, small, net, seq]
    # files
    good = ns.ex.explain(T)
    ns.good = good.to_dict()
    ns.ds = datasets.Dataset.from_dict({"text": ["a good movie", "bad"], "label": [1, 0]})
    (tmp / "data.csv").write_text("text,label\na good movie,1\nbad,0\n")
    (tmp / "data.xyz").write_text("x")
    (tmp / "empty.csv").write_text("")
    (tmp / "notadir").write_text("x")
    (tmp / "stray").mkdir()
    (tmp / "stray" / "mine.txt").write_text("x")
    (tmp / "emptydir").mkdir()
    (tmp / "badmanifest").mkdir()
    (tmp / "badmanifest" / "manifest.json").write_text("{not json")
    (tmp / "nums.csv").write_text("text,n\n1,2\n3,4\n")
    run = tmp / "run"
    attribute_dataset(ns.ex, ns.ds, text_column="text", method="ablation", output_dir=run, progress=False)
    ns.run = run
    good.save(tmp / "good.json")
    return ns


def state(ns) -> list:
    out = []
    for m in ns.models:
        cfg = getattr(m, "config", None)
        out.append(
            (
                tuple((n, p.requires_grad) for n, p in m.named_parameters()),
                tuple((n, x.training) for n, x in m.named_modules()),
                tuple((n, hook_counts(x)) for n, x in m.named_modules()),
                None if cfg is None else getattr(cfg, "_attn_implementation", None),
            )
        )
    return out


# --------------------------------------------------------------------------- result-file helpers
def res_file(w, name: str, mutate=None, *, raw: bytes | None = None) -> Path:
    path = w.tmp / f"r-{name}.json"
    if raw is not None:
        path.write_bytes(raw)
        return path
    d = json.loads(json.dumps(w.good))
    if mutate is not None:
        mutate(d)
    path.write_text(json.dumps(d))
    return path


def set_(key, value):
    def f(d):
        d[key] = value

    return f


def drop(key):
    def f(d):
        del d[key]

    return f


def tensor_field(**changes):
    def f(d):
        d["scores"].update(changes)

    return f


def fifo(w) -> Path:
    path = w.tmp / "fifo.json"
    if not path.exists():
        os.mkfifo(path)
    return path


def ds_run(w, **kw):
    args = dict(text_column="text", method="ablation", output_dir=w.tmp / "out-unused", progress=False)
    args.update(kw)
    data = args.pop("data", w.ds)
    ex = args.pop("explainer", w.ex)
    return attribute_dataset(ex, data, **args)


def register_twice():
    def m(prep, *, a=1):
        return []

    h = register_method("twice_registered", m)
    try:
        register_method("twice_registered", m)
    finally:
        h.remove()


# --------------------------------------------------------------------------- the catalogue
# (id, group, call(w), exception type or CLI, message fragment)
E = Explainer
CASES = [
    # ---- api: texts and general options
    ("text-int", "api", lambda w: w.ex.explain(123), TypeError, "text must be a str"),
    ("text-none", "api", lambda w: w.ex.explain(None), TypeError, "text must be a str"),
    ("text-empty-list", "api", lambda w: w.ex.explain([]), ValueError, "empty list"),
    ("text-empty", "api", lambda w: w.ex.explain(""), ValueError, "text is empty"),
    ("text-blank", "api", lambda w: w.ex.explain("   \n"), ValueError, "text is empty"),
    ("text-item-int", "api", lambda w: w.ex.explain([T, 5]), TypeError, "text[1] must be a str"),
    ("text-item-empty", "api", lambda w: w.ex.explain([T, ""]), ValueError, "text[1] is empty"),
    ("text-dict", "api", lambda w: w.ex.explain({"a": 1}), TypeError, "text must be a str"),
    ("method-unknown", "api", lambda w: w.ex.explain(T, method="nope"), ValueError, "unknown method 'nope'"),
    ("method-none", "api", lambda w: w.ex.explain(T, method=None), ValueError, "unknown method None"),
    ("batch-size-0", "api", lambda w: w.ex.explain(T, batch_size=0), ValueError, "batch_size must be an int >= 1"),
    ("batch-size-neg", "api", lambda w: w.ex.explain(T, batch_size=-2), ValueError, "batch_size must be"),
    ("batch-size-float", "api", lambda w: w.ex.explain(T, batch_size=1.5), ValueError, "batch_size must be"),
    ("batch-size-str", "api", lambda w: w.ex.explain(T, batch_size="2"), ValueError, "batch_size must be"),
    ("option-unknown", "api", lambda w: w.ex.explain(T, foo=1), TypeError, "unknown option(s) ['foo']"),
    ("max-length-str", "api", lambda w: w.ex.explain(T, max_length="5"), TypeError, "max_length must be an int"),
    ("max-length-0", "api", lambda w: w.ex.explain(T, max_length=0), ValueError, "max_length must be >= 1"),
    (
        "max-length-neg",
        "api",
        lambda w: w.ex.explain(T, max_length=-3, truncation=True),
        ValueError,
        "max_length must be >= 1",
    ),
    ("max-length-float", "api", lambda w: w.ex.explain(T, max_length=2.5), TypeError, "max_length must be an int"),
    ("max-length-bool", "api", lambda w: w.ex.explain(T, max_length=True), TypeError, "max_length must be an int"),
    (
        "truncation-str",
        "api",
        lambda w: w.ex.explain(T, truncation="yes"),
        TypeError,
        "truncation must be True or False",
    ),
    ("truncation-int", "api", lambda w: w.ex.explain(T, truncation=1), TypeError, "truncation must be True"),
    ("too-long", "api", lambda w: w.ex.explain(LONG, max_length=4), ValueError, "pass truncation=True"),
    ("too-long-list", "api", lambda w: w.ex.explain([T, LONG], max_length=6), ValueError, "text[1] has"),
    ("chat-no-template", "api", lambda w: w.ex.explain(T, chat=True), ValueError, "chat_template"),
    ("score-unknown", "api", lambda w: w.ex.explain(T, score="nope"), ValueError, "score must be one of"),
    # ---- api: baselines
    ("baseline-word", "api", lambda w: w.ex.explain(T, baseline="bogus"), ValueError, "baseline must be"),
    ("baseline-id-big", "api", lambda w: w.ex.explain(T, baseline=10**6), ValueError, "outside the vocabulary"),
    ("baseline-id-neg", "api", lambda w: w.ex.explain(T, baseline=-1), ValueError, "outside the vocabulary"),
    ("baseline-bool", "api", lambda w: w.ex.explain(T, baseline=True), TypeError, "not a bool"),
    ("baseline-list", "api", lambda w: w.ex.explain(T, baseline=[1]), ValueError, "baseline must be"),
    (
        "baseline-mask-missing",
        "api",
        lambda w: w.exc.explain(T, baseline="mask"),
        ValueError,
        "tokenizer has no mask token",
    ),
    # ---- api: classification targets
    ("cls-target-big", "api", lambda w: w.ex.explain(T, target=99), ValueError, "out of range"),
    ("cls-target-neg", "api", lambda w: w.ex.explain(T, target=-1), ValueError, "out of range"),
    ("cls-target-name", "api", lambda w: w.ex.explain(T, target="nolabel"), ValueError, "unknown label name"),
    ("cls-target-float", "api", lambda w: w.ex.explain(T, target=1.5), TypeError, "label id or a label name"),
    ("cls-target-bool", "api", lambda w: w.ex.explain(T, target=True), TypeError, "label id or a label name"),
    ("cls-target-list-len", "api", lambda w: w.ex.explain(T, target=[0, 1]), ValueError, "target list has 2 entries"),
    (
        "cls-target-list-len2",
        "api",
        lambda w: w.ex.explain([T, T, T], target=[0]),
        ValueError,
        "target list has 1 entries",
    ),
    ("cls-target-dict", "api", lambda w: w.ex.explain(T, target={"a": 1}), TypeError, "label id"),
    # ---- api: masked-LM / causal-LM targets
    (
        "mlm-target-big",
        "api",
        lambda w: w.exm.explain("a [MASK] movie", target=10**6),
        ValueError,
        "masked-LM target token id 1000000 is outside the vocabulary",
    ),
    (
        "mlm-target-neg",
        "api",
        lambda w: w.exm.explain("a [MASK] movie", target=-3),
        ValueError,
        "masked-LM target token id -3",
    ),
    (
        "mlm-target-float",
        "api",
        lambda w: w.exm.explain("a [MASK] movie", target=1.5),
        TypeError,
        "masked-LM target must be",
    ),
    (
        "mlm-target-bool",
        "api",
        lambda w: w.exm.explain("a [MASK] movie", target=False),
        TypeError,
        "masked-LM target must be",
    ),
    ("mlm-no-mask", "api", lambda w: w.exm.explain("a good movie", target="good"), ValueError, "token in the text"),
    (
        "mlm-target-two-tokens",
        "api",
        lambda w: w.exm.explain("a [MASK] movie", target="good bad"),
        ValueError,
        "target gives 2 token(s) for 1 mask",
    ),
    (
        "mlm-target-oov",
        "api",
        lambda w: w.exm.explain("a [MASK] movie", target="zzqx"),
        ValueError,
        "outside the vocabulary",
    ),
    (
        "causal-target-big",
        "api",
        lambda w: w.exc.explain(T, target=10**7),
        ValueError,
        "target token id 10000000 is outside the vocabulary",
    ),
    ("causal-target-neg", "api", lambda w: w.exc.explain(T, target=-1), ValueError, "outside the vocabulary"),
    ("causal-target-float", "api", lambda w: w.exc.explain(T, target=2.0), TypeError, "causal-LM target must be"),
    (
        "causal-target-empty",
        "api",
        lambda w: w.exc.explain(T, target=""),
        ValueError,
        "continuation must be a non-empty string",
    ),
    (
        "causal-target-oov",
        "api",
        lambda w: w.exc.explain(T, target="zzqx"),
        ValueError,
        "has tokens outside the vocabulary",
    ),
    # ---- api: pre-tokenised input and vocabulary mismatch
    (
        "ids-out-of-table",
        "api",
        lambda w: w.ex.explain({"input_ids": torch.tensor([[2, 500, 3]])}),
        ValueError,
        "token id 500 (text 0, position 1) is outside the model's input embedding table",
    ),
    (
        "ids-negative",
        "api",
        lambda w: w.ex.explain({"input_ids": torch.tensor([[2, -1, 3]])}),
        ValueError,
        "negative token id",
    ),
    (
        "ids-float",
        "api",
        lambda w: w.ex.explain({"input_ids": torch.tensor([[2.0, 5.0]])}),
        TypeError,
        "input_ids must be integer token ids",
    ),
    (
        "ids-3d",
        "api",
        lambda w: w.ex.explain({"input_ids": torch.zeros(1, 2, 3, dtype=torch.long)}),
        TypeError,
        "of shape (batch, length)",
    ),
    (
        "ids-empty",
        "api",
        lambda w: w.ex.explain({"input_ids": torch.zeros(1, 0, dtype=torch.long)}),
        ValueError,
        "input_ids is empty",
    ),
    (
        "vocab-mismatch",
        "api",
        lambda w: E(w.small, w.tok).explain("a good movie"),
        ValueError,
        "the tokenizer does not match the model",
    ),
    # ---- api: methods' options
    (
        "ablation-granularity",
        "api",
        lambda w: w.ex.explain(T, granularity="char"),
        ValueError,
        "granularity must be 'token' or 'word'",
    ),
    (
        "ablation-ppe-0",
        "api",
        lambda w: w.ex.explain(T, perturbations_per_eval=0),
        ValueError,
        "perturbations_per_eval must be >= 1",
    ),
    (
        "ablation-ppe-str",
        "api",
        lambda w: w.ex.explain(T, perturbations_per_eval="x"),
        TypeError,
        "perturbations_per_eval must be an int",
    ),
    (
        "ablation-ppe-float",
        "api",
        lambda w: w.ex.explain(T, perturbations_per_eval=2.5),
        TypeError,
        "perturbations_per_eval must be an int",
    ),
    (
        "layer-site-classifier",
        "api",
        lambda w: w.ex.explain(T, method="layer_ablation", sites="classifier"),
        ValueError,
        "site 'classifier' (Linear) does not give one value per input token",
    ),
    (
        "layer-site-pooler",
        "api",
        lambda w: w.ex.explain(T, method="layer_ablation", sites="bert.pooler"),
        ValueError,
        "site 'bert.pooler' (BertPooler) does not give one value per input token",
    ),
    (
        "layer-site-missing",
        "api",
        lambda w: w.ex.explain(T, method="layer_ablation", sites="nope.module"),
        ValueError,
        "matches no role or module name",
    ),
    (
        "layer-site-int",
        "api",
        lambda w: w.ex.explain(T, method="layer_ablation", sites=123),
        TypeError,
        "a site must be a role name",
    ),
    (
        "layer-site-empty-list",
        "api",
        lambda w: w.ex.explain(T, method="layer_ablation", sites=[]),
        ValueError,
        "spec is an empty list",
    ),
    (
        "layer-ppe-0",
        "api",
        lambda w: w.ex.explain(T, method="layer_ablation", perturbations_per_eval=0),
        ValueError,
        "perturbations_per_eval must be >= 1",
    ),
    ("sig-steps-0", "api", lambda w: w.ex.explain(T, method="sig", n_steps=0), ValueError, "n_steps must be >= 1"),
    ("sig-steps-neg", "api", lambda w: w.ex.explain(T, method="sig", n_steps=-5), ValueError, "n_steps must be"),
    (
        "sig-steps-str",
        "api",
        lambda w: w.ex.explain(T, method="sig", n_steps="many"),
        TypeError,
        "n_steps must be an int",
    ),
    (
        "sig-integration",
        "api",
        lambda w: w.ex.explain(T, method="sig", integration="simpson"),
        ValueError,
        "integration must be one of",
    ),
    (
        "sig-auto-riemann",
        "api",
        lambda w: w.ex.explain(T, method="sig", n_steps="auto", integration="riemann_left"),
        ValueError,
        "leave integration='gausslegendre'",
    ),
    (
        "sig-tol-nan",
        "api",
        lambda w: w.ex.explain(T, method="sig", tol=float("nan")),
        ValueError,
        "tol must be a finite number >= 0",
    ),
    ("sig-tol-neg", "api", lambda w: w.ex.explain(T, method="sig", tol=-1.0), ValueError, "tol must be a finite"),
    ("sig-tol-str", "api", lambda w: w.ex.explain(T, method="sig", tol="small"), ValueError, "tol must be"),
    (
        "sig-ibs-0",
        "api",
        lambda w: w.ex.explain(T, method="sig", internal_batch_size=0),
        ValueError,
        "internal_batch_size must be >= 1",
    ),
    (
        "sig-ibs-float",
        "api",
        lambda w: w.ex.explain(T, method="sig", internal_batch_size=2.5),
        TypeError,
        "internal_batch_size must be an int",
    ),
    (
        "lrp-composite",
        "api",
        lambda w: w.ex.explain(T, method="lrp", composite="nope"),
        ValueError,
        "unknown composite 'nope'",
    ),
    (
        "lrp-composite-int",
        "api",
        lambda w: w.ex.explain(T, method="lrp", composite=3),
        TypeError,
        "composite must be a name or a Composite",
    ),
    ("lrp-score-prob", "api", lambda w: w.ex.explain(T, method="lrp", score="prob"), ValueError, "lrp explains logits"),
    ("lrp-rules-int", "api", lambda w: w.ex.explain(T, method="lrp", rules=5), TypeError, "rules must be a dict"),
    (
        "lrp-rules-value",
        "api",
        lambda w: w.ex.explain(T, method="lrp", rules={nn.Linear: 3}),
        TypeError,
        "must be a PropagationRule",
    ),
    (
        "lrp-rules-key",
        "api",
        lambda w: w.ex.explain(T, method="lrp", rules={"nope.*": None}),
        ValueError,
        "matches no module",
    ),
    ("ng-no-site", "api", lambda w: w.ex.explain(T, method="neuron_gradient", neuron=0), TypeError, "site"),
    (
        "ng-reduce",
        "api",
        lambda w: w.ex.explain(T, method="neuron_gradient", site="bert.embeddings", neuron=0, reduce="x"),
        ValueError,
        "reduce must be one of",
    ),
    (
        "ng-neuron-str",
        "api",
        lambda w: w.ex.explain(T, method="neuron_gradient", site="bert.embeddings", neuron="a"),
        TypeError,
        "neuron must be an int",
    ),
    (
        "ng-neuron-big",
        "api",
        lambda w: w.ex.explain(T, method="neuron_gradient", site="bert.embeddings", neuron=10**6),
        ValueError,
        "out of range for site",
    ),
    (
        "ng-position-big",
        "api",
        lambda w: w.ex.explain(T, method="neuron_gradient", site="bert.embeddings", neuron=0, position=99),
        ValueError,
        "position 99",
    ),
    (
        "ng-position-str",
        "api",
        lambda w: w.ex.explain(T, method="neuron_gradient", site="bert.embeddings", neuron=0, position="first"),
        ValueError,
        "position must be 'last', 'all' or an int",
    ),
    (
        "ng-site-many",
        "api",
        lambda w: w.ex.explain(T, method="neuron_gradient", site="*.dense", neuron=0),
        ValueError,
        "neuron_gradient needs exactly one",
    ),
    # ---- api: constructing an Explainer
    (
        "explainer-str-model",
        "api",
        lambda w: E("bert-base-uncased", w.tok),
        TypeError,
        "model must be a transformers model",
    ),
    ("explainer-no-tokenizer", "api", lambda w: E(w.cls, None), TypeError, "tokenizer must be a transformers"),
    ("explainer-print-tokenizer", "api", lambda w: E(w.cls, print), TypeError, "tokenizer must be a transformers"),
    (
        "explainer-lambda-tokenizer",
        "api",
        lambda w: E(w.cls, lambda s: s),
        TypeError,
        "tokenizer must be a transformers",
    ),
    ("explainer-str-tokenizer", "api", lambda w: E(w.cls, "bert"), TypeError, "tokenizer must be a transformers"),
    ("explainer-linear", "api", lambda w: E(nn.Linear(2, 2), w.tok), ValueError, "has no input embeddings"),
    ("explainer-no-config", "api", lambda w: E(EmbNoConfig(), w.tok), TypeError, "has no .config"),
    ("explainer-meta", "api", lambda w: E(w.meta, w.tok), ValueError, "on the 'meta' device"),
    # ---- api: registry
    (
        "register-empty-name",
        "api",
        lambda w: register_method("", lambda p: []),
        ValueError,
        "method name must be a non-empty string",
    ),
    ("register-not-callable", "api", lambda w: register_method("x_nc", 5), TypeError, "fn must be callable"),
    (
        "register-positional-options",
        "api",
        lambda w: register_method("x_pos", lambda p, a: []),
        TypeError,
        "only positional argument",
    ),
    ("register-duplicate", "api", lambda w: register_twice(), ValueError, "already registered"),
    ("get-method-unknown", "api", lambda w: get_method("zzz"), ValueError, "known methods"),
    # ---- drop-in classes
    ("fa-not-callable", "dropin", lambda w: FeatureAblation("f"), TypeError, "forward_func must be callable"),
    (
        "fa-batch-0",
        "dropin",
        lambda w: FeatureAblation(w.net).attribute(torch.zeros(0, 4, dtype=torch.float64), target=0),
        ValueError,
        "batch of 0",
    ),
    (
        "fa-float-target",
        "dropin",
        lambda w: FeatureAblation(w.net).attribute(w.x, target=torch.tensor([0.0, 1.0])),
        TypeError,
        "target tensor must hold integer output indices",
    ),
    (
        "fa-float-target-scalar",
        "dropin",
        lambda w: FeatureAblation(w.net).attribute(w.x, target=1.0),
        TypeError,
        "target must be an int output index",
    ),
    (
        "fa-bool-target-tensor",
        "dropin",
        lambda w: FeatureAblation(w.net).attribute(w.x, target=torch.tensor([True, False])),
        TypeError,
        "integer output indices",
    ),
    (
        "fa-target-list-len",
        "dropin",
        lambda w: FeatureAblation(w.net).attribute(w.x, target=[0, 1, 2]),
        ValueError,
        "target list has 3 entries",
    ),
    (
        "fa-target-tensor-len",
        "dropin",
        lambda w: FeatureAblation(w.net).attribute(w.x, target=torch.tensor([0, 1, 2])),
        ValueError,
        "target tensor has 3 elements",
    ),
    (
        "fa-ppe-0",
        "dropin",
        lambda w: FeatureAblation(w.net).attribute(w.x, target=0, perturbations_per_eval=0),
        ValueError,
        "perturbations_per_eval must be >= 1",
    ),
    (
        "fa-ppe-float",
        "dropin",
        lambda w: FeatureAblation(w.net).attribute(w.x, target=0, perturbations_per_eval=1.5),
        TypeError,
        "perturbations_per_eval must be an int",
    ),
    (
        "fa-mask-shape",
        "dropin",
        lambda w: FeatureAblation(w.net).attribute(w.x, target=0, feature_mask=torch.zeros(1, 3, dtype=torch.long)),
        ValueError,
        "feature_mask",
    ),
    (
        "fa-baseline-shape",
        "dropin",
        lambda w: FeatureAblation(w.net).attribute(w.x, target=0, baselines=torch.zeros(3, 3, dtype=torch.float64)),
        ValueError,
        "baselines",
    ),
    ("fa-inputs-str", "dropin", lambda w: FeatureAblation(w.net).attribute("x", target=0), TypeError, "inputs"),
    (
        "lfa-layer-not-module",
        "dropin",
        lambda w: LayerFeatureAblation(w.net, "l1"),
        TypeError,
        "layer must be a torch.nn.Module",
    ),
    (
        "lfa-mask-shape",
        "dropin",
        lambda w: LayerFeatureAblation(w.net, w.net.l1).attribute(
            w.x, target=0, layer_mask=torch.zeros(1, 2, 3, dtype=torch.long)
        ),
        ValueError,
        "layer_mask",
    ),
    (
        "lfa-layer-not-run",
        "dropin",
        lambda w: LayerFeatureAblation(w.net, nn.Linear(2, 2)).attribute(w.x, target=0),
        (ValueError, RuntimeError),
        "did not run",
    ),
    (
        "lfa-batch-0",
        "dropin",
        lambda w: LayerFeatureAblation(w.net, w.net.l1).attribute(torch.zeros(0, 4, dtype=torch.float64), target=0),
        ValueError,
        "batch of 0",
    ),
    (
        "ng-layer-not-module",
        "dropin",
        lambda w: NeuronGradient(w.net, None),
        TypeError,
        "layer must be a torch.nn.Module",
    ),
    (
        "ng-neuron-out-of-range",
        "dropin",
        lambda w: NeuronGradient(w.net, w.net.l1).attribute(w.x, 99),
        (ValueError, IndexError),
        "99",
    ),
    (
        "sig-dropin-tol-nan",
        "dropin",
        lambda w: SequentialIntegratedGradients(w.seq).attribute(w.xs, target=0, tol=float("nan")),
        ValueError,
        "tol must be a finite number",
    ),
    (
        "sig-dropin-tol-neg",
        "dropin",
        lambda w: SequentialIntegratedGradients(w.seq).attribute(w.xs, target=0, tol=-0.1),
        ValueError,
        "tol must be a finite number",
    ),
    (
        "sig-dropin-ibs-0",
        "dropin",
        lambda w: SequentialIntegratedGradients(w.seq).attribute(w.xs, target=0, internal_batch_size=0),
        ValueError,
        "internal_batch_size must be >= 1",
    ),
    (
        "sig-dropin-steps-0",
        "dropin",
        lambda w: SequentialIntegratedGradients(w.seq).attribute(w.xs, target=0, n_steps=0),
        ValueError,
        "n_steps must be >= 1",
    ),
    (
        "sig-dropin-method",
        "dropin",
        lambda w: SequentialIntegratedGradients(w.seq).attribute(w.xs, target=0, method="simpson"),
        ValueError,
        "method must be one of",
    ),
    (
        "sig-dropin-1d",
        "dropin",
        lambda w: SequentialIntegratedGradients(w.net).attribute(torch.ones(4, dtype=torch.float64), target=0),
        ValueError,
        "must have a sequence dimension",
    ),
    (
        "sig-dropin-int-input",
        "dropin",
        lambda w: SequentialIntegratedGradients(w.seq).attribute(torch.ones(2, 3, 4, dtype=torch.long), target=0),
        TypeError,
        "must be floating point",
    ),
    (
        "sig-dropin-target-len",
        "dropin",
        lambda w: SequentialIntegratedGradients(w.seq).attribute(w.xs, target=[0, 1, 0]),
        ValueError,
        "target list has 3 entries",
    ),
    (
        "sig-dropin-auto-riemann",
        "dropin",
        lambda w: SequentialIntegratedGradients(w.seq).attribute(w.xs, target=0, n_steps="auto", method="riemann_left"),
        ValueError,
        "leave method='gausslegendre'",
    ),
    (
        "sig-dropin-nan-baseline",
        "dropin",
        lambda w: SequentialIntegratedGradients(w.seq).attribute(w.xs, target=0, baselines=float("nan")),
        ValueError,
        "baselines[0] is not finite",
    ),
    ("lrp-not-module", "dropin", lambda w: LRP(lambda x: x), TypeError, "model must be a torch.nn.Module"),
    (
        "lrp-int-no-embedding",
        "dropin",
        lambda w: LRP(w.net).attribute((w.x, torch.zeros(2, 4, dtype=torch.long)), target=0),
        ValueError,
        "no nn.Embedding to read it",
    ),
    (
        "lrp-target-len",
        "dropin",
        lambda w: LRP(w.net).attribute(w.x, target=[0, 1, 2]),
        ValueError,
        "target list has 3 entries",
    ),
    (
        "lrp-float-target",
        "dropin",
        lambda w: LRP(w.net).attribute(w.x, target=torch.tensor([0.5, 1.0])),
        TypeError,
        "integer output indices",
    ),
    (
        "lrp-batch-0",
        "dropin",
        lambda w: LRP(w.net).attribute(torch.zeros(0, 4, dtype=torch.float64), target=0),
        ValueError,
        "batch of 0",
    ),
    (
        "lrp-composite-unknown",
        "dropin",
        lambda w: LRP(w.net, composite="nope").attribute(w.x, target=0),
        ValueError,
        "unknown composite",
    ),
    ("lrp-nan-input", "dropin", lambda w: LRP(w.net).attribute(w.x * float("nan"), target=0), ValueError, "not finite"),
    # ---- Result files
    ("load-missing", "result", lambda w: Result.load(w.tmp / "nope.json"), FileNotFoundError, "cannot read"),
    ("load-directory", "result", lambda w: Result.load(w.tmp), ValueError, "is not a regular file"),
    ("load-fifo", "result", lambda w: Result.load(fifo(w)), ValueError, "is not a regular file"),
    (
        "load-bad-utf8",
        "result",
        lambda w: Result.load(res_file(w, "utf8", raw=b'{"a": "\xff\xfe"}')),
        ValueError,
        "is not valid UTF-8",
    ),
    (
        "load-too-big",
        "result",
        lambda w: Result.load(w.tmp / "good.json", max_bytes=10),
        ValueError,
        "more than max_bytes=10",
    ),
    (
        "load-max-bytes-0",
        "result",
        lambda w: Result.load(w.tmp / "good.json", max_bytes=0),
        ValueError,
        "max_bytes must be an int >= 1",
    ),
    (
        "load-max-bytes-str",
        "result",
        lambda w: Result.load(w.tmp / "good.json", max_bytes="1"),
        ValueError,
        "max_bytes must be an int",
    ),
    ("load-empty", "result", lambda w: Result.load(res_file(w, "empty", raw=b"")), ValueError, "invalid JSON"),
    ("load-not-json", "result", lambda w: Result.load(res_file(w, "nj", raw=b"{nope")), ValueError, "invalid JSON"),
    (
        "load-json-list",
        "result",
        lambda w: Result.load(res_file(w, "list", raw=b"[1, 2]")),
        ValueError,
        "not an hfattr Result",
    ),
    (
        "load-no-format",
        "result",
        lambda w: Result.load(res_file(w, "nofmt", drop("format"))),
        ValueError,
        "not an hfattr Result",
    ),
    (
        "load-version-99",
        "result",
        lambda w: Result.load(res_file(w, "v99", set_("format_version", 99))),
        ValueError,
        "unsupported hfattr Result format_version",
    ),
    (
        "load-version-bool",
        "result",
        lambda w: Result.load(res_file(w, "vb", set_("format_version", True))),
        ValueError,
        "unsupported hfattr Result format_version",
    ),
    (
        "load-version-0",
        "result",
        lambda w: Result.load(res_file(w, "v0", set_("format_version", 0))),
        ValueError,
        "unsupported hfattr Result format_version",
    ),
    (
        "load-no-scores",
        "result",
        lambda w: Result.load(res_file(w, "nos", drop("scores"))),
        ValueError,
        "missing required keys ['scores']",
    ),
    (
        "load-no-tokens",
        "result",
        lambda w: Result.load(res_file(w, "not", drop("tokens"))),
        ValueError,
        "missing required keys ['tokens']",
    ),
    (
        "load-tokens-ints",
        "result",
        lambda w: Result.load(res_file(w, "ti", set_("tokens", [1, 2, 3, 4, 5]))),
        ValueError,
        "'tokens' must be a list of strings",
    ),
    (
        "load-token-ids-str",
        "result",
        lambda w: Result.load(res_file(w, "tis", set_("token_ids", ["1"] * 5))),
        ValueError,
        "'token_ids' must be a list of integers",
    ),
    (
        "load-token-ids-bool",
        "result",
        lambda w: Result.load(res_file(w, "tib", set_("token_ids", [True] * 5))),
        ValueError,
        "'token_ids' must be a list of integers",
    ),
    (
        "load-special-no",
        "result",
        lambda w: Result.load(res_file(w, "smn", set_("special_mask", ["no"] * 5))),
        ValueError,
        "'special_mask' must be a list of booleans",
    ),
    (
        "load-special-int",
        "result",
        lambda w: Result.load(res_file(w, "smi", set_("special_mask", [1, 0, 0, 0, 1]))),
        ValueError,
        "'special_mask' must be a list of booleans",
    ),
    (
        "load-offsets-str",
        "result",
        lambda w: Result.load(res_file(w, "os", set_("offsets", [["0", "1"]] * 5))),
        ValueError,
        "'offsets' must be a list of [start, end]",
    ),
    (
        "load-offsets-triple",
        "result",
        lambda w: Result.load(res_file(w, "ot", set_("offsets", [[0, 1, 2]] * 5))),
        ValueError,
        "'offsets' must be a list of [start, end]",
    ),
    (
        "load-word-ids-str",
        "result",
        lambda w: Result.load(res_file(w, "wi", set_("word_ids", ["a"] * 5))),
        ValueError,
        "'word_ids' must be a list of integers",
    ),
    (
        "load-rows-ints",
        "result",
        lambda w: Result.load(res_file(w, "ri", set_("rows", [1]))),
        ValueError,
        "'rows' must be a list of strings",
    ),
    (
        "load-target-list",
        "result",
        lambda w: Result.load(res_file(w, "tl", set_("target", [1]))),
        ValueError,
        "'target' must be a JSON object",
    ),
    (
        "load-options-str",
        "result",
        lambda w: Result.load(res_file(w, "ops", set_("options", "x"))),
        ValueError,
        "'options' must be a JSON object",
    ),
    (
        "load-extras-int",
        "result",
        lambda w: Result.load(res_file(w, "ext", set_("extras", 3))),
        ValueError,
        "'extras' must be a JSON object",
    ),
    (
        "load-prob-str",
        "result",
        lambda w: Result.load(res_file(w, "ps", set_("probability", "0.5"))),
        ValueError,
        "'probability' must be a number",
    ),
    (
        "load-prob-bool",
        "result",
        lambda w: Result.load(res_file(w, "pb", set_("probability", True))),
        ValueError,
        "'probability' must be a number",
    ),
    (
        "load-prob-list-str",
        "result",
        lambda w: Result.load(res_file(w, "pl", set_("probability", ["a"]))),
        ValueError,
        "'probability' must be a number",
    ),
    (
        "load-delta-str",
        "result",
        lambda w: Result.load(res_file(w, "ds", set_("delta", "x"))),
        ValueError,
        "'delta' must be a number",
    ),
    (
        "load-text-int",
        "result",
        lambda w: Result.load(res_file(w, "txt", set_("text", 5))),
        ValueError,
        "'text' must be a string",
    ),
    (
        "load-method-list",
        "result",
        lambda w: Result.load(res_file(w, "ml", set_("method", ["a"]))),
        ValueError,
        "'method' must be a string",
    ),
    (
        "load-model-name-int",
        "result",
        lambda w: Result.load(res_file(w, "mn", set_("model_name", 1))),
        ValueError,
        "'model_name' must be a string",
    ),
    (
        "load-scores-list",
        "result",
        lambda w: Result.load(res_file(w, "sl", set_("scores", [0.1] * 5))),
        ValueError,
        "'scores' must be a stored floating-point tensor",
    ),
    (
        "load-scores-int-dtype",
        "result",
        lambda w: Result.load(
            res_file(
                w, "sid", set_("scores", {"__hfattr_tensor__": 1, "dtype": "int64", "shape": [5], "data": [1] * 5})
            )
        ),
        ValueError,
        "'scores' must be a stored floating-point tensor",
    ),
    (
        "load-scores-bad-dtype",
        "result",
        lambda w: Result.load(res_file(w, "sbd", tensor_field(dtype="complex64"))),
        ValueError,
        "unsupported stored tensor dtype",
    ),
    (
        "load-scores-getattr-dtype",
        "result",
        lambda w: Result.load(res_file(w, "sgd", tensor_field(dtype="manual_seed"))),
        ValueError,
        "unsupported stored tensor dtype",
    ),
    (
        "load-scores-shape",
        "result",
        lambda w: Result.load(res_file(w, "ssh", tensor_field(shape=[7]))),
        ValueError,
        "not a valid hfattr Result",
    ),
    (
        "load-scores-wrong-length",
        "result",
        lambda w: Result.load(res_file(w, "swl", tensor_field(shape=[4], data=["0x0p+0"] * 4))),
        ValueError,
        "scores must have shape (5,)",
    ),
    (
        "load-scores-data-not-hex",
        "result",
        lambda w: Result.load(res_file(w, "snh", tensor_field(data=["zz"] * 5))),
        ValueError,
        "not a valid hfattr Result",
    ),
    (
        "load-deeply-nested",
        "result",
        lambda w: Result.load(res_file(w, "deep", raw=b"[" * 100000 + b"]" * 100000)),
        ValueError,
        "hfattr Result",
    ),
    ("from-dict-str", "result", lambda w: Result.from_dict("x"), ValueError, "not an hfattr Result"),
    # ---- dataset runs
    (
        "ds-not-explainer",
        "dataset",
        lambda w: ds_run(w, explainer=w.cls),
        TypeError,
        "explainer must be an hfattr.Explainer",
    ),
    ("ds-method-unknown", "dataset", lambda w: ds_run(w, method="nope"), ValueError, "unknown method 'nope'"),
    ("ds-option-unknown", "dataset", lambda w: ds_run(w, foo=1), TypeError, "unknown option(s) ['foo']"),
    ("ds-batch-size-0", "dataset", lambda w: ds_run(w, batch_size=0), ValueError, "batch_size must be an int >= 1"),
    ("ds-max-rows-0", "dataset", lambda w: ds_run(w, max_rows=0), ValueError, "max_rows must be an int >= 1"),
    ("ds-shard-size-0", "dataset", lambda w: ds_run(w, shard_size=0), ValueError, "shard_size must be an int >= 1"),
    ("ds-shard-size-bool", "dataset", lambda w: ds_run(w, shard_size=True), ValueError, "shard_size must be"),
    (
        "ds-text-column-empty",
        "dataset",
        lambda w: ds_run(w, text_column=""),
        ValueError,
        "text_column must be a column name",
    ),
    (
        "ds-text-column-missing",
        "dataset",
        lambda w: ds_run(w, text_column="body"),
        ValueError,
        "text_column 'body' is not a column",
    ),
    (
        "ds-target-column-missing",
        "dataset",
        lambda w: ds_run(w, target_column="y"),
        ValueError,
        "target_column 'y' is not a column",
    ),
    ("ds-target-and-column", "dataset", lambda w: ds_run(w, target_column="label", target=1), ValueError, "not both"),
    (
        "ds-output-empty",
        "dataset",
        lambda w: ds_run(w, output_dir=" "),
        ValueError,
        "output_dir must be a directory path",
    ),
    (
        "ds-output-file",
        "dataset",
        lambda w: ds_run(w, output_dir=w.tmp / "notadir"),
        ValueError,
        "exists and is not a directory",
    ),
    (
        "ds-output-stray",
        "dataset",
        lambda w: ds_run(w, output_dir=w.tmp / "stray"),
        ValueError,
        "holds no hfattr manifest",
    ),
    (
        "ds-output-other-run",
        "dataset",
        lambda w: ds_run(w, output_dir=w.run, method="sig"),
        ValueError,
        "holds a run with different settings",
    ),
    ("ds-data-int", "dataset", lambda w: ds_run(w, data=5), TypeError, "data must be a datasets.Dataset"),
    ("ds-data-empty-str", "dataset", lambda w: ds_run(w, data=" "), ValueError, "data is an empty string"),
    (
        "ds-data-missing-path",
        "dataset",
        lambda w: ds_run(w, data=str(w.tmp / "nope" / "x")),
        FileNotFoundError,
        "does not exist",
    ),
    (
        "ds-data-extension",
        "dataset",
        lambda w: ds_run(w, data=str(w.tmp / "data.xyz")),
        ValueError,
        "has an unknown extension",
    ),
    (
        "ds-data-empty-file",
        "dataset",
        lambda w: ds_run(w, data=str(w.tmp / "empty.csv")),
        ValueError,
        "is empty (0 rows)",
    ),
    (
        "ds-data-zero-rows",
        "dataset",
        lambda w: ds_run(w, data=datasets.Dataset.from_dict({"text": []})),
        (ValueError, TypeError),
        "empty",
    ),
    (
        "ds-text-not-strings",
        "dataset",
        lambda w: ds_run(w, data=str(w.tmp / "nums.csv")),
        TypeError,
        "not text (strings)",
    ),
    (
        "ds-split-on-dataset",
        "dataset",
        lambda w: ds_run(w, split="train"),
        ValueError,
        "data is already a single Dataset",
    ),
    (
        "ds-dict-no-split",
        "dataset",
        lambda w: ds_run(w, data=datasets.DatasetDict({"a": w.ds, "b": w.ds})),
        ValueError,
        "pass split=",
    ),
    (
        "ds-dict-bad-split",
        "dataset",
        lambda w: ds_run(w, data=datasets.DatasetDict({"a": w.ds}), split="z"),
        ValueError,
        "split 'z' not found",
    ),
    ("ds-reserved-text", "dataset", lambda w: ds_run(w, text="x"), TypeError, "unknown option(s) ['text']"),
    (
        "ds-labels-none-valid",
        "dataset",
        lambda w: ds_run(
            w, data=datasets.Dataset.from_dict({"text": ["a", "b"], "label": ["good", "bad"]}), target_column="label"
        ),
        ValueError,
        "none of its first 2 labels is a class of the model",
    ),
    (
        "ds-labels-out-of-range",
        "dataset",
        lambda w: ds_run(
            w, data=datasets.Dataset.from_dict({"text": ["a", "b"], "label": [7, 9]}), target_column="label"
        ),
        ValueError,
        "none of its first 2 labels",
    ),
    (
        "ds-truncation-str",
        "dataset",
        lambda w: ds_run(w, truncation="yes"),
        TypeError,
        "truncation must be True or False",
    ),
    ("ds-max-length-0", "dataset", lambda w: ds_run(w, max_length=0), ValueError, "max_length must be >= 1"),
    (
        "ds-load-failed-arg",
        "dataset",
        lambda w: load_results(w.run, failed="x"),
        ValueError,
        "failed must be 'skip' or 'none'",
    ),
    (
        "ds-load-missing",
        "dataset",
        lambda w: load_results(w.tmp / "nope"),
        FileNotFoundError,
        "neither a dataset-run directory",
    ),
    (
        "ds-load-no-shards",
        "dataset",
        lambda w: load_results(w.tmp / "emptydir"),
        FileNotFoundError,
        "holds no shard-*.parquet files",
    ),
    (
        "ds-load-bad-shard-file",
        "dataset",
        lambda w: load_results(w.tmp / "data.csv"),
        ValueError,
        "is not a readable hfattr shard",
    ),
    (
        "ds-manifest-bad",
        "dataset",
        lambda w: read_manifest(w.tmp / "badmanifest"),
        ValueError,
        "is not a readable hfattr manifest",
    ),
    # ---- command line (in process)
    ("cli-unknown-command", "cli", ["frobnicate"], CLI, "invalid choice"),
    ("cli-no-command", "cli", [], CLI, "usage"),
    ("cli-explain-method", "cli", ["explain", T, "--method", "nope"], CLI, "unknown method 'nope'"),
    ("cli-explain-option-format", "cli", ["explain", T, "--option", "oops"], CLI, "--option expects key=value"),
    ("cli-explain-option-target", "cli", ["explain", T, "--option", "target=1"], CLI, "not allowed"),
    ("cli-explain-max-length-0", "cli", ["explain", T, "--max-length", "0"], CLI, "expected a positive integer"),
    ("cli-explain-max-length-str", "cli", ["explain", T, "--max-length", "ten"], CLI, "expected a positive integer"),
    ("cli-explain-model-empty", "cli", ["explain", T, "--model", " "], CLI, "--model is empty"),
    ("cli-explain-task", "cli", ["explain", T, "--task", "nope"], CLI, "unknown task"),
    ("cli-explain-twice", "cli", ["explain", T, "--truncation", "--option", "truncation=true"], CLI, "give it once"),
    ("cli-ds-no-data", "cli", ["attribute-dataset", "--text-column", "text", "--output", "x"], CLI, "--data"),
    (
        "cli-ds-batch-0",
        "cli",
        ["attribute-dataset", "--data", "x.csv", "--text-column", "t", "--output", "o", "--batch-size", "0"],
        CLI,
        "expected a positive integer",
    ),
    (
        "cli-ds-option-method",
        "cli",
        ["attribute-dataset", "--data", "x.csv", "--text-column", "t", "--output", "o", "--option", "method=sig"],
        CLI,
        "not allowed",
    ),
    (
        "cli-ds-target-both",
        "cli",
        [
            "attribute-dataset",
            "--data",
            "x.csv",
            "--text-column",
            "t",
            "--output",
            "o",
            "--target",
            "1",
            "--target-column",
            "label",
        ],
        CLI,
        "not allowed with",
    ),
    ("cli-evaluate-metric", "cli", ["evaluate", "r.json", "--metrics", "nope"], CLI, "unknown ['nope']"),
    ("cli-evaluate-steps", "cli", ["evaluate", "r.json", "--steps", "0"], CLI, "--steps must be >= 1"),
    ("cli-evaluate-batch", "cli", ["evaluate", "r.json", "--batch-size", "0"], CLI, "--batch-size must be >= 1"),
    ("cli-evaluate-top-k", "cli", ["evaluate", "r.json", "--top-k", "1.5"], CLI, "expected a fraction"),
    ("cli-corpus-missing", "cli", ["corpus-summary", "/nonexistent/run"], CLI, "does not exist"),
]


def test_catalogue_size_and_distinct():
    ids = [c[0] for c in CASES]
    assert len(ids) == len(set(ids))
    groups = Counter(c[1] for c in CASES)
    assert len(CASES) >= 150, groups
    assert set(groups) == {"api", "dropin", "result", "dataset", "cli"}


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input(w, case, capsys):
    _, group, call, exc, fragment = case
    before = state(w)
    if exc is CLI:
        argv = [a.replace("r.json", str(w.tmp / "good.json")) for a in call]
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert fragment in err, err
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with pytest.raises(exc) as info:
                call(w)
        assert fragment in str(info.value), str(info.value)
    assert state(w) == before


def test_special_tokens_only_warns(w):
    before = state(w)
    with pytest.warns(UserWarning, match="made only of special tokens.*every score is 0 by construction"):
        r = w.ex.explain("[CLS] [SEP]")
    assert bool((r.scores == 0).all())
    assert state(w) == before
