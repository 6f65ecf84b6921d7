"""The :class:`Result` container: one attributed text, its scores and views.

A ``Result`` is plain data (lists, dicts and tensors) plus a few conveniences:
word-level aggregation, top-k listing, an exact JSON round trip and the views
(HTML, matplotlib, terminal table) implemented in :mod:`hfattr.viz`.
"""

from __future__ import annotations

import copy
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import torch

from . import views
from ._version import __version__

__all__ = ["Result", "read_text_file", "STORED_DTYPES"]

_FORMAT = "hfattr.Result"
_FORMAT_VERSION = 1
_TENSOR_TAG = "__hfattr_tensor__"
_FLOAT_TAG = "__hfattr_float__"
_REDUCES = ("sum", "mean", "max", "absmax")
_LEVELS = ("word", "token")
_DTYPES = {
    str(d).removeprefix("torch."): d
    for d in (
        torch.float16,
        torch.bfloat16,
        torch.float32,
        torch.float64,
        torch.int8,
        torch.int16,
        torch.int32,
        torch.int64,
        torch.uint8,
        torch.bool,
    )
}

STORED_DTYPES = dict(_DTYPES)  # the dtypes a stored tensor may name (an allow-list, never getattr(torch, ...))


# --------------------------------------------------------------------------- JSON codec
def _encode(obj: Any, where: str) -> Any:
    """Turn ``obj`` into JSON-able data; tensors and non-finite floats are tagged."""
    if obj is None or isinstance(obj, (bool, int, str)):
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else {_FLOAT_TAG: repr(obj)}
    if isinstance(obj, torch.Tensor):
        return _encode_tensor(obj, where)
    if isinstance(obj, dict):
        out = {}
        for key, value in obj.items():
            if not isinstance(key, str):
                raise TypeError(f"{where}: dict keys must be str for JSON, got {key!r}")
            out[key] = _encode(value, f"{where}[{key!r}]")
        return out
    if isinstance(obj, (list, tuple)):
        return [_encode(v, f"{where}[{i}]") for i, v in enumerate(obj)]
    if hasattr(obj, "__array__") and hasattr(obj, "shape"):  # numpy arrays and scalars
        return _encode_tensor(torch.as_tensor(obj), where)
    raise TypeError(
        f"{where}: cannot store a {type(obj).__name__} as JSON "
        "(expected None, bool, int, float, str, list, dict or torch.Tensor)"
    )


def _encode_tensor(t: torch.Tensor, where: str) -> dict:
    dtype = str(t.dtype).removeprefix("torch.")
    if dtype not in _DTYPES:
        raise TypeError(f"{where}: tensors of dtype {t.dtype} cannot be stored (supported: {', '.join(_DTYPES)})")
    flat = t.detach().cpu().reshape(-1)
    if t.is_floating_point():
        data = [float.hex(v) for v in flat.to(torch.float64).tolist()]  # exact
    else:
        data = flat.tolist()
    return {_TENSOR_TAG: _FORMAT_VERSION, "dtype": dtype, "shape": list(t.shape), "data": data}


def _decode(obj: Any) -> Any:
    """Inverse of :func:`_encode`."""
    if isinstance(obj, list):
        return [_decode(v) for v in obj]
    if not isinstance(obj, dict):
        return obj
    if _TENSOR_TAG in obj:
        name = obj.get("dtype")
        dtype = _DTYPES.get(name) if isinstance(name, str) else None
        if dtype is None:
            raise ValueError(f"unsupported stored tensor dtype {name!r}")
        data = obj["data"]
        if dtype.is_floating_point:
            values = torch.tensor([float.fromhex(v) for v in data], dtype=torch.float64)
            return values.to(dtype).reshape(obj["shape"])
        return torch.tensor(data, dtype=dtype).reshape(obj["shape"])
    if _FLOAT_TAG in obj and len(obj) == 1:
        return float(obj[_FLOAT_TAG])
    return {k: _decode(v) for k, v in obj.items()}


# --------------------------------------------------------------------------- Result
@dataclass(eq=False, repr=False)
class Result:
    """Attribution scores for one text, aligned with its tokens.

    ``scores`` has shape ``(n_tokens,)`` or ``(n_rows, n_tokens)``; ``rows``
    labels the rows (target tokens, or sites such as ``blocks.0.attention``).
    """

    tokens: list[str]
    token_ids: list[int]
    scores: torch.Tensor
    text: str | None = None
    offsets: list[tuple[int, int]] | None = None
    special_mask: list[bool] | None = None
    word_ids: list[int | None] | None = None
    rows: list[str] | None = None
    target: dict = field(default_factory=dict)
    probability: float | list[float] | None = None
    method: str = ""
    options: dict = field(default_factory=dict)
    delta: torch.Tensor | float | None = None
    model_name: str | None = None
    hfattr_version: str = __version__
    extras: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.tokens = [str(t) for t in self.tokens]
        self.token_ids = [int(i) for i in self.token_ids]
        n = len(self.tokens)
        if not isinstance(self.scores, torch.Tensor):
            raise TypeError(f"scores must be a torch.Tensor, got {type(self.scores).__name__}")
        self.scores = self.scores.detach()
        if self.scores.dim() not in (1, 2) or self.scores.shape[-1] != n:
            raise ValueError(
                f"scores must have shape ({n},) or (n_rows, {n}) to match {n} tokens, got {tuple(self.scores.shape)}"
            )
        if len(self.token_ids) != n:
            raise ValueError(f"token_ids has {len(self.token_ids)} entries, expected {n}")
        if self.offsets is not None:
            self.offsets = [(int(s), int(e)) for s, e in self.offsets]
        if self.special_mask is not None:
            self.special_mask = [bool(b) for b in self.special_mask]
        if self.word_ids is not None:
            self.word_ids = [None if w is None else int(w) for w in self.word_ids]
        for name in ("offsets", "special_mask", "word_ids"):
            value = getattr(self, name)
            if value is not None and len(value) != n:
                raise ValueError(f"{name} has {len(value)} entries, expected {n} (one per token)")
        if self.rows is not None:
            self.rows = [str(r) for r in self.rows]
            if self.scores.dim() != 2 or len(self.rows) != self.scores.shape[0]:
                raise ValueError(
                    f"rows has {len(self.rows)} labels but scores has shape "
                    f"{tuple(self.scores.shape)}; expected one label per row"
                )
        if isinstance(self.probability, torch.Tensor):
            p = self.probability.detach().cpu()
            self.probability = p.item() if p.numel() == 1 else p.reshape(-1).tolist()
        if isinstance(self.delta, torch.Tensor):
            self.delta = self.delta.detach()
        for name in ("target", "options", "extras"):
            if not isinstance(getattr(self, name), dict):
                raise TypeError(f"{name} must be a dict, got {type(getattr(self, name)).__name__}")

    # ----------------------------------------------------------------- basics
    @property
    def n_tokens(self) -> int:
        """Number of tokens (the last dimension of ``scores``)."""
        return len(self.tokens)

    @property
    def is_generation(self) -> bool:
        """True for a generation (or given continuation): rows = generated tokens, NaN = empty entries."""
        return self.target.get("kind") in ("generation", "continuation") and self.scores.dim() == 2

    def aggregate_rows(self, reduce: str = "sum") -> "Result":
        """One score per token: ``reduce`` (sum, mean, max, absmax) over the rows, ignoring empty
        (NaN) entries; a column that is empty in every row stays NaN."""
        from .aggregation import rows

        return rows(self, reduce)

    def _special(self, i: int) -> bool:
        return bool(self.special_mask[i]) if self.special_mask is not None else False

    def __repr__(self) -> str:
        shape = tuple(self.scores.shape)
        return (
            f"Result(method={self.method!r}, n_tokens={self.n_tokens}, scores={shape}, "
            f"target={self.target!r}, probability={self.probability!r})"
        )

    # ----------------------------------------------------------------- aggregation
    def aggregate(self, level: str = "word", *, reduce: str = "sum") -> "Result":
        """Return a new Result with scores pooled per word (``level="word"``).

        Contiguous tokens sharing a word id form one word; special tokens and
        tokens without a word id stay their own unit. On a generation both axes are
        merged, NaN-aware (see :mod:`hfattr.aggregation`). ``reduce`` is one of
        ``sum``, ``mean``, ``max`` or ``absmax`` (the signed score of largest
        magnitude). ``level="token"`` returns an unchanged copy.
        """
        if level not in _LEVELS:
            raise ValueError(f"level must be one of {_LEVELS}, got {level!r}")
        if reduce not in _REDUCES:
            raise ValueError(f"reduce must be one of {_REDUCES}, got {reduce!r}")
        if level == "token":
            return copy.deepcopy(self)
        if self.is_generation or (self.target.get("kind") == "generation" and self.scores.dim() == 2):
            from .aggregation import words

            return words(self, reduce)  # both axes: generated rows are merged like their columns
        if self.word_ids is None:
            raise ValueError(
                "aggregate(level='word') needs word_ids; this Result has "
                "word_ids=None (encode the text with a fast tokenizer)"
            )
        groups: list[list[int]] = []
        group_wids: list[int | None] = []
        group_special: list[bool] = []
        open_group = False
        for i, wid in enumerate(self.word_ids):
            special = self._special(i) if self.special_mask is not None else wid is None
            if special or wid is None:
                groups.append([i])
                group_wids.append(None if special else wid)
                group_special.append(special)
                open_group = False
            elif open_group and group_wids[-1] == wid:
                groups[-1].append(i)
            else:
                groups.append([i])
                group_wids.append(wid)
                group_special.append(False)
                open_group = True

        texts: list[str] = []
        offsets: list[tuple[int, int] | None] = []
        for idx, special in zip(groups, group_special):
            word, span = self._unit_text(idx, special)
            texts.append(word)
            offsets.append(span)
        pooled = [self._reduce(self.scores[..., idx], reduce) for idx in groups]
        attributions = torch.stack(pooled, dim=-1)
        extras = copy.deepcopy(self.extras)
        extras["aggregate"] = {"level": level, "reduce": reduce, "token_groups": groups}
        from .aggregation import derived

        return derived(
            self,
            tokens=texts,
            token_ids=[self.token_ids[idx[0]] for idx in groups],
            scores=attributions,
            # with token offsets every span is known (None only without them)
            offsets=cast("list[tuple[int, int]]", offsets) if self.offsets is not None else None,
            special_mask=group_special,
            word_ids=group_wids,
            extras=extras,
        )

    def _unit_text(self, idx: list[int], special: bool) -> tuple[str, tuple[int, int] | None]:
        """Text and character span for a group of token indices."""
        first_off = self.offsets[idx[0]] if self.offsets is not None else None
        if special:
            return self.tokens[idx[0]], first_off
        if self.text is not None and self.offsets is not None:
            spans = [self.offsets[j] for j in idx if self.offsets[j][1] > self.offsets[j][0]]
            if spans:
                start, end = min(s for s, _ in spans), max(e for _, e in spans)
                piece = self.text[start:end]
                lead = len(piece) - len(piece.lstrip())
                word = piece.strip()
                if word:
                    return word, (start + lead, start + lead + len(word))
        pieces = [self.tokens[idx[0]]]
        pieces += [t[2:] if t.startswith("##") else t for t in (self.tokens[j] for j in idx[1:])]
        span = None
        if self.offsets is not None:
            span = (self.offsets[idx[0]][0], self.offsets[idx[-1]][1])
        return "".join(pieces), span

    @staticmethod
    def _reduce(block: torch.Tensor, how: str) -> torch.Tensor:
        if how == "sum":
            return block.sum(-1)
        if how == "mean":
            return block.mean(-1) if block.is_floating_point() else block.double().mean(-1)
        if how == "max":
            return block.amax(-1)
        pick = block.abs().argmax(-1, keepdim=True)
        return block.gather(-1, pick).squeeze(-1)

    # ----------------------------------------------------------------- ranking
    def top_k(self, k: int = 5, *, row: int | str | None = None, by: str = "abs") -> list[tuple[str, float, int]]:
        """The ``k`` highest-scoring non-special tokens as ``(token, score, index)``.

        ``by="abs"`` ranks by magnitude, ``by="value"`` by signed score. For
        2-D scores pick a ``row`` by index or by label.
        """
        if not isinstance(k, int) or isinstance(k, bool) or k < 0:
            raise ValueError(f"k must be a non-negative int, got {k!r}")
        if by not in ("abs", "value"):
            raise ValueError(f"by must be 'abs' or 'value', got {by!r}")
        vec = self._row(row)
        keys = (vec.abs() if by == "abs" else vec).double().nan_to_num(nan=-math.inf).tolist()
        order = sorted((i for i in range(self.n_tokens) if not self._special(i)), key=lambda i: (-keys[i], i))
        return [(self.tokens[i], float(vec[i]), i) for i in order[:k]]

    def _row(self, row: int | str | None) -> torch.Tensor:
        attributions = self.scores.detach().cpu()
        if attributions.dim() == 1:
            if row not in (None, 0):
                raise ValueError(f"row={row!r} given but scores are 1-D")
            return attributions
        if row is None:
            if attributions.shape[0] != 1:
                raise ValueError(
                    f"scores have {attributions.shape[0]} rows; pass row= (an index, or one of the labels {self.rows})"
                )
            return attributions[0]
        if isinstance(row, str):
            if self.rows is None or row not in self.rows:
                raise ValueError(f"row {row!r} not found; rows are {self.rows}")
            return attributions[self.rows.index(row)]
        if not -attributions.shape[0] <= row < attributions.shape[0]:
            raise ValueError(f"row index {row} out of range for {attributions.shape[0]} rows")
        return attributions[row]

    # ----------------------------------------------------------------- serialisation
    def to_dict(self) -> dict:
        """A JSON-able dict; floats in tensors are stored exactly (``float.hex``)."""
        out: dict[str, Any] = {"format": _FORMAT, "format_version": _FORMAT_VERSION}
        for name in self.__dataclass_fields__:
            out[name] = _encode(getattr(self, name), name)
        return out

    @classmethod
    def from_dict(cls, d: dict) -> "Result":  # noqa: C901 - validation of untrusted input
        """Rebuild a Result from :meth:`to_dict` output."""
        if not isinstance(d, dict) or d.get("format") != _FORMAT:
            raise ValueError(f"not an hfattr Result: expected a dict with 'format': {_FORMAT!r}")
        version = d.get("format_version")
        if not isinstance(version, int) or isinstance(version, bool) or not 1 <= version <= _FORMAT_VERSION:
            raise ValueError(
                f"unsupported hfattr Result format_version {version!r} (this hfattr reads up to {_FORMAT_VERSION})"
            )
        missing = [k for k in ("tokens", "token_ids", "scores") if k not in d]
        if missing:
            raise ValueError(f"hfattr Result dict is missing required keys {missing}")
        try:
            kwargs = {name: _decode(d[name]) for name in cls.__dataclass_fields__ if name in d}
            _check_types(kwargs)
            if kwargs.get("offsets") is not None:
                kwargs["offsets"] = [tuple(span) for span in kwargs["offsets"]]
            return cls(**kwargs)
        except ValueError:
            raise
        except (TypeError, RuntimeError, OverflowError, RecursionError, AttributeError, KeyError) as err:
            raise ValueError(f"not a valid hfattr Result: {type(err).__name__}: {err}") from None

    def save(self, path: str | Path) -> Path:
        """Write the Result as JSON (never pickle) and return the path."""
        path = Path(path)
        path.write_text(json.dumps(self.to_dict(), allow_nan=False), encoding="utf-8")
        return path

    @classmethod
    def load(cls, path: str | Path, *, max_bytes: int | None = None) -> "Result":
        """Read a Result written by :meth:`save` (a regular UTF-8 JSON file; at most ``max_bytes``)."""
        path = Path(path)
        raw = read_text_file(path, max_bytes=max_bytes, what="hfattr Result file")
        try:
            data = json.loads(raw)
        except (json.JSONDecodeError, RecursionError) as err:
            raise ValueError(f"{path} is not an hfattr Result file (invalid JSON: {err})") from None
        try:
            return cls.from_dict(data)
        except (ValueError, TypeError, KeyError) as err:
            raise ValueError(f"{path} is not a valid hfattr Result file: {err}") from None

    # ----------------------------------------------------------------- views
    def to_html(self, **options: Any) -> str:
        """Self-contained HTML fragment with a legend (see :func:`hfattr.views.html`)."""
        return views.html(self, **options)

    def _repr_html_(self) -> str:
        return views.html(self)

    def plot(self, *, ax=None, **options: Any):
        """Matplotlib bar chart (1-D), heatmap (2-D) or generation matrix; returns the Axes."""
        return views.plot(self, ax=ax, **options)

    def to_text(self, *, color: bool = True, width: int | None = None, **options: Any) -> str:
        """Terminal view (see :func:`hfattr.views.text_table`)."""
        return views.text_table(self, color=color, width=width, **options)

    def show(self, *, color: bool | None = None, width: int | None = None, file=None) -> None:
        """Show the Result: the HTML view in a notebook, the terminal view (colour on a tty) elsewhere."""
        views.show(self, color=color, width=width, file=file)

    def __str__(self) -> str:
        return views.text_table(self, color=False)


def read_text_file(path: str | Path, *, max_bytes: int | None = None, what: str = "file") -> str:
    """The text of a regular file, strictly UTF-8; refuses FIFOs, devices and files over ``max_bytes``."""
    import os
    import stat as _stat

    if max_bytes is not None and (isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 1):
        raise ValueError(f"max_bytes must be an int >= 1 or None, got {max_bytes!r}")
    path = Path(path)
    try:
        st = os.stat(path)
    except OSError as err:
        raise FileNotFoundError(f"cannot read {what} {path}: {err.strerror or err}") from None
    if not _stat.S_ISREG(st.st_mode):
        raise ValueError(f"{path} is not a regular file (a directory, FIFO or device); expected an {what}")
    if max_bytes is not None and st.st_size > max_bytes:
        raise ValueError(f"{path} has {st.st_size} bytes, more than max_bytes={max_bytes}")
    with open(path, "rb") as fh:
        data = fh.read() if max_bytes is None else fh.read(max_bytes + 1)
    if max_bytes is not None and len(data) > max_bytes:
        raise ValueError(f"{path} has more than max_bytes={max_bytes} bytes")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(f"{path} is not valid UTF-8 (byte {err.start}); not an {what}") from None


def _check_types(kwargs: dict) -> None:
    """Field types of a decoded Result (the JSON may come from anywhere)."""

    def ints(name: str, allow_none: bool = False) -> None:
        v = kwargs.get(name)
        if v is None:
            return
        if not isinstance(v, list) or not all(
            (allow_none and x is None) or (isinstance(x, int) and not isinstance(x, bool)) for x in v
        ):
            raise ValueError(f"Result field {name!r} must be a list of integers")

    for name in ("text", "method", "model_name", "hfattr_version"):
        if kwargs.get(name) is not None and not isinstance(kwargs[name], str):
            raise ValueError(f"Result field {name!r} must be a string")
    if not isinstance(kwargs.get("tokens"), list) or not all(isinstance(t, str) for t in kwargs["tokens"]):
        raise ValueError("Result field 'tokens' must be a list of strings")
    ints("token_ids")
    ints("word_ids", allow_none=True)

    def number(x: Any) -> bool:
        return isinstance(x, (int, float)) and not isinstance(x, bool)

    if not isinstance(kwargs.get("scores"), torch.Tensor) or not kwargs["scores"].is_floating_point():
        raise ValueError("Result field 'scores' must be a stored floating-point tensor")
    sm = kwargs.get("special_mask")
    if sm is not None and (not isinstance(sm, list) or not all(isinstance(b, bool) for b in sm)):
        raise ValueError("Result field 'special_mask' must be a list of booleans (true/false)")
    offs = kwargs.get("offsets")
    if offs is not None and (
        not isinstance(offs, list)
        or not all(
            isinstance(o, list) and len(o) == 2 and all(isinstance(v, int) and not isinstance(v, bool) for v in o)
            for o in offs
        )
    ):
        raise ValueError("Result field 'offsets' must be a list of [start, end] integer pairs")
    rows = kwargs.get("rows")
    if rows is not None and (not isinstance(rows, list) or not all(isinstance(r, str) for r in rows)):
        raise ValueError("Result field 'rows' must be a list of strings")
    for name in ("target", "options", "extras"):
        if name in kwargs and not isinstance(kwargs[name], dict):
            raise ValueError(f"Result field {name!r} must be a JSON object (dict)")
    prob = kwargs.get("probability")
    if prob is not None and not number(prob) and not (isinstance(prob, list) and all(number(p) for p in prob)):
        raise ValueError("Result field 'probability' must be a number or a list of numbers")
    delta = kwargs.get("delta")
    if delta is not None and not number(delta) and not isinstance(delta, torch.Tensor):
        raise ValueError("Result field 'delta' must be a number or a stored tensor")
