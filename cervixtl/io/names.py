"""File names of images and segmentations: extensions, stems, sidecars, format names.

No file is opened here except to sniff the DICOM preamble (:func:`is_dicom_file`).
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

__all__ = ["IMAGE_SUFFIXES", "first_line", "format_name", "is_dicom_file", "is_seg_nrrd", "sidecar_path", "stem"]

IMAGE_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")


def lower_name(path: Path) -> str:
    """The file name of ``path`` in lower case."""
    return path.name.lower()


def is_seg_nrrd(path: str | os.PathLike) -> bool:
    """True for a Slicer segmentation file name (``*.seg.nrrd``)."""
    return lower_name(Path(path)).endswith(".seg.nrrd")


def stem(path: str | os.PathLike) -> str:
    """File name without its image extension (``ct.nii.gz`` -> ``ct``, ``x.seg.nrrd`` -> ``x``)."""
    name = Path(path).name
    for suf in (".seg.nrrd",) + IMAGE_SUFFIXES + (".dcm",):
        if name.lower().endswith(suf):
            return name[: -len(suf)]
    return Path(name).stem


def sidecar_path(path: str | os.PathLike) -> Path:
    """The JSON sidecar of a label-map file: ``labels.nii.gz`` -> ``labels.json``."""
    p = Path(path)
    return p.with_name(stem(p) + ".json")


def format_name(p: Path) -> str:
    """``"NIfTI"``, ``"NRRD"``, ``"MetaImage"``, ``"DICOM"`` or ``"unknown"`` from the extension."""
    n = lower_name(p)
    for suf, name in ((".nii.gz", "NIfTI"), (".nii", "NIfTI"), (".nrrd", "NRRD"), (".nhdr", "NRRD"),
                      (".mha", "MetaImage"), (".mhd", "MetaImage"), (".dcm", "DICOM")):
        if n.endswith(suf):
            return name
    return "unknown"


def is_dicom_file(p: Path) -> bool:
    """True when ``p`` has the DICOM ``DICM`` marker after its 128-byte preamble."""
    try:
        with open(p, "rb") as fh:
            fh.seek(128)
            return fh.read(4) == b"DICM"
    except OSError:
        return False


_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")


def first_line(exc: BaseException | str) -> str:
    """The useful sentence of a library error, on one line, without terminal colour codes (ANSI escapes):
    ITK puts it last ("...: Could not create IO object for reading file ..."), most others first."""
    text = _ANSI.sub("", str(exc))
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    useful = [ln for ln in lines if "Could not" in ln or "Unable" in ln or "error" in ln.lower()]
    return (useful or lines or ["unknown error"])[-1][:200]


@contextlib.contextmanager
def c_stderr_silenced() -> Iterator[None]:
    """Keep what C libraries print on file descriptor 2 (ITK's ``** ERROR: NWAD``, MetaImage's
    ``M_WriteElementsData``) off the console while ITK reads or writes: the failure is reported as one
    ``cervixtl: error:`` line instead. Python's own ``sys.stderr`` is untouched."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):
        yield
        return
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
