"""evaluate must agree with trec_eval: the binary in Anserini's jar (what Pyserini's trec_eval runs)
and pytrec_eval, to 4 decimals, including ties, float32 scores at SPLADE's sizes, -c, -l 2 and -M
cut-offs; and reproduce the official TREC DL figures from Anserini's own runs."""

import json
import platform
import random
import stat
import subprocess
import zipfile

import pytest

from conftest import dataset
from pipeline.errors import InputError, PipelineError
from pipeline.evaluate import derive_preset, evaluate, evaluate_files, parse_measure
from pipeline.jvm import anserini_jar
from pipeline.readers import read_qrels, read_run
from pipeline.search import format_run

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


def test_measure_names():
    assert parse_measure("ndcg_cut.10").name == parse_measure("nDCG@10").name == "nDCG@10"
    assert parse_measure("recall.1000").name == "R@1000" and parse_measure("MRR@10").trec_name == "-M 10 recip_rank"
    with pytest.raises(InputError, match="unknown measure"):
        parse_measure("bpref@3")


def test_presets_come_from_the_qrels_content_never_the_path(tmp_path):
    dl = {f"q{i}": {f"d{j}": j % 4 for j in range(200)} for i in range(3)}
    assert derive_preset(dl)[0] == "dl"
    assert derive_preset({"1": {"a": 1}, "2": {"b": 1, "c": 0}})[0] == "beir"
    assert derive_preset({"1": {f"d{j}": j % 3 for j in range(500)}})[0] == "beir"  # TREC-COVID: 0-2
    # A BEIR-style set under a path that looks like TREC DL is still BEIR (level 1): MAP is not 0.
    folder = tmp_path / "deep-learning" / "dl2019"
    folder.mkdir(parents=True)
    qrels = write(folder / "dl19.tsv", ["1\ta\t1", "2\tb\t1"])
    run = write(tmp_path / "run.txt", ["1 Q0 a 1 2 t", "2 Q0 b 1 1 t"])
    notes = []
    result = evaluate_files(run, qrels, warn=notes.append)
    assert result["preset"] == "beir" and result["relevance_level"] == 1 and result["metrics"]["R@100"] == 1.0
    assert notes[0].startswith("preset beir (nDCG@10 R@100 at level 1; derived from the qrels")
    chosen = evaluate_files(run, qrels, warn=notes.append, preset="msmarco")
    assert list(chosen["metrics"]) == ["MRR@10", "R@1000"] and chosen["preset_reason"] == "chosen"


@pytest.mark.parametrize("level", [0, -1])
def test_level_below_one_is_refused(tmp_path, level):
    qrels, run = write(tmp_path / "q.tsv", ["1\ta\t1"]), write(tmp_path / "r.txt", ["1 Q0 a 1 2 t"])
    with pytest.raises(PipelineError, match=f"--level must be an integer of at least 1.*got {level}"):
        evaluate_files(run, qrels, level=level)
    with pytest.raises(PipelineError, match="--level"):
        evaluate(read_run(run), read_qrels(qrels), [parse_measure("MAP")], level=level)


@pytest.mark.parametrize("score", ["nan", "NaN", "inf", "-inf", "1e39", "high", "0x1p3"])
def test_non_finite_or_non_numeric_scores_are_input_errors(tmp_path, score):
    run = write(tmp_path / "run.txt", ["1 Q0 a 1 3 t", f"1 Q0 b 2 {score} t"])
    with pytest.raises(InputError, match=rf"run.txt:2: score '{score}' is not a "):
        read_run(run)


def tied_case(seed: int):
    """SPLADE-sized integer scores (10^4 to 10^6) with many ties, and graded qrels."""
    rng = random.Random(seed)
    docs = [f"{rng.randrange(10**7)}" for _ in range(400)]
    qrels, run = [], {}
    for q in range(30):
        judged = rng.sample(docs, 40)
        qrels += [f"{q} 0 {d} {rng.choice([0, 1, 2, 3])}" for d in judged]
        levels = [rng.randrange(10**4, 10**6) for _ in range(6)]
        hits = [(d, float(rng.choice(levels))) for d in rng.sample(docs, 120)]
        run[str(q)] = sorted(hits, key=lambda h: (-h[1], h[0]))  # ties by document id ascending
    return qrels, run


def old_style_lines(run):
    """How search used to write: ties by id ascending, lowered by 1e-6 per tied position."""
    lines = []
    for qid, hits in run.items():
        previous, tied = None, 0
        for rank, (docid, score) in enumerate(hits, start=1):
            tied = tied + 1 if score == previous else 0
            previous = score
            lines.append(f"{qid} Q0 {docid} {rank} {score - tied * 1e-6:.6f} t")
    return lines


FLAGS = ["-c", "-l", "2", "-m", "map", "-m", "ndcg_cut.10", "-m", "recall.100", "-m", "P.10"]
NAMES = {"MAP": "map", "nDCG@10": "ndcg_cut_10", "R@100": "recall_100", "P@10": "P_10"}


def ours(run_path, qrels_path):
    means, _ = evaluate(read_run(run_path), read_qrels(qrels_path), [parse_measure(m) for m in NAMES], 2)
    return {k: round(v, 4) for k, v in means.items()}


def test_tied_splade_sized_scores_follow_trec_eval_float32(tmp_path, trec_eval_binary):
    qrels_lines, run = tied_case(11)
    qrels = write(tmp_path / "qrels", qrels_lines)
    old = write(tmp_path / "old.txt", old_style_lines(run))
    official = trec_eval(trec_eval_binary, FLAGS, qrels, old)
    assert ours(old, qrels) == {k: official[v] for k, v in NAMES.items()}
    # The case bites: read as 64-bit floats, the 1e-6 offsets would keep the file's order instead.
    as_double = {}
    for line in old.read_text().splitlines():
        qid, _, docid, _, score, _ = line.split()
        as_double.setdefault(qid, {})[docid] = float(score)
    assert max(max(hits.values()) for hits in as_double.values()) < 2 ** 24
    file_order = {q: {d: -i for i, d in enumerate(sorted(h, key=lambda d: -h[d]))} for q, h in as_double.items()}
    naive, _ = evaluate(file_order, read_qrels(qrels), [parse_measure("MAP")], 2)
    assert round(naive["MAP"], 4) != official["map"]


def test_search_run_files_keep_their_order_under_trec_eval(tmp_path, trec_eval_binary):
    """format_run writes hits in trec_eval's order, so trec_eval on the file equals trec_eval on
    the same file with its scores replaced by strictly decreasing ones (the file's order)."""
    qrels_lines, run = tied_case(12)
    qrels = write(tmp_path / "qrels", qrels_lines)
    written = tmp_path / "run.txt"
    written.write_bytes(format_run(run, tag="t"))
    ranked = [line.split() for line in written.read_text().splitlines()]
    by_rank = write(tmp_path / "by-rank.txt", [f"{q} Q0 {d} {r} {1000 - int(r)} t" for q, _, d, r, _, _ in ranked])
    official = trec_eval(trec_eval_binary, FLAGS, qrels, written)
    assert trec_eval(trec_eval_binary, FLAGS, qrels, by_rank) == official
    assert ours(written, qrels) == {k: official[v] for k, v in NAMES.items()}
    assert all(float(score) == int(float(score)) for *_, score, _ in ranked)  # exact integer scores


def test_scores_beyond_2_24_tie_as_float32(tmp_path, trec_eval_binary):
    # 16777217 and 16777216 are one float32; trec_eval ranks them by document id descending.
    qrels = write(tmp_path / "qrels", ["1 0 a 1", "1 0 b 0", "1 0 c 0"])
    run = write(tmp_path / "run.txt", ["1 Q0 a 1 16777217 t", "1 Q0 b 2 16777216 t", "1 Q0 c 3 16777215 t"])
    official = trec_eval(trec_eval_binary, ["-m", "recip_rank"], qrels, run)
    means, _ = evaluate(read_run(run), read_qrels(qrels), [parse_measure("MRR")])
    assert official["recip_rank"] == 0.5 and round(means["MRR"], 4) == 0.5


DL_POOL = "msmarco-passage-dl-pool"
OFFICIAL = [  # run, qrels, nDCG@10, R@100 at level 2 (SOURCE.md; Pyserini 2CR for nDCG@10)
    ("run.msmarco-passage.splade-pp-ed.dl19.top100.txt", "dl19.tsv", 0.7308, 0.6390),
    ("run.msmarco-passage.splade-pp-ed.dl20.top100.txt", "dl20.tsv", 0.7197, 0.7653),
    ("run.msmarco-passage.bm25.dl19.top100.txt", "dl19.tsv", 0.5058, 0.4910),
    ("run.msmarco-passage.bm25.dl20.top100.txt", "dl20.tsv", 0.4796, 0.5599),
]


@pytest.mark.parametrize("run_name, qrels_name, ndcg, recall", OFFICIAL)
def test_official_trec_dl_runs_give_the_published_figures(run_name, qrels_name, ndcg, recall):
    run = dataset(DL_POOL) / "runs" / run_name
    qrels = dataset("msmarco-passage-topics") / "qrels" / qrels_name
    notes = []
    result = evaluate_files(run, qrels, ["nDCG@10", "R@100"], warn=notes.append)
    assert result["preset"] == "dl" and result["relevance_level"] == 2
    assert {k: round(v, 4) for k, v in result["metrics"].items()} == {"nDCG@10": ndcg, "R@100": recall}


def test_run_matching_no_qrels_is_an_error(tmp_path):
    qrels = write(tmp_path / "qrels.tsv", ["1\ta\t1"])
    run = write(tmp_path / "run.txt", ["7 Q0 a 1 1 t"])
    with pytest.raises(InputError, match=r"run.txt: none of its 1 query ids appears in the qrels"):
        evaluate_files(run, qrels)


def test_evaluate_files_reports_preset_and_notes(tmp_path):
    qrels = write(tmp_path / "dl19.tsv", ["1\ta\t1", "1\tb\t2", "2\tc\t3"])
    run = write(tmp_path / "run.txt", ["1 Q0 a 1 2 t", "1 Q0 b 2 1 t"])
    notes = []
    result = evaluate_files(run, qrels, warn=notes.append, preset="dl")
    assert result["preset"] == "dl" and result["relevance_level"] == 2 and result["queries"] == 2
    assert list(result["metrics"]) == ["nDCG@10", "MAP", "R@1000"]
    assert round(result["metrics"]["MAP"], 4) == 0.25  # b (grade 2) at rank 2 for query 1; query 2 scores 0
    assert any("missing from the run" in n for n in notes)
    json.dumps(result)
