"""The DICOM RT jobs: RTSTRUCT import / export / list and DICOM SEG export / import (``cervixtl rtstruct``,
``cervixtl seg``). Geometry is LPS mm; masks are on the CT's voxel grid (arrays (z, y, x))."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from ..errors import BadInput
from . import report


def rtstruct_import(ct: str | os.PathLike, rtstruct: str | os.PathLike, out: str | os.PathLike, *,
                    rois: Sequence[str] | None = None, mapping: str | os.PathLike | None = None,
                    site: str = "default", keep_names: bool = False,
                    ignore_frame_of_reference: bool = False) -> dict[str, Any]:
    """Fill each ROI's closed planar contours (voxel centre inside, even-odd rule) on the CT grid and write
    ``out`` (``.seg.nrrd``, or a label map + sidecar JSON).

    Args:
        ct: CT DICOM folder (or an image file giving the grid only); rtstruct: the RTSTRUCT file.
        rois: ROI names to import (original or CervixTL names; default all); mapping / site: the ROI name
            mapping (default ``roi_mapping.json``) and its site key; keep_names: no renaming to GTV/CTV/...
        ignore_frame_of_reference: accept another frame of reference (a warning instead of an error).

    Returns:
        The ``cervixtl-rtstruct-import/1`` report: output, rois (name, segment, status, voxels, volume_ml),
        warnings.

    Raises:
        BadInput: unreadable files, no ROI with contour points, other frame of reference.
    """
    from ..io import write_segmentation
    from ..rt.roi_mapping import load_mapping
    from ..rt.rtstruct import import_rtstruct

    names = load_mapping(mapping, site)
    seg, rep = import_rtstruct(ct, rtstruct, rois=rois, mapping=names, rename=not keep_names,
                               allow_other_frame=ignore_frame_of_reference)
    if not seg.segments:
        raise BadInput(f"{rtstruct}: no ROI with contour points to import; nothing written")
    write_segmentation(seg, out)
    return report("rtstruct-import", {"output": os.fspath(out), **rep.to_dict()})


def rtstruct_export(ct_dir: str | os.PathLike, segmentation: str | os.PathLike, out: str | os.PathLike, *,
                    label: str = "CervixTL", segments: Sequence[str] | None = None, min_area_mm2: float = 0.0,
                    smooth: float = 0.5) -> dict[str, Any]:
    """Trace sub-voxel outlines per slice of each segment and write an RT Structure Set referring to the CT
    series in ``ct_dir`` (new UIDs; CT series, SOP instances and frame of reference referenced).

    Args:
        segmentation: ``.seg.nrrd`` or label map (+ sidecar JSON) on the CT grid; label: Structure Set Label.
        segments: names to export (default all); min_area_mm2: drop outlines smaller than this (mm^2);
        smooth: in-plane outline smoothing sigma in voxels (0: mid-point outline).

    Returns:
        The ``cervixtl-rtstruct-export/1`` report: file, sop_instance_uid, series_instance_uid, rois (number,
        name, interpreted_type, contours, points, status), warnings.
    """
    from ..io import read_segmentation
    from ..rt.rtstruct import export_rtstruct

    seg = read_segmentation(segmentation)
    _, rep = export_rtstruct(ct_dir, seg, out, label=label, names=segments, min_area_mm2=min_area_mm2,
                             smooth_sigma=smooth)
    return report("rtstruct-export", rep)


def rtstruct_list(rtstruct: str | os.PathLike, *, mapping: str | os.PathLike | None = None,
                  site: str = "default") -> dict[str, Any]:
    """The ROIs of an RTSTRUCT file with their contour counts and mapped CervixTL names.

    Returns:
        The ``cervixtl-rtstruct-list/1`` report: label, rois (number, name, canonical, interpreted_type,
        contours, points), warnings.
    """
    from ..rt.roi_mapping import canonical_name, load_mapping
    from ..rt.rtstruct import read_rtstruct

    names = load_mapping(mapping, site)
    ss = read_rtstruct(rtstruct)
    rows = [{"number": r.number, "name": r.name, "canonical": canonical_name(r.name, names),
             "interpreted_type": r.interpreted_type, "contours": len(r.contours), "points": r.n_points}
            for r in ss.rois]
    return report("rtstruct-list", {"label": ss.label, "rois": rows, "warnings": list(ss.warnings)})


def seg_export(ct_dir: str | os.PathLike, segmentation: str | os.PathLike, out: str | os.PathLike, *,
               segments: Sequence[str] | None = None, algorithm_type: str = "SEMIAUTOMATIC") -> dict[str, Any]:
    """Write a segmentation (``.seg.nrrd`` or label map + sidecar, on the CT grid) as a DICOM SEG with coded
    terminology referring to the CT series in ``ct_dir``.

    Returns:
        The ``cervixtl-seg-export/1`` report: file, segments (number, name, voxels, category, type,
        type_modifier), warnings.
    """
    from ..io import read_segmentation
    from ..rt.seg import export_seg

    seg = read_segmentation(segmentation)
    _, rep = export_seg(ct_dir, seg, out, names=segments, algorithm_type=algorithm_type)
    return report("seg-export", rep)


def seg_import(seg: str | os.PathLike, out: str | os.PathLike, *,
               reference: str | os.PathLike | None = None) -> dict[str, Any]:
    """Read a DICOM SEG into a ``.seg.nrrd`` / label map, on its own grid or on ``reference``'s (a CT).

    Returns:
        The ``cervixtl-seg-import/1`` report: output, segments (name, label, voxels, volume_ml).
    """
    from ..io import read_image, write_segmentation
    from ..rt.seg import read_seg

    ref = read_image(reference) if reference else None
    segmentation = read_seg(seg, reference=ref)
    write_segmentation(segmentation, out)
    return report("seg-import", {"output": os.fspath(out), "segments": segmentation.summary()})
