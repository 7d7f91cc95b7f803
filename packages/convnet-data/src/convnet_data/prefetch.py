"""Preparing work ahead in background threads, handing results back in order.

`ordered_prefetch(make, count)` calls `make(0)`, `make(1)`, ... `make(count - 1)` on a small
pool of threads, keeps a bounded number of them in flight, and yields the results in index
order. NumPy (and CuPy's copies) release the GIL while they move data, so the next batches
are gathered while the caller computes on the current one.

The threads start at the first `next()` and stop once the iterator is exhausted, once an
exception from `make` has come out of it, or once it is closed: `close()`, or the end of a
`with` block, cancels the work not yet started and joins every thread before it returns.
An iterator dropped unfinished is closed when nothing references it any more, so a bare
`for x in ordered_prefetch(...): break` joins the threads as it leaves the loop; but after

    it = ordered_prefetch(...)
    for x in it:
        break

the threads stay (idle, holding the results made ahead) until `it.close()` or `del it`.
Use `with` (or `close()`) to stop them at a known point.
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Generator, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Generic, TypeVar

from convnet_core import checks

__all__ = ["PrefetchIterator", "ordered_prefetch"]

T = TypeVar("T")


class PrefetchIterator(Iterator[T], Generic[T]):
    """The iterator `ordered_prefetch` returns: its results in order, and `close()`.

    Also a context manager: `with ds.batches(64) as batches: for x, y in batches: ...`
    closes it, joining the threads, when the block is left (by a break, a return or an
    exception as well).
    """

    def __init__(self, results: Generator[T, None, None]) -> None:
        self._results = results

    def __iter__(self) -> PrefetchIterator[T]:
        return self

    def __next__(self) -> T:
        return next(self._results)

    def close(self) -> None:
        """Cancel the work not yet started and join every thread (nothing if already done)."""
        self._results.close()

    def __enter__(self) -> PrefetchIterator[T]:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def ordered_prefetch(
    make: Callable[[int], Any],
    count: int,
    num_threads: int,
    ahead: int | None = None,
    *,
    finish: Callable[[Any], T] | None = None,
) -> PrefetchIterator[T]:
    """Yield make(0) ... make(count - 1) in order, computed ahead on `num_threads` threads;
    with `finish`, yield finish(make(i)), `finish` running in the caller's thread.

    At most `ahead` results (default 2 * num_threads) are in flight or waiting at any time,
    which bounds the memory held. `num_threads=0` computes each result in the caller's
    thread when it is asked for. An exception raised by `make` or `finish` comes out of
    the `next()` that would have returned its result. `num_threads` is checked here, before
    any thread starts; the threads start at the first `next()`.

    `finish` is for work that belongs to the caller's thread: on a GPU, the kernels that
    must queue on the caller's stream behind its own (see `Dataset.batches`).
    """
    num_threads = checks.count(num_threads, "num_threads", minimum=0)
    results = _prefetch(make, count, num_threads, ahead)
    if finish is not None:
        results = _finished(results, finish)
    return PrefetchIterator(results)


def _finished(results: Generator[Any, None, None], finish: Callable[[Any], T]):
    """`finish` applied to each of `results` as it is asked for; closing this generator
    closes `results` (its `finally` joins the threads)."""
    try:
        for result in results:
            yield finish(result)
    finally:
        results.close()


def _prefetch(
    make: Callable[[int], T], count: int, num_threads: int, ahead: int | None
) -> Generator[T, None, None]:
    """The generator behind `ordered_prefetch`; its `finally` joins the threads."""
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
