"""The train command: fine-tune a SPLADE model on (query, positive, negative) triples, as in the papers.

Triples come from a JSONL file, or are mined from queries + qrels + a corpus (BM25 hard negatives
through Anserini, or random ones). The loss is a ranking loss (in-batch contrastive, or margin-MSE
against teacher scores) plus FLOPS or L1 regularisation of queries and documents with separate
lambdas, each raised quadratically over the first steps. The output is a Hugging Face checkpoint
folder that ``encode`` and ``search`` take as ``--encoder``.

Max pooling trains through ``MaxProjection``: the forward pass is the encoder's tiled running max
(no batch x length x vocabulary tensor), and the backward pass sends each term's gradient to the
token that won its max, which is exactly what autograd does for ``max`` but touches only the terms
with a non-zero gradient. A run saves a checkpoint every ``--save-steps`` and at the end, and
resumes from it when started again with the same output folder.
"""

from __future__ import annotations

import json
import math
import random
import shutil
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterator

import torch

from pipeline import losses, models
from pipeline.collection import write_json
from pipeline.encoder import default_threads, load_masked_lm
from pipeline.projection import MaxProjection, max_pool_trainable  # noqa: F401
from pipeline.errors import InputError, PipelineError
from pipeline.readers import iter_lines, read_corpus, read_qrels, read_topics

CHECKPOINT = "checkpoint"


@dataclass(frozen=True)
class Triple:
    query: str
    positive: str
    negative: str
    teacher: tuple[float, float] | None = None


@dataclass
class TrainSettings:
    pooling: str = "max"
    loss: str = "contrastive"  # or "margin-mse"
    regulariser: str = "flops"  # or "l1"
    lambda_q: float = 3e-3
    lambda_d: float = 1e-3
    lambda_warmup_steps: int = 100
    learning_rate: float = 3e-5
    warmup_steps: int = 20
    batch_size: int = 16
    epochs: float = 1.0
    max_steps: int | None = None
    query_max_length: int = 64
    doc_max_length: int = 256
    seed: int = 13


# -- data --------------------------------------------------------------------------------------

def read_triples(path: Path) -> list[Triple]:
    """JSONL ``{"query", "positive", "negative"}`` with optional ``"scores": [teacher_pos, teacher_neg]``."""
    path = Path(path)
    triples = []
    for number, _, text in iter_lines(path):
        try:
            record = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InputError(path, f"invalid JSON ({exc.msg} at column {exc.colno})", number) from None
        if not isinstance(record, dict):
            raise InputError(path, "expected a JSON object", number)
        missing = [key for key in ("query", "positive", "negative") if not isinstance(record.get(key), str)]
        if missing:
            raise InputError(path, f"missing text field(s): {', '.join(missing)}", number)
        teacher = record.get("scores")
        if teacher is not None and (not isinstance(teacher, list) or len(teacher) != 2
                                    or not all(isinstance(v, (int, float)) for v in teacher)):
            raise InputError(path, "'scores' must be [teacher score of positive, of negative]", number)
        triples.append(Triple(record["query"], record["positive"], record["negative"],
                              tuple(teacher) if teacher else None))
    if not triples:
        raise InputError(path, "empty file: no triples")
    return triples


def mine_triples(queries: Path, qrels: Path, corpus: Path, negatives: str = "bm25", depth: int = 30,
                 seed: int = 13, workdir: Path | None = None, threads: int = 1) -> list[Triple]:
    """One triple per judged (query, relevant document) pair, with a BM25-hard or random negative."""
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

        index = Path(workdir or Path(corpus).parent) / "bm25-index"
        build_bm25_index(corpus, index, threads)
        wanted = {qid: topics[qid] for qid, _ in pairs}
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


# -- the differentiable encoder ----------------------------------------------------------------

class TrainableSplade(torch.nn.Module):
    """A masked-LM checkpoint whose output is SPLADE weights, trainable end to end."""

    def __init__(self, location: str, pooling: str = "max"):
        super().__init__()
        self.tokenizer, self.mlm, self.decoder = load_masked_lm(location)
        self.pooling = pooling

    def forward(self, texts: list[str], max_length: int) -> torch.Tensor:
        batch = self.tokenizer(texts, max_length=max_length, truncation=True, padding="longest",
                               return_tensors="pt", return_token_type_ids=False)
        hidden = self.mlm(**batch).logits  # (batch x length x hidden): transformed states
        mask = batch["attention_mask"].bool()
        bias = self.decoder.bias
        if self.pooling == "max":
            return max_pool_trainable(hidden[mask], mask.sum(1).tolist(), self.decoder.weight, bias)
        logits = hidden @ self.decoder.weight.T + bias
        return (torch.log1p(torch.relu(logits)) * mask.unsqueeze(-1)).sum(1)

    def save(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.mlm.save_pretrained(folder)
        self.tokenizer.save_pretrained(folder)


# -- the loop ----------------------------------------------------------------------------------

def batches(triples: list[Triple], settings: TrainSettings, total_steps: int) -> Iterator[list[Triple]]:
    """Shuffled batches, epoch after epoch, the same order for the same seed (so a resume matches)."""
    step, epoch = 0, 0
    while step < total_steps:
        order = list(range(len(triples)))
        random.Random(settings.seed + epoch).shuffle(order)
        for lo in range(0, len(order) - settings.batch_size + 1, settings.batch_size):
            if step >= total_steps:
                return
            yield [triples[i] for i in order[lo:lo + settings.batch_size]]
            step += 1
        epoch += 1


def step_loss(model: TrainableSplade, batch: list[Triple], settings: TrainSettings, step: int):
    queries = model([t.query for t in batch], settings.query_max_length)
    positives = model([t.positive for t in batch], settings.doc_max_length)
    negatives = model([t.negative for t in batch], settings.doc_max_length)
    if settings.loss == "margin-mse":
        if any(t.teacher is None for t in batch):
            raise PipelineError("margin-mse needs teacher scores in every triple ('scores' in the JSONL)")
        teacher = torch.tensor([t.teacher for t in batch], dtype=queries.dtype)
        ranking = losses.margin_mse(queries, positives, negatives, teacher[:, 0], teacher[:, 1])
    else:
        ranking = losses.in_batch_contrastive(queries, positives, negatives)
    regulariser = losses.REGULARISERS[settings.regulariser]
    documents = torch.cat([positives, negatives])
    reg_q, reg_d = regulariser(queries), regulariser(documents)
    lam_q = losses.quadratic_warmup(settings.lambda_q, step, settings.lambda_warmup_steps)
    lam_d = losses.quadratic_warmup(settings.lambda_d, step, settings.lambda_warmup_steps)
    total = ranking + lam_q * reg_q + lam_d * reg_d
    stats = {"loss": total.item(), "ranking": ranking.item(), "reg_q": reg_q.item(), "reg_d": reg_d.item(),
             "postings_q": (queries > 0).sum(1).float().mean().item(),
             "postings_d": (documents > 0).sum(1).float().mean().item()}
    return total, stats


def learning_rate(settings: TrainSettings, step: int, total_steps: int) -> float:
    """Linear warm-up, then linear decay to zero."""
    if step < settings.warmup_steps:
        return settings.learning_rate * (step + 1) / settings.warmup_steps
    remaining = max(1, total_steps - settings.warmup_steps)
    return settings.learning_rate * max(0.0, 1 - (step - settings.warmup_steps) / remaining)


def train(triples: list[Triple], output: Path, encoder: str | None = None, settings: TrainSettings | None = None,
          threads: int | None = None, save_steps: int = 50, max_minutes: float | None = None,
          overwrite: bool = False, progress: bool = True, say=lambda text: print(text, file=sys.stderr)
          ) -> dict[str, Any]:
    """Fine-tune and write a checkpoint folder; resumes from ``output/checkpoint`` when present."""
    from tqdm import tqdm

    settings = settings or TrainSettings()
    output = Path(output)
    if settings.loss not in ("contrastive", "margin-mse") or settings.regulariser not in losses.REGULARISERS:
        raise PipelineError(f"unknown loss {settings.loss!r} or regulariser {settings.regulariser!r}")
    if overwrite and output.exists():
        shutil.rmtree(output)
    if (output / "training.json").is_file():
        say(f"{output}: already trained (training.json); use --overwrite to train again")
        return json.loads((output / "training.json").read_text())
    torch.set_num_threads(threads or default_threads())
    torch.manual_seed(settings.seed)
    steps_per_epoch = len(triples) // settings.batch_size
    if steps_per_epoch == 0:
        raise PipelineError(f"{len(triples)} triples do not fill one batch of {settings.batch_size}")
    total_steps = settings.max_steps or math.ceil(settings.epochs * steps_per_epoch)

    base = models.resolve(encoder)
    checkpoint = output / CHECKPOINT
    state = _load_state(checkpoint, settings, base)
    model = TrainableSplade(str(checkpoint / "model") if state else base.location, settings.pooling)
    model.train()
    optimiser = torch.optim.AdamW(model.parameters(), lr=settings.learning_rate, weight_decay=0.01)
    step = 0
    if state:
        optimiser.load_state_dict(torch.load(checkpoint / "optimiser.pt", weights_only=True))
        step = state["step"]
        say(f"{output}: resuming from step {step} of {total_steps}")
        torch.set_rng_state(torch.load(checkpoint / "rng.pt", weights_only=True))
    output.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + 60 * max_minutes if max_minutes is not None else None
    stats: dict[str, float] = {}
    with open(output / "train_log.jsonl", "a") as log, \
            tqdm(total=total_steps, initial=step, unit="step", desc="train", disable=not progress,
                 file=sys.stderr) as bar:
        for batch in _skip(batches(triples, settings, total_steps), step):
            for group in optimiser.param_groups:
                group["lr"] = learning_rate(settings, step, total_steps)
            loss, stats = step_loss(model, batch, settings, step)
            optimiser.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimiser.step()
            step += 1
            log.write(json.dumps({"step": step, **{k: round(v, 5) for k, v in stats.items()}}) + "\n")
            bar.set_postfix(loss=f"{stats['loss']:.3f}", q=f"{stats['postings_q']:.0f}", d=f"{stats['postings_d']:.0f}")
            bar.update(1)
            if step % save_steps == 0 or step == total_steps or (deadline is not None and time.monotonic() > deadline):
                _save_state(checkpoint, model, optimiser, settings, base, step)
                log.flush()
            if deadline is not None and time.monotonic() > deadline:
                break
    if step < total_steps:
        say(f"{output}: stopped at step {step} of {total_steps} (--max-minutes); run again to continue")
        return {"step": step, "total_steps": total_steps, "finished": False}
    model.save(output)
    summary = {"base_encoder": base.describe(), "settings": asdict(settings), "triples": len(triples),
               "steps": step, "final": {k: round(v, 5) for k, v in stats.items()}, "finished": True}
    write_json(output / "training.json", summary)
    shutil.rmtree(checkpoint, ignore_errors=True)
    return summary


def _skip(iterator: Iterator, count: int) -> Iterator:
    for _ in range(count):
        next(iterator, None)
    return iterator


def _save_state(folder: Path, model: TrainableSplade, optimiser, settings: TrainSettings, base, step: int) -> None:
    """Model, optimiser and step, written to a temporary folder then swapped in (kill-safe)."""
    temp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(temp, ignore_errors=True)
    model.save(temp / "model")
    torch.save(optimiser.state_dict(), temp / "optimiser.pt")
    torch.save(torch.get_rng_state(), temp / "rng.pt")
    write_json(temp / "state.json", {"step": step, "settings": asdict(settings), "base": base.fingerprint})
    shutil.rmtree(folder, ignore_errors=True)
    temp.rename(folder)


def _load_state(folder: Path, settings: TrainSettings, base) -> dict[str, Any] | None:
    if not (folder / "state.json").is_file():
        return None
    state = json.loads((folder / "state.json").read_text())
    if state["settings"] != asdict(settings) or state["base"] != base.fingerprint:
        raise PipelineError(f"{folder} holds a run with other settings; use --overwrite to start again")
    return state
