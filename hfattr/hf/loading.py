"""Loading a model and tokenizer by hub name or local path (remote code off unless asked)."""

from __future__ import annotations

from typing import Any

__all__ = ["load_model", "TASKS", "new_head_keys"]

from .heads import TASKS, task_from_config


def new_head_keys(model: Any, missing_keys: Any) -> list[str]:
    """The missing checkpoint keys outside the base model: a head transformers would initialise randomly."""
    prefix = getattr(model, "base_model_prefix", "") or ""
    return sorted(k for k in (missing_keys or ()) if not (prefix and k.startswith(prefix + ".")))


def load_model(
    name_or_path: str,
    *,
    task: str | None = None,
    trust_remote_code: bool = False,
    device_map: Any = None,
    dtype: Any = None,
    allow_new_head: bool = False,
    **kwargs: Any,
) -> tuple[Any, Any]:
    """``(model, tokenizer)`` in eval mode; ``task`` picks the head (default: from the config).

    A checkpoint without weights for the head of ``task`` (e.g. text-classification on a masked-LM
    checkpoint) is refused: transformers would initialise that head randomly and every explanation
    would explain noise. ``allow_new_head=True`` loads it anyway.
    """
    import transformers

    if task is not None and task not in TASKS:
        raise ValueError(f"unknown task {task!r}; known tasks: {sorted(TASKS)}")
    config = transformers.AutoConfig.from_pretrained(name_or_path, trust_remote_code=trust_remote_code)
    config_task = task_from_config(config)
    given = task
    task = task or config_task
    auto = getattr(transformers, TASKS[task])
    extra: dict[str, Any] = dict(kwargs)
    if device_map is not None:
        extra["device_map"] = device_map
    if dtype is not None:
        extra["dtype"] = dtype
    model, info = auto.from_pretrained(
        name_or_path, trust_remote_code=trust_remote_code, output_loading_info=True, **extra
    )
    new = new_head_keys(model, info.get("missing_keys"))
    if new and not allow_new_head:
        shown = ", ".join(new[:4]) + (f" and {len(new) - 4} more" if len(new) > 4 else "")
        how = f"task {given!r}" if given else f"task {task!r} (from its config)"
        hint = (
            f"leave the task out (its config says {config_task!r}) or "
            if given and config_task != given
            else "pass the task it was trained for, or "
        )
        raise ValueError(
            f"{name_or_path} has no trained weights for the head of {how}: {shown} would be "
            f"initialised at random, so any explanation would explain noise; {hint}use a checkpoint "
            "fine-tuned for that task (allow_new_head=True loads it anyway)"
        )
    tokenizer = transformers.AutoTokenizer.from_pretrained(name_or_path, trust_remote_code=trust_remote_code)
    model.eval()
    return model, tokenizer
