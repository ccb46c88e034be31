"""The stages as users call them: argument values in, files and a summary line out.

``cli`` only parses arguments and calls these; ``run`` and ``demo`` chain them. Each stage prints
its counters (as Anserini's IndexCollection does) so every document and query is accounted for.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Callable

from pipeline import models
from pipeline.collection import DEFAULT_SHARD_SIZE, EncodeSettings, encode_corpus
from pipeline.encoder import POOLINGS, SpladeEncoder, default_threads
from pipeline.errors import InputError, PipelineError
from pipeline.index import build_index
from pipeline.readers import read_encoded_queries, read_topics
from pipeline.search import (check_settings, encode_queries, index_record, require_index, restrict,
                             run_search)

Say = Callable[[str], Any]


def stderr(text: str) -> None:
    print(text, file=sys.stderr)


def _check_options(pooling: str, scale: float, max_length: int, batch_size: int) -> None:
    if pooling not in POOLINGS:
        raise PipelineError(f"--pooling must be one of {', '.join(POOLINGS)}, got {pooling!r}")
    if not scale > 0:
        raise PipelineError(f"--scale must be positive, got {scale}")
    if not 2 <= max_length:
        raise PipelineError(f"--max-length must be at least 2, got {max_length}")
    if batch_size < 1:
        raise PipelineError(f"--batch-size must be at least 1, got {batch_size}")


def _check_max_length(model: models.ModelRef, max_length: int) -> None:
    limit = models.max_positions(model)
    if limit is not None and max_length > limit:
        raise PipelineError(f"--max-length {max_length} exceeds what {model.name} supports ({limit} positions)")


def load_encoder(model: models.ModelRef, pooling: str, max_length: int, threads: int | None) -> SpladeEncoder:
    _check_max_length(model, max_length)
    encoder = SpladeEncoder(model, pooling, max_length, threads)
    if encoder.max_length < max_length:  # the tokenizer may allow less than the positions
        raise PipelineError(f"--max-length {max_length} exceeds what {model.name} supports "
                            f"({encoder.max_length} tokens)")
    return encoder


def encode(corpus: Path, output: Path, encoder: str | None = None, batch_size: int = 32,
           max_length: int = 512, pooling: str = "max", scale: float = 100, threads: int | None = None,
           shard_size: int = DEFAULT_SHARD_SIZE, overwrite: bool = False, progress: bool = True,
           say: Say = stderr) -> dict[str, Any]:
    """Corpus to JsonVectorCollection shards plus manifest.json."""
    _check_options(pooling, scale, max_length, batch_size)
    if shard_size < 1:
        raise PipelineError(f"--shard-size must be at least 1, got {shard_size}")
    model = models.resolve(encoder)
    _check_max_length(model, max_length)
    settings = EncodeSettings(model.describe(), pooling, scale, max_length, batch_size, shard_size)
    manifest, worked = encode_corpus(Path(corpus), Path(output),
                                     lambda: load_encoder(model, pooling, max_length, threads),
                                     settings, overwrite, progress)
    postings = manifest["postings"]
    verb = "encoded" if worked else "already encoded (use --overwrite to redo)"
    say(f"{output}: {verb}: {manifest['documents']:,} documents ({manifest['empty_documents']:,} empty) "
        f"in {len(manifest['shards'])} shard(s); postings per document: mean {postings['mean_per_doc']}, "
        f"max {postings['max_per_doc']}")
    return manifest


def index(collection: Path, index_dir: Path, threads: int | None = None, store_raw: bool = False,
          overwrite: bool = False, verbose: bool = False, say: Say = stderr, progress: bool = False
          ) -> dict[str, Any]:
    """JsonVectorCollection to a Lucene impact index, verified against the manifest."""
    record, worked = build_index(Path(collection), Path(index_dir), threads or default_threads(), store_raw,
                                 overwrite, verbose, progress)
    counters = record["counters"]
    verb = "indexed" if worked else "already indexed (use --overwrite to rebuild)"
    say(f"{index_dir}: {verb}: " + ", ".join(f"{name} {value:,}" for name, value in counters.items()))
    return record


def search(index_dir: Path, output: Path, topics: Path | dict[str, str] | None = None,
           encoder: str | None = None,
           hits: int = 1000, remove_query: bool = False, fmt: str = "trec", threads: int | None = None,
           batch_size: int = 32, encoded_queries: Path | None = None, scale: float | None = None,
           pooling: str | None = None, max_length: int | None = None, force: bool = False,
           overwrite: bool = False, tag: str = "splade", progress: bool = True,
           say: Say = stderr) -> dict[str, Any]:
    """Topics (a file, or ``{qid: text}``), or pre-encoded queries, to a run file."""
    output = Path(output)
    if output.exists() and not overwrite:
        say(f"{output}: exists; nothing to do (use --overwrite to search again)")
        return {"output": str(output), "skipped": True}
    if hits < 1:
        raise PipelineError(f"--hits must be at least 1, got {hits}")
    threads = threads or default_threads()
    require_index(Path(index_dir))
    record = index_record(Path(index_dir))
    if encoded_queries is not None:
        queries = read_encoded_queries(Path(encoded_queries))
        if topics is not None:
            queries = restrict(queries, _topics(topics), Path(encoded_queries))
    else:
        if topics is None:
            raise PipelineError("search needs --topics (or --encoded-queries)")
        topic_texts = _topics(topics)
        recorded = record or {}
        model = models.resolve(encoder) if encoder else _index_model(recorded)
        pooling = pooling or recorded.get("pooling", "max")
        scale = scale if scale is not None else recorded.get("scale", 100)
        max_length = max_length or recorded.get("max_length", 512)
        check_settings(record, {"encoder": model.fingerprint, "pooling": pooling, "scale": scale,
                                "max_length": max_length}, force, Path(index_dir))
        _check_options(pooling, scale, max_length, batch_size)
        query_encoder = load_encoder(model, pooling, max_length, threads)
        queries = encode_queries(query_encoder, topic_texts, scale, batch_size, progress)
    output.parent.mkdir(parents=True, exist_ok=True)
    counters = run_search(Path(index_dir), queries, output, hits, threads, remove_query, fmt, tag)
    say(f"{output}: {counters['queries']:,} queries searched, {counters['hits']:,} hits; "
        f"{counters['without_terms']} without terms, {counters['without_hits']} without hits")
    return counters


def _topics(topics: Path | dict[str, str]) -> dict[str, str]:
    return topics if isinstance(topics, dict) else read_topics(Path(topics))


def _index_model(record: dict[str, Any]) -> models.ModelRef:
    """The encoder an index was built with: by its name, else where it was loaded from."""
    recorded = record.get("encoder")
    if not recorded:
        return models.resolve(None)
    try:
        model = models.resolve(recorded["name"])
    except PipelineError:
        model = None
    if model is None or model.fingerprint != recorded["fingerprint"]:
        model = models.resolve(recorded["location"])
    return model


def require_file(path: Path, what: str) -> Path:
    if not Path(path).is_file():
        raise InputError(path, f"missing {what}")
    return Path(path)
