"""Agreement between a reference and a predicted contour: overlap, surface distances (mm), volumes (mL).

Definitions (per structure; masks (z, y, x) on one voxel grid, distances use the voxel spacing):

* **Dice** = 2 |A ∩ B| / (|A| + |B|).
* **Surface voxels** of a mask: its voxels with at least one of their 6 face neighbours outside the mask
  (voxels on the image border count as surface). This is MONAI's ``get_mask_edges`` definition.
* **Directed surface distances** A -> B: for every surface voxel of A, the Euclidean distance (mm, between
  voxel centres) to the nearest surface voxel of B (exact Euclidean distance transform with the spacing).
* **HD95** (mm) = max(95th percentile of A -> B, 95th percentile of B -> A), the robust Hausdorff distance
  of MONAI's ``compute_hausdorff_distance(percentile=95)`` and of most challenge papers;
  **HD** (mm) = the same with the maximum.
* **MSD** (mm), mean (symmetric) surface distance = mean of all distances A -> B and B -> A together
  (MONAI's ``compute_average_surface_distance(symmetric=True)``, a.k.a. ASSD).
* **Surface Dice** at tolerance tau (mm) = (#surface voxels of A within tau of B's surface + #surface voxels
  of B within tau of A's) / (#surface voxels of A + #surface voxels of B) (Nikolov et al. 2021, counted
  on surface voxels as MONAI's ``compute_surface_dice``).
* **Volumes** in mL (voxel count x voxel volume / 1000); ``volume_diff_ml`` = prediction - reference.

Empty masks (documented, not an error):

* both empty: dice 1.0, surface_dice 1.0 (nothing to find, nothing found); hd95_mm, hd_mm, msd_mm NaN
  (no surface, distances undefined); ``empty`` = "both".
* one empty: dice 0.0, surface_dice 0.0; distances NaN (undefined: there is no surface to measure to);
  ``empty`` = "reference" or "prediction". Aggregate with care: NaN is not "good".

The computation is done in the bounding box of both masks (+1 voxel), so it is fast on full CT grids;
results equal MONAI's full-volume functions (checked in the tests).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from .errors import BadInput
from .image import Image
from .reports import json_safe as json_safe  # re-exported: callers import it from here
from .segmentation import Segmentation

METRIC_KEYS = ("dice", "hd95_mm", "hd_mm", "msd_mm", "surface_dice", "volume_ref_ml", "volume_pred_ml",
               "volume_diff_ml")


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice = 2 |A ∩ B| / (|A| + |B|) of two masks of one shape (non-zero = inside); 1.0 when both are empty.
    The one Dice helper of the engine (training's per-channel Dice works on network outputs)."""
    a, b = np.asarray(a, dtype=bool), np.asarray(b, dtype=bool)
    denom = int(np.count_nonzero(a)) + int(np.count_nonzero(b))
    return 1.0 if denom == 0 else 2.0 * int(np.count_nonzero(a & b)) / denom


def _crop_box(a: np.ndarray, b: np.ndarray) -> tuple[slice, ...] | None:
    """Bounding box of a | b grown by one voxel (clipped to the array), or None when both are empty."""
    from .margins import bounding_box

    box = bounding_box(a | b)
    if box is None:
        return None
    return tuple(slice(max(0, s.start - 1), min(n, s.stop + 1)) for s, n in zip(box, a.shape))


def surface_voxels(mask: np.ndarray) -> np.ndarray:
    """Boolean (z, y, x) array of the surface voxels of a mask: inside voxels with a 6-neighbour outside
    (voxels on the array border count as surface)."""
    m = np.asarray(mask, dtype=bool)
    return m & ~ndimage.binary_erosion(m, structure=ndimage.generate_binary_structure(3, 1), border_value=0)


def surface_distances(a: np.ndarray, b: np.ndarray, spacing_zyx: tuple[float, float, float]
                      ) -> tuple[np.ndarray, np.ndarray]:
    """Directed surface distances in mm (A -> B, B -> A) between two non-empty boolean masks on one grid.

    Args:
        a, b: boolean arrays (z, y, x), same shape, both non-empty.
        spacing_zyx: voxel spacing in mm in **array order (z, y, x)**.
    """
    sa, sb = surface_voxels(a), surface_voxels(b)
    dist_to_b = ndimage.distance_transform_edt(~sb, sampling=spacing_zyx)
    dist_to_a = ndimage.distance_transform_edt(~sa, sampling=spacing_zyx)
    return dist_to_b[sa], dist_to_a[sb]


def evaluate_masks(reference: Image, prediction: Image, tolerance_mm: float = 2.0) -> dict[str, Any]:
    """Dice, HD95, HD, mean surface distance, surface Dice and volumes of a predicted vs a reference mask.

    Args:
        reference: reference (e.g. manual) mask; non-zero = inside.
        prediction: predicted mask on the same grid.
        tolerance_mm: surface Dice tolerance in mm (> 0).

    Returns:
        dict with ``dice``, ``hd95_mm``, ``hd_mm``, ``msd_mm``, ``surface_dice``, ``volume_ref_ml``,
        ``volume_pred_ml``, ``volume_diff_ml`` (prediction - reference), ``tolerance_mm`` and ``empty``
        (None, "reference", "prediction" or "both"); see the module docstring for definitions and the
        empty-mask values.

    Raises:
        GeometryMismatch: the masks are on different grids. BadInput: bad tolerance.
    """
    if not (isinstance(tolerance_mm, (int, float)) and math.isfinite(tolerance_mm) and tolerance_mm > 0):
        raise BadInput(f"surface Dice tolerance must be a positive number of mm, got {tolerance_mm!r}")
    reference.require_same_geometry(prediction, "prediction", against="the reference grid")
    a = reference.array if reference.array.dtype == bool else reference.array != 0
    b = prediction.array if prediction.array.dtype == bool else prediction.array != 0
    vv = reference.voxel_volume_mm3 / 1000.0
    na, nb = int(np.count_nonzero(a)), int(np.count_nonzero(b))
    out: dict[str, Any] = {
        "volume_ref_ml": na * vv, "volume_pred_ml": nb * vv, "volume_diff_ml": (nb - na) * vv,
        "tolerance_mm": float(tolerance_mm),
    }
    nan = float("nan")
    if na == 0 or nb == 0:
        both = na == 0 and nb == 0
        out.update(dice=1.0 if both else 0.0, surface_dice=1.0 if both else 0.0, hd95_mm=nan, hd_mm=nan,
                   msd_mm=nan, empty="both" if both else ("reference" if na == 0 else "prediction"))
        return _ordered(out)
    box = _crop_box(a, b)
    a, b = a[box], b[box]
    sx, sy, sz = reference.spacing
    d_ab, d_ba = surface_distances(a, b, (sz, sy, sx))
    all_d = np.concatenate([d_ab, d_ba])
    tol = float(tolerance_mm) + 1e-9
    out.update(
        dice=dice(a, b),
        hd95_mm=float(max(np.percentile(d_ab, 95), np.percentile(d_ba, 95))),
        hd_mm=float(max(d_ab.max(), d_ba.max())),
        msd_mm=float(all_d.mean()),
        surface_dice=float((np.count_nonzero(d_ab <= tol) + np.count_nonzero(d_ba <= tol)) / all_d.size),
        empty=None,
    )
    return _ordered(out)


def _ordered(d: dict[str, Any]) -> dict[str, Any]:
    keys = list(METRIC_KEYS) + [k for k in d if k not in METRIC_KEYS]
    return {k: d[k] for k in keys}


def evaluate_segmentations(reference: Segmentation, prediction: Segmentation, names: list[str] | None = None,
                           tolerance_mm: float = 2.0) -> list[dict[str, Any]]:
    """Per-structure metrics of two segmentations, structures matched by name (case-insensitive).

    Args:
        reference: reference segmentation.
        prediction: predicted segmentation on the same grid.
        names: structures to evaluate; None = every reference structure, then those only in the prediction.
            A structure missing on one side is evaluated as an empty mask there.
        tolerance_mm: surface Dice tolerance (mm).

    Returns:
        one dict per structure: ``name`` followed by the keys of :func:`evaluate_masks`.

    Raises:
        GeometryMismatch: different grids. BadInput: a requested name is in neither segmentation.
    """
    reference.grid.require_same_geometry(prediction.grid, "prediction segmentation",
                                          against="the reference grid")
    if names is None:
        names = list(reference.names)
        seen = {n.lower() for n in names}
        names += [n for n in prediction.names if n.lower() not in seen]
    rows = []
    empty = np.zeros(reference.grid.array.shape, dtype=bool)
    for name in names:
        rs, ps = reference.find(name), prediction.find(name)
        if rs is None and ps is None:
            raise BadInput(f"structure {name!r} is in neither segmentation (reference: "
                           f"{', '.join(reference.names) or 'none'}; prediction: {', '.join(prediction.names) or 'none'})")
        ra = rs.mask if rs is not None else empty
        pa = ps.mask if ps is not None else empty
        m = evaluate_masks(reference.grid.with_array(np.asarray(ra, bool)),
                           reference.grid.with_array(np.asarray(pa, bool)), tolerance_mm)
        found = rs if rs is not None else ps
        assert found is not None  # checked above: the name is in one of them
        rows.append({"name": found.name, **m})
    return rows


# ---------------------------------------------------------------------------- files
#: Definitions written into every ``cervixtl-evaluate/1`` report.
DEFINITIONS = {
    "hd95_mm": "max of the two directed 95th percentiles of surface-voxel distances (mm), as MONAI "
               "compute_hausdorff_distance(percentile=95)",
    "msd_mm": "mean of all surface-voxel distances in both directions (mm)",
    "surface_dice": "fraction of surface voxels of both masks within the tolerance of the other's surface",
    "empty": "dice 0 (1 if both empty); distances null (undefined)",
}
def _label_map(path: str | os.PathLike) -> tuple[Image, np.ndarray, dict[int, str]]:
    """(grid image, integer array (z, y, x), label -> name from the sidecar) of a multi-label map."""
    from .io import check_label_values, read_image, read_label_sidecar

    img = read_image(path)
    arr = np.asarray(img.array)
    check_label_values(arr, str(path))  # integer, non-negative, a sane number of labels
    arr = arr.astype(np.uint8) if arr.dtype == bool else arr.astype(np.int64, copy=False)
    names = dict(read_label_sidecar(Path(path)).get("names", {}))
    return img, arr, names


def _segmentation_rows(reference: Path, prediction: Path, labels: Sequence[int] | None,
                       tolerance_mm: float) -> list[dict[str, Any]]:
    """Rows of two segmentations matched by segment name (``labels``: the segments with those values)."""
    from .io import read_segmentation

    ref, pred = read_segmentation(reference), read_segmentation(prediction)
    ref.grid.require_same_geometry(pred.grid, f"prediction {prediction.name}", against=f"reference {reference.name}")
    names = None
    if labels is not None:
        names = []
        for v in labels:
            s = next((s for s in ref.segments if s.label == v), None) or next(
                (s for s in pred.segments if s.label == v), None)
            if s is None:
                raise BadInput(f"label {v} is in neither {reference.name} nor {prediction.name}")
            names.append(s.name)
    rows = []
    for r in evaluate_segmentations(ref, pred, names, tolerance_mm):
        s = ref.find(r["name"]) or pred.find(r["name"])
        rows.append({"label": s.label if s is not None else None, **r})
    return rows


def _label_map_rows(reference: Path, prediction: Path, labels: Sequence[int] | None,
                    tolerance_mm: float) -> list[dict[str, Any]]:
    """Rows of two label maps matched by label value (default: every value present in either)."""
    rimg, rarr, rnames = _label_map(reference)
    pimg, parr, pnames = _label_map(prediction)
    rimg.require_same_geometry(pimg, f"prediction {prediction.name}", against=f"reference {reference.name}")
    present = sorted((set(np.unique(rarr).tolist()) | set(np.unique(parr).tolist())) - {0})
    if labels is None:
        labels = [int(v) for v in present]
        if not labels:
            raise BadInput(f"{reference.name} and {prediction.name} are both empty: no label to evaluate")
    for v in labels:
        if v not in present:
            raise BadInput(f"label {v} is in neither {reference.name} nor {prediction.name} "
                           f"(labels: {', '.join(str(x) for x in present[:20]) or 'none'})")
    return [{"label": int(v), "name": rnames.get(v) or pnames.get(v) or f"Label_{v}",
             **evaluate_masks(rimg.with_array(rarr == v), rimg.with_array(parr == v), tolerance_mm)}
            for v in labels]


def evaluate_files(reference: str | os.PathLike, prediction: str | os.PathLike,
                   labels: Sequence[int] | None = None, tolerance_mm: float = 2.0,
                   out: str | os.PathLike | None = None) -> dict[str, Any]:
    """Per-structure metrics (:func:`evaluate_masks`) of two segmentation files on one voxel grid.

    Args:
        reference, prediction: label maps (+ sidecar names) or ``.seg.nrrd``. Label maps are matched by label
            value (``labels`` picks values), a ``.seg.nrrd`` on either side by name (``labels`` picks the
            segments with those label values).
        tolerance_mm: surface Dice tolerance in mm (> 0).
        out: also write the report as JSON there (atomically; checked before any work).

    Returns:
        The ``cervixtl-evaluate/1`` report: reference, prediction (file names), tolerance_mm, definitions,
        structures (one row per structure: label, name, dice, hd95_mm, hd_mm, msd_mm, surface_dice, volumes in
        mL, empty; undefined distances null).

    Raises:
        BadInput: unreadable file, unknown label, bad tolerance. GeometryMismatch: different grids.
    """
    from .api.masks import check_output_writable
    from .atomic import write_json_atomic
    from .io import is_seg_nrrd
    from .reports import report

    tol = float(tolerance_mm)
    if not math.isfinite(tol) or tol <= 0:
        raise BadInput(f"--tolerance-mm must be a positive number of mm, got {tolerance_mm}")
    if out is not None:
        check_output_writable(out)
    ref, pred = Path(reference), Path(prediction)
    by_name = is_seg_nrrd(ref) or is_seg_nrrd(pred)
    rows = (_segmentation_rows if by_name else _label_map_rows)(ref, pred, labels, tol)
    rep = report("evaluate", {"reference": ref.name, "prediction": pred.name, "tolerance_mm": tol,
                              "definitions": DEFINITIONS, "structures": rows})
    if out is not None:
        write_json_atomic(out, rep)
    return rep
