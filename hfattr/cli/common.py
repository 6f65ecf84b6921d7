"""What every command shares: the command registry, the flags declared once, and argument parsing.

:func:`register_command` adds a subcommand with a function that configures its argparse
sub-parser and one that runs it (``run(args) -> exit status``); it returns a handle whose
``remove()`` unregisters it. User errors raise :class:`CLIError` (one line, exit status 2).
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

__all__ = [
    "register_command",
    "commands",
    "Command",
    "CLIError",
    "parse_target",
    "parse_options",
    "quiet_loading",
    "elapsed",
    "use_color",
    "positive_int",
    "add_model_flags",
    "add_method_flags",
    "check_model_flag",
    "EXIT_USAGE",
    "encode_options",
    "add_generation_flags",
    "generation_options",
]

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

    def remove(self) -> None:
        """Unregister this command (if it is still the registered one)."""
        if _COMMANDS.get(self.name) is self:
            del _COMMANDS[self.name]


_COMMANDS: dict[str, Command] = {}


def register_command(
    name: str,
    *,
    help: str,
    configure: Callable[[argparse.ArgumentParser], None],
    run: Callable[[argparse.Namespace], int],
    description: str | None = None,
    overwrite: bool = False,
) -> Command:
    """Add a subcommand ``hfattr NAME ...``."""
    if not isinstance(name, str) or not re.fullmatch(r"[a-z][a-z0-9-]*", name):
        raise ValueError(f"command name must be lower-case letters, digits and '-', got {name!r}")
    if name in _COMMANDS and not overwrite:
        raise ValueError(f"command {name!r} is already registered; pass overwrite=True to replace it")
    cmd = Command(name, help, configure, run, description)
    _COMMANDS[name] = cmd
    return cmd


def commands() -> list[Command]:
    """The registered commands, in registration order."""
    return list(_COMMANDS.values())


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
def quiet_loading(verbose: bool = False) -> Iterator[None]:
    """No transformers progress bars, load reports or warnings while the model loads (unless ``verbose``).

    Errors still show; everything is restored afterwards.
    """
    if verbose:
        yield
        return
    import warnings

    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    level = hf_logging.get_verbosity()
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        hf_logging.set_verbosity(level)
        if was_enabled:
            hf_logging.enable_progress_bar()


@contextlib.contextmanager
def elapsed(what: str, *, after: float = 2.0, stream=None) -> Iterator[None]:
    """On a terminal, show ``what ... N s`` on one line while the block runs longer than ``after`` seconds."""
    import threading
    import time

    out = sys.stderr if stream is None else stream
    if not getattr(out, "isatty", lambda: False)():
        yield
        return
    done = threading.Event()
    start = time.monotonic()
    shown = []

    def tick() -> None:
        if done.wait(after):
            return
        while not done.is_set():
            out.write(f"\r{what} \u2026 {time.monotonic() - start:.0f} s")
            out.flush()
            shown.append(True)
            done.wait(0.5)

    thread = threading.Thread(target=tick, daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()
        if shown:
            out.write("\r\x1b[K")
            out.flush()


def use_color(args: argparse.Namespace) -> bool:
    if args.color is not None:
        return args.color
    return sys.stdout.isatty() and not os.environ.get("NO_COLOR")


def positive_int(value: str) -> int:
    """argparse type: an integer >= 1."""
    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value!r}")
    return n


def add_model_flags(
    p: argparse.ArgumentParser,
    *,
    model_help: str = "hub name or local path (default: the embedded toy sentiment model)",
    task_help: str = "head to load, e.g. text-classification, causal-lm (default: from the model's config)",
) -> None:
    """``--model``, ``--task`` and ``--trust-remote-code``: how every command loads a model."""
    p.add_argument("--model", "-m", default=None, help=model_help)
    p.add_argument("--task", default=None, help=task_help)
    p.add_argument(
        "--trust-remote-code",
        action="store_true",
        help="allow model repositories to run their own code (off by default)",
    )


def add_method_flags(p: argparse.ArgumentParser) -> None:
    """``--method`` and repeatable ``--option KEY=VALUE``: which method and its options."""
    p.add_argument("--method", default="ablation", help="attribution method (see `hfattr methods`)")
    p.add_argument(
        "--option",
        "-o",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="method option, value parsed as JSON when possible (repeatable), "
        "e.g. -o perturbations_per_eval=4 -o sites='\"mlp\"'",
    )
    p.add_argument(
        "--truncation",
        action="store_true",
        help="cut texts longer than the limit (--max-length, else the model's) instead of failing",
    )
    p.add_argument(
        "--max-length",
        type=positive_int,
        default=None,
        metavar="N",
        help="token limit per text (with --truncation: texts are cut to N tokens)",
    )


def encode_options(args: argparse.Namespace, options: dict) -> dict:
    """``options`` plus ``--truncation`` / ``--max-length`` (given twice is an error)."""
    out = dict(options)
    for key, value in (
        ("truncation", True if getattr(args, "truncation", False) else None),
        ("max_length", getattr(args, "max_length", None)),
    ):
        if value is None:
            continue
        if key in out:
            raise CLIError(f"{key} given both as --option and as --{key.replace('_', '-')}; give it once")
        out[key] = value
    return out


def add_generation_flags(p: argparse.ArgumentParser) -> None:
    """``--generate N`` and ``--contrast TEXT`` (language models)."""
    p.add_argument(
        "--generate",
        type=positive_int,
        default=None,
        metavar="N",
        help="language models: generate up to N tokens (greedy unless the model's generation "
        "config says otherwise), then explain every generated token (one row each)",
    )
    p.add_argument(
        "--contrast",
        default=None,
        metavar="TEXT",
        help="explain target minus contrast per token: TEXT has one token per target token "
        "(score 'contrast'; -o score='\"contrast_prob\"' for the probability difference)",
    )


def generation_options(args: argparse.Namespace, options: dict) -> dict:
    """The explain keywords for ``--generate`` / ``--contrast`` (refused when also given as ``--option``)."""
    out: dict[str, Any] = {}
    for name in ("generate", "contrast"):
        value = getattr(args, name, None)
        if value is None:
            continue
        if name in options:
            raise CLIError(f"--{name} and --option {name}=... were both given; use --{name}")
        out[name] = value
    if out.get("generate") is not None and getattr(args, "target", None) is not None:
        raise CLIError("give --target (a continuation to explain) or --generate N, not both")
    return out


def check_model_flag(model: str | None) -> None:
    """Refuse an empty ``--model``."""
    if model is not None and not model.strip():
        raise CLIError("--model is empty; give a hub name or a local path")
