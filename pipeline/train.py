"""The train command: fine-tune a SPLADE model on (query, positive, negative) triples, as in the papers.

Triples come from a JSONL file, or are mined from queries + qrels + a corpus (BM25 hard negatives
through Anserini, or random ones). Training runs on sentence-transformers' ``SparseEncoderTrainer``
(the Hugging Face Trainer: ``--device``, ``--precision``, gradient accumulation, DDP under
``torchrun``, checkpoints it resumes from). The loss is ``SpladeLoss``: a ranking loss (in-batch
contrastive, or margin-MSE against teacher scores) plus FLOPS or L1 regularisation of queries and
documents with separate lambdas, each raised quadratically over the first steps
(``pipeline.training.objectives``). Batches and learning rates follow the hand-written loop the
trainer replaced (``pipeline.training.schedule``). The model is the masked-LM with the tiled max
pooling that encoding uses (``pipeline.training.modules``), so training never holds a batch x
length x vocabulary tensor and a trained checkpoint encodes as the trainer scored it. With
``inference_free`` the queries take another route: a weight per wordpiece, started from IDF
(``pipeline.training.idf``) and trained at its own learning rate, with no transformer at query time.

The output folder is a Hugging Face masked-LM checkpoint with its tokenizer, which ``encode`` and
``search`` take as ``--encoder`` (and sentence-transformers' ``SparseEncoder`` loads too; an
inference-free model is sentence-transformers' ``Router`` folder, its documents' masked-LM in
``document_0_Transformer/``), plus
``training.json`` and ``train_log.jsonl``. A run saves a checkpoint every ``--save-steps`` under
``checkpoint/`` and resumes from the last one when started again with the same output folder.
"""

from __future__ import annotations

import math
import random
import re
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable

from pipeline import losses, models, outputs
from pipeline.collection import read_json, write_json
from pipeline.encoder import default_threads
from pipeline.errors import InputError, PipelineError
from pipeline.readers import iter_lines, json_record, read_corpus, read_qrels, read_topics

CHECKPOINT = "checkpoint"
MAX_TEACHER_SCORE = 1e18  # the square of a larger margin overflows float32 (3.4e38): the loss turns inf/NaN
BATCH_ORDERS = ("shuffle", "no-duplicates")  # the old loop's seeded shuffle; sentence-transformers' NO_DUPLICATES


@dataclass(frozen=True)
class Triple:
    query: str
    positive: str
    negative: str
    teacher: tuple[float, float] | None = None


# Defaults that differ by route (symmetric, inference-free), from bench/results/train.json (SciFact's
# 919 triples, 2 epochs): documents trained at 3e-5 against fixed wordpiece queries drop their
# expansions (283 -> 98 postings) and lose 0.048 nDCG@10 against the
# untrained model; at 1e-5, unregularised (they start from a sparse model and move little), with
# the query weights at 1e-2, the trained pair ends above both the untrained IDF queries and the
# symmetric fine-tune.
ROUTE_DEFAULTS = {False: {"learning_rate": 3e-5, "lambda_d": 1e-3}, True: {"learning_rate": 1e-5, "lambda_d": 0.0}}


@dataclass
class TrainSettings:
    pooling: str = "max"
    loss: str = "contrastive"  # or "margin-mse"
    regulariser: str = "flops"  # or "l1"
    lambda_q: float = 3e-3
    lambda_d: float | None = None  # None: the route's (ROUTE_DEFAULTS)
    lambda_warmup_steps: int = 100
    learning_rate: float | None = None  # of the transformer; None: the route's (ROUTE_DEFAULTS)
    warmup_steps: int = 20
    batch_size: int = 16  # triples per forward pass (per device)
    epochs: float = 1.0
    max_steps: int | None = None
    query_max_length: int = 64
    doc_max_length: int = 256
    seed: int = 13
    gradient_accumulation_steps: int = 1  # batches per optimiser step
    batches: str = "shuffle"  # or "no-duplicates" (pipeline.training.schedule)
    inference_free: bool = False  # queries: IDF-initialised weights per wordpiece (no transformer at query time)
    query_learning_rate: float = 1e-2  # of those weights (inference-free only)

    def __post_init__(self) -> None:
        for name, value in ROUTE_DEFAULTS[self.inference_free].items():
            if getattr(self, name) is None:
                setattr(self, name, value)


# -- data --------------------------------------------------------------------------------------

def read_triples(path: Path) -> list[Triple]:
    """JSONL ``{"query", "positive", "negative"}`` with optional ``"scores": [teacher_pos, teacher_neg]``."""
    path = Path(path)
    triples = []
    for number, _, text in iter_lines(path):
        record = json_record(path, number, text)
        missing = [key for key in ("query", "positive", "negative") if not isinstance(record.get(key), str)]
        if missing:
            raise InputError(path, f"missing text field(s): {', '.join(missing)}", number)
        teacher = record.get("scores")
        if teacher is not None and (not isinstance(teacher, list) or len(teacher) != 2
                                    or not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                               for v in teacher)):
            raise InputError(path, "'scores' must be [teacher score of positive, of negative]", number)
        if teacher is not None and not all(math.isfinite(v) and abs(v) <= MAX_TEACHER_SCORE for v in teacher):
            raise InputError(path, f"'scores' {teacher} must be finite numbers of at most {MAX_TEACHER_SCORE:g} "
                                   "in size (margin-MSE squares their difference in 32-bit floats)", number)
        triples.append(Triple(record["query"], record["positive"], record["negative"],
                              tuple(teacher) if teacher else None))
    if not triples:
        raise InputError(path, "empty file: no triples")
    return triples


def mine_triples(queries: Path, qrels: Path, corpus: Path, negatives: str = "bm25", depth: int = 30,
                 seed: int = 13, threads: int = 1) -> list[Triple]:
    """One triple per judged (query, relevant document) pair, with a BM25-hard or random negative.

    The BM25 index is a work file: it is built in a private temporary folder (``TMPDIR``) and removed
    afterwards, never beside the output or the corpus, where it could meet (and replace) a user's files.
    """
    topics, judged = read_topics(queries), read_qrels(qrels)
    texts = {doc.id: doc.text for _, doc in read_corpus(corpus)}
    pairs = [(qid, doc) for qid in judged if qid in topics for doc, grade in judged[qid].items()
             if grade > 0 and doc in texts]
    if not pairs:
        raise InputError(qrels, "no judged relevant pair whose query and document are in the inputs")
    rng = random.Random(seed)
    candidates: dict[str, list[str]] = {}
    if negatives == "bm25":
        from pipeline.bm25 import bm25_search, build_bm25_index

        wanted = {qid: topics[qid] for qid, _ in pairs}
        with tempfile.TemporaryDirectory(prefix="splade-pipeline-mining-") as work:
            index = Path(work) / "bm25-index"
            build_bm25_index(corpus, index, threads)
            for qid, hits in bm25_search(index, wanted, depth, threads).items():
                candidates[qid] = [doc for doc, _ in hits if judged[qid].get(doc, 0) <= 0]
    elif negatives != "random":
        raise PipelineError(f"negatives must be 'bm25' or 'random', got {negatives!r}")
    ids = sorted(texts)
    triples = []
    for qid, doc in pairs:
        pool = candidates.get(qid) or [d for d in rng.sample(ids, min(50, len(ids))) if judged[qid].get(d, 0) <= 0]
        triples.append(Triple(topics[qid], texts[doc], texts[rng.choice(pool)]))
    return triples


# -- the run ----------------------------------------------------------------------------------

CHECKPOINT_FILE = (  # a model folder's files: Hugging Face's and sentence-transformers' (Router routes too)
    r"(?:config|generation_config|tokenizer|tokenizer_config|special_tokens_map|added_tokens|training)\.json"
    r"|model(?:-\d+-of-\d+)?\.safetensors(?:\.index\.json)?|pytorch_model[^/]*\.bin|vocab\.txt"
    r"|(?:modules|config_sentence_transformers|sentence_bert_config|processor_config|router_config)\.json")
TRAINING_ENTRY = re.compile(  # what train writes into --output: the checkpoint files, its log and records
    rf"{CHECKPOINT_FILE}|\d+_[A-Za-z]+/(?:config\.json)?|(?:query|document)_\d+_[A-Za-z]+/(?:{CHECKPOINT_FILE})?"
    r"|train_log\.jsonl|checkpoint(?:\.tmp)?/(?:.*)?|\.[^/]+\.\d+\.tmp")


def _is_training_output(folder: Path) -> bool:
    return any((folder / name).is_file() for name in ("training.json", "train_log.jsonl", "checkpoint/state.json"))


def total_steps(triples: int, settings: TrainSettings) -> int:
    """Optimiser steps of the run: ``--max-steps``, else ``--epochs`` over full batches."""
    per_step = settings.batch_size * settings.gradient_accumulation_steps
    steps_per_epoch = triples // per_step
    if steps_per_epoch == 0:
        raise PipelineError(f"{triples} triples do not fill one step of {settings.batch_size} x "
                            f"{settings.gradient_accumulation_steps} (batch size x gradient accumulation)")
    return settings.max_steps or math.ceil(settings.epochs * steps_per_epoch)


def as_dataset(triples: list[Triple], loss: str):
    """Columns in the order the losses read them: query, positive, negative[, label]."""
    from datasets import Dataset

    columns: dict[str, list] = {"query": [t.query for t in triples], "positive": [t.positive for t in triples],
                                "negative": [t.negative for t in triples]}
    if loss == "margin-mse":
        missing = next((i for i, t in enumerate(triples) if t.teacher is None), None)
        if missing is not None:
            raise PipelineError(f"margin-mse needs teacher scores in every triple ('scores' in the JSONL); "
                                f"triple {missing + 1} has none")
        columns["label"] = [list(t.teacher) for t in triples]  # type: ignore[arg-type]
    return Dataset.from_dict(columns)


@outputs.locking("output", "train")
def train(triples: list[Triple], output: Path, encoder: str | None = None, settings: TrainSettings | None = None,
          threads: int | None = None, save_steps: int = 50, max_minutes: float | None = None,
          overwrite: bool = False, progress: bool = True, say=lambda text: print(text, file=sys.stderr),
          device: str | None = "cpu", precision: str | None = None,
          documents: Iterable[str] | None = None) -> dict[str, Any]:
    """Fine-tune and write a checkpoint folder; resumes from ``output/checkpoint`` when present.

    With ``settings.inference_free`` the query weights start as IDF over ``documents`` (the corpus
    the model will search; default: the distinct documents of the triples).
    """
    from pipeline import devices

    settings = settings or TrainSettings()
    output = outputs.resolved(output)
    if settings.loss not in ("contrastive", "margin-mse") or settings.regulariser not in losses.REGULARISERS:
        raise PipelineError(f"unknown loss {settings.loss!r} or regulariser {settings.regulariser!r}")
    if settings.batches not in BATCH_ORDERS:
        raise PipelineError(f"batches must be one of {', '.join(BATCH_ORDERS)}, got {settings.batches!r}")
    placement = devices.resolve(device, precision)
    ours = outputs.check_folder(output, "--output", "a trained model", TRAINING_ENTRY.fullmatch, _is_training_output)
    if overwrite and ours:  # only what train wrote: check_folder refused anything else
        outputs.remove_owned(output, TRAINING_ENTRY.fullmatch)
    base = models.resolve(encoder)
    digest = triples_digest(triples)
    if (output / "training.json").is_file():
        summary = _saved(output / "training.json")
        base_then = summary.get("base_encoder")
        diff = outputs.differences(
            _inputs(summary.get("settings"), base_then.get("model_fingerprint") if isinstance(base_then, dict)
                    else None, summary.get("triples_sha256", digest)),
            _inputs(asdict(settings), base.fingerprint, digest))
        if diff:
            raise PipelineError(f"{output} was trained with other settings or triples ({'; '.join(diff)}); "
                                "use --overwrite to train again")
        say(f"{output}: already trained (training.json); use --overwrite to train again")
        return summary
    steps = total_steps(len(triples), settings)
    dataset = as_dataset(triples, settings.loss)
    checkpoint = output / CHECKPOINT
    resume = _check_state(checkpoint, settings, base, digest)

    import torch

    torch.set_num_threads(threads or default_threads())
    from pipeline.training import callbacks, modules, objectives

    idf_documents = None
    if settings.inference_free:
        model, idf_documents = _inference_free_model(base.location, settings, triples, documents)
    else:
        model = modules.splade_model(base.location, settings.pooling, settings.query_max_length,
                                     settings.doc_max_length)
    # an inference-free query is its own wordpieces: its size is the query's, nothing to regularise
    lambda_q = 0.0 if settings.inference_free else settings.lambda_q
    loss = objectives.splade_loss(model, settings.loss, settings.regulariser, lambda_q, settings.lambda_d)
    log = callbacks.TrainLog(output / "train_log.jsonl", loss.query_regularizer, loss.document_regularizer,
                             progress)
    deadline = callbacks.Deadline(max_minutes) if max_minutes is not None else None
    dropout = callbacks.DropoutStream(resume[0] if resume else None)
    trainer = _trainer(model, loss, dataset, settings, steps, save_steps, checkpoint, placement,
                       [objectives.RegulariserWarmup(loss, settings.lambda_warmup_steps), log, dropout,
                        *([deadline] if deadline else [])])
    output.mkdir(parents=True, exist_ok=True)
    if resume is None:
        checkpoint.mkdir(parents=True, exist_ok=True)
        write_json(checkpoint / "state.json", {"settings": asdict(settings), "base": base.fingerprint,
                                               "triples": digest})
        log.truncate(0)
    else:
        say(f"{output}: resuming from step {resume[1]} of {steps}")
        log.truncate(resume[1])
    trainer.train(resume_from_checkpoint=str(resume[0]) if resume else None)
    step = trainer.state.global_step
    if step < steps:
        say(f"{output}: stopped at step {step} of {steps} (--max-minutes); run again to continue")
        return {"step": step, "total_steps": steps, "finished": False}
    modules.save_plain(model, str(output))
    summary = {"base_encoder": base.describe(), "settings": asdict(settings), "triples": len(triples),
               "triples_sha256": digest, "steps": step, "device": placement.describe(), "final": log.last,
               "finished": True}
    if settings.inference_free:
        summary["query_weights"] = {"start": "idf", "formula": "log(1 + (N - df + 0.5) / (df + 0.5))",
                                    "documents": idf_documents}
    write_json(output / "training.json", summary)
    outputs.remove_owned(checkpoint, lambda name: True)
    return summary


def _inference_free_model(location: str, settings: TrainSettings, triples: list[Triple],
                          documents: Iterable[str] | None):
    """The Router model with IDF query weights, and how many documents the IDF was counted over."""
    import torch
    from transformers import AutoTokenizer

    from pipeline.training import idf, modules

    if documents is None:
        documents = list(dict.fromkeys(text for t in triples for text in (t.positive, t.negative)))
    tokenizer = AutoTokenizer.from_pretrained(location)
    frequencies, counted = idf.document_frequencies(tokenizer, documents, len(tokenizer.get_vocab()))
    if counted == 0:
        raise PipelineError("inference-free training needs documents to count IDF over; none were given")
    weights = torch.from_numpy(idf.bm25_idf(frequencies, counted))
    return modules.inference_free_model(location, weights, settings.pooling, settings.doc_max_length), counted


def _trainer(model, loss, dataset, settings: TrainSettings, steps: int, save_steps: int, checkpoint: Path,
             placement, extra_callbacks: list):
    """The SparseEncoderTrainer with this project's schedule: AdamW, linear warm-up and decay, clipping at 1.

    Batches and learning rates follow ``pipeline.training.schedule`` (the hand-written loop's order
    and warm-up); ``--batches no-duplicates`` takes sentence-transformers' sampler instead.
    """
    import torch
    from sentence_transformers.base.sampler import BatchSamplers
    from sentence_transformers.sparse_encoder import SparseEncoderTrainingArguments
    from sentence_transformers.sparse_encoder.model_card import SparseEncoderModelCardCallback
    from transformers import PrinterCallback, ProgressCallback

    from pipeline.training import schedule

    if placement.kind == "cuda" and placement.device.index is not None:
        torch.cuda.set_device(placement.device)  # the Trainer runs on the current CUDA device
    args = SparseEncoderTrainingArguments(
        output_dir=str(checkpoint), max_steps=steps, per_device_train_batch_size=settings.batch_size,
        gradient_accumulation_steps=settings.gradient_accumulation_steps, learning_rate=settings.learning_rate,
        weight_decay=0.01, warmup_steps=settings.warmup_steps, lr_scheduler_type="linear", max_grad_norm=1.0,
        seed=settings.seed, data_seed=settings.seed, logging_steps=1, save_strategy="steps", save_steps=save_steps,
        save_total_limit=1, report_to="none", use_cpu=placement.kind == "cpu",
        fp16=placement.precision == "fp16", bf16=placement.precision == "bf16", dataloader_drop_last=True,
        batch_sampler=schedule.EpochShuffle if settings.batches == "shuffle" else BatchSamplers.NO_DUPLICATES,
        router_mapping={"query": "query", "positive": "document", "negative": "document"},
        learning_rate_mapping=_query_learning_rate(model, settings), disable_tqdm=True)
    trainer = schedule.trainer_class()(model=model, args=args, train_dataset=dataset, loss=loss,
                                       callbacks=extra_callbacks)
    # TrainLog shows progress and writes the log; no model card (it encodes examples at every save)
    for quiet in (PrinterCallback, ProgressCallback, SparseEncoderModelCardCallback):
        trainer.remove_callback(quiet)
    return trainer


def triples_digest(triples: list[Triple]) -> str:
    """What the training data was: a resumed or finished run is only the same run on the same triples."""
    return outputs.value_sha256([[t.query, t.positive, t.negative, t.teacher] for t in triples])


def _inputs(settings: Any, base: Any, triples: Any) -> dict[str, Any]:
    """What a run was made from, flat, so that a refusal names each setting that changed (records
    written before triples were recorded are given the current digest: not refused for what they lack)."""
    return {**(settings if isinstance(settings, dict) else {"settings": settings}), "base encoder": base,
            "triples": triples}


def _saved(path: Path) -> dict[str, Any]:
    """A record train wrote earlier (``training.json``, ``state.json``), refused by name when damaged."""
    value = read_json(path)
    if not isinstance(value, dict):
        raise InputError(path, f"expected a JSON object, got {type(value).__name__}; use --overwrite to start "
                               "again")
    return value


def _query_learning_rate(model, settings: TrainSettings) -> dict[str, float]:
    """The inference-free query weights train at their own rate (sentence-transformers' recipe)."""
    from pipeline.training.modules import query_weight_parameter

    name = query_weight_parameter(model)
    return {re.escape(name) + "$": settings.query_learning_rate} if name else {}


def _check_state(folder: Path, settings: TrainSettings, base, digest: str) -> tuple[Path, int] | None:
    """The last checkpoint to resume from and its step, if this folder holds a run with these inputs."""
    if not (folder / "state.json").is_file():
        return None
    state = _saved(folder / "state.json")
    diff = outputs.differences(_inputs(state.get("settings"), state.get("base"), state.get("triples", digest)),
                               _inputs(asdict(settings), base.fingerprint, digest))
    if diff:
        raise PipelineError(f"{folder} holds a run with other settings or triples ({'; '.join(diff)}); "
                            "use --overwrite to start again")
    saved = sorted((int(path.name.split("-")[1]), path) for path in folder.glob("checkpoint-*")
                   if path.name.split("-")[1].isdigit() and (path / "trainer_state.json").is_file())
    if not saved:
        return None
    step, path = saved[-1]
    progress = _saved(path / "trainer_state.json")  # the Trainer reads it on resuming: a damaged one is named here
    if progress.get("global_step") != step:
        raise InputError(path / "trainer_state.json", f"records step {progress.get('global_step')!r}, not {step}: "
                                                      "the checkpoint is damaged; use --overwrite to start again")
    return path, step
