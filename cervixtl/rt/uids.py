"""DICOM UIDs of a CT series: every exported object refers to its images by them.

Some de-identified series (the TotalSegmentator DICOM example) have empty SOP Instance, SOP Class, Series and
Study UIDs. An RTSTRUCT or SEG built on them is invalid (and highdicom fails with ``KeyError: ''``).
:func:`ensure_uids` fills every missing or malformed UID with a new valid one, in memory only, and says so:
the exported file is then valid but cannot refer to the original images.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

__all__ = ["is_valid_uid", "ensure_uids", "CT_IMAGE_STORAGE"]

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
_UID_RE = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$")
_SHARED = ("StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID")


def is_valid_uid(uid: Any) -> bool:
    """True for a DICOM UID: dot-separated numbers without leading zeros, at most 64 characters."""
    text = str(uid or "")
    return 0 < len(text) <= 64 and bool(_UID_RE.match(text))


def ensure_uids(headers: Sequence[Any], what: str = "CT series") -> list[str]:
    """Give every dataset of one series valid UIDs (changed in memory only); returns the warnings.

    Study, Series and Frame of Reference UIDs get one new value shared by the series; each missing SOP
    Instance UID a new value (the file meta copy too); a missing SOP Class UID becomes CT Image Storage.
    """
    from pydicom.uid import generate_uid

    if not headers:
        return []
    fixed: list[str] = []
    for kw in _SHARED:
        if not all(is_valid_uid(getattr(h, kw, "")) for h in headers):
            new = str(generate_uid())
            for h in headers:
                setattr(h, kw, new)
            fixed.append(kw)
    bad_sop = [h for h in headers if not is_valid_uid(getattr(h, "SOPInstanceUID", ""))]
    for h in bad_sop:
        h.SOPInstanceUID = str(generate_uid())
        meta = getattr(h, "file_meta", None)
        if meta is not None:
            meta.MediaStorageSOPInstanceUID = h.SOPInstanceUID
    if bad_sop:
        fixed.append(f"SOPInstanceUID ({len(bad_sop)} of {len(headers)} slices)")
    bad_class = [h for h in headers if not is_valid_uid(getattr(h, "SOPClassUID", ""))]
    for h in bad_class:
        h.SOPClassUID = CT_IMAGE_STORAGE
        meta = getattr(h, "file_meta", None)
        if meta is not None:
            meta.MediaStorageSOPClassUID = CT_IMAGE_STORAGE
    if bad_class:
        fixed.append("SOPClassUID")
    if not fixed:
        return []
    return [f"the {what} has empty or invalid UIDs ({', '.join(fixed)}); new UIDs were generated, so the "
            "exported file is valid DICOM but cannot refer to the original images: import it together with "
            "a CT exported from the same session, or fix the CT's UIDs first"]
