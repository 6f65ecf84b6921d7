"""The tiny sentiment classifier embedded in the hfattr package (works offline).

It is a toy BERT trained from scratch on a synthetic template corpus; see
``hfattr/data/default_model/model_card.md`` and ``docs/default_model.md``.
"""

from __future__ import annotations

from pathlib import Path

DEFAULT_MODEL_DIR: Path = Path(__file__).resolve().parent.parent / "data" / "default_model"
"""Directory inside the installed package holding the model and tokenizer files."""

DEFAULT_MODEL_NAME = "hfattr/default-sentiment"
"""Display name of the embedded model (not a Hub id: it is never downloaded)."""

_REQUIRED_FILES = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json")


def load_default_model(*, device=None):
    """Load the embedded sentiment model and its tokenizer from the package, offline.

    Returns ``(model, tokenizer)``: a ``BertForSequenceClassification`` in eval mode
    (labels ``0 = NEGATIVE``, ``1 = POSITIVE``) and a fast tokenizer. ``device``, if
    given, is where the model is moved (e.g. ``"cpu"``, ``"cuda"``).
    """
    missing = [name for name in _REQUIRED_FILES if not (DEFAULT_MODEL_DIR / name).is_file()]
    if missing:
        raise FileNotFoundError(
            f"the embedded default model is incomplete: {', '.join(missing)} not found in "
            f"{DEFAULT_MODEL_DIR}; reinstall hfattr or run scripts/train_default_model.py"
        )
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from transformers.utils import logging as hf_logging

    bars_were_on = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        tokenizer = AutoTokenizer.from_pretrained(DEFAULT_MODEL_DIR, local_files_only=True)
        model = AutoModelForSequenceClassification.from_pretrained(DEFAULT_MODEL_DIR, local_files_only=True)
    finally:
        if bars_were_on:
            hf_logging.enable_progress_bar()
    if device is not None:
        model.to(device)
    model.eval()
    return model, tokenizer
