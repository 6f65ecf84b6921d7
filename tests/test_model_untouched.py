"""The core methods leave a model as they found it, also when a call raises mid-way.

After every call of FeatureAblation, LayerFeatureAblation and NeuronGradient on zoo models: no hook
is left on any module (nor a global one), parameters and buffers are bitwise equal (same objects,
no ``.grad`` appeared), ``requires_grad`` flags, every module's training flag (a model in train mode
stays in train mode) and ``config._attn_implementation`` are unchanged, and so are the grad mode
and the forward hooks' kwargs/always-called registries.
"""

from __future__ import annotations

import functools
from typing import Any

import pytest
import torch
from torch import Tensor, nn

from hfattr import FeatureAblation, LayerFeatureAblation, NeuronGradient
from hfattr.core import hook_counts
from hfattr.testing import ZOO, tiny

ARCHS = list(ZOO)
TEXT = "a great movie , i love it"
TOKEN = 17

# (attention module path, where it receives its hidden states)
ATTN = {
    "bert": ("bert.encoder.layer.0.attention", "bert.encoder.layer.1"),
    "roberta": ("roberta.encoder.layer.0.attention", "roberta.encoder.layer.1"),
    "distilbert": ("distilbert.transformer.layer.0.attention", "distilbert.transformer.layer.1"),
    "gpt2": ("transformer.h.0.attn", "transformer.h.1"),
    "llama": ("model.layers.0.self_attn", "model.layers.1"),
    "qwen2": ("model.layers.0.self_attn", "model.layers.1"),
    "bart": ("model.encoder.layers.0.self_attn", "model.decoder.layers.1"),
    "t5": ("encoder.block.0.layer.0", "decoder.block.1.layer.2"),
    "phi3": ("model.layers.0.self_attn", "model.layers.1"),
    "mistral": ("model.layers.0.self_attn", "model.layers.1"),
    "gemma2": ("model.layers.0.self_attn", "model.layers.1"),  # eager: (hidden, attention weights)
    "gpt_neox": ("gpt_neox.layers.0.attention", "gpt_neox.layers.1"),
    "opt": ("model.decoder.layers.0.self_attn", "model.decoder.layers.1"),
}


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny models run fastest single-threaded (and far faster on a busy machine)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# ---------------------------------------------------------------------------------------------
# snapshot of everything a method must not change
# ---------------------------------------------------------------------------------------------


def _bits(t: Tensor) -> Tensor:
    return t.detach().contiguous().view(-1).view(torch.uint8).clone()


def _module_hooks(m: nn.Module) -> tuple[int, ...]:
    return tuple(hook_counts(m)) + (
        len(getattr(m, "_forward_hooks_with_kwargs", {})),
        len(getattr(m, "_forward_hooks_always_called", {})),
        len(getattr(m, "_forward_pre_hooks_with_kwargs", {})),
        len(getattr(m, "_state_dict_hooks", {})),
        len(getattr(m, "_load_state_dict_pre_hooks", {})),
    )


def _global_hooks() -> tuple[int, ...]:
    mod = torch.nn.modules.module
    names = (
        "_global_forward_hooks",
        "_global_forward_pre_hooks",
        "_global_backward_hooks",
        "_global_backward_pre_hooks",
        "_global_forward_hooks_always_called",
    )
    return tuple(len(getattr(mod, n, {})) for n in names)


def snapshot(model: nn.Module) -> dict[str, Any]:
    return {
        "hooks": {n: _module_hooks(m) for n, m in model.named_modules()},
        "global_hooks": _global_hooks(),
        "params": {n: (p, p.dtype, p.device, p.shape, _bits(p)) for n, p in model.named_parameters()},
        "buffers": {n: (b, b.dtype, b.device, _bits(b)) for n, b in model.named_buffers()},
        "requires_grad": {n: p.requires_grad for n, p in model.named_parameters()},
        "grads": {n: p.grad is None for n, p in model.named_parameters()},
        "training": {n: m.training for n, m in model.named_modules()},
        "attn": model.config._attn_implementation,
        "use_cache": getattr(model.config, "use_cache", None),
        "grad_enabled": torch.is_grad_enabled(),
        "inference_mode": torch.is_inference_mode_enabled(),
        "modules": [(n, id(m)) for n, m in model.named_modules()],
    }


def assert_untouched(model: nn.Module, before: dict[str, Any]) -> None:
    after = snapshot(model)
    assert after["modules"] == before["modules"], "modules were added, removed or replaced"
    leaked = {n: (before["hooks"][n], c) for n, c in after["hooks"].items() if c != before["hooks"][n]}
    assert not leaked, f"hooks left behind (before, after): {leaked}"
    assert after["global_hooks"] == before["global_hooks"], "global module hooks left behind"
    assert after["params"].keys() == before["params"].keys()
    for n, (p, dtype, device, shape, bits) in before["params"].items():
        q, dtype2, device2, shape2, bits2 = after["params"][n]
        assert q is p, f"parameter {n} was replaced"
        assert (dtype2, device2, shape2) == (dtype, device, shape), f"parameter {n} changed kind"
        assert torch.equal(bits2, bits), f"parameter {n} changed value"
    assert after["buffers"].keys() == before["buffers"].keys()
    for n, (_b, dtype, device, bits) in before["buffers"].items():
        c, dtype2, device2, bits2 = after["buffers"][n]
        assert (dtype2, device2) == (dtype, device) and torch.equal(bits2, bits), f"buffer {n} changed"
    changed = [n for n, v in after["requires_grad"].items() if v != before["requires_grad"][n]]
    assert not changed, f"requires_grad changed for {changed}"
    grads = [n for n, v in after["grads"].items() if v != before["grads"][n]]
    assert not grads, f".grad appeared on parameters {grads}"
    modes = [n for n, v in after["training"].items() if v != before["training"][n]]
    assert not modes, f"training flag changed for modules {modes[:5]}..."
    for key in ("attn", "use_cache", "grad_enabled", "inference_mode"):
        assert after[key] == before[key], f"{key} changed: {before[key]!r} -> {after[key]!r}"


def test_snapshot_detects_every_kind_of_change():
    """The checker itself can fail: each tampering below is caught."""
    model = _model("gpt2", train=True)
    mod = model.transformer.h[0].mlp

    def tamper_hook():
        h = mod.register_forward_hook(lambda *a: None)
        return h.remove

    def tamper_kwargs_pre_hook():
        h = mod.register_forward_pre_hook(lambda *a: None, with_kwargs=True)
        return h.remove

    def tamper_eval():
        model.transformer.h[1].eval()
        return lambda: model.transformer.h[1].train()

    def tamper_requires_grad():
        model.transformer.h[0].ln_1.weight.requires_grad_(False)
        return lambda: model.transformer.h[0].ln_1.weight.requires_grad_(True)

    def tamper_value():
        w = model.transformer.h[0].mlp.c_fc.weight
        old = w.detach().clone()
        with torch.no_grad():
            w[0, 0] = torch.nextafter(w[0, 0], torch.tensor(10.0, dtype=w.dtype))

        def undo():
            with torch.no_grad():
                w.copy_(old)

        return undo

    def tamper_grad():
        p = model.transformer.h[0].mlp.c_fc.bias
        p.grad = torch.zeros_like(p)
        return lambda: setattr(p, "grad", None)

    def tamper_attn():
        old = model.config._attn_implementation
        model.config._attn_implementation = "eager" if old != "eager" else "sdpa"
        return lambda: setattr(model.config, "_attn_implementation", old)

    def tamper_grad_mode():
        torch.set_grad_enabled(False)
        return lambda: torch.set_grad_enabled(True)

    before = snapshot(model)
    for tamper in (
        tamper_hook,
        tamper_kwargs_pre_hook,
        tamper_eval,
        tamper_requires_grad,
        tamper_value,
        tamper_grad,
        tamper_attn,
        tamper_grad_mode,
    ):
        undo = tamper()
        try:
            with pytest.raises(AssertionError):
                assert_untouched(model, before)
        finally:
            undo()
        assert_untouched(model, before)


# ---------------------------------------------------------------------------------------------
# zoo set-up
# ---------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=None)
def _tokenizer(arch: str):
    return tiny(arch)[1]


def _model(arch: str, *, train: bool, attn: str | None = None) -> nn.Module:
    kw = {} if attn is None else {"attn_implementation": attn}
    model, _ = tiny(arch, **kw)
    model = model.double()
    # a mixed requires_grad pattern that must survive
    model.get_input_embeddings().weight.requires_grad_(False)
    return model.train() if train else model.eval()


def _is_seq2seq(model) -> bool:
    return bool(model.config.is_encoder_decoder)


def _is_lm(model) -> bool:
    return hasattr(model, "lm_head")


def _ids(arch: str) -> Tensor:
    return _tokenizer(arch)([TEXT], return_tensors="pt")["input_ids"]


def _head(model) -> nn.Module:
    for name in ("lm_head", "classifier"):
        if hasattr(model, name):
            return getattr(model, name)
    raise AssertionError("no head module")


def _forwards(model):
    """(forward on ids, forward on embeddings, extra args, target) for the default task."""
    if _is_seq2seq(model):
        dec = torch.tensor([[model.config.decoder_start_token_id, 9, 23]])

        def on_ids(x, d):
            return model(input_ids=x, decoder_input_ids=d, use_cache=False).logits[:, -1]

        def on_emb(e, d):
            return model(inputs_embeds=e, decoder_input_ids=d, use_cache=False).logits[:, -1]

        return on_ids, on_emb, (dec,), TOKEN
    if _is_lm(model):

        def on_ids(x):
            return model(input_ids=x, use_cache=False).logits[:, -1]

        def on_emb(e):
            return model(inputs_embeds=e, use_cache=False).logits[:, -1]

        return on_ids, on_emb, None, TOKEN

    def on_ids(x):
        return model(input_ids=x).logits

    def on_emb(e):
        return model(inputs_embeds=e).logits

    return on_ids, on_emb, None, 1


def _embeds(model, ids: Tensor) -> Tensor:
    with torch.no_grad():
        return model.get_input_embeddings()(ids).detach().clone()


def _calls(model, arch: str):
    """name -> zero-argument call running one method on the model."""
    ids = _ids(arch)
    n = ids.shape[1]
    on_ids, on_emb, extra, target = _forwards(model)
    attn_path, later_path = ATTN[arch]
    attn = model.get_submodule(attn_path)
    later = model.get_submodule(later_path)
    pad = _tokenizer(arch).pad_token_id
    emb = _embeds(model, ids)
    positions = torch.arange(n).view(1, n, 1)
    attn_mask: Any = positions
    selector: Any = (1, 3)
    if model.config._attn_implementation == "eager":
        # eager attention returns (hidden, attention probabilities): two tensors, both attributed
        attn_mask = (positions, torch.full((1, 1, 1, 1), n))
        selector = lambda v: v[0][:, 1, 3]  # noqa: E731
    return {
        "feature_ablation_ids": lambda: FeatureAblation(on_ids).attribute(
            ids,
            baselines=pad,
            target=target,
            additional_forward_args=extra,
            feature_mask=torch.arange(n).view(1, n),
            perturbations_per_eval=3,
        ),
        "feature_ablation_embeds": lambda: FeatureAblation(on_emb).attribute(
            emb,
            target=target,
            additional_forward_args=extra,
            feature_mask=torch.arange(n).view(1, n, 1),
            perturbations_per_eval=2,
        ),
        "layer_ablation_output": lambda: LayerFeatureAblation(on_ids, attn).attribute(
            ids, target=target, additional_forward_args=extra, layer_mask=attn_mask, perturbations_per_eval=4
        ),
        "layer_ablation_input": lambda: LayerFeatureAblation(on_ids, attn).attribute(
            ids,
            target=target,
            additional_forward_args=extra,
            layer_mask=torch.arange(n).view(1, n, 1),
            attribute_to_layer_input=True,
        ),
        "layer_ablation_later_block": lambda: LayerFeatureAblation(on_ids, later).attribute(
            ids,
            target=target,
            additional_forward_args=extra,
            layer_mask=torch.tensor(0).view(1, 1, 1),
            perturbations_per_eval=2,
        ),
        "neuron_gradient": lambda: NeuronGradient(on_emb, attn).attribute(emb, selector, additional_forward_args=extra),
        "neuron_gradient_input": lambda: NeuronGradient(on_emb, attn).attribute(
            emb, (0, 2), additional_forward_args=extra, attribute_to_neuron_input=True
        ),
        "neuron_gradient_later_block": lambda: NeuronGradient(on_emb, later).attribute(
            emb, lambda v: v[:, 0].sum(-1), additional_forward_args=extra
        ),
    }


# ---------------------------------------------------------------------------------------------
# successful calls
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
@pytest.mark.parametrize("arch", ARCHS)
def test_successful_calls_leave_model_untouched(arch, train):
    model = _model(arch, train=train, attn="eager" if arch in ("bert", "llama") else None)
    before = snapshot(model)
    if arch in ("bert", "llama"):
        assert before["attn"] == "eager"
    for name, call in _calls(model, arch).items():
        out = call()
        first = out[0] if isinstance(out, tuple) else out
        assert isinstance(first, Tensor), name
        if not train:
            assert torch.isfinite(first).all(), name
        assert_untouched(model, before)


def test_neuron_gradient_is_not_zero_and_model_grads_untouched():
    model = _model("llama", train=False)
    before = snapshot(model)
    g = _calls(model, "llama")["neuron_gradient"]()
    assert g.abs().max() > 0
    assert not g.requires_grad
    assert_untouched(model, before)


def test_frozen_model_and_no_grad_context_are_respected():
    """A fully frozen model stays frozen; a caller's no_grad context is still active afterwards."""
    model = _model("bert", train=False)
    for p in model.parameters():
        p.requires_grad_(False)
    with torch.no_grad():
        before = snapshot(model)
        for call in _calls(model, "bert").values():
            call()
            assert_untouched(model, before)
        assert not torch.is_grad_enabled()


# ---------------------------------------------------------------------------------------------
# calls that raise mid-way
# ---------------------------------------------------------------------------------------------


class Boom(Exception):
    pass


class _RaiseOnCall:
    """A forward (pre-)hook raising ``exc`` at the module's ``k``-th call."""

    def __init__(self, module: nn.Module, k: int, exc: type[BaseException] = Boom, *, pre: bool = False) -> None:
        self.module, self.k, self.exc, self.calls, self.pre = module, k, exc, 0, pre

    def __enter__(self):
        def hook(m, *rest):
            self.calls += 1
            if self.calls == self.k:
                raise self.exc(f"boom at call {self.k}")

        if self.pre:
            self.handle = self.module.register_forward_pre_hook(hook)
        else:
            self.handle = self.module.register_forward_hook(hook)
        return self

    def __exit__(self, *exc):
        self.handle.remove()


RAISING = [
    ("feature_ablation_ids", 1),
    ("feature_ablation_ids", 3),
    ("layer_ablation_output", 1),
    ("layer_ablation_output", 2),
    ("layer_ablation_output", 3),
    ("layer_ablation_input", 3),
    ("layer_ablation_later_block", 3),
]


@pytest.mark.parametrize("arch", ["bert", "llama", "t5"])
@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
def test_forward_raising_mid_way_leaves_model_untouched(arch, train):
    model = _model(arch, train=train)
    calls = _calls(model, arch)
    before = snapshot(model)
    for name, k in RAISING:
        with _RaiseOnCall(_head(model), k) as r:
            with pytest.raises(Boom):
                calls[name]()
            assert r.calls == k
        assert_untouched(model, before)


def test_keyboard_interrupt_mid_way_leaves_model_untouched():
    model = _model("gpt2", train=True)
    calls = _calls(model, "gpt2")
    before = snapshot(model)
    for name in ("layer_ablation_output", "layer_ablation_input", "feature_ablation_embeds"):
        with _RaiseOnCall(_head(model), 3, KeyboardInterrupt):
            with pytest.raises(KeyboardInterrupt):
                calls[name]()
        assert_untouched(model, before)


@pytest.mark.parametrize("arch", ["distilbert", "qwen2", "bart"])
def test_neuron_gradient_raising_leaves_model_untouched(arch):
    """An exception at the layer itself (while the capture hook is registered, grad on)."""
    model = _model(arch, train=False)
    calls = _calls(model, arch)
    attn = model.get_submodule(ATTN[arch][0])
    before = snapshot(model)
    for name in ("neuron_gradient", "neuron_gradient_input", "layer_ablation_output", "layer_ablation_input"):
        with _RaiseOnCall(attn, 1, pre=True) as r:
            with pytest.raises(Boom):
                calls[name]()
            assert r.calls == 1
        assert_untouched(model, before)


@pytest.mark.parametrize("arch", ["roberta", "gpt2"])
def test_bad_arguments_leave_model_untouched(arch):
    model = _model(arch, train=True)
    ids = _ids(arch)
    n = ids.shape[1]
    on_ids, on_emb, extra, _ = _forwards(model)
    attn = model.get_submodule(ATTN[arch][0])
    emb = _embeds(model, ids)
    before = snapshot(model)
    vocab = model.config.vocab_size
    bad = [
        (lambda: FeatureAblation(on_ids).attribute(ids, target=vocab + 5), IndexError),
        (
            lambda: LayerFeatureAblation(on_ids, attn).attribute(
                ids, target=vocab + 5, layer_mask=torch.arange(n).view(1, n, 1)
            ),
            IndexError,
        ),
        (
            lambda: LayerFeatureAblation(on_ids, attn).attribute(
                ids, target=[0, 1, 2], layer_mask=torch.arange(n).view(1, n, 1)
            ),
            ValueError,
        ),
        (
            lambda: LayerFeatureAblation(on_ids, attn).attribute(
                ids, target=0, layer_mask=torch.arange(n + 1).view(1, n + 1, 1)
            ),
            ValueError,
        ),
        (
            lambda: LayerFeatureAblation(on_ids, attn).attribute(ids, target=0, layer_baselines=torch.zeros(3, 3)),
            ValueError,
        ),
        (lambda: LayerFeatureAblation(on_ids, nn.Linear(2, 2)).attribute(ids, target=0), ValueError),
        (lambda: NeuronGradient(on_emb, attn).attribute(emb, (n + 3, 0)), IndexError),
        (lambda: NeuronGradient(on_emb, attn).attribute(emb, "x"), TypeError),
        (lambda: NeuronGradient(on_ids, attn).attribute(ids, (0, 0)), TypeError),
    ]
    for call, exc in bad:
        with pytest.raises(exc):
            call()
        assert_untouched(model, before)


def test_module_run_twice_error_leaves_model_untouched():
    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(3, 3).double()
            self.drop = nn.Dropout(0.5)

        def forward(self, x):
            return self.lin(self.drop(self.lin(x)))

    net = Twice().train()
    before = {n: _module_hooks(m) for n, m in net.named_modules()}
    x = torch.randn(2, 3, dtype=torch.float64)
    for to_input in (False, True):
        with pytest.raises(ValueError):
            LayerFeatureAblation(net, net.lin).attribute(x, target=0, attribute_to_layer_input=to_input)
        assert {n: _module_hooks(m) for n, m in net.named_modules()} == before
        assert net.training and net.drop.training
