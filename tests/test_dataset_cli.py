"""``hfattr attribute-dataset`` as a user runs it: SIGKILL and resume, accelerate launch, the CLI.

The killed run and the two accelerate processes are forked copies of the test process (no
interpreter start-ups; the processes get the environment `accelerate launch` gives them). All run
with one torch thread, as the in-process reference runs do
(tests/conftest.py: pytest_configure), so stored scores of both are compared exactly.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import datasets
import pyarrow.parquet as pq
import pytest

import hfattr
from hfattr.dataset import attribute_dataset, load_results
from hfattr.dataset.storage import list_shards, read_manifest

ROOT = Path(__file__).resolve().parent.parent
WORDS = [
    "the",
    "movie",
    "was",
    "great",
    "boring",
    "pizza",
    "tasty",
    "service",
    "annoying",
    "fantastic",
    "acting",
    "terrible",
    "waste",
    "of",
    "time",
    "quite",
    "pleasant",
    "weekend",
    "worst",
    "app",
]


def _env() -> dict:
    env = dict(os.environ)
    env.update(
        OMP_NUM_THREADS="1",
        MKL_NUM_THREADS="1",
        PYTHONPATH=str(ROOT),
        CUDA_VISIBLE_DEVICES="",
        HF_DATASETS_DISABLE_PROGRESS_BARS="1",
        TOKENIZERS_PARALLELISM="false",
        NO_COLOR="1",
    )
    env.pop("ACCELERATE_USE_CPU", None)
    return env


def _cli(*args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "hfattr", *args], cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=timeout
    )


def _fork_cli(args: list[str], log: Path, env: dict[str, str] | None = None) -> int:
    """Run ``hfattr.cli.main(args)`` in a forked child (CPU, output to ``log``, ``env`` added to its
    environment); returns its pid."""
    from accelerate.state import PartialState

    from hfattr.cli import main

    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        code = 1
        try:
            os.environ.update(CUDA_VISIBLE_DEVICES="", ACCELERATE_USE_CPU="1", HF_DATASETS_DISABLE_PROGRESS_BARS="1")
            os.environ.update(env or {})
            PartialState._reset_state()  # the parent's process state (one process) is not the child's
            with open(log, "w") as f:
                os.dup2(f.fileno(), 1)  # C-level output too: nothing reaches pytest's capture or xdist
                os.dup2(f.fileno(), 2)
                sys.stdout = sys.stderr = f
                try:
                    code = main(args)
                except BaseException:
                    import traceback

                    traceback.print_exc(file=f)
                f.flush()
        finally:
            os._exit(code)
    return pid


def _texts(n: int) -> list[str]:
    """Deterministic short reviews of 3..12 words, some empty (failed rows)."""
    out = []
    for i in range(n):
        k = 3 + (i * 7) % 10
        out.append("" if i % 23 == 5 else " ".join(WORDS[(i * 3 + j * j) % len(WORDS)] for j in range(k)))
    return out


def _write_jsonl(path: Path, texts: list[str]) -> None:
    path.write_text("".join(json.dumps({"review": t, "label": i % 2}) + "\n" for i, t in enumerate(texts)))


@pytest.fixture(scope="module")
def explainer(default_explainer):
    return default_explainer


def _assert_same_output(a: Path, b: Path) -> None:
    sa, sb = list_shards(a), list_shards(b)
    assert sa.keys() == sb.keys()
    for k in sa:
        ta, tb = pq.read_table(sa[k]), pq.read_table(sb[k])
        assert ta.equals(tb), f"shard {k} differs"
    assert [r.to_dict() for r in load_results(a)] == [r.to_dict() for r in load_results(b)]


def test_sigkill_then_resume_loses_and_duplicates_nothing(explainer, tmp_path, capsys):
    from hfattr.cli import main

    n, shard = 64, 4  # 16 shards: the kill after the first one lands part-way with a wide margin
    data = tmp_path / "reviews.jsonl"
    _write_jsonl(data, _texts(n))
    out = tmp_path / "run"
    args = [
        "attribute-dataset",
        "--data",
        str(data),
        "--text-column",
        "review",
        "--target-column",
        "label",
        "--output",
        str(out),
        "--shard-size",
        str(shard),
        "--batch-size",
        "4",
        "--no-progress",
        "--no-corpus-summary",
    ]
    # The run to kill is a forked copy of this process: the same `hfattr attribute-dataset` command
    # without a second interpreter start-up (`python -m hfattr` as a process is tested in test_cli.py
    # and by the accelerate test below).
    log = tmp_path / "child.log"
    pid = _fork_cli(args, log)
    first = out / "shard-00000.parquet"
    deadline = time.monotonic() + 180
    ended, status = 0, 0
    while not first.exists() and not ended and time.monotonic() < deadline:
        time.sleep(0.01)
        ended, status = os.waitpid(pid, os.WNOHANG)
    if not ended:
        os.kill(pid, signal.SIGKILL)
        _, status = os.waitpid(pid, 0)
    assert first.exists(), f"the run never wrote its first shard; its output: {log.read_text()[-3000:]}"
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, log.read_text()[-3000:]
    n_shards = -(-n // shard)
    kept = len(list_shards(out))
    assert 1 <= kept < n_shards, f"expected a part-way run, found {kept} of {n_shards} shards"
    assert read_manifest(out)["status"] == "running"

    resumed_rows = sum(pq.read_metadata(p).num_rows for p in list_shards(out).values())
    assert main(args) == 0  # the same command again (in this process, to save a start-up)
    assert f"rows:       {n}/{n} (new {n - resumed_rows}, resumed {resumed_rows})" in capsys.readouterr().out

    ids = [r["row_id"] for p in list_shards(out).values() for r in pq.read_table(p, columns=["row_id"]).to_pylist()]
    assert sorted(ids) == list(range(n)) and len(ids) == len(set(ids))  # nothing lost, nothing twice
    m = read_manifest(out)
    assert m["status"] == "complete" and m["rows_done"] == n and len(m["shards"]) == n_shards
    assert m["failures"] == sum(1 for t in _texts(n) if not t) > 0
    assert not list(out.glob(".tmp-*"))

    ref = tmp_path / "uninterrupted"
    attribute_dataset(
        explainer,
        str(data),
        text_column="review",
        target_column="label",
        method="ablation",
        output_dir=ref,
        shard_size=shard,
        batch_size=4,
        progress=False,
    )
    _assert_same_output(out, ref)

    assert main(args) == 0  # a finished run: nothing to do
    assert f"(new 0, resumed {n})" in capsys.readouterr().out
    _assert_same_output(out, ref)


def test_accelerate_two_processes_equal_one(explainer, tmp_path):
    """Two processes as ``accelerate launch --multi_gpu --num_processes 2 -m hfattr attribute-dataset``
    starts them on a CPU machine: the launcher's environment (RANK, LOCAL_RANK, WORLD_SIZE,
    MASTER_ADDR/PORT; accelerate joins them with gloo). They are forked copies of this process
    running the same command (no interpreter start-ups); the launcher itself is accelerate's."""
    texts = _texts(14)
    data = tmp_path / "reviews.jsonl"
    _write_jsonl(data, texts)
    out = tmp_path / "multi"
    args = [
        "attribute-dataset",
        "--data",
        str(data),
        "--text-column",
        "review",
        "--output",
        str(out),
        "--shard-size",
        "3",
        "--batch-size",
        "2",
        "--no-progress",
    ]
    with socket.socket() as sock:  # a free port for the process group's rendezvous
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    launcher = dict(WORLD_SIZE="2", LOCAL_WORLD_SIZE="2", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    launcher.update(ACCELERATE_MIXED_PRECISION="no", ACCELERATE_DYNAMO_BACKEND="NO")
    logs = [tmp_path / f"rank{r}.log" for r in range(2)]
    pids = [_fork_cli(args, logs[r], {**launcher, "RANK": str(r), "LOCAL_RANK": str(r)}) for r in range(2)]
    deadline, codes = time.monotonic() + 240, {}
    while len(codes) < 2 and time.monotonic() < deadline:
        for pid in pids:
            if pid not in codes:
                ended, status = os.waitpid(pid, os.WNOHANG)
                if ended:
                    codes[pid] = os.waitstatus_to_exitcode(status)
        time.sleep(0.02)
    for pid in set(pids) - set(codes):
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    output = [log.read_text() for log in logs]
    assert [codes.get(pid) for pid in pids] == [0, 0], "\n---\n".join(o[-3000:] for o in output)
    assert output[0].count("rows:       14/14 (new 14, resumed 0)") == 1  # only the main process reports
    assert "processes:  2" in output[0] and "rows:" not in output[1]
    m = read_manifest(out)
    assert m["status"] == "complete" and m["num_processes"] == 2
    assert [(s["file"], s["process"]) for s in m["shards"]] == [(f"shard-{k:05d}.parquet", k % 2) for k in range(5)]
    assert (out / "corpus_summary.csv").is_file()

    single = tmp_path / "single"
    attribute_dataset(
        explainer,
        datasets.Dataset.from_dict({"review": texts}),
        text_column="review",
        method="ablation",
        output_dir=single,
        shard_size=3,
        batch_size=2,
        progress=False,
    )
    _assert_same_output(out, single)


def test_cli_errors_are_one_line(tmp_path, capsys):
    from hfattr.cli import main

    data = tmp_path / "d.jsonl"
    _write_jsonl(data, _texts(4))
    base = ["attribute-dataset", "--data", str(data), "--output", str(tmp_path / "o"), "--no-progress"]
    cases = [
        (
            ["--text-column", "text"],
            "hfattr: error: text_column 'text' is not a column of the dataset; its columns are ['review', 'label']",
        ),
        (["--text-column", "label"], "hfattr: error: text_column 'label' holds int64 values, not text (strings)"),
        (["--text-column", "review", "--method", "nope"], "hfattr: error: unknown method 'nope'"),
        (
            ["--text-column", "review", "-o", "batch_size=3"],
            "hfattr: error: --option batch_size=... is not allowed; use --batch-size",
        ),
        (["--text-column", "review", "-o", "bogus=3"], "hfattr: error: method 'ablation' got unknown option(s)"),
    ]
    for extra, message in cases:
        assert main([*base, *extra]) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and err.count("\n") == 0, err
    # argparse usage errors: usage plus the error, exit 2
    assert main([*base, "--text-column", "review", "--target-column", "label", "--target", "1"]) == 2
    assert "argument --target: not allowed with argument --target-column" in capsys.readouterr().err
    assert main([*base, "--text-column", "review", "--batch-size", "0"]) == 2
    assert "expected a positive integer, got '0'" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
    assert main(["corpus-summary", str(tmp_path)]) == 2
    assert "holds no shard-*.parquet files" in capsys.readouterr().err


def test_cli_run_writes_corpus_summary_and_the_summary_command(tmp_path, capsys):
    from hfattr.cli import main

    data = tmp_path / "d.txt"
    data.write_text("the movie was great\nboring pizza\n\nthe service was annoying\n")
    out = tmp_path / "run"
    assert (
        main(
            [
                "attribute-dataset",
                "--data",
                str(data),
                "--text-column",
                "text",
                "--output",
                str(out),
                "--no-progress",
                "--top-k",
                "3",
            ]
        )
        == 0
    )
    stdout = capsys.readouterr().out
    for line in ("rows:       4/4 (new 4, resumed 0)", "failures:   1", "wall time:", "rows/s:", "tokens:"):
        assert line in stdout
    assert (out / "corpus_summary.csv").is_file() and (out / "corpus_summary.png").is_file()
    csv_a = (out / "corpus_summary.csv").read_text()
    assert main(["corpus-summary", str(out), "--csv", str(tmp_path / "s.csv"), "--no-plot"]) == 0
    assert (tmp_path / "s.csv").read_text() == csv_a
    assert len(load_results(out)) == 3


def test_cli_local_zoo_model_with_device_map(tmp_path, capsys):
    """A saved tiny zoo model loaded by path with --device-map auto gives the API's output."""
    from hfattr.cli import main
    from hfattr.hf.loading import load_model
    from hfattr.testing import save_tiny

    path = save_tiny("roberta", tmp_path / "model", "sequence-classification")
    texts = _texts(6)
    data = tmp_path / "d.jsonl"
    _write_jsonl(data, texts)
    out = tmp_path / "cli"
    assert (
        main(
            [
                "attribute-dataset",
                "--model",
                path,
                "--device-map",
                "auto",
                "--data",
                str(data),
                "--text-column",
                "review",
                "--target-column",
                "label",
                "--output",
                str(out),
                "--no-progress",
                "--shard-size",
                "4",
                "--batch-size",
                "3",
                "-o",
                "perturbations_per_eval=2",
            ]
        )
        == 0
    )
    assert "rows:       6/6 (new 6, resumed 0)" in capsys.readouterr().out
    model, tok = load_model(path)
    ref = tmp_path / "api"
    attribute_dataset(
        hfattr.Explainer(model, tok, model_name=path),
        str(data),
        text_column="review",
        target_column="label",
        method="ablation",
        output_dir=ref,
        shard_size=4,
        batch_size=3,
        progress=False,
        perturbations_per_eval=2,
    )
    _assert_same_output(out, ref)
    m = read_manifest(out)
    assert m["model"] == path and m["options"] == {"perturbations_per_eval": 2}


def test_bad_settings_fail_before_any_output(tmp_path, capsys):
    """A wrong constant target or method option is an error of the run (exit 2, nothing written)."""
    from hfattr.cli import main

    data = tmp_path / "a.tsv"
    data.write_text("text\tlabel\nthe movie was great\tpositive\na bad film\tnegative\n", encoding="utf-8")
    for extra in (["--target", "NOPE"], ["--method", "lrp", "-o", "composite=foo"]):
        out = tmp_path / ("run-" + extra[1])
        assert (
            main(
                [
                    "attribute-dataset",
                    "--data",
                    str(data),
                    "--text-column",
                    "text",
                    "--output",
                    str(out),
                    "--no-progress",
                    *extra,
                ]
            )
            == 2
        )
        assert "fail on its first text" in capsys.readouterr().err
        assert not out.exists()
