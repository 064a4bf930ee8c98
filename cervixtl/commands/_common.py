"""Argument parsing helpers shared by the sub-commands."""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING, Any

from ..errors import BadInput

if TYPE_CHECKING:
    from ..progress import Progress


def parse_int_list(text: str | None, what: str = "labels") -> list[int] | None:
    """``"1,2,3"`` -> ``[1, 2, 3]``; None stays None."""
    if text is None:
        return None
    try:
        return [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise BadInput(f"--{what} must be comma-separated integers, got {text!r}") from None


def add_progress_arg(p: argparse.ArgumentParser) -> None:
    """``--progress none|text|json``."""
    p.add_argument("--progress", choices=["none", "text", "json"], default="none",
                   help="progress on stderr: none, text, or JSON lines (stage, fraction, message) for a GUI")


def add_json_arg(p: argparse.ArgumentParser, what: str = "the result") -> None:
    """``--json``: print one ``{"format": "cervixtl-<command>/1", ...}`` object on stdout (see the README)."""
    p.add_argument("--json", action="store_true", help=f"print {what} as one JSON object on stdout")


def make_progress(args: argparse.Namespace) -> Progress:
    """The :class:`~cervixtl.progress.Progress` of ``--progress`` (warnings always reach stderr)."""
    from ..progress import Progress

    return Progress(getattr(args, "progress", "none") or "none", echo_warnings=True)


def print_json(report: dict[str, Any]) -> None:
    """Print a report (a dict with ``"format"``) as one JSON object on stdout."""
    print(json.dumps(report, indent=2))


def add_action(actions: argparse._SubParsersAction, name: str, help_: str, folder_flag: str,
               folder_help: str) -> argparse.ArgumentParser:
    """Action parser ``name`` of a command group whose folder option (``folder_flag``, e.g. ``--cases-dir``)
    may also follow the action; given there it overrides the group's value, absent it leaves it alone."""
    sp = actions.add_parser(name, help=help_, description=help_)
    sp.add_argument(folder_flag, default=argparse.SUPPRESS, help=folder_help)
    return sp


def run_action(args: argparse.Namespace) -> int:
    """Run the action chosen under a command group (``set_defaults(action_func=...)`` on each action parser,
    ``set_defaults(func=run_action, action_help=parser.format_help)`` on the group); without an action, print
    the group's help and return 2."""
    func = getattr(args, "action_func", None)
    if func is None:
        print(args.action_help(), file=sys.stderr)
        return 2
    return int(func(args) or 0)


def parse_name_list(text: str | None) -> list[str] | None:
    """``"GTV, CTV"`` -> ``["GTV", "CTV"]`` (blank items dropped); None or empty -> None."""
    if not text:
        return None
    return [t.strip() for t in text.split(",") if t.strip()]


def print_warnings(warnings: list[str]) -> None:
    """Each warning as one ``cervixtl: warning: ...`` line on stderr."""
    for w in warnings:
        print(f"cervixtl: warning: {w}", file=sys.stderr)
