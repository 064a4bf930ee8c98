"""Reproducible recipe of the bundled demo model ``Resources/Models/cervixtl-demo/``.

Trains a small MONAI SegResNet (init_filters 8, ~1.2 M parameters) from scratch on synthetic site-A pelvic
phantoms (:mod:`cervixtl.phantom`) with :func:`cervixtl.training.finetune` and writes the package with the
models API. CPU, 1 thread, fixed seed and a fixed number of steps (12 epochs x 50 steps), so the amount of training does not
depend on the machine speed; about 10-20 minutes on one core.

    .venv/bin/python benchmarks/train_demo_model.py [--cases 16] [--epochs 12] --force [--out Resources/Models/cervixtl-demo]

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

import torch

ROOT = Path(__file__).resolve().parents[1]
LABELS = ("GTV", "CTV", "Bladder", "Rectum", "FemoralHead_L", "FemoralHead_R")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", type=int, default=16, help="site-A phantoms (seeds 1000..)")
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--steps-per-epoch", type=int, default=50)
    ap.add_argument("--minutes", type=float, default=None, help="optional wall-clock budget (makes the result machine-dependent)")
    ap.add_argument("--threads", type=int, default=1)
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
        ct, seg = make_phantom(1000 + i, "A")
        cases.append((f"phantomA-{1000 + i}", ct, seg))
    base = default_card("cervixtl-demo", LABELS, spacing_mm=(4.0, 4.0, 4.0), patch_size=(32, 48, 48),
                        ptv_margin_mm=7.0,
                        intended_use="phantom demo model, not for clinical use: trained only on synthetic "
                                     "pelvic phantoms to demonstrate and test the CervixTL workflow")
    cfg = TrainConfig(epochs=args.epochs, minutes=args.minutes, steps_per_epoch=args.steps_per_epoch,
                      batch_size=2, lr=2e-3, val_fraction=0.2, patience=6, seed=args.seed, device="cpu",
                      threads=args.threads)
    t0 = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        reg = Registry(tmp)
        card = finetune(None, cases, "cervixtl-demo", config=cfg, registry=reg, labels=LABELS, sites=["phantom-A"],
                        base_card=base, progress=Progress("text"),
                        note="phantom demo model, not for clinical use; recipe benchmarks/train_demo_model.py "
                             f"(seed {args.seed}, {args.cases} site-A phantoms)")
        if out.exists():
            shutil.rmtree(out)
        reg.export(card.spec, out)
    print(json.dumps({"package": str(out), "seconds": round(time.time() - t0, 1),
                      "steps": card.training["steps"], "best_step": card.training["best_step"],
                      "validation": card.validation}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
