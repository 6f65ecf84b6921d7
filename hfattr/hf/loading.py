"""Loading a model and tokenizer by hub name or local path (remote code off unless asked)."""

from __future__ import annotations

from typing import Any

__all__ = ["load_model", "TASKS"]

from .heads import TASKS, task_from_config


def load_model(name_or_path: str, *, task: str | None = None, trust_remote_code: bool = False,
               device_map: Any = None, dtype: Any = None, **kwargs: Any) -> tuple[Any, Any]:
    """``(model, tokenizer)`` in eval mode; ``task`` picks the head (default: from the config)."""
    import transformers

    if task is not None and task not in TASKS:
        raise ValueError(f"unknown task {task!r}; known tasks: {sorted(TASKS)}")
    config = transformers.AutoConfig.from_pretrained(name_or_path, trust_remote_code=trust_remote_code)
    task = task or task_from_config(config)
    auto = getattr(transformers, TASKS[task])
    extra: dict[str, Any] = dict(kwargs)
    if device_map is not None:
        extra["device_map"] = device_map
    if dtype is not None:
        extra["dtype"] = dtype
    model = auto.from_pretrained(name_or_path, trust_remote_code=trust_remote_code, **extra)
    tokenizer = transformers.AutoTokenizer.from_pretrained(name_or_path, trust_remote_code=trust_remote_code)
    model.eval()
    return model, tokenizer
