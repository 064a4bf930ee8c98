"""What both module panels show the same way: errors (one line + the engine's log under "Show Details") and
Reload of the Lib packages. Needs ``slicer.util`` only (no Qt import here), so it loads in the test harness."""

from __future__ import annotations

import importlib
import logging
import sys
from collections.abc import Sequence

__all__ = ["showError", "reloadPackages"]


def showError(what: str, exc: BaseException, details: str = "") -> None:
    """A message box with ``what`` and the error's first line (never a stack trace); the engine's whole log
    (``details``: its stderr) is under "Show Details" and in the application log."""
    import slicer.util

    line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    details = details or str(exc).strip()
    logging.error("CervixTL: %s: %s%s", what, line, ("\n" + details) if details and details != line else "")
    if details and details != line:
        slicer.util.errorDisplay(f"{what}:\n\n{line}", windowTitle="CervixTL", detailedText=details)
    else:
        slicer.util.errorDisplay(f"{what}:\n\n{line}", windowTitle="CervixTL")


def reloadPackages(packages: Sequence[str]) -> list[str]:
    """Reload every loaded module of ``packages`` (sub-modules first, then the package), so that the module's
    Reload button picks up edits of its Lib files too (Slicer's own Reload re-reads only the module file).
    Returns the reloaded module names."""
    done = []
    for pkg in packages:
        names = sorted((n for n in list(sys.modules) if n == pkg or n.startswith(pkg + ".")),
                       key=lambda n: (-n.count("."), n))
        for name in names:
            module = sys.modules.get(name)
            if module is not None:
                importlib.reload(module)
                done.append(name)
    return done
