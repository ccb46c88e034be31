"""Where and in what number format a model runs: ``--device`` and ``--precision``.

Devices: ``cpu``, ``cuda`` (the current CUDA device), ``cuda:N``, ``mps`` (Apple GPUs) and ``auto``
(the first of cuda, mps, cpu that this machine has). Asking for one that is absent is a one-line
error, never a silent fall-back to the CPU: a user who typed ``--device cuda`` expects GPU speed.

Precisions: ``fp32`` (the exact reference), ``fp16`` and ``bf16`` (mixed precision by autocast:
matrix products in 16 bits, layer norms, softmax and the pooled weights in fp32). ``fp16`` needs a
GPU: x86 CPUs have no fp16 arithmetic (PyTorch emulates it, several times slower than fp32, for no
gain), so it is refused there; ``bf16`` runs on any CPU (natively with AVX512-BF16 or AMX, emulated
and slow elsewhere) and on GPUs that support it.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from pipeline.errors import PipelineError


def default_threads() -> int:
    """The cores this process may run on (its CPU affinity), at least 1."""
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)


DEVICES = ("auto", "cpu", "cuda", "cuda:N", "mps")
PRECISIONS = ("fp32", "fp16", "bf16")
_CUDA = re.compile(r"cuda(?::(\d+))?")


@dataclass(frozen=True)
class Placement:
    """A resolved device and precision, with the torch objects that go with them."""

    device: "object"  # torch.device
    precision: str

    @property
    def kind(self) -> str:
        """``cpu``, ``cuda`` or ``mps``: what ``torch.autocast`` calls the device type."""
        return self.device.type  # type: ignore[attr-defined]

    @property
    def dtype(self):
        import torch

        return {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[self.precision]

    @property
    def accelerated(self) -> bool:
        return self.kind != "cpu"

    def autocast(self):
        """A context that runs the transformer in this precision (a no-op for fp32)."""
        import contextlib

        import torch

        if self.precision == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(self.kind, dtype=self.dtype)

    def describe(self) -> str:
        return f"{self.device} {self.precision}"


def resolve_device(name: str | None = None):
    """``--device`` value to a ``torch.device`` (``None``: the CPU); absent hardware is a PipelineError."""
    import torch

    name = (name or "cpu").strip().lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", torch.cuda.current_device())
        if _mps_available(torch):
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name == "mps":
        if not _mps_available(torch):
            raise PipelineError("--device mps: no Apple GPU (MPS) is available on this machine; "
                                "use --device cpu or auto")
        return torch.device("mps")
    match = _CUDA.fullmatch(name)
    if match:
        if not torch.cuda.is_available():
            build = ("a CPU-only build of torch" if torch.version.cuda is None
                     else f"torch built for CUDA {torch.version.cuda}, but no GPU or driver found")
            raise PipelineError(f"--device {name}: no CUDA device is available ({build}); "
                                "use --device cpu or auto")
        index = int(match.group(1)) if match.group(1) is not None else torch.cuda.current_device()
        count = torch.cuda.device_count()
        if index >= count:
            raise PipelineError(f"--device {name}: this machine has {count} CUDA device(s) (cuda:0 to "
                                f"cuda:{count - 1})")
        return torch.device("cuda", index)
    raise PipelineError(f"--device must be one of {', '.join(DEVICES)}, got {name!r}")


def kind_of(name: str | None) -> str:
    """The kind of device a ``--device`` value names without resolving it (``cuda:1`` -> ``cuda``),
    for a device that is not this process's (a Ray worker's); ``auto`` and ``None`` there mean
    ``cpu``, since a worker given no GPU sees none."""
    name = (name or "cpu").strip().lower()
    return "cuda" if _CUDA.fullmatch(name) else ("mps" if name == "mps" else "cpu")


def check_precision(precision: str | None, device) -> str:
    """The precision to run in on ``device``; one that the device cannot run is a PipelineError."""
    import torch

    precision = (precision or "fp32").strip().lower()
    if precision not in PRECISIONS:
        raise PipelineError(f"--precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "fp32":
        return precision
    if device.type == "cpu" and precision == "fp16":
        raise PipelineError("--precision fp16 needs a GPU (--device cuda or mps): CPUs have no fp16 "
                            "arithmetic; on CPU use bf16, or --backend onnx for int8")
    if device.type == "cuda" and precision == "bf16" and not torch.cuda.is_bf16_supported():
        raise PipelineError(f"--precision bf16 is not supported by {torch.cuda.get_device_name(device)}; "
                            "use fp16")
    if device.type == "mps" and precision == "bf16" and not _mps_bf16(torch):
        raise PipelineError("--precision bf16 is not supported by this MPS device (needs macOS 14); use fp16")
    return precision


def resolve(device: str | None = None, precision: str | None = None) -> Placement:
    """``--device`` and ``--precision`` to a Placement, or a one-line PipelineError."""
    found = resolve_device(device)
    return Placement(found, check_precision(precision, found))


def _mps_available(torch) -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def _mps_bf16(torch) -> bool:
    try:
        torch.ones(1, dtype=torch.bfloat16, device="mps")
    except (RuntimeError, TypeError):
        return False
    return True
