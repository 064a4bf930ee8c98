"""Run the ``cervixtl`` command line as a separate process: quick commands to the end, long ones polled.

Both Slicer modules (CervixTL, CervixTLTraining) use this module and never run the engine inside Slicer's
process: every engine action is ``PYTHON -m cervixtl ARGS`` where PYTHON is Slicer's ``PythonSlicer`` launcher
inside the Slicer application and the current interpreter elsewhere (:func:`engine_python`).

* :func:`run_engine` runs a quick command (lists, import, export...) to the end and returns its stdout (text, or
  parsed JSON), or raises :class:`EngineError` whose text is one readable line.
* :class:`EngineProcess` starts a long command (contouring, fine-tuning, comparison) without waiting; two
  reader threads queue its output lines and :meth:`EngineProcess.poll` (called from a ``qt.QTimer`` in Slicer,
  from a loop in tests) returns the new ``--progress json`` records without ever blocking, so the GUI stays
  responsive. :meth:`EngineProcess.cancel` sends SIGTERM to the WHOLE process tree (inside Slicer the command
  runs under the ``PythonSlicer`` launcher, which starts the real interpreter as a child and forwards no
  signal); the engine turns it into a clean stop (exit 130, nothing renamed into place); whatever still runs
  after a grace period is killed, tree and all. :func:`kill_all` stops every live process (module clean-up,
  interpreter exit).

Every process starts in its own process group (POSIX) or process group without a console window (Windows, as
``slicer.util.launchConsoleProcess`` does); the tree walking and killing is :mod:`cervixtl.proctree`. The tree is walked with :mod:`psutil` when it is installed (it is
an engine dependency); before the first-use install the POSIX process group (``os.killpg``) or Windows'
``taskkill /T`` does the same.

Standard library (+ optional psutil); Python 3.9+ syntax; it never imports ``slicer``, ``qt`` or the engine's
heavy modules, so it is cheap to import inside Slicer (where the ``cervixtl`` package is installed beside the
scripted modules).
"""

from __future__ import annotations

import atexit
import json
import os
import queue
import shutil
import subprocess
import sys
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from .proctree import descendants, kill_tree, popen_options, psutil_or_none

__all__ = [
    "KILL_AFTER_S", "STDERR_TAIL_LINES", "MAX_LINE_CHARS", "ErrorDescriber", "EngineError", "EngineResult",
    "EngineProcess", "inside_slicer_app", "engine_python", "engine_source_dir", "engine_env", "engine_command",
    "popen_options", "descendants", "kill_tree", "kill_all", "parse_progress_line", "error_line", "run_engine",
]

#: Seconds between SIGTERM and SIGKILL for a cancelled process that does not stop (default of
#: :class:`EngineProcess`).
KILL_AFTER_S = 15.0
#: Non-progress stderr lines an :class:`EngineProcess` keeps for its error message.
STDERR_TAIL_LINES = 200
#: Longest error line returned by :func:`error_line` when it falls back to plain log text.
MAX_LINE_CHARS = 300

#: ``describe(stderr_text, returncode, cancelled)`` -> one readable line; :func:`error_line` by default.
ErrorDescriber = Callable[..., str]


class EngineError(RuntimeError):
    """An engine command failed; ``str(exc)`` is one readable line (for a status bar or a message box).

    Attributes:
        returncode: the exit status, or None when the process did not start or did not finish in time.
        stderr: the command's stderr (empty when it did not run to the end).
    """

    def __init__(self, message: str, returncode: int | None = None, stderr: str = "") -> None:
        super().__init__(message)
        self.returncode = returncode
        self.stderr = stderr


# ============================================================================ interpreter and environment
def inside_slicer_app() -> bool:
    """True when running inside the 3D Slicer application (not merely with the ``slicer-core`` libraries)."""
    mod = sys.modules.get("slicer")
    return mod is not None and hasattr(mod, "app")


def engine_python() -> str:
    """The interpreter of engine processes: ``$CERVIXTL_PYTHON``, else ``PythonSlicer`` inside the Slicer
    application (it sets up Slicer's Python environment; never the Slicer binary itself), else the current
    interpreter.

    Raises:
        EngineError: inside the Slicer application, and no ``PythonSlicer`` on ``PATH`` or in Slicer's
            ``bin`` folder.
    """
    override = os.environ.get("CERVIXTL_PYTHON")
    if override:
        return override
    if inside_slicer_app():
        found = shutil.which("PythonSlicer") or _python_slicer_in_home()
        if found:
            return found
        raise EngineError("cannot find Slicer's Python launcher 'PythonSlicer' (looked on PATH and in Slicer's "
                          "bin folder); reinstall Slicer, or set CERVIXTL_PYTHON to a Python that has the "
                          "CervixTL engine's packages")
    return sys.executable


def _python_slicer_in_home() -> str | None:
    """``<Slicer home>/bin/PythonSlicer[.exe]`` when that file exists."""
    app = getattr(sys.modules.get("slicer"), "app", None)
    home = getattr(app, "slicerHome", None)
    if not home:
        return None
    path = Path(str(home)) / "bin" / ("PythonSlicer.exe" if os.name == "nt" else "PythonSlicer")
    return str(path) if path.is_file() else None


def engine_source_dir() -> Path | None:
    """The folder that holds this ``cervixtl`` package: beside the scripted modules in an installed Slicer
    extension, the repository root in a source checkout; None for an installed distribution (a
    ``site-packages`` folder), which the engine interpreter finds by itself."""
    root = Path(__file__).resolve().parent.parent
    if root.name in ("site-packages", "dist-packages"):
        return None
    return root


def engine_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """Environment of an engine process: ours, :func:`engine_source_dir` first on ``PYTHONPATH``, unbuffered
    output (progress lines arrive as they are written), then ``extra``."""
    env = dict(os.environ)
    src = engine_source_dir()
    if src is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(src)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    env["PYTHONUNBUFFERED"] = "1"
    if extra:
        env.update(extra)
    return env


def engine_command(args: Sequence[str]) -> list[str]:
    """The full argv of ``cervixtl ARGS`` run with :func:`engine_python`."""
    return [engine_python(), "-m", "cervixtl", *[str(a) for a in args]]


def _command_name(args: Sequence[str]) -> str:
    return " ".join(["cervixtl", *[str(a) for a in args[:2]]])


# ============================================================================ process trees
#: Live :class:`EngineProcess` objects (for :func:`kill_all`).
_LIVE: weakref.WeakSet = weakref.WeakSet()


def kill_all() -> int:
    """Kill every engine process tree this interpreter started that still runs (module clean-up, Slicer exit);
    returns how many there were."""
    n = 0
    for proc in list(_LIVE):
        if proc.returncode is None or proc.tree_alive():
            proc.kill()
            n += 1
    return n


atexit.register(kill_all)


# ============================================================================ output lines
def parse_progress_line(line: str) -> dict[str, Any] | None:
    """The ``{"stage", "fraction", "message", ...}`` record printed by ``--progress json``, or None for any
    other line (plain log text, other JSON)."""
    text = line.strip()
    if not text.startswith("{"):
        return None
    try:
        rec = json.loads(text)
    except ValueError:
        return None
    if not isinstance(rec, dict) or "stage" not in rec:
        return None
    return rec


def error_line(stderr: str | Sequence[str], returncode: int | None, cancelled: bool = False) -> str:
    """The readable one-line reason of a failed command, from its stderr (text or lines) and exit status.

    "cancelled" when it was cancelled; else the engine's last ``cervixtl: error: ...`` line, else its last
    ``cervixtl: internal error: ...`` line, else the last log line that mentions an error (e.g. the end of a
    traceback), else the last log line (at most :data:`MAX_LINE_CHARS`), else the exit status. Progress records
    and blank lines are never the reason.
    """
    if cancelled:
        return "cancelled"
    raw = stderr.splitlines() if isinstance(stderr, str) else list(stderr)
    lines = [ln.strip() for ln in raw if ln.strip() and parse_progress_line(ln) is None]
    for prefix in ("cervixtl: error:", "cervixtl: internal error:"):
        found = next((ln for ln in reversed(lines) if ln.startswith(prefix)), None)
        if found:
            return found
    found = next((ln for ln in reversed(lines) if "error" in ln.lower()), None) or (lines[-1] if lines else None)
    if found:
        return found[:MAX_LINE_CHARS]
    return f"the engine stopped with exit status {returncode}"


# ============================================================================ quick commands
def run_engine(args: Sequence[str], *, timeout_s: float = 600.0, parse_json: bool = False,
               env: dict[str, str] | None = None, describe: ErrorDescriber = error_line) -> Any:
    """Run ``cervixtl ARGS`` to the end and return its stdout (text, or parsed JSON when ``parse_json``).

    Args:
        env: extra environment variables (see :func:`engine_env`).
        describe: ``describe(stderr, returncode)`` -> the one-line message of a failure.

    Raises:
        EngineError: non-zero exit (message = ``describe(stderr, returncode)``), a time-out, an interpreter that
            cannot be started, or stdout that is not JSON when JSON was asked for.
    """
    cmd = engine_command(args)
    try:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=engine_env(env),
                                stdin=subprocess.DEVNULL, **popen_options())
    except OSError as exc:
        raise EngineError(f"cannot start the CervixTL engine with {cmd[0]}: {exc.strerror or exc}") from None
    try:
        stdout, stderr = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        kill_tree(proc.pid, force=True)
        proc.communicate()
        raise EngineError(f"{_command_name(args)} did not finish within {timeout_s:.0f} s") from None
    done = subprocess.CompletedProcess(cmd, proc.returncode, stdout, stderr)
    if done.returncode != 0:
        raise EngineError(describe(done.stderr, done.returncode), done.returncode, done.stderr)
    if not parse_json:
        return done.stdout
    try:
        return json.loads(done.stdout)
    except ValueError:
        first = (done.stdout.strip().splitlines() or ["(nothing)"])[0][:200]
        raise EngineError(f"{_command_name(args)} did not print JSON: {first}", done.returncode,
                          done.stderr) from None


# ============================================================================ long commands
@dataclass
class EngineResult:
    """Outcome of a finished :class:`EngineProcess`."""

    returncode: int
    cancelled: bool
    stdout: str
    error: str = ""
    progress: list[dict[str, Any]] = field(default_factory=list)
    log: str = ""

    @property
    def ok(self) -> bool:
        """True when the command succeeded (exit 0, not cancelled)."""
        return self.returncode == 0 and not self.cancelled


class EngineProcess:
    """``cervixtl ARGS`` running in the background, polled (never waited on) by the GUI.

    Attributes:
        args: the engine arguments (without the interpreter).
        records: every progress record received so far, in order.
        stderr_lines: the last :data:`STDERR_TAIL_LINES` non-blank, non-progress stderr lines (log text and the
            engine's one-line error).
        cancelled: True once :meth:`cancel` was called.
        started_at: ``time.monotonic()`` at the start.
    """

    def __init__(self, args: Sequence[str], env: dict[str, str] | None = None, cwd: str | os.PathLike | None = None,
                 *, kill_after_s: float = KILL_AFTER_S, describe: ErrorDescriber = error_line,
                 script: str | os.PathLike | None = None) -> None:
        """Start the process (returns at once).

        Args:
            env: extra environment variables (see :func:`engine_env`).
            kill_after_s: seconds after :meth:`cancel` before a process that ignores SIGTERM is killed.
            describe: ``describe(stderr, returncode, cancelled)`` -> the one-line message of a failure.
            script: run ``PYTHON SCRIPT ARGS`` (a helper script of a module) instead of ``PYTHON -m cervixtl ARGS``.

        Raises:
            EngineError: the interpreter cannot be started.
        """
        self.args = [str(a) for a in args]
        self.records: list[dict[str, Any]] = []
        self.stderr_lines: list[str] = []
        self.cancelled = False
        self.kill_after_s = float(kill_after_s)
        self.describe = describe
        self.started_at = time.monotonic()
        self._stdout: list[str] = []
        self._term_sent_at: float | None = None
        self._tree: list[int] = []
        self._queue: queue.Queue[tuple[str, str]] = queue.Queue()
        cmd = [engine_python(), str(script), *self.args] if script else engine_command(self.args)
        try:
            self._proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                          stdin=subprocess.DEVNULL, text=True, bufsize=1, env=engine_env(env),
                                          cwd=cwd, **popen_options())
        except OSError as exc:
            raise EngineError(f"cannot start the CervixTL engine with {cmd[0]}: {exc.strerror or exc}") from None
        self._threads = [threading.Thread(target=self._pump, args=(self._proc.stdout, "out"), daemon=True),
                         threading.Thread(target=self._pump, args=(self._proc.stderr, "err"), daemon=True)]
        for t in self._threads:
            t.start()
        _LIVE.add(self)

    def _pump(self, stream: IO[str], kind: str) -> None:
        for line in iter(stream.readline, ""):
            self._queue.put((kind, line))
        stream.close()

    @property
    def pid(self) -> int:
        """Process id of the engine process."""
        return self._proc.pid

    @property
    def returncode(self) -> int | None:
        """Exit status once finished (0 ok, 2 user error, 130 cancelled, negative: killed by a signal), else
        None."""
        return self._proc.poll()

    @property
    def running(self) -> bool:
        """True while the process runs or its output has not all been read by :meth:`poll`."""
        return self._proc.poll() is None or any(t.is_alive() for t in self._threads) or not self._queue.empty()

    @property
    def stdout(self) -> str:
        """Everything read from stdout so far (``--json`` results)."""
        return "".join(self._stdout)

    def poll(self) -> list[dict[str, Any]]:
        """The progress records received since the last call (never blocks); other stderr lines go to
        :attr:`stderr_lines`, stdout to :attr:`stdout`. Kills a cancelled process that outlived
        ``kill_after_s``."""
        new: list[dict[str, Any]] = []
        while True:
            try:
                kind, line = self._queue.get_nowait()
            except queue.Empty:
                break
            if kind == "out":
                self._stdout.append(line)
                continue
            rec = parse_progress_line(line)
            if rec is not None:
                new.append(rec)
            elif line.strip():
                self.stderr_lines.append(line.rstrip("\r\n"))
                del self.stderr_lines[:-STDERR_TAIL_LINES]
        self.records.extend(new)
        if (self._term_sent_at is not None and (self._proc.poll() is None or self.tree_alive())
                and time.monotonic() - self._term_sent_at > self.kill_after_s):
            self.kill()
        return new

    def tree_alive(self) -> bool:
        """True while a process of this command's tree (seen at :meth:`cancel` or now) still runs."""
        ps = psutil_or_none()
        if ps is None:
            return self._proc.poll() is None
        for pid in [*self._tree, *descendants(self._proc.pid)]:
            try:
                if ps.Process(pid).status() != ps.STATUS_ZOMBIE:
                    return True
            except ps.Error:
                continue
        return self._proc.poll() is None

    def cancel(self) -> None:
        """Ask the engine to stop: SIGTERM to the launcher AND every process under it (the engine cleans up,
        writes no output and exits 130); what still runs ``kill_after_s`` later is killed (checked by
        :meth:`poll`)."""
        self.cancelled = True
        if self._proc.poll() is None or self.tree_alive():
            self._tree = list(dict.fromkeys([*self._tree, *descendants(self._proc.pid)]))
            kill_tree(self._proc.pid, known=self._tree)
            if self._term_sent_at is None:
                self._term_sent_at = time.monotonic()

    def kill(self) -> None:
        """Kill the whole process tree at once (SIGKILL / TerminateProcess), e.g. when Slicer exits."""
        self.cancelled = True
        self._tree = list(dict.fromkeys([*self._tree, *descendants(self._proc.pid)]))
        kill_tree(self._proc.pid, force=True, known=self._tree)
        if self._term_sent_at is None:
            self._term_sent_at = time.monotonic()

    def wait(self, timeout_s: float | None = None, poll_s: float = 0.05) -> int | None:
        """Poll until the process ended and its output was read (scripts and tests; the GUI uses a timer).

        Returns:
            The exit status, or None when ``timeout_s`` passed first (the process keeps running).
        """
        t0 = time.monotonic()
        while self.running:
            self.poll()
            if timeout_s is not None and time.monotonic() - t0 > timeout_s:
                return None
            time.sleep(poll_s)
        self.poll()
        return self.returncode

    def error_message(self) -> str | None:
        """One readable line when the process failed or was cancelled; None while it runs or on success."""
        rc = self.returncode
        if rc is None or rc == 0:
            return None
        return self.describe("\n".join(self.stderr_lines), rc, self.cancelled)

    def result(self) -> EngineResult:
        """The outcome; waits for the end when the process still runs."""
        self._proc.wait()
        for t in self._threads:
            t.join()
        self.poll()
        rc = int(self._proc.returncode)
        return EngineResult(rc, self.cancelled, self.stdout, self.error_message() or "", list(self.records),
                            "\n".join(self.stderr_lines))
