"""``cervixtl info IMAGE``: geometry and intensity summary of an image."""

from __future__ import annotations

import argparse

from ._common import add_json_arg, print_json

ORDER = 10


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("info", help="size, spacing, origin, direction, orientation, HU range of an image",
                       description="Print the geometry (LPS mm, (x, y, z) order) and intensity range of a CT, "
                       "label map or DICOM series folder.")
    p.add_argument("image", help="image file (NIfTI, NRRD, MHA) or DICOM series folder")
    p.add_argument("--series", help="SeriesInstanceUID when the folder holds several series")
    add_json_arg(p, "the facts (cervixtl-info/1) instead of text")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..api.info import image_info

    d = image_info(args.image, args.series)
    if args.json:
        print_json(d)
        return 0
    for k, v in d.items():
        if k == "format" or v is None:
            continue
        if k == "segments":
            print("segments:")
            for s in v:
                print(f"  {s['label']:>3}  {s['name']:<20} {s['voxels']:>10} voxels  {s['volume_ml']:>10.2f} mL")
            continue
        if isinstance(v, list):
            v = ", ".join(f"{x:g}" if isinstance(x, float) else str(x) for x in v)
        print(f"{k:>18}: {v}")
    return 0
