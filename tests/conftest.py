"""Shared test fixtures: small deterministic float64 nets and the hypothesis profile.

Hypothesis runs derandomized (examples depend only on the test function) with no deadline and no
example database, so CI runs are reproducible; set ``HYPOTHESIS_PROFILE=dev`` for a randomized
local run.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import os
import sys
from types import ModuleType, SimpleNamespace

import pytest
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
def tint_attr() -> SimpleNamespace:
    """time-interpret's ``SequentialIntegratedGradients``, the one class of ``tint.attr`` the tests use.

    ``tint/attr/__init__.py`` imports every tint method, and with them pytorch-lightning (4-9 s); the
    SIG module itself needs only captum and ``tint.utils``. So ``tint.attr.seq_ig`` is loaded from
    tint's own file under a bare ``tint.attr`` package (removed again afterwards; a later full
    ``import tint.attr`` reuses the loaded module): the same class, without the unrelated imports.
    """
    oracle("tint")  # the pinned version (distribution and tint.__version__), or skip
    if "tint.attr" in sys.modules:
        return SimpleNamespace(SequentialIntegratedGradients=sys.modules["tint.attr"].SequentialIntegratedGradients)
    path = importlib.util.find_spec("tint").submodule_search_locations[0]
    bare = ModuleType("tint.attr")
    bare.__path__ = [os.path.join(path, "attr")]
    sys.modules["tint.attr"] = bare
    try:
        seq_ig = importlib.import_module("tint.attr.seq_ig")
    finally:
        del sys.modules["tint.attr"]
    return SimpleNamespace(SequentialIntegratedGradients=seq_ig.SequentialIntegratedGradients)


def pytest_report_header(config) -> list[str]:
    names = ["captum", "time-interpret", "torch", "transformers"]
    found = ", ".join(f"{n} {_installed(n) or 'not installed'}" for n in names)
    return [f"oracles and stack: {found}"]


def pytest_configure(config) -> None:
    """In the processes that run tests (not xdist's controller, which needs no torch): one torch
    thread — tiny models run fastest on one, and more only add contention on small CI machines."""
    if os.environ.get("PYTEST_XDIST_WORKER") or not getattr(config.option, "numprocesses", None):
        import torch

        torch.set_num_threads(1)
    _one_gc_pass(config)


@pytest.fixture(scope="session")
def nets():
    """Small deterministic float64 nets (see ``tests/nets.py``: :class:`SmallNets`)."""
    from nets import SmallNets

    return SmallNets


@pytest.fixture(scope="session")
def same():
    """The ``assert_same`` comparison helper of ``tests/nets.py``."""
    from nets import assert_same

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

    import torch

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
    "tests/test_cli.py::test_explain_on_the_default_model",
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


def _one_gc_pass(config) -> None:
    """One garbage collection at the end of a worker's session instead of pytest's five: each one
    walks the whole heap (torch, transformers and every cached model; ~0.25-1 s a pass), and a
    single pass still reports the exceptions raised in destructors."""
    try:
        from _pytest.unraisableexception import gc_collect_iterations_key
    except ImportError:  # another pytest: keep its default
        return
    config.stash[gc_collect_iterations_key] = 1
