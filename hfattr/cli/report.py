"""``hfattr report RUN_DIR``: one self-contained HTML page for a dataset run (registered on import)."""

from __future__ import annotations

import argparse
import sys

from .common import CLIError, positive_int, register_command

__all__: list[str] = []


def _configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", metavar="RUN_DIR", help="output directory of `hfattr attribute-dataset`")
    p.add_argument("--output", "-O", default=None, metavar="PATH", help="HTML file (default RUN_DIR/report.html)")
    p.add_argument(
        "--min-count",
        type=positive_int,
        default=None,
        metavar="N",
        help="rankings: tokens seen at least N times (default 3; 1 for runs under 30 rows)",
    )
    p.add_argument("--top-k", type=positive_int, default=15, metavar="K", help="tokens per ranking (default 15)")
    p.add_argument(
        "--max-rows", type=positive_int, default=1000, metavar="N", help="draw the first N rows (default 1000)"
    )
    p.add_argument("--page-size", type=positive_int, default=25, metavar="N", help="rows per page (default 25)")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")


def _run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..views.report import write_report

    if not Path(args.run_dir).is_dir():
        raise CLIError(f"{args.run_dir}: no such run directory")
    out = write_report(
        args.run_dir,
        args.output,
        min_count=args.min_count,
        top_k=args.top_k,
        max_rows=args.max_rows,
        page_size=args.page_size,
        progress=args.progress,
    )
    print(f"wrote {out}", file=sys.stderr)
    return 0


register_command(
    "report",
    help="one self-contained HTML page for a dataset run",
    configure=_configure,
    run=_run,
    description="Write an HTML report of a dataset run: summary, token rankings per label, "
    "faithfulness (when `hfattr evaluate` ran) and every row as a heatmap, paged and "
    "searchable.",
)
