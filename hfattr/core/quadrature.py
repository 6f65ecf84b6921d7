"""Nested Clenshaw-Curtis rules on [0, 1] for adaptive SIG.

The rule with ``n = 2**k + 1`` points has nodes ``(1 - cos(pi j / (n - 1))) / 2`` for
``j = 0 .. n - 1``; every node of the rule with ``n`` points is a node of the rule with ``2n - 1``
points, so refining from one level to the next evaluates only the ``n - 1`` new nodes. The rule
integrates polynomials of degree ``n - 1`` exactly (``n`` for odd ``n``) and converges like
Gauss-Legendre for integrands that are analytic near [0, 1]. Both end points are nodes: at
``alpha = 1`` the SIG path is the input itself for every position (one gradient serves all of
them) and at ``alpha = 0`` the forward value is the one the completeness check needs.
"""

from __future__ import annotations

import math
from functools import lru_cache

__all__ = ["clenshaw_curtis", "cc_levels", "cc_node_index"]


@lru_cache(maxsize=None)
def clenshaw_curtis(n: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """``(weights, alphas)`` of the ``n``-point Clenshaw-Curtis rule on [0, 1], alphas ascending."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 2:
        raise ValueError(f"a Clenshaw-Curtis rule needs an int n >= 2 points, got {n!r}")
    N = n - 1
    alphas, weights = [], []
    for j in range(n):
        alphas.append((1 - math.cos(math.pi * j / N)) / 2)
        s = 0.0
        for k in range(1, N // 2 + 1):
            b = 1.0 if 2 * k == N else 2.0
            s += b / (4 * k * k - 1) * math.cos(2 * math.pi * k * j / N)
        c = 1.0 if j in (0, N) else 2.0
        weights.append(c / N * (1 - s) / 2)
    alphas[0], alphas[-1] = 0.0, 1.0
    return tuple(weights), tuple(alphas)


def cc_levels(start: int, stop: int) -> list[int]:
    """The nested sizes ``2**k + 1`` from the smallest >= ``start`` to the largest <= ``stop``
    (at least one level: the first)."""
    n = 3
    while n < start:
        n = 2 * n - 1
    levels = [n]
    while 2 * n - 1 <= stop:
        n = 2 * n - 1
        levels.append(n)
    return levels


def cc_node_index(n: int, finest: int) -> list[int]:
    """Index of each node of the ``n``-point rule in the ``finest``-point rule (both ``2**k + 1``)."""
    step = (finest - 1) // (n - 1)
    if step * (n - 1) != finest - 1:
        raise ValueError(f"{n} points are not nested in {finest} points")
    return [j * step for j in range(n)]
