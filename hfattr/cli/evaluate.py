"""CLI command ``hfattr evaluate PATH`` (registered on import): faithfulness metrics per row and their means.

``PATH`` is a dataset-run directory written by ``hfattr attribute-dataset`` (or one of its shard
files), or Result JSON files written by ``hfattr explain --json``. The per-row metrics go to a CSV
(by default ``faithfulness.csv`` inside the run directory) and the means are printed.
"""

from __future__ import annotations

import argparse
import csv
import io
import math
import sys
from pathlib import Path
from typing import Any

from .common import CLIError, add_model_flags, elapsed, quiet_loading, register_command

__all__ = ["evaluate_results"]

_OUTPUT_NAME = "faithfulness.csv"


def _fraction_or_count(value: str) -> float | int:
    try:
        x = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a fraction in (0, 1] or a token count, got {value!r}") from None
    if value.strip().isdigit():
        if int(value) < 1:
            raise argparse.ArgumentTypeError(f"a token count must be >= 1, got {value!r}")
        return int(value)
    if not 0.0 < x <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a fraction in (0, 1] or a token count, got {value!r}")
    return x


def _configure(p: argparse.ArgumentParser) -> None:
    from ..evaluate import METRICS

    p.add_argument(
        "path",
        nargs="+",
        metavar="PATH",
        help="a dataset-run directory (or shard file) from `hfattr attribute-dataset`, or Result "
        "JSON files from `hfattr explain --json`",
    )
    add_model_flags(
        p,
        model_help="hub name or local path (default: the model the results name; the embedded "
        "model for its own results)",
    )
    p.add_argument(
        "--metrics",
        default="comprehensiveness,sufficiency,log_odds",
        metavar="M1,M2",
        help=f"comma-separated, from {', '.join(METRICS)} (default: the first three)",
    )
    p.add_argument(
        "--top-k",
        type=_fraction_or_count,
        default=0.2,
        metavar="K",
        help="top tokens: a fraction in (0, 1] of each text's tokens, or a count (default 0.2)",
    )
    p.add_argument(
        "--replacement",
        default=None,
        metavar="R",
        help="mask, pad, remove or a token id (default per metric: remove for comprehensiveness, "
        "sufficiency and AOPC, mask for log-odds)",
    )
    p.add_argument("--steps", type=int, default=10, metavar="S", help="AOPC steps (default 10)")
    p.add_argument(
        "--by", choices=("value", "abs"), default="value", help="rank tokens by signed score (default) or by magnitude"
    )
    p.add_argument("--batch-size", type=int, default=64, metavar="N", help="inputs per model call (default 64)")
    p.add_argument(
        "--allow-unsafe-weights",
        action="store_true",
        help="a model named by the results (not by --model) may load from weights other than "
        "safetensors (pickle-based .bin files can run code)",
    )
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    p.add_argument(
        "--output",
        "-O",
        default=None,
        metavar="CSV",
        help=f"per-row metrics (default: {_OUTPUT_NAME} in the run directory; none for JSON files)",
    )


# --------------------------------------------------------------------------- inputs
def _load(paths: list[str]) -> tuple[list[Any], list[int], dict | None, Path | None]:
    """``(results, row_ids, manifest, run_dir)``; results may hold None (failed records)."""
    from ..result import Result

    first = Path(paths[0])
    if len(paths) == 1 and (first.is_dir() or first.suffix == ".parquet"):
        from ..dataset.storage import load_results, read_manifest

        manifest = read_manifest(first) if first.is_dir() else None
        results = load_results(first, failed="none")
        ids = list(range(len(results)))
        return results, ids, manifest, first if first.is_dir() else None
    results = []
    for p in paths:
        path = Path(p)
        if path.is_dir() or path.suffix == ".parquet":
            raise CLIError(f"{p}: give one dataset-run directory (or shard), or only Result JSON files")
        if not path.is_file():
            raise CLIError(f"{p}: no such file or directory")
        results.append(Result.load(path))
    return results, list(range(len(results))), None, None


def _model_name(args: argparse.Namespace, results: list, manifest: dict | None) -> str:
    if args.model is not None:
        if not args.model.strip():
            raise CLIError("--model is empty; give a hub name or a local path")
        return args.model
    names = {r.model_name for r in results if r is not None}
    if manifest and manifest.get("model"):
        return manifest["model"]
    if len(names) > 1:
        raise CLIError(f"the results name several models ({sorted(map(str, names))}); pick one with --model")
    name = next(iter(names), None)
    if not name:
        raise CLIError("the results do not name their model; give it with --model")
    return name


def _explainer(args: argparse.Namespace, name: str) -> Any:
    from ..hf.default_model import DEFAULT_MODEL_DIR, DEFAULT_MODEL_NAME
    from ..pipeline import pipeline

    default = name == DEFAULT_MODEL_NAME or Path(name).resolve() == DEFAULT_MODEL_DIR
    if not default and args.model is None and not args.allow_unsafe_weights:
        # a name read from a results file: safetensors only (a pickled checkpoint can run code)
        from ..hf.loading import load_model

        try:
            with elapsed("loading the model"), quiet_loading(args.verbose):
                model, tok = load_model(
                    name, task=args.task, trust_remote_code=args.trust_remote_code, use_safetensors=True
                )
        except Exception as err:  # transformers raises OSError/ValueError/EnvironmentError kinds
            raise CLIError(
                f"the model {name!r} named in the results was not loaded: hfattr evaluate loads a model named by "
                f"a results file only from safetensors weights ({' '.join(str(err).split())[:300]}); pass "
                "--allow-unsafe-weights to allow other formats, or name the model with --model"
            ) from None
        with quiet_loading(args.verbose):
            pipe = pipeline(args.task, model, tok, trust_remote_code=args.trust_remote_code)
        pipe.explainer.model_name = name
        return pipe.explainer
    with elapsed("loading the model"), quiet_loading(args.verbose):
        pipe = pipeline(args.task, None if default else name, trust_remote_code=args.trust_remote_code)
    return pipe.explainer


def _check_digest(explainer: Any, manifest: dict | None) -> None:
    want = ((manifest or {}).get("identity") or {}).get("model", {}).get("digest")
    if not want:
        return
    try:
        from ..dataset.identity import model_digest
    except ImportError:
        return
    if model_digest(explainer) != want:
        print(
            "hfattr evaluate: warning: the model loaded differs from the one the run used; the metrics "
            "describe the loaded model",
            file=sys.stderr,
        )


# --------------------------------------------------------------------------- evaluation
def evaluate_results(
    explainer: Any, results: list, *, metrics: list[str], chunk: int = 256, progress: bool = False, **options: Any
) -> tuple[list[dict], dict[str, float]]:
    """Metrics for each Result (``None`` and unsupported Results get an ``error``) and their means.

    Returns ``(records, means)``; ``records[i]`` has ``index``, the metric values and ``error``.
    ``options`` go to :func:`hfattr.evaluate.faithfulness`; ``progress=True`` shows a bar over the
    results (in chunks of at most 32).
    """
    from ..evaluate import check_result, faithfulness

    records: list[dict] = [{"index": i, **{m: None for m in metrics}, "error": None} for i in range(len(results))]
    todo = []
    for i, r in enumerate(results):
        if r is None:
            records[i]["error"] = "no result (failed or missing row)"
            continue
        try:  # unsupported Results (2-D grids, neuron targets, ...) are reported, not fatal
            check_result(explainer, r)
        except ValueError as err:
            records[i]["error"] = " ".join(str(err).removeprefix("result ").split())
            continue
        todo.append(i)
    bar = None
    if progress and todo:
        from tqdm.auto import tqdm

        chunk = min(chunk, 32)
        bar = tqdm(total=len(todo), desc="evaluating", unit="rows", leave=False)
    try:
        for a in range(0, len(todo), chunk):
            idx = todo[a : a + chunk]
            values = faithfulness(explainer, [results[i] for i in idx], metrics=metrics, **options)
            for m, v in values.items():
                for i, x in zip(idx, v.tolist()):  # type: ignore[union-attr]  # a tensor for a list of results
                    records[i][m] = x
            if bar is not None:
                bar.update(len(idx))
    finally:
        if bar is not None:
            bar.close()
    means = {}
    for m in metrics:
        vals = [record[m] for record in records if record[m] is not None and math.isfinite(record[m])]
        means[m] = sum(vals) / len(vals) if vals else math.nan
    return records, means


def _run(args: argparse.Namespace) -> int:
    from ..evaluate import METRICS

    metrics = [m.strip() for m in args.metrics.split(",") if m.strip()]
    bad = [m for m in metrics if m not in METRICS]
    if bad or not metrics:
        raise CLIError(f"--metrics: unknown {bad or 'empty list'}; choose from {', '.join(METRICS)}")
    if args.steps < 1:
        raise CLIError(f"--steps must be >= 1, got {args.steps}")
    if args.batch_size < 1:
        raise CLIError(f"--batch-size must be >= 1, got {args.batch_size}")
    replacement: Any = args.replacement
    if replacement is not None and replacement.strip().isdigit():
        replacement = int(replacement)
    results, ids, manifest, run_dir = _load(args.path)
    if not any(r is not None for r in results):
        raise CLIError(f"{args.path[0]} holds no successful rows to evaluate")
    explainer = _explainer(args, _model_name(args, results, manifest))
    _check_digest(explainer, manifest)
    records, means = evaluate_results(
        explainer,
        results,
        metrics=metrics,
        top_k=args.top_k,
        replacement=replacement,
        steps=args.steps,
        by=args.by,
        batch_size=args.batch_size,
        progress=args.progress,
    )
    n_ok = sum(r["error"] is None for r in records)
    if n_ok == 0:
        raise CLIError(f"no row could be evaluated; e.g. {records[0]['error']}")
    out = Path(args.output) if args.output else (run_dir / _OUTPUT_NAME if run_dir else None)
    if out is not None:
        _write_csv(out, records, ids, metrics)
    print(f"model:       {explainer.model_name}")
    print(f"rows:        {n_ok} evaluated, {len(records) - n_ok} skipped")
    print(f"top_k:       {args.top_k}   ranking: {args.by}")
    w = max(len(m) for m in metrics)
    for m in metrics:
        print(f"{m:<{w}}  {means[m]:+.4f}")
    skipped = [r["error"] for r in records if r["error"]]
    if skipped:
        print(f"skipped, e.g.: {skipped[0]}", file=sys.stderr)
    if out is not None:
        print(f"wrote {out}", file=sys.stderr)
    return 0


def _write_csv(path: Path, records: list[dict], ids: list[int], metrics: list[str]) -> None:
    from ..dataset.storage import atomic_write_text, csv_cell

    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["row_id", *metrics, "error"])
    for rid, record in zip(ids, records):
        w.writerow(
            [
                rid,
                *("" if record[m] is None else repr(float(record[m])) for m in metrics),
                csv_cell(record["error"] or ""),
            ]
        )
    atomic_write_text(path, buf.getvalue())


register_command(
    "evaluate",
    help="faithfulness metrics (comprehensiveness, sufficiency, log-odds, AOPC) of stored results",
    configure=_configure,
    run=_run,
    description="Compute faithfulness metrics for every row of a dataset run (or Result JSON files), "
    "write them per row to a CSV and print their means.",
)
