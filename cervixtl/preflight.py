"""Checks of the command line made before any heavy library (torch, MONAI, ITK) is imported, so that a
mistyped path or option is reported in well under a second instead of after torch's import.

The checks use only argument names (the commands share them): input paths must exist, output files and
folders must be creatable, ``--threads`` must be at least 1. Each command still checks its own arguments fully.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from .errors import BadInput

__all__ = ["check_arguments", "INPUT_ARGS", "OUTPUT_FILE_ARGS", "FOLDER_OUTPUT_COMMANDS"]

#: Arguments that always name an existing file or folder.
INPUT_ARGS = ("ct", "input", "image", "reference", "prediction", "final_labels", "proposal", "segmentation",
              "rtstruct", "seg")
#: Arguments that name an output file (its folder is created if needed, so an ancestor must be writable).
OUTPUT_FILE_ARGS = ("out", "output", "summary")
#: Commands whose ``--out`` is a folder.
FOLDER_OUTPUT_COMMANDS = ("compare", "demo")


def _nearest_existing(p: Path) -> Path:
    cur = p
    while not cur.exists() and cur != cur.parent:
        cur = cur.parent
    return cur


def check_output_folder(folder: Path, what: str) -> None:
    """Refuse a folder that cannot be created or written: an ancestor that is a file, or not writable."""
    if folder.exists() and not folder.is_dir():
        raise BadInput(f"{what} {folder}: a file is in the way, not a folder")
    base = _nearest_existing(folder)
    if not base.is_dir():
        raise BadInput(f"{what} {folder}: cannot create it, {base} is a file")
    if not os.access(base, os.W_OK | os.X_OK):
        raise BadInput(f"{what} {folder}: {base} is not writable")


def check_arguments(args: argparse.Namespace) -> None:
    """Refuse missing inputs, impossible outputs and ``--threads`` below 1 (see the module docstring).

    Raises:
        BadInput: one line naming the argument's value and the problem.
    """
    threads = getattr(args, "threads", None)
    if threads is not None and threads < 1:
        raise BadInput(f"--threads must be >= 1, got {threads}")
    for name in INPUT_ARGS:
        value = getattr(args, name, None)
        if isinstance(value, str) and value and not Path(value).expanduser().exists():
            raise BadInput(f"{value}: no such file or folder")
    command = getattr(args, "command", None)
    for name in OUTPUT_FILE_ARGS:
        value = getattr(args, name, None)
        if not isinstance(value, str) or not value:
            continue
        p = Path(value).expanduser()
        if command in FOLDER_OUTPUT_COMMANDS and name == "out":
            check_output_folder(p, "output folder")
        elif p.is_dir():
            raise BadInput(f"{value} is a folder; give a file name")
        else:
            check_output_folder(p.parent if str(p.parent) else Path("."), "output folder of")
