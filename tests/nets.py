"""Small deterministic float64 nets and the tensor comparison helper shared by the tests.

Kept out of conftest.py so that pytest's controlling process (under ``-n 2``) does not import torch.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor, nn

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
    if actual.device == expected.device and torch.allclose(actual, expected, atol=atol, rtol=rtol):
        return  # the same criterion as assert_close (|a - e| <= atol + rtol |e|, NaN unequal), 10x faster
    torch.testing.assert_close(actual, expected, atol=atol, rtol=rtol)  # raises, with a readable message
