"""The int8 CPU backends: ONNX Runtime or OpenVINO over a dynamically quantised ONNX graph.

Export (once per checkpoint, cached): the masked LM with its decoder made an identity is exported
by ``torch.onnx`` (inputs ``input_ids``/``attention_mask``, output the MLM head's transformed states,
``texts x length x hidden``); ONNX Runtime's transformer optimiser fuses GELU and layer norms;
``onnxruntime.quantization.quantize_dynamic`` turns the encoder's weight matrices into int8 with
activations quantised per batch at run time. The recipe (``docs/backends.md`` has the measurements
behind each choice, on splade-tiny and the BERT-base-sized model):

* **7-bit weights, one scale per output column** (``reduce_range``, ``per_channel``). ONNX
  Runtime's u8 x s8 kernels on AVX2 without VNNI add pairs of products in 16 bits (``vpmaddubsw``),
  which saturate with full-range weights; per-channel scales without the reduced range made the
  errors worse, not better. u8 x u8 kernels avoid the saturation but ran at about half the speed.
* **Only MatMuls** are quantised. The embedding tables stay fp32: a lookup gains no speed from int8,
  and one scale over 30,522 rows put an error on every token.
* **The first layer's feed-forward and the MLM head's transform stay fp32**: quantised one at a
  time they were the three most damaging matrices (the head's transform feeds the vocabulary
  projection directly); together they are under a tenth of a BERT-base encoder's products.
* The vocabulary projection is not in the graph: ``pipeline.projection``'s exact fp32 tiled kernel
  runs on the graph's hidden states and decides which terms clear the ReLU threshold.
"""

from __future__ import annotations

import json
import os
import shutil
import warnings
from pathlib import Path

import numpy as np

from pipeline import models

RECIPE = "int8-v3"  # bump when the export or quantisation recipe changes: the cache key includes it
GRAPH = "model.int8.onnx"


def exported_graph(model: models.ModelRef, mlm, backend: str, fresh: bool = False) -> Path:
    """The cached int8 graph for ``model``, exported and quantised on first use (or when ``fresh``).

    The cache is used only when its ``recipe.json`` names this recipe and this checkpoint: a graph
    copied from another model's cache (valid, but not this model's) is exported again.
    """
    folder = models.cache_dir(model, f"onnx-{RECIPE}")
    target = folder / GRAPH
    if target.is_file() and not fresh and _made_for(folder, model):
        return target
    work = folder / f".export-{os.getpid()}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    try:
        plain = _export(mlm, work / "model.onnx")
        fused = fuse(plain, mlm.config, work / "model.fused.onnx")
        _quantise(fused, work / GRAPH)
        recipe = {"recipe": RECIPE, "model": model.describe(), "fused": fused != plain}
        (work / "recipe.json").write_text(json.dumps(recipe, indent=2))
        os.replace(work / GRAPH, target)
        os.replace(work / "recipe.json", folder / "recipe.json")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return target


def _made_for(folder: Path, model: models.ModelRef) -> bool:
    try:
        recipe = json.loads((folder / "recipe.json").read_text())
    except (OSError, ValueError):
        return False
    made = recipe.get("model") if isinstance(recipe, dict) else None
    return (recipe.get("recipe") == RECIPE and isinstance(made, dict)
            and made.get("model_fingerprint") == model.fingerprint)


def _export(mlm, path: Path) -> Path:
    import torch

    class Transformed(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, input_ids, attention_mask):
            return self.inner(input_ids=input_ids, attention_mask=attention_mask).logits

    wrapper = Transformed(mlm.to("cpu").float().eval())
    sample = (torch.ones((2, 16), dtype=torch.long), torch.ones((2, 16), dtype=torch.long))  # shapes only
    axes = {0: "texts", 1: "tokens"}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(wrapper, sample, str(path), input_names=["input_ids", "attention_mask"],
                          output_names=["hidden"], opset_version=18, dynamo=True, optimize=True,
                          dynamic_axes={"input_ids": axes, "attention_mask": axes, "hidden": axes})
    return path


# What ONNX Runtime's graph fusions raise when a graph does not have the shapes they match (its
# pattern matchers assert and index into node lists). Anything else (a full disk while saving, a
# missing module, a bug) is not a graph the fusions "do not know" and must not pass unnoticed.
FUSION_FAILURES = (AssertionError, KeyError, IndexError, ValueError)


def fuse(path: Path, config, output: Path) -> Path:
    """ONNX Runtime's BERT fusions (attention, skip layer norm, GELU) written to ``output``.

    Returns ``path`` itself, with a warning, when the fusions cannot apply to this architecture's
    graph (``FUSION_FAILURES``): the int8 recipe then quantises the unfused graph, which computes
    the same function more slowly. Every other error propagates.
    """
    from onnxruntime.transformers.optimizer import optimize_model

    heads, hidden = getattr(config, "num_attention_heads", 0), getattr(config, "hidden_size", 0)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            optimised = optimize_model(str(path), model_type="bert", num_heads=heads, hidden_size=hidden,
                                       opt_level=1)
    except FUSION_FAILURES as exc:
        warnings.warn(f"ONNX Runtime's BERT fusions do not apply to this model ({type(exc).__name__}: "
                      f"{str(exc)[:120]}); quantising the unfused graph", stacklevel=2)
        return path
    optimised.save_model_to_file(str(output))
    return output


def _quantise(path: Path, output: Path) -> None:
    """Dynamic int8: per-channel 7-bit weights on the encoder's MatMuls, sensitive ones left fp32."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    graph = onnx.load(str(path), load_external_data=False).graph
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        quantize_dynamic(str(path), str(output), weight_type=QuantType.QInt8, per_channel=True,
                         reduce_range=True, op_types_to_quantize=["MatMul"],
                         nodes_to_exclude=kept_fp32(graph))


def weight_matmuls(graph) -> list[tuple[str, list[int]]]:
    """``(node name, weight shape)`` of every MatMul with a constant weight, in graph order."""
    shapes = {init.name: list(init.dims) for init in graph.initializer}
    return [(node.name, shapes[node.input[1]]) for node in graph.node
            if node.op_type == "MatMul" and len(node.input) > 1 and node.input[1] in shapes]


def kept_fp32(graph) -> list[str]:
    """The MatMuls left in fp32: the first feed-forward block (its two matrices are the first with a
    side other than the hidden width) and the last MatMul, the MLM head's transform.

    Found by shape and order, which the exporter keeps, rather than by name, which it does not.
    """
    found = weight_matmuls(graph)
    if not found:
        return []
    hidden = found[-1][1][0]
    wide = [name for name, shape in found if len(shape) == 2 and shape[0] != shape[1]
            and hidden in shape]
    return [*wide[:2], found[-1][0]]


class OrtRunner:
    """ONNX Runtime session over the int8 graph."""

    precision = "int8"

    def __init__(self, graph: Path, threads: int):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        self.session = ort.InferenceSession(str(graph), options, providers=["CPUExecutionProvider"])

    def hidden(self, input_ids, mask):
        import torch

        (out,) = self.session.run(None, {"input_ids": input_ids.numpy(), "attention_mask": mask.numpy()})
        return torch.from_numpy(out)


class OpenVinoRunner(OrtRunner):
    """OpenVINO compiling the same quantised graph for the CPU."""

    def __init__(self, graph: Path, threads: int):
        import openvino as ov

        core = ov.Core()
        compiled = core.compile_model(str(graph), "CPU", {"INFERENCE_NUM_THREADS": threads,
                                                         "PERFORMANCE_HINT": "LATENCY"})
        self.request = compiled.create_infer_request()

    def hidden(self, input_ids, mask):
        import torch

        result = self.request.infer({"input_ids": input_ids.numpy(), "attention_mask": mask.numpy()})
        return torch.from_numpy(np.array(next(iter(result.values()))))


def load_int8(backend: str, model: models.ModelRef, mlm, threads: int):
    """A runner for ``backend`` (``onnx`` or ``openvino``) over the cached int8 graph.

    A cached graph that does not load (truncated by a full disk, emptied, overwritten) is the tool's
    own cache: it is exported again, once; a fresh export that still fails is reported by path.
    """
    runner = OpenVinoRunner if backend == "openvino" else OrtRunner
    graph = exported_graph(model, mlm, backend)
    try:
        return runner(graph, threads)
    except Exception:  # noqa: BLE001 - onnxruntime's pybind errors (InvalidProtobuf, Fail) derive from Exception
        graph = exported_graph(model, mlm, backend, fresh=True)
    try:
        return runner(graph, threads)
    except Exception as exc:  # noqa: BLE001 - reported by path, never swallowed
        raise PipelineError(f"{graph}: cannot load the exported graph: {exc}"[:400]) from None


