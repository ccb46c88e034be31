#!/usr/bin/env python
"""GPU encoding: precisions against CPU fp32 (weights and nDCG@10) and speed against peers on one GPU.

One prepared run for a GPU machine (no Java, no Pyserini install, no network):

    PYTHONPATH=. python3 bench/gpu.py --model DIR --corpus corpus.jsonl --qrels test.tsv \\
        --queries queries.jsonl --pyserini-splade pyserini/encode/_splade.py --results DIR

1. Effectiveness: the corpus and queries encoded by splade-pipeline on ``--device cuda`` in fp32,
   fp16 and bf16, each compared with CPU fp32 (the exact reference): largest weight error, share of
   quantised impacts (scale 100) that change, and nDCG@10 / R@100 of the exact brute-force ranking
   over float vectors and over quantised impacts (what Lucene computes), no Lucene involved.
2. Speed, in docs/s on the same GPU and texts: splade-pipeline (fp32, fp16, bf16), Pyserini's
   ``SpladeDocumentEncoder`` (its ``_splade.py`` loaded from the given file; corpus order, fixed
   batches, as ``pyserini.encode`` runs it), sentence-transformers' ``SparseEncoder``
   (``encode_document``), for the model given and for a BERT-base-sized model with random weights
   (decoder bias set for about 300 terms per document).

``--smoke`` runs the same code on the CPU (bf16 only) over a few texts, for CI.
"""

from __future__ import annotations

import importlib.util
import sys
import tempfile
import time
import types
import warnings
from pathlib import Path

import common
import numpy as np
import torch

import pipeline
from pipeline import models
from pipeline.encoder import SparseVector, SpladeEncoder
from pipeline.impacts import dense
from pipeline.evaluate import evaluate, parse_measure
from pipeline.readers import read_corpus, read_qrels, read_topics

SCALE = 100
DEMO_DATA = Path(pipeline.__file__).parent / "resources" / "demo"  # not via pipeline.demo: no JVM modules here
TARGET_TERMS = 300


def load_pyserini_splade(path: Path):
    """Pyserini's ``_splade.py`` from a file, with ``pyserini.encode``'s two base classes stubbed."""
    package = types.ModuleType("pyserini")
    encode = types.ModuleType("pyserini.encode")

    class DocumentEncoder:  # pyserini.encode._base's interfaces; _splade.py only subclasses them
        pass

    class QueryEncoder:
        pass

    encode.DocumentEncoder, encode.QueryEncoder = DocumentEncoder, QueryEncoder
    package.encode = encode
    saved = {name: sys.modules.get(name) for name in ("pyserini", "pyserini.encode")}
    sys.modules.update({"pyserini": package, "pyserini.encode": encode})
    try:
        spec = importlib.util.spec_from_file_location("pyserini_splade_copy", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)  # type: ignore[union-attr]
    finally:
        for name, value in saved.items():
            if value is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = value
    return module


def base_model(folder: Path, tokenizer_from: str, calibration: list[str], device, smoke: bool = False) -> Path:
    """bert-base-uncased's architecture, random weights, decoder bias for ~300 terms per text.

    In smoke mode a one-layer, 64-wide model of the same vocabulary: the code path, in seconds.
    """
    from transformers import AutoTokenizer, BertConfig, BertForMaskedLM

    torch.manual_seed(13)
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_from)
    config = (BertConfig(hidden_size=64, num_hidden_layers=1, num_attention_heads=2, intermediate_size=128)
              if smoke else BertConfig())
    mlm = BertForMaskedLM(config).eval().to(device)
    with torch.inference_mode():
        batch = tokenizer(calibration, truncation=True, max_length=512, padding=True, return_tensors="pt").to(device)
        logits = mlm(**batch).logits
        maxima = logits.masked_fill(~batch["attention_mask"].bool().unsqueeze(-1), -1e9).amax(1)
        threshold = float(torch.median(torch.sort(maxima, 1, descending=True).values[:, TARGET_TERMS]))
        mlm.cls.predictions.bias.fill_(-threshold)
    mlm.to("cpu").save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def rank(doc_ids, docs: np.ndarray, query_ids, queries: np.ndarray, hits: int = 100) -> dict:
    """Exact brute-force top ``hits`` by dot product (float64), ties by document id; query's own id removed."""
    try:
        from pipeline.reference import exact_run

        def sparse(matrix):
            return [SparseVector(np.flatnonzero(row).astype(np.int32), row[np.flatnonzero(row)]) for row in matrix]

        run = exact_run(doc_ids, sparse(docs), query_ids, sparse(queries), docs.shape[1], hits, remove_query=True)
        return {q: dict(found) for q, found in run.items()}
    except ImportError:  # no scipy: the same ranking with torch
        scores = torch.from_numpy(queries.astype(np.float64)) @ torch.from_numpy(docs.astype(np.float64)).T
        run = {}
        for row, qid in enumerate(query_ids):
            values = scores[row].numpy()
            candidates = np.flatnonzero(values > 0)
            ranked = sorted(((doc_ids[i], float(values[i])) for i in candidates), key=lambda h: (-h[1], h[0]))
            run[qid] = dict([h for h in ranked if h[0] != qid][:hits])
        return run


def effectiveness(doc_ids, doc_matrix, query_ids, query_matrix, qrels) -> dict:
    measures = [parse_measure(m) for m in ("nDCG@10", "R@100")]
    found = {}
    for label, docs, queries in (("float", doc_matrix, query_matrix),
                                 ("quantised", np.rint(doc_matrix.astype(np.float64) * SCALE),
                                  np.rint(query_matrix.astype(np.float64) * SCALE))):
        values, _ = evaluate(rank(doc_ids, docs, query_ids, queries), qrels, measures)
        found[label] = {k: round(v, 4) for k, v in values.items()}
    return found


def synchronise(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(function, device: str) -> float:
    synchronise(device)
    start = time.perf_counter()
    function()
    synchronise(device)
    return time.perf_counter() - start


def guarded(errors: dict, name: str, function):
    """Run one measurement; a failure is recorded (one line) instead of losing the whole run."""
    try:
        return function()
    except Exception as exc:  # a peer's API change, out of memory, ...: keep the other figures
        errors[name] = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
        print(f"{name} failed: {errors[name]}", file=sys.stderr)
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        return None


def speed(location: str, texts: list[str], device: str, precisions: list[str], pyserini, batch_size: int,
          max_length: int) -> dict:
    """docs/s on ``texts`` for our precisions and the peers, on ``device``."""
    seconds: dict[str, float] = {}
    errors: dict[str, str] = {}

    def ours(precision: str) -> float:
        encoder = SpladeEncoder(models.resolve(location), "max", max_length, device=device, precision=precision)
        encoder.encode(texts[:batch_size], batch_size)
        return timed(lambda: [encoder.to_terms(v, SCALE) for v in encoder.encode(texts, batch_size)], device)

    def pyserini_run() -> float:
        peer = pyserini.SpladeDocumentEncoder(location, device=device)

        def run():
            for lo in range(0, len(texts), batch_size):
                peer.encode(texts=texts[lo:lo + batch_size], max_length=max_length)
        peer.encode(texts=texts[:batch_size], max_length=max_length)
        return timed(run, device)

    def sentence_transformers_run() -> float:
        from sentence_transformers import SparseEncoder
        from sentence_transformers.sparse_encoder.modules import MLMTransformer, SpladePooling

        transformer = MLMTransformer(location, max_seq_length=max_length)
        pooling = SpladePooling("max", embedding_dimension=transformer.get_sentence_embedding_dimension())
        st = SparseEncoder(modules=[transformer, pooling], device=device)
        st.encode_document(texts[:batch_size], batch_size=batch_size, show_progress_bar=False)
        return timed(lambda: st.encode_document(texts, batch_size=batch_size, show_progress_bar=False), device)

    runs = {f"splade-pipeline {p}": (lambda p=p: ours(p)) for p in precisions}
    if pyserini is not None:
        runs["pyserini"] = pyserini_run
    runs["sentence-transformers"] = sentence_transformers_run
    for name, function in runs.items():
        value = guarded(errors, name, function)
        if value is not None:
            seconds[name] = value
        if device.startswith("cuda"):
            torch.cuda.empty_cache()
    rates = {name: round(len(texts) / value, 1) for name, value in seconds.items()}
    ratios = {f"splade-pipeline {p} / {peer}": round(rates[f"splade-pipeline {p}"] / rates[peer], 2)
              for p in precisions for peer in ("pyserini", "sentence-transformers")
              if peer in rates and f"splade-pipeline {p}" in rates}
    return {"texts": len(texts), "batch_size": batch_size, "docs_per_second": rates, "speedup": ratios,
            **({"errors": errors} if errors else {})}


def main() -> int:
    parser = common.parser(__doc__)
    parser.add_argument("--model", type=Path, default=None, help="splade-tiny's folder (default: the embedded one)")
    parser.add_argument("--corpus", type=Path, default=None, help="SciFact corpus.jsonl")
    parser.add_argument("--queries", type=Path, default=None, help="SciFact queries.jsonl")
    parser.add_argument("--qrels", type=Path, default=None, help="SciFact qrels/test.tsv")
    parser.add_argument("--pyserini-splade", type=Path, default=None, help="a copy of pyserini/encode/_splade.py")
    parser.add_argument("--device", default=None, help="default cuda (cpu in --smoke)")
    parser.add_argument("--base-documents", type=int, default=1024, help="texts for the BERT-base speed run")
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    device = args.device or ("cpu" if args.smoke else "cuda")
    precisions = ["bf16"] if device == "cpu" else ["fp32", "fp16", "bf16"]
    location = str(args.model or models.resolve(None).location)
    corpus = args.corpus or (DEMO_DATA / "corpus.jsonl" if args.smoke else common.DATASETS / "scifact" / "corpus.jsonl")
    queries = args.queries or corpus.parent / "queries.jsonl"
    qrels_path = args.qrels or corpus.parent / "qrels" / "test.tsv"
    pyserini_file = args.pyserini_splade
    if pyserini_file is None:
        installed = importlib.util.find_spec("pyserini")
        candidate = Path(installed.origin).parent / "encode" / "_splade.py" if installed and installed.origin else None
        pyserini_file = candidate if candidate and candidate.is_file() else None
    errors: dict[str, str] = {}
    pyserini = guarded(errors, "load pyserini _splade.py", lambda: load_pyserini_splade(pyserini_file)) \
        if pyserini_file else None
    started = time.perf_counter()

    qrels = read_qrels(qrels_path)
    topics = {q: t for q, t in read_topics(queries).items() if q in qrels}
    docs = [doc for _, doc in read_corpus(corpus)]
    if args.smoke:
        docs, topics = docs[:24], dict(list(topics.items())[:4])
    doc_ids, texts = [d.id for d in docs], [d.text for d in docs]
    ref = models.resolve(location)
    report: dict = {"device": device, "model": Path(location).name, "model_fingerprint": ref.fingerprint,
                    "documents": len(docs), "queries": len(topics), "scale": SCALE,
                    "gpu_name": torch.cuda.get_device_name(0) if device.startswith("cuda") else None,
                    "torch": torch.__version__, "cuda": torch.version.cuda}

    # 1. effectiveness and weight errors against CPU fp32
    cpu = SpladeEncoder(ref, "max", 512, device="cpu")
    width = cpu.vocab_size
    exact_docs, exact_queries = dense(cpu.encode(texts), width), dense(cpu.encode(list(topics.values())), width)
    del cpu
    results = {"cpu fp32": {**effectiveness(doc_ids, exact_docs, list(topics), exact_queries, qrels)}}
    exact_impacts = np.rint(exact_docs.astype(np.float64) * SCALE)
    def compare(precision: str) -> dict:
        encoder = SpladeEncoder(ref, "max", 512, device=device, precision=precision)
        start = time.perf_counter()
        doc_matrix = dense(encoder.encode(texts, args.batch_size), width)
        synchronise(device)
        seconds = time.perf_counter() - start
        query_matrix = dense(encoder.encode(list(topics.values())), width)
        impacts = np.rint(doc_matrix.astype(np.float64) * SCALE)
        either = (impacts > 0) | (exact_impacts > 0)
        return {**effectiveness(doc_ids, doc_matrix, list(topics), query_matrix, qrels),
                "max_abs_weight_error": float(np.abs(doc_matrix - exact_docs).max()),
                "impacts_changed": round(float((impacts != exact_impacts)[either].mean()), 5),
                "max_impact_change": int(np.abs(impacts - exact_impacts).max()),
                "corpus_seconds": round(seconds, 2)}

    for precision in precisions:
        found = guarded(errors, f"{device} {precision}", lambda: compare(precision))
        if found is not None:
            results[f"{device} {precision}"] = found
            print(f"{device} {precision}: {found}", file=sys.stderr)
    report["effectiveness"] = results

    # 2. speed against peers on the same device: this model, then a BERT-base-sized one
    report["speed"] = {"model": speed(location, texts, device, precisions, pyserini, args.batch_size, 512)}
    base_texts = texts[:8 if args.smoke else args.base_documents]
    with tempfile.TemporaryDirectory(prefix="gpu-bench-base-") as scratch:
        base = guarded(errors, "build the BERT-base-sized model", lambda: base_model(
            Path(scratch) / "bert-base-random-300", location, base_texts[:8], device, args.smoke))
        report["base_model"] = "bert-base-uncased architecture, random weights, decoder bias for ~300 terms"
        if base is not None:
            report["speed"]["bert-base-random"] = speed(str(base), base_texts, device, precisions, pyserini,
                                                        args.batch_size, 512)
    report["total_seconds"] = round(time.perf_counter() - started, 1)
    if errors:
        report["errors"] = errors
    common.write_result("gpu", report, args, torch.get_num_threads())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
