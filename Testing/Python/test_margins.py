"""Margins in mm against analytic geometry: spheres, boxes, flipped grids, shrink, range errors."""

from __future__ import annotations

import numpy as np
import pytest

from cervixtl.errors import BadInput, GeometryMismatch
from cervixtl.image import Image
from cervixtl.margins import ctv_from_gtv, expand, normalize_margin, prv, ptv_from_ctv, shrink, subtract, union

ANISO = (0.98, 0.98, 3.0)  # (x, y, z) mm


def _centres_mm(img: Image) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """LPS x, y, z (mm) of every voxel centre, each broadcastable to (z, y, x)."""
    nz, ny, nx = img.array.shape
    k, j, i = np.meshgrid(np.arange(nz), np.arange(ny), np.arange(nx), indexing="ij", sparse=True)
    d, s, o = img.direction, np.asarray(img.spacing), np.asarray(img.origin)
    x = o[0] + d[0, 0] * s[0] * i + d[0, 1] * s[1] * j + d[0, 2] * s[2] * k
    y = o[1] + d[1, 0] * s[0] * i + d[1, 1] * s[1] * j + d[1, 2] * s[2] * k
    z = o[2] + d[2, 0] * s[0] * i + d[2, 1] * s[1] * j + d[2, 2] * s[2] * k
    return x, y, z


def _grid(shape=(40, 110, 110), spacing=ANISO, direction=None, origin=(0.0, 0.0, 0.0)) -> Image:
    return Image(np.zeros(shape, bool), spacing, origin, np.eye(3) if direction is None else direction)


def _sphere(img: Image, centre_mm, radius_mm) -> tuple[Image, np.ndarray]:
    x, y, z = _centres_mm(img)
    r = np.sqrt((x - centre_mm[0]) ** 2 + (y - centre_mm[1]) ** 2 + (z - centre_mm[2]) ** 2)
    return img.with_array(r <= radius_mm), r


def _half_diag(spacing) -> float:
    return float(np.linalg.norm(spacing) / 2)


# ---------------------------------------------------------------------------- isotropic: analytic spheres
def test_sphere_20mm_plus_10mm_is_sphere_30mm_on_anisotropic_grid():
    grid = _grid()
    c = (53.9, 53.9, 60.0)
    gtv, r = _sphere(grid, c, 20.0)
    out = expand(gtv, 10.0).array
    analytic = r <= 30.0
    wrong = out != analytic
    # Every disagreement lies within one voxel (half its diagonal) of the analytic surface.
    assert np.all(np.abs(r[wrong] - 30.0) <= _half_diag(ANISO)), np.abs(r[wrong] - 30.0).max()
    assert wrong.sum() < 0.03 * analytic.sum()
    vol = out.sum() * np.prod(ANISO) / 1000
    assert vol == pytest.approx(4 / 3 * np.pi * 30.0 ** 3 / 1000, rel=0.03)
    assert out.dtype == bool and out.shape == gtv.array.shape
    assert np.all(out[gtv.array]), "the expansion must contain the input"


def test_voxel_ball_dilation_would_be_wrong_here():
    """Guard against a voxel structuring element: 10 voxels in z on 3 mm slices would be 30 mm."""
    grid = _grid()
    gtv, r = _sphere(grid, (53.9, 53.9, 60.0), 20.0)
    out = expand(gtv, 10.0).array
    zs = np.flatnonzero(out.any(axis=(1, 2)))
    extent_mm = (zs[-1] - zs[0] + 1) * 3.0
    assert abs(extent_mm - 60.0) <= 3.0


def test_sphere_shrink_30mm_minus_10mm_is_sphere_20mm():
    grid = _grid()
    ctv, r = _sphere(grid, (53.9, 53.9, 60.0), 30.0)
    out = shrink(ctv, 10.0).array
    wrong = out != (r <= 20.0)
    assert np.all(np.abs(r[wrong] - 20.0) <= _half_diag(ANISO))
    assert np.all(ctv.array[out]), "a shrunk mask stays inside the input"


# ---------------------------------------------------------------------------- directional: boxes
def _box(img: Image, lo_mm, hi_mm) -> Image:
    """Voxels whose centres lie in the LPS box [lo, hi] (mm)."""
    x, y, z = _centres_mm(img)
    inside = ((x >= lo_mm[0]) & (x <= hi_mm[0]) & (y >= lo_mm[1]) & (y <= hi_mm[1])
              & (z >= lo_mm[2]) & (z <= hi_mm[2]))
    return img.with_array(np.broadcast_to(inside, img.array.shape).copy())


def _faces_mm(mask: Image) -> dict[str, float]:
    """Physical positions (LPS mm) of the six faces of a mask's voxel boxes: R = min x ... S = max z."""
    x, y, z = _centres_mm(mask)
    m = mask.array
    half = np.abs(mask.direction @ np.asarray(mask.spacing)) / 2  # voxel half-size along LPS x, y, z
    xs = np.broadcast_to(x, m.shape)[m]
    ys = np.broadcast_to(y, m.shape)[m]
    zs = np.broadcast_to(z, m.shape)[m]
    return {"R": xs.min() - half[0], "L": xs.max() + half[0], "A": ys.min() - half[1],
            "P": ys.max() + half[1], "I": zs.min() - half[2], "S": zs.max() + half[2]}


MARGIN = dict(zip("RLAPSI", (5.0, 5.0, 10.0, 10.0, 7.0, 7.0)))
ASYM = dict(zip("RLAPSI", (2.0, 12.0, 0.0, 15.0, 4.5, 0.0)))
_SIGN = {"R": -1, "L": 1, "A": -1, "P": 1, "I": -1, "S": 1}


@pytest.mark.parametrize("margins", [MARGIN, ASYM], ids=["5,5,10,10,7,7", "asymmetric-with-zeros"])
@pytest.mark.parametrize("flip", ["LPS", "RAS"])
def test_box_faces_move_by_requested_mm(margins, flip):
    spacing = (0.98, 0.98, 2.5)
    shape = (40, 90, 90)
    if flip == "LPS":
        grid = _grid(shape, spacing, np.eye(3), (-40.0, -40.0, -50.0))
    else:  # same physical voxel centres, x and y index axes reversed (RAS-style storage)
        grid = _grid(shape, spacing, np.diag([-1.0, -1.0, 1.0]), (-40.0 + 89 * 0.98, -40.0 + 89 * 0.98, -50.0))
    box = _box(grid, (-15.0, -12.0, -20.0), (12.0, 14.0, 10.0))
    before = _faces_mm(box)
    out = expand(box, [margins[d] for d in "RLAPSI"])
    after = _faces_mm(out)
    half = {"R": 0.49, "L": 0.49, "A": 0.49, "P": 0.49, "S": 1.25, "I": 1.25}
    for d in "RLAPSI":
        moved = _SIGN[d] * (after[d] - before[d])
        assert abs(moved - margins[d]) <= half[d] + 1e-6, (d, moved, margins[d])
        if margins[d] == 0:
            assert moved == 0.0
    # A box grown by a box-aligned element stays a box on its faces: the centre cross-section is full.
    assert np.all(np.asarray(out.array) >= box.array)


def test_lps_and_ras_grids_give_the_same_physical_result():
    spacing = (0.98, 0.98, 2.5)
    shape = (30, 70, 60)
    lps = _grid(shape, spacing, np.eye(3), (-30.0, -35.0, -40.0))
    ras = _grid(shape, spacing, np.diag([-1.0, -1.0, 1.0]), (-30.0 + 59 * 0.98, -35.0 + 69 * 0.98, -40.0))
    ml, _ = _sphere(lps, (-2.0, 3.0, -5.0), 12.0)
    mr, _ = _sphere(ras, (-2.0, 3.0, -5.0), 12.0)
    assert np.array_equal(ml.array, mr.array[:, ::-1, ::-1])
    m = (3.0, 8.0, 0.0, 6.0, 5.0, 2.5)
    for shrink_ in (False, True):
        a = expand(ml, m, shrink=shrink_).array
        b = expand(mr, m, shrink=shrink_).array
        assert np.array_equal(a, b[:, ::-1, ::-1])


def test_single_direction_margin_grows_only_that_way():
    spacing = (1.0, 1.0, 2.0)
    grid = _grid((20, 40, 40), spacing, np.eye(3))
    box = _box(grid, (10.0, 10.0, 10.0), (20.0, 20.0, 20.0))
    out = expand(box, (0, 7, 0, 0, 0, 0)).array  # 7 mm towards the patient's Left = +x in LPS
    added = out & ~box.array
    x, _, _ = _centres_mm(grid)
    xs = np.broadcast_to(x, out.shape)[added]
    assert xs.min() == 21.0 and xs.max() == 27.0
    assert np.array_equal(out.any(axis=2), box.array.any(axis=2)), "no growth in y or z"


def test_directional_shrink_moves_faces_inwards():
    spacing = (0.98, 0.98, 2.5)
    grid = _grid((40, 90, 90), spacing, np.eye(3), (-40.0, -40.0, -50.0))
    box = _box(grid, (-25.0, -22.0, -30.0), (22.0, 24.0, 20.0))
    before = _faces_mm(box)
    after = _faces_mm(shrink(box, [MARGIN[d] for d in "RLAPSI"]))
    for d in "RLAPSI":
        moved = -_SIGN[d] * (after[d] - before[d])
        assert abs(moved - MARGIN[d]) <= (1.25 if d in "SI" else 0.49) + 1e-6, (d, moved)


def test_shrink_treats_outside_the_image_as_outside():
    grid = _grid((10, 10, 10), (1.0, 1.0, 1.0))
    full = grid.with_array(np.ones((10, 10, 10), bool))
    out = shrink(full, 2.0).array
    assert out.sum() == 6 ** 3 and out[2:8, 2:8, 2:8].all()


def test_growth_is_clipped_at_the_image_border():
    grid = _grid((10, 10, 10), (1.0, 1.0, 1.0))
    m = np.zeros((10, 10, 10), bool)
    m[0, 0, 0] = True
    out = expand(grid.with_array(m), 3.0).array
    k, j, i = np.nonzero(out)
    assert np.all(i ** 2 + j ** 2 + k ** 2 <= 9) and out.sum() == sum(
        1 for a in range(4) for b in range(4) for c in range(4) if a * a + b * b + c * c <= 9)


def test_zero_margin_and_empty_mask_are_identity():
    grid = _grid((10, 12, 14), (1.0, 1.0, 1.0))
    m = np.zeros((10, 12, 14), bool)
    m[3:6, 4:7, 5:9] = True
    assert np.array_equal(expand(grid.with_array(m), 0).array, m)
    assert np.array_equal(expand(grid.with_array(m), [0] * 6, shrink=True).array, m)
    assert not expand(grid, 10).array.any()
    # non-bool input: non-zero is inside
    assert np.array_equal(expand(grid.with_array(m.astype(np.uint8) * 7), 0).array, m)


def test_oblique_image_isotropic_ok_directional_refused():
    th = np.deg2rad(20)
    rot = np.array([[np.cos(th), -np.sin(th), 0], [np.sin(th), np.cos(th), 0], [0, 0, 1]])
    grid = _grid((10, 20, 20), (1.0, 1.0, 2.0), rot)
    m = np.zeros((10, 20, 20), bool)
    m[5, 10, 10] = True
    out = expand(grid.with_array(m), 2.0).array
    # in-plane: centre + 4 at 1 mm + 4 at sqrt(2) mm + 4 at 2 mm; plus the slice above and below (2 mm)
    assert out.sum() == 15
    with pytest.raises(BadInput, match="oblique"):
        expand(grid.with_array(m), (1, 2, 3, 4, 5, 6))


@pytest.mark.parametrize("bad", [-1, 50.5, float("nan"), float("inf"), (1, 2, 3), "10", (1, 2, 3, 4, 5, 60)])
def test_margin_out_of_range_is_bad_input(bad):
    grid = _grid((5, 5, 5), (1.0, 1.0, 1.0))
    with pytest.raises(BadInput):
        expand(grid, bad)


def test_normalize_margin():
    assert normalize_margin(10) == (10.0,) * 6
    assert normalize_margin([5, 5, 10, 10, 7, 7]) == (5.0, 5.0, 10.0, 10.0, 7.0, 7.0)
    assert normalize_margin([50]) == (50.0,) * 6


# ---------------------------------------------------------------------------- target chain
def test_target_chain_ctv_ptv_prv_subtract():
    spacing = (1.0, 1.0, 2.0)
    grid = _grid((30, 60, 60), spacing, np.eye(3))
    gtv, r = _sphere(grid, (30.0, 30.0, 30.0), 0.5)  # one voxel: its growth is exactly a ball
    assert gtv.array.sum() == 1
    x, y, z = _centres_mm(grid)
    body = grid.with_array(np.broadcast_to(x <= 40.0, grid.array.shape).copy())
    bone = grid.with_array(np.broadcast_to(y >= 40.0, grid.array.shape).copy())
    anat = _box(grid, (10.0, 28.0, 28.0), (24.0, 32.0, 32.0))
    ctv = ctv_from_gtv(gtv, 10.0, anatomical_ctv=anat, body=body, bone=bone).array
    grown = r <= 10.0 + 1e-9
    assert np.array_equal(ctv, ((grown | anat.array) & body.array & ~bone.array) | gtv.array)
    ptv = ptv_from_ctv(grid.with_array(ctv), 5.0, body=body).array
    assert np.all(ptv[ctv]) and not np.any(ptv & ~body.array)
    rectum = _box(grid, (30.0, 45.0, 20.0), (34.0, 55.0, 40.0))
    rprv = prv(rectum, 3.0).array
    assert np.all(rprv[rectum.array])
    opt = subtract(grid.with_array(ptv), grid.with_array(rprv)).array
    assert np.array_equal(opt, ptv & ~rprv)
    assert np.array_equal(union(grid.with_array(ptv), grid.with_array(rprv)).array, ptv | rprv)
    # margin None: anatomical CTV only (plus the GTV)
    only = ctv_from_gtv(gtv, None, anatomical_ctv=anat).array
    assert np.array_equal(only, anat.array | gtv.array)


def test_chain_refuses_other_grids():
    a = _grid((10, 10, 10), (1.0, 1.0, 1.0))
    b = _grid((10, 10, 11), (1.0, 1.0, 1.0))
    with pytest.raises(GeometryMismatch):
        ptv_from_ctv(a, 5.0, body=b)
    with pytest.raises(GeometryMismatch):
        subtract(a, b)


def test_min_plus_passes_equal_scipy_edt_for_isotropic_margins(monkeypatch):
    import cervixtl.margins as margins

    grid = _grid((30, 70, 70), (0.98, 0.98, 2.5))
    rng = np.random.default_rng(1)
    m = np.zeros(grid.array.shape, bool)
    m[10:20, 20:50, 25:45] = rng.random((10, 30, 20)) > 0.6  # irregular blob
    src = grid.with_array(m)
    for mm in (3.0, 7.3, 12.0):
        monkeypatch.setattr(margins, "EDT_ABOVE_OFFSETS", 10 ** 9)
        a = expand(src, mm).array
        sa = expand(src, mm, shrink=True).array
        monkeypatch.setattr(margins, "EDT_ABOVE_OFFSETS", 0)
        b = expand(src, mm).array
        sb = expand(src, mm, shrink=True).array
        assert np.array_equal(a, b) and np.array_equal(sa, sb), mm
