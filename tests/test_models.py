import json
import subprocess
import sys

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


def test_local_folder_resolves_with_same_fingerprint_as_default():
    default = models.resolve(None)
    local = models.resolve(default.location)
    assert local.fingerprint == default.fingerprint and local.location == default.location


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
