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
    rng = np.random.default_rng(seed)
    n = [max(8, int(round(f / s))) for f, s in zip(fov, sp)]  # x, y, z
    ox, oy, oz = (-(k - 1) * s / 2.0 for k, s in zip(n, sp))
    origin = (ox, oy, oz)
    x = origin[0] + sp[0] * np.arange(n[0])
    y = origin[1] + sp[1] * np.arange(n[1])
    z = origin[2] + sp[2] * np.arange(n[2])
    Z, Y, X = z[:, None, None], y[None, :, None], x[None, None, :]
    shape = (n[2], n[1], n[0])
    u = lambda a, b: float(rng.uniform(a, b))  # noqa: E731

    # ---------------------------------------------------------------- body
    bx, by = u(150, 175), u(105, 125)
    body2d = ((X - 0) / bx) ** 2 + ((Y - u(-5, 5)) / by) ** 2 <= 1.0
    body = np.broadcast_to(body2d, shape)
    fat_mm = u(12, 28)
    inner2d = (X / (bx - fat_mm)) ** 2 + (Y / (by - fat_mm)) ** 2 <= 1.0
    ct = np.full(shape, HU["air"], dtype=np.float32)
    ct[body] = HU["fat"]
    ct[np.broadcast_to(inner2d, shape)] = HU["muscle"]
    # pelvic fat around the organs
    ct[_ellipsoid(X, Y, Z, (0, 5, 0), (75, 70, 120))] = HU["fat"] + 30.0

    # ---------------------------------------------------------------- bones
    bone = np.zeros(shape, dtype=bool)
    marrow = np.zeros(shape, dtype=bool)
    sac_c = (0.0, u(72, 85), 20.0)
    sac = _ellipsoid(X, Y, Z, sac_c, (42, 20, 70))
    bone |= sac
    marrow |= _ellipsoid(X, Y, Z, sac_c, (36, 14, 64))
    for side in (-1, 1):
        il_c = (side * u(95, 110), u(25, 40), u(35, 50))
        bone |= _ellipsoid(X, Y, Z, il_c, (14, 55, 50))
        marrow |= _ellipsoid(X, Y, Z, il_c, (8, 49, 44))
        pub_c = (side * 25.0, u(-80, -70), u(-70, -60))
        bone |= _ellipsoid(X, Y, Z, pub_c, (25, 11, 14))
    fem = {}
    fz = u(-62, -50)
    for side, name in ((1, "FemoralHead_L"), (-1, "FemoralHead_R")):
        r = u(21, 26)
        c = (side * u(82, 95), u(0, 12), fz + u(-3, 3))
        head = _ellipsoid(X, Y, Z, c, (r, r, r))
        neck = _tube(X, Y, Z, c, (c[0] + side * 35, c[1], c[2] - 45), 14)
        fem[name] = head
        bone |= head | neck
        marrow |= _ellipsoid(X, Y, Z, c, (r - 4, r - 4, r - 4))
    ct[bone] = HU["cortical"]
    ct[marrow] = HU["marrow"]

    # ---------------------------------------------------------------- organs
    fill = u(0.7, 1.3)  # bladder filling
    bl_c = (u(-8, 8), u(-55, -45), u(-30, -15) + 8 * fill)
    bladder = _ellipsoid(X, Y, Z, bl_c, (38 * fill ** 0.5, 28 * fill ** 0.4, 28 * fill ** 0.6))
    rx = u(-6, 6)
    rec_lo, rec_hi = (rx, u(45, 52), -85.0), (rx + u(-8, 8), u(40, 50), u(15, 30))
    rr = u(13, 18)
    rectum = _tube(X, Y, Z, rec_lo, rec_hi, rr)
    gas = _tube(X, Y, Z, rec_lo, rec_hi, rr * u(0.3, 0.6)) & (u(-70, -20) < Z)
    ux, tilt = u(-8, 8), u(10, 25)
    cx_lo = (ux * 0.3, u(5, 12), u(-50, -45))
    cx_hi = (ux * 0.5, u(0, 6), u(-15, -10))
    cervix = _tube(X, Y, Z, cx_lo, cx_hi, u(13, 17))
    ut_c = (ux, cx_hi[1] - tilt, cx_hi[2] + u(30, 38))
    uterus = _ellipsoid(X, Y, Z, ut_c, (u(28, 38), u(18, 24), u(32, 42)))
    vag_len = 45.0
    vagina = _tube(X, Y, Z, (cx_lo[0], cx_lo[1] + 3, cx_lo[2] - vag_len), cx_lo, u(8, 11))
    gtv_c = (cx_lo[0] + (cx_hi[0] - cx_lo[0]) * 0.5 + u(-5, 5), (cx_lo[1] + cx_hi[1]) / 2 + u(-4, 4),
             (cx_lo[2] + cx_hi[2]) / 2 + u(-8, 8))
    gtv = _ellipsoid(X, Y, Z, gtv_c, (u(12, 22), u(10, 18), u(12, 24)))
    gtv &= body & ~bone
    uterus &= ~bladder & ~rectum
    cervix &= ~bladder & ~rectum
    vagina &= ~bladder & ~rectum & ~cervix
    gtv &= ~bladder & ~rectum
    ct[vagina] = HU["vagina"]
    ct[uterus] = HU["uterus"]
    ct[cervix] = HU["cervix"]
    ct[gtv] = HU["tumour"]
    ct[bladder] = HU["bladder"]
    ct[rectum] = HU["rectum_wall"]
    ct[gas] = HU["gas"]
    ct[~body] = HU["air"]

    # ---------------------------------------------------------------- protocol targets
    sp_zyx = (sp[2], sp[1], sp[0])
    ctv = gtv | cervix | _grow(gtv, proto.gtv_margin_mm, sp_zyx)
    if proto.whole_uterus:
        ctv |= uterus
    else:
        ctv |= uterus & (ut_c[2] > Z)
    if proto.vagina_mm > 0:
        ctv |= vagina & (cx_lo[2] - proto.vagina_mm <= Z)
    ctv &= body & ~bladder & ~rectum & ~bone
    ctv |= gtv
    grid = Image(np.zeros(shape, dtype=np.uint8), (sp[0], sp[1], sp[2]), origin, np.eye(3), {"modality": "CT"})
    ptv = _ptv(grid, ctv, np.asarray(body), proto.ptv_margin_mm)

    # ---------------------------------------------------------------- scanner
    if proto.soft_scale != 1.0:  # calibration slope below 300 HU (soft-tissue contrast), continuous above
        ct = np.where(ct < 300.0, ct * proto.soft_scale, ct + 300.0 * (proto.soft_scale - 1.0)).astype(np.float32)
    ct += proto.hu_offset
    if proto.blur_mm > 0:
        ct = ndimage.gaussian_filter(ct, sigma=[proto.blur_mm / s for s in sp_zyx])
    ct += rng.normal(0.0, proto.noise_hu, size=shape).astype(np.float32)
    ct = np.clip(np.round(ct), -1024, 3071).astype(np.int16)
    image = Image(ct, (sp[0], sp[1], sp[2]), origin, np.eye(3), {"modality": "CT", "series_description": f"CervixTL phantom site {proto.name}"})

    seg = Segmentation(grid)
    for name, m in (("GTV", gtv), ("CTV", ctv), ("PTV", ptv), ("Bladder", bladder), ("Rectum", rectum),
                    ("FemoralHead_L", fem["FemoralHead_L"]), ("FemoralHead_R", fem["FemoralHead_R"])):
        seg.set(name, np.ascontiguousarray(m))
    return image, seg
