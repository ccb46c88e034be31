"""Optional parts of the package: which pip extra each command or option needs, and the one message
that says so.

The core install (``pip install splade-pipeline``) encodes, indexes, searches and evaluates; training,
the service, the int8 backends and Ray come with extras (``[train]``, ``[serve]``, ``[int8]``,
``[ray]``; ``pyproject.toml`` lists them). A user who runs ``splade-pipeline serve`` without
fastapi should read which extra to install, in one line, not an import traceback from deep inside
the command. Modules are looked up without being imported (``importlib.util.find_spec``), so the
check costs nothing when they are there.
"""

from __future__ import annotations

import importlib.util

from pipeline.errors import PipelineError

PACKAGE = "splade-pipeline"

# The top-level modules the code imports directly, per extra (pyproject.toml names their distributions).
EXTRAS: dict[str, tuple[str, ...]] = {
    "train": ("sentence_transformers", "datasets", "accelerate"),
    "serve": ("fastapi", "starlette", "pydantic", "uvicorn", "h11"),
    "int8": ("onnx", "onnxscript", "onnxruntime", "openvino"),
    "ray": ("ray",),
}


class MissingExtra(PipelineError):
    """A command or option whose optional dependencies are not installed."""

    def __init__(self, what: str, extra: str, missing: list[str]):
        self.extra = extra
        self.missing = missing
        super().__init__(f"{what} needs the '{extra}' extra: pip install '{PACKAGE}[{extra}]' "
                         f"(missing: {', '.join(missing)})")


def missing_modules(modules: tuple[str, ...] | list[str]) -> list[str]:
    """The modules of ``modules`` that cannot be imported here (top-level names)."""
    absent = []
    for name in modules:
        try:
            found = importlib.util.find_spec(name)
        except (ImportError, ValueError):  # a broken parent package, or a module without a spec
            found = None
        if found is None:
            absent.append(name)
    return absent


def require(what: str, extra: str, modules: tuple[str, ...] | list[str] | None = None) -> None:
    """Raise ``MissingExtra`` unless ``extra``'s modules (or the subset ``modules``) are installed.

    ``what`` names the command or option for the message, e.g. ``serve`` or ``--backend onnx``.
    """
    absent = missing_modules(EXTRAS[extra] if modules is None else modules)
    if absent:
        raise MissingExtra(what, extra, absent)


def extra_of(module: str) -> str | None:
    """The extra that provides ``module`` (a dotted name is looked up by its top-level package)."""
    top = module.split(".")[0]
    return next((extra for extra, names in EXTRAS.items() if top in names), None)


def explain_missing(command: str, exc: ModuleNotFoundError) -> MissingExtra | None:
    """The one-line error for an import that failed inside ``command``, when an extra provides it.

    The safety net behind ``require``: a code path that imports an optional module without asking
    first still ends in the same message.
    """
    extra = extra_of(exc.name or "")
    return MissingExtra(command, extra, [exc.name.split(".")[0]]) if extra and exc.name else None
