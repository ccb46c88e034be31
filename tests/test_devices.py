"""Device and precision resolution (CPU-only machines included), and the GPU code path run on the CPU."""

from __future__ import annotations

import re
import subprocess
import sys

import numpy as np
import pytest
import torch

from pipeline import backends, devices
from pipeline.errors import PipelineError


@pytest.mark.parametrize("cuda, mps, expected", [
    (True, True, torch.device("cuda", 1)),  # CUDA first, on the current CUDA device
    (True, False, torch.device("cuda", 1)),
    (False, True, torch.device("mps")),     # then an Apple GPU
    (False, False, torch.device("cpu")),    # else the CPU
])
def test_auto_takes_the_first_of_cuda_mps_cpu(monkeypatch, cuda, mps, expected):
    """The auto rule with the hardware fixed by the test (not read from this machine)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 1)
    monkeypatch.setattr(devices, "_mps_available", lambda module: mps)
    auto = devices.resolve("auto")
    assert auto.device == expected and auto.precision == "fp32"
    assert devices.resolve("cpu").device == torch.device("cpu")
    assert devices.resolve(None).device == torch.device("cpu")  # never a GPU unless asked


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
@pytest.mark.parametrize("name", ["cuda", "cuda:0", "cuda:3"])
def test_absent_cuda_is_a_one_line_error(name):
    with pytest.raises(PipelineError, match=rf"--device {name}: no CUDA device is available") as error:
        devices.resolve(name)
    assert "\n" not in str(error.value)


@pytest.mark.skipif(torch.backends.mps.is_available(), reason="this machine has MPS")
def test_absent_mps_is_a_one_line_error():
    with pytest.raises(PipelineError, match="--device mps: no Apple GPU"):
        devices.resolve("mps")


@pytest.mark.parametrize("name", ["gpu", "cuda:x", "tpu", "cuda:-1"])
def test_unknown_device_names(name):
    with pytest.raises(PipelineError, match="--device must be one of"):
        devices.resolve(name)


def test_precisions_on_cpu():
    assert devices.resolve("cpu", "fp32").dtype == torch.float32
    assert devices.resolve("cpu", "bf16").dtype == torch.bfloat16  # torch runs bf16 on any CPU
    with pytest.raises(PipelineError, match="fp16 needs a GPU"):
        devices.resolve("cpu", "fp16")
    with pytest.raises(PipelineError, match="--precision must be one of"):
        devices.resolve("cpu", "int4")


def test_autocast_only_for_half_precisions():
    with devices.resolve("cpu", "bf16").autocast():
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.bfloat16
    with devices.resolve("cpu", "fp32").autocast():
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.float32


def test_backend_device_and_precision_combinations():
    assert backends.placement("onnx", None, None).kind == "cpu"
    assert backends.placement("openvino", "auto", "int8").kind == "cpu"
    with pytest.raises(PipelineError, match="runs on the CPU"):
        backends.placement("onnx", "cuda", None)
    with pytest.raises(PipelineError, match="computes in int8"):
        backends.placement("onnx", "cpu", "bf16")
    with pytest.raises(PipelineError, match="--backend must be one of"):
        backends.placement("tensorrt", "cpu", None)
    assert backends.precision_of("onnx", None) == "int8" and backends.precision_of("torch", None) == "fp32"


@pytest.fixture(scope="module")
def bf16_encoder():
    from pipeline import models
    from pipeline.encoder import SpladeEncoder

    return SpladeEncoder(models.resolve(None), "max", 512, device="cpu", precision="bf16")


TEXTS = ["Glucose is a simple sugar with the molecular formula C6H12O6.",
         "Aspirin inhibits cyclooxygenase and thereby the synthesis of prostaglandins. " * 6, "x"]


def test_bf16_weights_stay_close_to_fp32(encoder, bf16_encoder):
    """bf16 keeps 8 mantissa bits: weights move by a few hundredths, the top terms stay."""
    exact, half = encoder.encode(TEXTS), bf16_encoder.encode(TEXTS)
    for a, b in zip(exact, half):
        assert a.weights.dtype == np.float32 and b.weights.dtype == np.float32
        dense_a = np.zeros(encoder.vocab_size)
        dense_b = np.zeros(encoder.vocab_size)
        dense_a[a.ids], dense_b[b.ids] = a.weights, b.weights
        assert 0 < np.abs(dense_a - dense_b).max() < 0.1 * dense_a.max()
        top = set(a.ids[np.argsort(-a.weights)[:5]].tolist())
        assert len(top & set(b.ids[np.argsort(-b.weights)[:10]].tolist())) >= 4
    assert bf16_encoder.describe()["fingerprint"].endswith("+torch-bf16")
    assert encoder.describe()["fingerprint"] == encoder.model_ref.fingerprint


def test_padded_projection_equals_packed():
    """The GPU kernel (padded batch, masked rows) and the CPU one (packed rows) give the same weights."""
    from pipeline.projection import project, project_padded

    generator = torch.Generator().manual_seed(3)
    lengths = [5, 9, 2]
    hidden = torch.randn(3, 9, 16, generator=generator)
    mask = torch.zeros(3, 9, dtype=torch.long)
    for row, length in enumerate(lengths):
        mask[row, :length] = 1
    hidden[mask == 0] = 50.0  # padding rows would win every max if they were not masked
    weight, bias = torch.randn(10_000, 16, generator=generator), torch.randn(10_000, generator=generator) - 2
    packed = hidden[mask.bool()]
    for pooling in ("max", "sum"):
        expected = project(packed, lengths, weight, bias, pooling)
        got = project_padded(hidden, mask, weight, bias, pooling)
        assert torch.allclose(got, expected, atol=1e-4), pooling
        assert (expected > 0).any() and (expected == 0).any()


def test_gpu_code_path_on_cpu(encoder, monkeypatch):
    """Forcing the accelerated path on the CPU (padded projection) reproduces the packed one."""
    exact = encoder.encode(TEXTS)
    monkeypatch.setattr(type(encoder.placement), "accelerated", property(lambda self: True))
    padded = encoder.encode(TEXTS)
    for a, b in zip(exact, padded):
        assert np.array_equal(a.ids, b.ids) and np.abs(a.weights - b.weights).max() < 1e-4


def test_token_budget_batches():
    from pipeline.encoder import token_batches

    assert token_batches([3, 3, 4, 10, 10, 30], 20) == [(0, 3), (3, 5), (5, 6)]
    assert token_batches([], 20) == []
    spans = token_batches(list(range(1, 200)), 512)
    assert spans[0][0] == 0 and spans[-1][1] == 199
    assert all(b[0] == a[1] for a, b in zip(spans, spans[1:]))
    assert all((hi - lo) * (hi) <= 512 or hi - lo == 1 for lo, hi in spans)


def test_cli_reports_absent_device_in_one_line(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    corpus = tmp_path / "c.jsonl"
    corpus.write_text('{"_id": "d1", "text": "hello"}\n')
    done = subprocess.run([sys.executable, "-m", "pipeline", "encode", "--corpus", str(corpus), "--output",
                           str(tmp_path / "out"), "--device", "cuda", "--quiet"], capture_output=True, text=True)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and re.fullmatch(r"splade-pipeline encode: error: --device cuda: no CUDA device is "
                                            r"available \(.+\); use --device cpu or auto", lines[0]), lines
    assert not (tmp_path / "out" / "manifest.json").exists()
