"""How many tokens a gradient call may hold: a throughput cap and a memory budget.

A *token* here is one sequence position of one sample that the forward pass runs (a sample of
length ``L`` is ``L`` of them; on a prefix-reusing forward a sample changed from position ``p`` on
is ``L - p``; docs/performance.md calls them row-positions). The memory a call keeps for its backward pass
grows linearly with them, so the budget is measured on the calls themselves: every call records the
bytes autograd saved (activations only: tensors without a ``grad_fn``, such as weights, are not
counted) and later calls are sized so that ``saved bytes × TRANSIENT`` stays within the budget. The
first call, before anything is measured, is kept small. See docs/performance.md for the measured
curves.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch
from torch import Tensor

from .batching import free_memory

__all__ = ["TokenBudget", "default_budget", "CPU_SHARE", "GPU_SHARE", "CPU_TOKEN_CAP", "TRANSIENT"]

CPU_SHARE = 0.25  # default budget: this share of the memory the OS reports available (shared machines)
GPU_SHARE = 0.6  # ... or of the free memory of the GPU
CPU_TOKEN_CAP = 8192  # tokens per call beyond which CPUs run no faster (docs/performance.md)
GPU_TOKEN_CAP = 1 << 20
FIRST_TOKENS = 2048  # the first, unmeasured call holds at most this many tokens
GUESS_BYTES_PER_INPUT_BYTE = 512  # first-call guess: working memory per position / input bytes per position
TRANSIENT = 1.5  # peak memory of a call / bytes saved for its backward (gradients in flight, logits)


def default_budget(device: torch.device) -> int:
    """Bytes a call may use by default: a share of the currently free memory of ``device``."""
    share = GPU_SHARE if device.type == "cuda" else CPU_SHARE
    return int(free_memory(device) * share)


class TokenBudget:
    """Tokens per call (see the module docstring); ``tokens`` is re-read before every call."""

    def __init__(self, inputs: tuple[Tensor, ...], budget: int | None = None, cap: int | None = None) -> None:
        dev = inputs[0].device
        self.budget = default_budget(dev) if budget is None else int(budget)
        self.cap = cap if cap is not None else (GPU_TOKEN_CAP if dev.type == "cuda" else CPU_TOKEN_CAP)
        L = max(1, inputs[0].shape[1])
        per_pos_in = sum(x[:1].numel() * x.element_size() for x in inputs) / L
        self.guess = max(1.0, per_pos_in * GUESS_BYTES_PER_INPUT_BYTE)
        self.per_position: float | None = None  # measured saved bytes per token

    @property
    def tokens(self) -> int:
        if self.per_position is None:
            return max(1, min(self.cap, FIRST_TOKENS, int(self.budget // (self.guess * TRANSIENT))))
        return max(1, min(self.cap, int(self.budget // (self.per_position * TRANSIENT))))

    def shrink(self) -> None:
        """After running out of memory: halve what a call may hold."""
        self.cap = max(1, self.tokens // 2)

    @contextlib.contextmanager
    def measure(self, positions: int) -> Iterator[None]:
        """Count the activation bytes autograd saves inside the block (``positions`` tokens)."""
        seen: dict[int, int] = {}

        def pack(t: Tensor) -> Tensor:
            if t.grad_fn is not None:
                try:
                    st = t.untyped_storage()
                    seen[st.data_ptr()] = st.nbytes()
                except (RuntimeError, NotImplementedError):  # tensors without plain storage
                    pass
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            yield
        if positions > 0 and seen:
            per = sum(seen.values()) / positions
            self.per_position = per if self.per_position is None else max(self.per_position, per)
