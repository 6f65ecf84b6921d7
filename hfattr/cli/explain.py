"""``hfattr explain "TEXT"``: attribute a model's output on one text and print a token table."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from .common import (
    CLIError,
    add_generation_flags,
    add_method_flags,
    add_model_flags,
    check_model_flag,
    elapsed,
    encode_options,
    generation_options,
    parse_options,
    parse_target,
    quiet_loading,
    register_command,
    use_color,
)

__all__ = ["render"]


def _configure_explain(p: argparse.ArgumentParser) -> None:
    p.add_argument("text", help="the text to explain")
    add_model_flags(p)
    add_method_flags(p)
    p.add_argument(
        "--target",
        default=None,
        help="what to explain: a class id or label name, or a continuation text for language "
        "models (default: the predicted class / next token)",
    )
    add_generation_flags(p)
    p.add_argument("--html", default=None, metavar="PATH", help="also write an HTML heatmap to PATH")
    p.add_argument("--json", default=None, metavar="PATH", help="also write the Result as JSON to PATH")
    color = p.add_mutually_exclusive_group()
    color.add_argument(
        "--color", dest="color", action="store_const", const=True, default=None, help="force coloured output"
    )
    color.add_argument(
        "--no-color",
        dest="color",
        action="store_const",
        const=False,
        help="plain output (default: colour when stdout is a terminal and NO_COLOR is unset)",
    )


def _fmt_probability(p: Any) -> str:
    if isinstance(p, (int, float)):
        return f"{p:.4f}"
    if isinstance(p, (list, tuple)):
        return "[" + ", ".join(f"{float(x):.4f}" for x in p) + "]"
    return "n/a"


def _fmt_target(target: dict) -> str:
    if not target:
        return "n/a"
    if target.get("kind") == "neuron":
        return f"neuron {target.get('neuron')} of {target.get('site')} (position {target.get('position')})"
    if "label" in target:
        return f"{target['label']}" + (f" (id {target['id']})" if "id" in target else "")
    if "tokens" in target:
        return " ".join(repr(str(t)) for t in target["tokens"])
    return json.dumps(target, default=str)


def render(result: Any, *, color: bool, width: int | None = None) -> str:
    """Header (model, method, target, probability) and the terminal table of ``result``."""
    from ..viz import describe, printable, text_table

    header = [
        f"model:       {printable(str(result.model_name or '?'))}",
        f"method:      {printable(str(result.method))}",
        f"target:      {printable(_fmt_target(result.target))}",
        f"probability: {_fmt_probability(result.probability)}",
    ]
    if result.options:
        header.append("options:     " + printable(json.dumps(result.options, sort_keys=True, default=str)))
    if color:
        header = [f"\x1b[1m{line[:13]}\x1b[0m{line[13:]}" for line in header]
    table = text_table(result, color=color, width=width).split("\n")
    if table and table[0] == describe(result):  # the table's own one-line summary repeats the header
        table = table[1:]
    return "\n".join(header + [""] + table)


def _run_explain(args: argparse.Namespace) -> int:
    from ..methods import get_method
    from ..pipeline import pipeline
    from ..viz import save_html

    get_method(args.method)  # fail before loading a model
    options = encode_options(args, parse_options(args.option))
    for reserved in ("target", "method"):
        if reserved in options:
            raise CLIError(f"--option {reserved}=... is not allowed; use --{reserved}")
    if "batch_size" in options:
        raise CLIError("--option batch_size=... is not allowed; explain runs one text")
    options.update(generation_options(args, options))
    check_model_flag(args.model)
    with elapsed("loading the model"), quiet_loading(args.verbose):
        pipe = pipeline(
            args.task,
            args.model,
            method=args.method,
            trust_remote_code=args.trust_remote_code,
            target=parse_target(args.target),
            **options,
        )
    with elapsed(f"explaining with {args.method}"):
        result = pipe(args.text)
    print(render(result, color=use_color(args)))
    if args.json:
        result.save(args.json)
        print(f"wrote {args.json}", file=sys.stderr)
    if args.html:
        save_html(result, args.html)
        print(f"wrote {args.html}", file=sys.stderr)
    return 0


register_command(
    "explain",
    help="attribute a model's output on one text",
    configure=_configure_explain,
    run=_run_explain,
    description="Explain a model's output on TEXT and print a token table (optionally also HTML and JSON).",
)
