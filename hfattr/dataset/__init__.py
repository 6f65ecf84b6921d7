"""Dataset-wide runs: :func:`attribute_dataset` (resumable, sharded), storage and the corpus summary."""

from .corpus import corpus_summary, plot_corpus_summary, write_corpus_summary
from .run import DEFAULT_SHARD_SIZE, RunSummary, attribute_dataset, load_data, process_state
from .storage import load_results, read_manifest

__all__ = [
    "attribute_dataset",
    "load_results",
    "load_data",
    "RunSummary",
    "DEFAULT_SHARD_SIZE",
    "process_state",
    "read_manifest",
    "corpus_summary",
    "write_corpus_summary",
    "plot_corpus_summary",
]
