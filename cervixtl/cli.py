"""The ``cervixtl`` command line.

Thin on purpose: each sub-command lives in a module of :mod:`cervixtl.commands` that defines
``register(subparsers)``; this file discovers them, parses arguments, runs the command and maps every
:class:`~cervixtl.errors.CervixTLError` to one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import sys
from collections.abc import Sequence

from . import __version__
from .errors import Cancelled, CervixTLError


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every sub-command found in :mod:`cervixtl.commands`."""
    parser = argparse.ArgumentParser(
        prog="cervixtl",
        description="CervixTL: transfer-learned GTV/CTV/PTV contouring for cervical cancer radiotherapy "
        "(geometry: LPS millimetres; margins in mm as R,L,A,P,S,I).",
    )
    parser.add_argument("--version", action="version", version=f"cervixtl {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    from . import commands

    mods = []
    for info in pkgutil.iter_modules(commands.__path__):
        if info.name.startswith("_"):
            continue
        mod = importlib.import_module(f"{commands.__name__}.{info.name}")
        if hasattr(mod, "register"):
            mods.append(mod)
    for mod in sorted(mods, key=lambda m: (getattr(m, "ORDER", 50), m.__name__)):
        mod.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit status (0 ok, 2 bad input / user error, 130 cancelled).

    With ``--progress json`` the last stderr record is ``{"stage": "done", ...}`` on success or
    ``{"stage": "error", "kind": ..., "message": ...}`` on failure (:func:`cervixtl.progress.finish`).
    """
    from .progress import begin, error_record, finish

    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    import warnings

    from .progress import signals_raise_cancelled

    def one_line_warning(message, category, filename, lineno, file=None, line=None):  # noqa: ANN001, ARG001
        # Ours (raised from cervixtl code) as one line; libraries' deprecation chatter is not for users.
        if "cervixtl" in str(filename) and not issubclass(category, (DeprecationWarning, FutureWarning)):
            print(f"cervixtl: warning: {_one_line(message)}", file=sys.stderr)

    mode = getattr(args, "progress", "none") or "none"
    begin()

    def fail(kind: str, message: str, rc: int, line: str) -> int:
        print(line, file=sys.stderr)
        finish(mode, error_record(kind, message))
        return rc

    try:
        with signals_raise_cancelled(), warnings.catch_warnings():
            warnings.showwarning = one_line_warning
            rc = int(args.func(args) or 0)
    except Cancelled as exc:
        return fail(exc.kind, _one_line(exc), 130, f"cervixtl: cancelled: {_one_line(exc)}")
    except CervixTLError as exc:
        return fail(exc.kind, _one_line(exc), 2, f"cervixtl: error: {_one_line(exc)}")
    except KeyboardInterrupt:
        return fail("cancelled", "cancelled", 130, "cervixtl: cancelled")
    except MemoryError:
        return fail("memory", "out of memory", 2, "cervixtl: error: out of memory")
    except Exception as exc:  # noqa: BLE001 - last resort: one line, unless debugging
        if os.environ.get("CERVIXTL_DEBUG"):
            raise
        msg = f"{type(exc).__name__}: {_one_line(exc)}"
        return fail("internal", msg, 1, f"cervixtl: internal error: {msg} (set CERVIXTL_DEBUG=1 for details)")
    if rc == 0:
        finish(mode)
    return rc


def _strip_ansi(text: str) -> str:
    """``text`` without terminal colour / cursor codes (torch puts them in some error messages)."""
    import re

    return re.sub(r"\x1b\[[0-9;?]*[ -/]*[@-~]", "", text)


def _one_line(exc: BaseException) -> str:
    """An error message on one line, without ANSI codes (an error line is one line, whatever a library
    put in it)."""
    return " ".join(_strip_ansi(str(exc)).split())


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
