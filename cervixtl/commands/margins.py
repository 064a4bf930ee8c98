"""``cervixtl margins INPUT OUTPUT --mm 10|R,L,A,P,S,I [--shrink] [--label N]``: grow or shrink a mask."""

from __future__ import annotations

import argparse

from ._common import add_json_arg, print_json, print_warnings

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
    add_json_arg(p, "the summary (cervixtl-margins/1) instead of a text line")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..api.masks import margins_file

    rep = margins_file(args.input, args.output, args.mm, shrink=args.shrink, label=args.label)
    print_warnings(rep["warnings"])
    if args.json:
        print_json(rep)
        return 0
    m = list(rep["margin_mm"].values())
    mm = ",".join(f"{v:g}" for v in m) if len(set(m)) > 1 else f"{m[0]:g}"
    print(f"{rep['structure']}: {rep['volume_in_ml']:.2f} mL -> {rep['volume_out_ml']:.2f} mL "
          f"({rep['operation']} {mm} mm) -> {rep['output']}")
    return 0
