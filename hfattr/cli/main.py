"""The ``hfattr`` entry point: one sub-parser per registered command; errors as one line, exit 2."""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from .._version import __version__
from .common import EXIT_USAGE, CLIError, commands

__all__ = ["main", "build_parser", "COMMAND_MODULES"]


# Modules that register further commands when imported (each calls ``register_command``).
COMMAND_MODULES = (
    "hfattr.cli.explain",
    "hfattr.cli.methods",
    "hfattr.cli.dataset",
    "hfattr.cli.evaluate",
    "hfattr.cli.report",
)


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
    parser = argparse.ArgumentParser(
        prog="hfattr", description="Feature attribution for Hugging Face transformers models."
    )
    parser.add_argument("--version", action="version", version=f"hfattr {__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    parser.add_argument(
        "--verbose", "-v", action="store_true", help="show what libraries report (transformers load reports, warnings)"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for cmd in commands():
        sp = sub.add_parser(cmd.name, help=cmd.help, description=cmd.description or cmd.help)
        cmd.configure(sp)
        try:  # also after the command: `hfattr explain TEXT --verbose`
            sp.add_argument(
                "--verbose",
                "-v",
                action="store_true",
                default=argparse.SUPPRESS,
                help="show what libraries report (transformers load reports, warnings)",
            )
        except argparse.ArgumentError:
            pass  # the command defines its own --verbose
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
        print(
            f"hfattr: internal error: {type(err).__name__}: {_one_line(err)} (rerun with --debug for the traceback)",
            file=sys.stderr,
        )
        return 1
