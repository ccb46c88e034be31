"""Result provenance (bench/common.py): every result file records the commit and whether the tree was clean."""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def load_common():
    spec = importlib.util.spec_from_file_location("bench_common", ROOT / "bench" / "common.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


common = load_common()


def git(folder: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(folder), *args], check=True, capture_output=True, text=True).stdout


@pytest.fixture()
def repo(tmp_path) -> Path:
    folder = tmp_path / "repo"
    folder.mkdir()
    git(folder, "init", "-q")
    (folder / "code.py").write_text("x = 1\n")
    (folder / "bench" / "results").mkdir(parents=True)
    (folder / "bench" / "results" / "old.json").write_text("{}\n")
    git(folder, "add", ".")
    git(folder, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "first")
    return folder


def test_a_clean_checkout_records_its_commit(repo):
    assert common.code_state(repo) == {"commit": git(repo, "rev-parse", "HEAD").strip(), "clean": True,
                                       "dirty_files": []}


def test_changed_and_untracked_files_make_it_dirty_but_result_files_do_not(repo):
    (repo / "bench" / "results" / "old.json").write_text('{"rerun": true}\n')
    (repo / "bench" / "results" / "new.json").write_text("{}\n")
    assert common.code_state(repo)["clean"] is True
    (repo / "code.py").write_text("x = 2\n")
    (repo / "extra.py").write_text("")
    state = common.code_state(repo)
    assert state["clean"] is False and state["dirty_files"] == ["code.py", "extra.py"]
    assert len(state["commit"]) == 40


def test_outside_a_checkout_the_commit_is_unknown(tmp_path):
    state = common.code_state(tmp_path)
    assert state["commit"] is None and state["clean"] is None and state["unknown_because"]


def test_result_files_carry_the_code_state(tmp_path, capsys):
    args = argparse.Namespace(smoke=True, results=tmp_path)
    path = common.write_result("probe", {"figure": 1.5}, args)
    record = json.loads(path.read_text())
    assert path.name == "probe.smoke.json" and record["figure"] == 1.5
    assert record["code"] == common.code_state()
    if (ROOT / ".git").exists():  # a clone (CI's, a contributor's); an unpacked archive has no commit
        assert len(record["code"]["commit"]) == 40 and isinstance(record["code"]["clean"], bool)


def test_a_result_says_when_the_checkout_changed_during_its_run(tmp_path, capsys, monkeypatch):
    """Figures are the code's at the start; a commit made while a long run ran is recorded beside it."""
    started = {"commit": "0" * 40, "clean": True, "dirty_files": []}
    monkeypatch.setattr(common, "STARTED", started)
    path = common.write_result("probe", {"figure": 1.5}, argparse.Namespace(smoke=True, results=tmp_path))
    code = json.loads(path.read_text())["code"]
    assert {key: code[key] for key in started} == started and code["changed_during_run"] == common.code_state()


def test_a_file_the_run_wrote_itself_is_no_change(tmp_path, capsys, monkeypatch):
    """A plot the run wrote under docs/ leaves the checkout dirty at the end, but the code did not change."""
    now = {"commit": "1" * 40, "clean": False, "dirty_files": ["docs/plot.png"]}
    monkeypatch.setattr(common, "code_state", lambda: now)
    monkeypatch.setattr(common, "STARTED", {"commit": "1" * 40, "clean": True, "dirty_files": []})
    assert common.run_code([common.ROOT / "docs" / "plot.png"]) == common.STARTED
    assert common.run_code()["changed_during_run"] == now  # without it, the plot reads as a change
    now["dirty_files"] = ["docs/plot.png", "pipeline/search.py"]
    assert common.run_code([common.ROOT / "docs" / "plot.png"])["changed_during_run"]["dirty_files"] == \
        ["pipeline/search.py"]


def test_own_outputs_when_the_start_state_was_unknown(tmp_path, capsys, monkeypatch):
    """git failed at the start (no dirty list): the run still writes its result."""
    monkeypatch.setattr(common, "STARTED", {"commit": None, "clean": None, "dirty_files": None,
                                            "unknown_because": "timed out"})
    monkeypatch.setattr(common, "code_state", lambda: {"commit": "1" * 40, "clean": False,
                                                       "dirty_files": ["docs/plot.png"]})
    code = common.run_code([common.ROOT / "docs" / "plot.png"])
    assert code["changed_during_run"] == {"commit": "1" * 40, "clean": True, "dirty_files": []}
