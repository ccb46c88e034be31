"""``splade-pipeline serve`` whose every query encoding holds its thread on the CPU for at least a
given time: the probe behind ``bench/serve.py --hold-ms``.

An inference-free side's encoding is a table look-up; held in a busy loop (no memory traffic, no
model) for as long as the model side's forward pass takes, it shows whether the model side's larger
overhead comes from what the forward pass does to the caches or from how long the request's other
threads wait idle meanwhile. Only the single-process server is held (workers that uvicorn spawns
import the service afresh), so the probe measures latency only.

    python bench/_held_serve.py MS serve --index ...   # what bench/serve.py runs
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence

from pipeline import cli
from pipeline.service import backend


def held(encode: Callable, seconds: float) -> Callable:
    """``encode`` that returns no sooner than ``seconds`` after it was called."""

    def encode_held(self, texts: Sequence[str]):
        until = time.perf_counter() + seconds
        vectors = encode(self, texts)
        while time.perf_counter() < until:
            time.sleep(0)  # lets other threads take the GIL, as a forward pass's kernels do
        return vectors

    return encode_held


if __name__ == "__main__":
    backend.ServedIndex.encode = held(backend.ServedIndex.encode, float(sys.argv[1]) / 1000)
    sys.exit(cli.main(sys.argv[2:]))
