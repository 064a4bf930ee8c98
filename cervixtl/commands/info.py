"""``cervixtl info IMAGE``: geometry and intensity summary of an image."""

from __future__ import annotations

import argparse
import json

import numpy as np

ORDER = 10


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("info", help="size, spacing, origin, direction, orientation, HU range of an image",
                       description="Print the geometry (LPS mm, (x, y, z) order) and intensity range of a CT, "
                       "label map or DICOM series folder.")
    p.add_argument("image", help="image file (NIfTI, NRRD, MHA) or DICOM series folder")
    p.add_argument("--series", help="SeriesInstanceUID when the folder holds several series")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.set_defaults(func=run)


def describe(path: str, series: str | None = None) -> dict:
    """Geometry and intensity facts of an image, as a dict."""
    from ..io import is_seg_nrrd, read_image, read_segmentation

    if is_seg_nrrd(path):
        seg = read_segmentation(path)
        d = seg.grid.copy_geometry()
        d["segments"] = seg.summary()
        return {"file": path, **d}
    img = read_image(path, series)
    arr = img.array
    d = {"file": path, **img.copy_geometry(),
         "dtype": str(arr.dtype),
         "min": float(np.min(arr)), "max": float(np.max(arr))}
    for k in ("source_format", "modality", "series_description", "series_uid", "series_choice"):
        if img.meta.get(k):
            d[k] = img.meta[k]
    return d


def run(args: argparse.Namespace) -> int:
    d = describe(args.image, args.series)
    if args.json:
        print(json.dumps(d, indent=2))
        return 0
    for k, v in d.items():
        if k == "segments":
            print("segments:")
            for s in v:
                print(f"  {s['label']:>3}  {s['name']:<20} {s['voxels']:>10} voxels  {s['volume_ml']:>10.2f} mL")
            continue
        if isinstance(v, list):
            v = ", ".join(f"{x:g}" if isinstance(x, float) else str(x) for x in v)
        print(f"{k:>18}: {v}")
    return 0
