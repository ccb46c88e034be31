"""SPLADE as a sentence-transformers module chain whose pooling never builds the logits tensor.

sentence-transformers' SPLADE chain is ``Transformer(fill-mask) -> SpladePooling``: the masked-LM
returns ``batch x length x vocabulary`` logits (16 x 256 x 30,522 floats is 500 MB a batch, plus
as much again for its gradient) and the pooling reduces them. Here the MLM's decoder is made an
identity (as ``pipeline.encoder.load_masked_lm`` does for inference), so the transformer returns
the head's transformed hidden states, and ``TiledSpladePooling`` projects them onto the vocabulary
with the kernel encoding uses, ``pipeline.projection``: ``max_pool_trainable`` while training (a
tiled running max whose backward touches only the terms with a gradient), ``project`` otherwise.

The pooling holds the decoder by reference, not as a submodule, so the model's state dict is the
masked-LM's alone and a saved checkpoint is exactly what ``--encoder`` loads. A pooling loaded
from disk without that reference (sentence-transformers' own ``SparseEncoder(folder)``, whose
decoder is intact) pools the logits it is given, as ``SpladePooling`` does; the final model is
saved with ``SpladePooling`` itself (``save_plain``).

``inference_free_model`` puts the same chain on the document route of a ``Router`` whose query
route is a ``SparseStaticEmbedding`` (one trainable weight per wordpiece): sentence-transformers'
inference-free SPLADE, trained by the same trainer and saved in the library's own layout.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
from sentence_transformers.sparse_encoder.modules import SpladePooling

from pipeline.projection import max_pool_trainable, project


class TiledSpladePooling(SpladePooling):
    """SPLADE pooling of transformed hidden states through the shared tiled projection."""

    def __init__(self, pooling_strategy: str = "max", activation_function: str = "relu",
                 embedding_dimension: int | None = None, chunk_size: int | None = None,
                 decoder: torch.nn.Module | None = None) -> None:
        super().__init__(pooling_strategy, activation_function, embedding_dimension, chunk_size)
        if activation_function != "relu":
            raise ValueError("TiledSpladePooling computes log(1 + ReLU(x)); activation_function must be 'relu'")
        self._decoder = (decoder,)  # a tuple: a reference, not a submodule (its weights belong to the MLM)

    @property
    def decoder(self) -> torch.nn.Module | None:
        return self._decoder[0]

    def forward(self, features: dict[str, Any]) -> dict[str, Any]:
        decoder = self.decoder
        if decoder is None:  # loaded without the chain that made it: plain logits arrive
            return super().forward(features)
        hidden, mask = features["token_embeddings"], features["attention_mask"].bool()
        weight, bias = decoder.weight, decoder.bias
        if bias is None:
            bias = torch.zeros(weight.shape[0], dtype=weight.dtype, device=weight.device)
        if self.pooling_strategy == "max":
            packed, lengths = hidden[mask], mask.sum(1).tolist()
            if torch.is_grad_enabled():
                pooled = max_pool_trainable(packed, lengths, weight, bias)
            else:
                pooled = project(packed.contiguous(), lengths, weight.to(packed.dtype), bias, "max")
        else:  # sum pooling has no running-max shortcut: the logits, activated and summed over real tokens
            logits = hidden @ weight.T + bias
            pooled = (torch.log1p(torch.relu(logits)) * mask.unsqueeze(-1)).sum(1)
        if self.embedding_dimension is None:
            self.embedding_dimension = pooled.shape[1]
        features["sentence_embedding"] = pooled
        return features


def splade_model(location: str, pooling: str = "max", query_max_length: int = 64, doc_max_length: int = 256):
    """A ``SparseEncoder`` over the masked-LM at ``location`` with the tiled pooling, ready to train.

    Queries and documents get their own token limits through sentence-transformers' task lengths
    (the trainer tokenises the ``query`` column as task "query", the others as "document").
    """
    from sentence_transformers import SparseEncoder

    return SparseEncoder(modules=_splade_chain(location, pooling, query_max_length, doc_max_length), device="cpu")


def inference_free_model(location: str, query_weights: torch.Tensor, pooling: str = "max",
                         doc_max_length: int = 256):
    """A ``SparseEncoder`` whose queries are weighted wordpieces and whose documents are SPLADE's.

    sentence-transformers' inference-free shape: a ``Router`` whose query route is one
    ``SparseStaticEmbedding`` (a trainable weight per vocabulary entry, started from
    ``query_weights``, e.g. IDF) and whose document route is the masked-LM with the tiled pooling.
    Saved, it is the library's standard folder (``router_config.json``, ``query_0_...`` and
    ``document_0_...`` subfolders) that its own ``SparseEncoder`` loads.
    """
    from sentence_transformers import SparseEncoder
    from sentence_transformers.base.modules import Router
    from sentence_transformers.sparse_encoder.modules import SparseStaticEmbedding

    chain = _splade_chain(location, pooling, None, doc_max_length)  # documents only: queries take the other route
    vocab = chain[1].embedding_dimension
    if query_weights.shape != (vocab,):
        raise ValueError(f"query weights have shape {tuple(query_weights.shape)}; the vocabulary has {vocab} entries")
    static = SparseStaticEmbedding(chain[0].tokenizer, weight=query_weights.detach().clone().float(), frozen=False)
    router = Router.for_query_document(query_modules=[static], document_modules=chain)
    return SparseEncoder(modules=[router], device="cpu")


def query_weight_parameter(model) -> str | None:
    """The name (in ``model.named_parameters()``) of an inference-free model's query weights, else None."""
    from sentence_transformers.sparse_encoder.modules import SparseStaticEmbedding

    for name, module in model.named_modules():
        if isinstance(module, SparseStaticEmbedding):
            return f"{name}.weight"
    return None


def _splade_chain(location: str, pooling: str, query_max_length: int | None, doc_max_length: int) -> list:
    """``Transformer(fill-mask) -> TiledSpladePooling`` over the masked-LM at ``location``."""
    from sentence_transformers.base.modules import Transformer
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        transformer = Transformer(location, transformer_task="fill-mask", query_length=query_max_length,
                                  document_length=doc_max_length)
    decoder = transformer.auto_model.get_output_embeddings()
    decoder.forward = _identity  # the head's transformed states come out; the pooling projects them
    vocab = decoder.weight.shape[0]
    return [transformer, TiledSpladePooling(pooling, embedding_dimension=vocab, decoder=decoder)]


def save_plain(model, folder: str) -> None:
    """Save ``model`` as sentence-transformers' own chain, ``Transformer(fill-mask) -> SpladePooling``.

    The tiled pooling computes what ``SpladePooling`` computes, so the saved folder names the
    library's class and loads in any sentence-transformers install without ``trust_remote_code``.
    The pooling is swapped wherever it sits: in the model's own chain, or in a ``Router``'s route.
    """
    _swap_pooling(model)
    model.save(folder, create_model_card=False)


def _swap_pooling(parent: torch.nn.Module) -> None:
    for name, module in list(parent.named_children()):
        if isinstance(module, TiledSpladePooling):
            setattr(parent, name, SpladePooling(module.pooling_strategy, module.activation_function,
                                                module.embedding_dimension))
        else:
            _swap_pooling(module)


def _identity(hidden):
    return hidden
