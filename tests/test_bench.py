"""Every benchmark script runs in its smoke mode, so none can rot (figures are not checked).

The smoke runs are separate processes that spend most of their time importing torch, starting a
JVM or Ray, each on one core: two run at a time (``PARALLEL``), started when the first smoke test
needs them, each in a folder of its own (the scripts pick free ports for their servers).
"""

from __future__ import annotations

import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

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
    "ray_encode.py": [],
    "serve.py": [],
    "scale.py": [],
    "train.py": [],
    "two_step.py": [],
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


@pytest.mark.parametrize("script", sorted(SMOKE))
def test_smoke(script: str, smoke_runs) -> None:
    folder, done = smoke_runs[script].result()
    assert done.returncode == 0, done.stderr[-3000:]
    written = list(folder.glob("*.smoke.json"))
    assert written, f"{script} wrote no result file"
    for path in written:
        record = json.loads(path.read_text())
        assert record["smoke"] is True and record["machine"]["cpu"]["cores"] >= 1


def test_every_script_has_a_smoke_run() -> None:
    scripts = {p.name for p in (ROOT / "bench").glob("*.py") if p.name != "common.py" and not p.name.startswith("_")}
    assert scripts == set(SMOKE), f"bench scripts without a smoke run: {sorted(scripts - set(SMOKE))}"
