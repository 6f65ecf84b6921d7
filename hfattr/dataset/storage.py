"""Files of a dataset run: Parquet shards (one table row per record), the manifest, and reading them back.

A run directory holds ``shard-NNNNN.parquet`` files, each covering a fixed range of record ids (``row_id``),
and ``manifest.json``. Every file is written to a temporary name and then renamed, so a file
that exists is complete. Each shard's Parquet schema metadata (key ``hfattr``) records the
run fingerprint and its record range, which is what a resumed run checks.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any, Iterator

import torch

from ..result import STORED_DTYPES, Result

__all__ = [
    "schema",
    "MANIFEST",
    "RUN_FORMAT",
    "shard_name",
    "write_shard",
    "shard_info",
    "list_shards",
    "read_manifest",
    "write_manifest",
    "atomic_write_text",
    "remove_stale_temporaries",
    "result_record",
    "failed_record",
    "read_records",
    "record_to_result",
    "load_results",
    "file_sha256",
    "csv_cell",
    "verify_shards",
]

RUN_FORMAT = "hfattr.dataset-run"
MANIFEST = "manifest.json"
_META_KEY = b"hfattr"
_SHARD_RE = re.compile(r"shard-(\d{5,})\.parquet")
_TMP_PREFIX = ".tmp-"


def _current_umask() -> int:
    """The process umask, read without changing it where the OS allows (Linux: /proc)."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    old = os.umask(0o022)  # elsewhere: the only portable read is set-and-restore, at call time
    os.umask(old)
    return old


# Columns that are stored as their own Parquet columns; the rest of a Result goes to ``result_meta``.
_COLUMN_FIELDS = ("tokens", "token_ids", "scores", "text", "offsets", "special_mask", "word_ids", "rows")


@functools.lru_cache(maxsize=None)
def schema():
    """The Arrow schema of a shard (pyarrow is imported on first use, not with hfattr)."""
    import pyarrow as pa

    return pa.schema(
        [
            ("row_id", pa.int64()),
            ("status", pa.string()),  # "ok" or "failed"
            ("error", pa.string()),  # why a record failed
            ("text", pa.string()),
            ("n_tokens", pa.int64()),
            ("tokens", pa.list_(pa.string())),
            ("token_ids", pa.list_(pa.int64())),
            ("scores", pa.list_(pa.float64())),  # 1-D attributions (null for 2-D results)
            ("scores_2d", pa.list_(pa.list_(pa.float64()))),  # 2-D attributions, one list per target row (null for 1-D)
            ("score_rows", pa.list_(pa.string())),  # labels of the target rows of scores_2d
            ("target_id", pa.int64()),
            ("target_label", pa.string()),
            ("target", pa.string()),  # the Result's target dict as JSON
            ("probability", pa.float64()),
            ("prediction_id", pa.int64()),
            ("prediction_label", pa.string()),
            ("prediction_probability", pa.float64()),
            ("delta", pa.float64()),
            ("offsets", pa.list_(pa.list_(pa.int64()))),
            ("special_mask", pa.list_(pa.bool_())),
            ("word_ids", pa.list_(pa.int64())),
            ("result_meta", pa.string()),  # JSON: every other Result field, exact
        ]
    )


def shard_name(index: int) -> str:
    return f"shard-{index:05d}.parquet"


# --------------------------------------------------------------------------- atomic writes
def _atomic(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f"{_TMP_PREFIX}{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_current_umask())  # mkstemp makes 0600; give the usual permissions
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and ``os.replace``."""

    def write(tmp: str) -> None:
        Path(tmp).write_text(text, encoding="utf-8")

    _atomic(Path(path), write)


def remove_stale_temporaries(directory: str | os.PathLike) -> int:
    """Delete temporary files left by a killed run; returns how many."""
    n = 0
    for p in Path(directory).glob(f"{_TMP_PREFIX}*"):
        with contextlib.suppress(OSError):
            p.unlink()
            n += 1
    return n


# --------------------------------------------------------------------------- records
def _probability(p: Any) -> float | None:
    if isinstance(p, (int, float)) and not isinstance(p, bool):
        return float(p)
    return None


def _delta(d: Any) -> float | None:
    if isinstance(d, (int, float)) and not isinstance(d, bool):
        return float(d)
    if isinstance(d, torch.Tensor) and d.numel() == 1:
        return float(d)
    return None


def result_record(row_id: int, res: Result, prediction: tuple[int | None, str | None, float | None]) -> dict:
    """The stored record of a successful Result."""
    d = res.to_dict()
    meta = {k: v for k, v in d.items() if k not in _COLUMN_FIELDS}
    meta["scores_dtype"] = str(res.scores.dtype).removeprefix("torch.")
    attributions = res.scores.detach().cpu().double()
    target = res.target or {}
    return {
        "row_id": int(row_id),
        "status": "ok",
        "error": None,
        "text": res.text,
        "n_tokens": len(res.tokens),
        "tokens": list(res.tokens),
        "token_ids": list(res.token_ids),
        "scores": attributions.tolist() if attributions.dim() == 1 else None,
        "scores_2d": attributions.tolist() if attributions.dim() == 2 else None,
        "score_rows": res.rows,
        "target_id": target.get("id") if isinstance(target.get("id"), int) else None,
        "target_label": None if target.get("label") is None else str(target.get("label")),
        "target": json.dumps(d["target"], sort_keys=True),
        "probability": _probability(res.probability),
        "prediction_id": prediction[0],
        "prediction_label": prediction[1],
        "prediction_probability": prediction[2],
        "delta": _delta(res.delta),
        "offsets": None if res.offsets is None else [list(o) for o in res.offsets],
        "special_mask": res.special_mask,
        "word_ids": res.word_ids,
        "result_meta": json.dumps(meta, allow_nan=False),
    }


def failed_record(row_id: int, text: Any, reason: str, target: Any = None) -> dict:
    """The stored record of an input that could not be attributed."""
    record: dict[str, Any] = {name: None for name in schema().names}
    record.update(row_id=int(row_id), status="failed", error=str(reason), text=text if isinstance(text, str) else None)
    if isinstance(target, bool):
        target = None
    if isinstance(target, int):
        record["target_id"] = target
    elif isinstance(target, str):
        record["target_label"] = target
    return record


# --------------------------------------------------------------------------- shards
def write_shard(path: str | os.PathLike, records: list[dict], info: dict) -> None:
    """Write ``records`` (sorted by ``row_id``) as one Parquet file, atomically; ``info`` goes to its metadata."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    records = sorted(records, key=lambda r: r["row_id"])
    table = pa.Table.from_pylist(records, schema=schema())
    meta = dict(table.schema.metadata or {})
    meta[_META_KEY] = json.dumps(info, sort_keys=True).encode("utf-8")
    table = table.replace_schema_metadata(meta)

    def write(tmp: str) -> None:
        pq.write_table(table, tmp)

    _atomic(Path(path), write)


def shard_info(path: str | os.PathLike) -> dict | None:
    """The ``info`` a shard was written with, or None if the file is not a readable hfattr shard."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        meta = pq.read_schema(path).metadata or {}
        return json.loads(meta[_META_KEY].decode("utf-8"))
    except (OSError, KeyError, ValueError, pa.ArrowException):
        return None


def list_shards(directory: str | os.PathLike) -> dict[int, Path]:
    """Shard files present in ``directory`` by shard index."""
    out = {}
    d = Path(directory)
    if d.is_dir():
        for p in d.iterdir():
            m = _SHARD_RE.fullmatch(p.name)
            if m:
                out[int(m.group(1))] = p
    return dict(sorted(out.items()))


# --------------------------------------------------------------------------- manifest
def read_manifest(directory: str | os.PathLike) -> dict | None:
    """The run's manifest, or None when there is none."""
    path = Path(directory) / MANIFEST
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ValueError(f"{path} is not a readable hfattr manifest: {err}") from None
    if not isinstance(data, dict) or data.get("format") != RUN_FORMAT:
        raise ValueError(f"{path} is not an hfattr dataset-run manifest (format {RUN_FORMAT!r} expected)")
    return data


def write_manifest(directory: str | os.PathLike, manifest: dict) -> None:
    atomic_write_text(Path(directory) / MANIFEST, json.dumps(manifest, indent=2, sort_keys=True) + "\n")


# --------------------------------------------------------------------------- reading back
def _shard_paths(path: str | os.PathLike) -> list[Path]:
    p = Path(path)
    if p.is_file():
        return [p]
    if not p.is_dir():
        raise FileNotFoundError(f"{p} is neither a dataset-run directory nor a shard file")
    shards = list(list_shards(p).values())
    if not shards:
        raise FileNotFoundError(f"{p} holds no shard-*.parquet files; is it an hfattr dataset-run directory?")
    return shards


def read_records(path: str | os.PathLike, columns: list[str] | None = None) -> Iterator[dict]:
    """The stored records (dicts), in ``row_id`` order, from a run directory or one shard file."""
    import pyarrow.parquet as pq

    import pyarrow as pa

    records: list[dict] = []
    for shard in _shard_paths(path):
        try:
            table = pq.read_table(shard, columns=columns and sorted(set(columns) | {"row_id"}))
        except (OSError, pa.ArrowException) as err:
            raise ValueError(f"{shard} is not a readable hfattr shard (corrupted or truncated?): {err}") from None
        records.extend(table.to_pylist())
    records.sort(key=lambda r: r["row_id"])
    return iter(records)


def record_to_result(record: dict) -> Result:
    """Rebuild the :class:`Result` of one successful stored record."""
    if record.get("status") != "ok":
        raise ValueError(f"record {record.get('row_id')} failed ({record.get('error')}); it has no Result")
    d = json.loads(record["result_meta"])
    name = d.pop("scores_dtype", "float32")
    dtype = STORED_DTYPES.get(name) if isinstance(name, str) else None
    if dtype is None or not dtype.is_floating_point:
        raise ValueError(
            f"record {record.get('row_id')}: stored scores dtype {name!r} is not one of "
            f"{[k for k, v in STORED_DTYPES.items() if v.is_floating_point]}"
        )
    values = record["scores"] if record["scores"] is not None else record["scores_2d"]
    d.update(
        tokens=record["tokens"],
        token_ids=record["token_ids"],
        text=record["text"],
        scores=torch.tensor(values, dtype=torch.float64).to(dtype),
        offsets=record["offsets"],
        special_mask=record["special_mask"],
        word_ids=record["word_ids"],
        rows=record["score_rows"],
    )
    return Result.from_dict(d)


def load_results(path: str | os.PathLike, *, failed: str = "skip") -> list[Result | None]:
    """The :class:`Result` objects of a dataset run, in record order.

    ``failed="skip"`` leaves failed records out; ``failed="none"`` puts ``None`` in their place (and
    in place of records not written yet), so that list index == ``row_id``.
    """
    if failed not in ("skip", "none"):
        raise ValueError(f"failed must be 'skip' or 'none', got {failed!r}")
    if Path(path).is_dir():
        bad = verify_shards(path)
        if bad:
            raise ValueError(
                f"{bad[0]} does not match the checksum recorded in {MANIFEST} (corrupted or modified "
                f"after the run{'; also ' + ', '.join(p.name for p in bad[1:]) if bad[1:] else ''}); "
                "rerun attribute-dataset on the directory to recompute it"
            )
    out: list[Result | None] = []
    for record in read_records(path):
        if failed == "none":
            out.extend([None] * (record["row_id"] - len(out)))
        if record["status"] == "ok":
            out.append(record_to_result(record))
        elif failed == "none":
            out.append(None)
    if failed == "none":
        manifest = read_manifest(path) if Path(path).is_dir() else None
        total = (manifest or {}).get("rows_total")
        if isinstance(total, int) and total > len(out):
            out.extend([None] * (total - len(out)))
    return out


# --------------------------------------------------------------------------- integrity
def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 of a file's bytes (hex)."""
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def verify_shards(directory: str | os.PathLike) -> list[Path]:
    """Shard files whose SHA-256 differs from the one the manifest records (missing ones are not listed)."""
    manifest = read_manifest(directory) or {}
    bad = []
    for entry in manifest.get("shards") or []:
        if not isinstance(entry, dict) or not isinstance(entry.get("sha256"), str):
            continue
        name = entry.get("file")
        if not isinstance(name, str) or not _SHARD_RE.fullmatch(name):
            continue
        path = Path(directory) / name
        if path.is_file() and file_sha256(path) != entry["sha256"]:
            bad.append(path)
    return bad


_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value: Any) -> Any:
    """A CSV cell a spreadsheet will not run as a formula: text starting with = + - @ tab or CR gets a
    leading ``'`` (numbers, and text that reads as a number, are left as they are)."""
    if not isinstance(value, str) or not value.startswith(_FORMULA_START):
        return value
    if value[0] in "\t\r":
        return "'" + value
    try:
        float(value)
        return value
    except ValueError:
        return "'" + value
