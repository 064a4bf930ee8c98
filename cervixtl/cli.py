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
from typing import Sequence

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
    """Run the CLI; returns the exit status (0 ok, 2 bad input / user error, 130 cancelled)."""
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

    from .preflight import check_arguments

    try:
        check_arguments(args)  # before any command imports torch: a bad path is reported at once
        with signals_raise_cancelled(), warnings.catch_warnings():
            warnings.showwarning = one_line_warning
            rc = args.func(args)
        return int(rc or 0)
    except Cancelled as exc:
        print(f"cervixtl: cancelled: {exc}", file=sys.stderr)
        return 130
    except CervixTLError as exc:
        print(f"cervixtl: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("cervixtl: cancelled", file=sys.stderr)
        return 130
    except MemoryError:
        print("cervixtl: error: out of memory", file=sys.stderr)
        return 2
    except Exception as exc:  # noqa: BLE001 - last resort: one line, unless debugging
        if os.environ.get("CERVIXTL_DEBUG"):
            raise
        print(f"cervixtl: internal error: {type(exc).__name__}: {_one_line(exc)} (set CERVIXTL_DEBUG=1 for details)",
              file=sys.stderr)
        return 1


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
