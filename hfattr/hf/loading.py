"""Loading a model and tokenizer by hub name or local path (remote code off unless asked)."""

from __future__ import annotations

from typing import Any

__all__ = ["load_model", "TASKS"]

TASKS = {
    "sequence-classification": "AutoModelForSequenceClassification",
    "text-classification": "AutoModelForSequenceClassification",
    "sentiment-analysis": "AutoModelForSequenceClassification",
    "causal-lm": "AutoModelForCausalLM",
    "text-generation": "AutoModelForCausalLM",
    "masked-lm": "AutoModelForMaskedLM",
    "fill-mask": "AutoModelForMaskedLM",
    "seq2seq": "AutoModelForSeq2SeqLM",
    "text2text-generation": "AutoModelForSeq2SeqLM",
    "translation": "AutoModelForSeq2SeqLM",
    "summarization": "AutoModelForSeq2SeqLM",
    "token-classification": "AutoModelForTokenClassification",
    "ner": "AutoModelForTokenClassification",
}


def _task_from_config(config: Any) -> str:
    archs = getattr(config, "architectures", None) or []
    for arch in archs:
        for suffix, task in (("ForSequenceClassification", "sequence-classification"),
                             ("ForCausalLM", "causal-lm"), ("LMHeadModel", "causal-lm"),
                             ("ForMaskedLM", "masked-lm"), ("ForConditionalGeneration", "seq2seq"),
                             ("ForTokenClassification", "token-classification")):
            if arch.endswith(suffix):
                return task
    if getattr(config, "is_encoder_decoder", False):
        return "seq2seq"
    return "sequence-classification" if getattr(config, "id2label", None) and len(config.id2label) > 0 \
        and not getattr(config, "is_decoder", False) else "causal-lm"


def load_model(name_or_path: str, *, task: str | None = None, trust_remote_code: bool = False,
               device_map: Any = None, dtype: Any = None, **kwargs: Any) -> tuple[Any, Any]:
    """``(model, tokenizer)`` in eval mode; ``task`` picks the head (default: from the config)."""
    import transformers

    if task is not None and task not in TASKS:
        raise ValueError(f"unknown task {task!r}; known tasks: {sorted(TASKS)}")
    config = transformers.AutoConfig.from_pretrained(name_or_path, trust_remote_code=trust_remote_code)
    task = task or _task_from_config(config)
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
