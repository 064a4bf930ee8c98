"""Margin speed and accuracy on a planning-CT grid: cervixtl.margins vs SimpleITK BinaryDilate vs full EDT.

Grid 512 x 512 x 160 voxels at 0.98 x 0.98 x 2.5 mm (LPS), CTV = a 300 mL sphere. Measured on one CPU
thread, median of several runs:

* ours, isotropic 10 mm (target < 0.3 s) and directional R,L,A,P,S,I = 5,5,10,10,7,7 mm (target < 1 s);
* SimpleITK ``BinaryDilate`` with a voxel ball of radius round(10 mm / spacing) per axis (full volume);
* plain full-volume ``scipy.ndimage.distance_transform_edt`` with the spacing, threshold <= 10 mm.

Ratios are baseline time / our time (> 1: ours is faster). Geometric error against the analytic answer:
isotropic -> the sphere of radius r + 10 mm; directional -> the Minkowski sum of the sphere and the piecewise
ellipsoid, whose signed distance is evaluated with its support function over 2000 directions. Reported:
voxels that disagree with the analytic mask (and % of the analytic volume), the largest distance (mm) of a
disagreeing voxel centre from the analytic surface, and the volume error (mL).

    .venv/bin/python benchmarks/bench_margins.py [--repeats 7] [--baseline-repeats 3] [--json OUT]
"""

from __future__ import annotations

import os

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"):
    os.environ[_v] = "1"

import argparse  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SHAPE = (160, 512, 512)  # (z, y, x)
SPACING = (0.98, 0.98, 2.5)  # (x, y, z) mm
CTV_ML = 300.0
ISO_MM = 10.0
DIR_MM = (5.0, 5.0, 10.0, 10.0, 7.0, 7.0)  # R, L, A, P, S, I


def _median_time(fn: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times)), out


def _fibonacci_dirs(n: int) -> np.ndarray:
    i = np.arange(n) + 0.5
    phi = np.arccos(1 - 2 * i / n)
    theta = np.pi * (1 + 5 ** 0.5) * i
    return np.stack([np.cos(theta) * np.sin(phi), np.sin(theta) * np.sin(phi), np.cos(phi)], axis=1)


class Scene:
    """The CTV sphere on the grid, and analytic answers evaluated in a box around it."""

    def __init__(self) -> None:
        from cervixtl.image import Image

        self.r = (3 * CTV_ML * 1000 / (4 * np.pi)) ** (1 / 3)
        nz, ny, nx = SHAPE
        # centre slightly off the voxel lattice (x, y, z) mm, LPS with origin at voxel 0
        self.c = np.array([nx / 2 * SPACING[0] + 0.31, ny / 2 * SPACING[1] - 0.17, nz / 2 * SPACING[2] + 0.4])
        reach = self.r + max(ISO_MM, max(DIR_MM)) + 6.0
        lo = np.floor((self.c - reach) / SPACING).astype(int)
        hi = np.ceil((self.c + reach) / SPACING).astype(int) + 1
        self.box = tuple(slice(int(lo[a]), int(hi[a])) for a in (2, 1, 0))  # (z, y, x)
        k, j, i = np.meshgrid(*(np.arange(s.start, s.stop) for s in self.box), indexing="ij", sparse=True)
        self.dx = (i * SPACING[0] - self.c[0]).astype(np.float32)
        self.dy = (j * SPACING[1] - self.c[1]).astype(np.float32)
        self.dz = (k * SPACING[2] - self.c[2]).astype(np.float32)
        self.dist = np.sqrt(self.dx ** 2 + self.dy ** 2 + self.dz ** 2)
        mask = np.zeros(SHAPE, bool)
        mask[self.box] = self.dist <= self.r
        self.mask = Image(mask, SPACING)
        self.voxel_ml = float(np.prod(SPACING)) / 1000

    def ctv_ml(self) -> float:
        return float(self.mask.array.sum()) * self.voxel_ml

    def sphere_error(self, result: np.ndarray, radius: float) -> dict[str, float]:
        """Disagreement of a full-grid result with the analytic sphere of ``radius`` mm."""
        return self._error(result, self.dist - radius)

    def directional_error(self, result: np.ndarray, margins: tuple[float, ...], n_dirs: int = 2000) -> dict[str, float]:
        """Disagreement with the sphere grown by the piecewise ellipsoid (signed distance by support function)."""
        R, L, A, P, S, I = margins  # noqa: E741 - the patient directions
        sd = self.dist - (self.r + min(margins))  # inside the inner ball: certainly inside
        sd = np.where(self.dist > self.r + max(margins), self.dist - (self.r + max(margins)), sd)
        shell = (self.dist > self.r + min(margins) - 3.0) & (self.dist <= self.r + max(margins) + 3.0)
        idx = np.nonzero(shell)
        p = np.stack([np.broadcast_to(self.dx, shell.shape)[idx], np.broadcast_to(self.dy, shell.shape)[idx],
                      np.broadcast_to(self.dz, shell.shape)[idx]], axis=1).astype(np.float64)
        u = _fibonacci_dirs(n_dirs)
        # support function of the element: semi-axis per sign of u (LPS: +x = L, +y = P, +z = S)
        mx = np.where(u[:, 0] > 0, L, R)
        my = np.where(u[:, 1] > 0, P, A)
        mz = np.where(u[:, 2] > 0, S, I)
        h = self.r + np.sqrt((mx * u[:, 0]) ** 2 + (my * u[:, 1]) ** 2 + (mz * u[:, 2]) ** 2)
        best = np.full(len(p), -np.inf)
        for s in range(0, len(p), 20000):
            best[s:s + 20000] = np.max(p[s:s + 20000] @ u.T - h[None, :], axis=1)
        sd = sd.copy()
        sd[idx] = best
        return self._error(result, sd)

    def _error(self, result: np.ndarray, signed: np.ndarray) -> dict[str, float]:
        inside = signed <= 0
        sub = result[self.box]
        wrong = sub != inside
        outside_box = int(result.sum() - sub.sum())
        n_ana = int(inside.sum())
        return {
            "wrong_voxels": int(wrong.sum()) + outside_box,
            "wrong_percent": 100.0 * (int(wrong.sum()) + outside_box) / n_ana,
            "max_error_mm": float(np.abs(signed[wrong]).max()) if wrong.any() else 0.0,
            "volume_ml": float(result.sum()) * self.voxel_ml,
            "volume_error_ml": (float(result.sum()) - n_ana) * self.voxel_ml,
        }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=7, help="runs of our margins (median)")
    ap.add_argument("--baseline-repeats", type=int, default=3, help="runs of each baseline (median)")
    ap.add_argument("--json", default=None, help="also write the figures as JSON")
    args = ap.parse_args()

    import SimpleITK as sitk
    from scipy import ndimage

    from cervixtl.margins import expand

    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)
    scene = Scene()
    ctv = scene.mask
    print(f"grid {SHAPE[2]} x {SHAPE[1]} x {SHAPE[0]} voxels at {SPACING[0]} x {SPACING[1]} x {SPACING[2]} mm; "
          f"CTV sphere r = {scene.r:.2f} mm, {scene.ctv_ml():.1f} mL voxelised; 1 thread")

    rows: dict[str, dict[str, Any]] = {}
    t, out = _median_time(lambda: expand(ctv, ISO_MM).array, args.repeats)
    rows["ours isotropic 10 mm"] = {"time_s": t, **scene.sphere_error(out, scene.r + ISO_MM)}
    t, out = _median_time(lambda: expand(ctv, DIR_MM).array, args.repeats)
    rows["ours directional 5,5,10,10,7,7 mm"] = {"time_s": t, **scene.directional_error(out, DIR_MM)}
    t, out = _median_time(lambda: expand(ctv, DIR_MM, shrink=True).array, args.repeats)
    rows["ours directional shrink (info)"] = {"time_s": t}

    radius = [int(round(ISO_MM / s)) for s in SPACING]
    img = sitk.GetImageFromArray(ctv.array.astype(np.uint8))
    img.SetSpacing(SPACING)

    def sitk_dilate() -> np.ndarray:
        res = sitk.BinaryDilate(img, radius, sitk.sitkBall, 0, 1)
        return sitk.GetArrayViewFromImage(res).astype(bool)

    t, out = _median_time(sitk_dilate, args.baseline_repeats)
    rows[f"SimpleITK BinaryDilate ball r={radius} vox"] = {"time_s": t, **scene.sphere_error(out, scene.r + ISO_MM)}
    sampling = SPACING[::-1]
    t, out = _median_time(lambda: ndimage.distance_transform_edt(~ctv.array, sampling=sampling) <= ISO_MM,
                          args.baseline_repeats)
    rows["scipy full-volume EDT <= 10 mm"] = {"time_s": t, **scene.sphere_error(out, scene.r + ISO_MM)}

    names = list(rows)
    print(f"\n{'method':<46} {'time_s':>8} {'wrong_vox':>10} {'wrong_%':>8} {'max_err_mm':>10} "
          f"{'vol_mL':>8} {'dvol_mL':>8}")
    for n in names:
        r = rows[n]
        if "wrong_voxels" in r:
            print(f"{n:<46} {r['time_s']:8.3f} {r['wrong_voxels']:10d} {r['wrong_percent']:8.2f} "
                  f"{r['max_error_mm']:10.2f} {r['volume_ml']:8.1f} {r['volume_error_ml']:+8.1f}")
        else:
            print(f"{n:<46} {r['time_s']:8.3f}")
    iso, dirn = rows[names[0]]["time_s"], rows[names[1]]["time_s"]
    print("\nspeed ratios (baseline time / ours):")
    for n in names[3:]:
        b = rows[n]["time_s"]
        print(f"  {n:<46} {b / iso:8.1f}x vs ours isotropic, {b / dirn:8.1f}x vs ours directional")
    ok_iso, ok_dir = iso < 0.3, dirn < 1.0
    print(f"\ntargets: isotropic {iso:.3f} s < 0.3 s: {'PASS' if ok_iso else 'FAIL'}; "
          f"directional {dirn:.3f} s < 1 s: {'PASS' if ok_dir else 'FAIL'}")
    if args.json:
        from cervixtl.atomic import write_json_atomic

        write_json_atomic(args.json, rows)
    return 0 if ok_iso and ok_dir else 1


if __name__ == "__main__":
    sys.exit(main())
