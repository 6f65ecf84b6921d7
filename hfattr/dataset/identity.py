"""What identifies a dataset run (model digest, settings, data) and its manifest; resume checks."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

from ..explainer import Explainer, jsonable
from ..hf.access import model_config
from .storage import list_shards, shard_info, shard_name

__all__ = [
    "model_digest",
    "run_identity",
    "fingerprint",
    "SETTING_NAMES",
    "model_reference",
    "check_resume",
    "OWN_FILES",
    "build_manifest",
    "describe_data",
]


def model_digest(explainer: Explainer) -> str:
    """A cheap identity of model and tokenizer: config, parameter names/shapes and sampled values."""
    model, tok = explainer.model, explainer.tokenizer
    h = hashlib.sha256(type(model).__name__.encode())
    cfg = {
        k: v
        for k, v in model_config(model).to_dict().items()
        if not k.startswith("_") and k not in ("name_or_path", "transformers_version")
    }
    h.update(json.dumps(cfg, sort_keys=True, default=str).encode())
    for name, p in model.named_parameters():
        h.update(f"{name}{tuple(p.shape)}{p.dtype}".encode())
        if p.device.type != "meta" and p.numel():
            flat = p.detach().reshape(-1)
            h.update(flat[:: max(1, flat.numel() // 64)].float().cpu().numpy().tobytes())
    h.update(type(tok).__name__.encode())
    with contextlib.suppress(Exception):
        h.update(json.dumps(sorted(tok.get_vocab().items())).encode())
    return h.hexdigest()


# --------------------------------------------------------------------------- run identity
def run_identity(
    explainer: Explainer,
    method: str,
    options: dict,
    target: Any,
    text_column: str,
    target_column: str | None,
    n_records: int,
    digest: str,
    shard_size: int,
) -> dict:
    return {
        "model": {"digest": model_digest(explainer)},  # the name is kept in the manifest, not compared
        "method": method,
        "options": jsonable(options),
        "target": jsonable(target),
        "text_column": text_column,
        "target_column": target_column,
        "data": {"rows": n_records, "digest": digest},
        "shard_size": shard_size,
    }


def fingerprint(identity: dict) -> str:
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:24]


SETTING_NAMES = {
    "model": "model",
    "method": "method",
    "options": "method options",
    "target": "target",
    "text_column": "text column",
    "target_column": "target column",
    "data": "data rows",
    "shard_size": "shard size",
}


def model_reference(name: Any) -> Any:
    """A local model directory is recorded as an absolute path, so the run can be reopened anywhere."""
    if isinstance(name, str) and name and os.path.isdir(os.path.expanduser(name)):
        return os.path.abspath(os.path.expanduser(name))
    return name


def check_resume(out: Path, manifest: dict | None, identity: dict, fp: str, model_name: str) -> None:
    if manifest is not None and manifest.get("fingerprint") != fp:
        old = manifest.get("identity", {})
        diffs = []
        for key, what in SETTING_NAMES.items():
            a, b = old.get(key), identity[key]
            if a == b:
                continue
            if key == "model":
                a = f"{manifest.get('model')} (weights/config digest {(a or {}).get('digest', '?')[:12]})"
                b = f"{model_name} (weights/config digest {b['digest'][:12]})"
            elif key == "data":
                a = f"{(a or {}).get('rows')} rows with digest {(a or {}).get('digest', '?')[:12]}"
                b = f"{b['rows']} rows with digest {b['digest'][:12]}"
            else:
                a, b = json.dumps(a, sort_keys=True), json.dumps(b, sort_keys=True)
            diffs.append(f"{what}: {a} there, {b} now")
        raise ValueError(
            f"output_dir {str(out)!r} holds a run with different settings ({'; '.join(diffs)}); "
            "rerun with the same settings to resume, or choose a new output directory"
        )
    if manifest is None and out.is_dir():
        stray = [p.name for p in out.iterdir() if not (p.name.startswith((".tmp-", "shard-")) or p.name in OWN_FILES)]
        if stray:
            raise ValueError(
                f"output_dir {str(out)!r} is not empty and holds no hfattr manifest "
                f"(found {sorted(stray)[:5]}); choose a new or empty directory"
            )
    for path in list_shards(out).values():
        info = shard_info(path)
        if info is not None and info.get("fingerprint") != fp:
            raise ValueError(
                f"output_dir {str(out)!r} holds {path.name} from a different run "
                f"(fingerprint {info.get('fingerprint')}, now {fp}); choose a new output directory"
            )


OWN_FILES = ("corpus_summary.csv", "corpus_summary.png", "faithfulness.csv", "report.html")


def build_manifest(
    base: dict, done: dict[int, dict], *, status: str, num_processes: int, last_run: dict | None = None
) -> dict:
    shards = [
        {
            "file": shard_name(k),
            **{
                key: info[key]
                for key in ("start", "stop", "rows", "failures", "tokens", "process", "sha256")
                if key in info
            },
        }
        for k, info in sorted(done.items())
    ]
    return {
        **base,
        "status": status,
        "num_processes": num_processes,
        "shards": shards,
        "rows_done": sum(s["rows"] for s in shards),
        "failures": sum(s["failures"] for s in shards),
        "tokens": sum(s["tokens"] for s in shards),
        "last_run": last_run,
        "updated": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def describe_data(data: Any) -> str:
    if isinstance(data, (str, os.PathLike)):
        path = os.fspath(data)
        return os.path.abspath(path) if os.path.exists(path) else path
    fp = getattr(data, "fingerprint", None)
    return f"{type(data).__name__}" + (f" (fingerprint {fp})" if fp else "")
