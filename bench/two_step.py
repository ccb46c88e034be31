#!/usr/bin/env python
"""Two-step search against exhaustive search, in the same run, on real data: quality, and with
``--latency`` speed.

For each dataset: the splade-tiny collection (encoded here, or an existing encode-stage collection
given with ``--collections DIR``, which holds ``DIR/<dataset>``), the full impact index, its
two-step companion for each ``--prune-docs`` value (and ``--prune-impact`` floor), then every judged query searched exhaustively
and two-step over a grid of first-stage query terms and candidate depths. Figures per setting:
nDCG@10, R@100 and R@1000 (trec_eval semantics, as the evaluate stage), recall@10 and recall@1000
against the exhaustive top 10 / top 1000 of the same queries, candidates rescored, and the share
of queries whose bound says a document could have been missed. Without ``--latency`` no timings
are taken and the bench may run on a busy machine. With it, each set's exhaustive search (k=10 and
k=1000) and every two-step setting are also timed one query at a time on one thread, after the
untimed pass that the figures above come from, each timing loop holding ``--lock`` (run it with
nothing else on the machine): the real-vector counterpart of bench/scale.py's synthetic collections.

Sets: SciFact, CACM, Cranfield, ArguAna (BEIR folders under ../shared/datasets), and the TREC
DL19 / DL20 pools (the 30,005 passages of msmarco-passage-dl-pool with the official topics and
qrels; nDCG@10 with graded gains, R@100 at level 2; R@1000 is not judged there). Hits whose id is
the query id follow the ``run`` command's ``auto`` rule.

    python bench/two_step.py [--datasets scifact cacm cranfield arguana dl19 dl20] [--collections /work/cache/collections]
    python bench/two_step.py --latency --lock /tmp/bench.lock --prune-docs 128 --query-terms 10 20
    python bench/two_step.py --smoke        # the embedded demo set, seconds

Writes bench/results/two_step.json.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import common

from pipeline import encoders, models, stages
from pipeline.collection import load_manifest
from pipeline.demo import DEMO_DATA
from pipeline.devices import default_threads
from pipeline.evaluate import evaluate, parse_measure
from pipeline.experiment import judged_topics, self_hit_rule
from pipeline.first_stage import build_companion, companion_bytes
from pipeline.readers import read_qrels
from pipeline.search import ImpactSearcher, encode_queries, index_record
from pipeline.two_step import TwoStepOptions, TwoStepSearcher

DATASETS = common.DATASETS
POOL = DATASETS / "msmarco-passage-dl-pool"
TOPICS = DATASETS / "msmarco-passage-topics"
# name: (corpus, topics, qrels, measures); R@1000 only where judgments reach that deep
SETS = {
    "scifact": (DATASETS / "scifact" / "corpus.jsonl", DATASETS / "scifact" / "queries.jsonl",
                DATASETS / "scifact" / "qrels" / "test.tsv", ("nDCG@10", "R@100", "R@1000")),
    "cacm": (DATASETS / "cacm" / "corpus.jsonl", DATASETS / "cacm" / "queries.jsonl",
             DATASETS / "cacm" / "qrels" / "test.tsv", ("nDCG@10", "R@100", "R@1000")),
    "cranfield": (DATASETS / "cranfield" / "corpus.jsonl", DATASETS / "cranfield" / "queries.jsonl",
                  DATASETS / "cranfield" / "qrels" / "test.tsv", ("nDCG@10", "R@100", "R@1000")),
    "arguana": (DATASETS / "arguana" / "corpus.jsonl", DATASETS / "arguana" / "queries.jsonl",
                DATASETS / "arguana" / "qrels" / "test.tsv", ("nDCG@10", "R@100", "R@1000")),
    "dl19": (POOL / "collection.tsv", TOPICS / "queries" / "dl19.jsonl", TOPICS / "qrels" / "dl19.tsv",
             ("nDCG@10", "R@100")),
    "dl20": (POOL / "collection.tsv", TOPICS / "queries" / "dl20.jsonl", TOPICS / "qrels" / "dl20.tsv",
             ("nDCG@10", "R@100")),
    "demo": (DEMO_DATA / "corpus.jsonl", DEMO_DATA / "queries.jsonl", DEMO_DATA / "qrels" / "test.tsv",
             ("nDCG@10", "R@100")),
}
COLLECTION_OF = {"dl19": "dl-pool", "dl20": "dl-pool"}  # sets sharing one corpus share its collection
PRUNE_DOCS = (32, 64, 128)
QUERY_TERMS = (5, 10, 20, None)
# (hits, candidates): k=10 with several depths, k=1000 with 1x and 2x
DEPTHS = ((10, 10), (10, 50), (10, 100), (10, 200), (1000, 1000), (1000, 2000))


def level_of(qrels_path: Path) -> int:
    """TREC DL counts grade >= 2 relevant for binary measures; the BEIR sets grade >= 1."""
    return 2 if qrels_path.parent.parent == TOPICS else 1


def figures(run, qrels, names, level) -> dict[str, float]:
    measures = [parse_measure(name) for name in names]
    means, _ = evaluate({qid: dict(hits) for qid, hits in run.items()}, qrels, measures, level)
    return {name: round(value, 4) for name, value in means.items()}


def overlap(run, reference, k: int) -> float:
    """Mean share of the reference's top k (per query) that ``run`` also has in its top k."""
    shares = []
    for qid, hits in reference.items():
        wanted = {docid for docid, _ in hits[:k]}
        if wanted:
            shares.append(len(wanted & {docid for docid, _ in run.get(qid, [])[:k]}) / len(wanted))
    return round(sum(shares) / len(shares), 4) if shares else 1.0


def timed(search_one: Callable[[dict[str, dict[str, int]]], object], queries: dict[str, dict[str, int]],
          lock: str | None) -> dict[str, Any]:
    """Latency of ``search_one`` over the queries one at a time (the caller's thread), holding the
    bench lock for the loop."""
    with common.bench_lock(lock) as state:
        figures = common.time_each(queries.items(), lambda query: search_one({query[0]: query[1]}))
    return {**figures, "bench_lock": state}


def collection_for(name: str, corpus: Path, cached: Path | None, work: Path, threads: int, log) -> Path:
    """An existing encode-stage collection of this corpus (checked), else one encoded here."""
    folder_name = COLLECTION_OF.get(name, name)
    if cached is not None and (cached / folder_name).is_dir():
        manifest = load_manifest(cached / folder_name)
        if manifest is None or Path(manifest["source"]["path"]).resolve() != corpus.resolve():
            raise SystemExit(f"{cached / folder_name}: not a finished collection of {corpus}")
        settings = manifest["settings"]
        if (settings["encoder"]["fingerprint"] != models.resolve(None).fingerprint and
                settings["encoder"].get("model_fingerprint") != models.resolve(None).fingerprint) \
                or settings["scale"] != 100 or settings["pooling"] != "max":
            raise SystemExit(f"{cached / folder_name}: not splade-tiny, max pooling, scale 100")
        log(f"{name}: using the collection {cached / folder_name}")
        return cached / folder_name
    folder = work / "collections" / folder_name
    log(f"{name}: encoding {corpus}")
    stages.encode(corpus, folder, threads=threads, progress=False, say=log)
    return folder


def run_set(name: str, cached: Path | None, work: Path, threads: int, prune_grid, query_grid, depths, log,
            latency: bool = False, lock: str | None = None) -> dict:
    corpus, topics_path, qrels_path, names = SETS[name]
    level = level_of(qrels_path)
    collection = collection_for(name, corpus, cached, work, threads, log)
    index = work / "indexes" / COLLECTION_OF.get(name, name)
    stages.index(collection, index, threads, say=log)
    topics = judged_topics(topics_path, qrels_path)
    qrels = read_qrels(qrels_path)
    dropping, _ = self_hit_rule("auto", topics, qrels_path)
    encoder = encoders.load_queries(encoders.query_spec(index_record(index)), threads, None, index)
    queries = encode_queries(encoder, topics, 32, progress=False)  # as the search stage encodes them
    timed_drop = dropping if isinstance(dropping, bool) else set(dropping)  # not rebuilt per timed query
    searcher = ImpactSearcher(index)
    speed: dict[str, Any] = {}
    try:
        exhaustive, _ = searcher.search(queries, 1000, threads, dropping)
        if latency:
            for k in (10, 1000):
                speed[f"k={k}"] = timed(lambda one: searcher.search(one, k, 1, timed_drop), queries, lock)
    finally:
        searcher.close()
    reference = figures(exhaustive, qrels, names, level)
    log(f"{name}: exhaustive {reference}" + (f", latency {speed}" if speed else ""))
    rows = []
    for prune_docs, floor in prune_grid:
        rule = {"prune_docs": prune_docs, **({"min_impact": floor} if floor else {})}
        start = time.perf_counter()
        record, _ = build_companion(collection, index, prune_docs, threads, overwrite=True, min_impact=floor)
        build_seconds = time.perf_counter() - start
        sizes = companion_bytes(index)
        two_step = TwoStepSearcher(index)
        try:
            for query_terms in query_grid:
                for hits, candidates in depths:
                    options = TwoStepOptions(candidates, query_terms)
                    run, counters, _ = two_step.search(queries, hits, threads, dropping, options)
                    got = figures(run, qrels, names if hits == 1000 else ("nDCG@10",), level)
                    row = {**rule, "query_terms": query_terms, "hits": hits,
                           "candidates": candidates, **got,
                           **{f"delta_{m}": round(got[m] - reference[m], 4) for m in got},
                           f"recall@{hits}_vs_exhaustive": overlap(run, exhaustive, hits),
                           "candidates_mean": counters["candidates_mean"],
                           "could_miss_share": round(counters["could_miss"] / max(len(queries), 1), 4)}
                    if latency:
                        row["latency_1_thread"] = timed(
                            lambda one: two_step.search(one, hits, 1, timed_drop, options), queries, lock)
                    rows.append(row)
                    log(f"{name}: {row}")
        finally:
            two_step.close()
        rows.append({**rule, "companion": True, "build_seconds_busy_machine": round(build_seconds, 1),
                     "first_stage_postings": record["postings"]["first_stage"],
                     "full_postings": record["postings"]["full"], **sizes})
    return {"documents": record["documents"], "queries": len(queries), "relevance_level": level,
            "exhaustive": reference, **({"exhaustive_latency_1_thread": speed} if speed else {}), "rows": rows}


def main() -> int:
    parser = common.parser(__doc__)
    parser.add_argument("--datasets", nargs="+", default=None, choices=sorted(SETS),
                        help="default: scifact cacm cranfield arguana dl19 dl20 where present (demo in smoke mode)")
    parser.add_argument("--collections", type=Path, default=None,
                        help="folder of existing splade-tiny collections named after the sets (dl-pool for DL)")
    parser.add_argument("--prune-docs", type=int, nargs="+", default=None)
    parser.add_argument("--prune-impact", type=common.floor, nargs="+", default=None, metavar="T",
                        help="impact floors of the first stage (index --prune-impact), each with each --prune-docs "
                             "value; 0: none (the default)")
    parser.add_argument("--query-terms", type=int, nargs="+", default=None, help="0 means all terms")
    parser.add_argument("--threads", type=int, default=default_threads())
    parser.add_argument("--workdir", type=Path, default=None, help="keep indexes here (default: temporary)")
    parser.add_argument("--latency", action="store_true",
                        help="also time exhaustive search and every two-step setting, one query at a time")
    parser.add_argument("--lock", default=None, help="flock this file around each timing loop (e.g. /tmp/bench.lock)")
    parser.add_argument("--merge", type=Path, nargs="+", default=None,
                        help="only merge earlier result files (sets run one by one) into one two_step.json; "
                             "each part keeps its own command and machine record")
    args = parser.parse_args()
    if args.merge:
        return merge(args.merge, args)
    names = args.datasets or (["demo"] if args.smoke else
                              [n for n in SETS if n != "demo" and SETS[n][0].is_file()])
    prune_grid = common.prune_grid(args.prune_docs or ((8, 32) if args.smoke else PRUNE_DOCS), args.prune_impact)
    query_grid = tuple((q or None) for q in args.query_terms) if args.query_terms else \
        ((5, None) if args.smoke else QUERY_TERMS)
    depths = ((10, 10), (10, 20), (40, 40)) if args.smoke else DEPTHS
    log = lambda text: print(text, file=sys.stderr, flush=True)
    results = {}
    with tempfile.TemporaryDirectory(prefix="bench-two-step-") as scratch:
        work = args.workdir or Path(scratch)
        for name in names:
            results[name] = run_set(name, args.collections, work, args.threads, prune_grid, query_grid, depths, log,
                                    args.latency, args.lock)
    note = ("latency_1_thread: one query at a time, one thread, after the untimed pass the quality figures come "
            "from; each timing loop holds the bench lock where it says so" if args.latency else
            "quality only; no timings (bench/scale.py, or this script with --latency)")
    common.write_result("two_step", {"results": results, "prune_docs": list(dict.fromkeys(n for n, _ in prune_grid)),
                                     "prune_impact": list(dict.fromkeys(floor for _, floor in prune_grid)),
                                     "query_terms": list(query_grid), "depths": [list(d) for d in depths],
                                     "note": note}, args, args.threads)
    return 0


def merge(paths: list[Path], args) -> int:
    """One result file from several runs of this script, each part's grid, command and machine kept
    (every row names its own setting)."""
    import json

    parts = [json.loads(Path(p).read_text()) for p in paths]
    results = {name: result for part in parts for name, result in part["results"].items()}
    runs = [{"sets": list(part["results"]), "command": part["command"], "machine": part["machine"],
             "prune_docs": part["prune_docs"], "prune_impact": part.get("prune_impact", [0]),
             "query_terms": part["query_terms"], "depths": part["depths"]}
            for part in parts]
    note = " | ".join(dict.fromkeys(part["note"] for part in parts))  # a timed part says so
    common.write_result("two_step", {"results": results, "parts": runs, "note": note}, args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
