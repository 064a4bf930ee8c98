"""Planar contours <-> voxel masks, in the voxel index frame of one slice.

Conventions: a slice mask is indexed (y, x) = (row j, column i); polygon vertices are continuous index
coordinates ``(i, j)`` (column, row), so the centre of voxel ``[j, i]`` is the point ``(i, j)``.

* :func:`fill_polygons` -- a voxel is inside when its **centre** is inside the polygons by the **even-odd
  rule** (several contours on one slice: islands add, holes cut out, self-intersections alternate).
* :func:`mask_outlines` -- marching squares (``skimage.measure.find_contours`` at level 0.5) on the padded
  binary slice: closed outlines through the mid-points between inside and outside voxel centres (sub-voxel,
  never self-intersecting), holes and islands as separate polygons, collinear vertices dropped. Filling
  those outlines with :func:`fill_polygons` gives back exactly the same voxels.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np


def fill_polygons(polygons: Sequence[np.ndarray], shape: tuple[int, int]) -> np.ndarray:
    """Even-odd fill of closed polygons on a slice of ``shape`` = (ny, nx) voxels.

    Args:
        polygons: each an (N, 2) array of continuous index coordinates (i = column, j = row); closed
            implicitly (the last vertex joins the first). Polygons with fewer than 3 vertices are ignored.
        shape: (ny, nx) of the slice.

    Returns:
        Boolean (ny, nx) mask: True where the voxel centre is inside an odd number of polygon boundaries.
    """
    ny, nx = shape
    toggles = np.zeros((ny, nx + 1), dtype=np.int32)
    for poly in polygons:
        p = np.asarray(poly, dtype=float)
        if p.ndim != 2 or p.shape[0] < 3:
            continue
        x0, y0 = p[:, 0], p[:, 1]
        x1, y1 = np.roll(x0, -1), np.roll(y0, -1)
        lo, hi = np.minimum(y0, y1), np.maximum(y0, y1)
        # Rows j whose centre line y = j crosses the edge, half-open [lo, hi) so vertices count once.
        j_first = np.maximum(np.ceil(lo), 0).astype(np.int64)
        j_last = np.minimum(np.ceil(hi) - 1, ny - 1).astype(np.int64)
        keep = (j_last >= j_first) & (hi > lo)
        if not np.any(keep):
            continue
        x0, y0, x1, y1, j_first, j_last = x0[keep], y0[keep], x1[keep], y1[keep], j_first[keep], j_last[keep]
        counts = j_last - j_first + 1
        edge = np.repeat(np.arange(len(counts)), counts)
        rows = j_first[edge] + (np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts))
        t = (rows - y0[edge]) / (y1[edge] - y0[edge])
        xc = x0[edge] + t * (x1[edge] - x0[edge])
        # The crossing toggles every voxel centre strictly to its right: first such column is floor(xc) + 1.
        cols = np.clip(np.floor(xc).astype(np.int64) + 1, 0, nx)
        np.add.at(toggles, (rows, cols), 1)
    inside = np.cumsum(toggles, axis=1)[:, :nx] % 2 == 1
    return inside


def polygon_area(poly: np.ndarray) -> float:
    """Signed area (shoelace) of a closed polygon, in squared units of its coordinates."""
    p = np.asarray(poly, dtype=float)
    x, y = p[:, 0], p[:, 1]
    return 0.5 * float(np.dot(x, np.roll(y, -1)) - np.dot(np.roll(x, -1), y))


def drop_collinear(poly: np.ndarray, tol: float = 1e-9) -> np.ndarray:
    """Remove vertices that lie on the straight line through their two neighbours (shape unchanged)."""
    p = np.asarray(poly, dtype=float)
    if len(p) <= 3:
        return p
    prev, nxt = np.roll(p, 1, axis=0), np.roll(p, -1, axis=0)
    cross = (p[:, 0] - prev[:, 0]) * (nxt[:, 1] - p[:, 1]) - (p[:, 1] - prev[:, 1]) * (nxt[:, 0] - p[:, 0])
    keep = np.abs(cross) > tol
    if keep.sum() < 3:
        return p
    return p[keep]


#: Smoothed values are kept at least this far from the 0.5 iso-level on the correct side at voxel centres.
_CLAMP = 0.05
#: Vertex-removal tolerance (voxels) for smoothed outlines: two passes move the outline by at most twice
#: this, below the ~0.035-voxel clearance the clamped field keeps around voxel centres.
_SIMPLIFY_TOL = 0.01


def outline_field(mask2d: np.ndarray, smooth_sigma: float = 0.0) -> np.ndarray:
    """The scalar field whose 0.5 iso-line is the outline: the binary slice, or (``smooth_sigma`` > 0 voxels)
    a Gaussian-smoothed slice **clamped** so that every inside voxel centre stays above 0.5 and every outside
    centre below it. The outline is then smooth between voxel centres yet encloses exactly the same centres."""
    m = np.asarray(mask2d, dtype=bool)
    f = m.astype(np.float32)
    if smooth_sigma > 0:
        from scipy.ndimage import gaussian_filter

        g = gaussian_filter(f, float(smooth_sigma), mode="constant")
        f = np.where(m, np.maximum(g, 0.5 + _CLAMP), np.minimum(g, 0.5 - _CLAMP)).astype(np.float32)
    return f


def simplify(poly: np.ndarray, tol: float) -> np.ndarray:
    """Remove vertices closer than ``tol`` to the chord between their neighbours, in two passes over
    alternate vertices (so no two neighbours go in one pass); the outline moves by at most ``2 * tol``."""
    p = np.asarray(poly, dtype=float)
    for parity in (0, 1):
        n = len(p)
        if n <= 4:
            break
        prev, nxt = np.roll(p, 1, axis=0), np.roll(p, -1, axis=0)
        chord = nxt - prev
        length = np.maximum(np.hypot(chord[:, 0], chord[:, 1]), 1e-12)
        dist = np.abs(chord[:, 0] * (p[:, 1] - prev[:, 1]) - chord[:, 1] * (p[:, 0] - prev[:, 0])) / length
        drop = (dist < tol) & (np.arange(n) % 2 == parity)
        if n % 2 and parity == 0:
            drop[-1] = False  # vertex n-1 neighbours vertex 0 when n is odd
        if n - drop.sum() < 3:
            break
        p = p[~drop]
    return p


def mask_outlines(mask2d: np.ndarray, min_area_px: float = 0.0, smooth_sigma: float = 0.0) -> list[np.ndarray]:
    """Closed outline polygons of a boolean (ny, nx) slice, as (N, 2) arrays of (i, j) index coordinates.

    Args:
        mask2d: boolean slice (rows = y = j, columns = x = i).
        min_area_px: drop outlines (islands or holes) whose area is below this many voxel areas. A single
            voxel gives a diamond of area 0.5, so the default 0 keeps everything.
        smooth_sigma: in-plane Gaussian smoothing (voxels) of the outline; 0 = mid-points between voxel
            centres. Either way the outline encloses exactly the mask's voxel centres (see :func:`outline_field`).

    Returns:
        Polygons without the repeated closing vertex, outer boundaries and holes alike (even-odd filling
        restores the mask).
    """
    from skimage.measure import find_contours

    m = np.asarray(mask2d, dtype=bool)
    if not m.any():
        return []
    # Work on the bounding box of the mask plus a margin wider than the smoothing kernel (4 sigma).
    rows, cols = np.nonzero(m.any(axis=1))[0], np.nonzero(m.any(axis=0))[0]
    margin = int(np.ceil(4 * smooth_sigma)) + 1
    r0, c0 = max(rows[0] - margin, 0), max(cols[0] - margin, 0)
    sub = m[r0:rows[-1] + margin + 1, c0:cols[-1] + margin + 1]
    padded = np.pad(outline_field(sub, smooth_sigma), 1)
    out: list[np.ndarray] = []
    for c in find_contours(padded, 0.5, fully_connected="high"):
        if len(c) < 4:  # closed contour with fewer than 3 distinct vertices
            continue
        if np.allclose(c[0], c[-1]):
            c = c[:-1]
        poly = np.column_stack([c[:, 1] - 1.0 + c0, c[:, 0] - 1.0 + r0])  # (row, col) of padded box -> (i, j)
        poly = drop_collinear(poly)
        if smooth_sigma > 0:
            poly = simplify(poly, _SIMPLIFY_TOL)
        if len(poly) < 3 or abs(polygon_area(poly)) < max(min_area_px, 1e-9):
            continue
        out.append(poly)
    return out
