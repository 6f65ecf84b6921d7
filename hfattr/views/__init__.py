"""Views of :class:`hfattr.result.Result` and of dataset runs, in one colour language.

:mod:`.colors` (the diverging scale, its range and legend), :mod:`.html` (heatmap, grid,
generation matrix), :mod:`.terminal`, :mod:`.plots` (matplotlib) and :mod:`.report` (the
dataset-run report). Modules import only the standard library until a view needs more.
"""

from .colors import legend_html, legend_text, robust_scale, score_color
from .common import describe, is_generation
from .html import html, save_html
from .terminal import text_table


def plot(result, **options):
    """See :func:`hfattr.views.plots.plot` (matplotlib is imported on call)."""
    from . import plots

    return plots.plot(result, **options)


def show(result, *, color=None, width=None, file=None) -> None:
    """The HTML view in a notebook (IPython display), the terminal view elsewhere."""
    import os
    import sys

    shell = None
    if "IPython" in sys.modules:
        try:
            shell = sys.modules["IPython"].get_ipython()
        except Exception:  # pragma: no cover - a broken IPython install
            shell = None
    if shell is not None and hasattr(shell, "kernel"):
        from IPython.display import HTML, display

        display(HTML(html(result)))
        return
    out = sys.stdout if file is None else file
    if color is None:
        color = bool(getattr(out, "isatty", lambda: False)()) and not os.environ.get("NO_COLOR")
    print(text_table(result, color=color, width=width), file=out)


__all__ = [
    "html",
    "save_html",
    "text_table",
    "plot",
    "show",
    "describe",
    "score_color",
    "robust_scale",
    "legend_html",
    "legend_text",
    "is_generation",
]
