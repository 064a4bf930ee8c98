"""Progress reporting and cancellation shared by inference and training.

A :class:`Progress` prints JSON lines (``{"stage": ..., "fraction": 0..1, "message": ...}``) or plain text to
stderr, so a GUI running ``cervixtl`` as a separate process can show a bar. :func:`cancel_on_signals` turns
SIGINT/SIGTERM into a flag that long loops poll with :meth:`Progress.check_cancelled`, which raises
:class:`~cervixtl.errors.Cancelled` so that callers clean up (no partial output is ever renamed into place).

Record shape (``Resources/schemas/cervixtl-progress.schema.json``): ``stage``, ``fraction`` (0..1), ``message``,
``elapsed_s`` and stage-specific extras (training: ``epoch``, ``step``, ``loss``, ``val_dice``, ``eta_s``). In
JSON mode the last record of a run is ``{"stage": "done", ...}`` or ``{"stage": "error", "kind": "<one word>",
"message": ...}`` (:func:`finish`, called by the CLI for every command that takes ``--progress``).
"""

from __future__ import annotations

import contextlib
import json
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, TextIO

from .errors import Cancelled

#: Stages that end a run; after one of them :func:`finish` writes nothing more.
FINAL_STAGES = ("done", "error")
_final_written = threading.Event()


class Progress:
    """Reports progress; ``mode`` is ``"none"``, ``"text"`` or ``"json"``."""

    def __init__(self, mode: str = "none", stream: TextIO | None = None,
                 callback: Callable[[dict[str, Any]], None] | None = None, *, echo_warnings: bool = False) -> None:
        self.mode = mode
        self.stream = stream or sys.stderr
        self.callback = callback
        #: In mode "none", :meth:`warn` still writes ``cervixtl: warning: ...`` lines (the CLI sets it).
        self.echo_warnings = echo_warnings
        self.cancel_event = threading.Event()
        self._t0 = time.perf_counter()

    def __call__(self, stage: str, fraction: float, message: str = "", **extra: Any) -> None:
        """Report ``stage`` at ``fraction`` (0..1) with an optional message and extra JSON fields."""
        self.check_cancelled()
        rec = {"stage": stage, "fraction": round(float(min(max(fraction, 0.0), 1.0)), 4), "message": message,
               "elapsed_s": round(time.perf_counter() - self._t0, 3), **extra}
        if self.callback is not None:
            self.callback(rec)
        if self.mode == "json":
            self.stream.write(json.dumps(rec) + "\n")
            self.stream.flush()
            if stage in FINAL_STAGES:
                _final_written.set()
        elif self.mode == "text":
            self.stream.write(f"[{rec['fraction'] * 100:5.1f}%] {stage}: {message}\n")
            self.stream.flush()

    def warn(self, message: str) -> None:
        """Report a warning: a ``{"stage": "warning", "message", "warning"}`` record in JSON mode, otherwise a
        ``cervixtl: warning: ...`` line (in mode "none" only with ``echo_warnings``)."""
        if self.callback is not None:
            self.callback({"stage": "warning", "fraction": 1.0, "message": message, "warning": message})
        if self.mode == "json":
            rec = {"stage": "warning", "fraction": 1.0, "message": message, "warning": message}
            self.stream.write(json.dumps(rec) + "\n")
            self.stream.flush()
        elif self.mode == "text" or self.echo_warnings:
            self.stream.write(f"cervixtl: warning: {message}\n")
            self.stream.flush()

    def cancel(self) -> None:
        """Ask the running operation to stop at its next check."""
        self.cancel_event.set()

    def check_cancelled(self) -> None:
        """Raise :class:`Cancelled` if cancellation was requested."""
        if self.cancel_event.is_set():
            raise Cancelled("stopped on request; no output was written")


NULL_PROGRESS = Progress("none")


def error_record(kind: str, message: str) -> dict[str, Any]:
    """The last progress record of a failed run: ``{"stage": "error", "fraction": 1.0, "kind", "message"}``
    (``kind`` one word: input, geometry, model, cancelled, memory, internal, error, ...)."""
    return {"stage": "error", "fraction": 1.0, "kind": kind, "message": message}


def begin() -> None:
    """Start a new run in this process (the CLI calls it before each command): :func:`finish` writes again."""
    _final_written.clear()


def finish(mode: str, record: dict[str, Any] | None = None, stream: TextIO | None = None) -> None:
    """End a run's JSON progress stream: write ``record`` (default ``{"stage": "done", "fraction": 1.0}``)
    unless a done/error record was already written in this process; text and none modes write nothing."""
    if mode != "json" or _final_written.is_set():
        return
    rec = record or {"stage": "done", "fraction": 1.0, "message": ""}
    out = stream or sys.stderr
    out.write(json.dumps(rec) + "\n")
    out.flush()
    _final_written.set()


@contextlib.contextmanager
def cancel_on_signals(progress: Progress) -> Iterator[Progress]:
    """While active, SIGINT and SIGTERM set ``progress``'s cancel flag instead of killing the process
    (only in the main thread; elsewhere it does nothing)."""
    if threading.current_thread() is not threading.main_thread():
        yield progress
        return
    old = {}

    def handler(signum: int, frame: Any) -> None:  # noqa: ARG001 - the signal-handler signature
        progress.cancel()

    for sig in (signal.SIGINT, signal.SIGTERM):
        old[sig] = signal.getsignal(sig)
        signal.signal(sig, handler)
    try:
        yield progress
    finally:
        for sig, h in old.items():
            signal.signal(sig, h)


@contextlib.contextmanager
def signals_raise_cancelled() -> Iterator[None]:
    """While active, SIGTERM (and SIGINT) raise :class:`Cancelled` in the main thread, so that every ``with``
    block on the way out (temporary folders, atomic writes) cleans up before the process exits with 130;
    a second signal during that clean-up is ignored. Inside, :func:`cancel_on_signals` may take over for
    loops that poll. Does nothing outside the main thread."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}

    def handler(signum: int, frame: Any) -> None:  # noqa: ARG001
        for sig in old:
            signal.signal(sig, signal.SIG_IGN)
        raise Cancelled(f"stopped by {signal.Signals(signum).name}; temporary files removed, nothing written")

    for sig in old:
        signal.signal(sig, handler)
    try:
        yield
    finally:
        for sig, h in old.items():
            signal.signal(sig, h)
