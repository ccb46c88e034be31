"""The torch backend: the masked LM (decoder made an identity) on a device, under autocast."""

from __future__ import annotations

from typing import Callable

from pipeline import devices

PROBE_IDS = ((101, 7592, 2088, 2003, 1037, 102), (101, 2023, 6254, 2038, 2062, 102))  # two probe texts


class TorchRunner:
    """Runs the transformer and the MLM head's transform; the encoder projects onto the vocabulary."""

    def __init__(self, mlm, where: devices.Placement):
        self.where = where
        self.precision = where.precision
        self.model = mlm.to(where.device).eval()
        self._unmasked = layer_path(self.model) if (where.kind, where.precision) == ("cpu", "fp32") else None

    def hidden(self, input_ids, mask):
        device = self.where.device
        if self._unmasked is not None and bool(mask.all()):
            return self._unmasked(input_ids)
        input_ids = input_ids.to(device, non_blocking=True)
        mask = mask.to(device, non_blocking=True)
        with self.where.autocast():
            return self.model(input_ids=input_ids, attention_mask=mask).logits


def layer_path(mlm) -> Callable | None:
    """A BERT masked LM's own modules called in turn (embeddings, each layer, the head's transform),
    for batches without padding, or None for other architectures.

    Without padding there is no mask to build, and the model's outer ``forward`` (input checks,
    mask construction, output capture) is Python work of the order of a short query's arithmetic
    through a small model on the CPU; with the query projection it makes queries 1.24x faster than
    the document path (``bench/results/query_kernels.json``).
    The modules and their arithmetic are the model's; a probe checks the result is bit for bit the
    full forward's before the path is used, so a model whose outer forward does more than this gets
    the full forward.
    """
    import torch

    base = getattr(mlm, "bert", None)
    head = getattr(getattr(getattr(mlm, "cls", None), "predictions", None), "transform", None)
    if getattr(mlm.config, "model_type", None) != "bert" or base is None or head is None:
        return None
    embeddings, layers = base.embeddings, list(base.encoder.layer)

    def forward(input_ids):
        hidden = embeddings(input_ids=input_ids)
        for layer in layers:
            hidden = layer(hidden, None)
        return head(hidden)

    probe = torch.tensor(PROBE_IDS, dtype=torch.long) % mlm.config.vocab_size
    with torch.inference_mode():
        try:
            same = torch.equal(forward(probe), mlm(input_ids=probe, attention_mask=torch.ones_like(probe)).logits)
        except Exception:  # an architecture variant whose layers take other arguments
            return None
    return forward if same else None
