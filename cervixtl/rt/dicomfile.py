"""Reading one DICOM file with a one-line error for the user, refusing truncated files (pydicom reads a cut
file without complaint: an RTSTRUCT loses its last contours, a SEG its pixel data)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..errors import BadInput

__all__ = ["read_dataset", "check_complete_dicom"]

_SEQ_DELIMITER = b"\xfe\xff\xdd\xe0\x00\x00\x00\x00"


def read_dataset(path: str | os.PathLike, what: str = "DICOM") -> Any:
    """Read a DICOM file with pydicom (all elements, pixel data included).

    Args:
        path: the file.
        what: what the caller expects (``"RTSTRUCT"``, ``"DICOM SEG"``), used in the messages.

    Raises:
        BadInput: the file is missing, is not DICOM, or is truncated.
    """
    import pydicom
    from pydicom.errors import InvalidDicomError

    p = Path(path)
    if not p.is_file():
        raise BadInput(f"{p}: no such {what} file")
    try:
        ds = pydicom.dcmread(p)
    except (InvalidDicomError, OSError, ValueError, EOFError) as exc:
        raise BadInput(f"{p}: not a DICOM file ({str(exc).splitlines()[0][:120]})") from None
    check_complete_dicom(p, what)
    return ds


def check_complete_dicom(path: str | os.PathLike, what: str = "DICOM") -> None:
    """Refuse a DICOM file that ends inside an element: a top-level value shorter than its declared length,
    or a last sequence of undefined length without its delimiter.

    Raises:
        BadInput: ``"<file>: truncated <what> file ..."``.
    """
    from pydicom.filereader import _read_file_meta_info, data_element_generator, read_preamble

    p = Path(path)
    problem = None
    try:
        with open(p, "rb") as fp:
            read_preamble(fp, False)
            meta = _read_file_meta_info(fp)
            ts = meta.get("TransferSyntaxUID")
            implicit = ts.is_implicit_VR if ts is not None else True
            little = ts.is_little_endian if ts is not None else True
            last = None
            for el in data_element_generator(fp, implicit, little, defer_size=None):
                last = el
                length = getattr(el, "length", None)
                value = getattr(el, "value", None)
                if length is not None and length != 0xFFFFFFFF and isinstance(value, bytes) and len(value) < length:
                    problem = f"element {el.tag} has {len(value)} of its {length} bytes"
                    break
        if problem is None and last is not None and getattr(last, "is_undefined_length", False):
            with open(p, "rb") as fh:
                fh.seek(max(0, p.stat().st_size - 8))
                if fh.read(8) != _SEQ_DELIMITER:
                    problem = f"sequence {last.tag} has no end"
    except (OSError, EOFError, ValueError, KeyError, AttributeError, NotImplementedError):
        return  # a DICOM variant this scan does not follow: pydicom's reading stands
    if problem:
        raise BadInput(f"{p}: truncated {what} file ({problem}); copy it again from its source")
