"""Views of :class:`hfattr.result.Result` (HTML, matplotlib, terminal): the names of :mod:`hfattr.views`.

``printable`` lives here (the views import it); the other names are loaded from
:mod:`hfattr.views` on first use.
"""

from __future__ import annotations

from typing import Any

__all__ = ["html", "save_html", "plot", "text_table", "score_color", "describe", "printable", "show", "BIDI"]

BIDI = {c: f"\\u{c:04x}" for c in (*range(0x202A, 0x202F), *range(0x2066, 0x206A))}  # str.translate table
"""Bidirectional-override characters and their escapes (for text shown whole, e.g. in a ``<pre>``)."""


def printable(token: str) -> str:
    """Show control characters (newlines, escapes, bidirectional overrides ...) as backslash escapes."""
    out = []
    for ch in token:
        code = ord(ch)
        if code < 32 or 0x7F <= code < 0xA0 or 0x202A <= code <= 0x202E or 0x2066 <= code <= 0x2069:
            out.append(ch.encode("unicode_escape").decode("ascii"))
        else:
            out.append(ch)
    return "".join(out)


def __getattr__(name: str) -> Any:
    if name in __all__ and name not in globals():
        from . import views

        return getattr(views, name)
    raise AttributeError(f"module 'hfattr.viz' has no attribute {name!r}")
