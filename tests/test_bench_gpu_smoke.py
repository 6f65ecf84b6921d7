"""``benchmarks/gpu.py --device cpu --tiny``: every item runs and the markdown table is complete."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

GPU = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu.py"


@pytest.fixture(scope="module")
def gpu_bench():
    spec = importlib.util.spec_from_file_location("bench_gpu", GPU)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_gpu_benchmark_smoke_mode(gpu_bench, tmp_path):
    out = tmp_path / "table.md"
    text = gpu_bench.main(
        ["--device", "cpu", "--tiny", "--peers", "--models", "bert", "--dtypes", "fp32", "--out", str(out)]
    )
    assert out.read_text() == text
    lines = [ln for ln in text.splitlines() if ln.startswith("| ")]
    assert lines[0].startswith("| model | dtype | item | hfattr s")
    rows = [ln.split(" | ") for ln in lines[1:]]
    items = [r[2] for r in rows]
    for want in ("token ablation", "layer ablation", "LRP attnlrp", "SIG 4 steps", "SIG auto", "generation ablation"):
        assert any(i.startswith(want) for i in items), (want, items)
    for r in rows:  # every hfattr run finished (a time, not "failed: ...")
        assert float(r[3]) > 0, r
