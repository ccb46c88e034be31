"""numpy's BLAS (OpenBLAS in numpy's wheels) and its thread count.

The query projection (``pipeline.projection.project_rows``) multiplies a few dozen hidden states by
the whole vocabulary on one thread. torch's CPU builds send that product to MKL, which on this AMD
CPU takes 1.45x OpenBLAS's time for it (``bench/results/query_kernels.json``: 9.9 ms against 6.8
for 23 splade-tiny rows).
OpenBLAS keeps its own thread pool, sized to the machine; the query path runs it on one thread,
as it runs torch, so that concurrent requests do not each start a pool and a query's weights do not
depend on how many threads were free. threadpoolctl finds the library whatever its symbol names.
"""

from __future__ import annotations

import contextlib
import functools
import threading
from typing import Iterator

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
def one_thread() -> Iterator[None]:
    """BLAS on one thread meanwhile; a no-op when it already runs on one (the service sets that once
    at start, so request threads never change the count under each other)."""
    previous = threads()
    if previous == 1:
        yield
        return
    set_threads(1)
    try:
        yield
    finally:
        set_threads(previous)
