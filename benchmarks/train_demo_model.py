"""Reproducible recipe of the bundled demo model ``Resources/Models/cervixtl-demo/``.

Trains a small MONAI SegResNet (init_filters 8, ~1.2 M parameters) from scratch on synthetic site-A pelvic
phantoms (:mod:`cervixtl.phantom`) with :func:`cervixtl.training.finetune` and writes the package with the
models API. CPU, fixed seed and a fixed number of steps (24 epochs x 50 steps), so the amount of training does not
depend on the machine speed; about 12 minutes with --threads 2 (more on one core).

The phantoms have varied fields of view (``--fov varied``, the default): every 4th case has the phantom default
FOV (320 x 240 x 180 mm), the others a size drawn from the case seed, in-plane x 320-500 mm, y 240-500 mm (<= x)
and z 180-420 mm, like planning CTs (512 x 512 x ~160 slices at 0.98 x 0.98 x 2.5 mm = 500 x 500 x 400 mm).
With the long z extents, random (negative) patches fall on slices far above/below the target, where the model
has to learn "no CTV". ``--fov default --epochs 12`` is the recipe of the first demo model (all phantoms
320 x 240 x 180 mm).

    .venv/bin/python benchmarks/train_demo_model.py [--cases 16] [--epochs 24] [--threads 2] --force [--out Resources/Models/cervixtl-demo]

The model is a phantom demo model: it has never seen a patient CT and is not for clinical use.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
LABELS = ("GTV", "CTV", "Bladder", "Rectum", "FemoralHead_L", "FemoralHead_R")


def case_fov(seed: int, index: int, mode: str = "varied") -> tuple[float, float, float]:
    """Field of view (x, y, z) in mm of training phantom ``index`` with phantom seed ``seed`` (deterministic)."""
    from cervixtl.phantom import DEFAULT_FOV_MM

    if mode == "default" or index % 4 == 0:
        return tuple(float(v) for v in DEFAULT_FOV_MM)  # type: ignore[return-value]
    rng = np.random.default_rng([int(seed), 20260501])
    x = float(rng.uniform(320.0, 500.0))
    y = float(rng.uniform(240.0, x))
    z = float(rng.uniform(180.0, 420.0))
    return tuple(float(10.0 * round(v / 10.0)) for v in (x, y, z))  # type: ignore[return-value]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", type=int, default=16, help="site-A phantoms (seeds 1000..)")
    ap.add_argument("--epochs", type=int, default=24)
    ap.add_argument("--steps-per-epoch", type=int, default=50)
    ap.add_argument("--minutes", type=float, default=None, help="optional wall-clock budget (makes the result machine-dependent)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--fov", choices=("varied", "default"), default="varied",
                    help="phantom fields of view: varied sizes (default) or all 320 x 240 x 180 mm")
    ap.add_argument("--pos-fraction", type=float, default=0.7,
                    help="share of patches centred on a structure (the rest are random, many far from the target)")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--out", default=str(ROOT / "Resources" / "Models" / "cervixtl-demo"))
    ap.add_argument("--force", action="store_true", help="replace an existing package at --out")
    args = ap.parse_args(argv)

    from cervixtl.models.registry import Registry
    from cervixtl.phantom import make_phantom
    from cervixtl.progress import Progress
    from cervixtl.training import TrainConfig, default_card, finetune

    torch.set_num_threads(args.threads)
    out = Path(args.out)
    if out.exists() and not args.force:
        print(f"{out} exists; use --force to replace it", file=sys.stderr)
        return 2
    cases = []
    for i in range(args.cases):
        fov = case_fov(1000 + i, i, args.fov)
        ct, seg = make_phantom(1000 + i, "A", size=fov)
        cases.append((f"phantomA-{1000 + i}", ct, seg))
        print(f"phantomA-{1000 + i}: FOV {fov} mm, grid {ct.array.shape[::-1]}", flush=True)
    base = default_card("cervixtl-demo", LABELS, spacing_mm=(4.0, 4.0, 4.0), patch_size=(32, 48, 48),
                        ptv_margin_mm=7.0,
                        intended_use="phantom demo model, not for clinical use: trained only on synthetic "
                                     "pelvic phantoms to demonstrate and test the CervixTL workflow")
    cfg = TrainConfig(epochs=args.epochs, minutes=args.minutes, steps_per_epoch=args.steps_per_epoch,
                      batch_size=2, lr=2e-3, val_fraction=0.2, patience=6, seed=args.seed, device="cpu",
                      pos_fraction=args.pos_fraction,
                      threads=args.threads)
    t0 = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        reg = Registry(tmp)
        card = finetune(None, cases, "cervixtl-demo", config=cfg, registry=reg, labels=LABELS, sites=["phantom-A"],
                        base_card=base, progress=Progress("text"),
                        note="phantom demo model, not for clinical use; recipe benchmarks/train_demo_model.py "
                             f"(seed {args.seed}, {args.cases} site-A phantoms, {args.fov} fields of view, "
                             f"pos_fraction {args.pos_fraction})")
        if out.exists():
            shutil.rmtree(out)
        reg.export(card.spec, out)
    print(json.dumps({"package": str(out), "seconds": round(time.time() - t0, 1),
                      "steps": card.training["steps"], "best_step": card.training["best_step"],
                      "validation": card.validation}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
