"""Live margin preview speed in the CervixTL Slicer module (target: under 0.3 s per slider update).

A typical pelvic planning CT grid (512 x 512 x 120 voxels of 0.98 x 0.98 x 3 mm) is hosted in a real MRML
scene (``slicer-core``) with GTV, CTV, Rectum and Bladder segments. Each update is what the module does when
a margin slider moves: ``MarginPreview.update`` (engine margins on cached masks, written back into the CTV /
PTV segments, PTV-organ overlap in mL). The baseline in the same run is the naive way: read the masks from the
segmentation node again and run the margin on the whole grid every update.

    .venv/bin/python benchmarks/bench_margin_preview.py [--repeats 8] [--small]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "CervixTL"))
sys.path.insert(0, str(REPO / "Testing" / "Slicer"))


def _ellipsoid(shape, spacing_zyx, centre_mm, radii_mm):  # noqa: ANN001, ANN202
    z, y, x = (np.arange(n) * s for n, s in zip(shape, spacing_zyx))
    return ((((z[:, None, None] - centre_mm[0]) / radii_mm[0]) ** 2 + ((y[None, :, None] - centre_mm[1]) / radii_mm[1]) ** 2
             + ((x[None, None, :] - centre_mm[2]) / radii_mm[2]) ** 2) <= 1.0)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=8, help="slider positions timed (default 8)")
    ap.add_argument("--small", action="store_true", help="256 x 256 x 60 grid (quick check)")
    a = ap.parse_args(argv)

    import mrml_harness

    from CervixTLLib import nodes
    from CervixTLLib.margins_preview import MarginPreview, compute_targets

    shape = (60, 256, 256) if a.small else (120, 512, 512)
    spacing_xyz = (1.96, 1.96, 6.0) if a.small else (0.98, 0.98, 3.0)
    spacing_zyx = spacing_xyz[::-1]
    ext = [n * s for n, s in zip(shape, spacing_zyx)]
    c = [e / 2 for e in ext]
    masks = {
        "GTV": _ellipsoid(shape, spacing_zyx, c, (20, 18, 22)),
        "CTV": _ellipsoid(shape, spacing_zyx, c, (40, 30, 38)),
        "Rectum": _ellipsoid(shape, spacing_zyx, (c[0], c[1] + 42, c[2]), (50, 12, 14)),
        "Bladder": _ellipsoid(shape, spacing_zyx, (c[0] + 30, c[1] - 45, c[2]), (30, 28, 40)),
    }
    env = mrml_harness.make_slicer_env()
    ct = np.zeros(shape, np.int16)
    vol = mrml_harness.add_volume(env, ct, spacing_xyz=spacing_xyz, origin_ras=(0, 0, 0),
                                  directions_ras=np.diag([-1.0, -1.0, 1.0]), name="CT")
    seg = mrml_harness.add_segmentation(env, vol, masks)
    positions = [(None, 5.0 + i) for i in range(a.repeats // 2)] + \
                [(3.0 + i, (10, 10, 15, 15, 10, 10)) for i in range(a.repeats - a.repeats // 2)]

    t0 = time.perf_counter()
    preview = MarginPreview(seg, vol)
    t_start = time.perf_counter() - t0
    times = []
    for ctv_m, ptv_m in positions:
        res = preview.update(ctv_m, ptv_m)
        times.append(res.seconds)
    preview.revert()

    grid = nodes.volume_grid(vol)
    base = []
    for ctv_m, ptv_m in positions[: max(2, a.repeats // 4)]:
        t = time.perf_counter()
        gtv = nodes.segment_mask(seg, nodes.find_segment_id(seg, "GTV"), vol)
        ctv = nodes.segment_mask(seg, nodes.find_segment_id(seg, "CTV"), vol)
        c2, p2 = compute_targets(grid, gtv, ctv, ctv_m, ptv_m, crop=False)
        nodes.set_segment_mask(seg, nodes.find_segment_id(seg, "CTV"), c2, vol)
        base.append(time.perf_counter() - t)

    print(f"grid {shape[2]} x {shape[1]} x {shape[0]} voxels of {spacing_xyz} mm; {len(times)} slider updates")
    print(f"preview start (cache masks): {t_start:.3f} s")
    print("per update (s): " + ", ".join(f"{t:.3f}" for t in times))
    print(f"preview update: median {statistics.median(times):.3f} s, max {max(times):.3f} s (target < 0.3 s)")
    print(f"baseline (re-read masks, full-grid margin): median {statistics.median(base):.3f} s")
    print(f"speed-up vs baseline: {statistics.median(base) / statistics.median(times):.1f}x")
    print(f"last update: CTV {res.ctv_ml:.1f} mL, PTV {res.ptv_ml:.1f} mL, overlaps {res.overlaps_ml}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
