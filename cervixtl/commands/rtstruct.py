"""``cervixtl rtstruct import|export|list``: DICOM RT Structure Sets in and out."""

from __future__ import annotations

import argparse
import json
from typing import Any

from ._common import parse_name_list, print_warnings, run_action

ORDER = 60


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("rtstruct", help="import / export DICOM RT Structure Sets (RTSTRUCT)",
                       description="Rasterise an RTSTRUCT onto its CT grid, or write a segmentation as an RTSTRUCT "
                       "that refers to the planning CT (geometry in LPS mm).")
    rs = p.add_subparsers(dest="rt_command", metavar="ACTION")

    imp = rs.add_parser("import", help="RTSTRUCT -> .seg.nrrd or label map on the CT grid",
                        description="Fill each ROI's closed planar contours (voxel centre inside, even-odd rule) on "
                        "the CT grid and write OUT (.seg.nrrd, or .nii.gz/.nrrd label map + sidecar JSON).")
    imp.add_argument("ct", help="CT DICOM folder (or an image file giving the grid only, e.g. a dose NRRD)")
    imp.add_argument("rtstruct", help="RTSTRUCT DICOM file")
    imp.add_argument("out", help="output .seg.nrrd or .nii.gz")
    imp.add_argument("--rois", help="comma-separated ROI names to import (original or CervixTL names); default all")
    imp.add_argument("--mapping", help="ROI name mapping JSON (default: Resources/roi_mapping.json)")
    imp.add_argument("--site", default="default", help="site key in the mapping file (default: default)")
    imp.add_argument("--keep-names", action="store_true", help="keep the clinical ROI names (no renaming to GTV/CTV/...)")
    imp.add_argument("--ignore-frame-of-reference", action="store_true",
                     help="accept an RTSTRUCT whose frame of reference differs from the CT's (warning instead of error)")
    imp.add_argument("--json", action="store_true", help="print the import report as JSON on stdout")
    imp.set_defaults(action_func=run_import)

    exp = rs.add_parser("export", help="segmentation -> RTSTRUCT referring to the CT series",
                        description="Trace sub-voxel outlines per slice of each segment and write an RT Structure "
                        "Set (new UIDs, CT series / SOP instances / frame of reference referenced).")
    exp.add_argument("ct", help="CT DICOM folder the segmentation was drawn on")
    exp.add_argument("segmentation", help=".seg.nrrd or label map (+ sidecar JSON) on the CT grid")
    exp.add_argument("out", help="output RTSTRUCT .dcm")
    exp.add_argument("--structure-set-label", default="CervixTL", help="Structure Set Label (max 16 characters)")
    exp.add_argument("--segments", help="comma-separated segment names to export; default all")
    exp.add_argument("--min-area-mm2", type=float, default=0.0,
                     help="drop outlines (islands/holes) smaller than this area in mm^2 (default 0: keep all)")
    exp.add_argument("--smooth", type=float, default=0.5, metavar="SIGMA_VOXELS",
                     help="in-plane outline smoothing in voxels (default 0.5; 0 = mid-point outline); the voxel "
                     "centres inside each contour never change")
    exp.add_argument("--json", action="store_true", help="print the export report as JSON on stdout")
    exp.set_defaults(action_func=run_export)

    ls = rs.add_parser("list", help="ROIs of an RTSTRUCT with contour counts and mapped names")
    ls.add_argument("rtstruct", help="RTSTRUCT DICOM file")
    ls.add_argument("--mapping", help="ROI name mapping JSON")
    ls.add_argument("--site", default="default", help="site key in the mapping file")
    ls.add_argument("--json", action="store_true", help="print JSON")
    ls.set_defaults(action_func=run_list)
    p.set_defaults(func=run_action, action_help=p.format_help)


def run_import(args: argparse.Namespace) -> int:
    from ..io import write_segmentation
    from ..rt.roi_mapping import load_mapping
    from ..rt.rtstruct import import_rtstruct

    mapping = load_mapping(args.mapping, args.site)
    seg, report = import_rtstruct(args.ct, args.rtstruct, rois=parse_name_list(args.rois), mapping=mapping,
                                  rename=not args.keep_names, allow_other_frame=args.ignore_frame_of_reference)
    if not seg.segments:
        from ..errors import BadInput

        raise BadInput(f"{args.rtstruct}: no ROI with contour points to import; nothing written")
    write_segmentation(seg, args.out)
    print_warnings(report.warnings)
    d: dict[str, Any] = {"output": args.out, **report.to_dict()}
    if args.json:
        print(json.dumps(d, indent=2))
    else:
        for r in report.rois:
            seg_name = r.get("segment") or "-"
            print(f"{r['name']:<24} -> {seg_name:<16} {r['status']}"
                  + (f"  {r['voxels']} voxels, {r['volume_ml']} mL" if "voxels" in r else ""))
        print(f"wrote {args.out}")
    return 0


def run_export(args: argparse.Namespace) -> int:
    from ..io import read_segmentation
    from ..rt.rtstruct import export_rtstruct

    seg = read_segmentation(args.segmentation)
    out, report = export_rtstruct(args.ct, seg, args.out, label=args.structure_set_label,
                                  names=parse_name_list(args.segments), min_area_mm2=args.min_area_mm2,
                                  smooth_sigma=args.smooth)
    print_warnings(report["warnings"])
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        for r in report["rois"]:
            print(f"{r['number']:>3} {r['name']:<20} {r['interpreted_type']:<9} {r['contours']:>5} contours "
                  f"{r['points']:>7} points  {r['status']}")
        print(f"wrote {out}")
    return 0


def run_list(args: argparse.Namespace) -> int:
    from ..rt.roi_mapping import canonical_name, load_mapping
    from ..rt.rtstruct import read_rtstruct

    mapping = load_mapping(args.mapping, args.site)
    ss = read_rtstruct(args.rtstruct)
    rows = [{"number": r.number, "name": r.name, "canonical": canonical_name(r.name, mapping),
             "interpreted_type": r.interpreted_type, "contours": len(r.contours), "points": r.n_points}
            for r in ss.rois]
    print_warnings(ss.warnings)
    if args.json:
        print(json.dumps({"label": ss.label, "rois": rows}, indent=2))
    else:
        for r in rows:
            print(f"{r['number']:>3} {r['name']:<24} {str(r['canonical'] or '-'):<14} {r['interpreted_type']:<9} "
                  f"{r['contours']:>4} contours {r['points']:>6} points")
    return 0
