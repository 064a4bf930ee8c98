"""Run the ``cervixtl`` engine command line as a separate process.

The Slicer module never imports the training code into Slicer's process: every engine action is a
``python -m cervixtl ...`` sub-process (Slicer's ``PythonSlicer`` inside Slicer, the current interpreter
elsewhere). Quick actions (lists, activate, import...) run synchronously with :func:`run_engine`; long ones
(fine-tuning, comparison) run in a :class:`~CervixTLTrainingLib.process.BackgroundProcess`.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Sequence

from .estimates import friendly_error


class EngineError(RuntimeError):
    """An engine command failed; ``str(exc)`` is one readable line for a message box."""

    def __init__(self, message: str, returncode: int | None = None, stderr: str = "") -> None:
        super().__init__(message)
        self.returncode = returncode
        self.stderr = stderr


def _inside_slicer_app() -> bool:
    """True when running inside the 3D Slicer application (not merely with the ``slicer-core`` libraries)."""
    mod = sys.modules.get("slicer")
    return mod is not None and hasattr(mod, "app")


def engine_python() -> str:
    """The Python interpreter that runs the engine: ``$CERVIXTL_PYTHON``, else ``PythonSlicer`` inside Slicer
    (it sets up Slicer's Python environment), else the current interpreter."""
    override = os.environ.get("CERVIXTL_PYTHON")
    if override:
        return override
    if _inside_slicer_app():
        found = shutil.which("PythonSlicer")
        if found:
            return found
    return sys.executable


def engine_source_dir() -> Path | None:
    """The folder that holds the ``cervixtl`` package: beside the scripted modules in an installed
    extension, or the repository root in a source checkout; None when it is importable anyway."""
    here = Path(__file__).resolve().parent
    for cand in (here.parent, here.parent.parent, here.parent.parent.parent):
        if (cand / "cervixtl" / "__init__.py").is_file():
            return cand
    return None


def engine_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """Environment of an engine process: ours, the engine folder prepended to ``PYTHONPATH``, unbuffered
    output (progress lines arrive as they are written) and ``extra``."""
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


def run_engine(args: Sequence[str], *, timeout_s: float = 300.0, parse_json: bool = False,
               env: dict[str, str] | None = None) -> Any:
    """Run ``cervixtl ARGS`` to completion and return its stdout (text, or parsed JSON when ``parse_json``).

    Raises:
        EngineError: non-zero exit (message = the engine's one-line error, made readable), a timeout, an
            interpreter that cannot be started, or stdout that is not JSON when JSON was asked for.
    """
    cmd = engine_command(args)
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, env=engine_env(env),
                              stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise EngineError(f"'cervixtl {' '.join(map(str, args))}' did not finish within {timeout_s:.0f} s") from None
    except OSError as exc:
        raise EngineError(f"cannot start the CervixTL engine with {cmd[0]}: {exc.strerror or exc}") from None
    if proc.returncode != 0:
        raise EngineError(friendly_error(proc.stderr, proc.returncode), proc.returncode, proc.stderr)
    if not parse_json:
        return proc.stdout
    try:
        return json.loads(proc.stdout)
    except json.JSONDecodeError:
        first = (proc.stdout.strip().splitlines() or ["(nothing)"])[0][:200]
        raise EngineError(f"'cervixtl {' '.join(map(str, args))}' did not print JSON: {first}") from None

