"""Progress reporting and cancellation shared by inference and training.

A :class:`Progress` prints JSON lines (``{"stage": ..., "fraction": 0..1, "message": ...}``) or plain text to
stderr, so a GUI running ``cervixtl`` as a separate process can show a bar. :func:`cancel_on_signals` turns
SIGINT/SIGTERM into a flag that long loops poll with :meth:`Progress.check_cancelled`, which raises
:class:`~cervixtl.errors.Cancelled` so that callers clean up (no partial output is ever renamed into place).
"""

from __future__ import annotations

import contextlib
import json
import signal
import sys
import threading
import time
from typing import Any, Callable, Iterator, TextIO

from .errors import Cancelled


class Progress:
    """Reports progress; ``mode`` is ``"none"``, ``"text"`` or ``"json"``."""

    def __init__(self, mode: str = "none", stream: TextIO | None = None,
                 callback: Callable[[dict[str, Any]], None] | None = None) -> None:
        self.mode = mode
        self.stream = stream or sys.stderr
        self.callback = callback
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
        elif self.mode == "text":
            self.stream.write(f"[{rec['fraction'] * 100:5.1f}%] {stage}: {message}\n")
            self.stream.flush()

    def cancel(self) -> None:
        """Ask the running operation to stop at its next check."""
        self.cancel_event.set()

    def check_cancelled(self) -> None:
        """Raise :class:`Cancelled` if cancellation was requested."""
        if self.cancel_event.is_set():
            raise Cancelled("stopped on request; no output was written")


NULL_PROGRESS = Progress("none")


@contextlib.contextmanager
def cancel_on_signals(progress: Progress) -> Iterator[Progress]:
    """While active, SIGINT and SIGTERM set ``progress``'s cancel flag instead of killing the process
    (only in the main thread; elsewhere it does nothing)."""
    if threading.current_thread() is not threading.main_thread():
        yield progress
        return
    old = {}

    def handler(signum: int, frame: Any) -> None:  # noqa: ARG001
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
