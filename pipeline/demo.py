"""The ``demo`` command: the whole pipeline on the embedded collection, then why the top hits matched.

The collection (forty passages, ten queries, graded judgments) was written for this project and
ships in ``pipeline/resources/demo``. For one query the demo shows each top hit's matching terms
with their contributions (query weight x document impact), marking the terms that SPLADE added by
expansion: absent from the query text (``+q``) or from the passage text (``+d``).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from pipeline import encoders, stages
from pipeline.errors import PipelineError
from pipeline.explain import explain, text_tokens
from pipeline.experiment import results_table, run_dataset
from pipeline.readers import read_run, read_topics

DEMO_DATA = Path(__file__).with_name("resources") / "demo"
DEFAULT_QUERY = "q9"


def collection_vectors(collection: Path) -> dict[str, dict[str, Any]]:
    """Every document of a (small) collection: ``{id: {"contents", "vector"}}``."""
    docs = {}
    for path in sorted((Path(collection) / "vectors").glob("*.jsonl")):
        for line in path.read_text().splitlines():
            record = json.loads(line)
            docs[record["id"]] = record
    return docs


def run_demo(workdir: Path | None = None, query_id: str = DEFAULT_QUERY, top: int = 3, threads: int | None = None,
             say: stages.Say = print) -> dict[str, Any]:
    """Run the pipeline on the embedded collection and print the table and one query's top hits."""
    with tempfile.TemporaryDirectory(prefix="splade-demo-") as scratch:
        root = Path(workdir) if workdir else Path(scratch)
        result = run_dataset(DEMO_DATA, name="demo", root=root, threads=threads, overwrite=True,
                             progress=False, say=lambda text: None)
        say(results_table([result]))
        say("")
        topics = read_topics(DEMO_DATA / "queries.jsonl")
        if query_id not in topics:
            raise PipelineError(f"demo has no query {query_id!r}; choose one of {', '.join(topics)}")
        encoder = encoders.load_documents(encoders.resolve(None).document, threads)
        text = topics[query_id]
        query_terms = encoder.to_terms(encoder.encode([text])[0], 100)
        query_tokens = text_tokens(encoder.tokenizer, text)
        docs = collection_vectors(Path(result["collection"]))
        hits = sorted(read_run(Path(result["run"]))[query_id].items(), key=lambda item: (-item[1], item[0]))
        say(f"Query {query_id}: {text!r} -> {len(query_terms)} weighted terms")
        for rank, (docid, score) in enumerate(hits[:top], start=1):
            doc = docs[docid]
            terms = explain(query_terms, query_tokens, doc["vector"], text_tokens(encoder.tokenizer, doc["contents"]))
            say(f"{rank}. {docid}  score {score:,.0f}  {doc['contents'][:70]}...")
            say("   " + ", ".join(f"{token}{mark} {value:,}" for token, value, mark in terms[:8]))
        say("(+q: expansion term absent from the query text; +d: absent from the passage text)")
        if workdir:
            say(f"outputs: {result['collection']}, {result['index']}, {result['run']}")
        return result
