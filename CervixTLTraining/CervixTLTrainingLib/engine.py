"""Run the ``cervixtl`` engine command line as a separate process, with this module's readable errors.

The Slicer module never imports the training code into Slicer's process: every engine action is a
``python -m cervixtl ...`` sub-process run by :mod:`cervixtl.runner` (shared with the CervixTL module). Quick
actions (lists, activate, import...) run synchronously with :func:`run_engine`; long ones (fine-tuning,
comparison) run in a :class:`BackgroundProcess` that the GUI polls with a timer. Failures read as
:func:`~.estimates.friendly_error` words them (a full disk, a cancel, a geometry mismatch).
"""

from __future__ import annotations

import os
from typing import Any, Sequence

from cervixtl import runner
from cervixtl.runner import EngineError, EngineProcess, engine_env, engine_python  # noqa: F401 (module's names)

from .estimates import friendly_error

#: Seconds between SIGTERM and SIGKILL when a cancelled run does not stop by itself (a training step or a
#: validation pass may be under way when the cancel arrives).
KILL_GRACE_S = 20.0


def run_engine(args: Sequence[str], *, timeout_s: float = 300.0, parse_json: bool = False,
               env: dict[str, str] | None = None) -> Any:
    """:func:`cervixtl.runner.run_engine` whose :class:`EngineError` text is :func:`~.estimates.friendly_error`."""
    return runner.run_engine(args, timeout_s=timeout_s, parse_json=parse_json, env=env, describe=friendly_error)


class BackgroundProcess(EngineProcess):
    """``cervixtl ARGS`` running in the background (:class:`cervixtl.runner.EngineProcess`), killed
    :data:`KILL_GRACE_S` after an ignored cancel; :meth:`error_message` is :func:`~.estimates.friendly_error`."""

    def __init__(self, args: Sequence[str], *, env: dict[str, str] | None = None,
                 cwd: str | os.PathLike | None = None) -> None:
        super().__init__(args, env=env, cwd=cwd, kill_after_s=KILL_GRACE_S, describe=friendly_error)
