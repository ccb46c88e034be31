#!/usr/bin/env python
"""Document encoding speed against peers: one run, the same documents, model and length.

Timed on the same texts (SciFact title + text, then MS MARCO passages), max length 512:
* splade-pipeline, each backend (``torch`` fp32: exact; ``onnx``/``openvino``: int8), its window
  including the quantised term dictionaries (``to_terms``), as Pyserini's does;
* Pyserini's ``SpladeDocumentEncoder`` as ``python -m pyserini.encode`` calls it (corpus order,
  fixed batches; it returns quantised dictionaries);
* sentence-transformers' ``SparseEncoder`` (MLMTransformer + SpladePooling over the same
  checkpoint), ``encode_document`` as its users call it;
* the plain baseline: a length-sorted ``torch.inference_mode`` loop over the naive formula
  ``max_i log(1 + ReLU(logits))`` (full logits tensor), ending in the same dictionaries.
Peers alternate in two rounds (forward, then reversed order) so that a load change on a shared
machine hits all of them alike. Also: each backend's largest weight error against the naive
formula and the share of quantised impacts (scale 100) that differ from the exact path's, and a
projected time for MS MARCO's 8,841,823 passages per backend.

``--model-size base`` builds bert-base-uncased's architecture (12 layers, width 768, vocabulary
30,522) with random weights and sets the MLM decoder bias so that about 300 terms per document
survive, as with real SPLADE models (speed does not depend on the weights; sparsity does).

    python bench/encode.py --model-size base --documents 48 --msmarco 96     # bench/results/encode.base.json
    python bench/encode.py --documents 512 --msmarco 1024                     # splade-tiny: encode.tiny.json
    python bench/encode.py --smoke
"""

from __future__ import annotations

import statistics
import sys
import time
import warnings
from pathlib import Path
from typing import Callable

import common
import numpy as np
import torch

from pipeline import models
from pipeline.encoder import SpladeEncoder
from pipeline.readers import read_corpus

MSMARCO_PASSAGES = 8_841_823
SCALE = 100
TARGET_TERMS = 300


def texts_from(path: Path, count: int) -> list[str]:
    return [doc.text for _, (_, doc) in zip(range(count), read_corpus(path))]


# -- the BERT-base-sized model -------------------------------------------------------------------

def base_model(folder: Path, calibration: list[str], seed: int = 13) -> Path:
    """bert-base-uncased's architecture, random weights, decoder bias set for ~300 terms per text."""
    if (folder / "config.json").is_file():
        return folder
    from transformers import AutoTokenizer, BertConfig, BertForMaskedLM

    torch.manual_seed(seed)
    tokenizer = AutoTokenizer.from_pretrained(models.resolve(None).location)
    mlm = BertForMaskedLM(BertConfig()).eval()
    with torch.inference_mode():
        batch = tokenizer(calibration, truncation=True, max_length=512, padding=True, return_tensors="pt")
        logits = mlm(**batch).logits  # bias is zero at initialisation
        maxima = logits.masked_fill(~batch["attention_mask"].bool().unsqueeze(-1), -1e9).amax(1)
        threshold = float(torch.median(torch.sort(maxima, 1, descending=True).values[:, TARGET_TERMS]))
        mlm.cls.predictions.bias.fill_(-threshold)
        mlm.cls.predictions.decoder.bias = mlm.cls.predictions.bias
    temp = folder.with_name(folder.name + ".tmp")
    mlm.save_pretrained(temp)
    tokenizer.save_pretrained(temp)
    temp.rename(folder)
    return folder


# -- the encoders timed ----------------------------------------------------------------------------

Encode = Callable[[list[str]], list[dict]]


def ours(encoder: SpladeEncoder, batch_size: int) -> Encode:
    def run(texts: list[str]) -> list[dict]:
        return [encoder.to_terms(v, SCALE) for v in encoder.encode(texts, batch_size)]
    return run


def pyserini_encoder(location: str, batch_size: int, max_length: int) -> Encode:
    from pipeline import jvm

    jvm.start()  # the project's JVM (Java 21) before pyserini starts one of its own
    common.quiet_peers()
    from pyserini.encode import SpladeDocumentEncoder

    encoder = SpladeDocumentEncoder(location, device="cpu")

    def run(texts: list[str]) -> list[dict]:
        found = []
        for lo in range(0, len(texts), batch_size):
            found.extend(encoder.encode(texts=texts[lo:lo + batch_size], max_length=max_length))
        return found
    return run


def sentence_transformers_encoder(location: str, batch_size: int, max_length: int) -> Encode:
    from sentence_transformers import SparseEncoder
    from sentence_transformers.sparse_encoder.modules import MLMTransformer, SpladePooling

    transformer = MLMTransformer(location, max_seq_length=max_length)
    pooling = SpladePooling("max", embedding_dimension=transformer.get_sentence_embedding_dimension())
    model = SparseEncoder(modules=[transformer, pooling], device="cpu")

    def run(texts: list[str]) -> list:
        return list(model.encode_document(texts, batch_size=batch_size, show_progress_bar=False))
    return run


def naive_dense(mlm, tokenizer, texts: list[str], max_length: int) -> torch.Tensor:
    """``max_i log(1 + ReLU(logits))`` over the full logits tensor (one padded batch)."""
    batch = tokenizer(texts, max_length=max_length, truncation=True, padding="longest", return_tensors="pt",
                      return_token_type_ids=False)
    logits = mlm(**batch).logits
    return (torch.log1p(torch.relu(logits)) * batch["attention_mask"].unsqueeze(-1)).amax(1)


def baseline_encoder(location: str, batch_size: int, max_length: int) -> Encode:
    """The plain loop: length-sorted batches, inference_mode, the naive formula, then dictionaries."""
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(location)
    mlm = AutoModelForMaskedLM.from_pretrained(location).eval()
    vocabulary = {index: token for token, index in tokenizer.get_vocab().items()}

    def run(texts: list[str]) -> list[dict]:
        lengths = [len(ids) for ids in tokenizer(texts, truncation=True, max_length=max_length)["input_ids"]]
        order = sorted(range(len(texts)), key=lambda i: lengths[i])
        found: list[dict] = [{}] * len(texts)
        with torch.inference_mode():
            for lo in range(0, len(order), batch_size):
                chosen = order[lo:lo + batch_size]
                dense = naive_dense(mlm, tokenizer, [texts[i] for i in chosen], max_length)
                for i, row in zip(chosen, dense):
                    found[i] = naive_terms(row, vocabulary)
        return found
    return run


def naive_terms(row: torch.Tensor, vocabulary: dict[int, str]) -> dict[str, int]:
    """One text's dense weights as ``{token: round(w x SCALE)}``, zeros dropped."""
    ids = torch.nonzero(row).flatten()
    values = torch.round(row[ids].double() * SCALE).long()
    return {vocabulary[t]: v for t, v in zip(ids.tolist(), values.tolist()) if v > 0}


# -- measuring ---------------------------------------------------------------------------------------

def timed_rounds(encoders: dict[str, Encode], texts: list[str]) -> dict[str, float]:
    """Seconds per encoder over ``texts``: first half in order, second half in reverse order of encoders."""
    half = len(texts) // 2 or len(texts)
    seconds = {name: 0.0 for name in encoders}
    for part, names in ((texts[:half], list(encoders)), (texts[half:], list(reversed(encoders)))):
        if not part:
            continue
        for name in names:
            start = time.perf_counter()
            encoders[name](part)
            seconds[name] += time.perf_counter() - start
            print(f"  {name}: {len(part)} texts in {time.perf_counter() - start:.1f} s", file=sys.stderr)
    return seconds


def weight_errors(location: str, encoders: dict[str, SpladeEncoder], texts: list[str], max_length: int
                  ) -> dict[str, dict[str, float]]:
    """Each backend against the naive formula: largest weight error, share of impacts that differ."""
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(location)
    mlm = AutoModelForMaskedLM.from_pretrained(location).eval()
    with torch.inference_mode():
        naive = torch.cat([naive_dense(mlm, tokenizer, texts[i:i + 4], max_length)
                           for i in range(0, len(texts), 4)]).numpy()
    exact = np.rint(naive.astype(np.float64) * SCALE)
    found = {}
    for name, encoder in encoders.items():
        dense = np.zeros_like(naive)
        for row, vector in enumerate(encoder.encode(texts)):
            dense[row, vector.ids] = vector.weights
        impacts = np.rint(dense.astype(np.float64) * SCALE)
        either = (exact > 0) | (impacts > 0)
        found[name] = {"max_abs_weight_error": float(np.abs(dense - naive).max()),
                       "impacts_changed": round(float((exact != impacts)[either].mean()), 4),
                       "max_impact_change": int(np.abs(exact - impacts).max()),
                       "terms_per_text": round(float((impacts > 0).sum(1).mean()), 1)}
    return found


def measure(name: str, texts: list[str], encoders: dict[str, Encode], ours_names: list[str]) -> dict:
    for encode in encoders.values():  # warm-up: first-call allocations, lazy initialisation
        encode(texts[:2])
    print(f"{name}: {len(texts)} texts", file=sys.stderr)
    seconds = timed_rounds(encoders, texts)
    rate = {n: round(len(texts) / s, 3) for n, s in seconds.items()}
    result = {"texts": len(texts), "docs_per_second": rate}
    exact = "splade-pipeline torch fp32"
    pairs = [(a, b) for a in ours_names for b in rate if b not in ours_names]
    pairs += [(a, exact) for a in ours_names if a != exact and exact in rate]
    result["speedup"] = {f"{a} / {b}": round(rate[a] / rate[b], 2) for a, b in pairs}
    return result


def main() -> int:
    parser = common.parser(__doc__)
    parser.add_argument("--model-size", choices=("tiny", "base"), default="tiny",
                        help="tiny: the embedded splade-tiny; base: BERT-base-sized, random weights")
    parser.add_argument("--documents", type=int, default=None, help="SciFact documents (default 48 base, 512 tiny)")
    parser.add_argument("--msmarco", type=int, default=None, help="MS MARCO passages (default 2x documents)")
    parser.add_argument("--check", type=int, default=None, help="texts compared with the naive formula")
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=None, help="texts per batch (default 16 base, 32 tiny)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--backends", nargs="+", default=["torch", "onnx", "openvino"])
    parser.add_argument("--peers", nargs="+", default=["pyserini", "sentence-transformers", "baseline"])
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    torch.set_num_threads(args.threads)
    base = args.model_size == "base"
    documents = args.documents or (4 if args.smoke else 48 if base else 512)
    passages = args.msmarco if args.msmarco is not None else 2 * documents
    batch_size = args.batch_size or (16 if base else 32)
    check = args.check or (2 if args.smoke else min(documents, 8 if base else 64))

    scifact = texts_from(common.DATASETS / "scifact" / "corpus.jsonl", documents)
    msmarco = texts_from(common.DATASETS / "msmarco-passage-dl-pool" / "collection.tsv", passages) if passages else []
    work = common.RESULTS / "work"
    work.mkdir(parents=True, exist_ok=True)
    if base:
        location = str(base_model(work / "bert-base-random-300", scifact[:8] if not args.smoke else scifact[:2]))
        ref = models.resolve(location)
    else:
        ref = models.resolve(None)
        location = ref.location

    ours_encoders: dict[str, SpladeEncoder] = {}
    export_seconds = {}
    for backend in args.backends:
        start = time.perf_counter()
        encoder = SpladeEncoder(ref, "max", args.max_length, args.threads, backend=backend)
        export_seconds[backend] = round(time.perf_counter() - start, 1)
        ours_encoders[f"splade-pipeline {backend} {encoder.precision}"] = encoder
    torch.set_num_threads(args.threads)
    timed: dict[str, Encode] = {name: ours(encoder, batch_size) for name, encoder in ours_encoders.items()}
    builders = {"pyserini": pyserini_encoder, "sentence-transformers": sentence_transformers_encoder,
                "baseline": baseline_encoder}
    for peer in args.peers:
        timed[peer] = builders[peer](location, batch_size, args.max_length)
    torch.set_num_threads(args.threads)

    lengths = [len(ids) for ids in next(iter(ours_encoders.values())).tokenize(scifact)]
    report: dict = {
        "model": ("bert-base-uncased architecture, random weights, decoder bias for ~300 terms" if base
                  else "splade-tiny"), "model_fingerprint": ref.fingerprint,
        "max_length": args.max_length, "batch_size": batch_size, "threads": args.threads,
        "scifact": {"documents": documents, "mean_tokens": round(statistics.mean(lengths), 1)},
        "load_seconds_including_export": export_seconds,
    }
    report["weights"] = weight_errors(location, ours_encoders, scifact[:check], args.max_length)
    names = list(ours_encoders)
    report["scifact"].update(measure("scifact", scifact, timed, names))
    if msmarco:
        msmarco_lengths = [len(ids) for ids in next(iter(ours_encoders.values())).tokenize(msmarco)]
        report["msmarco"] = {"passages": len(msmarco), "mean_tokens": round(statistics.mean(msmarco_lengths), 1),
                             **measure("msmarco", msmarco, timed, names)}
        report["msmarco"]["projected_hours_for_8.8M_passages"] = {
            name: round(MSMARCO_PASSAGES / rate / 3600, 1) for name, rate in report["msmarco"]["docs_per_second"].items()}
    common.write_result(f"encode.{args.model_size}", report, args, args.threads)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
