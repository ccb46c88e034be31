"""splade-pipeline: from a SPLADE model to a Lucene impact index and a scored TREC run."""

__version__ = "0.1.0"
