"""A long-running engine process that the GUI polls with a timer (the GUI never waits on it).

Two reader threads move the process's stdout and stderr lines into queues; :meth:`BackgroundProcess.poll`
(called from a ``qt.QTimer`` in Slicer, from a loop in tests) drains them without blocking and returns the
JSON progress records (``{"stage", "fraction", "message", ...}``) printed by ``cervixtl ... --progress json``.
:meth:`BackgroundProcess.cancel` sends SIGTERM, which the engine turns into a clean stop (no output renamed
into place, the active model untouched); a process that ignores it is killed after a grace period.
"""

from __future__ import annotations

import json
import queue
import subprocess
import threading
import time
from typing import Any, Sequence

from .engine import engine_command, engine_env
from .estimates import friendly_error

#: Seconds between SIGTERM and SIGKILL when a cancelled process does not stop by itself.
KILL_GRACE_S = 20.0
#: Lines of non-JSON stderr kept for error messages.
STDERR_TAIL_LINES = 200


def parse_progress_line(line: str) -> dict[str, Any] | None:
    """The JSON progress record in ``line``, or None when the line is not one (plain log text)."""
    text = line.strip()
    if not text.startswith("{"):
        return None
    try:
        rec = json.loads(text)
    except json.JSONDecodeError:
        return None
    if not isinstance(rec, dict) or "stage" not in rec:
        return None
    return rec


class BackgroundProcess:
    """``cervixtl ARGS`` running in the background.

    Attributes:
        args: the engine arguments (without the interpreter).
        records: every progress record received so far, in order.
        stdout: everything printed on stdout so far (``--json`` results).
        stderr_tail: the last non-JSON stderr lines (log text and the one-line error).
        cancelled: True once :meth:`cancel` was called.
    """

    def __init__(self, args: Sequence[str], *, env: dict[str, str] | None = None,
                 cwd: str | None = None) -> None:
        self.args = [str(a) for a in args]
        self.records: list[dict[str, Any]] = []
        self.stdout = ""
        self.stderr_tail: list[str] = []
        self.cancelled = False
        self.started_at = time.monotonic()
        self._term_sent_at: float | None = None
        self._queue: queue.Queue[tuple[str, str]] = queue.Queue()
        try:
            self._proc = subprocess.Popen(engine_command(self.args), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                          stdin=subprocess.DEVNULL, text=True, bufsize=1, env=engine_env(env),
                                          cwd=cwd)
        except OSError as exc:
            from .engine import EngineError

            raise EngineError(f"cannot start the CervixTL engine: {exc.strerror or exc}") from None
        self._threads = [threading.Thread(target=self._pump, args=(self._proc.stdout, "out"), daemon=True),
                         threading.Thread(target=self._pump, args=(self._proc.stderr, "err"), daemon=True)]
        for t in self._threads:
            t.start()

    def _pump(self, stream: Any, kind: str) -> None:
        for line in iter(stream.readline, ""):
            self._queue.put((kind, line))
        stream.close()

    @property
    def pid(self) -> int:
        """Process id of the engine process."""
        return self._proc.pid

    @property
    def returncode(self) -> int | None:
        """Exit status once finished (0 ok, 2 user error, 130 cancelled), else None."""
        return self._proc.poll()

    @property
    def running(self) -> bool:
        """True while the process runs or its output has not all been read."""
        return self._proc.poll() is None or any(t.is_alive() for t in self._threads) or not self._queue.empty()

    def poll(self) -> list[dict[str, Any]]:
        """Drain the output received since the last call (never blocks); returns the new progress records.

        Also escalates a cancel to SIGKILL when the process outlived :data:`KILL_GRACE_S`.
        """
        new: list[dict[str, Any]] = []
        while True:
            try:
                kind, line = self._queue.get_nowait()
            except queue.Empty:
                break
            if kind == "out":
                self.stdout += line
                continue
            rec = parse_progress_line(line)
            if rec is None:
                if line.strip():
                    self.stderr_tail.append(line.rstrip("\n"))
                    del self.stderr_tail[:-STDERR_TAIL_LINES]
            else:
                new.append(rec)
        self.records.extend(new)
        if (self._term_sent_at is not None and self._proc.poll() is None
                and time.monotonic() - self._term_sent_at > KILL_GRACE_S):
            self._proc.kill()
        return new

    def cancel(self) -> None:
        """Ask the engine to stop (SIGTERM: it cleans up and exits 130); killed after a grace period."""
        self.cancelled = True
        if self._proc.poll() is None:
            self._proc.terminate()
            self._term_sent_at = time.monotonic()

    def wait(self, timeout_s: float | None = None, interval_s: float = 0.1) -> int | None:
        """Poll until finished or ``timeout_s`` passed (for tests and scripts; the GUI uses a timer)."""
        t0 = time.monotonic()
        while self.running:
            self.poll()
            if timeout_s is not None and time.monotonic() - t0 > timeout_s:
                return None
            time.sleep(interval_s)
        self.poll()
        return self.returncode

    def error_message(self) -> str | None:
        """One readable line when the process failed or was cancelled; None while running or on success."""
        rc = self.returncode
        if rc is None or rc == 0:
            return None
        return friendly_error("\n".join(self.stderr_tail), rc, cancelled=self.cancelled)
