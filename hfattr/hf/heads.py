"""One table of model heads and tasks: which head a model has, how to load it, what its target means.

A *head kind* (``class``, ``causal``, ``masked``, ``seq2seq``, ``token``) says which output of a
model is explained. It is read from the model's class name (:data:`HEAD_SUFFIXES`); a *task*
name (``"sequence-classification"``, ``"text-generation"``, ...) picks the transformers auto class
that loads a head (:data:`TASKS`); a Result's *target kind* (``next_token``, ``continuation``, ...)
names the head it needs (:data:`TARGET_HEADS`).
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "HEAD_KINDS",
    "HEAD_SUFFIXES",
    "HEAD_TASKS",
    "AUTO_CLASSES",
    "TASK_ALIASES",
    "TASKS",
    "TARGET_HEADS",
    "head_of_class_name",
    "task_from_config",
]

HEAD_KINDS: dict[str, str] = {
    "class": "one class (label id or name) of the whole sequence; default: the predicted class",
    "causal": "the next token after the text (an id), or each token of a continuation text (teacher forcing)",
    "masked": "the token at each mask token of the text; default: the predicted tokens",
    "seq2seq": "each token of a target text given to the decoder (teacher forcing); default: the first token",
    "token": "one label of one token: target=(token_index, label)",
}
"""Head kind -> what its target means (the explained score is that output's logit, probability, ...)."""

HEAD_SUFFIXES: dict[str, str] = {
    "ForSequenceClassification": "class",
    "ForCausalLM": "causal",
    "LMHeadModel": "causal",
    "ForMaskedLM": "masked",
    "ForConditionalGeneration": "seq2seq",
    "ForSeq2SeqLM": "seq2seq",
    "ForTokenClassification": "token",
}
"""Model class-name suffix -> head kind."""

HEAD_TASKS: dict[str, str] = {
    "class": "sequence-classification",
    "causal": "causal-lm",
    "masked": "masked-lm",
    "seq2seq": "seq2seq",
    "token": "token-classification",
}
"""Head kind -> the task name that loads it."""

AUTO_CLASSES: dict[str, str] = {
    "sequence-classification": "AutoModelForSequenceClassification",
    "token-classification": "AutoModelForTokenClassification",
    "masked-lm": "AutoModelForMaskedLM",
    "causal-lm": "AutoModelForCausalLM",
    "seq2seq": "AutoModelForSeq2SeqLM",
}
"""Task name -> transformers auto class name (one task per head kind)."""

TASK_ALIASES: dict[str, str] = {
    "text-classification": "sequence-classification",
    "sentiment-analysis": "sequence-classification",
    "text-generation": "causal-lm",
    "fill-mask": "masked-lm",
    "text2text-generation": "seq2seq",
    "translation": "seq2seq",
    "summarization": "seq2seq",
    "ner": "token-classification",
}
"""transformers pipeline task names -> the task name used here."""

TASKS: dict[str, str] = {**AUTO_CLASSES, **{alias: AUTO_CLASSES[task] for alias, task in TASK_ALIASES.items()}}
"""Every accepted task name (aliases included) -> transformers auto class name."""

TARGET_HEADS: dict[str, str] = {
    "class": "class",
    "next_token": "causal",
    "continuation": "causal",
    "masked": "masked",
    "token": "token",
    "seq2seq": "seq2seq",
}
"""A Result's target kind -> the head kind that explains it."""


def head_of_class_name(name: str) -> str | None:
    """The head kind of a model class (or ``config.architectures`` entry) name; None if not known."""
    for suffix, kind in HEAD_SUFFIXES.items():
        if name.endswith(suffix):
            return kind
    return None


def task_from_config(config: Any) -> str:
    """The task of a model config: from ``config.architectures``, else a guess from its flags."""
    for arch in getattr(config, "architectures", None) or []:
        kind = head_of_class_name(arch)
        if kind is not None:
            return HEAD_TASKS[kind]
    if getattr(config, "is_encoder_decoder", False):
        return "seq2seq"
    labels = getattr(config, "id2label", None)
    if labels and len(labels) > 0 and not getattr(config, "is_decoder", False):
        return "sequence-classification"
    return "causal-lm"
