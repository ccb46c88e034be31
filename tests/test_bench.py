"""Every benchmark script runs in its smoke mode, so none can rot (figures are not checked)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# script -> extra arguments for its smoke run (each script owns what --smoke means)
SMOKE: dict[str, list[str]] = {
    "backends_quality.py": [],
    "encode.py": [],
    "gpu.py": [],
    "effectiveness.py": [],
    "exact_reference.py": [],
    "memory.py": [],
    "official.py": [],
    "ray_encode.py": [],
    "serve.py": [],
    "scale.py": [],
    "train.py": [],
}


@pytest.mark.parametrize("script", sorted(SMOKE))
def test_smoke(script: str, tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, str(ROOT / "bench" / script), "--smoke", "--results", str(tmp_path),
                           *SMOKE[script]], capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    written = list(tmp_path.glob("*.smoke.json"))
    assert written, f"{script} wrote no result file"
    for path in written:
        record = json.loads(path.read_text())
        assert record["smoke"] is True and record["machine"]["cpu"]["cores"] >= 1


def test_every_script_has_a_smoke_run() -> None:
    scripts = {p.name for p in (ROOT / "bench").glob("*.py") if p.name != "common.py" and not p.name.startswith("_")}
    assert scripts == set(SMOKE), f"bench scripts without a smoke run: {sorted(scripts - set(SMOKE))}"
