"""Encoder specs: what encodes documents, what encodes queries, and how weights become impacts.

The one home for these rules. ``encode``, ``index``, ``search``, ``serve`` and the benchmarks ask
this module, never ``models`` or ``encoder`` directly:

* ``resolve(--encoder)``: a masked-LM checkpoint (the embedded splade-tiny, a folder, a hub id) or
  a sentence-transformers ``SparseEncoder`` folder (``modules.json``). A symmetric folder
  (MLM transformer + ``SpladePooling``) gives its pooling, activation, maximum length and prompts;
  a ``Router`` folder gives its document route as the document side and its query route
  (``SparseStaticEmbedding``, inference-free) as the default query side.
* ``query_side(--query-encoder, document side)``: ``tokens`` (weight 1 per distinct wordpiece,
  SPLADE-v3-Doc's rule), ``idf`` (IDF from the index's own postings), ``idf:FILE`` (an
  ``idf.json`` table, {token: weight}, OpenSearch's doc-only models), or another checkpoint /
  ``SparseEncoder`` folder (a separate query encoder, e.g. naver's efficient SPLADE pairs).
* The index record stores both sides (``encoder`` and ``query_encoder``); ``query_spec`` restores
  the index's query side, ``check_index`` refuses another one unless ``--force``.
* ``load_documents`` / ``load_queries`` load them. An inference-free query side loads a
  tokenizer (Hugging Face ``tokenizers``, no torch) and a weight table: no model, no torch thread.

Quantisation: query weights follow the index's rule (``round(w * scale)``, or ``anserini``:
``round(w / 5 * 256)``) on every side. For ``tokens`` that makes every query weight
``round(1 * scale)``; a uniform weight ranks exactly as weight 1 would, and keeps scores on the
same scale as the model's queries.
"""

from __future__ import annotations

import hashlib
import json
import math
import threading
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Sequence, Union

import numpy as np

from pipeline import backends, models
from pipeline.errors import ConsistencyError, InputError, PipelineError
from pipeline.impacts import SparseVector, quantise

MODULES = "modules.json"
ROUTER_CONFIG = "router_config.json"
ST_CONFIG = "config_sentence_transformers.json"
DEFAULT_MAX_LENGTH = 512
# The module types whose arithmetic the pipeline reproduces exactly (the last dotted name)
TRANSFORMERS = ("MLMTransformer", "Transformer")
POOLING = "SpladePooling"
STATIC = "SparseStaticEmbedding"


# -- the sides ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class ModelSide:
    """A masked-LM checkpoint with SPLADE pooling: a document encoder, or a query encoder that runs it."""

    model: models.ModelRef
    pooling: str = "max"
    max_length: int = DEFAULT_MAX_LENGTH
    prompt: str = ""
    activation: str = "relu"
    folder: str | None = None  # the sentence-transformers folder it was read from

    inference_free = False

    def fingerprint(self, backend: str = "torch", precision: str | None = None) -> str:
        """The checkpoint's (suffixed by backend and precision) plus anything else that changes weights."""
        base = models.encoder_fingerprint(self.model.fingerprint, backend, backends.precision_of(backend, precision))
        extras = [f"{name}={value!r}" for name, value in (("prompt", self.prompt), ("activation", self.activation))
                  if value != {"prompt": "", "activation": "relu"}[name]]
        return base + ("+" + ",".join(extras) if extras else "")

    def describe(self, backend: str = "torch", precision: str | None = None) -> dict[str, Any]:
        """What index records keep: the checkpoint (as ``ModelRef.describe``) and its pooling."""
        found = {"kind": "model", **self.model.describe(backend, backends.precision_of(backend, precision)),
                 "pooling": self.pooling, "max_length": self.max_length, "prompt": self.prompt,
                 "activation": self.activation}
        found["fingerprint"] = self.fingerprint(backend, precision)
        if self.folder:
            found["folder"] = self.folder
        return found


@dataclass(frozen=True)
class StaticSide:
    """An inference-free query side: each distinct wordpiece of the query, weighted from a table.

    ``rule``: ``tokens`` (every weight 1), ``idf`` (from the index's postings, computed when
    loaded), ``idf-file`` (an ``idf.json``) or ``static`` (a ``SparseStaticEmbedding``'s weights).
    """

    rule: str
    tokenizer: str  # folder with the tokenizer files
    fingerprint: str
    max_length: int = DEFAULT_MAX_LENGTH
    source: str | None = None  # the table's file or folder
    prompt: str = ""
    name: str = ""

    inference_free = True

    def describe(self, backend: str = "torch", precision: str | None = None) -> dict[str, Any]:
        return {"kind": self.rule, "name": self.name or self.rule, "tokenizer": self.tokenizer,
                "fingerprint": self.fingerprint, "max_length": self.max_length, "source": self.source,
                "prompt": self.prompt}


QuerySide = Union[ModelSide, StaticSide]


@dataclass(frozen=True)
class Resolved:
    """What an ``--encoder`` value names: the document side and, for a Router, its own query side."""

    document: ModelSide
    query: QuerySide | None = None  # None: queries go through the document side


# -- resolving names ---------------------------------------------------------------------------

def resolve(name: str | None, pooling: str | None = None, max_length: int | None = None) -> Resolved:
    """An ``--encoder`` value: a checkpoint (as ``models.resolve``) or a ``SparseEncoder`` folder.

    ``pooling`` and ``max_length`` default to the folder's configuration (else max and 512); a
    ``pooling`` that contradicts a ``SpladePooling`` config is refused (the model would no longer
    be the one trained), a shorter ``max_length`` is allowed.
    """
    path = Path(name).expanduser() if name else None
    if path is not None and path.is_dir() and (path / MODULES).is_file():
        found = read_sparse_encoder(path, name)
        document = _with_options(found.document, pooling, max_length)
        query = _with_options(found.query, None, max_length) if isinstance(found.query, ModelSide) else found.query
        return Resolved(document, query)
    model = models.resolve(name)
    return Resolved(ModelSide(model, pooling or "max", _bounded(model, max_length)))


def _with_options(side: ModelSide, pooling: str | None, max_length: int | None) -> ModelSide:
    if pooling is not None and pooling != side.pooling:
        raise PipelineError(f"--pooling {pooling}: {side.folder or side.model.name} pools with {side.pooling} "
                            "(its SpladePooling config)")
    if max_length is not None and max_length > side.max_length:
        raise PipelineError(f"--max-length {max_length} exceeds what {side.folder or side.model.name} "
                            f"supports ({side.max_length} tokens)")
    return replace(side, max_length=max_length or side.max_length)


def _bounded(model: models.ModelRef, max_length: int | None) -> int:
    """``max_length`` (default 512), refused beyond the checkpoint's positions."""
    limit = models.max_positions(model)
    wanted = max_length or min(DEFAULT_MAX_LENGTH, limit or DEFAULT_MAX_LENGTH)
    if limit is not None and wanted > limit:
        raise PipelineError(f"--max-length {wanted} exceeds what {model.name} supports ({limit} positions)")
    return wanted


def query_side(value: str | None, document: ModelSide, default: QuerySide | None = None,
               pooling: str | None = None, max_length: int | None = None) -> QuerySide:
    """A ``--query-encoder`` value against the document side it must match (same vocabulary).

    ``None``: ``default`` (a Router's own query route), else the document side itself.
    """
    if value is None:
        return default or document
    tokenizer = _tokenizer_folder(document)
    if value == "tokens":
        return StaticSide("tokens", tokenizer, "tokens", _static_length(tokenizer), prompt="", name="tokens")
    if value == "idf":
        return StaticSide("idf", tokenizer, "idf:index", _static_length(tokenizer), name="idf")
    if value.startswith("idf:"):
        path = Path(value[4:]).expanduser()
        if not path.is_file():
            raise InputError(path, "no such idf.json file" if not path.exists() else "not a file")
        idf_table(path, WordPieces.load(tokenizer).vocab)  # every problem reported now, before any work
        return StaticSide("idf-file", tokenizer, "idf:sha256:" + _file_digest(path), _static_length(tokenizer),
                          str(path.resolve()), name=value)
    path = Path(value).expanduser()
    if path.is_dir() and (path / MODULES).is_file():  # its own configuration decides
        found = resolve(value, pooling, max_length)
    else:  # a plain checkpoint pools as the documents were pooled unless told otherwise
        found = resolve(value, pooling or document.pooling, max_length or document.max_length)
    side = found.query or found.document
    check_vocabulary(side, document)
    return side


def check_vocabulary(side: QuerySide, document: ModelSide) -> None:
    """A query encoder must speak the document encoder's vocabulary, token for token."""
    mine = _tokenizer_folder(side) if isinstance(side, ModelSide) else side.tokenizer
    theirs = _tokenizer_folder(document)
    if Path(mine).resolve() == Path(theirs).resolve():
        return
    if WordPieces.load(mine).vocab != WordPieces.load(theirs).vocab:
        raise InputError(Path(mine) / "tokenizer.json",
                         f"query encoder's vocabulary differs from the document encoder's ({theirs}); "
                         "their terms would not match")


def _tokenizer_folder(side: ModelSide) -> str:
    return side.model.location


def _static_length(tokenizer: str) -> int:
    """Tokens a static side keeps: the tokenizer's ``model_max_length`` (sentence-transformers' rule)."""
    try:
        value = json.loads((Path(tokenizer) / "tokenizer_config.json").read_text()).get("model_max_length")
    except (OSError, ValueError):
        value = None
    return int(value) if isinstance(value, int) and 0 < value < 1_000_000 else DEFAULT_MAX_LENGTH


def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


# -- sentence-transformers SparseEncoder folders ------------------------------------------------

def read_sparse_encoder(folder: Path, name: str | None = None) -> Resolved:
    """The sides of a ``SparseEncoder`` folder, from its own configuration files.

    Reproduced exactly: an MLM transformer followed by ``SpladePooling`` (max or sum; relu, or
    log1p_relu with max), and ``SparseStaticEmbedding`` alone (the inference-free query route of a
    ``Router``). Anything else is refused, naming the module.
    """
    folder = Path(folder).resolve()
    modules = _read_json(folder / MODULES)
    if not isinstance(modules, list) or not modules or not all(isinstance(m, dict) for m in modules):
        raise InputError(folder / MODULES, "expected a list of modules")
    config = _read_json(folder / ST_CONFIG) if (folder / ST_CONFIG).is_file() else {}
    if config.get("max_active_dims"):
        raise InputError(folder / ST_CONFIG, f"max_active_dims {config['max_active_dims']} (top-k pruning of "
                                             "the output) is not reproduced by the pipeline")
    prompts = config.get("prompts") or {}
    default_prompt = prompts.get(config.get("default_prompt_name") or "", "")
    prompt = {role: prompts.get(role, default_prompt) for role in ("query", "document")}
    if len(modules) == 1 and _type(modules[0]).endswith("Router"):
        router_folder = folder / (modules[0].get("path") or "")
        router = _read_json(router_folder / ROUTER_CONFIG)
        structure, types = router.get("structure") or {}, router.get("types") or {}
        if "query" not in structure or "document" not in structure:
            raise InputError(router_folder / ROUTER_CONFIG, "a Router needs a 'query' and a 'document' route")
        chains = {role: [(types.get(path, ""), path) for path in structure[role]] for role in ("query", "document")}
        sides = {role: _chain(router_folder, chains[role], router_folder / ROUTER_CONFIG, prompt[role], name,
                              str(folder)) for role in ("query", "document")}
        document = sides["document"]
        if not isinstance(document, ModelSide):
            raise InputError(router_folder / ROUTER_CONFIG, "the document route must be an MLM transformer "
                                                            "with SpladePooling")
        return Resolved(document, sides["query"])
    chain = [(_type(module), module.get("path") or "") for module in modules]
    side = _chain(folder, chain, folder / MODULES, prompt["document"], name, str(folder))
    if not isinstance(side, ModelSide):
        raise InputError(folder / MODULES, "a SparseStaticEmbedding alone encodes no documents; use it as "
                                           "--query-encoder, or save it in a Router")
    query = replace(side, prompt=prompt["query"]) if prompt["query"] != prompt["document"] else None
    return Resolved(side, query)


def _type(module: dict[str, Any]) -> str:
    return str(module.get("type") or "")


def _chain(root: Path, chain: list[tuple[str, str]], listed_in: Path, prompt: str, name: str | None,
           folder: str) -> QuerySide:
    """One module chain as a side; ``listed_in`` is the file that names the modules (for errors)."""
    for kind, path in chain:
        if not (root / path).is_dir():
            raise InputError(root / path, f"module folder of {kind.rsplit('.', 1)[-1] or 'a module'} listed in "
                                          f"{listed_in.name} is missing")
    names = [kind.rsplit(".", 1)[-1] for kind, _ in chain]
    if names == [STATIC]:
        return _static_module(root / chain[0][1], prompt, name)
    if len(names) == 2 and names[0] in TRANSFORMERS and names[1] == POOLING:
        return _mlm_chain(root / chain[0][1], root / chain[1][1], prompt, name, folder)
    for kind, path in chain:
        short = kind.rsplit(".", 1)[-1]
        if short not in (*TRANSFORMERS, POOLING, STATIC):
            raise InputError(listed_in, f"module {kind or '(no type)'} ({path or 'root'}) cannot be reproduced "
                                        "exactly by the pipeline")
    raise InputError(listed_in, f"module chain {' -> '.join(names)} cannot be reproduced exactly by the pipeline "
                                "(supported: MLMTransformer -> SpladePooling, or SparseStaticEmbedding)")


def _mlm_chain(transformer: Path, pooling_folder: Path, prompt: str, name: str | None, folder: str) -> ModelSide:
    settings = _read_json(transformer / "sentence_bert_config.json") \
        if (transformer / "sentence_bert_config.json").is_file() else {}
    if settings.get("transformer_task", "fill-mask") != "fill-mask":
        raise InputError(transformer / "sentence_bert_config.json",
                         f"transformer_task {settings['transformer_task']!r}: SPLADE needs fill-mask")
    pooling = _read_json(pooling_folder / "config.json") if (pooling_folder / "config.json").is_file() else {}
    strategy = pooling.get("pooling_strategy", "max")
    activation = pooling.get("activation_function", "relu")
    if strategy not in ("max", "sum") or activation not in ("relu", "log1p_relu") or \
            (activation == "log1p_relu" and strategy != "max"):
        raise InputError(pooling_folder / "config.json", f"SpladePooling {strategy} with {activation} cannot be "
                                                         "reproduced exactly by the pipeline")
    model = replace(models.resolve(str(transformer)), name=name or str(transformer))
    length = settings.get("max_seq_length") or _static_length(str(transformer))
    limit = models.max_positions(model)
    return ModelSide(model, strategy, min(length, limit or length), prompt, activation, folder)


def _static_module(module: Path, prompt: str, name: str | None) -> StaticSide:
    config = _read_json(module / "config.json") if (module / "config.json").is_file() else {}
    path = config.get("path")
    length = _static_length(str(module))
    if isinstance(path, str) and path.endswith(".json"):
        table = Path(path) if Path(path).is_absolute() else module / path
        idf_table(table, WordPieces.load(str(module)).vocab)
        return StaticSide("idf-file", str(module), "idf:sha256:" + _file_digest(table), length, str(table),
                          prompt, name or str(module))
    weights = next((module / f for f in ("model.safetensors", "pytorch_model.bin") if (module / f).is_file()), None)
    if weights is None:
        raise InputError(module, "SparseStaticEmbedding without weights (model.safetensors)")
    return StaticSide("static", str(module), "static:sha256:" + _file_digest(weights), length, str(weights),
                      prompt, name or str(module))


def _read_json(path: Path) -> Any:
    if not path.is_file():
        raise InputError(path, "missing")
    try:
        return json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise InputError(path, f"invalid JSON: {exc}") from None


# -- weight tables -----------------------------------------------------------------------------

def idf_table(path: Path, vocab: dict[str, int]) -> np.ndarray:
    """An ``idf.json`` ({token: weight}) as a vocabulary-sized float32 array; every entry checked.

    A weight must be a finite number of at least 0 and a token must be in the vocabulary: a
    token the tokenizer never produces would be silently dropped, a negative weight would make a
    match lower a document's score.
    """
    path = Path(path)
    table = _read_json(path)
    if not isinstance(table, dict):
        raise InputError(path, "expected a JSON object {token: weight}")
    weights = np.zeros(max(vocab.values()) + 1, dtype=np.float32)
    for token, weight in table.items():
        if isinstance(weight, bool) or not isinstance(weight, (int, float)):
            raise InputError(path, f"weight of {token[:40]!r} is not a number: {weight!r}")
        if not math.isfinite(weight) or weight < 0:
            raise InputError(path, f"weight of {token[:40]!r} must be a finite number of at least 0, got {weight!r}")
        if token not in vocab:
            raise InputError(path, f"token {token[:40]!r} is not in the tokenizer's vocabulary")
        weights[vocab[token]] = weight
    return weights


def static_weights(path: Path) -> np.ndarray:
    """A ``SparseStaticEmbedding``'s ``weight`` tensor, read without torch."""
    path = Path(path)
    if path.suffix != ".safetensors":
        raise InputError(path, "SparseStaticEmbedding weights must be model.safetensors")
    from safetensors.numpy import load_file

    try:
        tensors = load_file(str(path))
    except Exception as exc:  # a truncated or foreign file: one line
        raise InputError(path, f"unreadable safetensors file: {exc}") from None
    if "weight" not in tensors or tensors["weight"].ndim != 1:
        raise InputError(path, "no one-dimensional 'weight' tensor")
    return tensors["weight"].astype(np.float32)


def bm25_idf(documents: int, frequencies: np.ndarray, absent_zero: bool = True) -> np.ndarray:
    """Lucene's BM25 IDF, ``ln(1 + (N - df + 0.5) / (df + 0.5))``: positive for every df <= N, so
    no query term lowers a score. The one home of the formula: the ``idf`` query side and the
    starting weights of inference-free training (``pipeline.training.idf``) both take it from here.

    ``absent_zero``: 0 where a term is in no document. Right for frequencies read from an index's
    postings (such a term can match nothing); training counts wordpieces in the documents' text,
    where an absent one may still match an expanded document vector, so it keeps the formula's value.
    """
    df = frequencies.astype(np.float64)
    idf = np.log1p((documents - df + 0.5) / (df + 0.5))
    return (np.where(df > 0, idf, 0.0) if absent_zero else idf).astype(np.float32)


# -- tokenizers without torch ------------------------------------------------------------------

class WordPieces:
    """A checkpoint's tokenizer through Hugging Face ``tokenizers`` (no torch, no transformers).

    Padding and truncation are switched off once at load; ``ids`` cuts to the maximum length
    itself, which for one text without special tokens is what right truncation does. Encoding
    reads the tokenizer only, so threads share it without a lock.
    """

    _cache: dict[str, "WordPieces"] = {}
    _lock = threading.Lock()

    def __init__(self, folder: str | None = None, loaded=None):
        """From a checkpoint ``folder``, or a copy of the Rust tokenizer inside ``loaded``, a Hugging
        Face fast tokenizer already loaded (its own settings change per call; the copy's never do)."""
        path = Path(folder) / "tokenizer.json" if folder is not None else None
        if loaded is not None or path.is_file():
            from tokenizers import Tokenizer

            self._fast = (Tokenizer.from_str(loaded.backend_tokenizer.to_str()) if loaded is not None
                          else Tokenizer.from_file(str(path)))
            self._fast.no_padding()
            self._fast.no_truncation()
            self.vocab: dict[str, int] = self._fast.get_vocab()
            self._slow = None
        else:  # vocab.txt only: transformers' tokenizer (imports torch, still no model)
            from transformers import AutoTokenizer

            self._fast = None
            self._slow = AutoTokenizer.from_pretrained(folder)
            self.vocab = dict(self._slow.get_vocab())
        self.id_to_token = [""] * (max(self.vocab.values()) + 1)
        for token, index in self.vocab.items():
            self.id_to_token[index] = token

    @classmethod
    def load(cls, folder: str) -> "WordPieces":
        """One instance per folder (a vocabulary check and a query side share it)."""
        key = str(Path(folder).resolve())
        with cls._lock:
            if key not in cls._cache:
                cls._cache[key] = cls(key)
            return cls._cache[key]

    def ids(self, texts: Sequence[str], max_length: int) -> list[list[int]]:
        if self._fast is not None:
            return [encoding.ids[:max_length] for encoding in
                    (self._fast.encode(text, add_special_tokens=False) for text in texts)]
        return [ids[:max_length] for ids in
                self._slow(list(texts), add_special_tokens=False, return_attention_mask=False)["input_ids"]]

    def spans(self, text: str) -> list[tuple[str, int, int]]:
        """Every wordpiece of ``text`` with its character span (no truncation, no special tokens)."""
        if self._fast is not None:
            encoding = self._fast.encode(text, add_special_tokens=False)
            return [(token, start, end) for token, (start, end) in zip(encoding.tokens, encoding.offsets)]
        from pipeline.explain import token_spans

        return token_spans(self._slow, text)


# -- what a search uses ------------------------------------------------------------------------

@dataclass(frozen=True)
class Options:
    """Encoder choices a user may give ``search``/``serve``; ``None`` means the index's."""

    encoder: str | None = None
    query_encoder: str | None = None
    pooling: str | None = None
    max_length: int | None = None
    scale: float | None = None
    quantisation: str | None = None
    backend: str | None = None
    precision: str | None = None
    device: str | None = None


@dataclass(frozen=True)
class QuerySpec:
    """The query side of a search with its quantisation, backend and precision."""

    side: QuerySide
    scale: float
    quantisation: str = "scale"
    backend: str = "torch"
    precision: str | None = None

    @property
    def inference_free(self) -> bool:
        return self.side.inference_free

    def fingerprint(self) -> str:
        if isinstance(self.side, ModelSide):
            return self.side.fingerprint(self.backend, self.precision)
        return self.side.fingerprint

    def settings(self) -> dict[str, Any]:
        """What must agree with the index (and what a run file records as its inputs)."""
        found: dict[str, Any] = {"query_encoder": self.fingerprint(), "scale": self.scale}
        if self.quantisation != "scale":
            found["quantisation"] = self.quantisation
        if isinstance(self.side, ModelSide):
            found.update(pooling=self.side.pooling, max_length=self.side.max_length)
        return found

    def describe(self) -> dict[str, Any]:
        return self.side.describe(self.backend, self.precision)


def document_side(record: dict[str, Any]) -> ModelSide:
    """The document side an index or collection records (``encoder`` and the encode settings)."""
    recorded = record.get("encoder")
    model = _recorded_model(recorded) if recorded else models.resolve(None)
    return ModelSide(model, record.get("pooling", "max"), record.get("max_length", DEFAULT_MAX_LENGTH),
                     record.get("prompt", ""), record.get("activation", "relu"),
                     (recorded or {}).get("folder"))


def _recorded_model(recorded: dict[str, Any]) -> models.ModelRef:
    """The checkpoint a record names: by its name, else where it was loaded from (same fingerprint)."""
    wanted = recorded.get("model_fingerprint", recorded["fingerprint"])
    try:
        model = models.resolve(recorded["name"])
    except PipelineError:
        model = None
    if model is None or model.fingerprint != wanted:
        model = models.resolve(recorded["location"])
    return replace(model, name=recorded["name"])


def recorded_query_side(record: dict[str, Any]) -> QuerySide:
    """The query side an index records; older records (and a symmetric model): the document side."""
    recorded = record.get("query_encoder")
    if not recorded:
        return document_side(record)
    kind = recorded.get("kind", "model")
    if kind == "model":
        return ModelSide(_recorded_model(recorded), recorded["pooling"], recorded["max_length"],
                         recorded.get("prompt", ""), recorded.get("activation", "relu"), recorded.get("folder"))
    if kind not in ("tokens", "idf", "idf-file", "static"):
        raise PipelineError(f"unknown query side {kind!r} in the index record")
    return StaticSide(kind, recorded["tokenizer"], recorded["fingerprint"], recorded["max_length"],
                      recorded.get("source"), recorded.get("prompt", ""), recorded.get("name", ""))


def recorded_backend(record: dict[str, Any], backend: str | None, precision: str | None
                     ) -> tuple[str, str | None]:
    """Backend and precision for query encoding: as given, else the index's (torch fp32 for old records)."""
    encoder = record.get("query_encoder") or record.get("encoder") or {}
    indexed = encoder.get("backend", "torch")
    backend = backend or indexed
    if precision is None and backend == indexed == "torch":
        precision = encoder.get("precision", "fp32")
    return backend, precision


def query_spec(record: dict[str, Any] | None, options: Options = Options()) -> QuerySpec:
    """The query side a search of this index uses: the index's, or what ``options`` name instead."""
    record = record or {}
    if options.encoder is None and options.query_encoder is None and "encoder" not in record:
        raise PipelineError("the index does not record the encoder its documents were encoded with (it was not "
                            "built from a splade-pipeline collection); name the query encoder with --encoder or "
                            "--query-encoder, or give --encoded-queries")
    recorded = recorded_query_side(record) if record.get("encoder") else None
    if options.encoder is not None:
        found = resolve(options.encoder, None, None)
        document = found.document
        default = found.query
    else:
        document = document_side(record) if record.get("encoder") else None
        default = recorded
    if options.query_encoder is not None:
        if document is None:
            document = resolve(options.query_encoder).document
        side = query_side(options.query_encoder, document, None, options.pooling, options.max_length)
    else:
        side = default or document
    if isinstance(side, ModelSide) and (options.pooling or options.max_length):
        side = replace(side, pooling=options.pooling or side.pooling, max_length=options.max_length or side.max_length)
    scale = options.scale if options.scale is not None else record.get("scale", 100)
    quantisation = options.quantisation or record.get("quantisation", "scale")
    backend, precision = recorded_backend(record, options.backend, options.precision)
    if side.inference_free:
        backend, precision = "torch", None
    else:
        backends.placement(backend, options.device, precision)
    return QuerySpec(side, scale, quantisation, backend, precision)


def index_settings(record: dict[str, Any]) -> dict[str, Any]:
    """What an index's record says a query must agree with (``QuerySpec.settings``' keys)."""
    spec = QuerySpec(recorded_query_side(record), record.get("scale", 100), record.get("quantisation", "scale"),
                     *recorded_backend(record, None, None))
    return spec.settings()


def side_name(side: QuerySide) -> str:
    """How messages name a side: the model's name, or the rule."""
    return side.model.name if isinstance(side, ModelSide) else (side.name or side.rule)


def check_index(record: dict[str, Any] | None, spec: QuerySpec, force: bool, index: Path) -> None:
    """Refuse a query side, pooling, scale or maximum length that differs from the index's."""
    if not record or "encoder" not in record:
        return
    recorded = index_settings(record)
    wanted = spec.settings()
    # pooling and maximum length belong to a model side: compared only where both sides are models
    names = [name for name in ("query_encoder", "scale", "quantisation", "pooling", "max_length")
             if (name in recorded and name in wanted) or name in ("query_encoder", "scale", "quantisation")]
    default = {"quantisation": "scale"}
    diff = [f"{name}: index {recorded.get(name, default.get(name))!r}, query {wanted.get(name, default.get(name))!r}"
            for name in names if recorded.get(name) != wanted.get(name)]
    if diff and diff[0].startswith("query_encoder"):
        diff[0] = (f"query encoder: index {side_name(recorded_query_side(record))} ({recorded['query_encoder']}), "
                   f"query {side_name(spec.side)} ({wanted['query_encoder']})")
    if diff and not force:
        raise ConsistencyError(f"{index} was built with other settings ({'; '.join(diff)}); "
                               "use --force to search anyway")


# -- loading -----------------------------------------------------------------------------------

def load_documents(side: ModelSide, threads: int | None = None, device: str | None = None,
                   precision: str | None = None, backend: str = "torch"):
    """The SPLADE encoder for ``side`` (``pipeline.encoder.SpladeEncoder``)."""
    from pipeline.encoder import SpladeEncoder

    limit = models.max_positions(side.model)
    if limit is not None and side.max_length > limit:
        raise PipelineError(f"--max-length {side.max_length} exceeds what {side.model.name} supports "
                            f"({limit} positions)")
    encoder = SpladeEncoder(side.model, side.pooling, side.max_length, threads, device, precision, backend,
                            side.prompt, side.activation)
    if encoder.max_length < side.max_length:  # the tokenizer may allow less than the positions
        raise PipelineError(f"--max-length {side.max_length} exceeds what {side.model.name} supports "
                            f"({encoder.max_length} tokens)")
    return encoder


class ModelQueries:
    """Queries through a SPLADE model, exactly as ``SpladeEncoder.encode_queries`` encodes them."""

    inference_free = False

    def __init__(self, encoder, scale: float, quantisation: str):
        self.encoder = encoder
        self.scale, self.quantisation = scale, quantisation
        self._lock = threading.Lock()  # a fast tokenizer's settings are mutated per call
        # spans through a copy of the Rust tokenizer: no lock shared with encoding, no Python wrapper
        # (the service asks for a query's tokens on every request)
        fast = getattr(encoder.tokenizer, "backend_tokenizer", None) is not None
        self._pieces = WordPieces(loaded=encoder.tokenizer) if fast else None

    def vectors(self, texts: Sequence[str], batch_size: int = 32,
                on_batch: Callable[[int], object] | None = None) -> list[SparseVector]:
        """Float weights per text, before quantisation: what ``encode_query`` gives."""
        with self._lock:
            ids = self.encoder.tokenize(texts)
        return self.encoder.encode_queries(ids, batch_size, on_batch)

    def encode(self, texts: Sequence[str], batch_size: int = 32,
               on_batch: Callable[[int], object] | None = None) -> list[dict[str, int]]:
        return [self.encoder.to_terms(vector, self.scale, self.quantisation)
                for vector in self.vectors(texts, batch_size, on_batch)]

    def spans(self, text: str) -> list[tuple[str, int, int]]:
        if self._pieces is not None:
            return self._pieces.spans(text)
        from pipeline.explain import token_spans

        with self._lock:
            return token_spans(self.encoder.tokenizer, text)


class StaticQueries:
    """Inference-free queries: each distinct wordpiece of the query, with its table weight, quantised."""

    inference_free = True

    def __init__(self, tokenizer: WordPieces, weights: np.ndarray, scale: float, quantisation: str,
                 max_length: int, prompt: str = ""):
        self.tokenizer, self.weights = tokenizer, weights
        self.scale, self.quantisation = scale, quantisation
        self.max_length, self.prompt = max_length, prompt

    def vectors(self, texts: Sequence[str], batch_size: int = 32,
                on_batch: Callable[[int], object] | None = None) -> list[SparseVector]:
        """Float weights per text, before quantisation: what ``encode_query`` gives."""
        found = []
        for ids in self.tokenizer.ids([self.prompt + text for text in texts], self.max_length):
            unique = np.unique(np.asarray(ids, dtype=np.int64))
            unique = unique[unique < len(self.weights)]
            weights = self.weights[unique]
            keep = weights != 0
            found.append(SparseVector(unique[keep].astype(np.int32), weights[keep]))
        return found

    def encode(self, texts: Sequence[str], batch_size: int = 32,
               on_batch: Callable[[int], object] | None = None) -> list[dict[str, int]]:
        found = []
        for vector in self.vectors(texts):
            ids, values = quantise(vector, self.scale, self.quantisation)
            found.append({self.tokenizer.id_to_token[i]: v for i, v in zip(ids.tolist(), values.tolist())})
        if on_batch:
            on_batch(len(texts))
        return found

    def spans(self, text: str) -> list[tuple[str, int, int]]:
        return self.tokenizer.spans(text)


QueryEncoder = Union[ModelQueries, StaticQueries]


def load_queries(spec: QuerySpec, threads: int | None = None, device: str | None = None,
                 index: Path | None = None) -> QueryEncoder:
    """The query encoder of ``spec``. ``index``: where an ``idf`` side takes its document frequencies."""
    side = spec.side
    if isinstance(side, ModelSide):
        return ModelQueries(load_documents(side, threads, device, spec.precision, spec.backend), spec.scale,
                            spec.quantisation)
    tokenizer = WordPieces.load(side.tokenizer)
    size = max(tokenizer.vocab.values()) + 1
    if side.rule == "tokens":
        weights = np.ones(size, dtype=np.float32)
    elif side.rule == "idf":
        if index is None:
            raise PipelineError("--query-encoder idf takes its weights from an index's postings; give --index")
        from pipeline.index import document_frequencies

        documents, frequencies = document_frequencies(Path(index))
        df = np.zeros(size, dtype=np.int64)
        for token, count in frequencies.items():
            if token in tokenizer.vocab:
                df[tokenizer.vocab[token]] = count
        weights = bm25_idf(documents, df)
    else:  # a table in a file: the one the index recorded, unchanged since
        source = Path(side.source)
        if not source.is_file():
            raise InputError(source, "the query side's weight table is missing")
        if side.fingerprint.split("sha256:", 1)[-1] != _file_digest(source):
            raise ConsistencyError(f"{source} changed since the index recorded it as its query side; "
                                   "record it again with index --query-encoder")
        weights = idf_table(source, tokenizer.vocab) if side.rule == "idf-file" else static_weights(source)
    return StaticQueries(tokenizer, weights, spec.scale, spec.quantisation, side.max_length, side.prompt)
