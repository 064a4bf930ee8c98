"""Stop a process and its whole process tree (launcher, interpreter, data-loader workers...).

An engine process starts in its own session / process group (POSIX) or in a new process group without a
console window (Windows), see :func:`popen_options`. The tree is walked with :mod:`psutil` when it is installed
(an engine dependency); before the first-use install the POSIX process group (``os.killpg``) or Windows'
``taskkill /T`` does the same.

Standard library (+ optional psutil); Python 3.9+ syntax; cheap to import inside Slicer.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Sequence
from typing import Any

__all__ = ["psutil_or_none", "popen_options", "descendants", "kill_tree"]


def popen_options(platform: str = os.name) -> dict[str, Any]:
    """Extra :class:`subprocess.Popen` arguments of an engine process: its own session / process group on
    POSIX (so that :func:`kill_tree` reaches the launcher's children); on Windows no console window
    (``CREATE_NO_WINDOW``) and a new process group (``CREATE_NEW_PROCESS_GROUP``)."""
    if platform == "nt":
        return {"creationflags": 0x08000000 | 0x00000200}  # CREATE_NO_WINDOW | CREATE_NEW_PROCESS_GROUP
    return {"start_new_session": True}


def psutil_or_none() -> Any:
    """The psutil module, or None before the first-use install."""
    import importlib

    try:
        return importlib.import_module("psutil")
    except ImportError:  # before the first-use install: process groups / taskkill instead
        return None


def descendants(pid: int) -> list[int]:
    """Process ids of every live descendant of ``pid`` (children, grandchildren...; [] without psutil)."""
    ps = psutil_or_none()
    if ps is None:
        return []
    try:
        return [c.pid for c in ps.Process(pid).children(recursive=True)]
    except ps.Error:
        return []


def kill_tree(pid: int, *, force: bool = False, known: Sequence[int] = ()) -> None:
    """Stop process ``pid``, every descendant of it and the processes ``known`` (descendants seen earlier,
    which may have been orphaned since): SIGTERM (``force``: SIGKILL) to each, and to ``pid``'s process group
    on POSIX (:func:`popen_options` made ``pid`` its leader); on Windows ``TerminateProcess`` through psutil,
    or ``taskkill /T`` without it. Processes already gone are skipped."""
    pids = [pid, *descendants(pid), *known]
    if os.name == "posix":
        with contextlib.suppress(ProcessLookupError, PermissionError, OSError):
            os.killpg(pid, signal.SIGKILL if force else signal.SIGTERM)
    ps = psutil_or_none()
    if ps is None:
        if os.name == "nt":
            subprocess.run(["taskkill", "/PID", str(pid), "/T", "/F"], capture_output=True, check=False,
                           creationflags=0x08000000)
        return
    for p in dict.fromkeys(pids):
        try:
            proc = ps.Process(p)
            proc.kill() if force else proc.terminate()
        except ps.Error:
            pass
