"""Corpus summary of a dataset run: tokens ranked by mean attribution, per explained label.

For each label (the explained target's label, e.g. ``POSITIVE``), every token string gets the
mean of its attributions over all its occurrences in successful records; tokens are ranked by that mean
(highest first). Special tokens are left out; 2-D results (several target rows) are skipped.
"""

from __future__ import annotations

import csv
import io
import os
from collections import defaultdict
from pathlib import Path
from typing import Any, Iterable

__all__ = ["corpus_summary", "write_corpus_summary", "plot_corpus_summary", "token_attribution_records", "CSV_COLUMNS"]

CSV_COLUMNS = ("label", "rank", "token", "mean_score", "count", "total_score")


def _records_from_results(results: Iterable[Any]) -> Iterable[tuple[str, Any, Any, Any]]:
    from ..result import Result

    for res in results:
        if res is None:
            continue
        if not isinstance(res, Result):
            raise TypeError(f"expected hfattr.Result objects, got {type(res).__name__}")
        if res.scores.dim() != 1:
            yield "", None, None, None
            continue
        t = res.target or {}
        label = t.get("label", t.get("id", "all"))
        yield str(label), res.tokens, res.scores.tolist(), res.special_mask


def _records_from_run(path: str | os.PathLike) -> Iterable[tuple[str, Any, Any, Any]]:
    from .storage import read_records

    for record in read_records(
        path, columns=["status", "target_label", "target_id", "tokens", "scores", "special_mask"]
    ):
        if record["status"] != "ok":
            continue
        if record["scores"] is None:
            yield "", None, None, None
            continue
        label = record["target_label"] if record["target_label"] is not None else record["target_id"]
        yield str("all" if label is None else label), record["tokens"], record["scores"], record["special_mask"]


def _collect(source: Any, skip_special: bool) -> tuple[dict, dict, int]:
    """``(total, count, records)``: per label and token the sum and number of attributions, and the records used."""
    records = _records_from_run(source) if isinstance(source, (str, os.PathLike)) else _records_from_results(source)
    total: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    count: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    used = 0
    for label, tokens, attributions, special in records:
        if tokens is None:
            continue
        used += 1
        total[label]  # a label with only special tokens still appears
        for j, (tok, s) in enumerate(zip(tokens, attributions)):
            if skip_special and special is not None and special[j]:
                continue
            total[label][tok] += float(s)
            count[label][tok] += 1
    return total, count, used


def _ranked(total: dict, count: dict, min_count: int) -> list[dict]:
    out: list[dict] = []
    for label in sorted(total):
        stats = [
            (tok, total[label][tok] / n, n, total[label][tok]) for tok, n in count[label].items() if n >= min_count
        ]
        stats.sort(key=lambda r: (-r[1], r[0]))
        out.extend(
            {"label": label, "rank": i + 1, "token": tok, "mean_score": mean, "count": n, "total_score": tot}
            for i, (tok, mean, n, tot) in enumerate(stats)
        )
    return out


def _check_min_count(min_count: Any) -> None:
    if isinstance(min_count, bool) or not isinstance(min_count, int) or min_count < 1:
        raise ValueError(f"min_count must be an int >= 1, got {min_count!r}")


def corpus_summary(source: Any, *, min_count: int = 1, skip_special: bool = True) -> list[dict]:
    """Ranked token statistics per label from a run directory (or shard) or a list of Results.

    Returns dicts with the keys of :data:`CSV_COLUMNS`, grouped by label (labels sorted), each
    group ranked by ``mean_score`` (highest first, ties by token). Tokens seen fewer than
    ``min_count`` times are left out.
    """
    _check_min_count(min_count)
    total, count, _ = _collect(source, skip_special)
    return _ranked(total, count, min_count)


def token_attribution_records(source: Any) -> int:
    """How many successful records of ``source`` have one attribution per token (what the summary uses)."""
    return _collect(source, True)[2]


def plot_corpus_summary(summary: list[dict], *, top_k: int = 15, path: str | os.PathLike | None = None) -> Any:
    """Horizontal bar charts (one panel per label) of the ``top_k`` tokens; returns the Figure."""
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise ValueError(f"top_k must be an int >= 1, got {top_k!r}")
    try:
        from matplotlib.figure import Figure  # no pyplot: the user's backend is left alone
    except ImportError as err:  # matplotlib is the optional "plot" extra
        raise ImportError("the corpus-summary plot needs matplotlib (pip install 'hfattr[plot]')") from err
    from ..views.colors import NEG, POS  # the colour language of every view

    pos, neg = "#{:02x}{:02x}{:02x}".format(*POS), "#{:02x}{:02x}{:02x}".format(*NEG)
    labels = sorted({r["label"] for r in summary}) or ["(no rows)"]
    fig = Figure(figsize=(4.5 * len(labels), 0.35 * top_k + 1.5))
    axes = fig.subplots(1, len(labels), squeeze=False)
    for ax, label in zip(axes[0], labels):
        top = [r for r in summary if r["label"] == label][:top_k]
        names = [f"{r['token']} ({r['count']})" for r in top][::-1]
        values = [r["mean_score"] for r in top][::-1]
        ax.barh(range(len(values)), values, color=[pos if v >= 0 else neg for v in values])
        ax.set_yticks(range(len(values)), names)
        ax.axvline(0, color="black", linewidth=0.8)
        ax.set_title(f"{label}: top {len(top)} tokens")
        ax.set_xlabel("mean attribution")
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=110)
    return fig


def write_corpus_summary(
    source: Any,
    *,
    csv_path: str | os.PathLike | None = None,
    plot_path: str | os.PathLike | None = None,
    min_count: int = 1,
    top_k: int = 15,
) -> tuple[Path | None, Path | None]:
    """Write the summary as CSV and (when ``plot_path`` is not False) a PNG plot.

    Paths default to ``corpus_summary.csv`` / ``.png`` inside a run directory ``source``.
    Returns ``(csv_path, plot_path or None)``, or ``(None, None)`` without writing anything when no
    record has one attribution per token (methods such as ``layer_ablation``, or generations).
    """
    if isinstance(source, (str, os.PathLike)) and not Path(source).exists():
        raise FileNotFoundError(f"run directory {str(source)!r} does not exist")
    base = Path(source) if isinstance(source, (str, os.PathLike)) and Path(source).is_dir() else None
    if csv_path is None:
        if base is None:
            raise ValueError("csv_path is required when source is not a run directory")
        csv_path = base / "corpus_summary.csv"
    if plot_path is None and base is not None:
        plot_path = base / "corpus_summary.png"
    _check_min_count(min_count)
    total, count, used = _collect(source, True)
    if used == 0:  # e.g. layer_ablation grids or generations: nothing to rank, so no (empty) files
        return None, None
    summary = _ranked(total, count, min_count)
    from .storage import atomic_write_text, csv_cell

    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for r in summary:
        writer.writerow({k: csv_cell(v) for k, v in r.items()})
    atomic_write_text(csv_path, buf.getvalue())
    written_plot = None
    if plot_path not in (None, False):
        plot_corpus_summary(summary, top_k=top_k, path=plot_path)
        written_plot = Path(plot_path)
    return Path(csv_path), written_plot
