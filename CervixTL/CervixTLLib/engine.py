"""The ``cervixtl`` engine as a separate process, with JSON progress and cancel.

The module never runs the neural network inside Slicer's process: ``cervixtl contour`` and the other engine
commands run as ``PYTHON -m cervixtl ...`` where PYTHON is Slicer's ``PythonSlicer`` launcher inside Slicer and
the current interpreter elsewhere. :class:`EngineProcess` starts a command without waiting; two reader threads
queue its output lines, and :meth:`EngineProcess.poll` (called from a ``qt.QTimer`` in Slicer, from a loop in
tests) returns the progress records without ever blocking, so the GUI stays responsive.
:meth:`EngineProcess.cancel` sends SIGTERM: the engine stops at its next check and renames nothing into place.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

#: Seconds between SIGTERM and SIGKILL for a cancelled process that does not stop.
KILL_AFTER_S = 15.0


class EngineError(RuntimeError):
    """An engine command failed; ``str(exc)`` is one readable line (the engine's own error line)."""

    def __init__(self, message: str, returncode: int | None = None) -> None:
        super().__init__(message)
        self.returncode = returncode


def python_executable() -> str:
    """Interpreter for engine processes: ``$CERVIXTL_PYTHON``, else ``PythonSlicer`` when running inside the
    Slicer application, else ``sys.executable``."""
    override = os.environ.get("CERVIXTL_PYTHON")
    if override:
        return override
    slicer_mod = sys.modules.get("slicer")
    if slicer_mod is not None and hasattr(slicer_mod, "app"):
        found = shutil.which("PythonSlicer")
        if found:
            return found
    return sys.executable


def engine_root() -> Path | None:
    """Folder holding the ``cervixtl`` package (installed beside the scripted modules, or the repository
    root of a source checkout); None when not found next to this module."""
    here = Path(__file__).resolve().parent
    for cand in (here.parent, here.parent.parent, here.parent.parent.parent):
        if (cand / "cervixtl" / "__init__.py").is_file():
            return cand
    return None


def engine_environment(extra: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for engine processes: ours + engine folder first on ``PYTHONPATH`` + unbuffered output."""
    env = dict(os.environ)
    root = engine_root()
    if root is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(root)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


def engine_argv(args: Sequence[str]) -> list[str]:
    """Full argv of ``cervixtl ARGS``."""
    return [python_executable(), "-m", "cervixtl", *[str(a) for a in args]]


def parse_progress(line: str) -> dict[str, Any] | None:
    """The ``{"stage", "fraction", "message", ...}`` record printed by ``--progress json``, or None for any
    other line."""
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


def error_line(stderr_lines: Sequence[str], returncode: int | None) -> str:
    """The readable one-line reason of a failed command: the engine's last ``cervixtl: error: ...`` line, else
    the last non-progress stderr line, else the exit status."""
    plain = [ln.strip() for ln in stderr_lines if ln.strip() and parse_progress(ln) is None]
    for ln in reversed(plain):
        if "error" in ln.lower():
            return ln
    if plain:
        return plain[-1]
    return f"the engine stopped with exit status {returncode}"


def run_engine(args: Sequence[str], *, timeout_s: float = 600.0) -> str:
    """Run ``cervixtl ARGS`` to the end (for quick commands) and return its stdout.

    Raises:
        EngineError: non-zero exit (message = the engine's error line) or time-out.
    """
    try:
        res = subprocess.run(engine_argv(args), capture_output=True, text=True, timeout=timeout_s,
                             env=engine_environment())
    except subprocess.TimeoutExpired:
        raise EngineError(f"cervixtl {' '.join(map(str, args[:2]))} did not finish within {timeout_s:.0f} s") from None
    except OSError as exc:
        raise EngineError(f"cannot start the engine ({python_executable()}): {exc}") from None
    if res.returncode != 0:
        raise EngineError(error_line(res.stderr.splitlines(), res.returncode), res.returncode)
    return res.stdout


def run_engine_json(args: Sequence[str], *, timeout_s: float = 600.0) -> Any:
    """:func:`run_engine` and parse stdout as JSON (the command must be given ``--json``)."""
    out = run_engine(args, timeout_s=timeout_s)
    try:
        return json.loads(out)
    except ValueError:
        raise EngineError(f"cervixtl {' '.join(map(str, args[:2]))} printed no JSON") from None


@dataclass
class EngineResult:
    """Outcome of a finished :class:`EngineProcess`."""

    returncode: int
    cancelled: bool
    stdout: str
    error: str = ""
    progress: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when the command succeeded (exit 0, not cancelled)."""
        return self.returncode == 0 and not self.cancelled


class EngineProcess:
    """A running ``cervixtl`` command that the GUI polls (never waits on)."""

    def __init__(self, args: Sequence[str], env: dict[str, str] | None = None) -> None:
        self.args = [str(a) for a in args]
        self.cancelled = False
        self._stdout: list[str] = []
        self._stderr: list[str] = []
        self._queue: queue.Queue[tuple[str, str]] = queue.Queue()
        self._progress: list[dict[str, Any]] = []
        self._terminated_at: float | None = None
        try:
            self._proc = subprocess.Popen(engine_argv(self.args), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                          stdin=subprocess.DEVNULL, text=True, bufsize=1,
                                          env=engine_environment(env))
        except OSError as exc:
            raise EngineError(f"cannot start the engine ({python_executable()}): {exc}") from None
        self._threads = [threading.Thread(target=self._reader, args=(self._proc.stdout, "out"), daemon=True),
                         threading.Thread(target=self._reader, args=(self._proc.stderr, "err"), daemon=True)]
        for t in self._threads:
            t.start()

    def _reader(self, stream: Any, kind: str) -> None:
        for line in iter(stream.readline, ""):
            self._queue.put((kind, line))
        stream.close()

    def poll(self) -> list[dict[str, Any]]:
        """New progress records since the last call (never blocks). Kills a cancelled process that ignored
        SIGTERM for :data:`KILL_AFTER_S` seconds."""
        new: list[dict[str, Any]] = []
        while True:
            try:
                kind, line = self._queue.get_nowait()
            except queue.Empty:
                break
            if kind == "out":
                self._stdout.append(line)
                continue
            rec = parse_progress(line)
            if rec is None:
                self._stderr.append(line.rstrip("\n"))
            else:
                new.append(rec)
        self._progress.extend(new)
        if (self._terminated_at is not None and self._proc.poll() is None
                and time.monotonic() - self._terminated_at > KILL_AFTER_S):
            self._proc.kill()
        return new

    @property
    def running(self) -> bool:
        """True until the process has exited and all its output has been read."""
        return self._proc.poll() is None or any(t.is_alive() for t in self._threads) or not self._queue.empty()

    def cancel(self) -> None:
        """Ask the engine to stop (SIGTERM); it writes no output file."""
        self.cancelled = True
        if self._proc.poll() is None:
            self._proc.terminate()
            self._terminated_at = time.monotonic()

    def result(self) -> EngineResult:
        """The outcome; call once :attr:`running` is False (or it waits for the end)."""
        self._proc.wait()
        for t in self._threads:
            t.join()
        self.poll()
        rc = int(self._proc.returncode)
        err = "" if rc == 0 else ("cancelled" if self.cancelled else error_line(self._stderr, rc))
        return EngineResult(rc, self.cancelled, "".join(self._stdout), err, list(self._progress))

    def wait(self, timeout_s: float = 600.0, poll_s: float = 0.05) -> EngineResult:
        """Poll until the end (tests / scripts); cancel and raise :class:`EngineError` after ``timeout_s``."""
        t0 = time.monotonic()
        while self.running:
            self.poll()
            if time.monotonic() - t0 > timeout_s:
                self.cancel()
                self._proc.wait()
                raise EngineError(f"cervixtl {' '.join(self.args[:1])} did not finish within {timeout_s:.0f} s")
            time.sleep(poll_s)
        return self.result()


def contour_args(ct_path: str | os.PathLike, out_path: str | os.PathLike, *, model: str | None = None,
                 device: str = "auto", fast: bool = False, ptv_mm: float | Sequence[float] | None = None,
                 models_dir: str | os.PathLike | None = None, summary_path: str | os.PathLike | None = None,
                 threads: int | None = None) -> list[str]:
    """Arguments of ``cervixtl contour CT OUT --progress json ...`` (see the shared CLI contract)."""
    from .geometry import format_margin

    args = ["contour", str(ct_path), str(out_path), "--progress", "json", "--device", device or "auto"]
    if model:
        args += ["--model", model]
    if fast:
        args.append("--fast")
    if ptv_mm is not None:
        args += ["--ptv-mm", format_margin(ptv_mm)]
    if models_dir:
        args += ["--models-dir", str(models_dir)]
    if summary_path:
        args += ["--summary", str(summary_path)]
    if threads:
        args += ["--threads", str(int(threads))]
    return args
