"""Memoized parts of a memory estimate: what the points of a sweep, and the probes of the limits
searches, have in common.

A sweep over batch or seq and the max-seq and max-batch searches call memory_breakdown with
settings that differ in those fields only, while much of an estimate (the parameters a GPU holds,
its model states, the tensors a block saves, an engine's rows besides the KV cache) derives from
the model, the layout and the other settings alone. ``@ignoring("seq", "batch")`` memoizes such a
part on the model, every other settings field and the part's own further arguments;
tests/test_memo.py checks that no part reads a field it ignores. A memoized result is shared by
every call that hits it: read-only.
"""

from __future__ import annotations

import functools
import operator
from dataclasses import fields
from typing import Callable, TypeVar

from .settings import MemorySettings

T = TypeVar("T")
SIZE = 512  # results kept per part: far more than one command's models x GPUs x stages
PARTS: list = []  # (memoized part, the fields it ignores) for tests/test_memo.py


def ignoring(*free: str) -> Callable[[Callable[..., T]], Callable[..., T]]:
    """Memoize ``part(m, s, *args)``, a pure function that reads no field of ``s`` named in ``free``."""
    rest = operator.attrgetter(*(f.name for f in fields(MemorySettings) if f.name not in free))

    def decorate(part: Callable[..., T]) -> Callable[..., T]:
        cache: dict = {}

        @functools.wraps(part)
        def memoized(m, s: MemorySettings, *args) -> T:
            key = (m, rest(s), args)
            try:
                return cache[key]
            except KeyError:
                pass
            except TypeError:  # an unhashable field (a spec built by hand with a list): computed as it is
                return part(m, s, *args)
            if len(cache) >= SIZE:
                cache.clear()
            cache[key] = value = part(m, s, *args)
            return value

        memoized.cache_clear, memoized.cache_size = cache.clear, cache.__len__
        PARTS.append((memoized, free))
        return memoized

    return decorate
