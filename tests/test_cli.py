"""The console commands as users run them: exit codes, one-line errors, JSON output."""

import json
import subprocess
import sys

from pipeline.demo import DEMO_DATA


def cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "pipeline", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd)


def test_run_on_demo_dataset_prints_json(tmp_path):
    done = cli("run", "--dataset", DEMO_DATA, "--name", "demo", "--root", tmp_path, "--json", "--quiet")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["queries"] == 10 and result["documents"] == 40
    assert 0.5 < result["metrics"]["nDCG@10"] <= 1.0
    assert (tmp_path / "runs" / "run.demo.splade-tiny.test.txt").is_file()
    assert "INFO" not in done.stderr and "WARNING" not in done.stderr  # Anserini and JVM logging hidden

    evaluated = cli("evaluate", "--run", result["run"], "--qrels", result["qrels"], "--metrics", "nDCG@10",
                    "MAP", "--json")
    assert evaluated.returncode == 0
    figures = json.loads(evaluated.stdout)["metrics"]
    assert round(figures["nDCG@10"], 6) == round(result["metrics"]["nDCG@10"], 6) and "MAP" in figures


def test_bad_input_is_one_line_and_exit_2(tmp_path):
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text('{"_id": "1", "text": "fine"}\n{"_id": "2", "text": "broken"\n')
    done = cli("encode", "--corpus", corpus, "--output", tmp_path / "out", "--quiet")
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"splade-pipeline encode: error: {corpus}:2: invalid JSON (Expecting ',' delimiter at column 30)"]
    assert not (tmp_path / "out" / "manifest.json").exists()


def test_missing_paths_and_usage_errors(tmp_path):
    done = cli("search", "--index", tmp_path / "nope", "--topics", tmp_path / "q.tsv", "--output", tmp_path / "r")
    assert done.returncode == 2 and "not a Lucene index" in done.stderr and "Traceback" not in done.stderr
    done = cli("evaluate", "--run", tmp_path / "missing.txt", "--qrels", tmp_path / "q.tsv")
    assert done.returncode == 2 and "missing.txt: no such file or directory" in done.stderr
    assert cli("encode", "--corpus", "x").returncode == 2  # argparse: --output is required


def test_demo_explains_top_hits():
    done = cli("demo")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("| dataset | encoder | queries | nDCG@10")
    assert any(line.startswith("Query q9:") for line in lines)
    assert sum(1 for line in lines if line[:3] in ("1. ", "2. ", "3. ")) == 3
