#!/usr/bin/env python
"""The index and search at scale: Lucene, Seismic and BMP on up to a million SPLADE documents.

No encoded collection of millions of passages can be had here, so this builds one from real
vectors: the 30,005 MS MARCO passages of ``msmarco-passage-dl-pool`` are encoded with splade-tiny
by the project's own encode stage, and synthetic documents are drawn to follow them (postings per
document, per-term document frequency and impacts; see bench/_synthetic.py and docs/scale.md).
The generated collection is measured against the real one and the comparison is written into the
result. The synthetic collection is streamed into JsonVectorCollection files, never held in memory.

At each size (default 100k, 300k and 1M documents) it records:

- index build time and threads (the project's index stage, Anserini IndexCollection), index size;
- Lucene search (``pipeline.search.ImpactSearcher``) with splade-tiny encodings of MS MARCO
  dev-small and DL19 queries: latency p50/p99 one query at a time, and QPS with 1 and 2 threads,
  at k=10 and k=1000; query encoding is timed separately;
- Seismic (pyseismic-lsr) and BMP (block-max pruning) on the same vectors and queries: build
  time, latency and recall@10 against the exact top 10 (Lucene's impact search is exhaustive);
- the peak RSS of every stage, each run in a process of its own;

then fits each figure's growth with the collection (a power law through the sizes) and projects
it to MS MARCO's 8.8M passages, printed as a table. Built artifacts live under
bench/results/work/scale/ and are reused: a rerun redoes only what is missing.

    python bench/scale.py --lock /tmp/bench.lock           # the full run (takes the lock per timed stage)
    python bench/scale.py --sizes 100000 300000            # fewer sizes
    python bench/scale.py --smoke                          # seconds: 30 passages, 1k and 2k documents
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

import common

HERE = Path(__file__).resolve()
MSMARCO = common.DATASETS / "msmarco-passage-dl-pool" / "collection.tsv"
TOPICS = common.DATASETS / "msmarco-passage-topics" / "queries"
TARGET = 8_841_823  # passages in MS MARCO v1
SEED = 12
# the first two are the settings of Seismic's own examples; the rest trade speed for recall (a heap
# factor under 1 skips fewer blocks), so that Seismic and two-step can be compared at equal recall
SEISMIC_SETTINGS = ({"query_cut": 10, "heap_factor": 0.7}, {"query_cut": 20, "heap_factor": 0.9},
                    {"query_cut": 10, "heap_factor": 0.5}, {"query_cut": 10, "heap_factor": 0.3},
                    {"query_cut": 20, "heap_factor": 0.5}, {"query_cut": 20, "heap_factor": 0.3})
MATCHED_RECALL = (0.9, 0.95, 0.97, 0.98, 0.99)  # recall@10 levels at which the engines are compared
BMP_SETTINGS = ({"alpha": 1.0, "beta": 1.0}, {"alpha": 0.9, "beta": 1.0})
BMP_MAX = 255  # BMP stores 8-bit impacts


# -- small helpers ------------------------------------------------------------------------------

def folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


def write_json_atomic(path: Path, value: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temp.write_text(json.dumps(value, indent=1) + "\n")
    os.replace(temp, path)


def read_queries(path: Path) -> dict[str, dict[str, int]]:
    queries = {}
    with open(path) as handle:
        for line in handle:
            record = json.loads(line)
            queries[record["id"]] = record["vector"]
    return queries


def recall_at(found: dict[str, list], exact: dict[str, list[list]], k: int = 10, slack: float = 1e-3
              ) -> dict[str, float]:
    """Recall@k against the exact top k: the id overlap, and tie-aware (any hit scoring at least the
    exact k-th score, less ``slack``, counts; the peers report float dot products, two-step search
    the same exact integers as the exhaustive run, so it is compared with ``slack`` 0)."""
    plain, tie_aware = [], []
    for qid, top in exact.items():
        if not top:
            continue
        ids = {docid for docid, _ in top[:k]}
        kth = top[min(k, len(top)) - 1][1]
        hits = found.get(qid, [])[:k]
        plain.append(len(ids & {docid for docid, _ in hits}) / len(ids))
        tie_aware.append(min(len(ids), sum(1 for _, score in hits if score >= kth - slack)) / len(ids))
    return {f"recall@{k}": round(float(np.mean(plain)), 4) if plain else float("nan"),
            f"recall@{k}_ties": round(float(np.mean(tie_aware)), 4) if tie_aware else float("nan")}


# -- stages (each runs in a child process of its own; see run_stage) ------------------------------

def stage_encode(corpus: str, output: str, shard_size: int) -> dict[str, Any]:
    """The real passages through the project's encode stage (resumable; a finished one is kept)."""
    from pipeline import stages

    start = time.perf_counter()
    manifest = stages.encode(Path(corpus), Path(output), shard_size=shard_size, progress=False)
    return {"documents": manifest["documents"], "empty_documents": manifest["empty_documents"],
            "postings": manifest["postings"], "encoder": manifest["settings"]["encoder"]["name"],
            "scale": manifest["settings"]["scale"], "seconds": round(time.perf_counter() - start, 2)}


def stage_adopt(source: str, output: str, corpus: str) -> dict[str, Any]:
    """A finished encoding of the same corpus made elsewhere by the encode stage, checked and copied.

    Encoding is deterministic, so a collection that the project's encode stage wrote for the same
    corpus with splade-tiny (same fingerprint), max pooling and scale 100 is the one this run would
    write; copying it saves the encoding's CPU time on a shared machine.
    """
    from pipeline import models
    from pipeline.collection import load_manifest, verify_vectors

    folder = Path(source)
    manifest = load_manifest(folder)
    if manifest is None:
        raise SystemExit(f"scale.py: {folder} has no manifest.json (unfinished encoding)")
    verify_vectors(folder, manifest)
    settings = manifest["settings"]
    wanted = {"source": str(Path(corpus).resolve()), "fingerprint": models.resolve(None).fingerprint,
              "pooling": "max", "scale": 100}
    found = {"source": manifest["source"]["path"], "fingerprint": settings["encoder"]["fingerprint"],
             "pooling": settings["pooling"], "scale": settings["scale"]}
    if found != wanted:
        raise SystemExit(f"scale.py: {folder} is another encoding: {found} (wanted {wanted})")
    target = Path(output)
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(folder, target)
    return {"adopted_from": str(folder), "documents": manifest["documents"],
            "empty_documents": manifest["empty_documents"], "postings": manifest["postings"],
            "encoder": "splade-tiny", "fingerprint": found["fingerprint"], "scale": found["scale"],
            "max_length": settings["max_length"]}


def stage_profile(collection: str, shards: list[str], profile: str, weights: str) -> dict[str, Any]:
    """Statistics of the real encoding (its finished shards) and calibrated sampling weights."""
    import _synthetic as syn

    start = time.perf_counter()
    prof = syn.profile(syn.read_vectors(Path(collection) / "vectors" / name for name in shards))
    read = time.perf_counter() - start
    w = syn.calibrate(prof)
    lengths, share = syn.length_groups(prof.lengths)
    got = syn.inclusion(w, lengths, share)
    target = prof.df / prof.documents
    prof.save(Path(profile))
    np.save(weights, w)
    return {"documents": prof.documents, "shards": len(shards), "terms": len(prof.terms),
            "postings": int(prof.df.sum()), "postings_per_document": round(float(prof.lengths.mean()), 2),
            "max_impact": int(prof.impacts.max()), "read_seconds": round(read, 2),
            "calibrate_seconds": round(time.perf_counter() - start - read, 2),
            "calibration_max_relative_error": float(np.max(np.abs(got - target) / target))}


def make_part(profile: str, weights: str, parts: str, part_size: int, index: int) -> int:
    """Part ``index``: ``part_size`` documents from a generator seeded by the part number alone, so a
    part is the same whenever and by whichever worker it is made; written to a temporary file and
    renamed, so a killed run leaves whole parts only."""
    import _synthetic as syn

    folder = Path(parts)
    path = folder / f"part-{index:05d}.jsonl"
    if path.exists():
        return 0
    prof = syn.Profile.load(Path(profile))
    gen = syn.Generator(prof, np.load(weights))
    names = syn.quoted(prof.terms)
    rng = np.random.default_rng([SEED, index])
    temp = folder.parent / f".{path.name}.{os.getpid()}.tmp"
    with open(temp, "w", encoding="utf-8") as handle:
        number = index * part_size
        for lo in range(0, part_size, 5000):
            for terms, impacts in gen.batch(min(5000, part_size - lo), rng):
                handle.write(syn.json_line(f"syn{number:08d}", terms, impacts, names))
                number += 1
    os.replace(temp, path)
    return part_size


def stage_generate(profile: str, weights: str, parts: str, part_size: int, count: int,
                   workers: int) -> dict[str, Any]:
    """Synthetic parts 0..count-1 streamed to JsonVectorCollection files by ``workers`` processes."""
    from concurrent.futures import ProcessPoolExecutor

    Path(parts).mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with ProcessPoolExecutor(workers) as pool:
        made = sum(pool.map(make_part, *zip(*[(profile, weights, parts, part_size, i) for i in range(count)])))
    seconds = time.perf_counter() - start
    return {"documents_made": made, "workers": workers, "seconds": round(seconds, 2),
            "documents_per_second": round(made / seconds, 1) if made else None}


def stage_verify(profile: str, files: list[str]) -> dict[str, Any]:
    """The generated collection, read back from its files, against the real encoding."""
    import _synthetic as syn

    prof = syn.Profile.load(Path(profile))
    tally = syn.Tally(prof)
    for vector in syn.read_vectors(Path(f) for f in files):
        tally.add(vector)
    return syn.compare(prof, tally)


def stage_index(collection: str, index: str, threads: int) -> dict[str, Any]:
    """The project's index stage on a plain JsonVectorCollection folder."""
    from pipeline.index import build_index

    start = time.perf_counter()
    record, _ = build_index(Path(collection), Path(index), threads, overwrite=True)
    seconds = time.perf_counter() - start
    return {"seconds": round(seconds, 2), "threads": threads, "files": len(list(Path(collection).glob("*.jsonl"))),
            "documents": record["documents"],
            "index_bytes": folder_bytes(Path(index)), "counters": record["counters"]}


def stage_queries(topics: list[list[str]], output: str | None, repeat_single: int,
                  threads: int | None = None) -> dict[str, Any]:
    """splade-tiny encodings of the topics (written to ``output``, when given); encoding timed one
    query at a time and in batches with ``threads`` torch threads (default: all cores)."""
    common.quiet_peers()
    from pipeline import encoders
    from pipeline.readers import read_topics
    from pipeline.search import encode_queries

    texts: dict[str, str] = {}
    for name, path, limit in topics:
        for qid, text in list(read_topics(Path(path)).items())[:int(limit)]:
            texts[f"{name}-{qid}"] = text
    encoder = encoders.load_documents(encoders.resolve(None).document, threads)
    queries = encoders.ModelQueries(encoder, 100, "scale")
    encode_queries(queries, dict(list(texts.items())[:8]), 32, progress=False)  # warm-up
    single = []
    for text in list(texts.values())[:repeat_single]:
        start = time.perf_counter()
        encoder.to_terms(encoder.encode([text])[0], 100)
        single.append(time.perf_counter() - start)
    start = time.perf_counter()
    vectors = encode_queries(queries, texts, 32, progress=False)
    batch_seconds = time.perf_counter() - start
    if output:
        with open(output, "w") as handle:
            for qid, vector in vectors.items():
                handle.write(json.dumps({"id": qid, "vector": vector}) + "\n")
    terms = [len(v) for v in vectors.values()]
    return {"queries": len(vectors), "by_set": {name: min(int(limit), len(read_topics(Path(path))))
                                                 for name, path, limit in topics},
            "terms_per_query": {"mean": round(float(np.mean(terms)), 1), "max": int(max(terms))},
            "encode_one_at_a_time": {**common.latency(single), "queries": len(single), "threads": encoder.torch.get_num_threads()},
            "encode_batched": {"batch_size": 32, "queries_per_second": round(len(vectors) / batch_seconds, 1)}}


def stage_lucene(index: str, queries: str, ks: list[int], threads: list[int], exact: str,
                 warmup: int) -> dict[str, Any]:
    """Lucene impact search through pipeline.search.ImpactSearcher: latency and QPS per k and threads."""
    from pipeline.search import ImpactSearcher

    qs = read_queries(Path(queries))
    searcher = ImpactSearcher(Path(index))
    out: dict[str, Any] = {"documents": searcher.documents, "queries": len(qs)}
    try:
        warm = dict(list(qs.items())[:warmup])
        searcher.search(warm, max(ks), threads=max(threads))
        for k in ks:
            times, top = [], {}
            for qid, vector in qs.items():
                start = time.perf_counter()
                hits = searcher.search({qid: vector}, k, threads=1)[0][qid]
                times.append(time.perf_counter() - start)
                top[qid] = hits[:10]
            figures: dict[str, Any] = {"latency_1_thread": common.latency(times)}
            if k == 10:
                write_json_atomic(Path(exact), top)
            for t in threads:
                start = time.perf_counter()
                searcher.search(qs, k, threads=t)
                figures[f"qps_{t}_threads"] = round(len(qs) / (time.perf_counter() - start), 1)
            out[f"k={k}"] = figures
    finally:
        searcher.close()
    return out


def stage_seismic(jsonl: str, queries: str, exact: str, threads: list[int], settings: list[dict[str, float]]
                  ) -> dict[str, Any]:
    """Seismic as its users run it: SeismicIndex.build on a JSONL file, default build settings; searched
    with each of ``settings`` (query_cut, heap_factor)."""
    try:
        import seismic
    except ImportError:
        return {"skipped": "pyseismic-lsr is not installed (pip install -e '.[bench]')"}
    qs = read_queries(Path(queries))
    reference = json.loads(Path(exact).read_text())
    start = time.perf_counter()
    index = seismic.SeismicIndex.build(jsonl, num_threads=max(threads))
    out: dict[str, Any] = {"build_seconds": round(time.perf_counter() - start, 2), "build_threads": max(threads),
                           "documents": index.len, "postings": index.nnz}
    kind = seismic.get_seismic_string()
    ids = np.array(list(qs), dtype=kind)
    comps = [np.array(list(v), dtype=kind) for v in qs.values()]
    vals = [np.array(list(v.values()), dtype=np.float32) for v in qs.values()]
    runs = []
    for setting in settings:
        times, found = [], {}
        for qid, c, v in zip(qs, comps, vals):
            begin = time.perf_counter()
            hits = index.search(qid, c, v, k=10, **setting)
            times.append(time.perf_counter() - begin)
            found[qid] = [(docid, score) for _, score, docid in hits]
        row: dict[str, Any] = {**setting, "latency_1_thread": common.latency(times), **recall_at(found, reference)}
        for t in threads:
            begin = time.perf_counter()
            index.batch_search(ids, comps, vals, k=10, num_threads=t, **setting)
            row[f"qps_{t}_threads"] = round(len(qs) / (time.perf_counter() - begin), 1)
        runs.append(row)
    out["k=10"] = runs
    return out


def stage_bmp(files: list[str], index: str, queries: str, exact: str, max_impact: int) -> dict[str, Any]:
    """BMP as its users run it: bmp.Indexer fed document by document, bmp.Searcher per query.

    BMP stores 8-bit impacts, so (as for its CIFF inputs) impacts are requantised to 1..255 by
    ``round(v * 255 / max_impact)``; its exact mode is exact for those, hence recall below 1.
    """
    try:
        import bmp
    except ImportError:
        return {"skipped": "bmp is not installed (pip install -e '.[bench]')"}

    qs = read_queries(Path(queries))
    reference = json.loads(Path(exact).read_text())
    factor = BMP_MAX / max(max_impact, BMP_MAX)
    path = Path(index)
    path.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    indexer = bmp.Indexer(str(path), 32, False)
    for name in files:
        with open(name, encoding="utf-8") as handle:
            for line in handle:
                doc = json.loads(line)
                indexer.add_document(doc["id"], {t: max(1, int(round(v * factor))) for t, v in doc["vector"].items()})
    indexer.finish()
    build = time.perf_counter() - start
    begin = time.perf_counter()
    searcher = bmp.Searcher(str(path))
    out: dict[str, Any] = {"build_seconds": round(build, 2), "build_threads": 1, "block_size": 32,
                           "load_seconds": round(time.perf_counter() - begin, 2),
                           "index_bytes": path.stat().st_size, "requantised_by": round(factor, 5)}
    runs = []
    for setting in BMP_SETTINGS:
        times, found = [], {}
        for qid, vector in qs.items():
            begin = time.perf_counter()
            docids, scores = searcher.search(vector, k=10, **setting)
            times.append(time.perf_counter() - begin)
            found[qid] = list(zip(docids, scores))
        recall = recall_at(found, reference)
        recall.pop("recall@10_ties")  # BMP's scores are on its requantised scale: no score threshold applies
        row = {**setting, "latency_1_thread": common.latency(times), **recall, "qps_1_thread": round(len(qs) / sum(times), 1)}
        runs.append(row)
    out["k=10"] = runs
    return out


def stage_companion(collection: str, index: str, prune_docs: int, threads: int, index_record: str,
                    forward_format: str, min_impact: int = 0) -> dict[str, Any]:
    """The index stage's two-step companion (pruned first-stage index + forward store) beside a built
    index; ``index_record`` (the full index's record checksum) and ``forward_format`` (the store's
    format, so a store of another format is built again) only key the cache. ``min_impact``: the
    first stage also drops postings under it (``index --prune-impact``)."""
    from pipeline.first_stage import build_companion, companion_bytes

    start = time.perf_counter()
    record, _ = build_companion(Path(collection), Path(index), prune_docs, threads, overwrite=True,
                                min_impact=min_impact)
    sizes = companion_bytes(Path(index))
    return {"seconds": round(time.perf_counter() - start, 2), "threads": threads, "prune_docs": prune_docs,
            **({"min_impact": min_impact, "pruned_to_nothing": record["pruned_to_nothing"]} if min_impact else {}),
            "build_seconds": record["build_seconds"], "postings": record["postings"],
            "first_stage_mb": round(sizes["first_stage_bytes"] / 2**20, 1),
            "forward_store_mb": round(sizes["forward_bytes"] / 2**20, 1),
            "companion_mb": round(sum(sizes.values()) / 2**20, 1)}


def stage_two_step(index: str, queries: str, settings: list[list], threads: list[int], warmup: int,
                   companion_record: str) -> dict[str, Any]:
    """Two-step search (pipeline.two_step.TwoStepSearcher) per setting [query terms, k, candidates]:
    latency one query at a time (and that of the first stage alone), QPS with 1 and 2 threads, recall@k
    against the exhaustive top k of the full index (computed first, untimed), candidates rescored and
    queries the bound flags."""
    from pipeline.search import ImpactSearcher
    from pipeline.two_step import TwoStepOptions, TwoStepSearcher

    qs = read_queries(Path(queries))
    ks = sorted({int(k) for _, k, _ in settings})
    full = ImpactSearcher(Path(index))
    try:
        exact = {k: full.search(qs, k, threads=max(threads))[0] for k in ks}
    finally:
        full.close()
    searcher = TwoStepSearcher(Path(index))
    out: dict[str, Any] = {"documents": searcher.documents, "queries": len(qs), "settings": []}
    try:
        warm = dict(list(qs.items())[:warmup])
        for query_terms, k, candidates in settings:
            options = TwoStepOptions(int(candidates), None if query_terms is None else int(query_terms))
            searcher.search(warm, k, threads=max(threads), options=options)
            times, found, missable, counts = [], {}, 0, []
            for qid, vector in qs.items():
                start = time.perf_counter()
                ranked, _, per_query = searcher.search({qid: vector}, k, options=options)
                times.append(time.perf_counter() - start)
                found[qid] = ranked[qid]
                missable += per_query[qid]["could_miss"]
                counts.append(per_query[qid]["candidates"])
            row: dict[str, Any] = {"query_terms": query_terms, "k": k, "candidates": candidates,
                                   "latency_1_thread": common.latency(times), **recall_at(found, exact[k], k, slack=0),
                                   "candidates_mean": round(float(np.mean(counts)), 1),
                                   "could_miss_share": round(missable / max(len(qs), 1), 4),
                                   "first_stage_latency_1_thread": first_stage_latency(searcher, qs, options, k)}
            for t in threads:
                start = time.perf_counter()
                searcher.search(qs, k, threads=t, options=options)
                row[f"qps_{t}_threads"] = round(len(qs) / (time.perf_counter() - start), 1)
            out["settings"].append(row)
    finally:
        searcher.close()
    return out


def first_stage_latency(searcher: Any, qs: dict[str, dict[str, int]], options: Any, k: int) -> dict[str, float]:
    """The first stage alone, one query at a time, as two-step search makes it (the query cut to its
    top terms, Lucene's k' best as document numbers), nothing rescored: the part of a two-step
    query's latency that is Lucene's, to set beside a peer's whole query."""
    from pipeline.forward import top_terms

    depth, terms = options.depth(k), options.query_terms
    first_stage = lambda vector: searcher.first.top_numbers(dict(top_terms(vector, terms)), depth)  # noqa: E731
    return common.time_each(qs.values(), first_stage)


STAGES = {"encode": stage_encode, "adopt": stage_adopt, "profile": stage_profile, "generate": stage_generate, "verify": stage_verify,
          "index": stage_index, "queries": stage_queries, "lucene": stage_lucene, "seismic": stage_seismic,
          "bmp": stage_bmp, "companion": stage_companion, "two_step": stage_two_step}


# -- running a stage in its own process and measuring it ------------------------------------------

def sample_tree_rss(pid: int, stop: threading.Event, peak: list[int]) -> None:
    """Largest summed RSS of a process and its descendants (psutil, every 0.2 s)."""
    try:
        import psutil
    except ImportError:
        return
    try:
        root = psutil.Process(pid)
    except psutil.Error:
        return
    while not stop.is_set():
        total = 0
        try:
            for proc in [root, *root.children(recursive=True)]:
                with contextlib.suppress(psutil.Error):
                    total += proc.memory_info().rss
        except psutil.Error:
            break
        peak[0] = max(peak[0], total)
        stop.wait(0.2)


LOCK_WAIT: list[float | None] = [None]  # --lock-wait, set by main
CACHED_ONLY = [False]  # --cached-only, set by main
RERUN: set[str] = set()  # --rerun: stage names measured again even where a record with the same args exists


def reusable(work: Path, name: str, label: str, args: dict[str, Any]) -> dict[str, Any] | None:
    """The record ``run_stage`` will reuse rather than run stage ``name`` (None: it runs the stage)."""
    path = work / "stages" / f"{label}.json"
    if name in RERUN or not path.exists():
        return None
    record = json.loads(path.read_text())
    return record if record.get("args") == args else None


def run_stage(work: Path, name: str, label: str, args: dict[str, Any], lock: str | None = None,
              timed: bool = False) -> dict[str, Any]:
    """Run stage ``name`` in a child process, or return its record from an earlier run with the same args.

    The record adds wall seconds, the child's peak RSS (``ru_maxrss`` from wait4: the largest single
    process of the stage, its own children included) and the sampled peak of the whole process tree.
    """
    record_path = work / "stages" / f"{label}.json"
    record = reusable(work, name, label, args)
    if record is not None:
        measured = record.get("measured") or {}
        print(f"[scale] {label}: reused from {record_path} (measured {measured.get('finished', 'before records said')}"
              f"{', commit ' + str(measured.get('commit'))[:7] if measured.get('commit') else ''})", file=sys.stderr)
        return record
    if CACHED_ONLY[0]:
        print(f"[scale] {label}: not measured (--cached-only)", file=sys.stderr)
        return {"result": {"not_measured": True}}
    out = work / "stages" / f".{label}.out.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, str(HERE), "--stage", name, "--stage-args", json.dumps(args), "--stage-out", str(out)]
    print(f"[scale] {label} ...", file=sys.stderr, flush=True)
    with common.bench_lock(lock if timed else None, LOCK_WAIT[0]) as lock_state:
        load_before = os.getloadavg()[0]
        start = time.perf_counter()
        child = subprocess.Popen(command, cwd=str(common.ROOT))
        stop, peak = threading.Event(), [0]
        sampler = threading.Thread(target=sample_tree_rss, args=(child.pid, stop, peak), daemon=True)
        sampler.start()
        _, status, usage = os.wait4(child.pid, 0)
        child.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - start
        stop.set()
        sampler.join()
    if child.returncode != 0:
        raise SystemExit(f"scale.py: stage {label} failed (exit {child.returncode})")
    result = json.loads(out.read_text())
    out.unlink()
    record = {"args": args, "result": result, "wall_seconds": round(wall, 2),
              "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
              "peak_tree_rss_mb": round(peak[0] / 2**20, 1) if peak[0] else None, "bench_lock": lock_state,
              "load_average_1min": [round(load_before, 1), round(os.getloadavg()[0], 1)],
              # where a later run reuses this record, what measured it
              "measured": {"finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                           "commit": common.STARTED.get("commit"), "clean": common.STARTED.get("clean")}}
    write_json_atomic(record_path, record)
    print(f"[scale] {label}: {wall:.1f} s, peak RSS {record['peak_rss_mb']} MB", file=sys.stderr, flush=True)
    return record


def child_main(name: str, args: str, out: str) -> int:
    result = STAGES[name](**json.loads(args))
    write_json_atomic(Path(out), result)
    return 0


# -- engines at equal recall ------------------------------------------------------------------------

def fastest_at(rows: list[dict[str, Any]], level: float, name: Callable[[dict[str, Any]], str]
               ) -> dict[str, Any] | None:
    """The setting with the lowest p50 among ``rows`` whose recall@10 reaches ``level`` (None: none does)."""
    reaching = [row for row in rows if row.get("recall@10", 0.0) >= level]
    if not reaching:
        return None
    best = min(reaching, key=lambda row: row["latency_1_thread"]["p50_ms"])
    return {"setting": name(best), "p50_ms": best["latency_1_thread"]["p50_ms"], "recall@10": best["recall@10"]}


def pruning_label(entry: dict[str, Any], key: str) -> str:
    """The first-stage pruning of the two-step entry ``key`` (``two_step`` or ``two_step@...``), as
    the tables and the plot name it: N postings per document, and the impact floor where there is one."""
    built = entry.get("companion" + key[len("two_step"):], {}).get("result", {})
    floor = built.get("min_impact")
    return f"N={built.get('prune_docs')}" + (f", impact >= {floor}" if floor else "")


def matched_recall(entry: dict[str, Any]) -> list[dict[str, Any]]:
    """At each recall@10 level, the fastest two-step setting and the fastest Seismic setting that reach
    it (k=10, one query at a time), beside exhaustive Lucene (recall 1): the engines compared at equal
    recall, not each at a setting of its own choosing."""
    two_step = [{**row, "pruning": pruning_label(entry, key)} for key, value in entry.items()
                if key.startswith("two_step") for row in value.get("result", {}).get("settings", []) if row["k"] == 10]
    seismic = entry.get("seismic", {}).get("result", {}).get("k=10") or []
    lucene = entry.get("lucene", {}).get("result", {}).get("k=10", {}).get("latency_1_thread", {}).get("p50_ms")
    return [{"recall@10_at_least": level,
             "two_step": fastest_at(two_step, level, lambda r: f"{r['pruning']}, {r['query_terms'] or 'all'} terms, "
                                                               f"k' {r['candidates']}"),
             "seismic": fastest_at(seismic, level, lambda r: f"query_cut {r['query_cut']}, heap_factor {r['heap_factor']}"),
             "lucene_exhaustive_p50_ms": lucene} for level in MATCHED_RECALL]


def matched_recall_table(matched: dict[str, list[dict[str, Any]]]) -> str:
    cell = lambda found: "not reached" if found is None else \
        f"{found['p50_ms']:.2f} ms ({found['setting']}; {found['recall@10']:.4f})"
    lines = ["| documents | recall@10 at least | two-step p50 (setting; recall@10) | Seismic p50 (setting; recall@10) "
             "| exhaustive Lucene p50 |", "|---|---|---|---|---|"]
    for size, rows in matched.items():
        for row in rows:
            lucene = row["lucene_exhaustive_p50_ms"]
            lines.append(f"| {int(size):,} | {row['recall@10_at_least']} | {cell(row['two_step'])} | "
                         f"{cell(row['seismic'])} | {'-' if lucene is None else f'{lucene:.2f} ms'} |")
    return "\n".join(lines)


# -- growth ---------------------------------------------------------------------------------------

def power_fit(sizes: list[int], values: list[float]) -> dict[str, float] | None:
    """``value = a * size^b`` by least squares in log-log space, and ``value = c + d * size`` by least
    squares; each projected to 8.8M documents. For growth slower than linear (b < 1) the straight
    line overestimates and the power law is the better guess; where a fixed cost dominates the small
    sizes (JVM start-up), the straight line is."""
    points = [(n, v) for n, v in zip(sizes, values) if v is not None and v > 0 and math.isfinite(v)]
    if len(points) < 2:
        return None
    n = np.array([p[0] for p in points], dtype=np.float64)
    v = np.array([p[1] for p in points], dtype=np.float64)
    b, a = np.polyfit(np.log(n), np.log(v), 1)
    d, c = np.polyfit(n, v, 1)
    return {"exponent": round(float(b), 3), "projected_8.8M": float(np.exp(a + b * math.log(TARGET))),
            "linear_intercept": float(c), "linear_per_million": float(d * 1e6),
            "linear_projected_8.8M": float(c + d * TARGET)}


def figure_rows(per_size: dict[int, dict[str, Any]]) -> list[tuple[str, dict[int, float | None]]]:
    """The figures that are fitted and projected, by size."""
    sizes = sorted(per_size)
    rows = [
        ("index build, s (2 threads)", ("index", "result", "seconds")),
        ("index size, MB", ("index", "result", "index_mb")),
        ("index stage peak RSS, MB", ("index", "peak_tree_rss_mb")),
        ("Lucene k=10 latency p50, ms", ("lucene", "result", "k=10", "latency_1_thread", "p50_ms")),
        ("Lucene k=10 latency p99, ms", ("lucene", "result", "k=10", "latency_1_thread", "p99_ms")),
        ("Lucene k=10 QPS, 1 thread", ("lucene", "result", "k=10", "qps_1_threads")),
        ("Lucene k=10 QPS, 2 threads", ("lucene", "result", "k=10", "qps_2_threads")),
        ("Lucene k=1000 latency p50, ms", ("lucene", "result", "k=1000", "latency_1_thread", "p50_ms")),
        ("Lucene k=1000 latency p99, ms", ("lucene", "result", "k=1000", "latency_1_thread", "p99_ms")),
        ("Lucene k=1000 QPS, 1 thread", ("lucene", "result", "k=1000", "qps_1_threads")),
        ("Lucene k=1000 QPS, 2 threads", ("lucene", "result", "k=1000", "qps_2_threads")),
        ("Lucene search stage peak RSS, MB", ("lucene", "peak_tree_rss_mb")),
        ("Seismic build, s", ("seismic", "result", "build_seconds")),
        ("Seismic stage peak RSS, MB", ("seismic", "peak_tree_rss_mb")),
        ("Seismic k=10 latency p50, ms", ("seismic", "result", "k=10", "0", "latency_1_thread", "p50_ms")),
        ("Seismic recall@10", ("seismic", "result", "k=10", "0", "recall@10")),
        ("BMP build, s", ("bmp", "result", "build_seconds")),
        ("BMP stage peak RSS, MB", ("bmp", "peak_tree_rss_mb")),
        ("BMP k=10 latency p50, ms (exact mode)", ("bmp", "result", "k=10", "0", "latency_1_thread", "p50_ms")),
        ("BMP recall@10 (exact mode)", ("bmp", "result", "k=10", "0", "recall@10")),
        ("two-step companion build, s (first-stage index + forward store)", ("companion", "result", "seconds")),
        ("two-step first-stage index + forward store, MB", ("companion", "result", "companion_mb")),
        ("two-step k=10 latency p50, ms", ("two_step", "result", "default_k=10", "latency_1_thread", "p50_ms")),
        ("two-step k=10 latency p99, ms", ("two_step", "result", "default_k=10", "latency_1_thread", "p99_ms")),
        ("two-step k=10 QPS, 1 thread", ("two_step", "result", "default_k=10", "qps_1_threads")),
        ("two-step k=10 QPS, 2 threads", ("two_step", "result", "default_k=10", "qps_2_threads")),
        ("two-step recall@10", ("two_step", "result", "default_k=10", "recall@10")),
        ("two-step k=1000 latency p50, ms", ("two_step", "result", "default_k=1000", "latency_1_thread", "p50_ms")),
        ("two-step k=1000 latency p99, ms", ("two_step", "result", "default_k=1000", "latency_1_thread", "p99_ms")),
        ("two-step k=1000 QPS, 1 thread", ("two_step", "result", "default_k=1000", "qps_1_threads")),
        ("two-step k=1000 QPS, 2 threads", ("two_step", "result", "default_k=1000", "qps_2_threads")),
        ("two-step recall@1000", ("two_step", "result", "default_k=1000", "recall@1000")),
    ]
    # the two-step rows are those of the entry named ``two_step``: its pruning goes in their label
    prunings = sorted({pruning_label(per_size[n], "two_step") for n in sizes if "two_step" in per_size[n]})
    named = f"two-step ({'; '.join(prunings)})" if prunings else "two-step"
    rows = [(named + label[len("two-step"):] if label.startswith("two-step") else label, path)
            for label, path in rows]
    out = []
    for label, path in rows:
        values = {}
        for n in sizes:
            value: Any = per_size[n]
            for key in path:
                if isinstance(value, list) and key.isdigit() and int(key) < len(value):
                    value = value[int(key)]
                elif isinstance(value, dict) and key in value:
                    value = value[key]
                else:
                    value = None
                    break
            values[n] = value if isinstance(value, (int, float)) else None
        if any(v is not None for v in values.values()):
            out.append((label, values))
    return out


def fit_row(label: str, sizes: list[int], values: list[float | None]) -> dict[str, float] | None:
    """The growth fit of one figure; throughput is fitted as seconds per query, then inverted."""
    if "recall" in label:
        return None
    if "QPS" not in label:
        return power_fit(sizes, values)
    fit = power_fit(sizes, [1 / v if v else None for v in values])
    if fit is None:
        return None
    linear = fit["linear_projected_8.8M"]
    return {**fit, "exponent": -fit["exponent"], "projected_8.8M": 1 / fit["projected_8.8M"],
            "linear_projected_8.8M": 1 / linear if linear > 0 else float("nan")}


def growth_table(per_size: dict[int, dict[str, Any]]) -> tuple[list[dict[str, Any]], str]:
    sizes = sorted(per_size)
    rows, lines = [], []
    head = ["figure", *[f"{n:,}" for n in sizes], "growth exponent", "8.8M (power law)", "8.8M (linear)"]
    lines.append("| " + " | ".join(head) + " |")
    lines.append("|" + "---|" * len(head))
    for label, values in figure_rows(per_size):
        fit = fit_row(label, sizes, [values[n] for n in sizes])
        row: dict[str, Any] = {"figure": label, "by_size": {str(n): values[n] for n in sizes}}
        if fit:
            row.update(growth_exponent=fit["exponent"], projected_8_8M_power_law=round(fit["projected_8.8M"], 2),
                       projected_8_8M_linear=round(fit["linear_projected_8.8M"], 2),
                       linear_intercept=round(fit["linear_intercept"], 3),
                       linear_per_million=round(fit["linear_per_million"], 3))
        rows.append(row)
        cells = [("" if values[n] is None else f"{values[n]:,.4g}") for n in sizes]
        tail = ([f"{fit['exponent']:.2f}", f"{fit['projected_8.8M']:,.4g}",
                 f"{fit['linear_projected_8.8M']:,.4g}" if fit["linear_projected_8.8M"] > 0 else "n/a"]
                if fit else ["", "", ""])
        lines.append("| " + " | ".join([label, *cells, *tail]) + " |")
    return rows, "\n".join(lines)


# -- the benchmark ----------------------------------------------------------------------------------

def link_collection(parts: Path, documents: int, part_size: int, folder: Path, files: int) -> list[Path]:
    """A collection folder of the first ``documents`` synthetic documents in ``files`` files of equal
    size (within one document). Anserini's IndexCollection gives each thread whole files, so a
    collection of fewer files than threads would index on fewer threads than the record says; equal
    files keep every size's threads equally busy and the growth fit comparable. A marker records
    the layout, so a rerun reuses a finished folder and redoes an interrupted one."""
    marker = folder.parent / f".{folder.name}.layout.json"
    layout = {"documents": documents, "files": files, "part_size": part_size}
    names = [f"part-{i:05d}.jsonl" for i in range(files)]
    if marker.exists() and json.loads(marker.read_text()) == layout:
        return [folder / name for name in names]
    marker.unlink(missing_ok=True)
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    sizes = [documents // files + (1 if i < documents % files else 0) for i in range(files)]

    def source_lines():
        for i in range(-(-documents // part_size)):
            with open(parts / f"part-{i:05d}.jsonl", "rb") as handle:
                yield from handle

    lines = source_lines()
    for name, size in zip(names, sizes):
        with open(folder / name, "wb") as out:
            for _, line in zip(range(size), lines):
                out.write(line)
    marker.write_text(json.dumps(layout))
    return [folder / name for name in names]


def concatenate(files: list[Path], target: Path) -> None:
    """One JSONL file of the collection (Seismic builds from a single file)."""
    if target.exists():
        return
    temp = target.with_name(f".{target.name}.tmp")
    with open(temp, "wb") as out:
        for name in files:
            with open(name, "rb") as handle:
                shutil.copyfileobj(handle, out, 1 << 22)
    os.replace(temp, target)


def main() -> int:
    parser = common.parser(__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 300_000, 1_000_000])
    parser.add_argument("--dev-queries", type=int, default=200, help="dev-small queries used (all DL19 ones are)")
    parser.add_argument("--threads", type=int, default=2, help="indexing threads; search runs with 1 and this many")
    parser.add_argument("--cached-only", action="store_true",
                        help="write the result from stages already measured; run nothing new")
    parser.add_argument("--part-size", type=int, default=None,
                        help="documents per generated file (default 100,000; smoke 1,000)")
    parser.add_argument("--index-only", type=int, nargs="*", default=[],
                        help="sizes at which only the index is built and measured (no search)")
    parser.add_argument("--engines", nargs="*", default=["seismic", "bmp", "two-step"],
                        help="what runs beside exhaustive Lucene: seismic, bmp, two-step (the project's pruned "
                             "first stage + exact rescoring, at every searched size and on the real vectors)")
    parser.add_argument("--prune-docs", type=int, nargs="+", default=None,
                        help="two-step: postings kept per document in the first stage, one companion after "
                             "another (default: the index stage's default)")
    parser.add_argument("--prune-impact", type=common.floor, nargs="+", default=None, metavar="T",
                        help="two-step: impact floors of the first stage (index --prune-impact; 0: none), each "
                             "with each --prune-docs value (default: 0)")
    parser.add_argument("--two-step-settings", nargs="+", default=None, metavar="Q:K:CANDIDATES",
                        help="two-step settings measured, e.g. 10:10:100 (query terms, k, candidates; Q 0 = all); "
                             "default: Q 5, 10, 20 with k=10 at 50/100/200 candidates and k=1000 at 1000/2000")
    parser.add_argument("--engine-sizes", type=int, nargs="*", default=None,
                        help="sizes at which the peers run (default: all)")
    parser.add_argument("--verify-documents", type=int, default=None,
                        help="synthetic documents read back for the 10%% check (default: the largest size, at most 100k)")
    parser.add_argument("--work", type=Path, default=None, help="artifact folder (default bench/results/work/scale)")
    parser.add_argument("--real", type=Path, default=None,
                        help="a finished encode-stage collection of the same corpus (splade-tiny, max, scale 100) "
                             "to copy instead of encoding the passages again")
    parser.add_argument("--rerun", nargs="*", default=[], choices=sorted(STAGES),
                        help="stages measured again even where a record with the same arguments exists (e.g. "
                             "lucene seismic two_step: a same-run comparison after the code changed)")
    parser.add_argument("--lock", default=None, help="flock this file around each timed stage (e.g. /tmp/bench.lock)")
    parser.add_argument("--lock-wait", type=float, default=None,
                        help="seconds to wait for --lock before running a stage without it (recorded)")
    parser.add_argument("--stage", help=argparse_hidden())
    parser.add_argument("--stage-args", help=argparse_hidden())
    parser.add_argument("--stage-out", help=argparse_hidden())
    args = parser.parse_args()
    if args.stage:
        sys.path.insert(0, str(HERE.parent))
        return child_main(args.stage, args.stage_args, args.stage_out)

    smoke = args.smoke
    LOCK_WAIT[0] = args.lock_wait
    CACHED_ONLY[0] = args.cached_only
    if args.rerun and args.cached_only:
        parser.error("--rerun measures stages again; --cached-only measures nothing: give one of them")
    RERUN.update(args.rerun)
    if smoke:
        args.sizes, args.dev_queries = [1000, 2000], 5
        args.engine_sizes = args.engine_sizes or [2000]
        args.index_only = args.index_only or [1000]  # searched at 2000 only: one JVM start less, same code paths
    sizes = sorted(set(args.sizes))
    part_size = args.part_size or (1000 if smoke else 100_000)
    work = Path(args.work) if args.work else (Path(args.results) / "work" / "scale-smoke" if smoke
                                              else common.RESULTS / "work" / "scale")
    work.mkdir(parents=True, exist_ok=True)
    if not MSMARCO.is_file():
        raise SystemExit(f"scale.py: {MSMARCO} not found (set SPLADE_DATASETS)")

    corpus = MSMARCO
    if smoke:
        corpus = work / "collection-head.tsv"
        if not corpus.exists():
            with open(MSMARCO, encoding="utf-8") as src:
                corpus.write_text("".join(line for _, line in zip(range(30), src)), encoding="utf-8")
    real = work / "real"
    stages: dict[str, Any] = {}
    if args.real:
        stages["encode"] = run_stage(work, "adopt", "adopt", {"source": str(Path(args.real).resolve()),
                                                              "output": str(real), "corpus": str(corpus)})
    else:
        stages["encode"] = run_stage(work, "encode", "encode", {"corpus": str(corpus), "output": str(real),
                                                                "shard_size": 2000 if not smoke else 15})
    shards = sorted(p.name for p in (real / "vectors").glob("part-*.jsonl"))
    if not shards:
        raise SystemExit(f"scale.py: no finished shard in {real / 'vectors'}")
    stages["profile"] = run_stage(work, "profile", "profile", {"collection": str(real), "shards": shards,
                                                               "profile": str(work / "profile.npz"),
                                                               "weights": str(work / "weights.npy")})
    parts = work / "parts"
    stages["generate"] = run_stage(work, "generate", f"generate-{sizes[-1]}",
                                   {"profile": str(work / "profile.npz"), "weights": str(work / "weights.npy"),
                                    "parts": str(parts), "part_size": part_size,
                                    "count": -(-sizes[-1] // part_size), "workers": args.threads})
    if not stages["generate"]["result"].get("documents_made"):  # parts made by an earlier run: its throughput
        made = [json.loads(p.read_text()) for p in (work / "stages").glob("generate-*.json")]
        made = [m for m in made if m["result"]["documents_made"]]
        if made:
            stages["generate"] = max(made, key=lambda m: m["result"]["documents_made"])
    verify_docs = args.verify_documents or min(sizes[-1], 100_000)
    verify_files = [str(parts / f"part-{i:05d}.jsonl") for i in range(max(1, verify_docs // part_size))]
    stages["verify"] = run_stage(work, "verify", f"verify-{verify_docs}",
                                 {"profile": str(work / "profile.npz"), "files": verify_files})

    topics = [["dev", str(TOPICS / "dev-small.jsonl"), args.dev_queries],
              ["dl19", str(TOPICS / "dl19.jsonl"), 2 if smoke else 10_000]]
    queries = work / "queries.jsonl"
    stages["queries"] = run_stage(work, "queries", f"queries-{args.dev_queries}",
                                  {"topics": topics, "output": str(queries),
                                   "repeat_single": 5 if smoke else 100}, args.lock, timed=True)
    # Queries are short: one torch thread is their natural setting (and the 1-thread search's match).
    stages["query_encoding_1_thread"] = run_stage(work, "queries", f"query-encoding-1-thread-{args.dev_queries}",
                                                  {"topics": topics, "output": None,
                                                   "repeat_single": 5 if smoke else 100, "threads": 1},
                                                  args.lock, timed=True)
    per_size: dict[int, dict[str, Any]] = {}
    engine_sizes = set(args.engine_sizes if args.engine_sizes is not None else sizes)
    for n in sizes:
        files = link_collection(parts, n, part_size, work / "collections" / str(n),
                                max(args.threads, -(-n // part_size)) // args.threads * args.threads)
        entry: dict[str, Any] = {}
        entry["index"] = run_stage(work, "index", f"index-{n}",
                                   {"collection": str(work / "collections" / str(n)),
                                    "index": str(work / "indexes" / str(n)), "threads": args.threads},
                                   args.lock, timed=True)
        if "index_bytes" in entry["index"]["result"]:
            entry["index"]["result"]["index_mb"] = round(entry["index"]["result"]["index_bytes"] / 2**20, 1)
        if n in args.index_only:
            per_size[n] = entry
            continue
        exact = work / "exact" / f"{n}-{args.dev_queries}.json"
        entry["lucene"] = run_stage(work, "lucene", f"lucene-{n}-{args.dev_queries}",
                                    {"index": str(work / "indexes" / str(n)), "queries": str(queries),
                                     "ks": [10, 1000], "threads": sorted({1, args.threads}),
                                     "exact": str(exact), "warmup": 5 if smoke else 100}, args.lock, timed=True)
        if n in engine_sizes and "seismic" in args.engines:
            jsonl = work / "seismic" / f"{n}.jsonl"
            label, stage_args = f"seismic-{n}-{args.dev_queries}", {
                "jsonl": str(jsonl), "queries": str(queries), "exact": str(exact),
                "threads": sorted({1, args.threads}), "settings": list(SEISMIC_SETTINGS)}
            if not (reusable(work, "seismic", label, stage_args) or args.cached_only):
                jsonl.parent.mkdir(parents=True, exist_ok=True)
                concatenate(files, jsonl)
            entry["seismic"] = run_stage(work, "seismic", label, stage_args, args.lock, timed=True)
            jsonl.unlink(missing_ok=True)  # a copy of the collection; the parts stay
        if n in engine_sizes and "bmp" in args.engines:
            entry["bmp"] = run_stage(work, "bmp", f"bmp-{n}-{args.dev_queries}",
                                     {"files": [str(f) for f in files], "index": str(work / "bmp" / f"{n}.bmp"),
                                      "queries": str(queries), "exact": str(exact),
                                      "max_impact": stages["profile"]["result"]["max_impact"]},
                                     args.lock, timed=True)
        if "two-step" in args.engines:
            entry.update(two_step_stages(work, str(n), work / "collections" / str(n), work / "indexes" / str(n),
                                         queries, args, smoke))
        per_size[n] = entry

    real_vectors: dict[str, Any] = {}
    if "two-step" in args.engines:  # the same measurements on the 30,005 real passages (co-occurring terms)
        real_index = work / "indexes" / "real"
        real_vectors["index"] = run_stage(work, "index", "index-real", {"collection": str(real),
                                                                        "index": str(real_index),
                                                                        "threads": args.threads}, args.lock, timed=True)
        real_vectors["lucene"] = run_stage(work, "lucene", f"lucene-real-{args.dev_queries}",
                                           {"index": str(real_index), "queries": str(queries), "ks": [10, 1000],
                                            "threads": sorted({1, args.threads}),
                                            "exact": str(work / "exact" / f"real-{args.dev_queries}.json"),
                                            "warmup": 5 if smoke else 100}, args.lock, timed=True)
        real_vectors.update(two_step_stages(work, "real", real, real_index, queries, args, smoke))

    rows, table = growth_table(per_size)
    print(table, file=sys.stderr)
    matched = {str(n): matched_recall(entry) for n, entry in per_size.items() if "lucene" in entry}  # searched sizes
    matched_table = matched_recall_table(matched)
    print(matched_table, file=sys.stderr)
    result = {
        "sizes": sizes, "part_size": part_size, "target_documents": TARGET,
        "real_collection": {"corpus": str(MSMARCO if not smoke else corpus), **stages["encode"]["result"]},
        "profile": stages["profile"]["result"],
        "synthetic_vs_real": stages["verify"]["result"],
        "stages": {name: {k: v for k, v in record.items() if k != "args"} for name, record in stages.items()},
        "by_size": {str(n): {name: {k: v for k, v in record.items() if k != "args"} for name, record in entry.items()}
                    for n, entry in per_size.items()},
        "growth": rows, "growth_table": table,
        "matched_recall_k10": matched, "matched_recall_table": matched_table,
        "real_vectors": {name: {k: v for k, v in record.items() if k != "args"} for name, record in real_vectors.items()},
        "notes": ["Lucene latency is one query at a time through pipeline.search.ImpactSearcher (what the search "
                  "stage and the service use: Anserini's BagOfWordsQueryGenerator query, Lucene's IndexSearcher "
                  "with the impact similarity and (score, id) sort, via pyjnius, hits converted to Python); QPS "
                  "is one search call over all queries with 1 and 2 threads.",
                  "Index build: each size's collection is cut into files of equal size, a multiple of the "
                  "threads (IndexCollection gives each thread whole files).",
                  "Exact top 10 = Lucene's impact search (exact: its dynamic pruning never drops a top-k "
                  "document; ties by document id); recall@10_ties counts "
                  "a hit as correct when its score reaches the exact 10th score.",
                  "BMP needs 8-bit impacts: its index holds impacts requantised to 1..255, so its exact mode is "
                  "exact for those, not for the original integers.",
                  "Two-step: the index stage's companion (each document's largest impacts in a first-stage "
                  "Lucene index, the full vectors in a memory-mapped forward store), searched through "
                  "pipeline.two_step.TwoStepSearcher one query at a time (first stage + exact rescoring, hits "
                  "converted to Python); recall@k against the full index's exhaustive top k of the same queries; "
                  "default_k=10 / default_k=1000 are the settings search --two-step uses by default; "
                  "first_stage_latency_1_thread times the first stage alone (Lucene's k' best as document "
                  "numbers, nothing rescored), in a second pass over the queries.",
                  "Peak RSS: peak_rss_mb is ru_maxrss of the stage's largest process (wait4); peak_tree_rss_mb "
                  "sums the stage's process tree (psutil, sampled every 0.2 s)."],
    }
    if "two-step" in args.engines:
        plot = Path(args.results) / "two_step_tradeoff.smoke.png" if smoke else common.ROOT / "docs" / "two_step_tradeoff.png"
        result["two_step_plot"] = str(plot) if plot_two_step({**{str(n): e for n, e in per_size.items()},
                                                              "real": real_vectors}, plot) else None
    common.write_result("scale", result, args, threads=args.threads,
                        outputs=[Path(result["two_step_plot"])] if result.get("two_step_plot") else [])
    return 0


PEER_COLOURS = ("black", "dimgray", "darkgray")  # exhaustive Lucene and Seismic, one shade per collection


def plot_two_step(entries: dict[str, dict[str, Any]], path: Path) -> bool:
    """Latency p50 against recall@k for every two-step setting measured, one panel per k, one series
    per collection, exhaustive Lucene (recall 1) and Seismic marked where measured."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    measured = {(f"{label}, {pruning_label(e, key)}", label): value["result"]["settings"]
                for label, e in entries.items() for key, value in e.items()
                if key.startswith("two_step") and "settings" in value.get("result", {})}
    if not measured:
        return False
    figure, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for axis, k in zip(axes, (10, 1000)):
        peers_drawn: list[str] = []  # a collection's exhaustive and Seismic points once, whatever its prunings
        for number, ((series, label), rows) in enumerate(measured.items()):
            color = f"C{number}"
            rows = [r for r in rows if r["k"] == k]
            axis.scatter([r[f"recall@{k}"] for r in rows], [r["latency_1_thread"]["p50_ms"] for r in rows],
                         color=color, label=f"two-step, {series}", s=18)
            for r in rows:
                axis.annotate(f"{r['query_terms'] or 'all'}/{r['candidates']}",
                              (r[f"recall@{k}"], r["latency_1_thread"]["p50_ms"]), fontsize=6, xytext=(2, 2),
                              textcoords="offset points")
            if label in peers_drawn:
                continue
            peers_drawn.append(label)
            color = PEER_COLOURS[(len(peers_drawn) - 1) % len(PEER_COLOURS)]  # the collection's, no series'
            lucene = entries[label].get("lucene", {}).get("result", {}).get(f"k={k}")
            if lucene:
                axis.scatter([1.0], [lucene["latency_1_thread"]["p50_ms"]], color=color, marker="x", s=40,
                             label=f"exhaustive Lucene, {label}")
            seismic = entries[label].get("seismic", {}).get("result", {}).get(f"k={k}")
            if k == 10 and seismic:
                axis.scatter([row["recall@10"] for row in seismic], [row["latency_1_thread"]["p50_ms"] for row in seismic],
                             color=color, marker="^", s=40, label=f"Seismic, {label}")
                for row in seismic:
                    axis.annotate(f"S {row['query_cut']}/{row['heap_factor']}",
                                  (row["recall@10"], row["latency_1_thread"]["p50_ms"]), fontsize=6, xytext=(2, -7),
                                  textcoords="offset points")
        axis.set_title(f"k={k} (labels: query terms / candidates)")
        axis.set_xlabel(f"recall@{k} against the exhaustive top {k}")
        axis.set_ylabel("latency p50, ms (one query, one thread)")
        axis.legend(fontsize=6)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    return True


def two_step_settings(args, smoke: bool) -> list[list]:
    """[query terms, k, candidates] per measured setting (query terms None: all)."""
    if args.two_step_settings:
        settings = []
        for text in args.two_step_settings:
            q, k, c = (int(part) for part in text.split(":"))
            settings.append([q or None, k, c])
        return settings
    if smoke:
        return [[5, 10, 20], [None, 10, 50], [10, 1000, 1000]]
    return [[q, 10, c] for q in (5, 10, 20) for c in (50, 100, 200)] + \
        [[q, 1000, c] for q in (5, 10, 20) for c in (1000, 2000)]


def two_step_stages(work: Path, label: str, collection: Path, index: Path, queries: Path, args,
                    smoke: bool) -> dict[str, Any]:
    """Build the companion of one index for each ``--prune-docs`` value in turn and measure two-step
    search on it. The default pruning's entries are ``companion`` and ``two_step`` (its default
    settings' rows named ``default_k=10`` / ``default_k=1000`` for the growth table); others are
    ``companion@N`` and ``two_step@N`` (``@NiT`` with the impact floor T)."""
    from pipeline.first_stage import DEFAULT_PRUNE_DOCS, companion_record, pruning_rule
    from pipeline.forward import FORMAT
    from pipeline.outputs import file_sha256
    from pipeline.two_step import DEFAULT_QUERY_TERMS, TwoStepOptions

    record = index / "splade-pipeline.json"
    if not record.is_file():  # --cached-only without the index
        return {}
    grid = common.prune_grid(args.prune_docs or [DEFAULT_PRUNE_DOCS], args.prune_impact)
    main_prune = (DEFAULT_PRUNE_DOCS, 0) if (DEFAULT_PRUNE_DOCS, 0) in grid else grid[0]
    settings = two_step_settings(args, smoke)
    defaults = {k: [DEFAULT_QUERY_TERMS, k, TwoStepOptions().depth(k)] for k in (10, 1000)}
    settings += [s for s in defaults.values() if s not in settings]
    entry: dict[str, Any] = {}
    for prune_docs, floor in grid:
        tag = f"{prune_docs}i{floor}" if floor else str(prune_docs)
        suffix = "" if (prune_docs, floor) == main_prune else f"@{tag}"
        built = companion_record(index)
        cached_build = work / "stages" / f"companion-{label}-{tag}.json"
        if built is None or built["pruning"] != pruning_rule(prune_docs, floor):
            cached_build.unlink(missing_ok=True)  # another pruning is on disk now: build this one again
        entry["companion" + suffix] = run_stage(
            work, "companion", f"companion-{label}-{tag}",
            {"collection": str(collection), "index": str(index), "prune_docs": prune_docs, "threads": args.threads,
             "index_record": file_sha256(record), "forward_format": FORMAT, **({"min_impact": floor} if floor else {})},
            args.lock, timed=True)
        companion = index / "two-step" / "two-step.json"
        entry["two_step" + suffix] = run_stage(
            work, "two_step", f"two-step-{label}-{tag}-{args.dev_queries}",
            {"index": str(index), "queries": str(queries), "settings": settings,
             "threads": sorted({1, args.threads}), "warmup": 5 if smoke else 100,
             "companion_record": file_sha256(companion) if companion.is_file() else None}, args.lock, timed=True)
        result = entry["two_step" + suffix]["result"]
        for k, wanted in defaults.items():
            for row in result.get("settings", []):
                if [row["query_terms"], row["k"], row["candidates"]] == wanted:
                    result[f"default_k={k}"] = row
    return entry


def argparse_hidden() -> str:
    import argparse

    return argparse.SUPPRESS


if __name__ == "__main__":
    sys.exit(main())
