"""``cervixtl seg export|import``: DICOM Segmentation (SEG) objects in and out."""

from __future__ import annotations

import argparse
import json

from ._common import parse_name_list, print_warnings, run_action

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
    exp.add_argument("--json", action="store_true", help="print the export report as JSON")
    exp.set_defaults(action_func=run_export)
    imp = sp.add_parser("import", help="DICOM SEG -> .seg.nrrd or label map")
    imp.add_argument("seg", help="DICOM SEG file")
    imp.add_argument("out", help="output .seg.nrrd or .nii.gz")
    imp.add_argument("--reference", help="CT (DICOM folder or image) whose grid the output should use")
    imp.add_argument("--json", action="store_true", help="print the segments as JSON")
    imp.set_defaults(action_func=run_import)
    p.set_defaults(func=run_action, action_help=p.format_help)


def run_export(args: argparse.Namespace) -> int:
    from ..io import read_segmentation
    from ..rt.seg import export_seg

    seg = read_segmentation(args.segmentation)
    names = parse_name_list(args.segments)
    out, report = export_seg(args.ct, seg, args.out, names=names, algorithm_type=args.algorithm_type)
    print_warnings(report["warnings"])
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        for s in report["segments"]:
            print(f"{s['number']:>3} {s['name']:<20} {s['voxels']:>9} voxels  type {s['type'][2]} ({s['type'][0]} "
                  f"{s['type'][1]})")
        print(f"wrote {out}")
    return 0


def run_import(args: argparse.Namespace) -> int:
    from ..io import read_image, write_segmentation
    from ..rt.seg import read_seg

    ref = read_image(args.reference) if args.reference else None
    seg = read_seg(args.seg, reference=ref)
    write_segmentation(seg, args.out)
    rows = seg.summary() if hasattr(seg, "summary") else [{"name": s.name, "voxels": s.voxels} for s in seg.segments]
    if args.json:
        print(json.dumps({"output": args.out, "segments": rows}, indent=2, default=str))
    else:
        for s in seg.segments:
            print(f"{s.name:<24} {s.voxels:>9} voxels")
        print(f"wrote {args.out}")
    return 0
