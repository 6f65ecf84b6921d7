"""The data of a dataset run: loading a Dataset, file or folder, checking its columns, its digest."""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any

__all__ = ["FILE_BUILDERS", "load_data", "pick_split", "check_columns", "data_digest"]

FILE_BUILDERS = {
    ".csv": "csv",
    ".tsv": "csv",
    ".json": "json",
    ".jsonl": "json",
    ".ndjson": "json",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".txt": "text",
    ".text": "text",
    ".arrow": "arrow",
}


# --------------------------------------------------------------------------- data
def load_data(data: Any, *, split: str | None = None) -> Any:
    """``data`` as a ``datasets.Dataset``: a Dataset, a DatasetDict (with ``split``), a local
    CSV / JSON Lines / Parquet / text / Arrow file or folder, or a name for ``datasets.load_dataset``."""
    import datasets

    if isinstance(data, datasets.DatasetDict):
        return pick_split(data, split)
    if isinstance(data, datasets.Dataset):
        if split is not None:
            raise ValueError(f"split={split!r} was given but data is already a single Dataset")
        return data
    if isinstance(data, (datasets.IterableDataset, datasets.IterableDatasetDict)):
        raise TypeError("data is a streaming (iterable) dataset; give a Dataset (load it without streaming=True)")
    if not isinstance(data, (str, os.PathLike)):
        raise TypeError(
            f"data must be a datasets.Dataset, a file or folder path, or a dataset name, got {type(data).__name__}"
        )
    path = os.path.expanduser(os.fspath(data))
    if not path.strip():
        raise ValueError("data is an empty string; give a file path or a dataset name")
    if os.path.isfile(path):
        ext = os.path.splitext(path)[1].lower()
        builder = FILE_BUILDERS.get(ext)
        if builder is None:
            raise ValueError(
                f"data file {path!r} has an unknown extension {ext!r}; expected one of {sorted(FILE_BUILDERS)}"
            )
        kwargs = {"delimiter": "\t"} if ext == ".tsv" else {}
        if os.path.getsize(path) == 0:
            raise ValueError(f"data file {path!r} is empty (0 rows); nothing to attribute")
        try:
            loaded = datasets.load_dataset(builder, data_files=path, **kwargs)
        except Exception as err:  # datasets and pandas raise many kinds; name the file
            if "corresponds to no data" in str(err):
                raise ValueError(f"data file {path!r} is empty (0 rows); nothing to attribute") from None
            raise ValueError(f"could not read data file {path!r} as {builder}: {err}") from err
        return pick_split(loaded, split)
    if os.path.isdir(path) or os.path.isabs(path) or path.startswith(("./", "../")):
        if not os.path.exists(path):
            raise FileNotFoundError(f"data path {path!r} does not exist")
    try:
        loaded = datasets.load_dataset(path, split=split)
    except (FileNotFoundError, ValueError, ConnectionError, OSError) as err:
        raise ValueError(f"could not load dataset {path!r}: {err}") from err
    return pick_split(loaded, None) if isinstance(loaded, datasets.DatasetDict) else loaded


def pick_split(dd: Any, split: str | None) -> Any:
    names = list(dd.keys())
    if split is None:
        if len(names) == 1:
            return dd[names[0]]
        raise ValueError(f"the dataset has splits {names}; pass split= (--split) to choose one")
    if split not in dd:
        raise ValueError(f"split {split!r} not found; the dataset has splits {names}")
    return dd[split]


def check_columns(ds: Any, text_column: str, target_column: str | None) -> None:
    import datasets

    cols = list(ds.column_names)
    for arg, col in (("text_column", text_column), ("target_column", target_column)):
        if col is not None and col not in cols:
            raise ValueError(f"{arg} {col!r} is not a column of the dataset; its columns are {cols}")
    if len(ds) == 0:
        raise ValueError("the dataset is empty (0 rows); nothing to attribute")
    feat = ds.features[text_column]
    if not (isinstance(feat, datasets.Value) and feat.dtype in ("string", "large_string")):
        kind = feat.dtype if isinstance(feat, datasets.Value) else type(feat).__name__
        raise TypeError(f"text_column {text_column!r} holds {kind} values, not text (strings)")
    if target_column is not None:
        tf = ds.features[target_column]
        ok = isinstance(tf, datasets.ClassLabel) or (
            isinstance(tf, datasets.Value)
            and (tf.dtype.startswith(("int", "uint", "float")) or "string" in tf.dtype or tf.dtype == "null")
        )
        if not ok:
            kind = tf.dtype if isinstance(tf, datasets.Value) else type(tf).__name__
            raise TypeError(
                f"target_column {target_column!r} holds {kind} values; expected label ids (int) "
                "or label names / target texts (str)"
            )


def data_digest(ds: Any, text_column: str, target_column: str | None) -> str:
    h = hashlib.sha256()
    cols = [text_column] + ([target_column] if target_column else [])
    for batch in ds.select_columns(cols).iter(batch_size=4096):
        targets = batch[target_column] if target_column else [None] * len(batch[text_column])
        for t, g in zip(batch[text_column], targets):
            h.update(json.dumps([t, g]).encode("utf-8"))
            h.update(b"\n")
    return h.hexdigest()
