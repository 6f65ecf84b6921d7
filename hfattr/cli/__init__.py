"""The ``hfattr`` command line: ``hfattr explain``, ``methods``, ``attribute-dataset``, ``evaluate`` ...

One module of shared flags and parsing (:mod:`.common`), one module per command, and the entry
point (:mod:`.main`). Commands register themselves when their module is imported.
"""

from .common import CLIError, Command, parse_options, parse_target, register_command
from .main import build_parser, main

__all__ = ["main", "build_parser", "register_command", "Command", "CLIError", "parse_target", "parse_options", "render"]


def __getattr__(name: str):  # ``hfattr.cli.render`` without importing the explain command eagerly
    if name == "render":
        from .explain import render

        return render
    raise AttributeError(name)
