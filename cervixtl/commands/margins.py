"""``cervixtl margins INPUT OUTPUT --mm 10|R,L,A,P,S,I [--shrink] [--label N]``: grow or shrink a mask."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ._common import parse_margin_mm

if TYPE_CHECKING:
    from ..image import Image

ORDER = 30


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "margins", help="grow or shrink a mask by a margin in mm (isotropic or R,L,A,P,S,I)",
        description="Grow (or with --shrink, shrink) a binary mask by a margin in millimetres, exactly in "
        "physical space on anisotropic voxels. One value = isotropic; six values = R,L,A,P,S,I (patient "
        "directions, read from the image orientation). Each margin 0..50 mm. The output has the input's "
        "geometry; .seg.nrrd output keeps the segment name and colour, other formats get a 0/1 mask plus a "
        "sidecar <stem>.json with the name.")
    p.add_argument("input", help="mask, multi-label map (NIfTI/NRRD/MHA) or .seg.nrrd")
    p.add_argument("output", help="output mask (.nii.gz, .nrrd, .mha, ...) or .seg.nrrd")
    p.add_argument("--mm", required=True, metavar="MM|R,L,A,P,S,I",
                   help="margin in mm: one number (isotropic) or six numbers R,L,A,P,S,I, e.g. 5,5,10,10,7,7")
    p.add_argument("--shrink", action="store_true", help="shrink instead of grow")
    p.add_argument("--label", type=int, default=None, metavar="N",
                   help="label value to use from a multi-label map / .seg.nrrd (required when there are several)")
    p.add_argument("--json", action="store_true", help="print a JSON summary instead of a text line")
    p.set_defaults(func=run)


def load_mask(path: str, label: int | None) -> tuple[Image, str, tuple[float, float, float] | None]:
    """One non-empty binary mask (see :func:`cervixtl.io.read_mask`); returns (mask, structure name, colour)."""
    from ..io import read_mask

    mask = read_mask(path, label, require_nonempty=True)
    return mask, mask.meta["structure"], mask.meta.get("color")


def check_output_writable(path: str) -> None:
    """Fail early, with one line, when ``path`` cannot be written (folder missing and not creatable, not
    writable, or not a real folder); probes by creating and deleting a temporary file beside it."""
    import os
    import tempfile

    from ..atomic import check_writable_dir
    from ..errors import BadInput

    dest = check_writable_dir(path)
    if dest.is_dir():
        raise BadInput(f"{path} is a folder; give a file name")
    try:
        fd, tmp = tempfile.mkstemp(prefix=".cervixtl-probe.", dir=dest.parent if str(dest.parent) else ".")
        os.close(fd)
        os.unlink(tmp)
    except OSError as exc:
        raise BadInput(f"cannot write {path}: {exc.strerror or exc}") from None


def _check_output(path: str) -> None:
    from ..errors import BadInput
    from ..io import IMAGE_SUFFIXES, is_seg_nrrd

    name = Path(path).name.lower()
    if not (is_seg_nrrd(path) or any(name.endswith(s) for s in IMAGE_SUFFIXES)):
        raise BadInput(f"{path}: unknown output extension (use .seg.nrrd or one of {', '.join(IMAGE_SUFFIXES)})")
    check_output_writable(path)


def run(args: argparse.Namespace) -> int:
    from ..io import write_segmentation
    from ..margins import expand, normalize_margin
    from ..segmentation import Segmentation

    margin = normalize_margin(parse_margin_mm(args.mm), "--mm")
    _check_output(args.output)
    mask, name, color = load_mask(args.input, args.label)
    out = expand(mask, margin, shrink=args.shrink)
    # .seg.nrrd: one segment; other formats: a 0/1 mask plus a sidecar JSON that keeps the name and colour.
    seg = Segmentation(out.with_array(np.zeros(out.array.shape, np.uint8)))
    seg.set(name, out.array, color=color)
    write_segmentation(seg, args.output)
    vv = mask.voxel_volume_mm3 / 1000.0
    summary = {
        "input": Path(args.input).name, "output": str(args.output), "structure": name,
        "operation": "shrink" if args.shrink else "grow",
        "margin_mm": dict(zip(("R", "L", "A", "P", "S", "I"), margin)),
        "volume_in_ml": round(int(mask.array.sum()) * vv, 3), "volume_out_ml": round(int(out.array.sum()) * vv, 3),
    }
    from ..margins import cut_at_border

    cut = [] if args.shrink else cut_at_border(mask, margin)
    if cut:
        print(f"cervixtl: warning: the margin reaches past the image border ({', '.join(cut)}): {name} is cut "
              "off there", file=sys.stderr)
    if not out.array.any():
        print(f"cervixtl: warning: {name} shrunk by this margin is empty (written as an empty mask)",
              file=sys.stderr)
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        mm = ",".join(f"{m:g}" for m in margin) if len(set(margin)) > 1 else f"{margin[0]:g}"
        print(f"{name}: {summary['volume_in_ml']:.2f} mL -> {summary['volume_out_ml']:.2f} mL "
              f"({summary['operation']} {mm} mm) -> {args.output}")
    return 0
