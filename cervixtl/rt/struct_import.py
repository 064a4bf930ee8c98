"""Import an RT Structure Set: rasterise its CLOSED_PLANAR contours onto a CT grid.

Each ROI's contours are mapped from patient LPS mm to the CT's continuous voxel index frame; a voxel is inside
when its centre is inside by the even-odd rule (several contours per slice, holes), see
:func:`cervixtl.rt.contours.fill_polygons`. A contour lying between two slices goes to the nearest slice
(reported); a contour that is not in a CT slice plane (oblique) is refused. Masks are (z, y, x).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import BadInput
from ..image import Image, ijk_to_lps_matrix
from ..segmentation import Segmentation
from .contours import fill_polygons
from .ct_series import read_ct_series
from .structure_set import Roi, StructureSet, read_rtstruct

__all__ = ["PLANAR_TOL_SLICES", "BETWEEN_SLICES_TOL", "ImportReport", "rasterize", "import_rtstruct"]

#: Largest spread (in slice spacings) of a contour's points along the slice normal still called planar.
PLANAR_TOL_SLICES = 0.05
#: Offset (in slice spacings) from the nearest slice centre above which a contour is reported "between slices".
BETWEEN_SLICES_TOL = 0.1


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


def _check_requested(ss: StructureSet, wanted: set[str] | None, mapping: Mapping[str, str | None] | None) -> None:
    """Refuse requested ROI names (lower case) that are neither an ROI name nor its canonical name."""
    from .roi_mapping import canonical_name

    if not wanted:
        return
    known = {r.name.lower() for r in ss.rois} | {
        (canonical_name(r.name, mapping) or "").lower() for r in ss.rois}
    missing = sorted(w for w in wanted if w not in known)
    if missing:
        raise BadInput(f"{ss.source}: no ROI named {', '.join(missing)} (ROIs: {', '.join(ss.names)})")


def _skip_reason(roi: Roi, canon: str | None, wanted: set[str] | None, check_frame: str | None,
                 warnings: list[str]) -> str | None:
    """Why ``roi`` is not rasterised (its report status), or None when it is."""
    if wanted and roi.name.lower() not in wanted and (canon or "").lower() not in wanted:
        return "not requested"
    if check_frame and roi.frame_of_reference_uid and roi.frame_of_reference_uid != check_frame:
        warnings.append(f"ROI {roi.name!r} refers to another frame of reference than the CT: skipped")
        return "other frame of reference"
    if roi.n_points == 0:
        warnings.append(f"ROI {roi.name!r} has no contour points: skipped")
        return "no contour points"
    return None


def _add_segment(seg: Segmentation, roi: Roi, name: str, mask: np.ndarray, entry: dict[str, Any],
                 warnings: list[str]) -> None:
    """Store the (z, y, x) ``mask`` of ``roi`` as segment ``name``; fill voxels, volume (ml), status in ``entry``."""
    s = seg.set(name, mask, color=roi.color)
    entry["segment"] = s.name
    entry["voxels"] = int(mask.sum())
    entry["volume_ml"] = round(float(mask.sum()) * seg.grid.voxel_volume_mm3 / 1000.0, 3)
    entry["status"] = "ok" if mask.any() else "empty after rasterisation"
    if not mask.any():
        warnings.append(f"ROI {roi.name!r}: no voxel centre inside its contours (structure smaller than "
                        "a voxel or outside the grid)")


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
    _check_requested(ss, wanted, mapping)
    grid0 = grid.with_array(np.zeros(grid.array.shape, dtype=np.uint8))
    grid0.meta = {k: v for k, v in grid.meta.items() if k in ("source_format", "modality")}
    seg = Segmentation(grid0)
    used: set[str] = set()
    for roi in ss.rois:
        canon = canonical_name(roi.name, mapping)
        entry: dict[str, Any] = {"number": roi.number, "name": roi.name, "canonical": canon,
                                 "interpreted_type": roi.interpreted_type}
        report.rois.append(entry)
        reason = _skip_reason(roi, canon, wanted, check_frame, report.warnings)
        if reason is not None:
            entry["status"] = reason
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
        _add_segment(seg, roi, name, mask, entry, report.warnings)
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
