#!/usr/bin/env python
"""Fine-tuning splade-tiny on SciFact's train split, three ways in one run, scored on SciFact test.
Writes bench/results/train.json (quality figures; no timings: they would be taken under load).

Trained side by side (each in its own process, all at once) on the same mined triples (BM25 hard
negatives, one per judged pair) with the README command's settings (``--epochs``, default 2):

* ``old_loop``: the hand-written loop of commit a2a7ed4 (``git show``), the reference figure the
  trainer lost ground against (0.6593 when it was measured).
* ``trainer``: today's ``train`` (sentence-transformers' trainer, the loop's batch order and
  learning-rate schedule).
* ``inference_free``: ``train --inference-free``: queries as IDF-initialised wordpiece weights,
  trained with the document encoder (IDF counted over the SciFact corpus), with that route's
  defaults (``pipeline.train.ROUTE_DEFAULTS``: transformer at 1e-5, no document regulariser;
  query weights at 1e-2).

Scored two ways, each scoring in its own process, one at a time (each takes both cores; six at
once on two cores never finished):

* ``pipeline``: ``run`` (encode, quantise, Lucene impact index, search, evaluate) for the
  symmetric models: the figures the README quotes.
* ``exact``: float vectors and a brute-force sparse dot product (``pipeline.reference``), the same
  remove-query rule. An inference-free model is scored this way only (the document route through
  ``encode``'s encoder, the queries as the trained table's weights of their distinct wordpieces),
  beside the symmetric models and the untrained IDF query side over splade-tiny's documents.

The result file is written after each figure (``"complete": false`` until the last), so a run
cut short keeps what it measured; ``--workdir`` keeps the trained models, and the same command
run again with it reuses the finished trainings and measures again.

``--seeds`` trains and scores the old loop and the trainer again with other seeds, so the gap
between the two can be read against how much a seed alone moves it.

    python bench/train.py [--epochs 2] [--threads 1] [--workdir DIR] [--lambdas 0 0.01 0.1] [--seeds 14 15]
    python bench/train.py --smoke      # the demo corpus, a few steps: checks the script works
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parents[1]))
import common  # noqa: E402

OLD_COMMIT = "a2a7ed4"  # the last commit with the hand-written training loop
VARIANTS = ("old_loop", "trainer", "inference_free")


def main() -> int:
    parser = common.parser(__doc__)
    parser.add_argument("--epochs", type=float, default=2.0)
    parser.add_argument("--lambdas", type=float, nargs="*", default=[], help="lambda_d sweep of the trainer")
    parser.add_argument("--sweep-epochs", type=float, default=1.0)
    parser.add_argument("--seeds", type=int, nargs="*", default=[],
                        help="more seeds: the old loop and the trainer trained and scored again with each "
                             "(how far a seed moves the figure the two are compared on)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per training process")
    parser.add_argument("--workdir", type=Path, default=None,
                        help="keep triples, trained models and runs here (default: a temporary folder); "
                             "run again with it, trainings already finished there are reused")
    parser.add_argument("--worker", choices=(*VARIANTS, "pipeline", "exact"), help=argparse_hidden())
    parser.add_argument("--job", type=Path, help=argparse_hidden())
    args = parser.parse_args()
    if args.worker:
        return worker(args.worker, args.job)
    from pipeline.train import TrainSettings, mine_triples

    log = lambda text: print(text, file=sys.stderr, flush=True)  # noqa: E731
    threads = args.threads
    if args.smoke:
        from pipeline.demo import DEMO_DATA

        dataset, queries, qrels = DEMO_DATA, DEMO_DATA / "queries.jsonl", DEMO_DATA / "qrels" / "test.tsv"
        given, epochs = {"batch_size": 4, "doc_max_length": 64, "warmup_steps": 1, "lambda_warmup_steps": 2}, 0.5
    else:
        dataset = common.DATASETS / "scifact"
        queries, qrels = dataset / "queries-train.jsonl", dataset / "qrels" / "train.tsv"
        given, epochs = {}, args.epochs
    if not old_available():
        raise SystemExit(f"commit {OLD_COMMIT} is not in this clone's history: the old loop cannot run")
    result: dict = {"dataset": dataset.name, "threads_per_training": threads, "complete": False,
                    "scoring": {"pipeline": "run: encode, quantise (scale 100), Lucene impact index, search, "
                                            "evaluate", "exact": "float vectors, brute-force sparse dot "
                                "product (pipeline.reference.exact_run), the same remove-query rule; "
                                "inference-free queries: the query table's weights of their distinct "
                                "wordpieces (no special tokens), as sentence-transformers' "
                                "SparseStaticEmbedding computes them"}}
    with tempfile.TemporaryDirectory(prefix="bench-train-") as scratch:
        root = args.workdir or Path(scratch)
        root.mkdir(parents=True, exist_ok=True)
        triples_file = root / "triples.jsonl"
        if not triples_file.is_file():  # a --workdir of an earlier run keeps its triples
            triples = mine_triples(queries, qrels, dataset / "corpus.jsonl", negatives="bm25",
                                   threads=2)
            text = "".join(json.dumps({"query": t.query, "positive": t.positive, "negative": t.negative}) + "\n"
                           for t in triples)
            (root / "triples.jsonl.tmp").write_text(text)
            (root / "triples.jsonl.tmp").replace(triples_file)
        result["triples"] = len(triples_file.read_text().splitlines())
        # each route with the command's defaults for it (the transformer's learning rate differs)
        own = {variant: asdict(TrainSettings(**given, inference_free=variant == "inference_free")) | {"epochs": epochs}
               for variant in VARIANTS}
        settings = own["trainer"]
        result["settings"] = settings
        result["inference_free_settings"] = {k: v for k, v in own["inference_free"].items() if settings[k] != v}

        log(f"training {', '.join(VARIANTS)} at once: {epochs} epochs each")
        jobs = {variant: start_worker(variant, root, triples_file, root / variant, dataset, own[variant], threads)
                for variant in VARIANTS}
        for variant, job in jobs.items():
            result[variant] = {"training": finish_worker(variant, job, own[variant])}

        def record(key: str, value) -> None:  # each figure is written as it comes: a long run keeps what it got
            result[key] = value
            common.write_result("train", result, args, threads)

        log("scoring, one process at a time (each takes both cores): the trainer, the old loop and the base model "
            "through the pipeline; the inference-free model, the trainer and IDF queries over splade-tiny's "
            "documents exactly")
        free = str(root / "inference_free")
        scoring = {("trainer", "pipeline"): ("pipeline", root / "eval-trainer", str(root / "trainer"), None),
                   ("old_loop", "pipeline"): ("pipeline", root / "eval-old_loop", str(root / "old_loop"), None),
                   ("inference_free", "exact"): ("exact", root / "exact-inference_free",
                                                 f"{free}/document_0_Transformer", free),
                   ("trainer", "exact"): ("exact", root / "exact-trainer", str(root / "trainer"), None),
                   ("idf_queries_base_documents", "exact"): ("exact", root / "exact-idf", None, "idf"),
                   ("base", "pipeline"): ("pipeline", root / "eval-base", None, None)}
        result["idf_queries_base_documents"] = {"note": "untrained: IDF over the corpus as query weights"}
        result["base"] = {}
        for (name, how), (kind, folder, encoder, query_side) in scoring.items():
            job = start_scoring(kind, dataset, folder, encoder, queries=query_side)
            record(name, result[name] | {how: finish_scoring(f"{name} ({how})", job)})
        record("trainer_minus_old_loop_nDCG@10",
               round(result["trainer"]["pipeline"]["nDCG@10"] - result["old_loop"]["pipeline"]["nDCG@10"], 4))
        for other in ("trainer", "idf_queries_base_documents"):
            record(f"inference_free_minus_{other}_exact_nDCG@10",
                   round(result["inference_free"]["exact"]["nDCG@10"] - result[other]["exact"]["nDCG@10"], 4))

        if args.seeds:
            record("seed_spread", seed_spread(args.seeds, own, root, triples_file, dataset, threads, result, log))

        sweep = []
        for lam in args.lambdas:
            log(f"lambda_d = {lam}")
            folder = root / f"lambda-{lam}"
            lam_settings = settings | {"epochs": args.sweep_epochs, "lambda_d": lam}
            finish_worker("trainer", start_worker("trainer", root, triples_file, folder, dataset, lam_settings,
                                                  threads), lam_settings)
            sweep.append({"lambda_d": lam, **finish_scoring(f"lambda {lam}", start_scoring(
                "pipeline", dataset, root / f"eval-{lam}", str(folder)))})
        if sweep:
            result["lambda_sweep"] = {"epochs": args.sweep_epochs, "points": sweep}
        result["complete"] = True
    common.write_result("train", result, args, threads)
    return 0


def seed_spread(seeds: list[int], own: dict[str, dict], root: Path, triples: Path, dataset: Path, threads: int,
                result: dict, log) -> dict:
    """The old loop and the trainer again with each of ``seeds`` (both trained at once, then scored
    through the pipeline one at a time): nDCG@10 per seed, the main run's seed first, and the means."""
    import statistics

    compared = ("old_loop", "trainer")
    spread: dict = {"seeds": [own["trainer"]["seed"], *seeds],
                    **{variant: [result[variant]["pipeline"]["nDCG@10"]] for variant in compared}}
    for seed in seeds:
        log(f"seed {seed}: the old loop and the trainer")
        seeded = {variant: own[variant] | {"seed": seed} for variant in compared}
        jobs = {variant: start_worker(variant, root, triples, root / f"{variant}-seed-{seed}", dataset,
                                      seeded[variant], threads) for variant in compared}
        for variant, job in jobs.items():
            finish_worker(variant, job, seeded[variant])
        for variant in compared:
            figures = finish_scoring(f"{variant} seed {seed}", start_scoring(
                "pipeline", dataset, root / f"eval-{variant}-seed-{seed}", str(root / f"{variant}-seed-{seed}")))
            spread[variant].append(figures["nDCG@10"])
    for variant in compared:
        values = spread[variant]
        spread[f"{variant}_mean"] = round(statistics.mean(values), 4)
        spread[f"{variant}_stdev"] = round(statistics.stdev(values), 4) if len(values) > 1 else None
    spread["trainer_minus_old_loop_mean"] = round(spread["trainer_mean"] - spread["old_loop_mean"], 4)
    return spread


def argparse_hidden():
    import argparse

    return argparse.SUPPRESS


# -- scoring -------------------------------------------------------------------------------------

def start_scoring(how: str, dataset: Path, root: Path, encoder: str | None, queries: str | None = None):
    """Figures of ``encoder`` on the test split in a child process: ``pipeline`` (``run``) or ``exact``.

    ``exact`` takes the queries from ``encoder`` itself, or as weighted wordpieces: ``idf`` (IDF over
    the corpus) or the query table of the inference-free model folder ``queries``.
    """
    job = root.with_name(f"job-{root.name}.json")
    job.write_text(json.dumps({"dataset": str(dataset), "encoder": encoder, "root": str(root), "queries": queries}))
    return spawn(how, job, root.with_name(f"{root.name}.log"))


def finish_scoring(name: str, job: tuple[subprocess.Popen, Path]) -> dict:
    process, log = job
    out, _ = process.communicate()
    if process.returncode != 0:
        raise SystemExit(f"scoring {name} failed:\n{log.read_text()[-3000:]}")
    return json.loads(out.strip().splitlines()[-1])


def pipeline_figures(job: dict) -> dict:
    from pipeline.experiment import run_dataset

    result = run_dataset(Path(job["dataset"]), job["encoder"], root=Path(job["root"]), threads=2, overwrite=True,
                         progress=False, say=lambda text: None)
    return {"nDCG@10": round(result["metrics"]["nDCG@10"], 4), "R@100": round(result["metrics"]["R@100"], 4),
            "postings_per_doc": result["postings_per_doc"]}


def exact_figures(job: dict) -> dict:
    scorer = Scorer(Path(job["dataset"]))
    documents = scorer.documents(job["encoder"])
    if job["queries"] is None:
        return scorer.symmetric(documents)
    weights = scorer.corpus_idf() if job["queries"] == "idf" else trained_query_weights(Path(job["queries"]))
    return scorer.static(weights, documents)


class Scorer:
    """Exact float scoring of SciFact test: document vectors from an encoder, queries from a model or a table."""

    def __init__(self, dataset: Path) -> None:
        from pipeline.experiment import dataset_files, judged_topics, self_hit_rule
        from pipeline.readers import read_corpus, read_qrels

        corpus, queries, qrels_path = dataset_files(dataset, "test")
        self.qrels = read_qrels(qrels_path)
        self.topics = judged_topics(queries, qrels_path)
        self.docs = [doc for _, doc in read_corpus(corpus)]
        self.dropping = set(self_hit_rule("auto", self.topics, qrels_path)[0])

    def documents(self, encoder: str | None):
        from pipeline import models
        from pipeline.encoder import SpladeEncoder

        model = SpladeEncoder(models.resolve(encoder), threads=2)
        return model, model.encode([d.text for d in self.docs])

    def corpus_idf(self):
        from transformers import AutoTokenizer

        from pipeline import models
        from pipeline.training.idf import bm25_idf, document_frequencies

        tokenizer = AutoTokenizer.from_pretrained(models.resolve(None).location)
        frequencies, count = document_frequencies(tokenizer, (d.text for d in self.docs), len(tokenizer.get_vocab()))
        return bm25_idf(frequencies, count)

    def symmetric(self, documents) -> dict:
        model, vectors = documents
        queries = model.encode_queries(model.tokenize(list(self.topics.values())))  # as the search stage
        return self.figures(vectors, queries, model.vocab_size)

    def static(self, weights, documents) -> dict:
        """Queries as ``weights`` of their distinct wordpieces (what SparseStaticEmbedding computes)."""
        import numpy as np

        from pipeline.encoder import SparseVector

        model, vectors = documents
        queries = []
        for ids in model.tokenizer(list(self.topics.values()), add_special_tokens=False, truncation=True,
                                   max_length=model.tokenizer.model_max_length)["input_ids"]:
            unique = np.unique(np.asarray(ids, dtype=np.int64))
            values = np.asarray(weights, dtype=np.float32)[unique]
            keep = values > 0
            queries.append(SparseVector(unique[keep].astype(np.int32), values[keep]))
        return self.figures(vectors, queries, model.vocab_size)

    def figures(self, doc_vectors, query_vectors, width: int) -> dict:
        from pipeline.evaluate import evaluate, parse_measure
        from pipeline.reference import exact_run

        run = exact_run([d.id for d in self.docs], doc_vectors, list(self.topics), query_vectors, width, hits=1000)
        run = {q: {doc: score for doc, score in hits if not (q in self.dropping and doc == q)}
               for q, hits in run.items()}
        metrics, _ = evaluate(run, self.qrels, [parse_measure(m) for m in ("nDCG@10", "R@100")])
        return {k: round(v, 4) for k, v in metrics.items()}


def trained_query_weights(folder: Path):
    """The inference-free model's query table, as sentence-transformers loads it."""
    from sentence_transformers import SparseEncoder
    from sentence_transformers.sparse_encoder.modules import SparseStaticEmbedding

    model = SparseEncoder(str(folder), device="cpu")
    static = next(m for m in model.modules() if isinstance(m, SparseStaticEmbedding))
    return static.weight.detach().numpy()


# -- training workers ----------------------------------------------------------------------------

def start_worker(variant: str, root: Path, triples: Path, output: Path, dataset: Path, settings: dict,
                 threads: int) -> tuple[subprocess.Popen, Path]:
    """One training in a child process (the old loop's module is loaded from git in its own), and its log."""
    job = root / f"job-{output.name}.json"
    job.write_text(json.dumps({"triples": str(triples), "output": str(output), "settings": settings,
                               "threads": threads, "corpus": str(dataset / "corpus.jsonl")}))
    return spawn(variant, job, root / f"{output.name}.log")


def spawn(kind: str, job: Path, log: Path) -> tuple[subprocess.Popen, Path]:
    """This script as a ``--worker`` child: its summary comes back on stdout, its messages go to ``log``."""
    with open(log, "w") as errors:
        process = subprocess.Popen([sys.executable, __file__, "--worker", kind, "--job", str(job)],
                                   stdout=subprocess.PIPE, stderr=errors, text=True)
    return process, log


def finish_worker(variant: str, job: tuple[subprocess.Popen, Path], settings: dict) -> dict:
    """The worker's summary; a training reused from --workdir must have been made with these settings."""
    process, log = job
    out, _ = process.communicate()
    if process.returncode != 0:
        raise SystemExit(f"{variant} training failed:\n{log.read_text()[-3000:]}")
    summary = json.loads(out.strip().splitlines()[-1])
    other = {k: v for k, v in summary["settings"].items() if k in settings and settings[k] != v}
    if other:
        raise SystemExit(f"{variant}: the workdir holds a training with other settings ({other}); "
                         "use another --workdir")
    return {k: v for k, v in summary.items() if k != "settings"}


def worker(variant: str, job_file: Path) -> int:
    """Train as ``splade-pipeline train`` would (trainer, inference_free), or with the old loop (old_loop)."""
    job = json.loads(job_file.read_text())
    if variant in SCORINGS:
        print(json.dumps(SCORINGS[variant](job)))
        return 0
    extra = {}
    if variant == "old_loop":
        module = old_module()
        read_triples, train, TrainSettings = module.read_triples, module.train, module.TrainSettings
    else:
        from pipeline.readers import read_corpus
        from pipeline.train import TrainSettings, read_triples, train

        if job["settings"].get("inference_free"):
            extra["documents"] = (doc.text for _, doc in read_corpus(Path(job["corpus"])))
    settings = TrainSettings(**{k: v for k, v in job["settings"].items()
                                if k in TrainSettings.__dataclass_fields__})
    summary = train(read_triples(Path(job["triples"])), Path(job["output"]), settings=settings,
                    threads=job["threads"], save_steps=10_000, progress=False, say=lambda text: None, **extra)
    print(json.dumps({"steps": summary["steps"], "final": summary.get("final"), "settings": summary["settings"],
                      **({"query_weights": summary["query_weights"]} if "query_weights" in summary else {})}))
    return 0


def old_available() -> bool:
    return subprocess.run(["git", "-C", str(common.ROOT), "cat-file", "-e", f"{OLD_COMMIT}:pipeline/train.py"],
                          capture_output=True).returncode == 0


def old_module():
    """``pipeline/train.py`` as of OLD_COMMIT, importing the tile size from where it lives now."""
    import types

    source = subprocess.run(["git", "-C", str(common.ROOT), "show", f"{OLD_COMMIT}:pipeline/train.py"],
                            capture_output=True, text=True, check=True).stdout
    source = source.replace("from pipeline.encoder import VOCAB_TILE, default_threads, load_masked_lm",
                            "from pipeline.encoder import default_threads, load_masked_lm\n"
                            "from pipeline.projection import VOCAB_TILE")
    module = types.ModuleType("old_train")
    sys.modules["old_train"] = module
    exec(compile(source, f"{OLD_COMMIT}:pipeline/train.py", "exec"), module.__dict__)
    return module


SCORINGS = {"pipeline": pipeline_figures, "exact": exact_figures}

if __name__ == "__main__":
    raise SystemExit(main())
