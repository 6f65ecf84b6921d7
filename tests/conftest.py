"""Shared test fixtures: small deterministic float64 nets and the hypothesis profile.

Hypothesis runs derandomized (examples depend only on the test function) with no deadline and no
example database, so CI runs are reproducible; set ``HYPOTHESIS_PROFILE=dev`` for a randomized
local run.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import math
import os
from types import ModuleType
from typing import Sequence

import pytest
import torch
from torch import Tensor, nn

from hypothesis import HealthCheck, settings

settings.register_profile(
    "hfattr",
    derandomize=True,
    deadline=None,
    database=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile(
    "dev",
    derandomize=False,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "hfattr"))

# ---------------------------------------------------------------------------------------------
# Oracles: the reference implementations the drop-in classes are compared with
# ---------------------------------------------------------------------------------------------

# top-level module -> (distribution, pinned version, why that version)
ORACLES = {
    "captum": (
        "captum",
        "0.8.0",
        "0.8.0 has the reference's per-tensor feature ids (0.9 changed the feature-mask semantics)",
    ),
    "tint": ("time-interpret", "0.3.0", "0.3.0 is the reference SequentialIntegratedGradients"),
}


def _installed(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _mismatch(top: str, found: str | None) -> str | None:
    dist, pinned, why = ORACLES[top]
    if found is None:
        return f"oracle {dist}=={pinned} is not installed ({why})"
    if found != pinned:
        return f"oracle {dist} {found} is installed; these comparisons need {dist}=={pinned} ({why})"
    return None


def oracle_skip_reason(top: str) -> str | None:
    """Why the oracle ``top`` ("captum" or "tint") cannot be used, or None (package metadata only)."""
    return _mismatch(top, _installed(ORACLES[top][0]))


def oracle(module: str) -> ModuleType:
    """Import ``module`` of a pinned oracle (``"captum.attr"``, ``"tint.attr"``...), or skip.

    The installed distribution and the imported package's ``__version__`` must both be the pinned
    version. Called at module level it skips the whole test module, with the reason.
    """
    top = module.split(".")[0]
    reason = oracle_skip_reason(top)
    if reason is None:
        reason = _mismatch(top, getattr(importlib.import_module(top), "__version__", None))
    if reason is not None:
        pytest.skip(reason, allow_module_level=True)
    return importlib.import_module(module)


requires_captum = pytest.mark.skipif(
    oracle_skip_reason("captum") is not None, reason=oracle_skip_reason("captum") or ""
)
requires_tint = pytest.mark.skipif(oracle_skip_reason("tint") is not None, reason=oracle_skip_reason("tint") or "")


@pytest.fixture(scope="session")
def tint_attr() -> ModuleType:
    """``tint.attr`` imported once per session (importing it takes tens of seconds)."""
    return oracle("tint.attr")


def pytest_report_header(config) -> list[str]:
    names = ["captum", "time-interpret", "torch", "transformers"]
    found = ", ".join(f"{n} {_installed(n) or 'not installed'}" for n in names)
    return [f"oracles and stack: {found}"]


# Tiny models run fastest on one thread; more threads only add contention on small CI machines.
torch.set_num_threads(1)


DTYPE = torch.float64


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def randn(*shape: int, seed: int = 0) -> Tensor:
    """A float64 normal tensor that does not touch the global RNG."""
    return torch.randn(*shape, generator=_generator(seed), dtype=DTYPE)


class FlatTanhNet(nn.Module):
    """``W2 tanh(W1 [x_0.flatten, x_1.flatten, ...] + b1) + b2`` over any number of inputs.

    Each example's output depends only on that example's inputs, so the net is safe for
    batched perturbations. Output shape ``(B, n_out)``, or ``(B,)`` when ``n_out`` is None.
    """

    def __init__(
        self, feature_shapes: Sequence[Sequence[int]], n_out: int | None = 3, *, hidden: int = 8, seed: int = 0
    ) -> None:
        super().__init__()
        self.feature_shapes = [tuple(s) for s in feature_shapes]
        n_in = sum(math.prod(s) for s in self.feature_shapes)
        g = _generator(seed)
        self.hidden = nn.Linear(n_in, hidden).to(DTYPE)
        self.out = nn.Linear(hidden, 1 if n_out is None else n_out).to(DTYPE)
        self.scalar = n_out is None
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g, dtype=DTYPE))
        self.eval()

    def forward(self, *xs: Tensor) -> Tensor:
        flat = torch.cat([x.reshape(x.shape[0], -1).to(self.hidden.weight.dtype) for x in xs], dim=1)
        y = self.out(torch.tanh(self.hidden(flat)))
        return y[:, 0] if self.scalar else y


class LinearNet(nn.Module):
    """``y = x.flatten(1) @ w`` (no bias), a scalar per example: ablation gives ``x * w``."""

    def __init__(self, feature_shape: Sequence[int], *, seed: int = 0) -> None:
        super().__init__()
        self.weight = nn.Parameter(randn(*feature_shape, seed=seed))

    def forward(self, x: Tensor) -> Tensor:
        return (x * self.weight).reshape(x.shape[0], -1).sum(1)


class MLP(nn.Module):
    """A two-layer MLP ``(B, d_in) -> (B, n_out)`` with named sub-layers for layer methods."""

    def __init__(self, d_in: int = 5, hidden: int = 7, n_out: int = 3, *, seed: int = 0) -> None:
        super().__init__()
        g = _generator(seed)
        self.fc1 = nn.Linear(d_in, hidden).to(DTYPE)
        self.act = nn.Tanh()
        self.fc2 = nn.Linear(hidden, n_out).to(DTYPE)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g, dtype=DTYPE))
        self.eval()

    def forward(self, x: Tensor, scale: Tensor | float = 1.0) -> Tensor:
        return self.fc2(self.act(self.fc1(x) * scale))


class SeqNet(nn.Module):
    """``(B, L, D) -> (B, L, V)`` per-position net (3-D outputs for tuple targets)."""

    def __init__(self, d: int = 4, v: int = 5, *, seed: int = 0) -> None:
        super().__init__()
        g = _generator(seed)
        self.proj = nn.Linear(d, d).to(DTYPE)
        self.head = nn.Linear(d, v).to(DTYPE)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g, dtype=DTYPE))
        self.eval()

    def forward(self, x: Tensor) -> Tensor:
        h = torch.tanh(self.proj(x))
        # mix positions so that every position's output depends on every token
        h = h + h.mean(dim=1, keepdim=True)
        return self.head(h)


class EmbedNet(nn.Module):
    """Token ids ``(B, L)`` -> ``(B, n_out)`` through an ``nn.Embedding`` (integer inputs)."""

    def __init__(self, vocab: int = 11, d: int = 4, n_out: int = 3, *, seed: int = 0) -> None:
        super().__init__()
        g = _generator(seed)
        self.emb = nn.Embedding(vocab, d).to(DTYPE)
        self.head = nn.Linear(d, n_out).to(DTYPE)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g, dtype=DTYPE))
        self.eval()

    def forward(self, ids: Tensor) -> Tensor:
        return self.head(torch.tanh(self.emb(ids)).mean(dim=1))


class SmallNets:
    """Factory for the small nets above (exposed as the ``nets`` fixture)."""

    randn = staticmethod(randn)
    FlatTanhNet = FlatTanhNet
    LinearNet = LinearNet
    MLP = MLP
    SeqNet = SeqNet
    EmbedNet = EmbedNet


@pytest.fixture(scope="session")
def nets() -> type[SmallNets]:
    """Small deterministic float64 nets (see :class:`SmallNets`)."""
    return SmallNets


def assert_same(actual, expected, *, atol: float = 1e-6, rtol: float = 0.0) -> None:
    """Compare a tensor or tuple of tensors: same structure, shape, dtype and values."""
    if isinstance(expected, tuple):
        assert isinstance(actual, tuple), f"expected a tuple, got {type(actual).__name__}"
        assert len(actual) == len(expected)
        for a, e in zip(actual, expected):
            assert_same(a, e, atol=atol, rtol=rtol)
        return
    assert isinstance(actual, Tensor), f"expected a tensor, got {type(actual).__name__}"
    assert actual.shape == expected.shape, f"shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    assert actual.dtype == expected.dtype, f"dtype {actual.dtype} != {expected.dtype}"
    torch.testing.assert_close(actual, expected, atol=atol, rtol=rtol)


@pytest.fixture(scope="session")
def same():
    """The :func:`assert_same` comparison helper."""
    return assert_same


# --------------------------------------------------------------------------- shared models
@pytest.fixture(scope="session")
def default_explainer():
    """An Explainer on the bundled default model (loaded once per session; hfattr leaves it untouched)."""
    import hfattr
    from hfattr.hf.default_model import DEFAULT_MODEL_NAME, load_default_model

    model, tok = load_default_model()
    return hfattr.Explainer(model, tok, model_name=DEFAULT_MODEL_NAME)


@pytest.fixture(scope="session")
def bert64_explainer():
    """An Explainer on the tiny zoo BERT classifier in float64."""
    import hfattr
    from hfattr.testing import tiny

    model, tok = tiny("bert", dtype=torch.float64)
    return hfattr.Explainer(model, tok)


# --------------------------------------------------------------------------- scheduling under xdist
# `python -m pytest -n 2` runs with `--dist loadgroup` (pyproject addopts): every test is its own work
# unit, handed to whichever worker is free, except the groups below, which run on one worker each so
# that their module fixtures (a notebook kernel, chromium renders, a trained model, the tint import)
# are built once. Units start in this order: groups (largest first), then the slowest single tests,
# then the rest in file order, so no long test is left for the end of the run.
XDIST_GROUPS = {
    "test_notebook.py": "notebook",
    "test_browser.py": "browser",
    "test_browser_views.py": "browser-views",
    "test_planted.py": "planted",
}
SLOW_FIRST = (  # node-id prefixes, slowest first (subprocess starts and long property tests)
    "tests/test_dataset_cli.py::test_accelerate_two_processes_equal_one",
    "tests/test_cli.py::test_python_m_hfattr_on_the_default_model",
    "tests/test_property_ablation.py::test_matches_captum",
    "tests/test_dataset_cli.py::test_sigkill_then_resume_loses_and_duplicates_nothing",
    "tests/test_dropin_interface.py::test_hfattr_never_imports_the_oracles",
    "tests/test_threads.py::test_dropin_classes_many_threads",
    "tests/test_property_ablation.py::test_aggregate_output_matches_captum",
    "tests/test_property_ablation.py::test_linear_closed_form_and_ppe_invariance",
)


@pytest.hookimpl(tryfirst=True)  # before xdist reads the xdist_group marks
def pytest_collection_modifyitems(config, items) -> None:
    for item in items:
        group = XDIST_GROUPS.get(item.path.name)
        if group is None and "tint_attr" in getattr(item, "fixturenames", ()):
            group = "tint"
        if group is not None:
            item.add_marker(pytest.mark.xdist_group(group))

    def rank(item) -> int:
        return next((i for i, p in enumerate(SLOW_FIRST) if item.nodeid.startswith(p)), len(SLOW_FIRST))

    items.sort(key=rank)  # stable: file order within each rank
