"""Optional parts (pipeline.extras): a command whose extra is missing says which to install, in one line."""

from __future__ import annotations

import json
import sys

import pytest

from pipeline import backends, cli, extras
from pipeline.errors import PipelineError


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    return err.strip()


def test_serve_without_fastapi_names_the_serve_extra(monkeypatch, capsys, tmp_path):
    monkeypatch.setitem(sys.modules, "fastapi", None)  # as if not installed: import and find_spec fail
    assert cli.main(["serve", "--index", str(tmp_path)]) == 2
    assert one_line_error(capsys) == ("splade-pipeline serve: error: serve needs the 'serve' extra: "
                                      "pip install 'splade-pipeline[serve]' (missing: fastapi)")


def test_train_without_sentence_transformers_fails_before_reading_triples(monkeypatch, capsys, tmp_path):
    monkeypatch.setitem(sys.modules, "sentence_transformers", None)
    triples = tmp_path / "triples.jsonl"  # never read: the check comes first
    assert cli.main(["train", "--output", str(tmp_path / "model"), "--triples", str(triples)]) == 2
    assert "train needs the 'train' extra: pip install 'splade-pipeline[train]' (missing: sentence_transformers)" \
        in one_line_error(capsys)
    assert not (tmp_path / "model").exists()


def test_int8_backend_without_onnxruntime(monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(extras.MissingExtra, match=r"^--backend onnx needs the 'int8' extra: "
                                                  r"pip install 'splade-pipeline\[int8\]' \(missing: onnxruntime\)$"):
        backends.placement("onnx")
    backends.placement("torch")  # the torch backend needs no extra


def test_openvino_needs_openvino_but_onnx_does_not(monkeypatch):
    monkeypatch.setitem(sys.modules, "openvino", None)
    backends.placement("onnx")
    with pytest.raises(extras.MissingExtra, match="missing: openvino"):
        backends.placement("openvino")


def test_ray_option_without_ray(monkeypatch, capsys, tmp_path):
    monkeypatch.setitem(sys.modules, "ray", None)
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text(json.dumps({"_id": "d1", "text": "a"}) + "\n")
    assert cli.main(["encode", "--corpus", str(corpus), "--output", str(tmp_path / "c"), "--ray", "--quiet"]) == 2
    assert "--ray needs the 'ray' extra: pip install 'splade-pipeline[ray]' (missing: ray)" in one_line_error(capsys)


def test_an_unguarded_import_of_an_optional_module_gets_the_same_message(monkeypatch, capsys):
    """The safety net in cli.main: a ModuleNotFoundError for an extra's module becomes the one line."""
    def evaluate_files(*args, **kwargs):
        raise ModuleNotFoundError("No module named 'datasets'", name="datasets")

    monkeypatch.setattr("pipeline.evaluate.evaluate_files", evaluate_files)
    assert cli.main(["evaluate", "--run", "r", "--qrels", "q"]) == 2
    assert one_line_error(capsys).endswith("evaluate needs the 'train' extra: pip install "
                                           "'splade-pipeline[train]' (missing: datasets)")


def test_a_missing_core_module_is_not_disguised_as_an_extra(monkeypatch):
    def evaluate_files(*args, **kwargs):
        raise ModuleNotFoundError("No module named 'numpy'", name="numpy")

    monkeypatch.setattr("pipeline.evaluate.evaluate_files", evaluate_files)
    with pytest.raises(ModuleNotFoundError):
        cli.main(["evaluate", "--run", "r", "--qrels", "q"])


def test_every_extra_module_is_declared_in_pyproject():
    """pipeline.extras and pyproject.toml name the same extras, so the message points at a real one."""
    import tomllib
    from pathlib import Path

    declared = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())
    optional = declared["project"]["optional-dependencies"]
    assert set(extras.EXTRAS) <= set(optional)
    assert isinstance(extras.MissingExtra("x", "serve", ["fastapi"]), PipelineError)
