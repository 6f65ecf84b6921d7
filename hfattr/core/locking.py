"""Per-model re-entrant locks: one hfattr call at a time touches a model's state.

hfattr changes state that every caller of a model shares: hooks, ``requires_grad`` flags, the
training flag and (for LRP) the config's attention implementation. :func:`model_lock` serialises
such calls. A lock is kept per object (weakly, so it dies with the object) for the model, and for
every ``config`` object reachable from its modules, because two models built from one config share
the attention switch. Locks are taken in one global order, so two calls never wait on each other in
a cycle; they are re-entrant, so a call may run another one on the same model inside itself.
"""

from __future__ import annotations

import contextlib
import threading
import weakref
from typing import Any, Iterator

from torch import nn

__all__ = ["model_lock", "lock_keys", "owner_module"]

_GUARD = threading.RLock()  # re-entrant: a finalizer may run (garbage collection) while it is held
_LOCKS: dict[int, threading.RLock] = {}  # by id(); an entry is dropped when its object dies


def _forget(key: int) -> None:
    with _GUARD:
        _LOCKS.pop(key, None)


def _lock_of(obj: Any) -> threading.RLock:
    """The lock of ``obj`` (configs are unhashable, so locks are kept by id, dropped with the object)."""
    with _GUARD:
        key = id(obj)
        lock = _LOCKS.get(key)
        if lock is None:
            lock = _LOCKS[key] = threading.RLock()
            try:
                weakref.finalize(obj, _forget, key)
            except TypeError:  # not weakly referenceable: the lock stays for the process
                pass
        return lock


def _configs(obj: Any) -> list[Any]:
    found: dict[int, Any] = {}
    stack = [getattr(obj, "config", None)]
    if isinstance(obj, nn.Module):
        stack += [getattr(m, "config", None) for m in obj.modules()]
    while stack:
        cfg = stack.pop()
        if cfg is None or id(cfg) in found or isinstance(cfg, (str, int, float, bool, dict, list, tuple)):
            continue
        found[id(cfg)] = cfg
        for key in getattr(cfg, "sub_configs", None) or {}:
            stack.append(getattr(cfg, key, None))
    return list(found.values())


def lock_keys(*objs: Any) -> list[Any]:
    """The objects whose locks guard ``objs``: each one and every config reachable from it."""
    keys: dict[int, Any] = {}
    for obj in objs:
        if obj is None:
            continue
        keys.setdefault(id(obj), obj)
        for cfg in _configs(obj):
            keys.setdefault(id(cfg), cfg)
    return list(keys.values())


@contextlib.contextmanager
def model_lock(*objs: Any) -> Iterator[None]:
    """Hold the locks of ``objs`` (models, modules, configs) for the block."""
    keys = lock_keys(*objs)
    locks = sorted({id(lk): lk for lk in (_lock_of(k) for k in keys)}.values(), key=id)
    with contextlib.ExitStack() as stack:
        for lk in locks:
            lk.acquire()
            stack.callback(lk.release)
        yield


def owner_module(forward_func: Any) -> nn.Module | None:
    """The module a forward function belongs to (itself, or a bound method's object), if any."""
    if isinstance(forward_func, nn.Module):
        return forward_func
    owner = getattr(forward_func, "__self__", None)
    return owner if isinstance(owner, nn.Module) else None
