"""The ``cervixtl`` engine as a separate process (see :mod:`cervixtl.runner`), and the contouring arguments.

The module never runs the neural network inside Slicer's process: ``cervixtl contour`` and the other engine
commands run through :mod:`cervixtl.runner`, shared with the CervixTLTraining module: :class:`EngineProcess`
starts a command without waiting and is polled from a ``qt.QTimer``; :func:`run_engine` runs a quick command.
"""

from __future__ import annotations

import os
from typing import Sequence

from cervixtl.runner import EngineError, EngineProcess, EngineResult, run_engine  # noqa: F401 (module's names)


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
