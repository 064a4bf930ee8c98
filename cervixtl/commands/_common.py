"""Argument parsing helpers shared by the sub-commands."""

from __future__ import annotations

import argparse

from ..errors import BadInput


def parse_int_list(text: str | None, what: str = "labels") -> list[int] | None:
    """``"1,2,3"`` -> ``[1, 2, 3]``; None stays None."""
    if text is None:
        return None
    try:
        return [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise BadInput(f"--{what} must be comma-separated integers, got {text!r}") from None


def parse_margin_mm(text: str) -> float | tuple[float, float, float, float, float, float]:
    """``"10"`` -> 10.0 (isotropic); ``"5,5,10,10,7,7"`` -> (R, L, A, P, S, I) in mm.

    Range checks are done by :mod:`cervixtl.margins`.
    """
    parts = [t.strip() for t in str(text).split(",")]
    try:
        vals = [float(t) for t in parts]
    except ValueError:
        raise BadInput(f"margin must be a number of mm or six numbers R,L,A,P,S,I, got {text!r}") from None
    if len(vals) == 1:
        return vals[0]
    if len(vals) == 6:
        return tuple(vals)  # type: ignore[return-value]
    raise BadInput(f"margin needs 1 value or 6 values (R,L,A,P,S,I) in mm, got {len(vals)}: {text!r}")


def add_progress_arg(p: argparse.ArgumentParser) -> None:
    """``--progress none|text|json``."""
    p.add_argument("--progress", choices=["none", "text", "json"], default="none",
                   help="progress on stderr: none, text, or JSON lines (stage, fraction, message) for a GUI")


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
    import sys

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
    import sys

    for w in warnings:
        print(f"cervixtl: warning: {w}", file=sys.stderr)
