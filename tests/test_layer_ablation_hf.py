"""LayerFeatureAblation on HF models: direct computations on every zoo architecture, devices, errors.

Oracles used here:
* captum 0.8.0 ``LayerFeatureAblation`` on float64 torch nets (and on HF modules whose output is a
  single tensor, where captum works), atol 1e-6;
* a direct computation on every zoo architecture: the target recomputed with the module's output
  (or input) at one token position replaced by the baseline through a forward (pre-)hook written
  here, in float64, atol 1e-6.
"""

from __future__ import annotations

import functools
import tempfile

import pytest
import torch
from torch import Tensor, nn

from hfattr import LayerFeatureAblation
from hfattr.testing import tiny

from conftest import oracle  # noqa: E402

captum_attr = oracle("captum.attr")
CaptumLFA = captum_attr.LayerFeatureAblation

from layer_helpers import ATOL, DT, _gen, _init, _randn, assert_close, one_thread  # noqa: F401


@pytest.fixture(autouse=True, scope="module")
def _one_thread(one_thread):
    yield


# ---------------------------------------------------------------------------------------------
# 2. every zoo architecture against a direct computation
# ---------------------------------------------------------------------------------------------

TEXT = "a great movie , i love it"
TEXTS = ["a great movie , i love it", "the plot was boring"]
TOKEN = 17  # an arbitrary vocabulary id used as the next-token target

# label -> attribute path, per family; t5 layer[0] / block return (hidden, position_bias, None)
PARTS = {
    "bert": {
        "attn": "bert.encoder.layer.0.attention",
        "mlp": "bert.encoder.layer.0.intermediate",
        "mlp_out": "bert.encoder.layer.0.output",
        "block": "bert.encoder.layer.0",
    },
    "roberta": {
        "attn": "roberta.encoder.layer.1.attention",
        "mlp": "roberta.encoder.layer.1.intermediate",
        "block": "roberta.encoder.layer.1",
    },
    "distilbert": {
        "attn": "distilbert.transformer.layer.0.attention",
        "mlp": "distilbert.transformer.layer.0.ffn",
        "block": "distilbert.transformer.layer.0",
    },
    "gpt2": {"attn": "transformer.h.0.attn", "mlp": "transformer.h.0.mlp", "block": "transformer.h.0"},
    "llama": {"attn": "model.layers.0.self_attn", "mlp": "model.layers.0.mlp", "block": "model.layers.0"},
    "qwen2": {"attn": "model.layers.1.self_attn", "mlp": "model.layers.1.mlp", "block": "model.layers.1"},
    "bart": {
        "attn": "model.encoder.layers.0.self_attn",
        "mlp": "model.encoder.layers.0.fc2",
        "block": "model.encoder.layers.0",
        "dec_cross": "model.decoder.layers.0.encoder_attn",
        "dec_block": "model.decoder.layers.1",
    },
    "t5": {
        "attn": "encoder.block.0.layer.0",
        "attn_core": "encoder.block.0.layer.0.SelfAttention",
        "mlp": "encoder.block.0.layer.1",
        "block": "encoder.block.0",
        "dec_cross": "decoder.block.0.layer.1",
        "dec_mlp": "decoder.block.1.layer.2",
    },
}

# where each family's attention module receives its hidden states: positional 0 or a kwarg
ATTN_INPUT = {
    "bert": ("attn", 0),
    "roberta": ("attn", 0),
    "distilbert": ("attn", 0),
    "gpt2": ("attn", 0),
    "llama": ("attn", "hidden_states"),
    "qwen2": ("attn", "hidden_states"),
    "bart": ("attn", 0),
    "t5": ("attn_core", 0),
}

CASES = [(arch, label) for arch, parts in PARTS.items() for label in parts]


def _both(forward_func, layer, inputs, *, captum_ppe=None, **kw):
    """(hfattr result, captum result) for the same arguments (captum optionally with another ppe)."""
    ours = LayerFeatureAblation(forward_func, layer).attribute(inputs, **kw)
    ckw = dict(kw)
    if captum_ppe is not None:
        ckw["perturbations_per_eval"] = captum_ppe
    theirs = CaptumLFA(forward_func, layer).attribute(inputs, **ckw)
    return ours, theirs


# ---------------------------------------------------------------------------------------------
# 1. equality with captum 0.8.0 on small torch nets
# ---------------------------------------------------------------------------------------------


X = _randn(4, 5, seed=10)


class Net(nn.Module):
    """``fc2(tanh(fc1(x) * scale + shift))``: (B, 5) -> (B, 3)."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        self.fc1 = nn.Linear(5, 7)
        self.act = nn.Tanh()
        self.fc2 = nn.Linear(7, 3)
        _init(self, seed)

    def forward(self, x: Tensor, scale: Tensor | float = 1.0, shift: float = 0.0) -> Tensor:
        return self.fc2(self.act(self.fc1(x) * scale + shift))


class TwiceNet(nn.Module):
    """Calls the same Linear twice in one forward."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 4)
        self.head = nn.Linear(4, 2)
        _init(self, 3)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.lin(torch.tanh(self.lin(x))))


@functools.lru_cache(maxsize=None)
def _zoo(arch: str):
    """(model in float64, tokenizer); shared between tests, never mutated."""
    model, tok = tiny(arch)
    return model.double().eval(), tok


class Seq2SeqLogits(nn.Module):
    """Next-token logits of an encoder-decoder model; decoder ids come as an extra argument."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: Tensor, decoder_input_ids: Tensor, attention_mask=None) -> Tensor:
        out = self.model(
            input_ids=input_ids, attention_mask=attention_mask, decoder_input_ids=decoder_input_ids, use_cache=False
        )
        return out.logits[:, -1]


def _setup(arch: str, texts=(TEXT,)):
    """(forward_func, inputs, additional_forward_args, target) for the family's default task."""
    model, tok = _zoo(arch)
    enc = tok(list(texts), return_tensors="pt", padding=True)
    ids = enc["input_ids"]
    if model.config.is_encoder_decoder:
        start = model.config.decoder_start_token_id
        dec = torch.tensor([[start, 9, 23, 40]]).expand(ids.shape[0], 4).contiguous()
        return Seq2SeqLogits(model), ids, (dec,), TOKEN
    if hasattr(model, "lm_head"):

        def causal(x, mask=None):
            return model(input_ids=x, attention_mask=mask, use_cache=False).logits[:, -1]

        return causal, ids, None, TOKEN

    def classify(x, mask=None):
        return model(input_ids=x, attention_mask=mask).logits

    return classify, ids, None, 1


def _edit_first_tensor(value, fn):
    if isinstance(value, Tensor):
        return fn(value)
    items = list(value)
    i = next(k for k, v in enumerate(items) if isinstance(v, Tensor))
    items[i] = fn(items[i])
    return type(value)(items)


def _zero_at(p: int, baseline: float):
    def fn(t: Tensor) -> Tensor:
        t = t.clone()
        t[:, p] = baseline
        return t

    return fn


def _layer_first_tensor(fn, args, module, *, where=None) -> Tensor:
    """The first tensor of the module's output (or of the input slot ``where``) in one forward."""
    seen = []

    if where is None:

        def hook(m, a, out):
            seen.append(out if isinstance(out, Tensor) else next(v for v in out if isinstance(v, Tensor)))

        h = module.register_forward_hook(hook)
    else:

        def hook(m, a, kw):
            seen.append(a[where] if isinstance(where, int) else kw[where])

        h = module.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        with torch.no_grad():
            fn(*args)
    finally:
        h.remove()
    assert len(seen) == 1
    return seen[0]


def direct_position_drops(fn, args, target, module, n_pos, *, where=None, baseline=0.0) -> Tensor:
    """(B, n_pos): target(unchanged) - target(module value at position p set to baseline).

    ``where`` None edits the output's first tensor; an int / str edits that positional / keyword
    input of the module.
    """

    def pick(out: Tensor) -> Tensor:
        if isinstance(target, int):
            return out[:, target]
        idx = torch.as_tensor(target).view(-1, 1)
        return out.gather(1, idx)[:, 0]

    with torch.no_grad():
        base = pick(fn(*args))
        cols = []
        for p in range(n_pos):
            edit = _zero_at(p, baseline)
            if where is None:
                h = module.register_forward_hook(lambda m, a, out, edit=edit: _edit_first_tensor(out, edit))
            else:

                def pre(m, a, kw, edit=edit):
                    if isinstance(where, int):
                        a = a[:where] + (edit(a[where]),) + a[where + 1 :]
                    else:
                        kw = {**kw, where: edit(kw[where])}
                    return a, kw

                h = module.register_forward_pre_hook(pre, with_kwargs=True)
            try:
                cols.append(base - pick(fn(*args)))
            finally:
                h.remove()
    return torch.stack(cols, dim=1)


def _check_against_direct(attr, drops):
    assert isinstance(attr, Tensor), f"expected a single tensor, got {type(attr).__name__}"
    assert attr.dtype == DT
    expected = drops.unsqueeze(-1).expand(attr.shape)
    torch.testing.assert_close(attr, expected, atol=ATOL, rtol=0)


@pytest.mark.parametrize("arch,label", CASES)
def test_zoo_position_ablation_matches_direct(arch, label):
    model, _ = _zoo(arch)
    fn, ids, extra, target = _setup(arch)
    module = model.get_submodule(PARTS[arch][label])
    args = (ids,) + (extra or ())
    value = _layer_first_tensor(fn, args, module)
    n_pos = value.shape[1]
    mask = torch.arange(n_pos).view(1, n_pos, 1)
    drops = direct_position_drops(fn, args, target, module, n_pos)
    assert drops.abs().max() > 1e-6, "the module should matter for the target"
    for ppe in (1, 4):
        attr = LayerFeatureAblation(fn, module).attribute(
            ids,
            target=target,
            additional_forward_args=extra,
            layer_mask=mask,
            layer_baselines=0.0,
            perturbations_per_eval=ppe,
        )
        assert attr.shape == value.shape
        _check_against_direct(attr, drops)


@pytest.mark.parametrize("arch", list(PARTS))
def test_zoo_attention_input_matches_direct(arch):
    model, _ = _zoo(arch)
    fn, ids, extra, target = _setup(arch)
    label, where = ATTN_INPUT[arch]
    module = model.get_submodule(PARTS[arch][label])
    args = (ids,) + (extra or ())
    value = _layer_first_tensor(fn, args, module, where=where)
    n_pos = value.shape[1]
    mask = torch.arange(n_pos).view(1, n_pos, 1)
    drops = direct_position_drops(fn, args, target, module, n_pos, where=where)
    assert drops.abs().max() > 1e-6
    for ppe in (1, 3):
        attr = LayerFeatureAblation(fn, module).attribute(
            ids,
            target=target,
            additional_forward_args=extra,
            layer_mask=mask,
            attribute_to_layer_input=True,
            perturbations_per_eval=ppe,
        )
        assert attr.shape == value.shape
        _check_against_direct(attr, drops)


def test_llama_attention_input_is_a_kwarg():
    """The premise of the kwarg test: llama's attention gets its hidden states only by keyword."""
    model, _ = _zoo("llama")
    fn, ids, _, _ = _setup("llama")
    seen = {}

    def pre(m, a, kw):
        seen["args"], seen["kw"] = a, kw

    h = model.model.layers[0].self_attn.register_forward_pre_hook(pre, with_kwargs=True)
    try:
        with torch.no_grad():
            fn(ids)
    finally:
        h.remove()
    assert not any(isinstance(a, Tensor) for a in seen["args"])
    assert isinstance(seen["kw"]["hidden_states"], Tensor)


def test_zoo_nonzero_baseline_matches_direct():
    model, _ = _zoo("llama")
    fn, ids, extra, target = _setup("llama")
    module = model.model.layers[0].mlp
    n = ids.shape[1]
    drops = direct_position_drops(fn, (ids,), target, module, n, baseline=0.5)
    attr = LayerFeatureAblation(fn, module).attribute(
        ids,
        target=target,
        layer_mask=torch.arange(n).view(1, n, 1),
        layer_baselines=0.5,
        perturbations_per_eval=2,
    )
    _check_against_direct(attr, drops)


def test_t5_decoder_block_attributes_to_hidden_state_only():
    """T5 decoder blocks return (hidden, self-attn position bias, cross-attn position bias).

    The biases have batch dimension 1 (broadcast over the batch), so they are not per-example
    layer values: attribution should go to the hidden state and the biases pass through, as the
    encoder block (hidden, bias, None) already does. Checked against a direct computation with a
    batch of 2 and ppe 1 and 2.
    """
    model, tok = _zoo("t5")
    enc = tok(TEXTS, return_tensors="pt", padding=True)
    ids, am = enc["input_ids"], enc["attention_mask"]
    dec = torch.tensor([[model.config.decoder_start_token_id, 9, 23, 40]] * 2)
    fn = Seq2SeqLogits(model)
    module = model.decoder.block[1]
    args = (ids, dec, am)
    drops = direct_position_drops(fn, args, TOKEN, module, 4)
    for ppe in (1, 2):
        attr = LayerFeatureAblation(fn, module).attribute(
            ids,
            target=TOKEN,
            additional_forward_args=(dec, am),
            layer_mask=torch.arange(4).view(1, 4, 1),
            perturbations_per_eval=ppe,
        )
        _check_against_direct(attr, drops)


@pytest.mark.parametrize(
    "arch,path", [("bert", "bert.encoder.layer.0.attention"), ("llama", "model.layers.0.self_attn")]
)
def test_eager_attention_two_tensors_like_captum_and_same_hidden_part(arch, path):
    """Eager attention returns (hidden, attention probabilities): two tensors, so (as in captum)
    both are attributed and the result is a tuple; its hidden-state part equals the sdpa
    model's single-tensor result and the direct computation."""
    sdpa, tok = _zoo(arch)
    eager, _ = tiny(arch, attn_implementation="eager")
    eager = eager.double().eval()
    ids = tok([TEXT], return_tensors="pt")["input_ids"]
    n = ids.shape[1]
    if hasattr(eager, "lm_head"):

        def fe(x):
            return eager(input_ids=x, use_cache=False).logits[:, -1]

        def fs(x):
            return sdpa(input_ids=x, use_cache=False).logits[:, -1]

        target = TOKEN
    else:

        def fe(x):
            return eager(input_ids=x).logits

        def fs(x):
            return sdpa(input_ids=x).logits

        target = 1
    pos = torch.arange(n).view(1, n, 1)
    masks = (pos, torch.arange(n).view(1, 1, n, 1) + n)  # probabilities: one group per query row
    ours, theirs = _both(fe, eager.get_submodule(path), ids, target=target, layer_mask=masks, perturbations_per_eval=3)
    assert isinstance(ours, tuple) and len(ours) == 2
    assert_close(ours, theirs)
    single = LayerFeatureAblation(fs, sdpa.get_submodule(path)).attribute(ids, target=target, layer_mask=pos)
    torch.testing.assert_close(ours[0], single, atol=ATOL, rtol=0)


# modules returning a single tensor, where captum works too
CAPTUM_OK = [
    ("bert", "mlp"),
    ("bert", "block"),
    ("distilbert", "mlp"),
    ("gpt2", "mlp"),
    ("llama", "block"),
    ("bart", "mlp"),
    ("t5", "mlp"),
]


@pytest.mark.parametrize("arch,label", CAPTUM_OK)
def test_zoo_single_tensor_modules_match_captum(arch, label):
    model, _ = _zoo(arch)
    fn, ids, extra, target = _setup(arch)
    module = model.get_submodule(PARTS[arch][label])
    n = _layer_first_tensor(fn, (ids,) + (extra or ()), module).shape[1]
    mask = torch.arange(n).view(1, n, 1)
    ours, theirs = _both(
        fn, module, ids, target=target, additional_forward_args=extra, layer_mask=mask, perturbations_per_eval=2
    )
    assert_close(ours, theirs)


def test_bert_output_inputs_are_a_tuple_of_two_like_captum():
    # BertOutput.forward(hidden_states, input_tensor): two positional tensors -> tuple result
    model, _ = _zoo("bert")
    fn, ids, extra, target = _setup("bert")
    module = model.bert.encoder.layer[0].output
    n = ids.shape[1]
    masks = (torch.arange(n).view(1, n, 1), torch.arange(n).view(1, n, 1) + n)
    ours, theirs = _both(
        fn, module, ids, target=target, layer_mask=masks, attribute_to_layer_input=True, perturbations_per_eval=3
    )
    assert isinstance(ours, tuple) and len(ours) == 2
    assert ours[0].shape[-1] == 64 and ours[1].shape[-1] == 32
    assert_close(ours, theirs)


# ---------------------------------------------------------------------------------------------
# 3. per-example targets, batches with attention masks
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("target", [[0, 1], torch.tensor([1, 0])], ids=["list", "tensor"])
def test_per_example_targets_batch_with_attention_mask(target):
    model, tok = _zoo("bert")
    enc = tok(TEXTS, return_tensors="pt", padding=True)
    ids, am = enc["input_ids"], enc["attention_mask"]
    assert (am == 0).any(), "the batch should contain padding"

    def fn(x, mask):
        return model(input_ids=x, attention_mask=mask).logits

    module = model.bert.encoder.layer[0].attention
    n = ids.shape[1]
    drops = direct_position_drops(fn, (ids, am), target, module, n)
    results = []
    for ppe in (1, 2, 3):
        attr = LayerFeatureAblation(fn, module).attribute(
            ids,
            target=target,
            additional_forward_args=(am,),
            layer_mask=torch.arange(n).view(1, n, 1),
            perturbations_per_eval=ppe,
        )
        _check_against_direct(attr, drops)
        results.append(attr)
    for r in results[1:]:
        torch.testing.assert_close(r, results[0], atol=1e-12, rtol=0)
    # padded positions are masked out of attention: ablating them changes nothing
    pad = am[1] == 0
    assert results[0][1, pad].abs().max() < 1e-10
    assert results[0][1, ~pad].abs().max() > 1e-6


@pytest.mark.parametrize("target", [[TOKEN, 5], torch.tensor([3, TOKEN])], ids=["list", "tensor"])
def test_per_example_targets_kwarg_layer_input_left_padded_batch(target):
    model, tok = _zoo("llama")
    tok = tiny("llama")[1]
    tok.padding_side = "left"
    enc = tok(TEXTS, return_tensors="pt", padding=True)
    ids, am = enc["input_ids"], enc["attention_mask"]
    assert (am[:, 0] == 0).any()

    def fn(x, mask):
        return model(input_ids=x, attention_mask=mask, use_cache=False).logits[:, -1]

    module = model.model.layers[1].self_attn
    n = ids.shape[1]
    drops = direct_position_drops(fn, (ids, am), target, module, n, where="hidden_states")
    results = []
    for ppe in (1, 2, 3):
        attr = LayerFeatureAblation(fn, module).attribute(
            ids,
            target=target,
            additional_forward_args=(am,),
            attribute_to_layer_input=True,
            layer_mask=torch.arange(n).view(1, n, 1),
            perturbations_per_eval=ppe,
        )
        _check_against_direct(attr, drops)
        results.append(attr)
    for r in results[1:]:
        torch.testing.assert_close(r, results[0], atol=1e-12, rtol=0)
    pad = am == 0
    assert results[0][pad].abs().max() < 1e-10


def test_per_example_tuple_targets_on_lm_logits():
    model, tok = _zoo("gpt2")
    enc = tok(TEXTS, return_tensors="pt", padding=True)
    ids, am = enc["input_ids"], enc["attention_mask"]
    n = ids.shape[1]

    def fn(x, mask):
        return model(input_ids=x, attention_mask=mask, use_cache=False).logits

    target = [(n - 1, TOKEN), (2, 5)]
    module = model.transformer.h[1].mlp
    base_results = []
    with torch.no_grad():
        base = fn(ids, am)
    for ppe in (1, 2, 3):
        attr = LayerFeatureAblation(fn, module).attribute(
            ids,
            target=target,
            additional_forward_args=(am,),
            layer_mask=torch.arange(n).view(1, n, 1),
            perturbations_per_eval=ppe,
        )
        base_results.append(attr)
    for r in base_results[1:]:
        torch.testing.assert_close(r, base_results[0], atol=1e-12, rtol=0)
    # direct check of one position per example
    for b, (pos, tok_id) in enumerate(target):
        for p in (0, pos):

            def hook(m, a, out, p=p):
                out = out.clone()
                out[:, p] = 0
                return out

            h = module.register_forward_hook(hook)
            try:
                with torch.no_grad():
                    abl = fn(ids, am)
            finally:
                h.remove()
            expected = base[b, pos, tok_id] - abl[b, pos, tok_id]
            torch.testing.assert_close(base_results[0][b, p], expected.expand(32), atol=ATOL, rtol=0)
    # causal: positions after the target position cannot matter
    assert base_results[0][1, 3:].abs().max() < 1e-10


# ---------------------------------------------------------------------------------------------
# 4. errors
# ---------------------------------------------------------------------------------------------


def test_module_run_twice_is_refused():
    net = TwiceNet()
    x = _randn(2, 4, seed=0)
    with pytest.raises(ValueError, match=r"(ran \d+ times|more than once)"):
        LayerFeatureAblation(net, net.lin).attribute(x, target=0)
    with pytest.raises(ValueError, match=r"(ran \d+ times|more than once)"):
        LayerFeatureAblation(net, net.lin).attribute(x, target=0, attribute_to_layer_input=True)


def test_shared_albert_layer_is_refused():
    from hfattr.testing import tiny_model

    model = tiny_model("albert", "sequence-classification").double()
    shared = model.albert.encoder.albert_layer_groups[0].albert_layers[0]
    ids = torch.tensor([[2, 10, 11, 12, 3]])
    with pytest.raises(ValueError, match=r"(ran \d+ times|more than once)"):
        LayerFeatureAblation(lambda x: model(input_ids=x).logits, shared).attribute(ids, target=0)


def test_layer_outside_the_model_is_refused():
    net = Net()
    stranger = nn.Linear(5, 7).to(DT)
    with pytest.raises(ValueError, match="did not run"):
        LayerFeatureAblation(net, stranger).attribute(X, target=0)
    with pytest.raises(TypeError, match="layer"):
        LayerFeatureAblation(net, "fc1")


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        (dict(layer_mask=torch.tensor([[0, 1, 2]])), ValueError, "layer_mask"),
        (dict(layer_baselines=torch.zeros(3)), ValueError, "layer_baselines"),
        (dict(target=[0, 1]), ValueError, "target"),
        (dict(target=7), IndexError, "target"),
        (dict(perturbations_per_eval=0), ValueError, "perturbations_per_eval"),
    ],
)
def test_bad_arguments_have_clear_errors(kwargs, exc, match):
    net = Net()
    kw = {"target": 0, **kwargs}
    with pytest.raises(exc, match=match):
        LayerFeatureAblation(net, net.fc1).attribute(X, **kw)


# ---------------------------------------------------------------------------------------------
# 5. accelerate placement, device_ids, DataParallel
# ---------------------------------------------------------------------------------------------


def _llama_fn(model):
    def fn(x):
        return model(input_ids=x, use_cache=False).logits[:, -1]

    return fn


def test_accelerate_dispatch_with_offload_matches_plain_model():
    from accelerate import dispatch_model

    plain, _ = _zoo("llama")
    _, ids, _, target = _setup("llama")
    fresh, _ = tiny("llama")
    fresh = fresh.double().eval()
    n = ids.shape[1]
    mask = torch.arange(n).view(1, n, 1)
    device_map = {
        "model.embed_tokens": "cpu",
        "model.layers.0": "cpu",
        "model.layers.1": "disk",
        "model.norm": "cpu",
        "model.rotary_emb": "cpu",
        "lm_head": "cpu",
    }
    with tempfile.TemporaryDirectory() as tmp:
        dispatched = dispatch_model(
            fresh, device_map=device_map, main_device="cpu", offload_dir=tmp, offload_buffers=True
        )
        assert dispatched.model.layers[1].self_attn.q_proj.weight.device.type == "meta"
        assert hasattr(dispatched.model.layers[1], "_hf_hook")
        for path in ("model.layers.0.self_attn", "model.layers.1.self_attn", "model.layers.1.mlp"):
            expected = LayerFeatureAblation(_llama_fn(plain), plain.get_submodule(path)).attribute(
                ids, target=target, layer_mask=mask
            )
            got = LayerFeatureAblation(_llama_fn(dispatched), dispatched.get_submodule(path)).attribute(
                ids, target=target, layer_mask=mask, perturbations_per_eval=3
            )
            torch.testing.assert_close(got, expected, atol=ATOL, rtol=0)
        got_in = LayerFeatureAblation(_llama_fn(dispatched), dispatched.model.layers[1].self_attn).attribute(
            ids, target=target, layer_mask=mask, attribute_to_layer_input=True, perturbations_per_eval=2
        )
    exp_in = LayerFeatureAblation(_llama_fn(plain), plain.model.layers[1].self_attn).attribute(
        ids, target=target, layer_mask=mask, attribute_to_layer_input=True
    )
    torch.testing.assert_close(got_in, exp_in, atol=ATOL, rtol=0)


def test_accelerate_cpu_offload_matches_plain_model():
    from accelerate import cpu_offload

    plain, _ = _zoo("bert")
    fn_plain, ids, _, target = _setup("bert")
    fresh, _ = tiny("bert")
    fresh = fresh.double().eval()
    cpu_offload(fresh, execution_device="cpu")
    assert fresh.bert.encoder.layer[0].intermediate.dense.weight.device.type == "meta"
    n = ids.shape[1]
    mask = torch.arange(n).view(1, n, 1)
    for path in ("bert.encoder.layer.0.attention", "bert.encoder.layer.1"):
        expected = LayerFeatureAblation(fn_plain, plain.get_submodule(path)).attribute(
            ids, target=target, layer_mask=mask
        )
        got = LayerFeatureAblation(lambda x: fresh(input_ids=x).logits, fresh.get_submodule(path)).attribute(
            ids, target=target, layer_mask=mask, perturbations_per_eval=2
        )
        torch.testing.assert_close(got, expected, atol=ATOL, rtol=0)


@pytest.mark.parametrize("device_ids", [None, []])
def test_device_ids_accepted(device_ids):
    net = Net()
    lfa = LayerFeatureAblation(net, net.fc1, device_ids=device_ids)
    assert lfa.device_ids == device_ids
    got = lfa.attribute(X, target=1, perturbations_per_eval=2)
    torch.testing.assert_close(got, CaptumLFA(net, net.fc1).attribute(X, target=1), atol=ATOL, rtol=0)
    # positional, as in the reference signature
    LayerFeatureAblation(net, net.fc1, device_ids).attribute(X, target=1)


def test_data_parallel_on_cpu():
    net = Net()
    dp = nn.DataParallel(net)
    assert not dp.device_ids  # no GPUs: DataParallel just calls the module
    mask = torch.tensor([[0, 0, 1, 1, 2, 2, 3]])
    expected = CaptumLFA(net, net.fc1).attribute(X, target=2, layer_mask=mask)
    for ppe in (1, 3):
        got = LayerFeatureAblation(dp, dp.module.fc1).attribute(
            X, target=2, layer_mask=mask, perturbations_per_eval=ppe
        )
        torch.testing.assert_close(got, expected, atol=ATOL, rtol=0)


def test_data_parallel_hf_model_on_cpu():
    model, _ = _zoo("distilbert")
    fn, ids, _, target = _setup("distilbert")
    dp = nn.DataParallel(model)
    n = ids.shape[1]
    mask = torch.arange(n).view(1, n, 1)
    module = model.distilbert.transformer.layer[0].attention
    expected = LayerFeatureAblation(fn, module).attribute(ids, target=target, layer_mask=mask)
    lfa = LayerFeatureAblation(
        lambda x: dp(input_ids=x).logits, dp.module.distilbert.transformer.layer[0].attention, device_ids=[]
    )
    got = lfa.attribute(ids, target=target, layer_mask=mask, perturbations_per_eval=2)
    torch.testing.assert_close(got, expected, atol=ATOL, rtol=0)
