"""Metrics against hand-computed answers (two offset cubes), MONAI on real labels, and paired statistics."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from cervixtl.errors import BadInput, GeometryMismatch
from cervixtl.image import Image
from cervixtl.metrics import evaluate_masks, evaluate_segmentations, json_safe, surface_voxels
from cervixtl.segmentation import Segmentation
from cervixtl.stats import describe, paired_wilcoxon
from shared_data import DATA

TOTALSEG = DATA / "totalseg_example"


def _cubes(spacing=(1.0, 1.0, 1.0)) -> tuple[Image, Image]:
    """Two 10-voxel cubes, the second shifted by 2 voxels along x (array axis 2)."""
    a = np.zeros((30, 30, 30), bool)
    b = np.zeros((30, 30, 30), bool)
    a[10:20, 10:20, 10:20] = True
    b[10:20, 10:20, 12:22] = True
    g = Image(np.zeros((30, 30, 30), np.uint8), spacing, (5.0, -3.0, 7.0))
    return g.with_array(a), g.with_array(b)


# Hand count of the directed distances A -> B (in voxel steps along x or laterally), per the docstring
# definitions (surface = voxels with a 6-neighbour outside). The cube has 10^3 - 8^3 = 488 surface voxels:
#   x = 10 face (100): 2 steps along x;  x = 11 ring (36): 1 step along x;  x = 12..18 rings (252): on B's
#   surface (0);  x = 19 face: ring (36) 0, the 28 next-to-ring voxels 1 lateral step, the inner 36 voxels
#   min(2 x-steps, 2 lateral steps). B -> A is the mirror image.
def test_offset_cubes_isotropic_hand_computed():
    a, b = _cubes()
    m = evaluate_masks(a, b, tolerance_mm=1.0)
    assert m["dice"] == pytest.approx(2 * 800 / 2000)
    assert m["hd_mm"] == pytest.approx(2.0)
    assert m["hd95_mm"] == pytest.approx(2.0)
    # 976 distances: 576 zeros, 128 ones, 272 twos
    assert m["msd_mm"] == pytest.approx((128 * 1 + 272 * 2) / 976)
    assert m["surface_dice"] == pytest.approx((576 + 128) / 976)
    assert evaluate_masks(a, b, tolerance_mm=0.5)["surface_dice"] == pytest.approx(576 / 976)
    assert evaluate_masks(a, b, tolerance_mm=2.0)["surface_dice"] == pytest.approx(1.0)
    assert m["volume_ref_ml"] == pytest.approx(1.0) and m["volume_pred_ml"] == pytest.approx(1.0)
    assert m["volume_diff_ml"] == pytest.approx(0.0) and m["empty"] is None


def test_offset_cubes_spacing_aware():
    # x voxels 1.5 mm: the shift is 3 mm; lateral steps stay 1 mm.
    a, b = _cubes((1.5, 1.0, 1.0))
    m = evaluate_masks(a, b, tolerance_mm=1.0)
    # A -> B: 288 x 0, 28 x 1 (lateral), 36 x 1.5 (x = 11 ring); the inner 6 x 6 of the x = 19 face:
    # its outer ring of 20 at 2 lateral steps (2 mm < 3 mm), its 4 x 4 centre 16 at 3 mm; 100 x 3 (x = 10
    # face); mirrored for B -> A.
    assert m["hd_mm"] == pytest.approx(3.0)
    assert m["hd95_mm"] == pytest.approx(3.0)
    assert m["msd_mm"] == pytest.approx(2 * (28 * 1 + 36 * 1.5 + 20 * 2 + 116 * 3) / 976)
    assert m["surface_dice"] == pytest.approx(2 * (288 + 28) / 976)
    assert m["volume_ref_ml"] == pytest.approx(1.5)


def test_surface_voxels_of_a_cube():
    a, _ = _cubes()
    assert surface_voxels(a.array).sum() == 10 ** 3 - 8 ** 3
    full = np.ones((4, 4, 4), bool)
    assert surface_voxels(full).sum() == 64 - 8, "voxels on the image border are surface"


def test_identical_and_empty_masks():
    a, b = _cubes()
    same = evaluate_masks(a, a)
    assert same["dice"] == 1.0 and same["hd95_mm"] == 0.0 and same["msd_mm"] == 0.0 and same["surface_dice"] == 1.0
    empty = a.with_array(np.zeros_like(a.array))
    both = evaluate_masks(empty, empty)
    assert both["dice"] == 1.0 and both["surface_dice"] == 1.0 and both["empty"] == "both"
    assert math.isnan(both["hd95_mm"]) and math.isnan(both["msd_mm"]) and both["volume_ref_ml"] == 0.0
    miss = evaluate_masks(a, empty)
    assert miss["dice"] == 0.0 and miss["surface_dice"] == 0.0 and miss["empty"] == "prediction"
    assert math.isnan(miss["hd95_mm"]) and miss["volume_diff_ml"] == pytest.approx(-1.0)
    extra = evaluate_masks(empty, b)
    assert extra["empty"] == "reference" and extra["dice"] == 0.0
    assert json.loads(json.dumps(json_safe(both)))["hd95_mm"] is None


def test_bad_tolerance_and_geometry():
    a, b = _cubes()
    with pytest.raises(BadInput):
        evaluate_masks(a, b, tolerance_mm=0)
    other = Image(b.array, (1.0, 1.0, 2.0), b.origin)
    with pytest.raises(GeometryMismatch):
        evaluate_masks(a, other)


def test_evaluate_segmentations_matches_by_name_and_handles_missing():
    a, b = _cubes()
    ref = Segmentation(a.with_array(np.zeros(a.array.shape, np.uint8)))
    ref.set("GTV", a.array)
    ref.set("Bladder", b.array)
    pred = Segmentation(a.with_array(np.zeros(a.array.shape, np.uint8)))
    pred.set("bladder", b.array)  # name matched case-insensitively
    pred.set("Rectum", a.array)
    rows = evaluate_segmentations(ref, pred)
    assert [r["name"] for r in rows] == ["GTV", "Bladder", "Rectum"]
    assert rows[0]["dice"] == 0.0 and rows[0]["empty"] == "prediction"
    assert rows[1]["dice"] == 1.0
    assert rows[2]["empty"] == "reference"
    with pytest.raises(BadInput, match="neither"):
        evaluate_segmentations(ref, pred, names=["PTV"])


# ---------------------------------------------------------------------------- real labels + MONAI
def _bladder() -> Image:
    if not (TOTALSEG / "example_seg.nii.gz").exists():
        pytest.skip(f"real test data not found: {TOTALSEG} (see shared/data/README.md)")
    from cervixtl.io import read_image

    seg = read_image(TOTALSEG / "example_seg.nii.gz")
    names = json.loads((TOTALSEG / "labels.json").read_text())
    label = int(next(k for k, v in names.items() if v == "urinary_bladder"))
    return seg.with_array(np.asarray(seg.array) == label)


def _shift(mask: np.ndarray, axis: int, k: int) -> np.ndarray:
    out = np.zeros_like(mask)
    src = [slice(None)] * 3
    dst = [slice(None)] * 3
    src[axis], dst[axis] = slice(0, mask.shape[axis] - k), slice(k, None)
    out[tuple(dst)] = mask[tuple(src)]
    return out


def test_real_bladder_shifted_by_one_voxel():
    bl = _bladder()
    assert int(bl.array.sum()) == 17744  # voxel count stated in the data's PROVENANCE.md
    shifted = bl.with_array(_shift(bl.array, 2, 1))  # 3 mm along x
    m = evaluate_masks(bl, shifted, tolerance_mm=2.0)
    inter = np.count_nonzero(bl.array & shifted.array)
    assert m["dice"] == pytest.approx(2 * inter / (2 * 17744))
    assert 0.8 < m["dice"] < 1.0
    assert m["volume_ref_ml"] == pytest.approx(17744 * 27 / 1000)
    # A translated surface voxel is a surface voxel of the translate: no distance exceeds the 3 mm shift.
    assert 0 < m["hd95_mm"] <= m["hd_mm"] <= 3.0 + 1e-9
    assert 0 < m["msd_mm"] < 3.0
    assert 0 < m["surface_dice"] < 1.0  # distances are 0 or >= 3 mm, tolerance 2 mm
    assert evaluate_masks(bl, shifted, tolerance_mm=3.0)["surface_dice"] == pytest.approx(1.0)


def test_real_labels_agree_with_monai():
    torch = pytest.importorskip("torch")
    from monai.metrics import compute_average_surface_distance, compute_hausdorff_distance, compute_surface_dice

    bl = _bladder()
    from scipy import ndimage

    pred = ndimage.binary_dilation(_shift(bl.array, 1, 2), iterations=1) & ~_shift(bl.array, 0, 3)
    pimg = bl.with_array(pred)
    ours = evaluate_masks(bl, pimg, tolerance_mm=4.0)
    yp = torch.from_numpy(pred[None, None].astype(np.float32))
    yt = torch.from_numpy(bl.array[None, None].astype(np.float32))
    sp = list(bl.spacing[::-1])  # array order (z, y, x)
    hd95 = float(compute_hausdorff_distance(yp, yt, include_background=True, percentile=95, spacing=sp))
    hd = float(compute_hausdorff_distance(yp, yt, include_background=True, spacing=sp))
    assd = float(compute_average_surface_distance(yp, yt, include_background=True, symmetric=True, spacing=sp))
    nsd = float(compute_surface_dice(yp, yt, [4.0], include_background=True, spacing=sp))
    assert ours["hd95_mm"] == pytest.approx(hd95, abs=1e-4)
    assert ours["hd_mm"] == pytest.approx(hd, abs=1e-4)
    assert ours["msd_mm"] == pytest.approx(assd, abs=1e-4)
    assert ours["surface_dice"] == pytest.approx(nsd, abs=1e-4)


# ---------------------------------------------------------------------------- statistics
def test_wilcoxon_exact_small_sample_by_hand():
    a = [0.70, 0.72, 0.75, 0.60, 0.81, 0.66]
    b = [0.78, 0.80, 0.79, 0.71, 0.85, 0.74]  # b better in all 6 pairs
    r = paired_wilcoxon(a, b)
    # all differences positive: W = 0; exact two-sided p = 2 / 2^6
    assert r["n"] == 6 and r["statistic"] == 0.0
    assert r["p_value"] == pytest.approx(2 / 64)
    assert r["median_difference"] == pytest.approx(np.median(np.subtract(b, a)))
    assert r["mean_a"] == pytest.approx(np.mean(a)) and r["reason"] is None


def test_wilcoxon_drops_nan_pairs_and_refuses_too_few():
    r = paired_wilcoxon([1.0, float("nan"), 3.0, 4.0], [1.5, 2.0, float("nan"), 4.5])
    assert r["n"] == 2 and r["n_dropped"] == 2
    assert math.isnan(r["p_value"]) and "too few" in r["reason"]
    same = paired_wilcoxon([1, 2, 3, 4, 5], [1, 2, 3, 4, 5])
    assert same["p_value"] == 1.0 and same["median_difference"] == 0.0
    with pytest.raises(BadInput):
        paired_wilcoxon([1, 2], [1, 2, 3])


def test_describe():
    d = describe([1.0, 2.0, 3.0, float("nan")])
    assert d["n"] == 3 and d["n_missing"] == 1 and d["median"] == 2.0 and d["std"] == pytest.approx(1.0)
