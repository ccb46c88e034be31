"""The package as users install it: the wheel holds every module and resource, installs into a fresh
environment and runs there; every module pipeline/ imports is declared in pyproject.toml."""

from __future__ import annotations

import ast
import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def requirement_name(requirement: str) -> str:
    """``"uvicorn>=0.30,<1"`` -> ``uvicorn``; names compared as pip does (case, ``-``/``_``/``.``)."""
    name = re.match(r"[A-Za-z0-9._-]+", requirement).group(0)
    return re.sub(r"[-_.]+", "-", name).lower()


def imported_modules(folder: Path) -> set[str]:
    """Top-level names of every absolute import under ``folder`` (at any depth of the code)."""
    found = set()
    for path in folder.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                found.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module.split(".")[0])
    return found


def test_every_module_the_package_imports_is_declared():
    """A direct import must come from a declared distribution, not from whatever a peer pulls in."""
    declared = {requirement_name(r) for r in PYPROJECT["project"]["dependencies"]}
    for requirements in PYPROJECT["project"]["optional-dependencies"].values():
        declared.update(requirement_name(r) for r in requirements)
    distributions = importlib.metadata.packages_distributions()
    undeclared = {}
    for module in imported_modules(ROOT / "pipeline") - set(sys.stdlib_module_names) - {"pipeline"}:
        providers = {requirement_name(d) for d in distributions.get(module, [])}
        assert providers, f"pipeline imports {module!r}, which no installed distribution provides"
        if not providers & declared:
            undeclared[module] = sorted(providers)
    assert not undeclared, f"imported by pipeline/ but not declared in pyproject.toml: {undeclared}"


def test_openai_is_pinned_only_where_pyserini_encode_is_imported():
    """The openai pin works around ``import pyserini.encode``, which only the benchmarks do."""
    assert not any("pyserini.encode" in path.read_text() for path in (ROOT / "pipeline").rglob("*.py"))
    assert any("pyserini.encode" in path.read_text() for path in (ROOT / "bench").rglob("*.py"))
    core = {requirement_name(r) for r in PYPROJECT["project"]["dependencies"]}
    assert "openai" not in core and "openai==2.12.0" in PYPROJECT["project"]["optional-dependencies"]["bench"]


def build_wheel(into: Path) -> Path:
    """``pip wheel --no-deps`` from a copy of the build inputs (the checkout gets no build/ folder)."""
    source = into / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(ROOT / "pipeline", source / "pipeline", ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet",
                    "--wheel-dir", str(into / "dist"), str(source)], check=True, capture_output=True, timeout=300)
    (wheel,) = (into / "dist").glob("splade_pipeline-*.whl")
    return wheel


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    return build_wheel(tmp_path_factory.mktemp("wheel"))


@pytest.mark.slow
def test_wheel_holds_every_module_and_resource(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    wanted = {str(path.relative_to(ROOT)) for path in (ROOT / "pipeline").rglob("*")
              if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc"}
    assert "pipeline/training/modules.py" in wanted
    assert sorted(wanted - names) == []


@pytest.mark.slow
def test_wheel_installs_into_a_fresh_venv_and_runs_outside_the_checkout(wheel, tmp_path):
    """Installed without the checkout on the path: ``demo`` runs end to end and ``train`` imports.

    Dependencies come from this environment's site-packages through a .pth file (offline and cheap);
    the fresh venv's own site-packages, which holds the wheel, comes first.
    """
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--quiet",
                    str(wheel)], check=True, capture_output=True, timeout=300)
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               check=True, capture_output=True, text=True).stdout.strip())
    (site / "zz-dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}

    def run(*args: str, timeout: int = 60) -> str:
        done = subprocess.run(args, cwd=outside, env=env, capture_output=True, text=True, timeout=timeout)
        assert done.returncode == 0, done.stderr[-2000:]
        return done.stdout

    where = run(str(python), "-c", "import pipeline, pipeline.train, pipeline.training.modules; "
                                   "print(pipeline.__file__)")
    assert Path(where.strip()).is_relative_to(site)
    script = venv / "bin" / "splade-pipeline"
    assert "--triples" in run(str(script), "train", "--help")
    demo = run(str(script), "demo", "--threads", "1", timeout=600)
    assert "nDCG@10" in demo and "Query q9" in demo
