"""``cervixtl evaluate --reference REF --prediction PRED [--labels 1,2] [--tolerance-mm 2] [--json [OUT]]``."""

from __future__ import annotations

import argparse
import math
from typing import Any

from ._common import parse_int_list, print_json

ORDER = 35


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate", help="Dice, HD95, mean surface distance, surface Dice, volumes per structure",
        description="Compare a predicted segmentation with a reference, one row per structure: Dice, HD95 "
        "(mm), mean surface distance (mm), surface Dice at a tolerance (mm), volumes (mL). Multi-label maps "
        "are matched by label value; when either file is a .seg.nrrd structures are matched by name. Both "
        "must be on the same voxel grid. Empty structures: dice 0 (1 if both empty), distances n/a.")
    p.add_argument("--reference", required=True, help="reference label map or .seg.nrrd")
    p.add_argument("--prediction", required=True, help="predicted label map or .seg.nrrd (same grid)")
    p.add_argument("--labels", default=None, metavar="1,2,...",
                   help="label values to evaluate (default: every label present in either file)")
    p.add_argument("--tolerance-mm", type=float, default=2.0, help="surface Dice tolerance in mm (default 2)")
    p.add_argument("--json", nargs="?", const="-", default=None, metavar="OUT",
                   help="--json alone: print the report (cervixtl-evaluate/1) on stdout instead of the table; "
                   "--json OUT: also write it to OUT")
    p.set_defaults(func=run)


def _fmt(x: Any, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "n/a"
    return f"{x:.{digits}f}"


def format_table(rows: list[dict[str, Any]], tolerance_mm: float) -> str:
    """Plain-text table, one row per structure."""
    head = (f"{'label':>5}  {'name':<22} {'dice':>6} {'hd95_mm':>8} {'msd_mm':>7} "
            f"{'sdice@' + format(tolerance_mm, 'g') + 'mm':>12} {'ref_ml':>9} {'pred_ml':>9} {'diff_ml':>9}  note")
    lines = [head]
    for r in rows:
        note = {None: "", "both": "both empty", "reference": "reference empty",
                "prediction": "prediction empty"}[r.get("empty")]
        lines.append(f"{r['label'] if r['label'] is not None else '-':>5}  {r['name'][:22]:<22} "
                     f"{_fmt(r['dice']):>6} {_fmt(r['hd95_mm'], 2):>8} {_fmt(r['msd_mm'], 2):>7} "
                     f"{_fmt(r['surface_dice']):>12} {_fmt(r['volume_ref_ml'], 2):>9} "
                     f"{_fmt(r['volume_pred_ml'], 2):>9} {_fmt(r['volume_diff_ml'], 2):>9}  {note}".rstrip())
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from ..metrics import evaluate_files

    out = None if args.json in (None, "-") else args.json
    rep = evaluate_files(args.reference, args.prediction, parse_int_list(args.labels, "labels"),
                         args.tolerance_mm, out=out)
    if args.json == "-":
        print_json(rep)
    else:
        print(format_table(rep["structures"], rep["tolerance_mm"]))
    return 0
