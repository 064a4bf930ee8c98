"""The ONE engine runner of both CervixTL modules: every ``cervixtl`` command runs as a separate process.

* :class:`EngineProcess` / :func:`run_engine` come from :mod:`cervixtl.runner` (Qt-free; process trees killed on
  cancel, no console window on Windows, ``PythonSlicer`` inside Slicer).
* :class:`TaskQueue` runs the modules' commands one after the other in the background; the widgets call
  :meth:`TaskQueue.poll` from a ``qt.QTimer``, so no click ever blocks the GUI on an engine process (each one
  imports the engine, seconds with torch). Long jobs (contouring, fine-tuning, comparison) are EngineProcess
  objects of their own, polled by the same timers.
* :func:`contour_args` builds the contouring command.

CervixTLTraining imports this module (``from CervixTLLib import engine``); it depends on CervixTL through its
module class's ``dependencies``.
"""

from __future__ import annotations

import collections
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from cervixtl.runner import EngineError, EngineProcess, EngineResult, engine_env, engine_python, kill_all, run_engine  # noqa: F401

__all__ = ["EngineError", "EngineProcess", "EngineResult", "Task", "TaskQueue", "contour_args", "engine_env",
           "engine_python", "kill_all", "run_engine"]


@dataclass
class Task:
    """One queued engine command: ``cervixtl ARGS``; ``on_done(EngineResult)`` is called when it ends."""

    args: list[str]
    on_done: Callable[[EngineResult], Any]
    message: str = ""
    env: dict[str, str] | None = None
    script: str | None = None
    process: EngineProcess | None = None


class TaskQueue:
    """Engine commands run in the background, one at a time, in the order they were submitted.

    Args:
        env: extra environment variables of every command (e.g. ``CERVIXTL_CASES_DIR``).
    """

    def __init__(self, env: dict[str, str] | None = None) -> None:
        self.env = dict(env or {})
        self.current: Task | None = None
        self._pending: collections.deque[Task] = collections.deque()

    def submit(self, args: Sequence[str], on_done: Callable[[EngineResult], Any], message: str = "", *,
               script: str | os.PathLike | None = None) -> Task:
        """Queue ``cervixtl ARGS`` (or ``PYTHON SCRIPT ARGS``), started by the next :meth:`poll`."""
        task = Task([str(a) for a in args], on_done, message, self.env, str(script) if script else None)
        self._pending.append(task)
        return task

    @property
    def busy(self) -> bool:
        """True while a command runs or waits."""
        return self.current is not None or bool(self._pending)

    @property
    def message(self) -> str:
        """What the running command does (for the status line)."""
        return self.current.message if self.current is not None else ""

    def poll(self) -> bool:
        """Advance: read the running command's output, call ``on_done`` of a finished one, start the next;
        never blocks. Returns :attr:`busy`."""
        cur = self.current
        if cur is not None and cur.process is not None:
            cur.process.poll()
            if not cur.process.running:
                self.current = None
                cur.on_done(cur.process.result())
        if self.current is None and self._pending:
            task = self._pending.popleft()
            self.current = task
            try:
                task.process = EngineProcess(task.args, env=task.env, script=task.script)
            except EngineError as exc:  # the interpreter cannot start: reported like a failed command
                self.current = None
                task.on_done(EngineResult(-1, False, "", str(exc)))
        return self.busy

    def wait(self, timeout_s: float = 600.0) -> None:
        """Poll until the queue is empty (scripts and tests; the GUI uses a timer)."""
        import time

        t0 = time.monotonic()
        while self.poll():
            if time.monotonic() - t0 > timeout_s:
                raise EngineError(f"engine commands did not finish within {timeout_s:.0f} s")
            time.sleep(0.05)

    def kill(self) -> None:
        """Drop the waiting commands and kill the running one (module clean-up)."""
        self._pending.clear()
        if self.current is not None and self.current.process is not None:
            self.current.process.kill()


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
