"""Automatic batch sizes: the largest number of samples per call that fits in free memory.

On a GPU the memory one sample needs is measured on the first (unperturbed) call and the free memory
is asked of the driver. On the CPU the free memory comes from the operating system and a sample's
working memory is estimated from its input size; CPUs gain little from very large batches, so the
size is also capped. A call that still runs out of memory is retried with half the samples.
"""

from __future__ import annotations

import contextlib
import os
from typing import Any, Iterator

import torch
from torch import Tensor

__all__ = ["AUTO", "is_auto", "is_out_of_memory", "free_memory", "auto_samples", "MemoryProbe"]

AUTO = "auto"
CPU_SAMPLE_CAP = 256
CPU_BYTES_PER_INPUT_BYTE = 256  # working memory of a transformer sample relative to its input embeddings
HEADROOM = 0.6  # use at most this share of the free memory


def is_auto(value: Any) -> bool:
    return isinstance(value, str) and value == AUTO


def is_out_of_memory(err: BaseException) -> bool:
    """CUDA/MPS/CPU allocation failures."""
    if isinstance(err, getattr(torch, "OutOfMemoryError", ())):
        return True
    text = str(err).lower()
    return isinstance(err, RuntimeError) and (
        "out of memory" in text or "can't allocate memory" in text or "not enough memory" in text
    )


def free_memory(device: torch.device) -> int:
    """Bytes free on ``device`` (for the CPU, the memory the OS reports as available)."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return 2 * 1024**3


class MemoryProbe:
    """Measures the peak memory of a call on a GPU (no-op elsewhere)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.peak: int | None = None

    @contextlib.contextmanager
    def measure(self) -> Iterator[None]:
        if self.device.type != "cuda":
            yield
            return
        torch.cuda.synchronize(self.device)
        before = torch.cuda.memory_allocated(self.device)
        torch.cuda.reset_peak_memory_stats(self.device)
        yield
        torch.cuda.synchronize(self.device)
        self.peak = max(1, torch.cuda.max_memory_allocated(self.device) - before)


def auto_samples(
    inputs: tuple[Tensor, ...], *, samples_measured: int, probe: MemoryProbe | None = None, limit: int | None = None
) -> int:
    """How many samples of the shape of ``inputs``' examples fit in one call (at least 1)."""
    device = inputs[0].device
    free = free_memory(device) * HEADROOM
    peak = None if probe is None else probe.peak
    measured = peak is not None and peak > 2**20
    if peak is not None and measured and device.type == "cuda":  # (a call that did almost nothing measures nothing)
        per_sample = peak / max(1, samples_measured)
        samples = int(free // per_sample)
    else:
        per_sample = sum(x[:1].numel() * x.element_size() for x in inputs) * CPU_BYTES_PER_INPUT_BYTE
        samples = min(int(free // max(1, per_sample)), CPU_SAMPLE_CAP)
    if limit is not None:
        samples = min(samples, limit)
    return max(1, samples)
