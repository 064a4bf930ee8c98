"""Export a segmentation as a DICOM RT Structure Set that refers to the planning CT.

Sub-voxel outlines are traced per slice (:func:`cervixtl.rt.contours.mask_outlines`) and written as an
RT Structure Set IOD (all Type 1 and 2 attributes) that refers to the CT series, its SOP instances and its
frame of reference, with new UIDs. Masks are (z, y, x); contour points are LPS mm.
"""

from __future__ import annotations

import datetime as _dt
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .. import __version__, structures
from ..atomic import atomic_path
from ..errors import BadInput
from ..image import Image, ijk_to_lps_matrix
from ..segmentation import Segment, Segmentation
from .contours import mask_outlines
from .ct_series import CTSeries, read_ct_series
from .structure_set import RTSTRUCT_SOP_CLASS

__all__ = ["segment_contours", "build_rtstruct", "export_rtstruct"]

#: Patient and General Study attributes copied from the CT, so the planning system files the RTSTRUCT with it.
_COPIED_FROM_CT = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyInstanceUID", "StudyDate",
                   "StudyTime", "ReferringPhysicianName", "StudyID", "AccessionNumber", "StudyDescription")


def segment_contours(mask: np.ndarray, grid: Image, min_area_mm2: float = 0.0,
                     smooth_sigma: float = 0.0) -> list[tuple[int, np.ndarray]]:
    """Planar contours of a (z, y, x) boolean mask: a list of (slice index k, (N, 3) LPS mm points).

    Outlines pass through the mid-points between inside and outside voxel centres (sub-voxel), holes and
    islands are separate contours (even-odd), and outlines smaller than ``min_area_mm2`` are dropped.
    ``smooth_sigma`` (voxels) smooths the outline in-plane without changing which voxel centres it encloses.
    """
    sx, sy = grid.spacing[0], grid.spacing[1]
    min_px = float(min_area_mm2) / (sx * sy)
    m = ijk_to_lps_matrix(grid)[:3, :3]
    origin = np.asarray(grid.origin)
    out: list[tuple[int, np.ndarray]] = []
    for k in np.nonzero(mask.reshape(mask.shape[0], -1).any(axis=1))[0]:
        for poly in mask_outlines(mask[k], min_area_px=min_px, smooth_sigma=smooth_sigma):
            ijk = np.column_stack([poly, np.full(len(poly), float(k))])
            out.append((int(k), origin + ijk @ m.T))
    return out


def _new_uid() -> str:
    """A new DICOM UID (pydicom's root)."""
    from pydicom.uid import generate_uid

    return str(generate_uid())


def _dicom_color(c: Sequence[float]) -> list[int]:
    """An RGB colour 0..1 as the DICOM ROI Display Color 0..255 (clipped)."""
    return [int(round(min(max(float(v), 0.0), 1.0) * 255)) for v in c]


def _new_file_dataset(cts: CTSeries, now: _dt.datetime) -> Any:
    """An empty RTSTRUCT FileDataset (file meta, SOP common, Patient + General Study copied from the CT)."""
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian

    meta: Any = FileMetaDataset()  # pydicom's stubs type the UID attributes as UID, not str
    meta.MediaStorageSOPClassUID = RTSTRUCT_SOP_CLASS
    sop_uid = _new_uid()
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds = FileDataset(None, {}, file_meta=meta, preamble=b"\0" * 128)  # type: ignore[arg-type]  # in memory
    h = cts.header
    ds.SpecificCharacterSet = str(getattr(h, "SpecificCharacterSet", "ISO_IR 100") or "ISO_IR 100")
    ds.SOPClassUID = RTSTRUCT_SOP_CLASS
    ds.SOPInstanceUID = sop_uid
    ds.InstanceCreationDate = now.strftime("%Y%m%d")
    ds.InstanceCreationTime = now.strftime("%H%M%S")
    for kw in _COPIED_FROM_CT:
        value = getattr(h, kw, None)
        setattr(ds, kw, value if value is not None else "")
    if not ds.StudyInstanceUID:
        ds.StudyInstanceUID = _new_uid()
    return ds


def _set_series_and_equipment(ds: Any, series_description: str) -> None:
    """RT Series and General Equipment modules (new series UID, dated like the instance)."""
    ds.Modality = "RTSTRUCT"
    ds.SeriesInstanceUID = _new_uid()
    ds.SeriesNumber = 9001
    ds.SeriesDescription = series_description[:64]
    ds.SeriesDate = ds.InstanceCreationDate
    ds.SeriesTime = ds.InstanceCreationTime
    ds.OperatorsName = ""
    ds.Manufacturer = "CervixTL"
    ds.ManufacturerModelName = "cervixtl"
    ds.SoftwareVersions = str(__version__)
    ds.InstanceNumber = 1


def _referenced_frame_of_reference(cts: CTSeries, frame_uid: str, study_uid: str) -> Any:
    """The Referenced Frame of Reference item: frame -> study -> CT series -> every CT slice."""
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence as DSeq

    contour_images = []
    for uid in cts.sop_instance_uids:
        ci = Dataset()
        ci.ReferencedSOPClassUID = cts.sop_class_uid
        ci.ReferencedSOPInstanceUID = uid
        contour_images.append(ci)
    rse = Dataset()
    rse.SeriesInstanceUID = cts.series_uid
    rse.ContourImageSequence = DSeq(contour_images)
    rst = Dataset()
    rst.ReferencedSOPClassUID = "1.2.840.10008.3.1.2.3.1"  # Detached Study Management (retired, as TPSs expect)
    rst.ReferencedSOPInstanceUID = study_uid
    rst.RTReferencedSeriesSequence = DSeq([rse])
    rfr = Dataset()
    rfr.FrameOfReferenceUID = frame_uid
    rfr.RTReferencedStudySequence = DSeq([rst])
    return rfr


def _contour_sequence(contours: list[tuple[int, np.ndarray]], cts: CTSeries) -> list[Any]:
    """Contour items for (slice index k, (N, 3) LPS mm points) pairs, each referring to CT slice k."""
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence as DSeq

    seq = []
    for n, (k, pts) in enumerate(contours, start=1):
        c = Dataset()
        ci = Dataset()
        ci.ReferencedSOPClassUID = cts.sop_class_uid
        ci.ReferencedSOPInstanceUID = cts.sop_instance_uids[k]
        c.ContourImageSequence = DSeq([ci])
        c.ContourGeometricType = "CLOSED_PLANAR"
        c.NumberOfContourPoints = len(pts)
        c.ContourNumber = n
        c.ContourData = [_ds(v) for v in pts.ravel()]
        seq.append(c)
    return seq


def _roi_items(number: int, s: Segment, contours: list[tuple[int, np.ndarray]], cts: CTSeries,
               frame_uid: str) -> tuple[Any, Any, Any]:
    """(Structure Set ROI item, ROI Contour item, RT ROI Observations item) of one segment."""
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence as DSeq

    r = Dataset()
    r.ROINumber = number
    r.ReferencedFrameOfReferenceUID = frame_uid
    r.ROIName = s.name[:64]
    r.ROIGenerationAlgorithm = "SEMIAUTOMATIC"
    rc = Dataset()
    rc.ROIDisplayColor = _dicom_color(s.color)
    rc.ReferencedROINumber = number
    seq = _contour_sequence(contours, cts)
    if seq:
        rc.ContourSequence = DSeq(seq)
    o = Dataset()
    o.ObservationNumber = number
    o.ReferencedROINumber = number
    o.RTROIInterpretedType = structures.rt_type_of(s.name)
    o.ROIInterpreter = ""
    return r, rc, o


def _roi_facts(number: int, s: Segment, interpreted_type: str, contours: list[tuple[int, np.ndarray]],
               min_area_mm2: float, warnings: list[str]) -> dict[str, Any]:
    """Report entry of one exported ROI: counts of voxels, contours, points, slices, and its status."""
    facts: dict[str, Any] = {"number": number, "name": s.name, "interpreted_type": interpreted_type,
                             "voxels": s.voxels, "contours": len(contours),
                             "points": int(sum(len(p) for _, p in contours)),
                             "slices": len({k for k, _ in contours})}
    if s.voxels == 0:
        facts["status"] = "empty: ROI written without contours"
        warnings.append(f"segment {s.name!r} is empty: written as an ROI without contours")
    elif not contours:
        facts["status"] = "smaller than the minimum area: no contours"
        warnings.append(f"segment {s.name!r}: every outline is below {min_area_mm2} mm^2: no contours")
    else:
        facts["status"] = "ok"
        if s.voxels <= 2:
            warnings.append(f"segment {s.name!r} has only {s.voxels} voxel(s)")
    return facts


def build_rtstruct(cts: CTSeries, seg: Segmentation, *, label: str = "CervixTL",
                   names: Iterable[str] | None = None, min_area_mm2: float = 0.0, smooth_sigma: float = 0.5,
                   series_description: str = "CervixTL structures") -> tuple[Any, dict[str, Any]]:
    """Build an RT Structure Set dataset for ``seg`` referring to the CT series ``cts``.

    Args:
        cts: the planning CT (see :func:`read_ct_series`); ``seg`` must be on its grid.
        seg: segments to export (all, or those in ``names``).
        label: Structure Set Label (1..16 characters).
        min_area_mm2: drop outlines (islands/holes) smaller than this area in mm^2.
        smooth_sigma: in-plane outline smoothing in voxels (0 = straight mid-point outline); the enclosed voxel
            centres never change, so a centre-inside reader gets the mask back exactly.

    Returns:
        (pydicom FileDataset, report dict with per-ROI contour/point counts and warnings).

    Raises:
        GeometryMismatch: the segmentation is not on the CT grid.
        BadInput: an unknown name in ``names``, or nothing to export.
    """
    from pydicom.sequence import Sequence as DSeq

    cts.image.require_same_geometry(seg.grid, "segmentation")
    segments = seg.segments if names is None else [seg[n] for n in names]
    if not segments:
        raise BadInput("no segment to export")
    label = (label or "CervixTL").strip()[:16] or "CervixTL"
    ds = _new_file_dataset(cts, _dt.datetime.now())
    _set_series_and_equipment(ds, series_description)
    # Frame of Reference module: the CT's.
    frame_uid = cts.frame_of_reference_uid
    if not frame_uid:
        raise BadInput("the CT has no FrameOfReferenceUID; an RTSTRUCT cannot refer to it")
    ds.FrameOfReferenceUID = frame_uid
    ds.PositionReferenceIndicator = getattr(cts.header, "PositionReferenceIndicator", None) or ""
    # Structure Set module.
    ds.StructureSetLabel = label
    ds.StructureSetName = label[:64]
    ds.StructureSetDate = ds.InstanceCreationDate
    ds.StructureSetTime = ds.InstanceCreationTime
    ds.ReferencedFrameOfReferenceSequence = DSeq([_referenced_frame_of_reference(cts, frame_uid,
                                                                                 ds.StudyInstanceUID)])
    roi_items, contour_items, obs_items = [], [], []
    report: dict[str, Any] = {"rois": [], "warnings": list(cts.warnings)}
    for number, s in enumerate(segments, start=1):
        contours = segment_contours(s.mask, seg.grid, min_area_mm2, smooth_sigma)
        r, rc, o = _roi_items(number, s, contours, cts, frame_uid)
        roi_items.append(r)
        contour_items.append(rc)
        obs_items.append(o)
        report["rois"].append(_roi_facts(number, s, o.RTROIInterpretedType, contours, min_area_mm2,
                                         report["warnings"]))
    ds.StructureSetROISequence = DSeq(roi_items)
    ds.ROIContourSequence = DSeq(contour_items)
    ds.RTROIObservationsSequence = DSeq(obs_items)
    # Approval module (optional; planning systems show it).
    ds.ApprovalStatus = "UNAPPROVED"
    return ds, report


def _ds(v: float) -> str:
    """A DICOM Decimal String (at most 16 characters) of a coordinate in mm, 0.1 micrometre resolution."""
    text = f"{float(v):.4f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def export_rtstruct(ct_dir: str | os.PathLike, seg: Segmentation, out: str | os.PathLike, *,
                    label: str = "CervixTL", names: Iterable[str] | None = None,
                    min_area_mm2: float = 0.0, smooth_sigma: float = 0.5) -> tuple[Path, dict[str, Any]]:
    """Write ``seg`` as an RTSTRUCT file (atomically) referring to the CT series in ``ct_dir``.

    Returns:
        (output path, report with per-ROI counts and warnings).
    """
    out = Path(out)
    cts = read_ct_series(ct_dir)
    ds, report = build_rtstruct(cts, seg, label=label, names=names, min_area_mm2=min_area_mm2,
                                smooth_sigma=smooth_sigma)
    with atomic_path(out) as tmp:
        ds.save_as(tmp, enforce_file_format=True)
    report["file"] = str(out)
    report["sop_instance_uid"] = str(ds.SOPInstanceUID)
    report["series_instance_uid"] = str(ds.SeriesInstanceUID)
    return out, report
