"""End to end on real data: a SciFact slice through encode, Lucene index, search and evaluate,
checked against the exact float reference computed from the same model."""

import pytest

from pipeline.evaluate import evaluate, parse_measure
from pipeline.experiment import dataset_files, judged_topics, results_table, run_dataset
from pipeline.readers import read_corpus, read_qrels, read_run
from pipeline.reference import exact_run


@pytest.fixture(scope="module")
def pipeline_result(scifact_slice, tmp_path_factory):
    root = tmp_path_factory.mktemp("experiment")
    return run_dataset(scifact_slice, root=root, progress=False, say=lambda text: None)


def test_slice_matches_exact_float_reference(pipeline_result, scifact_slice, encoder):
    corpus, queries, qrels_path = dataset_files(scifact_slice, "test")
    qrels, topics = read_qrels(qrels_path), judged_topics(queries, qrels_path)
    docs = [doc for _, doc in read_corpus(corpus)]
    assert pipeline_result["documents"] == len(docs) == 400 and pipeline_result["queries"] == 60
    reference = exact_run([d.id for d in docs], encoder.encode([d.text for d in docs]), list(topics),
                          encoder.encode(list(topics.values())), encoder.vocab_size, remove_query=True)
    measures = [parse_measure("nDCG@10"), parse_measure("R@100")]
    exact, _ = evaluate({q: dict(hits) for q, hits in reference.items()}, qrels, measures)
    ours = pipeline_result["metrics"]
    assert abs(ours["nDCG@10"] - exact["nDCG@10"]) <= 0.01
    assert abs(ours["R@100"] - exact["R@100"]) <= 0.01
    assert 0.55 < ours["nDCG@10"] < 0.95  # splade-tiny finds most judged abstracts in a 400-doc slice

    run = read_run(pipeline_result["run"])
    overlap = [len(set(sorted(run[q], key=lambda d: -run[q][d])[:10]) & {d for d, _ in reference[q][:10]}) / 10
               for q in topics]
    assert sum(overlap) / len(overlap) > 0.9  # quantisation at scale 100 barely moves the top ten


def test_outputs_follow_anserini_folders(pipeline_result):
    assert pipeline_result["collection"].endswith("collections/scifact-slice0.splade-tiny") or \
        "/collections/" in pipeline_result["collection"]
    assert "/indexes/" in pipeline_result["index"]
    assert pipeline_result["run"].endswith(f"runs/run.{pipeline_result['dataset']}.splade-tiny.test.txt")
    table = results_table([pipeline_result])
    assert table.splitlines()[0] == "| dataset | encoder | queries | nDCG@10 | R@100 | postings/doc |"
