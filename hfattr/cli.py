"""The ``hfattr`` command line: ``hfattr explain "TEXT"``, ``hfattr methods``, ``hfattr --version``.

Subcommands live in a small registry: :func:`register_command` adds one with a function that
configures its argparse sub-parser and a function that runs it (``run(args) -> exit status``).
User errors (bad method, target, option, path, ...) print one line to stderr and exit with 2.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import sys
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

from ._version import __version__

__all__ = ["main", "register_command", "Command", "CLIError", "parse_target", "parse_options"]

EXIT_USAGE = 2


class CLIError(Exception):
    """A user error: printed as one line and exit status 2."""


@dataclass(frozen=True)
class Command:
    """A subcommand: ``configure(parser)`` adds its arguments, ``run(args)`` returns the exit status."""

    name: str
    help: str
    configure: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]
    description: str | None = None


_COMMANDS: dict[str, Command] = {}


def register_command(name: str, *, help: str, configure: Callable[[argparse.ArgumentParser], None],
                     run: Callable[[argparse.Namespace], int], description: str | None = None,
                     overwrite: bool = False) -> Command:
    """Add a subcommand ``hfattr NAME ...``."""
    if not isinstance(name, str) or not re.fullmatch(r"[a-z][a-z0-9-]*", name):
        raise ValueError(f"command name must be lower-case letters, digits and '-', got {name!r}")
    if name in _COMMANDS and not overwrite:
        raise ValueError(f"command {name!r} is already registered; pass overwrite=True to replace it")
    cmd = Command(name, help, configure, run, description)
    _COMMANDS[name] = cmd
    return cmd


# --------------------------------------------------------------------------- argument parsing helpers
_INT = re.compile(r"[+-]?\d+")


def parse_target(value: str | None) -> Any:
    """``--target``: an int string becomes an int; anything else stays a string (label or text)."""
    if value is None:
        return None
    return int(value) if _INT.fullmatch(value.strip()) else value


def parse_options(items: Sequence[str] | None) -> dict[str, Any]:
    """``--option key=value`` pairs; values are parsed as JSON when possible, else kept as strings."""
    out: dict[str, Any] = {}
    for item in items or ():
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key.isidentifier():
            raise CLIError(f"--option expects key=value with a Python-identifier key, got {item!r}")
        try:
            out[key] = json.loads(raw)
        except json.JSONDecodeError:
            out[key] = raw
    return out


@contextlib.contextmanager
def _quiet_loading() -> Iterator[None]:
    """No transformers progress bars while the model loads (restored afterwards)."""
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


def _use_color(args: argparse.Namespace) -> bool:
    if args.color is not None:
        return args.color
    return sys.stdout.isatty() and not os.environ.get("NO_COLOR")


# --------------------------------------------------------------------------- explain
def _configure_explain(p: argparse.ArgumentParser) -> None:
    p.add_argument("text", help="the text to explain")
    p.add_argument("--model", "-m", default=None,
                   help="hub name or local path (default: the embedded toy sentiment model)")
    p.add_argument("--task", default=None, help="head to load, e.g. text-classification, causal-lm "
                   "(default: from the model's config)")
    p.add_argument("--method", default="ablation", help="attribution method (see `hfattr methods`)")
    p.add_argument("--target", default=None,
                   help="what to explain: a class id or label name, or a continuation text for language "
                        "models (default: the predicted class / next token)")
    p.add_argument("--option", "-o", action="append", default=[], metavar="KEY=VALUE",
                   help="method option, value parsed as JSON when possible (repeatable), "
                        "e.g. -o perturbations_per_eval=4 -o sites='\"mlp\"'")
    p.add_argument("--html", default=None, metavar="PATH", help="also write an HTML heatmap to PATH")
    p.add_argument("--json", default=None, metavar="PATH", help="also write the Result as JSON to PATH")
    color = p.add_mutually_exclusive_group()
    color.add_argument("--color", dest="color", action="store_const", const=True, default=None,
                       help="force coloured output")
    color.add_argument("--no-color", dest="color", action="store_const", const=False,
                       help="plain output (default: colour when stdout is a terminal and NO_COLOR is unset)")
    p.add_argument("--trust-remote-code", action="store_true",
                   help="allow model repositories to run their own code (off by default)")


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
    from .viz import _printable, describe, text_table

    header = [
        f"model:       {_printable(str(result.model_name or '?'))}",
        f"method:      {_printable(str(result.method))}",
        f"target:      {_printable(_fmt_target(result.target))}",
        f"probability: {_fmt_probability(result.probability)}",
    ]
    if result.options:
        header.append("options:     " + _printable(json.dumps(result.options, sort_keys=True, default=str)))
    if color:
        header = [f"\x1b[1m{line[:13]}\x1b[0m{line[13:]}" for line in header]
    table = text_table(result, color=color, width=width).split("\n")
    if table and table[0] == describe(result):  # the table's own one-line summary repeats the header
        table = table[1:]
    return "\n".join(header + [""] + table)


def _run_explain(args: argparse.Namespace) -> int:
    from .explainer import get_method
    from .pipeline import pipeline
    from .viz import save_html

    get_method(args.method)  # fail before loading a model
    options = parse_options(args.option)
    for reserved in ("target", "method"):
        if reserved in options:
            raise CLIError(f"--option {reserved}=... is not allowed; use --{reserved}")
    if "batch_size" in options:
        raise CLIError("--option batch_size=... is not allowed; explain runs one text")
    if args.model is not None and not args.model.strip():
        raise CLIError("--model is empty; give a hub name or a local path")
    with _quiet_loading():
        pipe = pipeline(args.task, args.model, method=args.method, trust_remote_code=args.trust_remote_code,
                        target=parse_target(args.target), **options)
    result = pipe(args.text)
    print(render(result, color=_use_color(args)))
    if args.json:
        result.save(args.json)
        print(f"wrote {args.json}", file=sys.stderr)
    if args.html:
        save_html(result, args.html)
        print(f"wrote {args.html}", file=sys.stderr)
    return 0


# --------------------------------------------------------------------------- methods
def _configure_methods(p: argparse.ArgumentParser) -> None:
    pass


def _run_methods(args: argparse.Namespace) -> int:
    from .explainer import get_method, list_methods

    names = list_methods()
    w = max(len(n) for n in names) if names else 0
    for name in names:
        spec = get_method(name)
        grad = "  [gradients]" if spec.needs_grad else ""
        print(f"{name:<{w}}  {spec.description or '(no description)'}{grad}")
    return 0


register_command("explain", help="attribute a model's output on one text", configure=_configure_explain,
                 run=_run_explain,
                 description="Explain a model's output on TEXT and print a token table "
                             "(optionally also HTML and JSON).")
register_command("methods", help="list the attribution methods", configure=_configure_methods,
                 run=_run_methods)


# Modules that register further commands when imported (each calls ``register_command``).
COMMAND_MODULES = ("hfattr.dataset_cli", "hfattr.evaluate_cli")


def _load_command_modules() -> None:
    import importlib

    for name in COMMAND_MODULES:
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as err:
            if err.name != name:  # the module exists but something it needs is missing
                raise


# --------------------------------------------------------------------------- entry point
def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with one sub-parser per registered command."""
    _load_command_modules()
    parser = argparse.ArgumentParser(prog="hfattr",
                                     description="Feature attribution for Hugging Face transformers models.")
    parser.add_argument("--version", action="version", version=f"hfattr {__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for cmd in _COMMANDS.values():
        sp = sub.add_parser(cmd.name, help=cmd.help, description=cmd.description or cmd.help)
        cmd.configure(sp)
        sp.set_defaults(_run=cmd.run)
    return parser


def _one_line(err: BaseException) -> str:
    msg = str(err).strip() or type(err).__name__
    if isinstance(err, KeyError) and len(err.args) == 1:
        msg = str(err.args[0])
    return " ".join(msg.split())


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (0 ok, 2 user error, 1 internal error)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as stop:  # --help, --version, argparse usage errors
        return stop.code if isinstance(stop.code, int) else (0 if stop.code is None else EXIT_USAGE)
    if getattr(args, "_run", None) is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        return int(args._run(args) or 0)
    except KeyboardInterrupt:
        print("hfattr: interrupted", file=sys.stderr)
        return 130
    except (CLIError, ValueError, TypeError, KeyError, OSError, ImportError) as err:
        if args.debug:
            raise
        print(f"hfattr: error: {_one_line(err)}", file=sys.stderr)
        return EXIT_USAGE
    except Exception as err:  # an internal failure: still one line unless --debug
        if args.debug:
            raise
        print(f"hfattr: internal error: {type(err).__name__}: {_one_line(err)} (rerun with --debug for "
              "the traceback)", file=sys.stderr)
        return 1
