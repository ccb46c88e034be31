"""evaluate must agree with trec_eval: the binary in Anserini's jar (what Pyserini's trec_eval runs)
and pytrec_eval, to 4 decimals, including ties, -c, -l 2 and -M cut-offs."""

import json
import platform
import random
import stat
import subprocess
import zipfile

import pytest

from pipeline.errors import InputError
from pipeline.evaluate import evaluate, evaluate_files, guess_preset, parse_measure
from pipeline.jvm import anserini_jar
from pipeline.readers import read_qrels, read_run

QRELS = ["1 0 a 1", "1 0 b 2", "1 0 c 0", "2 0 x 0", "3 0 z 3", "3 0 y -1", "4 0 q 1"]
RUN = ["1 Q0 b 1 5 t", "1 Q0 a 2 5 t", "1 Q0 c 3 4 t", "1 Q0 d 4 3 t", "2 Q0 x 1 2 t",
       "3 Q0 y 1 9 t", "3 Q0 z 2 1 t", "5 Q0 z 2 1 t"]


def write(path, lines):
    path.write_text("".join(line + "\n" for line in lines))
    return path


def test_hand_computed_values_match_trec_eval_9(tmp_path):
    """Figures printed by trec_eval 9.0.4 for this run (ties: docno descending; -c counts query 4)."""
    run, qrels = read_run(write(tmp_path / "run", RUN)), read_qrels(write(tmp_path / "qrels", QRELS))
    measures = [parse_measure(m) for m in ("map", "ndcg_cut.2", "recall.2", "P.2", "recip_rank")]
    plain, _ = evaluate(run, qrels, measures, level=1, complete=False)
    assert [round(plain[m], 4) for m in ("MAP", "nDCG@2", "R@2", "P@2", "MRR")] == [0.5, 0.5436, 0.6667, 0.5, 0.5]
    complete, per_query = evaluate(run, qrels, measures, level=2, complete=True)
    assert sorted(per_query) == ["1", "2", "3", "4"]
    assert [round(complete[m], 4) for m in ("MAP", "nDCG@2", "R@2", "P@2", "MRR")] == [0.375, 0.4077, 0.5, 0.25, 0.375]


def test_ndcg_ignores_level_and_negative_grades(tmp_path):
    qrels = read_qrels(write(tmp_path / "q", ["1 0 a 1", "1 0 b 2", "1 0 c 0", "1 0 e 3"]))
    run = read_run(write(tmp_path / "r", ["1 Q0 a 1 9 t", "1 Q0 c 2 8 t", "1 Q0 b 3 7 t"]))
    measures = [parse_measure(m) for m in ("ndcg_cut.3", "map", "recall.3", "P.5", "MRR")]
    means, _ = evaluate(run, qrels, measures, level=2)
    assert {k: round(v, 4) for k, v in means.items()} == {
        "nDCG@3": 0.42, "MAP": 0.1667, "R@3": 0.5, "P@5": 0.2, "MRR": 0.3333}


def random_case(seed: int):
    rng = random.Random(seed)
    docs = [f"d{i:03d}" for i in range(150)]
    qrels, run = [], []
    for q in range(40):
        judged = rng.sample(docs, rng.randint(1, 30))
        qrels += [f"{q} 0 {d} {rng.choice([0, 0, 1, 1, 2, 3])}" for d in judged]
        if q % 7 == 6:
            continue  # judged but absent from the run: -c matters
        for rank, d in enumerate(rng.sample(docs, rng.randint(5, 120)), start=1):
            run.append(f"{q} Q0 {d} {rank} {rng.choice([1.0, 2.0, 2.5, 3.0]) + rng.randint(0, 3)} t")
    run += ["999 Q0 d001 1 1.0 t"]  # an unjudged query is ignored
    return qrels, run


@pytest.fixture(scope="module")
def trec_eval_binary(tmp_path_factory):
    if (platform.system(), platform.machine()) != ("Linux", "x86_64"):
        pytest.skip("the trec_eval binary in Anserini's jar is used on Linux x86_64")
    target = tmp_path_factory.mktemp("trec_eval") / "trec_eval"
    with zipfile.ZipFile(anserini_jar()) as jar:
        target.write_bytes(jar.read("trec_eval/trec_eval-linux-amd64"))
    target.chmod(target.stat().st_mode | stat.S_IEXEC)
    return target


def trec_eval(binary, args, qrels, run):
    out = subprocess.run([str(binary), *args, str(qrels), str(run)], capture_output=True, text=True,
                         check=True).stdout
    return {line.split()[0]: float(line.split()[2]) for line in out.splitlines() if line.split()[1] == "all"}


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("level, complete", [(1, True), (2, True), (1, False)])
def test_agrees_with_trec_eval_binary(tmp_path, trec_eval_binary, seed, level, complete):
    qrels_lines, run_lines = random_case(seed)
    qrels_path, run_path = write(tmp_path / "qrels", qrels_lines), write(tmp_path / "run", run_lines)
    flags = (["-c"] if complete else []) + ["-l", str(level)]
    official = trec_eval(trec_eval_binary, flags + ["-m", "ndcg_cut.10", "-m", "recall.100", "-m", "map",
                                                    "-m", "P.5", "-m", "ndcg"], qrels_path, run_path)
    official_rr = trec_eval(trec_eval_binary, flags + ["-M", "10", "-m", "recip_rank"], qrels_path, run_path)
    measures = [parse_measure(m) for m in ("nDCG@10", "R@100", "MAP", "P@5", "nDCG", "MRR@10")]
    ours, _ = evaluate(read_run(run_path), read_qrels(qrels_path), measures, level, complete)
    expected = {"nDCG@10": official["ndcg_cut_10"], "R@100": official["recall_100"], "MAP": official["map"],
                "P@5": official["P_5"], "nDCG": official["ndcg"], "MRR@10": official_rr["recip_rank"]}
    assert {k: round(v, 4) for k, v in ours.items()} == expected


def test_agrees_with_pytrec_eval(tmp_path):
    pytrec_eval = pytest.importorskip("pytrec_eval")
    qrels_lines, run_lines = random_case(7)
    qrels = read_qrels(write(tmp_path / "qrels", qrels_lines))
    run = read_run(write(tmp_path / "run", run_lines))
    evaluator = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut.10", "recall.100", "map", "recip_rank"})
    results = evaluator.evaluate(run)
    measures = [parse_measure(m) for m in ("ndcg_cut.10", "recall.100", "map", "recip_rank")]
    ours, per_query = evaluate(run, qrels, measures, complete=False)
    assert set(per_query) == set(results)
    for ours_name, theirs in (("nDCG@10", "ndcg_cut_10"), ("R@100", "recall_100"), ("MAP", "map"),
                              ("MRR", "recip_rank")):
        mean = sum(r[theirs] for r in results.values()) / len(results)
        assert round(ours[ours_name], 4) == round(mean, 4)


def test_measure_names_and_presets():
    assert parse_measure("ndcg_cut.10").name == parse_measure("nDCG@10").name == "nDCG@10"
    assert parse_measure("recall.1000").name == "R@1000" and parse_measure("MRR@10").trec_name == "-M 10 recip_rank"
    with pytest.raises(InputError, match="unknown measure"):
        parse_measure("bpref@3")
    assert guess_preset("msmarco-passage-topics/qrels/dev-small.tsv") == "msmarco"
    assert guess_preset("msmarco-passage-topics/qrels/dl19.tsv") == "dl"
    assert guess_preset("datasets/scifact/qrels/test.tsv") == "beir"


def test_run_matching_no_qrels_is_an_error(tmp_path):
    qrels = write(tmp_path / "qrels.tsv", ["1\ta\t1"])
    run = write(tmp_path / "run.txt", ["7 Q0 a 1 1 t"])
    with pytest.raises(InputError, match=r"run.txt: none of its 1 query ids appears in the qrels"):
        evaluate_files(run, qrels)


def test_evaluate_files_reports_preset_and_notes(tmp_path):
    qrels = write(tmp_path / "dl19.tsv", ["1\ta\t1", "1\tb\t2", "2\tc\t3"])
    run = write(tmp_path / "run.txt", ["1 Q0 a 1 2 t", "1 Q0 b 2 1 t"])
    notes = []
    result = evaluate_files(run, qrels, warn=notes.append)
    assert result["preset"] == "dl" and result["relevance_level"] == 2 and result["queries"] == 2
    assert list(result["metrics"]) == ["nDCG@10", "MAP", "R@1000"]
    assert round(result["metrics"]["MAP"], 4) == 0.25  # b (grade 2) at rank 2 for query 1; query 2 scores 0
    assert any("missing from the run" in n for n in notes)
    json.dumps(result)
