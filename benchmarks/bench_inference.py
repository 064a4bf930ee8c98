"""Whole-CT contouring benchmark: wall time, split and peak memory of ``cervixtl contour``.

Builds a synthetic pelvic CT of 512 x 512 x 160 voxels at 0.98 x 0.98 x 2.5 mm (a :mod:`cervixtl.phantom`
pelvis with its truth contours; ``--cylinder``: a plain elliptic water body with noise, bone ring, bladder and a
bright "tumour") and runs ``cervixtl contour`` in a child process, so that
its peak RSS is measured alone (``resource.getrusage(RUSAGE_CHILDREN)``). The model is the bundled demo model
``Resources/Models/cervixtl-demo`` when present, else (or with ``--random``) a package with the demo model's
architecture (MONAI SegResNet, init_filters 8, 4 mm voxels, patch 32 x 48 x 48) and random weights whose
output biases are calibrated so that each label covers about ``--label-fraction`` of the CT (organ-sized
blobs, so that post-processing and writing see realistic masks rather than a random net's huge ones).

Targets (issue 4): CPU --fast with 2 threads < 90 s and peak RAM < 6 GB; one GPU < 10 s.
Baseline in the same run: the default (non-fast) setting, unless --no-baseline.

    .venv/bin/python benchmarks/bench_inference.py [--device cpu|cuda] [--threads 2] [--no-baseline]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

LABELS = ["GTV", "CTV", "Bladder", "Rectum", "FemoralHead_L", "FemoralHead_R"]  # the demo model's labels
DEMO = REPO / "Resources" / "Models" / "cervixtl-demo"


def phantom_ct(seed: int = 3):
    """A cervixtl.phantom pelvis on a 512 x 512 x 160 grid at 0.98 x 0.98 x 2.5 mm: (CT, truth)."""
    from cervixtl.phantom import make_phantom

    return make_phantom(seed, "A", spacing=(0.98, 0.98, 2.5), size=(512 * 0.98, 512 * 0.98, 160 * 2.5))


def synthetic_ct(shape=(160, 512, 512), spacing=(0.98, 0.98, 2.5), seed=0):
    """Elliptic water cylinder with bone ring, bladder and tumour: int16 HU image (z, y, x), spacing (x, y, z)."""
    from cervixtl.image import Image

    rng = np.random.default_rng(seed)
    nz, ny, nx = shape
    y = (np.arange(ny) - ny / 2)[:, None] * spacing[1]
    x = (np.arange(nx) - nx / 2)[None, :] * spacing[0]
    body = (x / 190) ** 2 + (y / 130) ** 2 < 1
    bone = ((x / 150) ** 2 + (y / 100) ** 2 < 1) & ((x / 135) ** 2 + (y / 85) ** 2 > 1)
    arr = np.full(shape, -1000, np.int16)
    zc = (np.arange(nz) - nz / 2) * spacing[2]
    for k in range(nz):
        sl = arr[k]
        sl[body] = 40
        sl[bone] = 700
        r_bl = 45 ** 2 - zc[k] ** 2
        if r_bl > 0:
            sl[(x ** 2 + (y + 30) ** 2) < r_bl] = 10
        r_t = 20 ** 2 - (zc[k] + 30) ** 2
        if r_t > 0:
            sl[(x ** 2 + (y - 20) ** 2) < r_t] = 90
    arr += rng.normal(0, 15, shape).astype(np.int16) * body[None]
    return Image(arr, spacing, (-250.0, -250.0, -200.0))


def make_model(root: Path, ct, init_filters: int, spacing: tuple[float, float, float], patch: tuple[int, int, int],
               fraction: float, use_demo: bool) -> tuple[str, str]:
    """Register the model to time in ``root/reg``; returns (model spec, description)."""
    import torch

    from cervixtl.image import resample_to_spacing
    from cervixtl.inference import normalise
    from cervixtl.models.networks import build_network, segresnet_card
    from cervixtl.models.package import save_package
    from cervixtl.models.registry import Registry

    if use_demo and (DEMO / "model.json").exists():
        card = Registry(root / "reg").add(DEMO)
        return card.spec, f"bundled demo model {card.spec} ({card.architecture['name']}, spacing {card.spacing_mm} mm)"
    torch.manual_seed(0)
    card = segresnet_card("bench", LABELS, init_filters=init_filters, spacing_mm=spacing, patch_size=patch)
    net = build_network(card).eval()
    if fraction > 0:  # shift each output bias so that ~fraction of a central window is above 0.5
        work = resample_to_spacing(ct, spacing)
        vol = normalise(work.array, card.window_hu)
        c = [max(0, (n - p) // 2) for n, p in zip(vol.shape, patch)]
        win = vol[c[0]:c[0] + patch[0], c[1]:c[1] + patch[1], c[2]:c[2] + patch[2]]
        with torch.no_grad():
            logits = net(torch.from_numpy(np.ascontiguousarray(win))[None, None])[0]
            q = torch.quantile(logits.flatten(1)[:, ::7], 1 - fraction, dim=1)
            net.conv_final[-1].conv.bias -= q
    save_package(root / "pkg", card, net.state_dict())
    Registry(root / "reg").add(root / "pkg")
    return card.spec, (f"random-weight SegResNet(init_filters={init_filters}, {len(LABELS)} labels, spacing {spacing} mm, "
            f"patch {patch}, each label calibrated to ~{fraction:.0%} of a window)")


def run_contour(tmp: Path, model: str, device: str, threads: int, fast: bool, tag: str,
                ext: str = ".seg.nrrd") -> dict:
    out = tmp / f"out_{tag}{ext}"
    summ = tmp / f"summary_{tag}.json"
    cmd = [sys.executable, "-m", "cervixtl", "contour", str(tmp / "ct.nii.gz"), str(out), "--model", model,
           "--models-dir", str(tmp / "reg"), "--device", device, "--threads", str(threads), "--summary", str(summ)]
    if fast:
        cmd.append("--fast")
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    t = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO,
                          env={**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": str(threads)})
    wall = time.perf_counter() - t
    if proc.returncode != 0:
        raise SystemExit(f"contour failed ({proc.returncode}): {proc.stderr.strip()}")
    rss_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    s = json.loads(summ.read_text())
    return {"wall_s": wall, "peak_rss_gb": max(rss_kb, before) / 1024 ** 2, "summary": s,
            "rss_is_max_of_children": before > 0}


def dice_line(out: Path, truth) -> str:
    from cervixtl.io import read_segmentation

    seg = read_segmentation(out)
    parts = []
    for s in truth.segments:
        if s.name in seg:
            a, b = seg.mask(s.name), s.mask
            parts.append(f"{s.name} {2 * np.sum(a & b) / max(1, a.sum() + b.sum()):.2f}")
    return ", ".join(parts)


def report(tag: str, r: dict) -> None:
    t = r["summary"]["timing_s"]
    sw = r["summary"]["sliding_window"]
    print(f"[{tag}] wall {r['wall_s']:.1f} s (process incl. python/torch start-up); pipeline {t['total_s']:.1f} s; "
          f"peak RSS {r['peak_rss_gb']:.2f} GB{' (max over children so far)' if r['rss_is_max_of_children'] else ''}")
    print(f"[{tag}]   read {t['read_s']:.1f} s | resample {t['resample_s']:.1f} s | network {t['network_s']:.1f} s "
          f"| post-process {t['postprocess_s']:.1f} s | write {t['write_s']:.1f} s")
    vols = ", ".join(f"{x['name']} {x['volume_ml']:.0f}" for x in r["summary"]["structures"])
    print(f"[{tag}]   volumes (mL): {vols}")
    print(f"[{tag}]   device {r['summary']['device']}, windows {sw['windows']} of {sw['roi_size']} (z, y, x), "
          f"overlap {sw['overlap']}, batch {sw['sw_batch_size']}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--init-filters", type=int, default=8)
    ap.add_argument("--spacing", default="4,4,4", help="model spacing x,y,z mm")
    ap.add_argument("--patch", default="32,48,48", help="model patch z,y,x voxels")
    ap.add_argument("--label-fraction", type=float, default=0.02,
                    help="random model: fraction of voxels each label covers (0: raw random output)")
    ap.add_argument("--random", action="store_true", help="use a random-weight model even if the demo exists")
    ap.add_argument("--cylinder", action="store_true", help="plain cylinder CT instead of the pelvic phantom")
    ap.add_argument("--no-baseline", action="store_true", help="skip the default (non-fast) run")
    ap.add_argument("--out-format", default=".seg.nrrd", choices=[".seg.nrrd", ".nii.gz"],
                    help="output written by contour (.seg.nrrd via slicerio, or a .nii.gz label map + JSON)")
    args = ap.parse_args()
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        print("GPU: not measured (no CUDA device on this machine); target < 10 s on one H100/A100-class GPU")
        return 0
    from cervixtl.io import write_image

    spacing = tuple(float(v) for v in args.spacing.split(","))
    patch = tuple(int(v) for v in args.patch.split(","))
    with tempfile.TemporaryDirectory(prefix="cervixtl-bench-") as d:
        tmp = Path(d)
        t = time.perf_counter()
        truth = None
        if args.cylinder:
            ct = synthetic_ct()
        else:
            ct, truth = phantom_ct()
        write_image(ct, tmp / "ct.nii.gz")
        model, what = make_model(tmp, ct, args.init_filters, spacing, patch, args.label_fraction, not args.random)
        del ct
        kind = "cylinder" if args.cylinder else "pelvic phantom"
        print(f"setup ({time.perf_counter() - t:.1f} s): synthetic {kind} CT 512 x 512 x 160 @ 0.98 x 0.98 x 2.5 mm; {what}; "
              f"output {args.out_format}; torch {torch.__version__}, {args.threads} thread(s)")
        fast = run_contour(tmp, model, args.device, args.threads, True, "fast", args.out_format)
        report("fast", fast)
        if truth is not None:
            print(f"[fast]   Dice vs phantom truth: {dice_line(tmp / ('out_fast' + args.out_format), truth)}")
        limit_s = 90.0 if args.device == "cpu" else 10.0
        print(f"[fast] target: wall < {limit_s:.0f} s -> {'MET' if fast['wall_s'] < limit_s else 'MISSED'}; "
              f"peak RAM < 6 GB -> {'MET' if fast['peak_rss_gb'] < 6 else 'MISSED'}")
        if not args.no_baseline:
            base = run_contour(tmp, model, args.device, args.threads, False, "default", args.out_format)
            report("default", base)
            if truth is not None:
                print(f"[default]   Dice vs phantom truth: {dice_line(tmp / ('out_default' + args.out_format), truth)}")
            print(f"speed-up of --fast over the default setting: "
                  f"{base['summary']['timing_s']['total_s'] / fast['summary']['timing_s']['total_s']:.2f}x "
                  f"(network {base['summary']['timing_s']['network_s'] / max(1e-9, fast['summary']['timing_s']['network_s']):.2f}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
