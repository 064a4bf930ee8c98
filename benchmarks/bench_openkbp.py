"""Real-CT transfer-learning benchmark on OpenKBP head-and-neck CTs (``../shared/data/openkbp``).

Design (split suggested by that folder's README; in-plane spacing 3.906 mm = "site A"):

* Model_S: trained from scratch on the 17 site-A cases, organs only (Brainstem, SpinalCord, RightParotid,
  LeftParotid, Mandible).
* Model_T: from scratch on the first ``--k`` (default 5) site-B few-shot cases, organs + PTV70 (the new class).
* Model_ST: Model_S fine-tuned on the same ``k`` cases with the new PTV70 output channel (the organ channels
  keep their source weights, the new channel is freshly initialised), same wall-clock budget as Model_T.
* All scored on the 13 held-out site-B cases (Dice, HD95, surface Dice, paired Wilcoxon), structures that a
  case did not contour are left out of training losses and of the metrics.

Stages (each reuses what an earlier one left in ``--out``, so a long run can be done in parts or resumed):
``source`` trains Model_S into ``OUT/models`` (skipped when it is there), ``target`` trains Model_T and
Model_ST, ``compare`` scores the three; ``all`` (default) does what is missing. A training stage that was
stopped continues from its checkpoint with ``--resume``.

    .venv/bin/python benchmarks/bench_openkbp.py --source-minutes 40 --target-minutes 10   # CPU, 2 cores
    .venv/bin/python benchmarks/bench_openkbp.py --source-minutes 60 --target-minutes 20 --device cuda
    .venv/bin/python benchmarks/bench_openkbp.py --quick --out /tmp/kbp-smoke                # smoke run
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "openkbp"
ORGANS = ("Brainstem", "SpinalCord", "RightParotid", "LeftParotid", "Mandible")
TARGET = ("PTV70",)
SITE_A = ["pt_1", "pt_4", "pt_5", "pt_12", "pt_14", "pt_15", "pt_18", "pt_22", "pt_28", "pt_33", "pt_34", "pt_35",
          "pt_36", "pt_37", "pt_39", "pt_41", "pt_45"]
FEW_SHOT = ["pt_2", "pt_3", "pt_6", "pt_7", "pt_9", "pt_10", "pt_11", "pt_13", "pt_16", "pt_17"]
HELD_OUT = ["pt_20", "pt_21", "pt_24", "pt_25", "pt_26", "pt_27", "pt_29", "pt_30", "pt_31", "pt_38", "pt_40",
            "pt_42", "pt_43"]


def load_case(case_id: str, data: Path = DATA):
    """(id, CT in HU, Segmentation of the structures the case contours) from the lossless bit-field masks."""
    from cervixtl.io import read_image
    from cervixtl.segmentation import Segmentation

    ct = read_image(data / f"{case_id}_ct.nii.gz")
    ct = ct.with_array(np.clip(ct.array, -1000, 3095))  # metal stored on a 16-bit scale in two cases
    bits = read_image(data / f"{case_id}_masks.nii.gz").array.astype(np.int64)
    meta = json.loads((data / f"{case_id}_labels.json").read_text())
    labels = json.loads((data / "labels.json").read_text())["labels"]
    seg = Segmentation(ct.with_array(np.zeros(ct.array.shape, dtype=np.uint8)))
    for k, name in labels.items():
        if name in meta["contoured"]:
            seg.set(name, ((bits >> (int(k) - 1)) & 1).astype(bool))
    return case_id, ct, seg


def _train(name, source, load_cases, labels, reg, args, *, minutes, lr, freeze="none", kw=None):
    """One training stage: a registered model ``name`` (kept if it is already in ``reg``; the cases are read,
    by calling ``load_cases()``, only when it is trained)."""
    from cervixtl.progress import Progress
    from cervixtl.training import TrainConfig, default_card, finetune

    if reg.versions(name):
        card, _ = reg.load(name)
        print(f"{name}: kept from {reg.root} (best val Dice {card.training['val_mean_dice']} at step "
              f"{card.training['best_step']})", flush=True)
        return card
    cfg = TrainConfig(epochs=None if minutes else args.epochs, minutes=minutes, max_steps=args.max_steps,
                      steps_per_epoch=args.steps_per_epoch, lr=lr, freeze=freeze, patience=args.patience,
                      val_fraction=args.val_fraction, batch_dice=True, seed=args.seed, device=args.device)
    base = default_card(name, labels, **kw) if source is None else None
    t0 = time.time()
    card = finetune(source, load_cases(), name, registry=reg, labels=labels, progress=Progress("text"), base_card=base,
                    config=cfg, resume=args.resume)
    print(f"{name}: best val Dice {card.training['val_mean_dice']} at step {card.training['best_step']}/"
          f"{card.training['steps']} ({time.time() - t0:.0f} s)", flush=True)
    return card


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(DATA))
    ap.add_argument("--stage", choices=("all", "source", "target", "compare"), default="all")
    ap.add_argument("--source-cases", type=int, default=len(SITE_A))
    ap.add_argument("--k", type=int, default=5, help="few-shot site-B cases")
    ap.add_argument("--held-out", type=int, default=len(HELD_OUT))
    ap.add_argument("--source-minutes", type=float, default=40.0, help="wall-clock budget of Model_S")
    ap.add_argument("--target-minutes", type=float, default=10.0, help="budget of Model_T and of Model_ST each")
    ap.add_argument("--epochs", type=int, default=10, help="epochs per model when a budget is 0")
    ap.add_argument("--max-steps", type=int, default=None)
    ap.add_argument("--steps-per-epoch", type=int, default=100, help="steps between validations")
    ap.add_argument("--val-fraction", type=float, default=0.15)
    ap.add_argument("--patience", type=int, default=0, help="0: train for the whole budget")
    ap.add_argument("--freeze", default="none")
    ap.add_argument("--lr-scratch", type=float, default=2e-3, help="learning rate of Model_S and Model_T")
    ap.add_argument("--lr-finetune", type=float, default=1e-3, help="learning rate of Model_ST")
    ap.add_argument("--spacing", type=float, default=4.0, help="model voxel size in mm (isotropic)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--resume", action="store_true", help="continue a stopped training stage")
    ap.add_argument("--out", default=str(ROOT / "bench_out" / "openkbp"))
    ap.add_argument("--quick", action="store_true", help="smoke run: 3 source cases, k=2, 3 held-out, 2 steps")
    args = ap.parse_args(argv)
    if args.quick:
        args.source_cases, args.k, args.held_out = 3, 2, 3
        args.source_minutes = args.target_minutes = 0
        args.epochs, args.steps_per_epoch = 1, 2
    data = Path(args.data)
    if not (data / "labels.json").exists():
        print(f"OpenKBP data not found at {data}; see ../shared/data/README.md", file=sys.stderr)
        return 2

    from cervixtl.atomic import write_json_atomic
    from cervixtl.compare import compare_models, format_table, write_outputs
    from cervixtl.metrics import json_safe
    from cervixtl.models.registry import Registry

    torch.set_num_threads(args.threads)
    out = Path(args.out)
    reg = Registry(out / "models")
    t_start = time.time()
    kw = dict(spacing_mm=(args.spacing,) * 3, patch_size=(32, 64, 64), window_hu=(-200.0, 300.0),
              ptv_margin_mm=0.0)
    labels = ORGANS + TARGET
    source_cases = functools.cache(lambda: [load_case(c, data) for c in SITE_A[: args.source_cases]])
    few_shot = functools.cache(lambda: [load_case(c, data) for c in FEW_SHOT[: args.k]])
    if args.stage in ("all", "source"):
        _train("kbp-S", None, source_cases, ORGANS, reg, args, minutes=args.source_minutes or None,
               lr=args.lr_scratch, kw=kw)
    if args.stage in ("all", "target"):
        _train("kbp-T", None, few_shot, labels, reg, args, minutes=args.target_minutes or None,
               lr=args.lr_scratch, kw=kw)
        _train("kbp-ST", "kbp-S", few_shot, labels, reg, args, minutes=args.target_minutes or None,
               lr=args.lr_finetune, freeze=args.freeze)
    if args.stage not in ("all", "compare"):
        return 0
    held = [load_case(c, data) for c in HELD_OUT[: args.held_out]]
    cards = {lab: reg.load(n)[0] for lab, n in (("Model_S", "kbp-S"), ("Model_T", "kbp-T"), ("Model_ST", "kbp-ST"))}
    specs = [c.spec for c in cards.values()]
    res = compare_models(specs, held, registry=reg, device=args.device, structures=list(labels))
    paths = write_outputs(res, out)
    print(format_table(res))
    tests = {(t["a"], t["b"], t["structure"]): t for t in res["tests"] if t["metric"] == "dice"}
    st, t_, s_ = cards["Model_ST"].spec, cards["Model_T"].spec, cards["Model_S"].spec
    summary = {"design": vars(args), "seconds_compare": round(time.time() - t_start),
               "training": {lab: {k: c.training.get(k) for k in ("steps", "best_step", "val_mean_dice", "seconds",
                                                                  "train_case_ids", "val_case_ids", "device")}
                            for lab, c in cards.items()},
               "mean_dice": {m: {s: res["summary"][m][s]["dice"]["mean"] for s in labels} for m in res["models"]},
               "p_ST_vs_T": {s: tests[(t_, st, s)]["p_value"] for s in labels},
               "p_ST_vs_S": {s: tests[(s_, st, s)]["p_value"] for s in ORGANS},
               "files": {k: str(v) for k, v in paths.items()}}
    write_json_atomic(out / "summary.json", json_safe(summary))
    print(f"\nmean Dice on {len(held)} held-out cases   " + "".join(f"{s:>13}" for s in labels))
    for lab, m in zip(cards, res["models"]):
        print(f"{lab:<34}" + "".join(f"{summary['mean_dice'][m][s]:>13.3f}"
                                     if math.isfinite(summary['mean_dice'][m][s]) else f"{'-':>13}" for s in labels))
    print(f"{'p ST vs T':<34}" + "".join(f"{summary['p_ST_vs_T'][s]:>13.4f}" if summary['p_ST_vs_T'][s] is not None
                                         else f"{'-':>13}" for s in labels))
    for lab, c in cards.items():
        print(f"{lab}: {c.training['steps']} steps in {c.training['seconds']:.0f} s, best val Dice "
              f"{c.training['val_mean_dice']} at step {c.training['best_step']}")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
