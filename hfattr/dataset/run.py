"""Attribution over a whole dataset: ``attribute_dataset`` writes Parquet shards and a manifest.

Records are cut into shards of ``shard_size`` consecutive record ids. Each shard is attributed in
batches of records sorted by length, then written atomically; a rerun on the same output directory
skips the shards already there. Under ``accelerate launch`` shard ``k`` goes to process
``k % num_processes``, so the files are the same whatever the number of processes.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterator

import torch

from .._version import __version__
from .storage import (
    RUN_FORMAT,
    failed_record,
    file_sha256,
    list_shards,
    load_results,
    read_manifest,
    remove_stale_temporaries,
    result_record,
    shard_info,
    shard_name,
    write_manifest,
    write_shard,
)
from ..explainer import Explainer, jsonable
from ..hf.text import TruncationWarning, check_max_length
from .data import check_columns, data_digest, load_data
from .identity import build_manifest, check_resume, describe_data, fingerprint, model_reference, run_identity
from ..methods.registry import ENCODE_OPTIONS, GENERAL_OPTIONS, check_options, get_method

__all__ = [
    "attribute_dataset",
    "load_results",
    "load_data",
    "RunSummary",
    "AllRowsFailedError",
    "DEFAULT_SHARD_SIZE",
    "process_state",
]

DEFAULT_SHARD_SIZE = 1000


class AllRowsFailedError(RuntimeError):
    """Every record of a dataset run failed; ``.summary`` is the run's :class:`RunSummary`."""

    def __init__(self, summary: "RunSummary") -> None:
        super().__init__(
            f"every row failed ({summary.failures} of {summary.rows_done}); see the 'error' column "
            f"in {summary.output_dir}. Fix the settings and start again in a new output directory"
        )
        self.summary = summary


@dataclass
class RunSummary:
    """What a run did. ``rows_new``/``tokens_new`` count this call; the rest the whole output."""

    output_dir: str
    rows_total: int
    rows_done: int
    rows_new: int
    rows_resumed: int
    tokens_new: int
    failures: int
    wall_s: float
    num_processes: int = 1

    @property
    def complete(self) -> bool:
        return self.rows_done == self.rows_total

    @property
    def rows_per_s(self) -> float:
        return self.rows_new / self.wall_s if self.wall_s > 0 else 0.0

    def to_dict(self) -> dict:
        return {**asdict(self), "rows_per_s": self.rows_per_s, "complete": self.complete}

    def format(self) -> str:
        """A few lines for the terminal."""
        return "\n".join(
            [
                f"rows:       {self.rows_done}/{self.rows_total} (new {self.rows_new}, resumed {self.rows_resumed})",
                f"tokens:     {self.tokens_new}",
                f"rows/s:     {self.rows_per_s:.2f}",
                f"wall time:  {self.wall_s:.1f} s",
                f"failures:   {self.failures}",
                f"processes:  {self.num_processes}",
                f"output:     {self.output_dir}",
            ]
        )


@contextlib.contextmanager
def _truncations() -> Iterator[list[TruncationWarning]]:
    """Collect the truncation warnings of a block (the run warns once, at its end); every other
    warning is passed on as usual."""
    cut: list[TruncationWarning] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", TruncationWarning)
        try:
            yield cut
        finally:
            others = []
            for w in caught:
                if isinstance(w.message, TruncationWarning):
                    cut.append(w.message)
                else:
                    others.append(w)
    for w in others:  # a shared registry keeps "show once per place" as without the recording
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno, registry=_PASSED_ON, source=w.source)


_PASSED_ON: dict = {}


def _dry_run(explainer: Any, ds: Any, text_column: str, method: str, target: Any, options: dict) -> None:
    """Explain one record before anything is written, so that a bad method option or target is an
    error of the run (raised here) rather than a failure of every record."""
    for text in ds.select(range(min(50, len(ds))))[text_column]:
        if isinstance(text, str) and text.strip():
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", TruncationWarning)
                    explainer.explain(text[:200], method=method, target=target, **{**options, "truncation": True})
            except (ValueError, TypeError) as err:
                raise ValueError(f"the run's settings fail on its first text: {err}") from None
            return


def _check_labels(explainer: Any, ds: Any, target_column: str | None, n: int = 20) -> None:
    """For a classifier, the first records' labels must name the model's classes (else every record would fail)."""
    from ..hf.targets import head_kind, label_id

    if target_column is None:
        return
    try:
        if head_kind(explainer.model) != "class":
            return
    except ValueError:
        return
    labels = [_whole(v) for v in ds.select(range(min(200, len(ds))))[target_column]]
    labels = [v for v in labels if v is not None][:n]
    problems = []
    for v in labels:
        try:
            label_id(explainer.model, v)
        except (ValueError, TypeError) as err:
            problems.append(f"{v!r}: {err}")
    if labels and len(problems) == len(labels):
        raise ValueError(
            f"target_column {target_column!r}: none of its first {len(labels)} labels is a class of "
            f"the model ({problems[0]})"
        )


# --------------------------------------------------------------------------- the run
class _Run:
    """One process's share of a dataset run."""

    def __init__(
        self,
        explainer: Explainer,
        ds: Any,
        *,
        text_column: str,
        target_column: str | None,
        method: str,
        options: dict,
        target: Any,
        batch_size: int,
        shard_size: int,
        fp: str,
        out: Path,
        process_index: int,
    ) -> None:
        from ..hf.targets import head_kind

        self.explainer, self.ds = explainer, ds
        self.text_column, self.target_column = text_column, target_column
        self.method, self.options, self.target = method, options, target
        self.batch_size, self.shard_size, self.fp, self.out = batch_size, shard_size, fp, out
        self.process_index = process_index
        self.truncated, self.truncation_limit = 0, 0  # texts cut to the limit by this call (one warning at the end)
        self.spec = get_method(method)
        self.enc_opts = {k: v for k, v in options.items() if k in ENCODE_OPTIONS}
        self.head: str | None
        try:
            self.head = head_kind(explainer.model)
        except ValueError:
            self.head = None

    def shard_range(self, k: int) -> tuple[int, int]:
        return k * self.shard_size, min(len(self.ds), (k + 1) * self.shard_size)

    def run_shard(self, k: int, bar: Any) -> dict:
        start, stop = self.shard_range(k)
        chunk = self.ds[start:stop]
        texts = chunk[self.text_column]
        targets = chunk[self.target_column] if self.target_column else [self.target] * len(texts)
        records, todo = [], []
        for j, (text, tgt) in enumerate(zip(texts, targets)):
            tgt = _whole(tgt)
            problem = _text_problem(text) or _target_problem(tgt)
            if problem:
                records.append(failed_record(start + j, text, problem, tgt))
            else:
                todo.append((start + j, text, tgt))
        bar.update(len(records))
        lengths = self._lengths([t for _, t, _ in todo])
        order = sorted(range(len(todo)), key=lambda i: (lengths[i], i))
        for b in range(0, len(order), self.batch_size):
            batch = [todo[i] for i in order[b : b + self.batch_size]]
            records.extend(self._attribute(batch))
            bar.update(len(batch))
        info = {
            "fingerprint": self.fp,
            "shard": k,
            "start": start,
            "stop": stop,
            "rows": len(records),  # stored key (manifest and shard metadata)
            "failures": sum(r["status"] != "ok" for r in records),
            "tokens": sum(r["n_tokens"] or 0 for r in records),
            "process": self.process_index,
        }
        write_shard(self.out / shard_name(k), records, info)
        return info

    def _lengths(self, texts: list[str]) -> list[int]:
        if not texts:
            return []
        try:
            return [len(ids) for ids in self.explainer.tokenizer(texts)["input_ids"]]
        except Exception:  # sorting only: fall back to characters
            return [len(t) for t in texts]

    def _attribute(self, batch: list[tuple[int, str, Any]]) -> list[dict]:
        """Records for a batch; on an error, each text is retried alone so one bad record fails alone."""
        texts = [t for _, t, _ in batch]
        targets = [g for _, _, g in batch]
        grad = torch.enable_grad() if self.spec.needs_grad else torch.no_grad()
        try:
            with grad, _truncations() as cut:
                results = self.explainer.explain(
                    texts, method=self.method, target=targets, batch_size=len(texts), **self.options
                )
            if len(results) != len(batch):
                raise RuntimeError(f"method {self.method!r} returned {len(results)} results for {len(batch)} texts")
            preds = self._predictions(texts, targets, results)
        except Exception as err:
            if len(batch) > 1:
                return [record for one in batch for record in self._attribute([one])]
            rid, text, tgt = batch[0]
            return [failed_record(rid, text, f"{type(err).__name__}: {' '.join(str(err).split())}", tgt)]
        if cut:
            self.truncated += sum(w.count for w in cut)
            self.truncation_limit = cut[-1].limit
        return [result_record(rid, res, p) for (rid, _, _), res, p in zip(batch, results, preds)]

    def _predictions(self, texts: list[str], targets: list, results: list) -> list[tuple]:
        """``(id, label, probability)`` of the model's prediction per text (None where unknown)."""
        out: list[tuple] = []
        for tgt, res in zip(targets, results):
            t = res.target or {}
            if tgt is None and isinstance(t.get("id"), int) and isinstance(res.probability, float):
                out.append((t["id"], None if t.get("label") is None else str(t["label"]), res.probability))
            else:
                out.append((None, None, None))
        need = [i for i, p in enumerate(out) if p[0] is None]
        if need and self.head == "class":
            for i, p in zip(need, self._classify([texts[i] for i in need])):
                out[i] = p
        return out

    @torch.no_grad()
    def _classify(self, texts: list[str]) -> list[tuple]:
        from ..hf.prepare import input_device
        from ..hf.text import encode

        model = self.explainer.model
        enc, _ = encode(self.explainer.tokenizer, texts, **self.enc_opts)
        enc = enc.to(input_device(model))
        with self.explainer._scoped():
            logits = model(input_ids=enc.input_ids, attention_mask=enc.attention_mask, **enc.extra).logits
        prob, idx = logits.float().softmax(-1).max(-1)
        id2label = {int(k): str(v) for k, v in (getattr(model.config, "id2label", None) or {}).items()}
        return [(int(i), id2label.get(int(i), str(int(i))), float(p)) for i, p in zip(idx.tolist(), prob.tolist())]


def process_state() -> Any:
    """accelerate's ``PartialState``: this process's index and the process count.

    Without a GPU, processes started by ``accelerate launch`` / ``torchrun`` join as CPU processes.
    """
    from accelerate import PartialState

    use_cpu = os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true", "yes")
    xpu = getattr(torch, "xpu", None)
    has_gpu = torch.cuda.is_available() or bool(xpu is not None and xpu.is_available())
    return PartialState(cpu=use_cpu or not has_gpu)


def _whole(value: Any) -> Any:
    """Label ids read as floats (a CSV column with gaps): 1.0 -> 1, NaN -> None (the prediction)."""
    if isinstance(value, float):
        if math.isnan(value):
            return None
        if value.is_integer():
            return int(value)
    return value


def _target_problem(value: Any) -> str | None:
    if isinstance(value, float):
        return f"target {value!r} is not a label id (a whole number)"
    return None


def _text_problem(text: Any) -> str | None:
    if text is None:
        return "text is missing (None)"
    if not isinstance(text, str):
        return f"text is a {type(text).__name__}, not a string"
    if not text.strip():
        return "text is empty"
    return None


def _progress(total: int, enabled: bool) -> Any:
    from tqdm.auto import tqdm

    return tqdm(
        total=total,
        unit="rows",
        desc="attributing",
        disable=not enabled,
        dynamic_ncols=True,
        file=sys.stderr,
        smoothing=0.1,
    )


def _scan(out: Path, fp: str, n_shards: int) -> dict[int, dict]:
    done = {}
    for k, path in list_shards(out).items():
        info = shard_info(path)
        if k < n_shards and info is not None and info.get("fingerprint") == fp:
            done[k] = {**info, "sha256": file_sha256(path)}
    return done


def _drop_corrupt(out: Path, manifest: dict | None, done: dict[int, dict]) -> dict[int, dict]:
    """Shards whose bytes differ from the checksum in the manifest are recomputed (with a warning)."""
    recorded = {e.get("file"): e.get("sha256") for e in (manifest or {}).get("shards") or [] if isinstance(e, dict)}
    keep = {}
    for k, info in done.items():
        want = recorded.get(shard_name(k))
        if isinstance(want, str) and want != info.get("sha256"):
            warnings.warn(
                f"{out / shard_name(k)} does not match the checksum recorded in the manifest "
                "(corrupted or modified); it is recomputed",
                RuntimeWarning,
                stacklevel=3,
            )
            continue
        keep[k] = info
    return keep


def attribute_dataset(
    explainer: Explainer,
    data: Any,
    *,
    text_column: str,
    target_column: str | None = None,
    method: str,
    output_dir: str | os.PathLike,
    batch_size: int = 16,
    max_rows: int | None = None,
    split: str | None = None,
    shard_size: int | None = None,
    target: Any = None,
    progress: bool = True,
    data_source: str | None = None,
    **method_options: Any,
) -> RunSummary:
    """Attribute every record of ``data`` and write Parquet shards and a manifest to ``output_dir``.

    ``data``: a ``datasets.Dataset`` (or DatasetDict with ``split``), a local CSV / JSON Lines /
    Parquet / text file, or a dataset name. ``target_column`` holds each record's target (label id
    or name, or a continuation text); without it every record uses ``target`` (default: the
    prediction). Rerunning on the same ``output_dir`` resumes; other settings are refused.
    Returns a :class:`RunSummary`.
    """
    t0 = time.perf_counter()
    if not isinstance(explainer, Explainer):
        raise TypeError(f"explainer must be an hfattr.Explainer, got {type(explainer).__name__}")
    spec = get_method(method)
    check_options(spec, {k: v for k, v in method_options.items() if k not in GENERAL_OPTIONS})
    for reserved in ("text", "method_options"):
        if reserved in method_options:
            raise TypeError(f"attribute_dataset got an unexpected keyword {reserved!r}")
    for name, value, least in (("batch_size", batch_size, 1), ("max_rows", max_rows, 1), ("shard_size", shard_size, 1)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < least):
            raise ValueError(f"{name} must be an int >= {least}, got {value!r}")
    check_max_length(method_options.get("max_length"))
    if not isinstance(method_options.get("truncation", False), bool):
        raise TypeError(f"truncation must be True or False, got {method_options['truncation']!r}")
    if not isinstance(text_column, str) or not text_column:
        raise ValueError(f"text_column must be a column name (str), got {text_column!r}")
    if target_column is not None and target is not None:
        raise ValueError("give target_column (a target per row) or target (one for all rows), not both")
    if output_dir is None or not os.fspath(output_dir).strip():
        raise ValueError("output_dir must be a directory path")
    out = Path(os.path.expanduser(os.fspath(output_dir)))
    if out.exists() and not out.is_dir():
        raise ValueError(f"output_dir {str(out)!r} exists and is not a directory")

    state = process_state()
    with state.main_process_first():
        ds = load_data(data, split=split)
    check_columns(ds, text_column, target_column)
    if max_rows is not None and max_rows < len(ds):
        ds = ds.select(range(max_rows))
    ds = ds.select_columns([text_column] + ([target_column] if target_column else []))
    n = len(ds)

    manifest = read_manifest(out)
    if shard_size is None:
        shard_size = (manifest or {}).get("identity", {}).get("shard_size") or DEFAULT_SHARD_SIZE
    identity = run_identity(
        explainer,
        method,
        method_options,
        target,
        text_column,
        target_column,
        n,
        data_digest(ds, text_column, target_column),
        shard_size,
    )
    fp = fingerprint(identity)
    check_resume(out, manifest, identity, fp, explainer.model_name)
    _check_labels(explainer, ds, target_column)
    _dry_run(explainer, ds, text_column, method, target, method_options)
    n_shards = math.ceil(n / shard_size)
    done_before = _drop_corrupt(out, manifest, _scan(out, fp, n_shards))
    state.wait_for_everyone()  # every process has checked before anything is written

    base = {
        "format": RUN_FORMAT,
        "format_version": 1,
        "hfattr_version": __version__,
        "fingerprint": fp,
        "identity": identity,
        "model": model_reference(explainer.model_name),
        "method": method,
        "options": jsonable(method_options),
        "target": jsonable(target),
        "source": {"data": data_source or describe_data(data), "split": split, "max_rows": max_rows},
        "rows_total": n,
        "n_shards": n_shards,
        "batch_size": batch_size,
    }
    if state.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(out)
        write_manifest(out, build_manifest(base, done_before, status="running", num_processes=state.num_processes))
    state.wait_for_everyone()

    run = _Run(
        explainer,
        ds,
        text_column=text_column,
        target_column=target_column,
        method=method,
        options=method_options,
        target=target,
        batch_size=batch_size,
        shard_size=shard_size,
        fp=fp,
        out=out,
        process_index=state.process_index,
    )
    mine = [k for k in range(n_shards) if k not in done_before and k % state.num_processes == state.process_index]
    total = sum(run.shard_range(k)[1] - run.shard_range(k)[0] for k in mine)
    with _progress(total, progress and state.is_main_process) as bar:
        for k in mine:
            run.run_shard(k, bar)
    if run.truncated:
        warnings.warn(TruncationWarning(run.truncated, run.truncation_limit), stacklevel=2)
    state.wait_for_everyone()

    done = _scan(out, fp, n_shards)
    new = [info for k, info in done.items() if k not in done_before]
    summary = RunSummary(
        output_dir=str(out),
        rows_total=n,
        rows_done=sum(i["rows"] for i in done.values()),
        rows_new=sum(i["rows"] for i in new),
        rows_resumed=sum(i["rows"] for i in done_before.values()),
        tokens_new=sum(i["tokens"] for i in new),
        failures=sum(i["failures"] for i in done.values()),
        wall_s=time.perf_counter() - t0,
        num_processes=state.num_processes,
    )
    if state.is_main_process:
        status = "complete" if summary.complete else "incomplete"
        write_manifest(
            out,
            build_manifest(base, done, status=status, num_processes=state.num_processes, last_run=summary.to_dict()),
        )
    state.wait_for_everyone()
    if summary.rows_done and summary.failures >= summary.rows_done:
        raise AllRowsFailedError(summary)
    return summary
