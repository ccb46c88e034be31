#!/usr/bin/env python
"""Effectiveness and efficiency on every shared dataset that has a corpus, in one Markdown report.

For SciFact, CACM and Cranfield: BM25 flat through Anserini (title and text in one field, k1=0.9,
b=0.4, 1000 hits), the SPLADE pipeline (quantised vectors in a Lucene impact index), the exact
float reference (brute-force dot product) and BM25+SPLADE fusion (RRF, and a min-max normalised
linear mix). SPLADE rows carry efficiency figures: mean postings per document and per query, index
size, FLOPS (sum_t p_q(t) p_d(t)) and search throughput. The published BM25 figures of
../shared/datasets/SCORES.md are checked. A sweep over the quantisation scale and over query-term
pruning (top-k terms) goes to a table and a PNG plot of nDCG@10 against FLOPS.

QPS of BM25 and SPLADE use the same window: open the Lucene index, search every query (SPLADE with
its queries already encoded; query encoding is reported separately as ms per query), close. Both
use the same threads.

Writes bench/results/effectiveness.json, and the report docs/effectiveness.md with the plot
docs/tradeoff.png (in smoke mode both go beside the result file instead).

    python bench/effectiveness.py [--datasets scifact cacm cranfield]
    python bench/effectiveness.py --smoke           # the embedded demo set, two scales

The float vectors can be encoded once elsewhere (e.g. a machine with more cores) and reused:
``--save-vectors DIR`` only encodes (documents and judged queries, with a machine record) and
writes ``DIR/<dataset>.npz``; ``--vectors DIR`` then loads them instead of encoding. The result
file says where the vectors were encoded; effectiveness figures do not depend on the machine
beyond float rounding.

Document vectors are encoded once per dataset (float); each scale's collection is written from
them with the pipeline's own quantisation and JsonVectorCollection writer, then indexed by Anserini.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import common

from pipeline import models
from pipeline.bm25 import bm25_search, build_bm25_index
from pipeline.collection import document_line, write_atomic
from pipeline.demo import DEMO_DATA
from pipeline.efficiency import flops, folder_bytes, mean_postings
from pipeline.encoder import SparseVector, SpladeEncoder, default_threads
from pipeline.evaluate import evaluate, parse_measure
from pipeline.experiment import judged_topics
from pipeline.fusion import linear_fusion, reciprocal_rank_fusion, top
from pipeline.index import build_index
from pipeline.readers import read_corpus, read_qrels
from pipeline.reference import exact_run
from pipeline.search import ImpactSearcher

DATASETS = common.DATASETS
DOCS = common.ROOT / "docs"
MEASURES = [parse_measure(m) for m in ("nDCG@10", "R@100", "MAP", "P@30")]
SCALES = (10, 25, 50, 100, 200)
TOP_K = (5, 10, 20, 40, None)
DEFAULT_SCALE = 100
# dataset: (qrels for the main table, whether hits equal to the query id are removed (BEIR only))
SETTINGS = {"scifact": ("test.tsv", True), "cacm": ("test.tsv", False), "cranfield": ("test.tsv", False),
            "demo": ("test.tsv", True)}
PUBLISHED = [  # (dataset, qrels, measure, published BM25 figure, tolerance), from SCORES.md
    ("scifact", "test.tsv", "nDCG@10", 0.6789, 0.01),
    ("scifact", "test.tsv", "R@100", 0.9253, 0.01),
    ("cacm", "test.anserini-ids.tsv", "MAP", 0.3123, 0.002),
]


def as_scores(run):
    return {qid: dict(hits) for qid, hits in run.items()}


def figures(run, qrels) -> dict[str, float]:
    means, _ = evaluate(as_scores(run), qrels, MEASURES)
    return means


def prune(terms: dict[str, int], k: int | None) -> dict[str, int]:
    if k is None:
        return terms
    return dict(sorted(terms.items(), key=lambda item: (-item[1], item[0]))[:k])


def splade_run(workdir: Path, ids, texts, doc_vectors: list[SparseVector], query_terms: dict[str, dict[str, int]],
               encoder: SpladeEncoder, scale: float, threads: int, remove_query: bool):
    """Quantise at ``scale``, write and index the collection, search; returns run and efficiency."""
    folder, index = workdir / f"collection-{scale}", workdir / f"index-{scale}"
    doc_terms = [encoder.to_terms(v, scale) if text else {} for v, text in zip(doc_vectors, texts)]
    write_atomic(folder / "part-00000.jsonl",
                 b"".join(document_line(i, t, terms) for i, t, terms in zip(ids, texts, doc_terms)))
    build_index(folder, index, threads, overwrite=True)
    run, seconds = timed_splade_search(index, query_terms, threads, remove_query)
    return run, doc_terms, {"index_mb": round(folder_bytes(index) / 2**20, 2), "search_seconds": seconds}


def timed_splade_search(index: Path, query_terms, threads: int, remove_query: bool):
    """Open, search every (pre-encoded) query, close: the window BM25's search is timed in."""
    start = time.perf_counter()
    searcher = ImpactSearcher(index)
    try:
        run, _ = searcher.search(query_terms, 1000, threads, remove_query)
    finally:
        searcher.close()
    return run, time.perf_counter() - start


def efficiency(doc_terms, query_terms, extra) -> dict[str, float]:
    return {"postings_per_doc": round(mean_postings(doc_terms), 1),
            "postings_per_query": round(mean_postings(query_terms.values()), 1),
            "flops": round(flops(doc_terms, query_terms.values()), 2), "index_mb": extra["index_mb"],
            "qps": round(len(query_terms) / extra["search_seconds"], 1)}


VECTORS: Path | None = None  # --vectors DIR


def encode_dataset(name, encoder, texts, topics, log):
    log(f"{name}: encoding {len(texts)} documents")
    start = time.perf_counter()
    doc_vectors = encoder.encode([t if t else " " for t in texts])
    encode_seconds = time.perf_counter() - start
    start = time.perf_counter()
    query_vectors = encoder.encode_queries(encoder.tokenize(list(topics.values())))  # as the search stage
    query_ms = (time.perf_counter() - start) / len(topics) * 1000
    return doc_vectors, query_vectors, encode_seconds, query_ms


def _pack(prefix: str, vectors: list[SparseVector]) -> dict:
    lengths = np.array([len(v.ids) for v in vectors], dtype=np.int64)
    return {f"{prefix}_lengths": lengths,
            f"{prefix}_ids": np.concatenate([v.ids for v in vectors]).astype(np.int32),
            f"{prefix}_weights": np.concatenate([v.weights for v in vectors]).astype(np.float32)}


def _unpack(data, prefix: str) -> list[SparseVector]:
    bounds = np.concatenate([[0], np.cumsum(data[f"{prefix}_lengths"])])
    ids, weights = data[f"{prefix}_ids"], data[f"{prefix}_weights"]
    return [SparseVector(ids[a:b], weights[a:b]) for a, b in zip(bounds[:-1], bounds[1:])]


def save_vectors(name: str, folder: Path, encoder: SpladeEncoder, log) -> None:
    """Encode one dataset's documents and judged queries into ``folder/<name>.npz``."""
    data = dataset_folder(name)
    qrels_name, _ = SETTINGS[name]
    topics = judged_topics(data / "queries.jsonl", data / "qrels" / qrels_name)
    docs = [doc for _, doc in read_corpus(data / "corpus.jsonl")]
    doc_vectors, query_vectors, seconds, query_ms = encode_dataset(name, encoder, [d.text for d in docs], topics, log)
    record = {"encode_seconds": seconds, "query_encode_ms": query_ms, "machine": common.machine(encoder.threads)}
    folder.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(folder / f"{name}.npz", doc_names=np.array([d.id for d in docs]),
                        query_names=np.array(list(topics)), record=np.array(json.dumps(record)),
                        **_pack("doc", doc_vectors), **_pack("query", query_vectors))


def load_vectors(path: Path, doc_ids: list[str], query_ids: list[str]):
    data = np.load(path)
    if data["doc_names"].tolist() != doc_ids or data["query_names"].tolist() != query_ids:
        raise SystemExit(f"{path}: encoded for other documents or queries than this dataset's")
    record = json.loads(str(data["record"]))
    VECTOR_MACHINES[path.stem] = record
    return _unpack(data, "doc"), _unpack(data, "query"), record


VECTOR_MACHINES: dict[str, dict] = {}


def dataset_folder(name: str) -> Path:
    return DEMO_DATA if name == "demo" else DATASETS / name


def run_dataset(name: str, workdir: Path, encoder: SpladeEncoder, threads: int, log) -> dict:
    folder = dataset_folder(name)
    qrels_name, remove_query = SETTINGS[name]
    qrels = read_qrels(folder / "qrels" / qrels_name)
    topics = judged_topics(folder / "queries.jsonl", folder / "qrels" / qrels_name)
    docs = [doc for _, doc in read_corpus(folder / "corpus.jsonl")]
    ids, texts = [d.id for d in docs], [d.text for d in docs]
    rows, sweep = {}, []

    log(f"{name}: BM25")
    bm25_index = workdir / f"{name}-bm25"
    build_bm25_index(folder / "corpus.jsonl", bm25_index, threads)
    start = time.perf_counter()  # the same window as timed_splade_search: open, search, close
    bm25 = bm25_search(bm25_index, topics, 1000, threads, remove_query=remove_query)
    rows["BM25 flat"] = {**figures(bm25, qrels), "index_mb": round(folder_bytes(bm25_index) / 2**20, 2),
                         "qps": round(len(topics) / (time.perf_counter() - start), 1)}

    if VECTORS is not None:
        doc_vectors, query_vectors, encoded = load_vectors(VECTORS / f"{name}.npz", ids, list(topics))
        encode_seconds, query_ms = encoded["encode_seconds"], encoded["query_encode_ms"]
    else:
        doc_vectors, query_vectors, encode_seconds, query_ms = encode_dataset(name, encoder, texts, topics, log)
    kept = [v if t else SparseVector(v.ids[:0], v.weights[:0]) for v, t in zip(doc_vectors, texts)]
    exact = exact_run(ids, kept, list(topics), query_vectors, encoder.vocab_size, 1000, remove_query)

    by_scale = {}
    for scale in SCALES:
        log(f"{name}: scale {scale}")
        query_terms = {q: encoder.to_terms(v, scale) for q, v in zip(topics, query_vectors)}
        run, doc_terms, extra = splade_run(workdir / name, ids, texts, doc_vectors, query_terms, encoder, scale,
                                           threads, remove_query)
        by_scale[scale] = (run, doc_terms, query_terms)
        sweep.append({"kind": "scale", "value": scale, **figures(run, qrels),
                      **efficiency(doc_terms, query_terms, extra)})

    run, doc_terms, query_terms = by_scale[DEFAULT_SCALE]
    for k in TOP_K[:-1]:
        pruned = {q: prune(t, k) for q, t in query_terms.items()}
        pruned_run, seconds = timed_splade_search(workdir / name / f"index-{DEFAULT_SCALE}", pruned, threads,
                                                  remove_query)
        extra = {"index_mb": sweep[SCALES.index(DEFAULT_SCALE)]["index_mb"], "search_seconds": seconds}
        sweep.append({"kind": "query top-k", "value": k, **figures(pruned_run, qrels),
                      **efficiency(doc_terms, pruned, extra)})

    default = next(row for row in sweep if row["kind"] == "scale" and row["value"] == DEFAULT_SCALE)
    rows[f"SPLADE splade-tiny (scale {DEFAULT_SCALE})"] = default
    rows["exact float reference"] = figures(exact, qrels)
    rows["RRF(BM25, SPLADE)"] = figures(top(reciprocal_rank_fusion([as_scores(bm25), as_scores(run)]), 1000), qrels)
    rows["linear 0.5/0.5 (BM25, SPLADE)"] = figures(
        top(linear_fusion([as_scores(bm25), as_scores(run)], [0.5, 0.5]), 1000), qrels)
    return {"dataset": name, "documents": len(docs), "queries": len(topics), "rows": rows, "sweep": sweep,
            "encode_docs_per_second": round(len(docs) / encode_seconds, 1), "query_encode_ms": round(query_ms, 2),
            "bm25_run": bm25, "remove_query": remove_query}


def reproduce(results: dict[str, dict]) -> list[dict]:
    checks = []
    for name, qrels_name, measure, published, tolerance in PUBLISHED:
        if name not in results:
            continue
        qrels = read_qrels(DATASETS / name / "qrels" / qrels_name)
        ours = figures(results[name]["bm25_run"], qrels)[measure]
        checks.append({"dataset": name, "qrels": qrels_name, "measure": measure, "published": published,
                       "ours": round(ours, 4), "difference": round(ours - published, 4),
                       "within": abs(ours - published) <= tolerance, "tolerance": tolerance,
                       "equal_to_4_decimals": round(ours, 4) == published})
    return checks


def header(body: dict) -> list[str]:
    """What the figures are from: machine, versions, date, command, and how QPS was taken."""
    machine = body["machine"]
    cpu, versions = machine["cpu"], machine["versions"]
    sizes = ", ".join(f"{name} {r['queries']} queries / {r['documents']:,} documents"
                      for name, r in body["results"].items())
    return ["# Effectiveness and efficiency", "",
            f"Written by `{body['command']}` with `bench/results/effectiveness.json` and `docs/tradeoff.png`. "
            f"Machine: {cpu['model']} ({', '.join(cpu['flags'])}), {cpu['cores']} cores, {machine['threads']} "
            f"threads, load average {machine['load_average_1_5_15'][0]} at the end; {machine['date'][:10]}; "
            f"pyserini {versions.get('pyserini')}, torch {versions.get('torch')}, "
            f"vectors encoded on {body['vectors_encoded_on']}.", "",
            f"Sets: {sizes}. SPLADE is splade-tiny, max pooling, quantised at the scale shown, in a Lucene "
            "impact index; the exact float reference ranks the same float vectors by brute-force dot product. "
            "Run files and measures follow trec_eval (float32 scores, ties by document id descending). "
            "QPS: BM25 and SPLADE in the same window (open the index, search every query for 1,000 hits, close; "
            "SPLADE queries already encoded). These windows last a few seconds or less, so QPS moves by up to "
            "2x between runs of one index (compare the scale sweep's rows); `docs/scale.md` measures search "
            "speed properly.", ""]


def markdown(results: dict[str, dict], checks: list[dict]) -> str:
    names = [m.name for m in MEASURES]
    out = ["## Effectiveness", "",
           "| dataset | system | " + " | ".join(names) + " | postings/doc | postings/query | FLOPS | index MB | QPS |",
           "|---|---|" + "---|" * (len(names) + 5)]
    for name, result in results.items():
        for system, row in result["rows"].items():
            cells = [f"{row[m]:.4f}" for m in names] + [
                str(row.get(key, "")) for key in ("postings_per_doc", "postings_per_query", "flops", "index_mb", "qps")]
            out.append(f"| {name} | {system} | " + " | ".join(cells) + " |")
    out += ["", "## Published BM25 figures", "", "| dataset | qrels | measure | published | ours | difference |",
            "|---|---|---|---|---|---|"]
    for c in checks:
        mark = "" if c["within"] else f" (outside ±{c['tolerance']})"
        out.append(f"| {c['dataset']} | {c['qrels']} | {c['measure']} | {c['published']:.4f} | {c['ours']:.4f} | "
                   f"{c['difference']:+.4f}{mark} |")
    out += ["", "## Sweeps (SPLADE splade-tiny)", "",
            "| dataset | sweep | value | nDCG@10 | R@100 | postings/doc | postings/query | FLOPS | QPS |",
            "|---|---|---|---|---|---|---|---|---|"]
    for name, result in results.items():
        for row in result["sweep"]:
            out.append(f"| {name} | {row['kind']} | {row['value']} | {row['nDCG@10']:.4f} | {row['R@100']:.4f} | "
                       f"{row['postings_per_doc']} | {row['postings_per_query']} | {row['flops']} | {row['qps']} |")
    return "\n".join(out)


def plot(results: dict[str, dict], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(results), figsize=(5 * len(results), 4), squeeze=False)
    for axis, (name, result) in zip(axes[0], results.items()):
        for kind, marker in (("scale", "o-"), ("query top-k", "s--")):
            rows = [r for r in result["sweep"] if r["kind"] == kind]
            axis.plot([r["flops"] for r in rows], [r["nDCG@10"] for r in rows], marker, label=kind)
            for r in rows:
                axis.annotate(str(r["value"]), (r["flops"], r["nDCG@10"]), fontsize=7, xytext=(3, 3),
                              textcoords="offset points")
        axis.axhline(result["rows"]["exact float reference"]["nDCG@10"], color="grey", lw=0.8, ls=":",
                     label="exact float")
        axis.axhline(result["rows"]["BM25 flat"]["nDCG@10"], color="red", lw=0.8, ls="-.", label="BM25 flat")
        axis.set_xscale("log")
        axis.set_title(name)
        axis.set_xlabel("FLOPS (expected term matches per query-document pair)")
        axis.set_ylabel("nDCG@10")
        axis.legend(fontsize=7)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)


def main() -> int:
    global SCALES, TOP_K
    parser = common.parser(__doc__)
    parser.add_argument("--datasets", nargs="+", default=None,
                        help="default: scifact cacm cranfield where present (the demo set in smoke mode)")
    parser.add_argument("--threads", type=int, default=default_threads())
    parser.add_argument("--encoder", default=None, help="splade-tiny (default) or a checkpoint folder of it")
    parser.add_argument("--save-vectors", type=Path, default=None, help="only encode, into DIR/<dataset>.npz")
    parser.add_argument("--vectors", type=Path, default=None, help="load float vectors from DIR/<dataset>.npz")
    parser.add_argument("--report-only", action="store_true",
                        help="only render docs/effectiveness.md again from bench/results/effectiveness.json")
    args = parser.parse_args()
    if args.report_only:
        write_report(Path(args.results) / "effectiveness.json", DOCS / "effectiveness.md")
        return 0
    global VECTORS
    VECTORS = args.vectors
    names = args.datasets or (["demo"] if args.smoke else
                              [n for n in SETTINGS if n != "demo" and (DATASETS / n / "corpus.jsonl").is_file()])
    if args.smoke:
        SCALES, TOP_K = (50, DEFAULT_SCALE), (5, None)
    log = lambda text: print(text, file=sys.stderr, flush=True)
    encoder = SpladeEncoder(models.resolve(args.encoder), "max", 512, args.threads)
    if args.save_vectors is not None:
        for name in names:
            save_vectors(name, args.save_vectors, encoder, log)
        return 0
    results = {}
    with tempfile.TemporaryDirectory(prefix="bench-effectiveness-") as scratch:
        for name in names:
            results[name] = run_dataset(name, Path(scratch), encoder, args.threads, log)
    checks = reproduce(results)
    out = Path(args.results) if args.smoke else DOCS
    out.mkdir(parents=True, exist_ok=True)
    plot(results, out / "tradeoff.png")
    for result in results.values():
        result.pop("bm25_run")
    scale_spread = {name: round(max(r["nDCG@10"] for r in result["sweep"] if r["kind"] == "scale")
                                - min(r["nDCG@10"] for r in result["sweep"] if r["kind"] == "scale"), 4)
                    for name, result in results.items()}
    written = common.write_result("effectiveness", {"results": results, "published": checks,
                                                    "scale_sweep_ndcg10_spread": scale_spread,
                                                    "vectors_encoded_on": VECTOR_MACHINES or "this machine",
                                                    "report": str(out / "effectiveness.md"),
                                                    "plot": str(out / "tradeoff.png")},
                                  args, args.threads)
    write_report(written, out / "effectiveness.md")
    return 0


def write_report(result_file: Path, target: Path) -> None:
    """The Markdown report, rendered from the result file alone (``--report-only`` redoes just this)."""
    body = json.loads(result_file.read_text())
    report = "\n".join(header(body)) + "\n" + markdown(body["results"], body["published"])
    target.write_text(f"<!-- written by bench/effectiveness.py from bench/results/{result_file.name} -->\n\n" + report + "\n")


if __name__ == "__main__":
    raise SystemExit(main())
