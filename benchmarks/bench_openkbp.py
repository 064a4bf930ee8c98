"""Real-CT transfer-learning benchmark on OpenKBP head-and-neck CTs (``../shared/data/openkbp``).

Design (split suggested by that folder's README; in-plane spacing 3.906 mm = "site A"):

* Model_S: trained from scratch on the 17 site-A cases, organs only (Brainstem, SpinalCord, RightParotid,
  LeftParotid, Mandible).
* Model_T: from scratch on the first ``--k`` (default 5) site-B few-shot cases, organs + PTV70 (the new class).
* Model_ST: Model_S fine-tuned on the same ``k`` cases with the new PTV70 output channel (the organ channels
  keep their source weights, the new channel is freshly initialised), same step budget as Model_T.
* All scored on the 13 held-out site-B cases (Dice, HD95, surface Dice, paired Wilcoxon), structures that a
  case did not contour are left out of training losses and of the metrics.

    .venv/bin/python benchmarks/bench_openkbp.py                       # full design (GPU recommended)
    .venv/bin/python benchmarks/bench_openkbp.py --source-cases 6 --held-out 6 --epochs 4 --steps-per-epoch 20
    .venv/bin/python benchmarks/bench_openkbp.py --quick               # smoke run
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(DATA))
    ap.add_argument("--source-cases", type=int, default=len(SITE_A))
    ap.add_argument("--k", type=int, default=5, help="few-shot site-B cases")
    ap.add_argument("--held-out", type=int, default=len(HELD_OUT))
    ap.add_argument("--source-epochs", type=int, default=20)
    ap.add_argument("--epochs", type=int, default=10, help="epochs for Model_T and Model_ST")
    ap.add_argument("--steps-per-epoch", type=int, default=40)
    ap.add_argument("--patience", type=int, default=6)
    ap.add_argument("--freeze", default="none")
    ap.add_argument("--spacing", type=float, default=4.0, help="model voxel size in mm (isotropic)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(ROOT / "bench_out" / "openkbp"))
    ap.add_argument("--quick", action="store_true", help="smoke run: 3 source cases, k=2, 3 held-out, 2 steps")
    args = ap.parse_args(argv)
    if args.quick:
        args.source_cases, args.k, args.held_out = 3, 2, 3
        args.source_epochs, args.epochs, args.steps_per_epoch = 1, 1, 2
    data = Path(args.data)
    if not (data / "labels.json").exists():
        print(f"OpenKBP data not found at {data}; see ../shared/data/README.md", file=sys.stderr)
        return 2

    from cervixtl.compare import compare_models, format_table, write_outputs
    from cervixtl.fileio import write_json_atomic
    from cervixtl.metrics import json_safe
    from cervixtl.models.registry import Registry
    from cervixtl.progress import Progress
    from cervixtl.training import TrainConfig, default_card, finetune

    torch.set_num_threads(args.threads)
    out = Path(args.out)
    t_start = time.time()
    src_cases = [load_case(c, data) for c in SITE_A[: args.source_cases]]
    few = [load_case(c, data) for c in FEW_SHOT[: args.k]]
    held = [load_case(c, data) for c in HELD_OUT[: args.held_out]]
    sp = (args.spacing,) * 3
    kw = dict(spacing_mm=sp, patch_size=(32, 64, 64), window_hu=(-400.0, 600.0), ptv_margin_mm=0.0)
    common = dict(steps_per_epoch=args.steps_per_epoch, patience=args.patience, seed=args.seed, device=args.device)
    with tempfile.TemporaryDirectory() as tmp:
        reg = Registry(Path(tmp) / "models")
        t0 = time.time()
        card_s = finetune(None, src_cases, "kbp-S", registry=reg, labels=ORGANS, progress=Progress("text"),
                          base_card=default_card("kbp-S", ORGANS, **kw),
                          config=TrainConfig(epochs=args.source_epochs, lr=2e-3, **common))
        t_s = time.time() - t0
        labels = ORGANS + TARGET
        t0 = time.time()
        card_t = finetune(None, few, "kbp-T", registry=reg, labels=labels, progress=Progress("text"),
                          base_card=default_card("kbp-T", labels, **kw),
                          config=TrainConfig(epochs=args.epochs, lr=2e-3, **common))
        t_t = time.time() - t0
        t0 = time.time()
        card_st = finetune(card_s.spec, few, "kbp-ST", registry=reg, labels=labels, progress=Progress("text"),
                           config=TrainConfig(epochs=args.epochs, lr=1e-3, freeze=args.freeze, **common))
        t_st = time.time() - t0
        for lab, c, t in (("Model_S", card_s, t_s), ("Model_T", card_t, t_t), ("Model_ST", card_st, t_st)):
            print(f"{lab}: best val Dice {c.training['val_mean_dice']} at step {c.training['best_step']}/"
                  f"{c.training['steps']} ({t:.0f} s)", flush=True)
        res = compare_models([card_s.spec, card_t.spec, card_st.spec], held, registry=reg, device=args.device,
                             structures=list(labels))
        paths = write_outputs(res, out)
        print(format_table(res))
        tests = {(t["a"], t["b"], t["structure"]): t for t in res["tests"] if t["metric"] == "dice"}
        summary = {"design": vars(args), "seconds": round(time.time() - t_start),
                   "steps_to_best": {"S": card_s.training["best_step"], "T": card_t.training["best_step"],
                                     "ST": card_st.training["best_step"]},
                   "mean_dice": {m: {s: res["summary"][m][s]["dice"]["mean"] for s in labels} for m in res["models"]},
                   "p_ST_vs_T": {s: tests[(card_t.spec, card_st.spec, s)]["p_value"] for s in labels},
                   "files": {k: str(v) for k, v in paths.items()}}
        write_json_atomic(out / "summary.json", json_safe(summary))
    print(f"\nmean Dice on {len(held)} held-out cases   " + "".join(f"{s:>13}" for s in labels))
    for lab, m in zip(("Model_S", "Model_T", "Model_ST"), res["models"]):
        print(f"{lab:<34}" + "".join(f"{summary['mean_dice'][m][s]:>13.3f}"
                                     if math.isfinite(summary['mean_dice'][m][s]) else f"{'-':>13}" for s in labels))
    print(f"steps to best validation Dice: T {summary['steps_to_best']['T']}, ST {summary['steps_to_best']['ST']}; "
          f"wrote {out} ({summary['seconds']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
