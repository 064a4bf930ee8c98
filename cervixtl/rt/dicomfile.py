"""Reading one DICOM file with a one-line error for the user."""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import BadInput


def read_dataset(path: str | os.PathLike, what: str = "DICOM"):
    """Read a DICOM file with pydicom (all elements, pixel data included).

    Args:
        path: the file.
        what: what the caller expects (``"RTSTRUCT"``, ``"DICOM SEG"``), used in the messages.

    Raises:
        BadInput: the file is missing or is not DICOM.
    """
    import pydicom
    from pydicom.errors import InvalidDicomError

    p = Path(path)
    if not p.is_file():
        raise BadInput(f"{p}: no such {what} file")
    try:
        return pydicom.dcmread(p)
    except (InvalidDicomError, OSError, ValueError, EOFError) as exc:
        raise BadInput(f"{p}: not a DICOM file ({str(exc).splitlines()[0][:120]})") from None
