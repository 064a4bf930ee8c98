"""DICOM RT Structure Set import (contours -> masks on the CT grid) and export (masks -> contours).

Written on pydicom rather than ``rt-utils``: rt-utils draws contours with OpenCV on integer voxel positions
(an outline through voxel *centres*, which loses half a voxel all round when read back with a centre-inside
rule), ignores the frame of reference when reading, and needs OpenCV. Here:

* Import rasterises each ROI's CLOSED_PLANAR contours in the voxel index frame of the CT (patient LPS mm ->
  continuous index), a voxel being inside when its centre is inside by the even-odd rule (several contours
  per slice, holes), see :func:`cervixtl.rt.contours.fill_polygons`. A contour lying between two slices goes
  to the nearest slice (reported); a contour that is not in a CT slice plane (oblique) is refused.
* Export traces sub-voxel outlines per slice (:func:`cervixtl.rt.contours.mask_outlines`) and writes an
  RT Structure Set IOD (all Type 1 and 2 attributes) that refers to the CT series, its SOP instances and its
  frame of reference, with new UIDs.

Every user-caused problem is a :class:`~cervixtl.errors.BadInput` with one line, or a warning in the report.
Messages never contain patient names or IDs.
"""

from __future__ import annotations

import datetime as _dt
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .. import __version__, structures
from ..atomic import atomic_path
from ..errors import BadInput
from ..image import Image, ijk_to_lps_matrix
from ..segmentation import Segmentation
from .contours import fill_polygons, mask_outlines
from .dicomfile import read_dataset

if TYPE_CHECKING:
    from pydicom.uid import UID

RTSTRUCT_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.481.3"
CT_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.2"

#: Largest spread (in slice spacings) of a contour's points along the slice normal still called planar.
PLANAR_TOL_SLICES = 0.05
#: Offset (in slice spacings) from the nearest slice centre above which a contour is reported "between slices".
BETWEEN_SLICES_TOL = 0.1


# ============================================================================ data read from an RTSTRUCT
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


def _hash_id(value: str) -> str:
    import hashlib

    return hashlib.sha256(value.strip().encode()).hexdigest()[:16] if value and value.strip() else ""


def read_rtstruct(path: str | os.PathLike) -> StructureSet:
    """Parse an RT Structure Set file.

    Duplicate ROI names get a suffix (``_2``) and a warning; ROIs without contour points are kept (empty)
    and reported by :func:`rasterize`.

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


def _parse_structure_set(ds: Any, p: Path) -> StructureSet:
    warnings: list[str] = []
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
    for rc in getattr(ds, "ROIContourSequence", []):
        num = int(getattr(rc, "ReferencedROINumber", -1))
        roi = rois.get(num)
        if roi is None:
            warnings.append(f"contours for ROI number {num}, which is not in the Structure Set ROI Sequence: ignored")
            continue
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
    return StructureSet(
        source=str(p),
        label=str(getattr(ds, "StructureSetLabel", "") or ""),
        frame_of_reference_uid=frame_uid,
        referenced_series_uids=tuple(s for s in series if s),
        referenced_image_uids=frozenset(u for u in images if u),
        patient_id_hash=_hash_id(str(getattr(ds, "PatientID", "") or "")),
        rois=list(rois.values()),
        warnings=warnings,
    )


# ============================================================================ the CT the contours refer to
@dataclass
class CTSeries:
    """A CT read from DICOM plus the header fields an RTSTRUCT refers to (slice order = ``image`` k order)."""

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
        patient_id_hash=_hash_id(str(getattr(h0, "PatientID", "") or "")),
        header=h0,
        warnings=notes,
    )


# ============================================================================ import
@dataclass
class ImportReport:
    """What happened to each ROI during rasterisation (JSON-friendly via :meth:`to_dict`)."""

    rois: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"rois": self.rois, "warnings": self.warnings}


def _roi_mask(roi: Roi, grid: Image, warnings: list[str]) -> tuple[np.ndarray, dict[str, Any]]:
    """Rasterise one ROI on ``grid``; returns the (z, y, x) mask and per-ROI facts."""
    nz, ny, nx = grid.array.shape
    m = ijk_to_lps_matrix(grid)[:3, :3]
    inv = np.linalg.inv(m)
    origin = np.asarray(grid.origin)
    per_slice: dict[int, list[np.ndarray]] = {}
    outside = between = skipped = 0
    max_offset_mm = 0.0
    for n, c in enumerate(roi.contours):
        if c.geometric_type and c.geometric_type != "CLOSED_PLANAR":
            skipped += 1
            warnings.append(f"ROI {roi.name!r}: contour {n + 1} is {c.geometric_type}, only CLOSED_PLANAR contours "
                            "are filled: skipped")
            continue
        if len(c.points) < 3:
            skipped += 1
            warnings.append(f"ROI {roi.name!r}: contour {n + 1} has {len(c.points)} point(s), fewer than 3: skipped")
            continue
        ijk = (c.points - origin) @ inv.T
        k = ijk[:, 2]
        if float(k.max() - k.min()) > PLANAR_TOL_SLICES:
            raise BadInput(
                f"ROI {roi.name!r}: contour {n + 1} is not in a CT slice plane (it spans "
                f"{(k.max() - k.min()) * grid.spacing[2]:.2f} mm along the slice normal): oblique contours are not "
                "supported")
        kc = float(k.mean())
        ks = int(np.floor(kc + 0.5))
        if ks < 0 or ks >= nz:
            outside += 1
            continue
        off = abs(kc - ks)
        if off > BETWEEN_SLICES_TOL:
            between += 1
            max_offset_mm = max(max_offset_mm, off * grid.spacing[2])
        per_slice.setdefault(ks, []).append(ijk[:, :2])
    mask = np.zeros((nz, ny, nx), dtype=bool)
    for ks, polys in per_slice.items():
        mask[ks] = fill_polygons(polys, (ny, nx))
    if outside:
        warnings.append(f"ROI {roi.name!r}: {outside} contour(s) lie outside the CT's slice range: not drawn")
    if per_slice:
        ks_all = sorted(per_slice)
        gaps = (ks_all[-1] - ks_all[0] + 1) - len(ks_all)
        if gaps:
            warnings.append(f"ROI {roi.name!r}: {gaps} CT slice(s) between its first and last contour have no contour "
                            "(contours drawn on fewer slices than the CT has): left empty, not interpolated")
    if between:
        warnings.append(f"ROI {roi.name!r}: {between} contour(s) lie between CT slices (up to {max_offset_mm:.2f} "
                        "mm off): each drawn on the nearest slice")
    facts = {"contours": len(roi.contours), "points": roi.n_points, "slices": len(per_slice),
             "slices_without_contour": (max(per_slice) - min(per_slice) + 1 - len(per_slice)) if per_slice else 0,
             "contours_outside": outside, "contours_between_slices": between, "contours_skipped": skipped}
    return mask, facts


def rasterize(ss: StructureSet, grid: Image, *, rois: Sequence[str] | None = None,
              mapping: Mapping[str, str | None] | None = None, rename: bool = True,
              check_frame: str | None = None) -> tuple[Segmentation, ImportReport]:
    """Rasterise a structure set onto the voxel grid of ``grid`` (a CT or any image in the same patient frame).

    Args:
        ss: parsed RTSTRUCT.
        grid: the target grid (only geometry is used); LPS mm.
        rois: only these ROIs (original or canonical names, case-insensitive); default all.
        mapping: site ROI-name mapping (exact name -> canonical), see :mod:`cervixtl.rt.roi_mapping`.
        rename: rename ROIs that match a CervixTL structure to the canonical name (``"CTV_45"`` -> ``"CTV"``).
        check_frame: the CT's FrameOfReferenceUID; ROIs in another frame are skipped and reported.

    Returns:
        The segmentation (one segment per ROI with contour points, in file order) and the report. ROIs with
        no contour points, in another frame of reference, or (when filtering) not requested are listed in the
        report, not in the segmentation.

    Raises:
        BadInput: a contour is oblique; ``rois`` names an ROI that does not exist.
    """
    from .roi_mapping import canonical_name

    report = ImportReport(warnings=list(ss.warnings))
    wanted = {r.strip().lower() for r in rois} if rois else None
    if wanted:
        known = {r.name.lower() for r in ss.rois} | {
            (canonical_name(r.name, mapping) or "").lower() for r in ss.rois}
        missing = sorted(w for w in wanted if w not in known)
        if missing:
            raise BadInput(f"{ss.source}: no ROI named {', '.join(missing)} (ROIs: {', '.join(ss.names)})")
    grid0 = grid.with_array(np.zeros(grid.array.shape, dtype=np.uint8))
    grid0.meta = {k: v for k, v in grid.meta.items() if k in ("source_format", "modality")}
    seg = Segmentation(grid0)
    used: set[str] = set()
    for roi in ss.rois:
        canon = canonical_name(roi.name, mapping)
        entry: dict[str, Any] = {"number": roi.number, "name": roi.name, "canonical": canon,
                                 "interpreted_type": roi.interpreted_type}
        report.rois.append(entry)
        if wanted and roi.name.lower() not in wanted and (canon or "").lower() not in wanted:
            entry["status"] = "not requested"
            continue
        if check_frame and roi.frame_of_reference_uid and roi.frame_of_reference_uid != check_frame:
            entry["status"] = "other frame of reference"
            report.warnings.append(f"ROI {roi.name!r} refers to another frame of reference than the CT: skipped")
            continue
        if roi.n_points == 0:
            entry["status"] = "no contour points"
            report.warnings.append(f"ROI {roi.name!r} has no contour points: skipped")
            continue
        mask, facts = _roi_mask(roi, grid0, report.warnings)
        entry.update(facts)
        name = roi.name
        if rename and canon:
            if canon.lower() in used:
                report.warnings.append(f"ROI {roi.name!r} also maps to {canon}: kept under its own name")
            else:
                name = canon
        used.add(name.lower())
        color = roi.color if roi.color is not None else None
        s = seg.set(name, mask, color=color)
        entry["segment"] = s.name
        entry["voxels"] = int(mask.sum())
        entry["volume_ml"] = round(float(mask.sum()) * grid0.voxel_volume_mm3 / 1000.0, 3)
        entry["status"] = "ok" if mask.any() else "empty after rasterisation"
        if not mask.any():
            report.warnings.append(f"ROI {roi.name!r}: no voxel centre inside its contours (structure smaller than "
                                   "a voxel or outside the grid)")
    return seg, report


def import_rtstruct(ct: str | os.PathLike | Image, rtstruct: str | os.PathLike, *,
                    rois: Sequence[str] | None = None, mapping: Mapping[str, str | None] | None = None,
                    rename: bool = True, allow_other_frame: bool = False) -> tuple[Segmentation, ImportReport]:
    """Read an RTSTRUCT and rasterise it onto its planning CT.

    Args:
        ct: CT DICOM folder (frame of reference, patient and referenced slices are checked), or an image
            file / :class:`Image` giving the grid only (no DICOM checks; e.g. a dose grid NRRD).
        rtstruct: the RTSTRUCT file.
        rois, mapping, rename: see :func:`rasterize`.
        allow_other_frame: downgrade "the RTSTRUCT's frame of reference is not the CT's" to a warning.

    Raises:
        BadInput: not an RTSTRUCT; another patient or frame of reference than the CT; CT slices that the
            contours refer to are missing from the CT folder; oblique contours.
    """
    ss = read_rtstruct(rtstruct)
    if mapping is None:
        from .roi_mapping import load_mapping

        mapping = load_mapping()
    frame: str | None = None
    if isinstance(ct, Image):
        grid = ct
    elif Path(ct).is_dir():
        ref_series = None
        if ss.referenced_series_uids:
            from ..io import list_dicom_series

            present = {s["series_uid"] for s in list_dicom_series(ct)}
            ref_series = next((u for u in ss.referenced_series_uids if u in present), None)
        cts = read_ct_series(ct, ref_series)
        grid = cts.image
        if ss.patient_id_hash and cts.patient_id_hash and ss.patient_id_hash != cts.patient_id_hash:
            raise BadInput(f"{ss.source}: the RTSTRUCT belongs to another patient (Patient ID differs from the CT's)")
        if ss.frame_of_reference_uid and cts.frame_of_reference_uid and \
                ss.frame_of_reference_uid != cts.frame_of_reference_uid:
            msg = (f"{ss.source}: the RTSTRUCT's frame of reference ({ss.frame_of_reference_uid}) is not the CT's "
                   f"({cts.frame_of_reference_uid}): contours would be misplaced")
            if not allow_other_frame:
                raise BadInput(msg + " (use --ignore-frame-of-reference if the two are known to be aligned)")
            ss.warnings.append(msg + "; used anyway as asked")
        else:
            frame = cts.frame_of_reference_uid or None
        if ref_series or not ss.referenced_series_uids:
            missing = ss.referenced_image_uids - set(cts.sop_instance_uids)
            if missing:
                raise BadInput(f"{ss.source}: the contours refer to {len(missing)} CT slice(s) that are not in "
                               f"{ct} (missing CT slices?)")
        elif ss.referenced_series_uids:
            ss.warnings.append("the CT folder does not hold the series the RTSTRUCT refers to; the CT of the same "
                               "frame of reference was used")
    else:
        from ..io import read_image

        grid = read_image(ct)
    return rasterize(ss, grid, rois=rois, mapping=mapping, rename=rename, check_frame=frame)


# ============================================================================ export
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


def _new_uid() -> UID:
    from pydicom.uid import generate_uid

    return generate_uid()


def _dicom_color(c: Sequence[float]) -> list[int]:
    return [int(round(min(max(float(v), 0.0), 1.0) * 255)) for v in c]


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
    from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
    from pydicom.sequence import Sequence as DSeq
    from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, UID, ExplicitVRLittleEndian

    cts.image.require_same_geometry(seg.grid, "segmentation")
    segments = seg.segments if names is None else [seg[n] for n in names]
    if not segments:
        raise BadInput("no segment to export")
    label = (label or "CervixTL").strip()[:16] or "CervixTL"

    now = _dt.datetime.now()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(RTSTRUCT_SOP_CLASS)
    sop_uid = _new_uid()
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds = FileDataset(None, {}, file_meta=meta, preamble=b"\0" * 128)  # type: ignore[arg-type]  # in memory: no file yet
    h = cts.header
    ds.SpecificCharacterSet = str(getattr(h, "SpecificCharacterSet", "ISO_IR 100") or "ISO_IR 100")
    ds.SOPClassUID = RTSTRUCT_SOP_CLASS
    ds.SOPInstanceUID = sop_uid
    ds.InstanceCreationDate = now.strftime("%Y%m%d")
    ds.InstanceCreationTime = now.strftime("%H%M%S")
    # Patient and General Study modules: the same as the CT, so the planning system files it with the CT.
    for kw in ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyInstanceUID", "StudyDate",
               "StudyTime", "ReferringPhysicianName", "StudyID", "AccessionNumber", "StudyDescription"):
        value = getattr(h, kw, None)
        setattr(ds, kw, value if value is not None else "")
    if not ds.StudyInstanceUID:
        ds.StudyInstanceUID = _new_uid()
    # RT Series + General Equipment modules.
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
    # Frame of Reference module: the CT's.
    frame_uid = cts.frame_of_reference_uid
    if not frame_uid:
        raise BadInput("the CT has no FrameOfReferenceUID; an RTSTRUCT cannot refer to it")
    ds.FrameOfReferenceUID = frame_uid
    ds.PositionReferenceIndicator = getattr(h, "PositionReferenceIndicator", None) or ""
    # Structure Set module.
    ds.StructureSetLabel = label
    ds.StructureSetName = label[:64]
    ds.StructureSetDate = ds.InstanceCreationDate
    ds.StructureSetTime = ds.InstanceCreationTime
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
    rst.ReferencedSOPInstanceUID = ds.StudyInstanceUID
    rst.RTReferencedSeriesSequence = DSeq([rse])
    rfr = Dataset()
    rfr.FrameOfReferenceUID = frame_uid
    rfr.RTReferencedStudySequence = DSeq([rst])
    ds.ReferencedFrameOfReferenceSequence = DSeq([rfr])

    roi_items, contour_items, obs_items = [], [], []
    report: dict[str, Any] = {"rois": [], "warnings": list(cts.warnings)}
    for number, s in enumerate(segments, start=1):
        contours = segment_contours(s.mask, seg.grid, min_area_mm2, smooth_sigma)
        r = Dataset()
        r.ROINumber = number
        r.ReferencedFrameOfReferenceUID = frame_uid
        r.ROIName = s.name[:64]
        r.ROIGenerationAlgorithm = "SEMIAUTOMATIC"
        roi_items.append(r)
        rc = Dataset()
        rc.ROIDisplayColor = _dicom_color(s.color)
        rc.ReferencedROINumber = number
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
        if seq:
            rc.ContourSequence = DSeq(seq)
        contour_items.append(rc)
        o = Dataset()
        o.ObservationNumber = number
        o.ReferencedROINumber = number
        o.RTROIInterpretedType = structures.rt_type_of(s.name)
        o.ROIInterpreter = ""
        obs_items.append(o)
        facts = {"number": number, "name": s.name, "interpreted_type": o.RTROIInterpretedType,
                 "voxels": s.voxels, "contours": len(contours), "points": int(sum(len(p) for _, p in contours)),
                 "slices": len({k for k, _ in contours})}
        if s.voxels == 0:
            facts["status"] = "empty: ROI written without contours"
            report["warnings"].append(f"segment {s.name!r} is empty: written as an ROI without contours")
        elif not contours:
            facts["status"] = "smaller than the minimum area: no contours"
            report["warnings"].append(f"segment {s.name!r}: every outline is below {min_area_mm2} mm^2: no contours")
        else:
            facts["status"] = "ok"
            if s.voxels <= 2:
                report["warnings"].append(f"segment {s.name!r} has only {s.voxels} voxel(s)")
        report["rois"].append(facts)
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
