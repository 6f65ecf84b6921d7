"""A progress bar that is a no-op unless asked for (tqdm when installed, else plain prints)."""

from __future__ import annotations

import contextlib
import sys
from typing import Any, Iterator


class _Silent:
    def update(self, n: int = 1) -> None:
        pass


class _Plain:
    def __init__(self, total: int, desc: str) -> None:
        self.total, self.desc, self.done = total, desc, 0

    def update(self, n: int = 1) -> None:
        self.done += n
        print(f"\r{self.desc}: {self.done}/{self.total}", end="", file=sys.stderr, flush=True)

    def close(self) -> None:
        print(file=sys.stderr)


@contextlib.contextmanager
def progress_bar(total: int, enabled: bool, desc: str) -> Iterator[Any]:
    """Yield an object with ``update(n=1)``; shows a tqdm bar when ``enabled``."""
    if not enabled:
        yield _Silent()
        return
    try:
        from tqdm.auto import tqdm
    except ImportError:  # pragma: no cover - tqdm is a dependency
        bar = _Plain(total, desc)
        try:
            yield bar
        finally:
            bar.close()
        return
    bar = tqdm(total=total, desc=desc)
    try:
        yield bar
    finally:
        bar.close()
