"""Training on sentence-transformers' SparseEncoderTrainer (the Hugging Face Trainer underneath).

The trainer brings devices, mixed precision, DDP, gradient accumulation, resumable checkpoints and
evaluation during training; this package adds what SPLADE training here needs on top of it:

* ``modules``: the memory-saving max pooling as a module of sentence-transformers' chain (the MLM
  head's transformed hidden states go through ``pipeline.projection``, never a batch x length x
  vocabulary logits tensor).
* ``objectives``: the ranking losses wrapped in ``SpladeLoss`` with FLOPS or L1 regularisers of
  ours (the formulas of ``pipeline.losses``) and a quadratic lambda warm-up counted in steps.
* ``callbacks``: ``--max-minutes`` (stop resumably) and ``train_log.jsonl``.
* ``schedule``: the batch order and learning-rate schedule of the hand-written loop the trainer
  replaced (the trainer's own defaults changed what the model saw).
* ``idf``: IDF over a corpus with the model's tokenizer, the starting query weights of an
  inference-free model (``modules.inference_free_model``).
"""
