"""The planning CT that an RT Structure Set or DICOM SEG refers to: image plus the header UIDs it needs."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import BadInput
from ..image import Image
from .structure_set import hash_id

__all__ = ["CT_SOP_CLASS", "CTSeries", "read_ct_series"]

CT_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.2"


@dataclass
class CTSeries:
    """A CT read from DICOM plus the header fields an RTSTRUCT refers to (slice order = ``image`` k order).

    ``image`` holds the (z, y, x) array with spacing/origin in (x, y, z) mm, LPS; ``sop_instance_uids[k]`` is
    the UID of slice k.
    """

    image: Image
    sop_instance_uids: list[str]
    sop_class_uid: str
    series_uid: str
    study_uid: str
    frame_of_reference_uid: str
    patient_id_hash: str
    header: Any  # pydicom Dataset of the first slice (patient/study modules are copied on export)
    warnings: list[str] = field(default_factory=list)  # e.g. UIDs that had to be generated


def read_ct_series(folder: str | os.PathLike, series_uid: str | None = None) -> CTSeries:
    """Read a CT DICOM series and its per-slice SOP Instance UIDs in slice order.

    Raises:
        BadInput: not a folder, no series, missing slices (see :func:`cervixtl.io.read_dicom_series`).
    """
    import pydicom

    from ..io import read_dicom_series

    folder = Path(folder)
    if not folder.is_dir():
        raise BadInput(f"{folder}: not a folder of CT DICOM files")
    img = read_dicom_series(folder, series_uid)
    files = img.meta.get("files", [])
    headers = [pydicom.dcmread(f, stop_before_pixels=True) for f in files]
    if not headers:
        raise BadInput(f"{folder}: no DICOM slices")
    from .uids import ensure_uids

    notes = ensure_uids(headers)
    h0 = headers[0]
    return CTSeries(
        image=img,
        sop_instance_uids=[str(h.SOPInstanceUID) for h in headers],
        sop_class_uid=str(getattr(h0, "SOPClassUID", CT_SOP_CLASS)),
        series_uid=str(getattr(h0, "SeriesInstanceUID", "") or ""),
        study_uid=str(getattr(h0, "StudyInstanceUID", "") or ""),
        frame_of_reference_uid=str(getattr(h0, "FrameOfReferenceUID", "") or ""),
        patient_id_hash=hash_id(str(getattr(h0, "PatientID", "") or "")),
        header=h0,
        warnings=notes,
    )
