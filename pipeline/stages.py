"""The stages as users call them: argument values in, files and a summary line out.

``cli`` only parses arguments and calls these; ``run`` and ``demo`` chain them. Each stage prints
its counters (as Anserini's IndexCollection does) so every document and query is accounted for.
"""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

from pipeline import backends, devices, encoders, outputs
from pipeline.collection import DEFAULT_SHARD_SIZE, EncodeSettings, encode_corpus
from pipeline.devices import default_threads
from pipeline.impacts import ANSERINI_SCALE, POOLINGS, QUANTISATIONS
from pipeline.errors import ConsistencyError, InputError, PipelineError
from pipeline.index import RECORD, build_index
from pipeline.readers import check_run_tag, read_encoded_queries, read_topics
from pipeline.first_stage import build_companion, check_prune_docs, open_companion
from pipeline.search import FORMATS, encode_queries, index_record, require_full_index, restrict, run_search
from pipeline.two_step import TwoStepOptions, run_two_step, side_file

Say = Callable[[str], Any]


def stderr(text: str) -> None:
    print(text, file=sys.stderr)


def _check_options(pooling: str | None, scale: float | None, max_length: int | None, batch_size: int,
                   quantisation: str | None = None) -> None:
    if pooling is not None and pooling not in POOLINGS:
        raise PipelineError(f"--pooling must be one of {', '.join(POOLINGS)}, got {pooling!r}")
    if scale is not None and not scale > 0:
        raise PipelineError(f"--scale must be positive, got {scale}")
    if quantisation is not None and quantisation not in QUANTISATIONS:
        raise PipelineError(f"--quantisation must be one of {', '.join(QUANTISATIONS)}, got {quantisation!r}")
    if max_length is not None and not 2 <= max_length:
        raise PipelineError(f"--max-length must be at least 2, got {max_length}")
    if batch_size < 1:
        raise PipelineError(f"--batch-size must be at least 1, got {batch_size}")


def quantisation_scale(scale: float | None, quantisation: str | None) -> tuple[float, str]:
    """``--scale`` and ``--quantisation`` together: ``anserini`` fixes the scale at 51.2."""
    rule = quantisation or "scale"
    if rule == "anserini":
        if scale is not None and scale != ANSERINI_SCALE:
            raise PipelineError(f"--quantisation anserini quantises at scale {ANSERINI_SCALE:g} "
                                f"(round(w / 5 * 256)); leave out --scale {scale:g}")
        return ANSERINI_SCALE, rule
    return (100 if scale is None else scale), rule


def encode(corpus: Path, output: Path, encoder: str | None = None, batch_size: int = 32,
           max_length: int | None = None, pooling: str | None = None, scale: float | None = None,
           threads: int | None = None, shard_size: int = DEFAULT_SHARD_SIZE, overwrite: bool = False,
           progress: bool = True, say: Say = stderr, device: str | None = None, precision: str | None = None,
           backend: str = "torch", ray: str | None = None, ray_workers: int | None = None,
           quantisation: str | None = None) -> dict[str, Any]:
    """Corpus to JsonVectorCollection shards plus manifest.json.

    ``encoder``: a checkpoint or a sentence-transformers ``SparseEncoder`` folder (its document
    side; ``pipeline.encoders``). ``pooling`` and ``max_length`` default to the model's.
    ``ray``: encode the shards on Ray workers (``"local"`` starts a runtime here, else a cluster
    address); ``threads`` is then per worker (default 1), ``ray_workers`` the pool size.
    """
    _check_options(pooling, scale, max_length, batch_size, quantisation)
    scale, rule = quantisation_scale(scale, quantisation)
    if ray_workers is not None and ray is None:
        raise PipelineError("--ray-workers needs --ray")
    if ray is None:  # on Ray, the device is the workers' (the driver may have no GPU)
        # an absent device fails before any work; its kind is recorded (GPU vectors differ slightly)
        device_kind = backends.placement(backend, device, precision).kind
    else:
        from pipeline import distributed

        on_worker = "cuda" if distributed.uses_gpu(device) else device  # Ray gives each worker its own GPU
        device_kind = devices.kind_of(on_worker)
    if shard_size < 1:
        raise PipelineError(f"--shard-size must be at least 1, got {shard_size}")
    side = encoders.resolve(encoder, pooling, max_length).document
    record = side.model.describe(backend, backends.precision_of(backend, precision))
    if side.folder:
        record["folder"] = side.folder
    settings = EncodeSettings(record, side.pooling, scale, side.max_length, batch_size, shard_size,
                              device=device_kind, quantisation=rule, prompt=side.prompt, activation=side.activation)
    run_shards = None
    if ray is not None:
        run_shards = distributed.runner(
            side.model, lambda here: encoders.load_documents(replace(side, model=here), threads or 1, on_worker,
                                                             precision, backend),
            distributed.RayOptions(ray, ray_workers, threads or 1, device or "cpu"))
    manifest, worked = encode_corpus(Path(corpus), Path(output),
                                     lambda: encoders.load_documents(side, threads, device, precision, backend),
                                     settings, overwrite, progress, run_shards)
    postings = manifest["postings"]
    verb = "encoded" if worked else "already encoded (use --overwrite to redo)"
    say(f"{output}: {verb}: {manifest['documents']:,} documents ({manifest['empty_documents']:,} empty"
        f"{_emptied(manifest)}) "
        f"in {len(manifest['shards'])} shard(s); postings per document: mean {postings['mean_per_doc']}, "
        f"max {postings['max_per_doc']}")
    return manifest


def index(collection: Path, index_dir: Path, threads: int | None = None, store_raw: bool = False,
          overwrite: bool = False, verbose: bool = False, say: Say = stderr, progress: bool = False,
          query_encoder: str | None = None, prune_docs: int | None = None, prune_impact: int | None = None
          ) -> dict[str, Any]:
    """JsonVectorCollection to a Lucene impact index, verified against the manifest; with ``prune_docs``
    also its two-step companion (pipeline.first_stage), whose record is returned under ``two_step``,
    ``prune_impact`` leaving out of its first stage the postings under that impact too.
    Without ``prune_docs`` no companion is built (an existing one is left as it is).

    ``query_encoder`` (``--query-encoder``): the query side the record names for searches of this
    index; ``None``: the default, the collection's model (or its Router's query route). Checked
    against the collection's encoder (same vocabulary) before anything is built; on a finished
    index only the record changes.
    """
    def query_side(manifest: dict[str, Any] | None, existing: dict[str, Any] | None) -> dict[str, Any] | None:
        if manifest is None:
            if query_encoder is not None:
                raise PipelineError(f"{collection} was not encoded by splade-pipeline (no manifest); "
                                    "--query-encoder needs the document encoder it records")
            return None
        settings = manifest["settings"]
        document = encoders.document_side(settings)
        default = encoders.resolve(document.folder).query if document.folder and query_encoder is None else None
        side = encoders.query_side(query_encoder, document, default)
        if existing is not None and "query_encoder" not in existing and side == document:
            return None  # an index from before query sides were recorded: the same side, left as it is
        backend = settings["encoder"].get("backend", "torch") if not side.inference_free else "torch"
        return side.describe(backend, settings["encoder"].get("precision") if not side.inference_free else None)

    if prune_impact is not None and prune_docs is None:
        raise PipelineError("--prune-impact needs --prune-docs")
    if prune_docs is not None:
        check_prune_docs(prune_docs, prune_impact or 0)  # before the full index is built
    threads = threads or default_threads()
    record, worked = build_index(Path(collection), Path(index_dir), threads, store_raw, overwrite, verbose,
                                 progress, query_side)
    counters = record["counters"]
    verb = "indexed" if worked else "already indexed (use --overwrite to rebuild)"
    query = (record.get("query_encoder") or {}).get("name")
    say(f"{index_dir}: {verb}: " + ", ".join(f"{name} {value:,}" for name, value in counters.items())
        + (f"; queries: {query}" if query else ""))
    if prune_docs is not None:
        companion, built = build_companion(Path(collection), Path(index_dir), prune_docs, threads, overwrite,
                                           verbose, progress, prune_impact or 0)
        postings = companion["postings"]
        floor = f" of impact {prune_impact} or more" if prune_impact else ""
        say(f"{index_dir}: two-step companion {'built' if built else 'already built'}: up to {prune_docs} postings "
            f"per document{floor} kept in the first stage ({postings['first_stage']:,} of {postings['full']:,}), "
            f"{companion['indexed']:,} documents; forward store of the full vectors")
        record = {**record, "two_step": companion}
    return record


def search(index_dir: Path, output: Path, topics: Path | dict[str, str] | None = None,
           encoded_queries: Path | None = None, *, options: encoders.Options = encoders.Options(),
           hits: int = 1000, remove_query: bool | list[str] = False, fmt: str = "trec", tag: str = "splade",
           threads: int | None = None, batch_size: int = 32, force: bool = False, overwrite: bool = False,
           progress: bool = True, say: Say = stderr, two_step: TwoStepOptions | None = None) -> dict[str, Any]:
    """Topics (a file, or ``{qid: text}``), or pre-encoded queries, to a run file.

    Queries are encoded by the index's query side (``pipeline.encoders.query_spec``); ``options``
    may name another, refused unless ``force``. An inference-free side loads no model.

    ``two_step``: search the index's two-step companion and rescore exactly (pipeline.two_step); the
    settings in force go into the run's record, each query's candidates and bound into a side file.

    An existing run is kept only when the record beside it (``.FILE.splade-pipeline.json``) shows
    it was made from the same index, queries and settings; other inputs are refused without
    ``--overwrite``, and a file splade-pipeline did not write is never replaced.
    """
    output, index_dir = outputs.resolved(output), Path(index_dir)
    if hits < 1:
        raise PipelineError(f"--hits must be at least 1, got {hits}")
    if fmt not in FORMATS:
        raise PipelineError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if topics is None and encoded_queries is None:
        raise PipelineError("search needs --topics (or --encoded-queries)")
    if fmt == "trec":
        check_run_tag(tag)
    with outputs.locked(output, "search"):
        state, made = outputs.file_state(output, "--output")
        threads = threads or default_threads()
        require_full_index(index_dir)
        record = index_record(index_dir)
        inputs: dict[str, Any] = {"index": index_identity(index_dir), "hits": hits, "remove_query": remove_query,
                                  "format": fmt, "tag": tag if fmt == "trec" else None}
        if two_step is not None:
            two_step.check(hits)
            companion = open_companion(index_dir)
            inputs["two_step"] = {**two_step.describe(hits), "pruning": companion.record["pruning"],
                                  "companion": outputs.value_sha256(companion.record)}
        if encoded_queries is not None:
            inputs.update(encoded_queries=outputs.file_sha256(Path(encoded_queries))
                          if Path(encoded_queries).is_file() else str(encoded_queries),
                          topics=_topics_identity(topics) if topics is not None else None)
        else:
            _check_options(options.pooling, options.scale, options.max_length, batch_size, options.quantisation)
            if options.quantisation == "anserini" or options.scale is not None:
                scale, rule = quantisation_scale(options.scale, options.quantisation)
                options = replace(options, scale=scale, quantisation=rule)
            spec = encoders.query_spec(record, options)
            inputs.update(topics=_topics_identity(topics), **_run_settings(spec))
        if state == "ours":
            diff = outputs.differences(made.get("inputs", {}), inputs)
            if not diff and not overwrite:
                say(f"{output}: exists, made from the same index, queries and settings; nothing to do "
                    "(use --overwrite to search again)")
                return {"output": str(output), "skipped": True}
            if diff and not overwrite:
                raise ConsistencyError(f"{output} was made from other inputs ({'; '.join(diff)}); "
                                       "use --overwrite to search again")
        if encoded_queries is not None:
            queries = read_encoded_queries(Path(encoded_queries))
            if topics is not None:
                queries = restrict(queries, _topics(topics), Path(encoded_queries))
        else:
            topic_texts = _topics(topics)
            encoders.check_index(record, spec, force, index_dir)
            query_encoder = encoders.load_queries(spec, threads, options.device, index_dir)
            queries = encode_queries(query_encoder, topic_texts, batch_size, progress)
        outputs.writable_parent(output, "--output")
        with outputs.claimed(output, "run", inputs):
            if two_step is None:
                counters = run_search(index_dir, queries, output, hits, threads, remove_query, fmt, tag)
                side_file(output).unlink(missing_ok=True)  # an earlier two-step run's record of this file
            else:
                counters = run_two_step(index_dir, queries, output, hits, threads, remove_query, fmt, tag, two_step)
    say(f"{output}: {counters['queries']:,} queries searched, {counters['hits']:,} hits; "
        f"{counters['without_terms']} without terms, {counters['without_hits']} without hits")
    if two_step is not None:
        say(f"two-step: {counters['candidates_mean']} candidates rescored per query on average (k' "
            f"{counters['two_step']['candidates']}, {counters['two_step']['query_terms'] or 'all'} query terms in the "
            f"first stage); {counters['could_miss']} queries could have missed an exact top-{hits} document by "
            f"their bound; per query: {counters['per_query']}")
    if counters.get("ties_capped"):
        say(f"note: {counters['ties_capped']} queries tie at the cut-off beyond the depth limit (e.g. "
            f"{', '.join(counters['ties_capped_queries'][:3])}); ties broken by document id among the hits fetched")
    if counters.get("scores_beyond_2^24"):
        say(f"note: {counters['scores_beyond_2^24']} queries have scores of 2^24 or more, where Lucene's float32 "
            "scores are no longer exact integers (neighbouring dot products may tie)")
    return counters


def _run_settings(spec: encoders.QuerySpec) -> dict[str, Any]:
    """A run file's query settings, under the names earlier run records used (so they still match)."""
    found = spec.settings()
    found["encoder"] = found.pop("query_encoder")
    return found


def _emptied(manifest: dict[str, Any]) -> str:
    """Documents with text whose every weight rounded to 0 (kept, and skipped by Anserini as empty)."""
    count = manifest.get("empty_vectors", 0)
    return f", {count:,} more with every weight rounded to 0 at this --scale" if count else ""


def _topics_identity(topics: Path | dict[str, str]) -> str:
    """What the queries were: the topics file's content digest, or that of the given ``{qid: text}``."""
    if isinstance(topics, dict):
        return "sha256:" + outputs.value_sha256(topics)
    path = Path(topics)
    if not path.is_file():
        raise InputError(path, "no such file" if not path.exists() else "is not a file")
    return "sha256:" + outputs.file_sha256(path)


def index_identity(index_dir: Path) -> str:
    """What an index is: our record's digest, or (an index built elsewhere) its Lucene commit's."""
    record = Path(index_dir) / RECORD
    if record.is_file():
        return "record sha256:" + outputs.file_sha256(record)
    commits = sorted(Path(index_dir).glob("segments_*"))
    return f"{commits[-1].name} sha256:" + outputs.file_sha256(commits[-1]) if commits else str(index_dir)


def _topics(topics: Path | dict[str, str]) -> dict[str, str]:
    return topics if isinstance(topics, dict) else read_topics(Path(topics))


def require_file(path: Path, what: str) -> Path:
    if not Path(path).is_file():
        raise InputError(path, f"missing {what}")
    return Path(path)
