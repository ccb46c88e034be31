#!/usr/bin/env python
"""Query sides over the same document vectors: splade-tiny's query encoder, ``tokens`` and ``idf``.

For each dataset the corpus is encoded once by splade-tiny (or an existing collection is reused:
``--collections DIR/NAME`` with a manifest, e.g. the lead's pre-encoded /work/cache/collections)
and indexed once; the index is then searched with each query side, recorded on the index by the
index stage as a user would (``index --query-encoder SIDE``; only the record changes):

* ``model``: splade-tiny's own query encoder (the symmetric default);
* ``tokens``: weight 1 per distinct wordpiece of the query (SPLADE-v3-Doc's rule);
* ``idf``: each distinct wordpiece weighted by its BM25 IDF in this index's own postings.

nDCG@10 and R@100 (the BEIR preset, level 1) on the test qrels; SciFact and ArguAna with BEIR's
remove-query rule (``auto``: no query is judged relevant to itself there), CACM and Cranfield without
(their query and document ids are separate numberings). Quality figures only: no timings.

    python bench/query_sides.py                      # bench/results/query_sides.json
    python bench/query_sides.py --smoke              # the demo corpus, seconds
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import common

from pipeline import stages
from pipeline.collection import load_manifest
from pipeline.evaluate import evaluate_files
from pipeline.experiment import judged_topics, self_hit_rule

DATASETS = ("scifact", "cacm", "cranfield", "arguana")
# BEIR's remove-query rule applies to BEIR sets (``auto``: unless judged relevant); CACM's and
# Cranfield's query ids share numbers with document ids without being the same texts
REMOVE_QUERY = {"scifact": "auto", "arguana": "auto", "demo": "auto", "cacm": "never", "cranfield": "never"}
SIDES = {"model": "splade-tiny", "tokens": "tokens", "idf": "idf"}
CACHE = Path("/work/cache/collections")


def collection_for(name: str, corpus: Path, collections: Path | None, work: Path, threads: int,
                   wait_minutes: float = 0) -> Path:
    """An existing finished collection of this corpus (reused as is), else one encoded here.

    ``wait_minutes``: a collection another process is still encoding (a plan, no manifest yet) is
    waited for that long before this script encodes its own copy.
    """
    if collections is not None:
        found = collections / name
        deadline = time.monotonic() + wait_minutes * 60
        while (found / "plan.json").is_file() and load_manifest(found) is None and time.monotonic() < deadline:
            time.sleep(20)
        manifest = load_manifest(found) if found.is_dir() else None
        if manifest is not None and Path(manifest["source"]["path"]) == corpus.resolve():
            return found
    target = work / "collections" / name
    stages.encode(corpus, target, threads=threads, progress=False, say=lambda text: None)
    return target


def run_dataset(name: str, folder: Path, collections: Path | None, work: Path, threads: int,
                wait_minutes: float = 0) -> dict:
    corpus, queries, qrels = folder / "corpus.jsonl", folder / "queries.jsonl", folder / "qrels" / "test.tsv"
    collection = collection_for(name, corpus, collections, work, threads, wait_minutes)
    index = work / "indexes" / name
    topics = judged_topics(queries, qrels)
    dropping, _ = self_hit_rule(REMOVE_QUERY.get(name, "never"), topics, qrels)
    manifest = load_manifest(collection)
    found = {"collection": str(collection), "queries": len(topics), "remove_query": REMOVE_QUERY.get(name, "never"), "documents": manifest["documents"],
             "document_settings": {key: manifest["settings"][key] for key in ("pooling", "scale", "max_length")},
             "postings_per_doc": manifest["postings"]["mean_per_doc"], "sides": {}}
    for side, value in SIDES.items():
        stages.index(collection, index, threads, query_encoder=value, say=lambda text: None)
        run = work / "runs" / f"run.{name}.splade-tiny.q-{side}.test.txt"
        counters = stages.search(index, run, topics, remove_query=dropping, threads=threads, overwrite=True,
                                 progress=False, say=lambda text: None)
        result = evaluate_files(run, qrels, preset="beir", warn=lambda text: None)
        found["sides"][side] = {**{metric: round(value, 4) for metric, value in result["metrics"].items()},
                                "self_hits_removed": counters["self_hits_removed"],
                                "queries_without_terms": counters["without_terms"]}
        print(f"{name} {side}: {found['sides'][side]}", file=sys.stderr)
    return found


def main() -> None:
    parser = common.parser(__doc__)
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS))
    parser.add_argument("--collections", type=Path, default=CACHE if CACHE.is_dir() else None,
                        help="folder of finished splade-tiny collections named by dataset, reused when their "
                             "corpus is the dataset's (default /work/cache/collections where present)")
    parser.add_argument("--workdir", type=Path, default=common.RESULTS / "work" / "query_sides")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--wait-minutes", type=float, default=0,
                        help="wait this long for a collection still being encoded in --collections")
    args = parser.parse_args()
    from pipeline.demo import DEMO_DATA

    if args.smoke:
        folders, args.collections = {"demo": DEMO_DATA}, None
        args.workdir = args.results / "work-query_sides"
    else:
        folders = {name: common.DATASETS / name for name in args.datasets}
    results = {name: run_dataset(name, folder, args.collections, args.workdir, args.threads, args.wait_minutes)
               for name, folder in folders.items()}
    table = {name: {side: found["sides"][side]["nDCG@10"] for side in SIDES} for name, found in results.items()}
    common.write_result("query_sides", {"encoder": "splade-tiny", "metrics": "nDCG@10, R@100 (BEIR preset, test)",
                                        "idf": "BM25 IDF ln(1 + (N - df + 0.5) / (df + 0.5)) from the index",
                                        "ndcg10_by_side": table, "datasets": results}, args, threads=args.threads)


if __name__ == "__main__":
    main()
