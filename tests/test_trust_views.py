"""Views never emit raw bidirectional-override characters (they could reorder what a reader sees)."""

from __future__ import annotations

import torch

from hfattr import Result
from hfattr.viz import printable

BIDI = [chr(c) for c in (*range(0x202A, 0x202F), *range(0x2066, 0x206A))]


def _result() -> Result:
    toks = ["a", "\u202egood", "x\u2066y", "\u2069"]
    return Result(
        tokens=toks,
        token_ids=[1, 2, 3, 4],
        scores=torch.tensor([0.1, -0.2, 0.3, 0.0]),
        text="a \u202egood x\u2066y \u2069",
        target={"label": "\u202dPOS", "id": 1},
        rows=None,
    )


def test_printable_escapes_each_bidi_override():
    for ch in BIDI:
        out = printable(f"a{ch}b")
        assert ch not in out and out == f"a\\u{ord(ch):04x}b"
    assert printable("plain é ü 日本") == "plain é ü 日本"


def test_html_and_terminal_have_no_raw_bidi():
    r = _result()
    for out in (r.to_html(), r.to_text(color=False), r.to_text(color=True), str(r)):
        assert not any(ch in out for ch in BIDI)
        assert "\\u202e" in out
