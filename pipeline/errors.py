"""Errors that reach the user as one line and a non-zero exit.

Every stage reports bad input as ``path:line: what is wrong`` so that a user with a
multi-million-line file can jump straight to the culprit.
"""

from __future__ import annotations

from pathlib import Path


class PipelineError(Exception):
    """A failure the user can act on; the CLI prints it as one line and exits 2."""

    exit_code = 2


class InputError(PipelineError):
    """Bad input data, located by file and (where known) line number."""

    def __init__(self, path: str | Path, message: str, line: int | None = None):
        self.path = str(path)
        self.line = line
        self.message = message
        where = f"{self.path}:{line}" if line is not None else self.path
        super().__init__(f"{where}: {message}")


class ConsistencyError(PipelineError):
    """Settings disagree with what an earlier stage recorded (override with --force)."""


class DuplicateId(ConsistencyError):
    """Two records share a document id where documents are read back by id (the forward and text
    stores): a look-up would have to pick one. The caller names the file and line."""

    def __init__(self, docid: str):
        super().__init__(f"duplicate document id {docid[:80]!r}")
        self.docid = docid


class OutputBusy(PipelineError):
    """Another process holds the lock of an output; nothing was written."""
