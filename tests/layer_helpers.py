"""Helpers shared by the layer-ablation test modules."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

DT = torch.float64
ATOL = 1e-6


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models run fastest single-threaded (and far faster on a busy machine)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _randn(*shape: int, seed: int = 0) -> Tensor:
    return torch.randn(*shape, generator=_gen(seed), dtype=DT)


def _init(module: nn.Module, seed: int) -> nn.Module:
    g = _gen(seed)
    module.to(DT)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=DT))
    return module.eval()


def assert_close(actual, expected, *, atol: float = ATOL) -> None:
    """Same structure (tensor vs tuple), shapes, dtype and values to ``atol``."""
    if isinstance(expected, tuple):
        assert isinstance(actual, tuple), f"expected a tuple, got {type(actual).__name__}"
        assert len(actual) == len(expected)
        for a, e in zip(actual, expected):
            assert_close(a, e, atol=atol)
        return
    assert isinstance(actual, Tensor), f"expected a tensor, got {type(actual).__name__}"
    assert actual.shape == expected.shape, f"shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    assert actual.dtype == expected.dtype, f"dtype {actual.dtype} != {expected.dtype}"
    torch.testing.assert_close(actual, expected, atol=atol, rtol=0.0)
