"""The torch backend: the masked LM (decoder made an identity) on a device, under autocast."""

from __future__ import annotations

from pipeline import devices


class TorchRunner:
    """Runs the transformer and the MLM head's transform; the encoder projects onto the vocabulary."""

    def __init__(self, mlm, where: devices.Placement):
        self.where = where
        self.precision = where.precision
        self.model = mlm.to(where.device).eval()

    def hidden(self, input_ids, mask):
        device = self.where.device
        input_ids = input_ids.to(device, non_blocking=True)
        mask = mask.to(device, non_blocking=True)
        with self.where.autocast():
            return self.model(input_ids=input_ids, attention_mask=mask).logits
