"""``cervixtl rtstruct import|export|list``: DICOM RT Structure Sets in and out."""

from __future__ import annotations

import argparse

from ..api.dicom import rtstruct_export, rtstruct_import, rtstruct_list
from ._common import add_json_arg, parse_name_list, print_json, print_warnings, run_action

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
    add_json_arg(imp, "the import report (cervixtl-rtstruct-import/1)")
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
    add_json_arg(exp, "the export report (cervixtl-rtstruct-export/1)")
    exp.set_defaults(action_func=run_export)

    ls = rs.add_parser("list", help="ROIs of an RTSTRUCT with contour counts and mapped names")
    ls.add_argument("rtstruct", help="RTSTRUCT DICOM file")
    ls.add_argument("--mapping", help="ROI name mapping JSON")
    ls.add_argument("--site", default="default", help="site key in the mapping file")
    add_json_arg(ls, "the ROIs (cervixtl-rtstruct-list/1)")
    ls.set_defaults(action_func=run_list)
    p.set_defaults(func=run_action, action_help=p.format_help)


def run_import(args: argparse.Namespace) -> int:
    rep = rtstruct_import(args.ct, args.rtstruct, args.out, rois=parse_name_list(args.rois), mapping=args.mapping,
                          site=args.site, keep_names=args.keep_names,
                          ignore_frame_of_reference=args.ignore_frame_of_reference)
    print_warnings(rep["warnings"])
    if args.json:
        print_json(rep)
        return 0
    for r in rep["rois"]:
        seg_name = r.get("segment") or "-"
        print(f"{r['name']:<24} -> {seg_name:<16} {r['status']}"
              + (f"  {r['voxels']} voxels, {r['volume_ml']} mL" if "voxels" in r else ""))
    print(f"wrote {args.out}")
    return 0


def run_export(args: argparse.Namespace) -> int:
    rep = rtstruct_export(args.ct, args.segmentation, args.out, label=args.structure_set_label,
                          segments=parse_name_list(args.segments), min_area_mm2=args.min_area_mm2,
                          smooth=args.smooth)
    print_warnings(rep["warnings"])
    if args.json:
        print_json(rep)
        return 0
    for r in rep["rois"]:
        print(f"{r['number']:>3} {r['name']:<20} {r['interpreted_type']:<9} {r['contours']:>5} contours "
              f"{r['points']:>7} points  {r['status']}")
    print(f"wrote {rep['file']}")
    return 0


def run_list(args: argparse.Namespace) -> int:
    rep = rtstruct_list(args.rtstruct, mapping=args.mapping, site=args.site)
    print_warnings(rep["warnings"])
    if args.json:
        print_json(rep)
        return 0
    for r in rep["rois"]:
        print(f"{r['number']:>3} {r['name']:<24} {str(r['canonical'] or '-'):<14} {r['interpreted_type']:<9} "
              f"{r['contours']:>4} contours {r['points']:>6} points")
    return 0
