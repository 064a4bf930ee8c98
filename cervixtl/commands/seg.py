"""``cervixtl seg export|import``: DICOM Segmentation (SEG) objects in and out."""

from __future__ import annotations

import argparse

from ..api.dicom import seg_export, seg_import
from ._common import add_json_arg, parse_name_list, print_json, print_warnings, run_action

ORDER = 61


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("seg", help="export / import DICOM SEG (coded terminology)",
                       description="Write a segmentation as a DICOM SEG referring to the CT series, or read a DICOM "
                       "SEG into a .seg.nrrd / label map (geometry in LPS mm).")
    sp = p.add_subparsers(dest="seg_command", metavar="ACTION")
    exp = sp.add_parser("export", help="segmentation -> DICOM SEG referring to the CT series")
    exp.add_argument("ct", help="CT DICOM folder the segmentation was drawn on")
    exp.add_argument("segmentation", help=".seg.nrrd or label map (+ sidecar JSON) on the CT grid")
    exp.add_argument("out", help="output DICOM SEG file (.dcm)")
    exp.add_argument("--segments", help="comma-separated segment names to export; default all")
    exp.add_argument("--algorithm-type", default="SEMIAUTOMATIC", choices=["SEMIAUTOMATIC", "AUTOMATIC", "MANUAL"],
                     help="Segment Algorithm Type (default SEMIAUTOMATIC: AI proposal reviewed by a person)")
    add_json_arg(exp, "the export report (cervixtl-seg-export/1)")
    exp.set_defaults(action_func=run_export)
    imp = sp.add_parser("import", help="DICOM SEG -> .seg.nrrd or label map")
    imp.add_argument("seg", help="DICOM SEG file")
    imp.add_argument("out", help="output .seg.nrrd or .nii.gz")
    imp.add_argument("--reference", help="CT (DICOM folder or image) whose grid the output should use")
    add_json_arg(imp, "the segments (cervixtl-seg-import/1)")
    imp.set_defaults(action_func=run_import)
    p.set_defaults(func=run_action, action_help=p.format_help)


def run_export(args: argparse.Namespace) -> int:
    rep = seg_export(args.ct, args.segmentation, args.out, segments=parse_name_list(args.segments),
                     algorithm_type=args.algorithm_type)
    print_warnings(rep["warnings"])
    if args.json:
        print_json(rep)
        return 0
    for s in rep["segments"]:
        print(f"{s['number']:>3} {s['name']:<20} {s['voxels']:>9} voxels  type {s['type'][2]} ({s['type'][0]} "
              f"{s['type'][1]})")
    print(f"wrote {rep['file']}")
    return 0


def run_import(args: argparse.Namespace) -> int:
    rep = seg_import(args.seg, args.out, reference=args.reference)
    if args.json:
        print_json(rep)
        return 0
    for s in rep["segments"]:
        print(f"{s['name']:<24} {s['voxels']:>9} voxels")
    print(f"wrote {args.out}")
    return 0
