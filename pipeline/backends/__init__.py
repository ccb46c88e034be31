"""Where the transformer runs: ``--backend torch`` (any device, fp32/fp16/bf16) or an int8 CPU graph.

* ``torch``: the checkpoint as PyTorch runs it; in fp32 the exact reference every other path is
  measured against. Devices and precisions as in ``pipeline.devices``.
* ``onnx``: the transformer and the MLM head's transform exported to ONNX, fused by ONNX Runtime's
  transformer optimiser and dynamically quantised to int8 (7-bit weights per output column,
  activations per batch; embeddings, the first feed-forward block and the MLM head's transform
  stay fp32: ``onnx_runner`` says why), run by ONNX Runtime on the CPU; the vocabulary projection stays the
  exact fp32 tiled kernel, applied to the int8 graph's hidden states.
* ``openvino``: the same quantised ONNX graph compiled by OpenVINO for the CPU.

Exported graphs are cached per checkpoint fingerprint (``pipeline.models.cache_dir``), so only the
first run pays for the export. Backends never import the encoder: data flows encoder -> backend.
"""

from __future__ import annotations

from typing import Any

from pipeline import devices, extras
from pipeline.errors import PipelineError

BACKENDS = ("torch", "onnx", "openvino")
INT8 = ("onnx", "openvino")
# What each int8 backend imports (all from the 'int8' extra): export and quantisation need ONNX and
# ONNX Runtime for both; OpenVINO compiles the graph ONNX Runtime quantised.
INT8_MODULES = {"onnx": ("onnx", "onnxscript", "onnxruntime"),
                "openvino": ("onnx", "onnxscript", "onnxruntime", "openvino")}


def placement(backend: str, device: str | None = None, precision: str | None = None) -> devices.Placement:
    """Resolve ``--device``/``--precision`` for ``backend``; impossible combinations are one-line errors."""
    if backend not in BACKENDS:
        raise PipelineError(f"--backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if backend == "torch":
        return devices.resolve(device, precision)
    extras.require(f"--backend {backend}", "int8", INT8_MODULES[backend])
    if precision not in (None, "int8"):
        raise PipelineError(f"--backend {backend} computes in int8; --precision {precision} applies to "
                            "--backend torch")
    if (device or "cpu").lower() not in ("cpu", "auto"):
        raise PipelineError(f"--backend {backend} runs on the CPU; for --device {device} use --backend torch")
    return devices.resolve("cpu", "fp32")


def precision_of(backend: str, precision: str | None) -> str:
    """The precision an encoder with these options computes in (recorded in fingerprints)."""
    return "int8" if backend in INT8 else (precision or "fp32")


def load(backend: str, model, mlm, where: devices.Placement, threads: int) -> Any:
    """A runner: ``hidden(input_ids, mask)`` gives the MLM head's transformed states (texts x length x hidden)."""
    if backend == "torch":
        from pipeline.backends.torch_runner import TorchRunner

        return TorchRunner(mlm, where)
    from pipeline.backends.onnx_runner import load_int8

    return load_int8(backend, model, mlm, threads)
