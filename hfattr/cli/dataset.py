"""CLI commands ``hfattr attribute-dataset`` and ``hfattr corpus-summary`` (registered on import).

``attribute-dataset`` runs the same under ``accelerate launch -m hfattr attribute-dataset ...``:
the records are split across the processes and the main process prints the summary.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from .common import (
    CLIError,
    add_generation_flags,
    add_method_flags,
    add_model_flags,
    check_model_flag,
    elapsed,
    encode_options,
    generation_options,
    parse_options,
    parse_target,
    positive_int,
    quiet_loading,
    register_command,
)

__all__: list[str] = []


# --------------------------------------------------------------------------- attribute-dataset
def _configure(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--data",
        required=True,
        metavar="PATH_OR_NAME",
        help="a CSV / JSON Lines / Parquet / text file, a folder of them, or a dataset name",
    )
    p.add_argument("--split", default=None, help="which split to use when the data has several")
    p.add_argument(
        "--text-column", required=True, metavar="C", help="the column holding the texts (for .txt files: text)"
    )
    target = p.add_mutually_exclusive_group()
    target.add_argument(
        "--target-column",
        default=None,
        metavar="T",
        help="column with each row's target: a label id or name (or a continuation text)",
    )
    target.add_argument("--target", default=None, help="one target for every row (default: the prediction)")
    p.add_argument(
        "--output",
        "-O",
        required=True,
        metavar="DIR",
        help="output directory; rerunning the same command on it resumes",
    )
    add_model_flags(p)
    add_method_flags(p)
    add_generation_flags(p)
    p.add_argument("--batch-size", type=positive_int, default=16, metavar="N", help="rows per batch (default 16)")
    p.add_argument("--max-rows", type=positive_int, default=None, metavar="N", help="only the first N rows")
    p.add_argument(
        "--shard-size",
        type=positive_int,
        default=None,
        metavar="N",
        help="rows per output shard (default 1000, or the resumed run's)",
    )
    p.add_argument(
        "--device-map",
        default=None,
        metavar="MAP",
        help="load the model with this transformers device_map, e.g. auto (one process only)",
    )
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    p.add_argument(
        "--no-corpus-summary",
        dest="corpus_summary",
        action="store_false",
        help="skip corpus_summary.csv / .png at the end",
    )
    p.add_argument(
        "--top-k",
        type=positive_int,
        default=15,
        metavar="K",
        help="tokens per label in the corpus-summary plot (default 15)",
    )
    p.add_argument(
        "--min-count",
        type=positive_int,
        default=1,
        metavar="N",
        help="corpus summary: leave out tokens seen fewer than N times (default 1)",
    )


def _load_explainer(args: argparse.Namespace, options: dict, state) -> Any:
    from ..pipeline import pipeline

    check_model_flag(args.model)
    if args.device_map is not None and state.num_processes > 1:
        raise CLIError(
            f"--device-map spreads one model over the devices of one process; it cannot be used "
            f"with {state.num_processes} processes (launch one process, or leave --device-map out)"
        )
    with elapsed("loading the model"), quiet_loading(args.verbose):
        pipe = pipeline(
            args.task,
            args.model,
            method=args.method,
            trust_remote_code=args.trust_remote_code,
            device_map=args.device_map,
            **options,
        )
    explainer = pipe.explainer
    if args.device_map is None:
        explainer.model.to(state.device)  # the GPU when there is one; one device per process when launched
    return explainer


def _run(args: argparse.Namespace) -> int:
    from ..dataset import attribute_dataset, process_state
    from ..dataset.run import AllRowsFailedError
    from ..methods import get_method

    get_method(args.method)  # fail before loading anything
    options = encode_options(args, parse_options(args.option))
    for reserved, flag in (("target", "--target"), ("method", "--method"), ("batch_size", "--batch-size")):
        if reserved in options:
            raise CLIError(f"--option {reserved}=... is not allowed; use {flag}")
    options.update(generation_options(args, options))
    import datasets

    datasets.disable_progress_bars()
    state = process_state()
    explainer = _load_explainer(args, options, state)
    try:
        summary = attribute_dataset(
            explainer,
            args.data,
            text_column=args.text_column,
            target_column=args.target_column,
            target=parse_target(args.target),
            method=args.method,
            output_dir=args.output,
            batch_size=args.batch_size,
            max_rows=args.max_rows,
            split=args.split,
            shard_size=args.shard_size,
            progress=args.progress,
            data_source=args.data,
            **options,
        )
    except AllRowsFailedError as err:
        summary = err.summary
    if not state.is_main_process:
        return 0
    print(summary.format())
    if summary.rows_done and summary.failures >= summary.rows_done:
        print(
            f"hfattr: error: every row failed (see the 'error' column in {args.output}); fix the settings "
            "and start again in a new output directory",
            file=sys.stderr,
        )
        return 2
    if args.corpus_summary and summary.complete and summary.rows_done > summary.failures:
        _write_summary(args.output, None, None, args.min_count, args.top_k)
    return 0


def _write_summary(run_dir: str, csv_path, plot_path, min_count: int, top_k: int) -> None:
    from ..dataset.corpus import write_corpus_summary

    try:
        import matplotlib  # noqa: F401
    except ImportError:
        plot_path = False
        print("corpus summary plot skipped: matplotlib is not installed", file=sys.stderr)
    csv_out, plot_out = write_corpus_summary(
        run_dir, csv_path=csv_path, plot_path=plot_path, min_count=min_count, top_k=top_k
    )
    if csv_out is None:
        print("corpus:     none (no row has one score per token; `hfattr report` shows the rows)")
        return
    print(f"corpus:     {csv_out}" + (f", {plot_out}" if plot_out else ""))


# --------------------------------------------------------------------------- corpus-summary
def _configure_summary(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", metavar="DIR", help="output directory of attribute-dataset")
    p.add_argument("--csv", default=None, metavar="PATH", help="CSV path (default DIR/corpus_summary.csv)")
    p.add_argument("--plot", default=None, metavar="PATH", help="PNG path (default DIR/corpus_summary.png)")
    p.add_argument("--no-plot", action="store_true", help="write only the CSV")
    p.add_argument("--top-k", type=positive_int, default=15, metavar="K", help="tokens per label in the plot")
    p.add_argument(
        "--min-count", type=positive_int, default=1, metavar="N", help="leave out tokens seen fewer than N times"
    )


def _run_summary(args: argparse.Namespace) -> int:
    _write_summary(args.run_dir, args.csv, False if args.no_plot else args.plot, args.min_count, args.top_k)
    return 0


register_command(
    "attribute-dataset",
    help="attribute every row of a dataset; Parquet shards + manifest, resumable",
    configure=_configure,
    run=_run,
    description="Attribute every row of a dataset (a file, a folder or a dataset name) and write Parquet "
    "shards and manifest.json to --output. Rerun the same command to resume after a crash. "
    "Runs across processes under `accelerate launch -m hfattr attribute-dataset ...`.",
)
register_command(
    "corpus-summary",
    help="tokens ranked by mean attribution per label, from an attribute-dataset run",
    configure=_configure_summary,
    run=_run_summary,
)
