"""Read an RT Structure Set file into plain data (ROIs, their planar contours in LPS mm, referenced UIDs).

No patient-identifying data is kept: the Patient ID is only stored as a short SHA-256 prefix, used to check
that an RTSTRUCT and a CT belong to the same patient. Every user-caused problem is a
:class:`~cervixtl.errors.BadInput` with one line, or a warning in :attr:`StructureSet.warnings`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import BadInput
from .dicomfile import read_dataset

__all__ = ["RTSTRUCT_SOP_CLASS", "Contour", "Roi", "StructureSet", "read_rtstruct", "hash_id"]

RTSTRUCT_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.481.3"


@dataclass
class Contour:
    """One contour of an ROI: points (N, 3) in LPS mm, its geometric type and referenced image UIDs."""

    points: np.ndarray
    geometric_type: str = "CLOSED_PLANAR"
    image_uids: tuple[str, ...] = ()


@dataclass
class Roi:
    """One ROI of a structure set."""

    number: int
    name: str
    frame_of_reference_uid: str = ""
    color: tuple[float, float, float] | None = None
    interpreted_type: str = ""
    contours: list[Contour] = field(default_factory=list)

    @property
    def n_points(self) -> int:
        """Total number of contour points."""
        return int(sum(len(c.points) for c in self.contours))


@dataclass
class StructureSet:
    """The parts of an RTSTRUCT needed to rasterise it (no patient-identifying data is kept)."""

    source: str
    label: str
    frame_of_reference_uid: str
    referenced_series_uids: tuple[str, ...]
    referenced_image_uids: frozenset[str]
    patient_id_hash: str
    rois: list[Roi]
    warnings: list[str] = field(default_factory=list)

    @property
    def names(self) -> list[str]:
        """ROI names in file order."""
        return [r.name for r in self.rois]


def hash_id(value: str) -> str:
    """A 16-hex-digit SHA-256 prefix of a (stripped) identifier, ``""`` for an empty one."""
    import hashlib

    return hashlib.sha256(value.strip().encode()).hexdigest()[:16] if value and value.strip() else ""


def read_rtstruct(path: str | os.PathLike) -> StructureSet:
    """Parse an RT Structure Set file.

    Duplicate ROI names get a suffix (``_2``) and a warning; ROIs without contour points are kept (empty)
    and reported by :func:`cervixtl.rt.struct_import.rasterize`.

    Raises:
        BadInput: the file is missing, not DICOM, or not an RT Structure Set.
    """
    p = Path(path)
    ds = read_dataset(p, "RTSTRUCT")
    modality = str(getattr(ds, "Modality", "") or "")
    sop = str(getattr(ds, "SOPClassUID", "") or "")
    if modality != "RTSTRUCT" and sop != RTSTRUCT_SOP_CLASS:
        raise BadInput(f"{p}: not an RT Structure Set (Modality {modality or 'missing'})")
    if "StructureSetROISequence" not in ds:
        raise BadInput(f"{p}: RTSTRUCT has no Structure Set ROI Sequence")

    try:
        return _parse_structure_set(ds, p)
    except (AttributeError, KeyError, ValueError, TypeError, IndexError) as exc:
        raise BadInput(f"{p}: malformed RT Structure Set ({type(exc).__name__}: {str(exc)[:120]})") from None


def _referenced_frame(ds: Any) -> tuple[str, list[str], set[str]]:
    """(first FrameOfReferenceUID, referenced series UIDs, referenced CT SOP Instance UIDs) of the dataset."""
    frame_uid = ""
    series: list[str] = []
    images: set[str] = set()
    for fr in getattr(ds, "ReferencedFrameOfReferenceSequence", []):
        frame_uid = frame_uid or str(getattr(fr, "FrameOfReferenceUID", "") or "")
        for st in getattr(fr, "RTReferencedStudySequence", []):
            for se in getattr(st, "RTReferencedSeriesSequence", []):
                series.append(str(getattr(se, "SeriesInstanceUID", "") or ""))
                for im in getattr(se, "ContourImageSequence", []):
                    images.add(str(getattr(im, "ReferencedSOPInstanceUID", "") or ""))
    return frame_uid, series, images


def _read_rois(ds: Any, frame_uid: str, warnings: list[str]) -> dict[int, Roi]:
    """ROIs of the Structure Set ROI Sequence by ROI number; duplicate names (case-insensitive) get ``_2``..."""
    rois: dict[int, Roi] = {}
    seen: dict[str, int] = {}
    for item in ds.StructureSetROISequence:
        num = int(item.ROINumber)
        name = str(getattr(item, "ROIName", "") or f"ROI_{num}").strip() or f"ROI_{num}"
        key = name.lower()
        if key in seen:
            seen[key] += 1
            new = f"{name}_{seen[key]}"
            warnings.append(f"duplicate ROI name {name!r} (ROI number {num}) renamed to {new!r}")
            name = new
        else:
            seen[key] = 1
        fuid = str(getattr(item, "ReferencedFrameOfReferenceUID", "") or frame_uid)
        rois[num] = Roi(number=num, name=name, frame_of_reference_uid=fuid)
    for obs in getattr(ds, "RTROIObservationsSequence", []):
        num = int(getattr(obs, "ReferencedROINumber", -1))
        if num in rois:
            rois[num].interpreted_type = str(getattr(obs, "RTROIInterpretedType", "") or "")
    return rois


def _read_contours(rc: Any, roi: Roi, images: set[str], warnings: list[str]) -> None:
    """Append the contours (points (N, 3) LPS mm) and display colour (0..1) of one ROI Contour item to ``roi``."""
    col = getattr(rc, "ROIDisplayColor", None)
    if col is not None and len(col) == 3:
        roi.color = tuple(float(c) / 255.0 for c in col)  # type: ignore[assignment]
    for n, c in enumerate(getattr(rc, "ContourSequence", [])):
        data = getattr(c, "ContourData", None)
        gtype = str(getattr(c, "ContourGeometricType", "") or "")
        if data is None or len(data) == 0:
            continue
        if len(data) % 3:
            warnings.append(f"ROI {roi.name!r}: contour {n + 1} has {len(data)} coordinates, not a multiple "
                            "of 3: skipped")
            continue
        pts = np.asarray([float(v) for v in data], dtype=float).reshape(-1, 3)
        uids = tuple(str(getattr(im, "ReferencedSOPInstanceUID", "")) for im in getattr(c, "ContourImageSequence", []))
        roi.contours.append(Contour(pts, gtype, uids))
        images.update(u for u in uids if u)


def _parse_structure_set(ds: Any, p: Path) -> StructureSet:
    """The :class:`StructureSet` of a dataset already known to be an RTSTRUCT (``p`` names it in messages)."""
    warnings: list[str] = []
    frame_uid, series, images = _referenced_frame(ds)
    rois = _read_rois(ds, frame_uid, warnings)
    for rc in getattr(ds, "ROIContourSequence", []):
        num = int(getattr(rc, "ReferencedROINumber", -1))
        roi = rois.get(num)
        if roi is None:
            warnings.append(f"contours for ROI number {num}, which is not in the Structure Set ROI Sequence: ignored")
            continue
        _read_contours(rc, roi, images, warnings)
    return StructureSet(
        source=str(p),
        label=str(getattr(ds, "StructureSetLabel", "") or ""),
        frame_of_reference_uid=frame_uid,
        referenced_series_uids=tuple(s for s in series if s),
        referenced_image_uids=frozenset(u for u in images if u),
        patient_id_hash=hash_id(str(getattr(ds, "PatientID", "") or "")),
        rois=list(rois.values()),
        warnings=warnings,
    )
