"""``hfattr methods``: list the registered attribution methods."""

from __future__ import annotations

import argparse

from .common import register_command

__all__: list[str] = []


def _configure_methods(p: argparse.ArgumentParser) -> None:
    pass


def _run_methods(args: argparse.Namespace) -> int:
    from ..methods import get_method, list_methods

    names = list_methods()
    w = max(len(n) for n in names) if names else 0
    for name in names:
        spec = get_method(name)
        grad = "  [gradients]" if spec.needs_grad else ""
        print(f"{name:<{w}}  {spec.description or '(no description)'}{grad}")
    return 0


register_command("methods", help="list the attribution methods", configure=_configure_methods, run=_run_methods)
