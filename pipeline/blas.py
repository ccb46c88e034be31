"""numpy's BLAS (OpenBLAS in numpy's wheels) and its thread count.

The query projection (``pipeline.projection.project_rows``) multiplies a few dozen hidden states by
the whole vocabulary on one thread. torch's CPU builds send that product to MKL, which on this AMD
CPU takes 1.35x OpenBLAS's time for it (``bench/results/query_kernels.json``: 10.2 ms against 7.5
for 23 splade-tiny rows).
OpenBLAS keeps its own thread pool, sized to the machine; the query path runs it on one thread,
as it runs torch, so that concurrent requests do not each start a pool and a query's weights do not
depend on how many threads were free. threadpoolctl finds the library whatever its symbol names.
"""

from __future__ import annotations

import contextlib
import functools
import threading
from typing import Callable, Iterator

_LOCK = threading.Lock()


@functools.cache
def _controller():
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController().select(user_api="blas")


def threads() -> int:
    """The most threads any loaded BLAS library would use now (1 when none is found)."""
    return max((lib["num_threads"] for lib in _controller().info()), default=1)


def set_threads(count: int) -> None:
    """Set every loaded BLAS library's thread count (process-wide)."""
    with _LOCK:
        _controller().limit(limits=count)


@contextlib.contextmanager
def one_thread_of(get: Callable[[], int], set_: Callable[[int], None]) -> Iterator[None]:
    """A process-wide thread count (read by ``get``, written by ``set_``) at one meanwhile, then
    back; a no-op when it already is one (the service sets its counts once at start, so request
    threads never change a count under each other). For BLAS here and torch in the encoder."""
    previous = get()
    if previous == 1:
        yield
        return
    set_(1)
    try:
        yield
    finally:
        set_(previous)


def one_thread() -> contextlib.AbstractContextManager[None]:
    """BLAS on one thread meanwhile (``one_thread_of``)."""
    return one_thread_of(threads, set_threads)
