"""Reusing compiled programs: one jitted function per (objective, optimizer, options).

`jax.jit` caches compiled programs per function object, and every factory call builds a new closure, so
calling `make_train_step(obj, optimizer)` (or `fit`) twice would compile twice. `cached_jit` keeps the
jitted function of each distinct hashable key (the objective and optimizer objects themselves, so only
reusing the same objects shares programs); unhashable keys are simply not cached.
"""

from __future__ import annotations

import functools
from typing import Callable

MAX_ENTRIES = 32


@functools.lru_cache(maxsize=MAX_ENTRIES)
def _cached(builder: Callable, key: tuple):
    return builder(*key)


def cached_jit(builder: Callable, *key):
    """`builder(*key)` (a jitted function), shared by every call with an equal, hashable `key`."""
    try:
        hash(key)
    except TypeError:
        return builder(*key)
    return _cached(builder, key)
