"""``cervixtl evaluate --reference REF --prediction PRED [--labels 1,2] [--tolerance-mm 2] [--json OUT]``."""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

import numpy as np

from ._common import parse_int_list

ORDER = 35

HD95_DEFINITION = ("max of the two directed 95th percentiles of surface-voxel distances (mm), as MONAI "
                   "compute_hausdorff_distance(percentile=95)")


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
    p.add_argument("--json", default=None, metavar="OUT", help="also write the results as JSON to OUT")
    p.set_defaults(func=run)


def _label_map(path: str) -> tuple[Any, np.ndarray, dict[int, str]]:
    """(grid image, integer array, label -> name from the sidecar) of a multi-label map."""
    from ..errors import BadInput
    from ..io import read_label_sidecar
    from ..io import read_image

    img = read_image(path)
    arr = np.asarray(img.array)
    if arr.dtype.kind == "f":
        if not np.all(np.mod(arr, 1) == 0):
            raise BadInput(f"{path}: non-integer voxel values, not a label map (an intensity image?)")
        arr = arr.astype(np.int64)
    elif arr.dtype == bool:
        arr = arr.astype(np.uint8)
    values = np.unique(arr)
    if np.count_nonzero(values) > 1000:
        raise BadInput(f"{path}: {np.count_nonzero(values)} distinct values, not a label map (an intensity image?)")
    names = dict(read_label_sidecar(Path(path)).get("names", {}))
    return img, arr, names


def evaluate_files(reference: str, prediction: str, labels: list[int] | None = None,
                   tolerance_mm: float = 2.0) -> list[dict[str, Any]]:
    """Per-structure metrics (see :func:`cervixtl.metrics.evaluate_masks`) of two segmentation files.

    Label maps are matched by label value (``labels`` picks values), ``.seg.nrrd`` by name (``labels``
    picks the reference's segments with those label values). Each row has ``label`` and ``name``.

    Raises:
        BadInput: unreadable file, unknown label. GeometryMismatch: different grids.
    """
    from ..errors import BadInput
    from ..io import is_seg_nrrd, read_segmentation
    from ..metrics import evaluate_masks, evaluate_segmentations

    if is_seg_nrrd(reference) or is_seg_nrrd(prediction):
        ref = read_segmentation(reference)
        pred = read_segmentation(prediction)
        ref.grid.require_same_geometry(pred.grid, f"prediction {Path(prediction).name}",
                                       against=f"reference {Path(reference).name}")
        names = None
        if labels is not None:
            names = []
            for v in labels:
                s = next((s for s in ref.segments if s.label == v), None) or next(
                    (s for s in pred.segments if s.label == v), None)
                if s is None:
                    raise BadInput(f"label {v} is in neither {Path(reference).name} nor {Path(prediction).name}")
                names.append(s.name)
        rows = evaluate_segmentations(ref, pred, names, tolerance_mm)
        for r in rows:
            s = ref.find(r["name"]) or pred.find(r["name"])
            r["label"] = s.label if s is not None else None
        return [{"label": r.pop("label"), **r} for r in rows]
    rimg, rarr, rnames = _label_map(reference)
    pimg, parr, pnames = _label_map(prediction)
    rimg.require_same_geometry(pimg, f"prediction {Path(prediction).name}",
                               against=f"reference {Path(reference).name}")
    present = sorted((set(np.unique(rarr).tolist()) | set(np.unique(parr).tolist())) - {0})
    if labels is None:
        labels = [int(v) for v in present]
        if not labels:
            raise BadInput(f"{Path(reference).name} and {Path(prediction).name} are both empty: no label to evaluate")
    for v in labels:
        if v not in present:
            raise BadInput(f"label {v} is in neither {Path(reference).name} nor {Path(prediction).name} "
                           f"(labels: {', '.join(str(x) for x in present[:20]) or 'none'})")
    rows = []
    for v in labels:
        m = evaluate_masks(rimg.with_array(rarr == v), rimg.with_array(parr == v), tolerance_mm)
        rows.append({"label": int(v), "name": rnames.get(v) or pnames.get(v) or f"Label_{v}", **m})
    return rows


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
    from ..errors import BadInput
    from ..atomic import write_json_atomic
    from .margins import check_output_writable
    from ..metrics import json_safe

    tol = float(args.tolerance_mm)
    if not math.isfinite(tol) or tol <= 0:
        raise BadInput(f"--tolerance-mm must be a positive number of mm, got {args.tolerance_mm}")
    labels = parse_int_list(args.labels, "labels")
    if args.json:
        check_output_writable(args.json)
    rows = evaluate_files(args.reference, args.prediction, labels, tol)
    print(format_table(rows, tol))
    if args.json:
        write_json_atomic(args.json, json_safe({
            "schema": "cervixtl-evaluate/1",
            "reference": Path(args.reference).name,
            "prediction": Path(args.prediction).name,
            "tolerance_mm": tol,
            "definitions": {"hd95_mm": HD95_DEFINITION,
                            "msd_mm": "mean of all surface-voxel distances in both directions (mm)",
                            "surface_dice": "fraction of surface voxels of both masks within the tolerance of "
                                            "the other's surface",
                            "empty": "dice 0 (1 if both empty); distances null (undefined)"},
            "structures": rows,
        }))
    return 0
