"""Command line: ``splade-pipeline <stage> ...`` (also ``python -m pipeline``). Parsing only.

Options follow Pyserini's names (--index, --topics, --output, --hits, --threads, --batch-size,
--encoder). Errors the user can fix print one line and exit with status 2.
"""

from __future__ import annotations

import argparse
import json
import math
import signal
import sys
from pathlib import Path

from pipeline import __version__, extras
from pipeline.errors import PipelineError


PRESETS = ("auto", "beir", "msmarco", "dl")  # pipeline.evaluate.PRESET_CHOICES, without importing it


class _Parser(argparse.ArgumentParser):
    """argparse that reports a bad option in one line (``splade-pipeline encode: error: ...``)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def integer(minimum: int, maximum: int | None = None):
    """An ``int`` option within bounds; the message names the bound and the value given."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum or (maximum is not None and value > maximum):
            bounds = f"from {minimum} to {maximum}" if maximum is not None else f"at least {minimum}"
            raise argparse.ArgumentTypeError(f"must be {bounds}, got {value}")
        return value
    return parse


def number(minimum: float = -math.inf, above: bool = False):
    """A finite ``float`` option, ``> minimum`` (``above``) or ``>= minimum``."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
        if value < minimum or (above and value == minimum):
            raise argparse.ArgumentTypeError(f"must be {'above' if above else 'at least'} {minimum:g}, got {text}")
        return value
    return parse


POSITIVE = number(0, above=True)
COUNT = integer(1)  # threads, hits, batch and shard sizes, steps


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--verbose", action="store_true", help="show Anserini's and the JVM's logging")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


QUERY_ENCODER_HELP = ("what encodes queries: tokens (weight 1 per wordpiece, SPLADE-v3-Doc), idf (IDF from the "
                      "index's postings), idf:FILE (an idf.json, OpenSearch doc-only models), or a checkpoint / "
                      "sentence-transformers folder (a separate query encoder)")


def _query_encoder(parser: argparse.ArgumentParser, default: str) -> None:
    parser.add_argument("--query-encoder", default=None, metavar="SIDE", help=f"{QUERY_ENCODER_HELP} ({default})")


def _model_options(parser: argparse.ArgumentParser, defaults: bool = True) -> None:
    parser.add_argument("--encoder", default=None,
                        help="splade-tiny (embedded, default), a local checkpoint folder, a sentence-transformers "
                             "SparseEncoder folder (modules.json) or a Hugging Face id")
    parser.add_argument("--batch-size", type=COUNT, default=32,
                        help="texts per forward pass (default 32; on the CPU at most 1,024 padded tokens)")
    parser.add_argument("--threads", type=COUNT, default=None, help="CPU threads (default: all cores)")
    parser.add_argument("--max-length", type=integer(2), default=None,
                        help="token limit per text" + (" (default: the model's configuration, else 512)" if defaults
                                                       else " (default: the index's)"))
    parser.add_argument("--pooling", choices=("max", "sum"), default=None,
                        help="max (SPLADE v2) or sum (v1)" + (" (default: the model's, else max)" if defaults
                                                              else " (default: the index's)"))
    parser.add_argument("--scale", type=POSITIVE, default=None,
                        help="quantisation: weight = int(round(w * scale))" + (" (default 100)" if defaults
                                                                                else " (default: the index's)"))
    parser.add_argument("--quantisation", choices=("scale", "anserini"), default=None,
                        help="scale (round(w * --scale), default) or anserini (round(w / 5 * 256), as Pyserini's "
                             "SPLADE encoders write: an index that matches theirs term for term)")
    parser.add_argument("--device", default="cpu" if defaults else None,
                        help="cpu (default), cuda, cuda:N, mps, or auto (the first of cuda, mps, cpu found)")
    parser.add_argument("--precision", choices=("fp32", "fp16", "bf16"), default=None,
                        help="torch backend: fp32 (exact, default), or fp16/bf16 autocast (GPU; bf16 also CPU)"
                             + ("" if defaults else "; default: the index's"))
    parser.add_argument("--backend", choices=("torch", "onnx", "openvino"), default="torch" if defaults else None,
                        help="torch (default), or onnx / openvino: int8 on the CPU (pip install "
                             "'splade-pipeline[int8]')" + ("" if defaults else "; default: the index's"))


def _two_step_options(parser: argparse.ArgumentParser, build: bool = False) -> None:
    parser.add_argument("--two-step", action="store_true",
                        help="search the index's pruned first stage, then rescore the candidates exactly with "
                             "the full vectors" + (" (builds the companion)" if build else
                                                   " (needs index --prune-docs)"))
    parser.add_argument("--candidates", type=COUNT, default=None, metavar="K",
                        help="two-step: first-stage candidates rescored per query (default: the larger of "
                             "2 x --hits and 100)")
    parser.add_argument("--query-terms", type=integer(0), default=None, metavar="N",
                        help="two-step: the query's N largest weights search the first stage (default 20; "
                             "0: all)")
    if build:
        parser.add_argument("--prune-docs", type=COUNT, default=None, metavar="N",
                            help="two-step: postings kept per document in the first stage (default 128)")
        _prune_impact(parser)


def _prune_impact(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--prune-impact", type=integer(0), default=None, metavar="T",
                        help="two-step: also leave out of the first stage every posting whose impact is under T "
                             "(pruning by impact; recorded beside --prune-docs)")


def two_step_choice(args: argparse.Namespace):
    """The two-step options given, or None; two-step settings without ``--two-step`` are refused."""
    given = [flag for flag, value in (("--candidates", args.candidates), ("--query-terms", args.query_terms),
                                      *((flag, getattr(args, flag[2:].replace("-", "_"), None))
                                        for flag in ("--prune-docs", "--prune-impact") if args.command == "run"))
             if value is not None]
    if not args.two_step:
        if given:
            raise PipelineError(f"{given[0]} needs --two-step")
        return None
    from pipeline.two_step import DEFAULT_QUERY_TERMS, TwoStepOptions

    query_terms = DEFAULT_QUERY_TERMS if args.query_terms is None else (args.query_terms or None)
    return TwoStepOptions(args.candidates, query_terms)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="splade-pipeline",
                                     description="SPLADE model -> Lucene impact index -> scored TREC run.")
    parser.add_argument("--version", action="version", version=f"splade-pipeline {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = commands.add_parser("encode", help="corpus -> JsonVectorCollection of quantised SPLADE vectors")
    p.add_argument("--corpus", required=True, type=Path,
                   help="BEIR corpus.jsonl, JsonCollection .jsonl or MS MARCO collection.tsv (.gz too)")
    p.add_argument("--output", required=True, type=Path, help="collection folder, e.g. collections/NAME")
    _model_options(p)
    p.add_argument("--shard-size", type=COUNT, default=10_000, help="documents per shard (default 10000)")
    p.add_argument("--overwrite", action="store_true", help="encode again even if the collection is complete")
    p.add_argument("--ray", nargs="?", const="local", default=None, metavar="ADDRESS",
                   help="encode the shards on Ray workers: alone, a Ray runtime on this machine; with an "
                        "address (host:6379), a running cluster; --threads is then per worker (default 1)")
    p.add_argument("--ray-workers", type=COUNT, default=None,
                   help="Ray workers, each loading the model once (default: the cluster's CPUs / --threads, "
                        "or its GPUs with --device cuda)")
    _common(p)

    p = commands.add_parser("index", help="collection -> Lucene impact index (Anserini IndexCollection)")
    p.add_argument("--collection", required=True, type=Path, help="collection folder from encode")
    p.add_argument("--index", required=True, type=Path, help="index folder, e.g. indexes/NAME")
    p.add_argument("--threads", type=COUNT, default=None, help="indexing threads (default: all cores)")
    p.add_argument("--store-raw", action="store_true", help="store each document's JSON in the index")
    _query_encoder(p, "default: the collection's encoder, or its Router's query route; recorded for search and "
                      "serve")
    p.add_argument("--overwrite", action="store_true", help="rebuild even if the index is complete")
    p.add_argument("--prune-docs", type=COUNT, default=None, metavar="N",
                   help="also build the two-step companion: a first-stage index keeping each document's N "
                        "largest impacts, and a forward store of the full vectors (for search --two-step)")
    _prune_impact(p)
    _common(p)

    p = commands.add_parser("search", help="topics -> run file, by impact search")
    p.add_argument("--index", required=True, type=Path)
    p.add_argument("--topics", type=Path, help="BEIR queries.jsonl or TSV 'qid<TAB>text'")
    p.add_argument("--encoded-queries", type=Path,
                   help='pre-encoded queries: JSONL {"id", "vector"} or Anserini\'s cached .tsv(.gz)')
    p.add_argument("--output", required=True, type=Path, help="run file, e.g. runs/run.NAME.txt")
    p.add_argument("--hits", type=COUNT, default=1000, help="hits per query (default 1000)")
    p.add_argument("--remove-query", action="store_true", help="drop hits whose id equals the query id (BEIR)")
    p.add_argument("--format", choices=("trec", "msmarco"), default="trec", help="run format (default trec)")
    p.add_argument("--run-tag", default="splade", help="last column of TREC runs (default splade)")
    _model_options(p, defaults=False)
    _query_encoder(p, "default: the index's")
    _two_step_options(p)
    p.add_argument("--force", action="store_true", help="search even if settings differ from the index's")
    p.add_argument("--overwrite", action="store_true", help="replace an existing run file")
    _common(p)

    p = commands.add_parser("evaluate", help="run + qrels -> trec_eval figures")
    p.add_argument("--run", required=True, type=Path)
    p.add_argument("--qrels", required=True, type=Path, help="TREC qrels or BEIR qrels TSV")
    p.add_argument("--metrics", nargs="+", default=None,
                   help="e.g. nDCG@10 R@100 MRR@10 MAP P@30 (default: the preset's)")
    p.add_argument("--preset", choices=PRESETS, default="auto",
                   help="default measures: beir (nDCG@10 R@100), msmarco (MRR@10 R@1000), dl (nDCG@10 MAP "
                        "R@1000 at level 2); auto (default) picks dl for TREC DL's graded 0-3 pools, else beir")
    p.add_argument("--level", type=int, default=None,
                   help="lowest grade counted relevant by binary measures, at least 1 (trec_eval -l; TREC DL: 2)")
    p.add_argument("--judged-run-only", action="store_true",
                   help="average over queries in both run and qrels (trec_eval without -c)")
    p.add_argument("--per-query", action="store_true", help="also print each query's figures")
    p.add_argument("--json", action="store_true", help="print JSON")
    _common(p)

    p = commands.add_parser("fuse", help="hybrid run from several run files (RRF or normalised linear mix)")
    p.add_argument("--runs", required=True, nargs="+", type=Path, help="two or more run files (TREC or MS MARCO)")
    p.add_argument("--output", required=True, type=Path)
    p.add_argument("--method", choices=("rrf", "linear"), default="rrf", help="default rrf")
    p.add_argument("--k", type=POSITIVE, default=60, help="RRF constant (default 60)")
    p.add_argument("--weights", nargs="+", type=number(), default=None,
                   help="linear: one weight per run (default equal)")
    p.add_argument("--hits", type=COUNT, default=1000)
    p.add_argument("--run-tag", default=None)
    p.add_argument("--overwrite", action="store_true", help="replace a fused run made from other inputs")
    _common(p)

    p = commands.add_parser("train", help="fine-tune a SPLADE model; writes a checkpoint folder for --encoder")
    p.add_argument("--output", required=True, type=Path, help="checkpoint folder, e.g. models/NAME")
    p.add_argument("--encoder", default=None, help="model to start from (default splade-tiny)")
    p.add_argument("--triples", type=Path, help='JSONL {"query", "positive", "negative"[, "scores": [pos, neg]]}')
    p.add_argument("--queries", type=Path, help="or mine triples: BEIR queries.jsonl or TSV topics ...")
    p.add_argument("--qrels", type=Path, help="... judgments (relevant pairs become positives) ...")
    p.add_argument("--corpus", type=Path, help="... and the corpus the documents come from "
                   "(with --triples: the documents --inference-free counts IDF over)")
    p.add_argument("--negatives", choices=("bm25", "random"), default="bm25", help="mined negatives (default bm25)")
    p.add_argument("--loss", choices=("contrastive", "margin-mse"), default="contrastive",
                   help="in-batch contrastive (v1) or margin-MSE distillation (v2, needs teacher scores)")
    p.add_argument("--regulariser", choices=("flops", "l1"), default="flops")
    p.add_argument("--lambda-q", type=number(0), default=3e-3, help="query regulariser weight (default 3e-3)")
    p.add_argument("--lambda-d", type=number(0), default=None,
                   help="document regulariser weight (default 1e-3; 0 with --inference-free)")
    p.add_argument("--lambda-warmup-steps", type=integer(0), default=100, help="quadratic lambda warm-up (default 100)")
    p.add_argument("--pooling", choices=("max", "sum"), default="max")
    p.add_argument("--batch-size", type=COUNT, default=16, help="triples per step (default 16)")
    p.add_argument("--epochs", type=POSITIVE, default=1.0)
    p.add_argument("--max-steps", type=COUNT, default=None)
    p.add_argument("--learning-rate", type=POSITIVE, default=None,
                   help="of the transformer (default 3e-5; 1e-5 with --inference-free)")
    p.add_argument("--warmup-steps", type=integer(0), default=20)
    p.add_argument("--query-max-length", type=integer(2), default=64)
    p.add_argument("--max-length", type=integer(2), default=256, help="document token limit in training (default 256)")
    p.add_argument("--save-steps", type=COUNT, default=50)
    p.add_argument("--max-minutes", type=POSITIVE, default=None, help="stop (resumably) after this long")
    p.add_argument("--threads", type=COUNT, default=None)
    p.add_argument("--seed", type=integer(0), default=13)
    p.add_argument("--gradient-accumulation-steps", type=COUNT, default=1,
                   help="batches per optimiser step (default 1); in-batch negatives stay within a batch")
    p.add_argument("--batches", choices=("shuffle", "no-duplicates"), default="shuffle",
                   help="batch order: shuffle (default; seeded per epoch, as the loop before the trainer) or "
                        "no-duplicates (sentence-transformers' sampler: no text twice in a batch)")
    p.add_argument("--inference-free", action="store_true",
                   help="queries as IDF-weighted wordpieces trained with the documents (sentence-transformers' "
                        "Router with SparseStaticEmbedding); no transformer at query time")
    p.add_argument("--query-learning-rate", type=POSITIVE, default=1e-2,
                   help="learning rate of the inference-free query weights (default 1e-2)")
    p.add_argument("--device", default="cpu",
                   help="cpu (default), cuda, cuda:N, mps, or auto; several GPUs: launch with torchrun (DDP)")
    p.add_argument("--precision", choices=("fp32", "fp16", "bf16"), default="fp32",
                   help="fp32 (default), or fp16/bf16 mixed precision (fp16 needs a GPU)")
    p.add_argument("--overwrite", action="store_true", help="discard an earlier run in --output")
    _common(p)

    p = commands.add_parser("run", help="all four stages on a BEIR folder or corpus, topics and qrels files")
    p.add_argument("--dataset", type=Path, default=None,
                   help="folder with corpus.jsonl (or collection.tsv), queries.jsonl, qrels/")
    p.add_argument("--corpus", type=Path, default=None, help="corpus file instead of the dataset's (e.g. collection.tsv)")
    p.add_argument("--topics", type=Path, default=None, help="topics file instead of the dataset's (e.g. dl19.jsonl)")
    p.add_argument("--qrels", type=Path, default=None,
                   help="qrels file instead of the dataset's qrels/<split>.tsv; its name becomes the split")
    p.add_argument("--name", default=None, help="name for outputs (default: the folder's name)")
    p.add_argument("--split", default="test", help="qrels split (default test)")
    p.add_argument("--hits", type=COUNT, default=1000)
    p.add_argument("--root", type=Path, default=Path("."), help="where collections/, indexes/, runs/ go")
    p.add_argument("--remove-query", choices=("auto", "always", "never"), default="auto",
                   help="hits whose id equals the query id: auto (default) drops them unless the qrels judge the "
                        "pair relevant; always (BEIR's rule as is); never")
    p.add_argument("--keep-query", action="store_true", help="same as --remove-query never")
    _two_step_options(p, build=True)
    p.add_argument("--preset", choices=PRESETS, default="auto", help="evaluation preset (see evaluate --preset)")
    _model_options(p)
    _query_encoder(p, "default: the encoder's own")
    p.add_argument("--overwrite", action="store_true", help="redo every stage")
    p.add_argument("--json", action="store_true", help="print JSON")
    _common(p)

    p = commands.add_parser("demo", help="the whole pipeline on an embedded corpus, with explained hits")
    p.add_argument("--workdir", type=Path, default=None, help="keep outputs here (default: a temporary folder)")
    p.add_argument("--query", default="q9", help="demo query to explain (q1..q10, default q9)")
    p.add_argument("--threads", type=COUNT, default=None)
    _common(p)

    p = commands.add_parser("serve", help="warm search service: JSON API and a page that explains rankings")
    p.add_argument("--index", required=True, action="append", metavar="[NAME=]PATH",
                   help="index to serve (repeat for several); named by its folder unless NAME= is given")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=integer(0, 65535), default=8080, help="port (default 8080)")
    p.add_argument("--workers", type=integer(1, 64), default=1,
                   help="worker processes, each with its own JVM and model (default 1)")
    p.add_argument("--threads", type=integer(1), default=1,
                   help="Lucene threads for a batch of queries, per worker (default 1); queries are encoded on "
                        "one torch thread, as the search stage encodes them")
    _query_encoder(p, "default: each index's own")
    p.add_argument("--force", action="store_true", help="serve with --query-encoder even where it differs from an "
                                                        "index's")
    p.add_argument("--two-step", action="store_true",
                   help="search every index through its two-step companion (index --prune-docs), with search "
                        "--two-step's default settings; hits keep their exact scores")
    _common(p)
    return parser


COMMAND_EXTRAS = {"train": "train", "serve": "serve"}  # commands that need an extra as a whole


def _run(args: argparse.Namespace) -> int:
    if args.command in COMMAND_EXTRAS:  # before any import that needs it (and before mining triples)
        extras.require(args.command, COMMAND_EXTRAS[args.command])
    from pipeline import stages

    progress = not args.quiet
    if args.command == "encode":
        stages.encode(args.corpus, args.output, args.encoder, batch_size=args.batch_size, max_length=args.max_length,
                      pooling=args.pooling, scale=args.scale, threads=args.threads, shard_size=args.shard_size,
                      overwrite=args.overwrite, progress=progress, device=args.device, precision=args.precision,
                      backend=args.backend, ray=args.ray, ray_workers=args.ray_workers,
                      quantisation=args.quantisation)
    elif args.command == "index":
        stages.index(args.collection, args.index, args.threads, args.store_raw, args.overwrite, args.verbose,
                     progress=progress, query_encoder=args.query_encoder, prune_docs=args.prune_docs,
                     prune_impact=args.prune_impact)
    elif args.command == "search":
        from pipeline.encoders import Options

        options = Options(args.encoder, args.query_encoder, args.pooling, args.max_length, args.scale,
                          args.quantisation, args.backend, args.precision, args.device)
        stages.search(args.index, args.output, args.topics, args.encoded_queries, options=options, hits=args.hits,
                      remove_query=args.remove_query, fmt=args.format, tag=args.run_tag, threads=args.threads,
                      batch_size=args.batch_size, force=args.force, overwrite=args.overwrite, progress=progress,
                      two_step=two_step_choice(args))
    elif args.command == "evaluate":
        from pipeline.evaluate import evaluate_files

        result = evaluate_files(args.run, args.qrels, args.metrics, args.level, not args.judged_run_only,
                                preset=args.preset)
        if not args.per_query:
            result.pop("per_query")
        if args.json:
            print(json.dumps(result, indent=2))
        else:
            _print_evaluation(result)
    elif args.command == "fuse":
        from pipeline.fusion import fuse_files

        queries = fuse_files(args.runs, args.output, args.method, args.k, args.weights, args.hits, args.run_tag,
                             args.overwrite)
        if queries is not None:
            print(f"{args.output}: {queries} queries fused ({args.method})", file=sys.stderr)
    elif args.command == "train":
        from pipeline import devices, train

        devices.resolve(args.device, args.precision)  # absent hardware fails before any mining
        if args.triples:
            triples = train.read_triples(args.triples)
        elif args.queries and args.qrels and args.corpus:
            triples = train.mine_triples(args.queries, args.qrels, args.corpus, args.negatives, seed=args.seed,
                                         threads=args.threads or 1)
        else:
            raise PipelineError("train needs --triples, or --queries, --qrels and --corpus to mine them")
        settings = train.TrainSettings(
            args.pooling, args.loss, args.regulariser, args.lambda_q, args.lambda_d, args.lambda_warmup_steps,
            args.learning_rate, args.warmup_steps, args.batch_size, args.epochs, args.max_steps,
            args.query_max_length, args.max_length, args.seed, args.gradient_accumulation_steps,
            batches=args.batches, inference_free=args.inference_free, query_learning_rate=args.query_learning_rate)
        documents = None
        if args.inference_free and args.corpus:
            from pipeline.readers import read_corpus

            documents = (doc.text for _, doc in read_corpus(args.corpus))
        summary = train.train(triples, args.output, args.encoder, settings, args.threads, args.save_steps,
                              args.max_minutes, args.overwrite, progress, device=args.device,
                              precision=args.precision, documents=documents)
        print(json.dumps(summary, indent=2))
    elif args.command == "run":
        from pipeline.experiment import results_table, run_dataset

        result = run_dataset(args.dataset, args.encoder, args.name, args.root, args.split, args.hits, args.threads,
                             args.batch_size, args.scale, args.pooling, args.max_length, args.overwrite,
                             remove_query="never" if args.keep_query else args.remove_query, progress=progress,
                             verbose=args.verbose, corpus=args.corpus, topics=args.topics, qrels=args.qrels,
                             preset=args.preset, device=args.device, precision=args.precision,
                             backend=args.backend, query_encoder=args.query_encoder,
                             quantisation=args.quantisation, two_step=two_step_choice(args),
                             prune_docs=args.prune_docs, prune_impact=args.prune_impact)
        print(json.dumps(result, indent=2) if args.json else results_table([result]))
    elif args.command == "demo":
        from pipeline.demo import run_demo

        run_demo(args.workdir, args.query, threads=args.threads)
    elif args.command == "serve":
        from pipeline.service import serve
        from pipeline.service.backend import index_names

        serve(index_names(args.index), args.host, args.port, args.workers, args.threads, verbose=args.verbose,
              query_encoder=args.query_encoder, force=args.force, two_step=args.two_step)
    return 0


def _print_evaluation(result: dict) -> None:
    for qid, values in (result.get("per_query") or {}).items():
        print("\t".join([qid, *(f"{name} {value:.4f}" for name, value in values.items())]))
    print(f"queries\t{result['queries']}")
    for name, value in result["metrics"].items():
        print(f"{name}\t{value:.4f}")


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C so that every ``finally`` (temporary folders, locks) runs."""


def _on_sigterm(signum, frame) -> None:
    raise Terminated()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.verbose:
        from pipeline import jvm

        jvm.VERBOSE = True
    try:
        previous = signal.signal(signal.SIGTERM, _on_sigterm)
    except ValueError:  # not the main thread (an embedding program): leave signals alone
        previous = None
    try:
        try:
            return _run(args)
        except ModuleNotFoundError as exc:  # an optional module imported on a path no require() guards
            missing = extras.explain_missing(args.command, exc)
            if missing is None:
                raise
            raise missing from None
    except PipelineError as exc:
        print(f"splade-pipeline {args.command}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except OSError as exc:  # permissions, a file where a folder should be, a full disk, ...
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"splade-pipeline {args.command}: error: {where}{exc.strerror or exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        terminated = isinstance(exc, Terminated)
        print(f"splade-pipeline {args.command}: {'terminated' if terminated else 'interrupted'}", file=sys.stderr)
        return 143 if terminated else 130
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
