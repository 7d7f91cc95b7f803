"""Preparing work ahead in background threads, handing results back in order.

`ordered_prefetch(make, count)` calls `make(0)`, `make(1)`, ... `make(count - 1)` on a small
pool of threads, keeps a bounded number of them in flight, and yields the results in index
order. NumPy (and CuPy's copies) release the GIL while they move data, so the next batches
are gathered while the caller computes on the current one.

Leaving the loop early is safe: closing the generator (which `for ... break` does, and so
does dropping the last reference to it) cancels the work not yet started and joins every
thread before `close()` returns, so no thread outlives the loop.
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

__all__ = ["ordered_prefetch"]

T = TypeVar("T")


def ordered_prefetch(
    make: Callable[[int], T], count: int, num_threads: int, ahead: int | None = None
) -> Iterator[T]:
    """Yield make(0) ... make(count - 1) in order, computed ahead on `num_threads` threads.

    At most `ahead` results (default 2 * num_threads) are in flight or waiting at any time,
    which bounds the memory held. `num_threads=0` computes each result in the caller's
    thread when it is asked for. An exception raised by `make` comes out of the `next()`
    that would have returned its result.
    """
    if num_threads < 0:
        raise ValueError(f"num_threads must be >= 0, not {num_threads}")
    if num_threads == 0:
        for index in range(count):
            yield make(index)
        return
    ahead = 2 * num_threads if ahead is None else max(1, ahead)
    executor = ThreadPoolExecutor(max_workers=num_threads, thread_name_prefix="convnet-data")
    pending: collections.deque[Future] = collections.deque()
    submitted = 0
    try:
        while submitted < count and len(pending) < ahead:
            pending.append(executor.submit(make, submitted))
            submitted += 1
        while pending:
            result = pending.popleft().result()
            if submitted < count:
                pending.append(executor.submit(make, submitted))
                submitted += 1
            yield result
    finally:
        for future in pending:
            future.cancel()
        executor.shutdown(wait=True)
