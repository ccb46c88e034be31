"""The int8 export's fusion step (backends.onnx_runner.fuse): only the fusions' own failures fall back."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

pytest.importorskip("onnxruntime.transformers.optimizer")

from pipeline.backends import onnx_runner  # noqa: E402

CONFIG = SimpleNamespace(num_attention_heads=2, hidden_size=128)


def optimiser(monkeypatch, behaviour):
    import onnxruntime.transformers.optimizer as optimizer

    monkeypatch.setattr(optimizer, "optimize_model", behaviour)


def test_a_graph_the_fusions_do_not_match_is_quantised_unfused_with_a_warning(monkeypatch, tmp_path):
    def no_match(*args, **kwargs):
        raise AssertionError("pattern not found")

    optimiser(monkeypatch, no_match)
    plain = tmp_path / "model.onnx"
    with pytest.warns(UserWarning, match="fusions do not apply to this model.*unfused"):
        assert onnx_runner.fuse(plain, CONFIG, tmp_path / "fused.onnx") == plain


@pytest.mark.parametrize("error", [OSError(28, "No space left on device"), TypeError("a bug"),
                                   ModuleNotFoundError("No module named 'onnx'")])
def test_other_errors_are_not_swallowed(monkeypatch, tmp_path, error):
    def failing(*args, **kwargs):
        raise error

    optimiser(monkeypatch, failing)
    with pytest.raises(type(error)):
        onnx_runner.fuse(tmp_path / "model.onnx", CONFIG, tmp_path / "fused.onnx")


def test_saving_the_fused_graph_is_not_covered_by_the_fallback(monkeypatch, tmp_path):
    """A full disk while writing the fused graph is an error, not a reason to quantise another graph."""
    class Fused:
        def save_model_to_file(self, path):
            raise OSError(28, "No space left on device")

    seen = {}

    def fused(path, **kwargs):
        seen.update(kwargs, path=path)
        return Fused()

    optimiser(monkeypatch, fused)
    with pytest.raises(OSError, match="No space left"):
        onnx_runner.fuse(tmp_path / "model.onnx", CONFIG, tmp_path / "fused.onnx")
    assert seen == {"path": str(tmp_path / "model.onnx"), "model_type": "bert", "num_heads": 2, "hidden_size": 128,
                    "opt_level": 1}
