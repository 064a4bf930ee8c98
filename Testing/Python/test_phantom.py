"""Synthetic pelvic phantoms: geometry, anatomy, protocols and margins checked against analytic facts."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from cervixtl.errors import BadInput
from cervixtl.phantom import STRUCTURES, expand_directional, make_phantom, site


def _centroid_lps(ct, mask):
    zyx = np.argwhere(mask).mean(axis=0)
    return ct.index_to_physical(zyx[::-1])


@pytest.fixture(scope="module")
def phantoms():
    return {s: make_phantom(3, s) for s in "AB"}


def test_deterministic_and_seed_dependent():
    a1, t1 = make_phantom(5, "A")
    a2, t2 = make_phantom(5, "A")
    b, tb = make_phantom(6, "A")
    assert np.array_equal(a1.array, a2.array)
    assert all(np.array_equal(t1.mask(n), t2.mask(n)) for n in STRUCTURES)
    assert not np.array_equal(t1.mask("Bladder"), tb.mask("Bladder"))


def test_geometry_per_site(phantoms):
    for s, (ct, truth) in phantoms.items():
        assert ct.spacing == site(s).spacing_mm
        assert ct.orientation_code() == "LPS"
        assert ct.array.dtype == np.int16
        # field of view 320 x 240 x 180 mm centred on (0, 0, 0)
        extent = np.array(ct.size) * np.array(ct.spacing)
        assert np.allclose(extent, (320, 240, 180), atol=max(ct.spacing))
        centre = ct.index_to_physical((np.array(ct.size) - 1) / 2)
        assert np.allclose(centre, 0, atol=1e-6)
        assert truth.grid.same_geometry(ct)
        assert truth.names == list(STRUCTURES)
        assert all(truth[n].voxels > 0 for n in STRUCTURES)


def test_nesting_and_exclusions(phantoms):
    for _, (ct, t) in phantoms.items():
        gtv, ctv, ptv = t.mask("GTV"), t.mask("CTV"), t.mask("PTV")
        assert not (gtv & ~ctv).any(), "GTV must lie inside CTV"
        assert not (ctv & ~ptv).any(), "CTV must lie inside PTV"
        assert not (ctv & t.mask("Bladder")).any() and not (ctv & t.mask("Rectum")).any()
        assert (ct.array[ptv] > -900).all(), "PTV is clipped to the body"


def test_left_right_and_anterior_posterior(phantoms):
    ct, t = phantoms["A"]
    # LPS: +x is the patient's left, +y posterior
    assert _centroid_lps(ct, t.mask("FemoralHead_L"))[0] > 50
    assert _centroid_lps(ct, t.mask("FemoralHead_R"))[0] < -50
    assert _centroid_lps(ct, t.mask("Bladder"))[1] < _centroid_lps(ct, t.mask("Rectum"))[1]


def test_tissue_hu(phantoms):
    ct, t = phantoms["A"]
    arr = ct.array.astype(float)
    assert abs(np.median(arr[t.mask("Bladder")]) - 8) < 10
    assert np.median(arr[t.mask("FemoralHead_L")]) > 200
    assert np.median(arr[t.mask("GTV")]) > np.median(arr[t.mask("Bladder")]) + 50
    assert np.median(arr[0, 0, :5]) < -900  # air in the corner
    ctb, tb = phantoms["B"]
    # site B: +20 HU calibration offset and more noise
    assert abs(np.median(ctb.array[tb.mask("Bladder")]) - 28) < 12
    body_a = arr[t.mask("Bladder")]
    body_b = ctb.array[tb.mask("Bladder")].astype(float)
    assert body_b.std() > 1.5 * body_a.std()


def test_site_b_protocol_larger_ctv(phantoms):
    vol = {s: t.volume_ml("CTV") for s, (_, t) in phantoms.items()}
    assert vol["B"] > 1.3 * vol["A"]
    # same anatomy: GTV volumes agree within the slice-thickness effect
    g = {s: t.volume_ml("GTV") for s, (_, t) in phantoms.items()}
    assert abs(g["A"] - g["B"]) / g["A"] < 0.25


def test_ptv_site_a_is_isotropic_7mm(phantoms):
    ct, t = phantoms["A"]
    ctv = t.mask("CTV")
    dist = ndimage.distance_transform_edt(~ctv, sampling=ct.spacing[::-1])
    expected = (dist <= 7.0 + 1e-6) & (ct.array > -900) | ctv
    ptv = t.mask("PTV")
    d = 2 * (ptv & expected).sum() / (ptv.sum() + expected.sum())
    assert d > 0.97


def test_ptv_site_b_directional_extents(phantoms):
    ct, t = phantoms["B"]
    ctv, ptv = t.mask("CTV"), t.mask("PTV")

    def bounds(m):
        idx = np.argwhere(m)
        return idx.min(axis=0), idx.max(axis=0)

    (c0, c1), (p0, p1) = bounds(ctv), bounds(ptv)
    sz, sy, sx = ct.spacing[::-1]
    # R,L,A,P,S,I = 7,7,10,10,8,8 mm; index +x = L, +y = P, +z = S
    assert abs((c0[2] - p0[2]) * sx - 7) <= sx and abs((p1[2] - c1[2]) * sx - 7) <= sx
    assert abs((c0[1] - p0[1]) * sy - 10) <= sy and abs((p1[1] - c1[1]) * sy - 10) <= sy
    assert abs((p1[0] - c1[0]) * sz - 8) <= sz and abs((c0[0] - p0[0]) * sz - 8) <= sz


def test_expand_directional_single_voxel():
    m = np.zeros((21, 21, 21), bool)
    m[10, 10, 10] = True
    out = expand_directional(m, (3, 0, 2, 0, 0, 4), (1.0, 1.0, 1.0))
    xs = np.nonzero(out[10, 10, :])[0]
    ys = np.nonzero(out[10, :, 10])[0]
    zs = np.nonzero(out[:, 10, 10])[0]
    assert (xs.min(), xs.max()) == (7, 10)     # 3 mm towards R (-x), none towards L
    assert (ys.min(), ys.max()) == (8, 10)     # 2 mm towards A (-y)
    assert (zs.min(), zs.max()) == (6, 10)     # 4 mm towards I (-z)
    assert out.sum() > 3 + 2 + 4 + 1           # ellipsoidal octants fill in between


def test_bad_arguments():
    with pytest.raises(BadInput):
        make_phantom(1, "C")
    with pytest.raises(BadInput):
        make_phantom(1, "A", spacing=(0, 1, 1))
    with pytest.raises(BadInput):
        make_phantom(1, "A", size=(50, 240, 180))
