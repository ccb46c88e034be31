"""Every benchmark script runs in its smoke mode, so none can rot, and writes the figures it should.

A smoke run's figures are meaningless as measurements; what is checked is that each result file has
its keys, counts that follow from the smoke inputs, quality figures in their ranges and timings that
are numbers above zero (never how large).

The smoke runs are separate processes that spend most of their time importing torch, starting a
JVM or Ray, each on one core: two run at a time (``PARALLEL``), started when the first smoke test
needs them, each in a folder of its own (the scripts pick free ports for their servers).
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # every bench script in a process of its own

ROOT = Path(__file__).resolve().parents[1]
PARALLEL = 2  # CI's cores

# script -> extra arguments for its smoke run (each script owns what --smoke means)
SMOKE: dict[str, list[str]] = {
    "backends_quality.py": [],
    "encode.py": [],
    "gpu.py": [],
    "effectiveness.py": [],
    "exact_reference.py": [],
    "memory.py": [],
    "official.py": [],
    "query.py": [],
    "query_sides.py": [],
    "ray_encode.py": [],
    "serve.py": [],
    "scale.py": ["--prune-impact", "0", "60"],
    "train.py": ["--seeds", "14"],
    "two_step.py": ["--latency"],
}
LONGEST_FIRST = ["scale.py", "serve.py", "train.py", "ray_encode.py", "official.py"]  # a balanced tail


@pytest.fixture(scope="module")
def smoke_runs(request, tmp_path_factory):
    """script -> future of (its results folder, the finished process), for the selected scripts only."""
    selected = {item.callspec.params["script"] for item in request.session.items
                if getattr(item, "originalname", None) == "test_smoke" and item.module is request.module}
    def run(script: str, folder: Path):
        done = subprocess.run([sys.executable, str(ROOT / "bench" / script), "--smoke", "--results", str(folder),
                               *SMOKE[script]], capture_output=True, text=True, timeout=600, cwd=folder)
        return folder, done

    order = [s for s in LONGEST_FIRST + sorted(set(SMOKE) - set(LONGEST_FIRST)) if s in selected]
    with ThreadPoolExecutor(PARALLEL) as pool:
        yield {script: pool.submit(run, script, tmp_path_factory.mktemp(f"smoke-{script[:-3]}")) for script in order}


class Between:
    """A figure within [low, high]."""

    def __init__(self, low: float, high: float):
        self.low, self.high = low, high

    def holds(self, value) -> bool:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and self.low <= value <= self.high

    def __repr__(self) -> str:
        return f"in [{self.low}, {self.high}]"


UNIT = Between(0, 1)  # nDCG, recall, ratios of counts
TIME = Between(1e-9, math.inf)  # seconds, milliseconds, docs/s, queries/s: present and above zero, never how large
SIGNED = Between(-math.inf, math.inf)  # a difference: any finite number


def figure(record: dict, path: str):
    """``record["a"]["b"][0]`` for ``"a/b/0"`` (keys may hold dots, as in ``R@100`` names)."""
    value = record
    for part in path.split("/"):
        value = value[int(part)] if isinstance(value, list) else value[part]
    return value


# result file name -> {figure path: expected value, or a range}; the smoke inputs fix the counts.
FIGURES: dict[str, dict[str, object]] = {
    "query_sides.smoke.json": {
        "encoder": "splade-tiny", "datasets/demo/documents": 40, "datasets/demo/queries": 10,
        **{f"datasets/demo/sides/{side}/{key}": UNIT for side in ("model", "tokens", "idf")
           for key in ("nDCG@10", "R@100")},
        **{f"datasets/demo/sides/{side}/queries_without_terms": 0 for side in ("model", "tokens", "idf")},
    },
    "serve.smoke.json": {
        "dataset": "demo", "documents": 40, "encoder": "splade-tiny", "errors": 0,
        "latency/k10/queries": 10, "latency/k10/errors": 0, "latency/k10/p50_ms": TIME,
        "latency/k10/server_p50_ms/encode": TIME, "latency/k10/server_p50_ms/build": TIME,
        "latency/k10/beyond_encode_search_p50_ms": TIME, "latency/k1000_without_text/errors": 0,
        "latency/k10_http_client/queries": 10, "latency/k10_http_client/errors": 0,
        "latency/k10_http_client/p50_ms": TIME,
        "memory/errors": 0, "memory/rss_after_mb": TIME, "throughput_k10/1_worker/errors": 0,
        "throughput_k10/2_workers/errors": 0, "throughput_k10/1_worker/qps": TIME, "targets/zero_errors": True,
    },
    "scale.smoke.json": {
        "sizes": [1000, 2000], "real_collection/documents": 30, "profile/documents": 30,
        "profile/calibration_max_relative_error": Between(0, 0.01),
        "synthetic_vs_real/figures/0/figure": "postings per document, mean",
        "synthetic_vs_real/figures/0/relative_difference": Between(0, 0.1),
        "by_size/2000/index/result/counters/indexed": 2000, "by_size/2000/index/result/counters/errors": 0,
        "by_size/2000/lucene/result/queries": 7, "by_size/2000/lucene/result/k=10/latency_1_thread/p50_ms": TIME,
        "by_size/2000/seismic/result/k=10/0/recall@10": UNIT, "growth/1/figure": "index size, MB",
        "by_size/2000/seismic/result/k=10/5/recall@10": UNIT, "by_size/2000/seismic/result/k=10/5/heap_factor": 0.3,
        "matched_recall_k10/2000/0/recall@10_at_least": 0.9, "matched_recall_k10/2000/4/recall@10_at_least": 0.99,
        "by_size/2000/companion/result/prune_docs": 128, "by_size/2000/companion/result/companion_mb": TIME,
        "by_size/2000/companion@128i60/result/min_impact": 60,
        "by_size/2000/two_step@128i60/result/settings/0/recall@10": UNIT,
        "by_size/2000/two_step/result/queries": 7, "by_size/2000/two_step/result/settings/0/recall@10": UNIT,
        "by_size/2000/two_step/result/settings/0/latency_1_thread/p50_ms": TIME,
        "by_size/2000/two_step/result/settings/0/first_stage_latency_1_thread/p50_ms": TIME,
    },
    "two_step.smoke.json": {
        "results/demo/documents": 40, "results/demo/queries": 10, "results/demo/exhaustive/nDCG@10": UNIT,
        "results/demo/rows/0/nDCG@10": UNIT, "results/demo/rows/0/delta_nDCG@10": SIGNED,
        "results/demo/rows/0/recall@10_vs_exhaustive": UNIT, "results/demo/rows/0/could_miss_share": UNIT,
        "results/demo/rows/0/candidates_mean": Between(0, 10),  # at most the row's k' (10)
        "results/demo/rows/0/latency_1_thread/p50_ms": TIME, "results/demo/rows/0/latency_1_thread/bench_lock": "not used",
        "results/demo/exhaustive_latency_1_thread/k=10/p50_ms": TIME,
        "results/demo/exhaustive_latency_1_thread/k=1000/p99_ms": TIME,
    },
    "ray_encode.smoke.json": {
        "model": "splade-tiny", "shard_size": 10, "ray_workers": 2, "collections_identical": True,
        "runs/single/0/documents": 40, "runs/ray/0/documents": 40, "runs/single/0/steady_docs_per_s": TIME,
        "runs/ray/0/end_to_end_s": TIME, "steady_ratio_ray_over_single": TIME,
    },
    "backends_quality.smoke.json": {
        "model": "splade-tiny", "model_fingerprint": "sha256:f142589bd505edab", "datasets/demo/documents": 40,
        "datasets/demo/queries": 10, "datasets/demo/encoders/torch:fp32/impacts_changed": 0.0,
        "datasets/demo/encoders/torch:fp32/max_abs_weight_error": 0.0,
        "datasets/demo/encoders/torch:fp32/quantised/nDCG@10": UNIT,
        **{f"datasets/demo/encoders/{name}/{key}": UNIT for name in ("onnx:int8", "openvino:int8", "torch:bf16")
           for key in ("quantised/nDCG@10", "float/R@100", "impacts_changed")},
        **{f"datasets/demo/change_vs_torch:fp32/{name}/quantised/nDCG@10": Between(-1, 1)
           for name in ("onnx:int8", "openvino:int8", "torch:bf16")},
    },
    "encode.tiny.smoke.json": {
        "model": "splade-tiny", "model_fingerprint": "sha256:f142589bd505edab", "max_length": 512,
        "scifact/documents": 4, "msmarco/passages": 8,
        **{f"{part}/docs_per_second/{who}": TIME for part in ("scifact", "msmarco")
           for who in ("splade-pipeline torch fp32", "splade-pipeline onnx int8", "splade-pipeline openvino int8",
                       "pyserini", "sentence-transformers", "baseline")},
        # the exact path is the reference: no weight differs from it
        "weights/splade-pipeline torch fp32/max_abs_weight_error": 0.0,
        "weights/splade-pipeline torch fp32/impacts_changed": 0.0,
        "weights/splade-pipeline onnx int8/impacts_changed": UNIT,
        "weights/splade-pipeline openvino int8/max_abs_weight_error": Between(0, 1),
        "load_seconds_including_export/onnx": TIME,
    },
    "exact_reference.smoke.json": {
        "dataset": "demo", "documents": 40, "queries": 10, "encoder": "splade-tiny", "pipeline/nDCG@10": UNIT,
        "exact_reference/nDCG@10": UNIT, "exact_reference/R@100": UNIT, "difference/nDCG@10": Between(-0.05, 0.05),
        "postings_per_doc": Between(1, 30522), "seconds/pipeline": TIME,
    },
    "gpu.smoke.json": {  # on a machine without a GPU the smoke run compares the CPU paths
        "model_fingerprint": "sha256:f142589bd505edab", "documents": 24, "queries": 4,
        "effectiveness/cpu fp32/quantised/nDCG@10": UNIT, "effectiveness/cpu fp32/float/R@100": UNIT,
        "speed/model/texts": 24, "speed/model/docs_per_second/pyserini": TIME, "speed/bert-base-random/texts": 8,
    },
    "query_kernels.smoke.json": {
        "model": "splade-tiny", "queries": 5, "rounds": 1, "torch_threads": 1, "mean_tokens": Between(2, 512),
        **{f"ms_per_query/{who}/p50": TIME for who in ("splade-pipeline", "document path", "pyserini", "baseline")},
        "skinny_product_ms/numpy matmul, transposed copy": TIME,
        # the query path's integers equal the plain loop's: the bit-for-bit claim, checked even in a smoke run
        "integer_weights_vs_baseline/splade-pipeline/changed": 0,
        "integer_weights_vs_baseline/splade-pipeline/integer_weights_compared": Between(1, math.inf),
    },
    "memory.smoke.json": {
        "shard_size": 10, "max_length": 32, "baseline/documents": 20, "large/documents": 40, "documents_ratio": 2,
        "baseline/peak_rss_mb": TIME, "large/peak_rss_mb": TIME, "peak_rss_ratio": Between(0.5, 2),
    },
    "effectiveness.smoke.json": {
        "results/demo/documents": 40, "results/demo/queries": 10,
        **{f"results/demo/rows/{row}/{key}": UNIT
           for row in ("BM25 flat", "SPLADE splade-tiny (scale 100)", "exact float reference", "RRF(BM25, SPLADE)")
           for key in ("nDCG@10", "R@100", "MAP", "P@30")},  # (the linear mix's name holds a "/")
        "results/demo/rows/SPLADE splade-tiny (scale 100)/postings_per_doc": Between(1, 30522),
        "results/demo/rows/SPLADE splade-tiny (scale 100)/qps": TIME,
        "results/demo/sweep/0/kind": "scale", "results/demo/sweep/2/kind": "query top-k",
        "results/demo/sweep/2/postings_per_query": Between(0, 5),
        "scale_sweep_ndcg10_spread/demo": UNIT, "results/demo/query_encode_ms": TIME,
    },
    "official_arguana.smoke.json": {
        "documents": 25, "queries": 5, "bm25_flat/nDCG@10": UNIT, "bm25_flat/R@100": UNIT,
        "splade_tiny/nDCG@10": UNIT, "splade_tiny/remove_query/rule": "auto", "splade_tiny/timings/encode_s": TIME,
        "published_splade_pp_ed/nDCG@10": 0.5203,
    },
    "official_bm25.smoke.json": {
        "scifact/nDCG@10": UNIT, "scifact/published/nDCG@10": 0.6789, "scifact/total_terms": Between(1, math.inf),
        "arguana/R@1000": UNIT, "arguana/published/nDCG@10": 0.397, "arguana/nDCG@10_minus_published": SIGNED,
    },
    "official_msmarco.smoke.json": {
        # the official runs are the real ones even in a smoke run: the published figures to 4 decimals
        **{f"official_runs/{i}/equal_to_4_decimals": True for i in range(4)},
        "official_runs/0/ours/nDCG@10": 0.7308, "official_runs/3/ours/R@100": 0.5599,
        "splade_tiny/dl19/queries": 2, "splade_tiny/dl19/documents": 100, "splade_tiny/dl19/relevance_level": 2,
        "splade_tiny/dl19/union_pool/nDCG@10": UNIT, "splade_tiny/dl19/own_pool/R@1000": UNIT,
    },
    "train.smoke.json": {
        "dataset": "demo", "triples": 20, "complete": True, "settings/batches": "shuffle",
        **{f"{variant}/training/steps": 3 for variant in ("old_loop", "trainer", "inference_free")},
        **{f"{variant}/training/final/loss": Between(0, math.inf) for variant in ("old_loop", "trainer", "inference_free")},
        **{f"{where}/{key}": UNIT for where in ("old_loop/pipeline", "trainer/pipeline", "trainer/exact",
                                                "inference_free/exact", "idf_queries_base_documents/exact",
                                                "base/pipeline") for key in ("nDCG@10", "R@100")},
        "inference_free/training/query_weights/start": "idf", "inference_free/training/final/lambda_q": 0.0,
        "trainer_minus_old_loop_nDCG@10": SIGNED, "inference_free_minus_trainer_exact_nDCG@10": SIGNED,
        "seed_spread/seeds": [13, 14], "seed_spread/old_loop/1": UNIT, "seed_spread/trainer/1": UNIT,
        "seed_spread/trainer_mean": UNIT, "seed_spread/old_loop_stdev": Between(0, 1),
        "seed_spread/trainer_minus_old_loop_mean": SIGNED,
    },
}


@pytest.mark.parametrize("script", sorted(SMOKE))
def test_smoke(script: str, smoke_runs) -> None:
    folder, done = smoke_runs[script].result()
    assert done.returncode == 0, done.stderr[-3000:]
    written = sorted(folder.glob("*.smoke.json"))
    assert written, f"{script} wrote no result file"
    for path in written:
        record = json.loads(path.read_text())
        assert record["smoke"] is True and record["machine"]["cpu"]["cores"] >= 1
        assert set(record["code"]) >= {"commit", "clean", "dirty_files"}
        expected = FIGURES.get(path.name)
        assert expected is not None, f"{path.name}: no figures to check (add them to FIGURES)"
        for where, wanted in expected.items():
            try:
                value = figure(record, where)
            except (KeyError, IndexError, TypeError):
                pytest.fail(f"{path.name}: no figure {where}")
            ok = wanted.holds(value) if isinstance(wanted, Between) else value == wanted
            assert ok, f"{path.name}: {where} = {value!r}, expected {wanted!r}"


def test_figure_checks_can_fail() -> None:
    record = {"a": {"R@100": [0.5, 2.0]}}
    assert figure(record, "a/R@100/1") == 2.0 and UNIT.holds(figure(record, "a/R@100/0"))
    assert not UNIT.holds(2.0) and not TIME.holds(0) and not TIME.holds(True) and not UNIT.holds(None)


def test_every_script_has_a_smoke_run() -> None:
    scripts = {p.name for p in (ROOT / "bench").glob("*.py") if p.name != "common.py" and not p.name.startswith("_")}
    assert scripts == set(SMOKE), f"bench scripts without a smoke run: {sorted(scripts - set(SMOKE))}"
