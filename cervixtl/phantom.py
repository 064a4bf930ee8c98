"""Synthetic pelvic CT phantoms for two "sites" (tests, the demo and the transfer-learning benchmark).

:func:`make_phantom` draws a female pelvis from simple analytic shapes placed in LPS millimetres (+x patient
Left, +y Posterior, +z Superior; the phantom's centre is at (0, 0, 0)): body outline with a subcutaneous fat
layer, pelvic bones (sacrum, iliac wings, pubis) and both femoral heads, bladder, rectum (with gas), uterus,
cervix, upper vagina and a cervical tumour. Anatomy varies with the seed.

The two sites differ like two departments do:

* **contouring protocol** -- site A: CTV = GTV + 5 mm, cervix and the lower half of the uterus, PTV = CTV + 7 mm;
  site B: CTV = GTV + 10 mm, cervix, the whole uterus and the upper 20 mm of the vagina, PTV = CTV + (R, L, A, P,
  S, I) = (7, 7, 10, 10, 8, 8) mm. Both CTVs exclude bladder and rectum and stay inside the body.
* **scanner** -- site A: 3 mm slices, noise sd 10 HU, no offset; site B: 5 mm slices, noise sd 22 HU, a
  calibration slope of 1.12 below 300 HU (soft-tissue contrast 12 % higher, air below -1024 clipped) then
  +20 HU offset, slightly blurrier. Training augmentation has no additive HU shift and scales intensities
  about the normalised mean, so this piecewise-linear site-B calibration is not one of its transforms.

Returned image: int16 HU, ``array`` (z, y, x), identity direction (LPS).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage

from .errors import BadInput
from .image import Image
from .segmentation import Segmentation

#: Truth structures of every phantom, in output order.
STRUCTURES = ("GTV", "CTV", "PTV", "Bladder", "Rectum", "FemoralHead_L", "FemoralHead_R")

#: Field of view (x, y, z) in mm.
DEFAULT_FOV_MM = (320.0, 240.0, 180.0)


@dataclass(frozen=True)
class SiteProtocol:
    """Protocol and scanner of a phantom site (margins in mm, HU values)."""

    name: str
    spacing_mm: tuple[float, float, float]
    noise_hu: float
    hu_offset: float
    blur_mm: float
    gtv_margin_mm: float
    whole_uterus: bool
    vagina_mm: float
    ptv_margin_mm: float | tuple[float, float, float, float, float, float]
    soft_scale: float = 1.0


SITES: dict[str, SiteProtocol] = {
    "A": SiteProtocol("A", (3.0, 3.0, 3.0), 10.0, 0.0, 0.0, 5.0, False, 0.0, 7.0),
    "B": SiteProtocol("B", (3.0, 3.0, 5.0), 22.0, 20.0, 1.0, 10.0, True, 20.0, (7.0, 7.0, 10.0, 10.0, 8.0, 8.0),
                      1.12),
}

# HU of the tissues (site A calibration).
HU = {"air": -1000.0, "fat": -100.0, "soft": 40.0, "muscle": 50.0, "bladder": 8.0, "rectum_wall": 40.0,
      "gas": -850.0, "uterus": 70.0, "cervix": 62.0, "vagina": 50.0, "tumour": 95.0, "cortical": 900.0,
      "marrow": 250.0}


def site(name: str) -> SiteProtocol:
    """The :class:`SiteProtocol` of site ``"A"`` or ``"B"``.

    Raises:
        BadInput: unknown site.
    """
    key = str(name).strip().upper()
    if key not in SITES:
        raise BadInput(f"unknown phantom site {name!r}: use A or B")
    return SITES[key]


def _ellipsoid(X: np.ndarray, Y: np.ndarray, Z: np.ndarray, c: Sequence[float], r: Sequence[float]) -> np.ndarray:
    return ((X - c[0]) / r[0]) ** 2 + ((Y - c[1]) / r[1]) ** 2 + ((Z - c[2]) / r[2]) ** 2 <= 1.0


def _tube(X: np.ndarray, Y: np.ndarray, Z: np.ndarray, p0: Sequence[float], p1: Sequence[float],
          radius: float) -> np.ndarray:
    """Capsule (cylinder with round ends) of ``radius`` mm between LPS points p0 and p1."""
    a, b = np.asarray(p0, float), np.asarray(p1, float)
    d = b - a
    t = ((X - a[0]) * d[0] + (Y - a[1]) * d[1] + (Z - a[2]) * d[2]) / float(d @ d)
    t = np.clip(t, 0.0, 1.0)
    return (X - a[0] - t * d[0]) ** 2 + (Y - a[1] - t * d[1]) ** 2 + (Z - a[2] - t * d[2]) ** 2 <= radius ** 2


def _grow(mask: np.ndarray, mm: float, spacing_zyx: Sequence[float]) -> np.ndarray:
    """Isotropic growth by ``mm`` (Euclidean distance), computed in the mask's bounding box."""
    if mm <= 0 or not mask.any():
        return mask.copy()
    pad = [int(np.ceil(mm / s)) + 1 for s in spacing_zyx]
    idx = np.nonzero(mask)
    lo = [max(0, int(i.min()) - p) for i, p in zip(idx, pad)]
    hi = [min(n, int(i.max()) + p + 1) for i, p, n in zip(idx, pad, mask.shape)]
    sl = tuple(slice(a, b) for a, b in zip(lo, hi))
    dist = ndimage.distance_transform_edt(~mask[sl], sampling=tuple(spacing_zyx))
    out = np.zeros_like(mask)
    out[sl] = dist <= mm + 1e-6
    return out


def expand_directional(mask: np.ndarray, margin_mm: float | Sequence[float],
                       spacing: Sequence[float]) -> np.ndarray:
    """Grow a (z, y, x) mask on an LPS-aligned grid by ``margin_mm`` (isotropic, or R, L, A, P, S, I in mm).

    A voxel is added when some mask voxel lies within the ellipsoid whose semi-axis towards each patient
    direction is that direction's margin (octant by octant), i.e. a morphological dilation by an asymmetric
    ellipsoidal kernel. ``spacing`` is in mm, (x, y, z).
    """
    m6 = [float(margin_mm)] * 6 if isinstance(margin_mm, (int, float)) else [float(v) for v in margin_mm]
    if len(m6) != 6 or any(v < 0 for v in m6):
        raise BadInput(f"margin {margin_mm} must be one value or six values R,L,A,P,S,I >= 0 mm")
    if not mask.any() or max(m6) == 0:
        return mask.copy()
    r, left, a, p, s, i = m6
    half = [int(np.floor(max(lo, hi) / d + 1e-6)) for (lo, hi), d in zip(((i, s), (a, p), (r, left)),
                                                                         (spacing[2], spacing[1], spacing[0]))]
    kz, ky, kx = (np.arange(-h, h + 1) for h in half)
    dz = kz[:, None, None] * spacing[2]
    dy = ky[None, :, None] * spacing[1]
    dx = kx[None, None, :] * spacing[0]

    def term(d: np.ndarray, neg: float, pos: float) -> np.ndarray:
        lim = np.where(d < 0, neg, pos)
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(d == 0, 0.0, np.where(lim > 0, (d / np.where(lim > 0, lim, 1.0)) ** 2, np.inf))

    kernel = term(dx, r, left) + term(dy, a, p) + term(dz, i, s) <= 1.0 + 1e-9
    idx = np.nonzero(mask)
    lo = [max(0, int(v.min()) - h) for v, h in zip(idx, half)]
    hi = [min(n, int(v.max()) + h + 1) for v, h, n in zip(idx, half, mask.shape)]
    sl = tuple(slice(a_, b_) for a_, b_ in zip(lo, hi))
    out = np.zeros_like(mask, dtype=bool)
    out[sl] = ndimage.binary_dilation(mask[sl], structure=kernel)
    return out


def _ptv(grid: Image, ctv: np.ndarray, body: np.ndarray,
         margin_mm: float | tuple[float, float, float, float, float, float]) -> np.ndarray:
    """PTV = CTV + protocol margin inside the body, with the margin engine (:func:`cervixtl.margins.ptv_from_ctv`)
    when present, else :func:`expand_directional`."""
    try:
        from .margins import ptv_from_ctv
    except ImportError:
        return (expand_directional(ctv, margin_mm, grid.spacing) & body) | ctv
    return np.asarray(ptv_from_ctv(grid.with_array(ctv), margin_mm, body=grid.with_array(body)).array, dtype=bool)


@dataclass
class _Grid:
    """Voxel-centre coordinates (mm, LPS) of a phantom grid, broadcastable to its (z, y, x) ``shape``, and the
    random generator whose draw order fixes the phantom for a seed."""

    X: np.ndarray
    Y: np.ndarray
    Z: np.ndarray
    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]  # (x, y, z) mm
    origin: tuple[float, float, float]  # (x, y, z) mm, LPS
    rng: np.random.Generator

    def u(self, a: float, b: float) -> float:
        """One uniform draw in [a, b)."""
        return float(self.rng.uniform(a, b))

    def ell(self, c: Sequence[float], r: Sequence[float]) -> np.ndarray:
        """Ellipsoid with centre ``c`` and semi-axes ``r`` (x, y, z mm)."""
        return _ellipsoid(self.X, self.Y, self.Z, c, r)

    def tube(self, p0: Sequence[float], p1: Sequence[float], radius: float) -> np.ndarray:
        """Tube of ``radius`` mm from ``p0`` to ``p1`` (x, y, z mm)."""
        return _tube(self.X, self.Y, self.Z, p0, p1, radius)


def _make_grid(seed: int, sp: tuple[float, float, float], fov: tuple[float, ...]) -> _Grid:
    """A grid of ``fov`` mm at spacing ``sp`` (x, y, z mm) centred on (0, 0, 0) LPS."""
    n = [max(8, int(round(f / s))) for f, s in zip(fov, sp)]  # x, y, z
    ox, oy, oz = (-(k - 1) * s / 2.0 for k, s in zip(n, sp))
    x, y, z = (o + s * np.arange(k) for o, s, k in zip((ox, oy, oz), sp, n))
    return _Grid(x[None, None, :], y[None, :, None], z[:, None, None],
                 (n[2], n[1], n[0]), sp, (ox, oy, oz), np.random.default_rng(seed))


def _body(g: _Grid) -> tuple[np.ndarray, np.ndarray]:
    """Body outline (fat shell, muscle core, pelvic fat); returns (CT in HU float32 (z, y, x), body mask)."""
    X, Y = g.X, g.Y
    bx, by = g.u(150, 175), g.u(105, 125)
    body2d = ((X - 0) / bx) ** 2 + ((Y - g.u(-5, 5)) / by) ** 2 <= 1.0
    body = np.broadcast_to(body2d, g.shape)
    fat_mm = g.u(12, 28)
    inner2d = (X / (bx - fat_mm)) ** 2 + (Y / (by - fat_mm)) ** 2 <= 1.0
    ct = np.full(g.shape, HU["air"], dtype=np.float32)
    ct[body] = HU["fat"]
    ct[np.broadcast_to(inner2d, g.shape)] = HU["muscle"]
    ct[g.ell((0, 5, 0), (75, 70, 120))] = HU["fat"] + 30.0  # pelvic fat around the organs
    return ct, np.asarray(body)


def _bones(g: _Grid, ct: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Sacrum, ilia, pubis and femora written into ``ct``; returns (bone mask, femoral heads by name)."""
    bone = np.zeros(g.shape, dtype=bool)
    marrow = np.zeros(g.shape, dtype=bool)
    sac_c = (0.0, g.u(72, 85), 20.0)
    bone |= g.ell(sac_c, (42, 20, 70))
    marrow |= g.ell(sac_c, (36, 14, 64))
    for side in (-1, 1):
        il_c = (side * g.u(95, 110), g.u(25, 40), g.u(35, 50))
        bone |= g.ell(il_c, (14, 55, 50))
        marrow |= g.ell(il_c, (8, 49, 44))
        pub_c = (side * 25.0, g.u(-80, -70), g.u(-70, -60))
        bone |= g.ell(pub_c, (25, 11, 14))
    fem = {}
    fz = g.u(-62, -50)
    for side, name in ((1, "FemoralHead_L"), (-1, "FemoralHead_R")):
        r = g.u(21, 26)
        c = (side * g.u(82, 95), g.u(0, 12), fz + g.u(-3, 3))
        head = g.ell(c, (r, r, r))
        neck = g.tube(c, (c[0] + side * 35, c[1], c[2] - 45), 14)
        fem[name] = head
        bone |= head | neck
        marrow |= g.ell(c, (r - 4, r - 4, r - 4))
    ct[bone] = HU["cortical"]
    ct[marrow] = HU["marrow"]
    return bone, fem


def _organs(g: _Grid, ct: np.ndarray, body: np.ndarray, bone: np.ndarray) -> dict[str, Any]:
    """Bladder, rectum (with gas), cervix, uterus, vagina and the GTV written into ``ct``; returns the masks
    and the landmarks the CTV rule needs (``cx_lo`` lower cervix end, ``ut_c`` uterus centre, mm)."""
    fill = g.u(0.7, 1.3)  # bladder filling
    bl_c = (g.u(-8, 8), g.u(-55, -45), g.u(-30, -15) + 8 * fill)
    bladder = g.ell(bl_c, (38 * fill ** 0.5, 28 * fill ** 0.4, 28 * fill ** 0.6))
    rx = g.u(-6, 6)
    rec_lo, rec_hi = (rx, g.u(45, 52), -85.0), (rx + g.u(-8, 8), g.u(40, 50), g.u(15, 30))
    rr = g.u(13, 18)
    rectum = g.tube(rec_lo, rec_hi, rr)
    gas = g.tube(rec_lo, rec_hi, rr * g.u(0.3, 0.6)) & (g.u(-70, -20) < g.Z)
    ux, tilt = g.u(-8, 8), g.u(10, 25)
    cx_lo = (ux * 0.3, g.u(5, 12), g.u(-50, -45))
    cx_hi = (ux * 0.5, g.u(0, 6), g.u(-15, -10))
    cervix = g.tube(cx_lo, cx_hi, g.u(13, 17))
    ut_c = (ux, cx_hi[1] - tilt, cx_hi[2] + g.u(30, 38))
    uterus = g.ell(ut_c, (g.u(28, 38), g.u(18, 24), g.u(32, 42)))
    vag_len = 45.0
    vagina = g.tube((cx_lo[0], cx_lo[1] + 3, cx_lo[2] - vag_len), cx_lo, g.u(8, 11))
    gtv_c = (cx_lo[0] + (cx_hi[0] - cx_lo[0]) * 0.5 + g.u(-5, 5), (cx_lo[1] + cx_hi[1]) / 2 + g.u(-4, 4),
             (cx_lo[2] + cx_hi[2]) / 2 + g.u(-8, 8))
    gtv = g.ell(gtv_c, (g.u(12, 22), g.u(10, 18), g.u(12, 24)))
    gtv &= body & ~bone
    uterus &= ~bladder & ~rectum
    cervix &= ~bladder & ~rectum
    vagina &= ~bladder & ~rectum & ~cervix
    gtv &= ~bladder & ~rectum
    for mask, tissue in ((vagina, "vagina"), (uterus, "uterus"), (cervix, "cervix"), (gtv, "tumour"),
                         (bladder, "bladder"), (rectum, "rectum_wall"), (gas, "gas")):
        ct[mask] = HU[tissue]
    ct[~body] = HU["air"]
    return {"bladder": bladder, "rectum": rectum, "cervix": cervix, "uterus": uterus, "vagina": vagina,
            "gtv": gtv, "cx_lo": cx_lo, "ut_c": ut_c}


def _targets(g: _Grid, proto: SiteProtocol, org: dict[str, Any], body: np.ndarray, bone: np.ndarray
             ) -> tuple[np.ndarray, np.ndarray, Image]:
    """The site protocol's CTV and PTV (boolean (z, y, x)) and the segmentation grid."""
    sp_zyx = (g.spacing[2], g.spacing[1], g.spacing[0])
    gtv = org["gtv"]
    ctv = gtv | org["cervix"] | _grow(gtv, proto.gtv_margin_mm, sp_zyx)
    ctv |= org["uterus"] if proto.whole_uterus else org["uterus"] & (org["ut_c"][2] > g.Z)
    if proto.vagina_mm > 0:
        ctv |= org["vagina"] & (org["cx_lo"][2] - proto.vagina_mm <= g.Z)
    ctv &= body & ~org["bladder"] & ~org["rectum"] & ~bone
    ctv |= gtv
    grid = Image(np.zeros(g.shape, dtype=np.uint8), g.spacing, g.origin, np.eye(3), {"modality": "CT"})
    return ctv, _ptv(grid, ctv, body, proto.ptv_margin_mm), grid


def _scanner(g: _Grid, proto: SiteProtocol, ct: np.ndarray) -> Image:
    """The site scanner's calibration, offset, blur and noise; returns the CT (int16 HU)."""
    if proto.soft_scale != 1.0:  # calibration slope below 300 HU (soft-tissue contrast), continuous above
        ct = np.where(ct < 300.0, ct * proto.soft_scale, ct + 300.0 * (proto.soft_scale - 1.0)).astype(np.float32)
    ct += proto.hu_offset
    if proto.blur_mm > 0:
        ct = ndimage.gaussian_filter(ct, sigma=[proto.blur_mm / s for s in (g.spacing[2], g.spacing[1], g.spacing[0])])
    ct += g.rng.normal(0.0, proto.noise_hu, size=g.shape).astype(np.float32)
    ct = np.clip(np.round(ct), -1024, 3071).astype(np.int16)
    return Image(ct, g.spacing, g.origin, np.eye(3),
                 {"modality": "CT", "series_description": f"CervixTL phantom site {proto.name}"})


def make_phantom(seed: int, site: str = "A", spacing: Sequence[float] | None = None,
                 size: Sequence[float] = DEFAULT_FOV_MM) -> tuple[Image, Segmentation]:
    """A pelvic CT phantom and its truth contours.

    Args:
        seed: random seed; the same seed, site, spacing and size give the same phantom.
        site: ``"A"`` or ``"B"`` (protocol and scanner, see the module docstring).
        spacing: voxel size in mm, (x, y, z); default the site's scanner (A: 3 x 3 x 3, B: 3 x 3 x 5).
        size: field of view in mm, (x, y, z); the grid is centred on (0, 0, 0) LPS.

    Returns:
        (CT in HU as int16, truth :class:`Segmentation` with GTV, CTV, PTV, Bladder, Rectum, FemoralHead_L,
        FemoralHead_R on the CT grid).

    Raises:
        BadInput: unknown site, non-positive spacing or a field of view under 100 mm.
    """
    proto = globals()["site"](site)
    sp = tuple(float(s) for s in (spacing if spacing is not None else proto.spacing_mm))
    fov = tuple(float(s) for s in size)
    if len(sp) != 3 or any(s <= 0 for s in sp):
        raise BadInput(f"phantom spacing {sp} must be three positive numbers of mm")
    if len(fov) != 3 or any(f < 100 for f in fov):
        raise BadInput(f"phantom field of view {fov} must be three sizes of at least 100 mm")
    g = _make_grid(seed, (sp[0], sp[1], sp[2]), fov)
    ct, body = _body(g)
    bone, fem = _bones(g, ct)
    org = _organs(g, ct, body, bone)
    ctv, ptv, grid = _targets(g, proto, org, body, bone)
    image = _scanner(g, proto, ct)
    seg = Segmentation(grid)
    for name, m in (("GTV", org["gtv"]), ("CTV", ctv), ("PTV", ptv), ("Bladder", org["bladder"]),
                    ("Rectum", org["rectum"]), ("FemoralHead_L", fem["FemoralHead_L"]),
                    ("FemoralHead_R", fem["FemoralHead_R"])):
        seg.set(name, np.ascontiguousarray(m))
    return image, seg
