"""Trainer callbacks: ``--max-minutes`` as a resumable stop, ``train_log.jsonl``, and the dropout
masks as a stream of the seed and the steps alone."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import torch
from transformers import TrainerCallback
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from pipeline.errors import InputError
from pipeline.training.objectives import Regulariser


class Deadline(TrainerCallback):
    """After ``minutes`` of training, save a checkpoint at the end of the current step and stop.

    The same command run again resumes from that checkpoint, so a time budget never loses work.
    """

    def __init__(self, minutes: float) -> None:
        self.deadline = time.monotonic() + 60 * minutes
        self.reached = False

    def on_step_end(self, args, state, control, **kwargs):
        if time.monotonic() > self.deadline:
            self.reached = True
            control.should_save = True
            control.should_training_stop = True
        return control


class DropoutStream(TrainerCallback):
    """Dropout masks drawn from a generator that only the training steps advance.

    The trainer draws from torch's global generator outside the steps too (the data loader takes a
    seed from it every epoch, before the first step included), so each step's dropout masks
    depended on more than the seed and the steps before it, and differed from those of the
    hand-written loop (``pipeline.training.schedule``), which seeded torch and then only ran
    forward passes. Here the generator starts from ``torch.manual_seed(args.seed)`` and its state
    is put back at the start of each step as the previous step left it, so step N draws the masks
    the loop drew at step N. The state is saved in each checkpoint (``dropout_rng.pt``, one per
    process when there are several) and a resumed run continues it. A checkpoint without the file
    (written before it existed, or killed between the trainer's save and this one) continues from
    the trainer's own saved state, which is the same: nothing draws between a step's end and the save.
    Streams of the CPU and of the device the trainer runs on (CUDA, MPS).
    """

    def __init__(self, resume_from: Path | None = None) -> None:
        self.resume_from = resume_from
        self.state: dict[str, torch.Tensor] | None = None

    @staticmethod
    def file_name(args) -> str:
        return f"dropout_rng_{args.process_index}.pt" if args.world_size > 1 else "dropout_rng.pt"

    def on_train_begin(self, args, state, control, **kwargs):
        if self.resume_from is None:
            torch.manual_seed(args.seed)
            self.state = self._current(args)
            return
        saved = Path(self.resume_from) / self.file_name(args)
        if saved.is_file():
            try:
                self.state = torch.load(saved, weights_only=True)
            except Exception as exc:  # a file cut short by a kill, or not ours
                raise InputError(saved, f"unreadable ({type(exc).__name__}); delete it to resume from the "
                                        "trainer's own state") from None

    def on_step_begin(self, args, state, control, **kwargs):
        if self.state is None:
            return
        torch.set_rng_state(self.state["cpu"])
        if "cuda" in self.state:
            torch.cuda.set_rng_state(self.state["cuda"], args.device)
        if "mps" in self.state:
            torch.mps.set_rng_state(self.state["mps"])

    def on_step_end(self, args, state, control, **kwargs):
        self.state = self._current(args)

    def on_save(self, args, state, control, **kwargs):
        folder = Path(args.output_dir) / f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}"
        if self.state is None or not folder.is_dir():  # the trainer saved nothing here
            return
        temporary = folder / f".{self.file_name(args)}.tmp"
        torch.save(self.state, temporary)
        os.replace(temporary, folder / self.file_name(args))  # never a half-written file under the name

    @staticmethod
    def _current(args) -> dict[str, torch.Tensor]:
        current = {"cpu": torch.get_rng_state()}
        if args.device.type == "cuda":
            current["cuda"] = torch.cuda.get_rng_state(args.device)
        elif args.device.type == "mps":
            current["mps"] = torch.mps.get_rng_state()
        return current


class TrainLog(TrainerCallback):
    """One JSON line per optimiser step: losses, lambdas, learning rate and postings per query and document.

    The trainer logs every step (``logging_steps=1``); ``loss`` is the total, ``ranking`` the ranking
    loss, ``reg_q``/``reg_d`` the unweighted regularisers, ``postings_q``/``postings_d`` the mean
    number of non-zero terms per query and per document in the step's batches.
    """

    def __init__(self, path: Path, query: Regulariser, document: Regulariser, progress: bool = True) -> None:
        self.path = Path(path)
        self.query, self.document = query, document
        self.progress = progress
        self.bar = None
        self.last: dict[str, float] = {}

    def on_train_begin(self, args, state, control, **kwargs):
        from tqdm import tqdm

        if self.progress and state.is_world_process_zero:
            self.bar = tqdm(total=state.max_steps, initial=state.global_step, unit="step", desc="train")

    def on_step_end(self, args, state, control, **kwargs):
        if self.bar is not None:
            self.bar.update(state.global_step - self.bar.n)

    def on_train_end(self, args, state, control, **kwargs):
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def truncate(self, step: int) -> None:
        """Keep the records up to ``step`` (a resumed run replays what came after its checkpoint)."""
        if not self.path.is_file():
            return
        kept = [line for line in self.path.read_text().splitlines()
                if line.strip() and json.loads(line).get("step", 0) <= step]
        self.path.write_text("".join(line + "\n" for line in kept))

    def on_log(self, args, state, control, logs=None, **kwargs):
        logs = logs or {}
        if "loss" not in logs or not state.is_world_process_zero:
            return
        q, d = self.query.take(), self.document.take()
        record = {"step": state.global_step, "loss": logs["loss"], "ranking": logs.get("base_loss"),
                  "reg_q": q["value"], "reg_d": d["value"], "lambda_q": logs.get("query_regularizer_weight"),
                  "lambda_d": logs.get("document_regularizer_weight"), "learning_rate": logs.get("learning_rate"),
                  "postings_q": q["postings"], "postings_d": d["postings"]}
        record = {key: (round(value, 6) if isinstance(value, float) else value) for key, value in record.items()}
        self.last = record
        if self.bar is not None:
            self.bar.set_postfix(loss=f"{record['loss']:.3f}", q=f"{q['postings']:.0f}", d=f"{d['postings']:.0f}")
        with open(self.path, "a") as handle:
            handle.write(json.dumps(record) + "\n")
