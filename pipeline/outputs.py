"""Who may write an output, and what the tool may replace: locks and ownership records.

Two rules hold for every command that writes (encode, index, search, fuse, train):

* One writer per output. A lock file beside the output, ``.NAME.splade-pipeline.lock``, is held
  with ``flock`` for the whole stage and names its owner (pid, host, command). The kernel drops the
  lock when its process dies, so a lock left by a killed run is stale and simply taken over; a
  second live writer stops at once with one line naming the lock and its owner, instead of both
  "succeeding" with one of them returning the other's result.
* Replace only what the tool can prove it wrote. A folder output is ours when it holds our record
  (``plan.json``/``manifest.json``, ``splade-pipeline.json``, ``training.json``) and nothing but
  the files such a folder is made of; a file output (a run) is ours when the record beside it,
  ``.NAME.splade-pipeline.json``, says so and its checksum still matches. Anything else is refused
  with a message saying what is there, and no message suggests an option that would delete it.
"""

from __future__ import annotations

import errno
import fcntl
import functools
import hashlib
import inspect
import json
import os
import shutil
import socket
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

from pipeline import __version__
from pipeline.errors import InputError, OutputBusy, PipelineError

LOCK_SUFFIX = ".splade-pipeline.lock"
RECORD_SUFFIX = ".splade-pipeline.json"
CREATED_BY = f"splade-pipeline {__version__}"


def absolute(path: Path) -> Path:
    """An absolute path without resolving links, so that ``.`` and ``..`` have a name and a parent."""
    return Path(os.path.abspath(path))


def resolved(path: Path) -> Path:
    """The path an output will really have once its missing folders exist: every command calls this
    on its output before checking what is there.

    ``nothere/../victim.txt`` does not exist as typed until ``nothere/`` is made, so a check on the
    typed path finds nothing and the write then lands on ``victim.txt``; through a link,
    ``link/..`` is the link target's parent, not the folder holding the link. A path with a ``..``
    is therefore resolved (links in its existing part followed, the rest taken as folders to be
    made); its last name is kept, so an output that is itself a link is still checked as one. A
    path without ``..`` already means what the system will make of it and is returned as typed,
    so messages name it the way the user wrote it.
    """
    path = Path(path)
    if ".." not in path.parts:
        return path
    if path.name in ("", ".", ".."):
        return Path(os.path.realpath(path))
    return Path(os.path.realpath(path.parent)) / path.name


def write_atomic(path: Path, data: bytes, temp_dir: Path | None = None) -> None:
    """Write to a temporary file, sync, then rename: readers see all or nothing.

    ``temp_dir`` (same file system) keeps a killed writer's leftovers out of ``path``'s folder,
    which matters for ``vectors/``: Anserini reads every file there, hidden ones included. A failed
    write (a full disk, a missing permission) removes its temporary file and names the path.
    """
    path = Path(path)
    folder = Path(temp_dir or path.parent)
    temp = folder / f".{path.name}.{os.getpid()}.tmp"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        folder.mkdir(parents=True, exist_ok=True)
        with open(temp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException as exc:  # a full disk, a permission, or an interrupt: no temporary file stays
        try:
            temp.unlink(missing_ok=True)
        except OSError:
            pass
        if not isinstance(exc, OSError):
            raise
        where = exc.filename if exc.filename and str(exc.filename) != str(temp) else path
        raise PipelineError(f"{where}: cannot write: {exc.strerror or exc}") from None


# -- locks ---------------------------------------------------------------------------------------

_HELD: dict[Path, int] = {}  # locks this process holds, by lock file


def lock_path(target: Path) -> Path:
    target = absolute(resolved(target))
    return target.parent / f".{target.name}{LOCK_SUFFIX}"


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, someone else's
        return True
    return True


def _owner(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text())
        return value if isinstance(value, dict) else {}
    except (OSError, ValueError):
        return {}


def _describe_owner(owner: dict[str, Any]) -> str:
    if not owner.get("pid"):
        return "another process"
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(owner.get("started", 0)))
    command = f" ({owner['command']})" if owner.get("command") else ""
    return f"pid {owner['pid']} on {owner.get('host', '?')}{command}, since {since}"


def _open_lock(path: Path, target: Path) -> int:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except (FileExistsError, NotADirectoryError):
        blocker = next((p for p in reversed(path.parents) if p.exists() and not p.is_dir()), path.parent)
        raise InputError(blocker, f"is a file, not a folder, so {target} cannot be written there") from None
    except OSError as exc:
        raise PipelineError(f"{exc.filename or path}: cannot create the lock file: {exc.strerror}") from None


@contextmanager
def locked(target: Path, command: str = "", shared: bool = False) -> Iterator[Path]:
    """Hold the lock of ``target`` (exclusive for a writer, shared for a reader) while the block runs.

    The lock file stays valid only while it is the file at its path: after taking the lock we
    check the inode, so a writer that removed the file on release cannot leave two holders.
    """
    path = lock_path(target)
    if path in _HELD:  # this process already holds it (a stage calling a helper that locks too)
        _HELD[path] += 1
        try:
            yield path
        finally:
            _HELD[path] -= 1
        return
    while True:
        try:
            fd = _open_lock(path, target)
        except PipelineError:
            if not shared:
                raise
            yield path  # a reader beside a read-only input (a shared dataset) goes without
            return
        try:
            fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise PipelineError(f"{path}: cannot lock: {exc.strerror}") from None
            owner = _owner(path)
            doing = "written" if not shared else "written or read"
            raise OutputBusy(f"{target} is being {doing} by {_describe_owner(owner)}; lock {path} "
                             "(try again when it has finished)") from None
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)  # the holder before us removed it; take the new one
    _HELD[path] = 1
    try:
        if not shared:
            owner = {"pid": os.getpid(), "host": socket.gethostname(), "command": command,
                     "started": time.time()}
            os.ftruncate(fd, 0)
            os.write(fd, json.dumps(owner).encode())
        yield path
    finally:
        del _HELD[path]
        _release(fd, path, shared)


def locking(argument: str, command: str):
    """Decorator: hold the lock of the output named by parameter ``argument`` for the whole call."""
    def wrap(function):
        signature = inspect.signature(function)

        @functools.wraps(function)
        def locked_call(*args, **kwargs):
            target = signature.bind(*args, **kwargs).arguments[argument]
            with locked(Path(target), command):
                return function(*args, **kwargs)
        return locked_call
    return wrap


def _release(fd: int, path: Path, shared: bool) -> None:
    """Remove the lock file when no one else holds it, then let go."""
    try:
        if shared:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # only the last reader removes it
        if os.stat(path).st_ino == os.fstat(fd).st_ino:
            os.unlink(path)
    except OSError:
        pass
    finally:
        os.close(fd)


def clean_stale(parent: Path, pattern: str, pid_of: Callable[[str], int | None]) -> list[Path]:
    """Remove leftovers (``.NAME.building-PID`` folders) whose process is gone."""
    removed = []
    if not parent.is_dir():
        return removed
    for path in parent.glob(pattern):
        pid = pid_of(path.name)
        if pid is not None and pid != os.getpid() and not pid_alive(pid):
            shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)
            removed.append(path)
    return removed


# -- what is in a folder -------------------------------------------------------------------------

def entries(folder: Path) -> list[str]:
    """Every file and folder under ``folder``, relative, folders ending in ``/``."""
    found = []
    for path in sorted(Path(folder).rglob("*")):
        relative = path.relative_to(folder).as_posix()
        found.append(relative + "/" if path.is_dir() and not path.is_symlink() else relative)
    return found


def describe(names: list[str], limit: int = 4) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def foreign(folder: Path, ours: Callable[[str], bool]) -> list[str]:
    """Entries of ``folder`` that are not the tool's own, by name (top-level first)."""
    return [name for name in entries(folder) if not ours(name)]


def refuse_foreign(folder: Path, names: list[str], option: str, what: str) -> PipelineError:
    return PipelineError(f"{folder} holds files splade-pipeline did not write ({describe(names)}); "
                         f"it will not write {what} there: give {option} a new or empty folder")


def check_folder(folder: Path, option: str, what: str, ours: Callable[[str], bool],
                 owned: Callable[[Path], bool]) -> bool:
    """Whether ``folder`` is ours (True), new or empty (False); anything else is refused.

    ``ours`` says which names a folder of this kind is made of; ``owned`` whether the folder holds
    our record. A folder with our record but other files too is refused: those files are not ours.
    """
    folder = resolved(folder)
    if not folder.exists() and not folder.is_symlink():
        return False
    if not folder.is_dir():
        raise InputError(folder, f"exists and is not a folder; {option} must be a folder for {what}")
    names = entries(folder)
    if not names:
        return False
    strangers = [name for name in names if not ours(name)]
    if strangers or not owned(folder):
        raise refuse_foreign(folder, strangers or names, option, what)
    return True


def remove_owned(folder: Path, ours: Callable[[str], bool], keep_folder: bool = False) -> None:
    """Delete the tool's own entries of ``folder`` (deepest first); refuse if anything else is there."""
    folder = Path(folder)
    strangers = foreign(folder, ours)
    if strangers:
        raise PipelineError(f"{folder} holds files splade-pipeline did not write ({describe(strangers)}); "
                            "not removing it")
    for name in reversed(entries(folder)):
        path = folder / name.rstrip("/")
        try:
            path.rmdir() if name.endswith("/") else path.unlink()
        except OSError as exc:
            raise PipelineError(f"{path}: cannot remove: {exc.strerror}") from None
    if not keep_folder:
        try:
            folder.rmdir()
        except OSError as exc:
            raise PipelineError(f"{folder}: cannot remove: {exc.strerror}") from None


# -- file outputs and their records --------------------------------------------------------------

def record_path(output: Path) -> Path:
    output = absolute(resolved(output))
    return output.parent / f".{output.name}{RECORD_SUFFIX}"


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def value_sha256(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


def read_record(output: Path) -> dict[str, Any] | None:
    path = record_path(output)
    if not path.is_file():
        return None
    value = _owner(path)
    return value if str(value.get("created_by", "")).startswith("splade-pipeline") else None


def write_record(output: Path, kind: str, inputs: dict[str, Any], sha256: str | None) -> None:
    record = {"created_by": CREATED_BY, "kind": kind, "inputs": inputs, "sha256": sha256}
    write_atomic(record_path(output), (json.dumps(record, indent=2, sort_keys=True) + "\n").encode())


@contextmanager
def claimed(output: Path, kind: str, inputs: dict[str, Any]) -> Iterator[None]:
    """Record ``output`` as ours before writing it, and its checksum once written.

    The record comes first so that a run killed mid-way leaves a file the tool can prove is its
    own (and redoes); a write that fails before the file exists takes its record back with it.
    """
    output = Path(output)
    write_record(output, kind, inputs, None)
    try:
        yield
    except BaseException:
        if not output.exists():
            record_path(output).unlink(missing_ok=True)
        raise
    write_record(output, kind, inputs, file_sha256(output))


def file_state(output: Path, option: str) -> tuple[str, dict[str, Any] | None]:
    """``new``, ``ours`` (complete, checksum matches), ``unfinished`` (our record, no checksum yet)
    or refuse: a file the tool did not write, or one changed since."""
    output = resolved(output)
    if not output.exists() and not output.is_symlink():
        return "new", read_record(output)
    if output.is_dir() or not output.is_file():
        raise InputError(output, f"exists and is not a file; {option} must name a file")
    record = read_record(output)
    if record is None:
        raise PipelineError(f"{output} exists and was not written by splade-pipeline (no record "
                            f"{record_path(output).name}); give {option} another file name")
    if record.get("sha256") is None:
        return "unfinished", record
    if file_sha256(output) != record["sha256"]:
        raise PipelineError(f"{output} has changed since splade-pipeline wrote it (sha256 differs from "
                            f"{record_path(output).name}); give {option} another file name")
    return "ours", record


def differences(recorded: dict[str, Any], wanted: dict[str, Any]) -> list[str]:
    """``name old -> new`` for each input that differs (long values shown by a short digest)."""
    def short(value: Any) -> str:
        text = repr(value)
        return text if len(text) <= 60 else text[:57] + "..."
    return [f"{name} {short(recorded.get(name))} -> {short(value)}" for name, value in wanted.items()
            if recorded.get(name) != value]


def writable_parent(path: Path, option: str) -> None:
    """Make the parent folder of an output file, naming the path when that cannot be done."""
    parent = absolute(resolved(path)).parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise InputError(parent, f"is a file, so {option} {path} cannot be written inside it") from None
    except NotADirectoryError:
        raise InputError(path, f"a part of the path is a file, so {option} cannot be written") from None
    except OSError as exc:
        raise PipelineError(f"{exc.filename or parent}: cannot create folder: {exc.strerror}") from None


def say_stderr(text: str) -> None:
    print(text, file=sys.stderr)
