"""Synthetic two-site transfer-learning benchmark (Model_S / Model_T / Model_ST).

Site A and site B phantoms (:mod:`cervixtl.phantom`) differ in contouring protocol (site B: larger CTV with
the whole uterus and upper vagina, directional PTV margins) and scanner (5 mm slices, more noise, +20 HU).

* Model_S: the source model, trained on site A only (default: the bundled demo model ``cervixtl-demo``;
  ``--train-source`` trains one here with the same recipe).
* Model_T: trained from scratch on ``n`` site-B cases.
* Model_ST: Model_S fine-tuned on the same ``n`` site-B cases (``--freeze``), same step budget as Model_T.

For each ``n`` in ``--n-target`` (default 5 and 10) all three are scored on ``--held-out`` (default 20) unseen
site-B phantoms with :func:`cervixtl.compare.compare_models` (Dice, HD95, surface Dice, paired Wilcoxon),
and the steps each trained model needed to reach its best validation Dice are printed. Everything is written
under ``--out`` (compare.json/csv/png per n, and summary.json).

    .venv/bin/python benchmarks/bench_transfer.py                     # full design (GPU recommended)
    .venv/bin/python benchmarks/bench_transfer.py --n-target 5 --held-out 10 --epochs 6 --steps-per-epoch 30
    .venv/bin/python benchmarks/bench_transfer.py --quick             # smoke run, a few steps
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
LABELS = ("GTV", "CTV", "Bladder", "Rectum", "FemoralHead_L", "FemoralHead_R")
STRUCTS = ("GTV", "CTV", "PTV", "Bladder", "Rectum", "FemoralHead_L", "FemoralHead_R")


def phantoms(site: str, seeds: range) -> list:
    from cervixtl.phantom import make_phantom

    return [(f"{site}{s}", *make_phantom(s, site)) for s in seeds]


def _fmt(x: object) -> str:
    return "-" if x is None or (isinstance(x, float) and not math.isfinite(x)) else f"{x:.3f}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--source", default="cervixtl-demo", help="Model_S registry spec or package folder")
    ap.add_argument("--train-source", action="store_true", help="train Model_S here on site-A phantoms")
    ap.add_argument("--source-cases", type=int, default=16)
    ap.add_argument("--n-target", default="5,10", help="comma-separated numbers of site-B training cases")
    ap.add_argument("--held-out", type=int, default=20)
    ap.add_argument("--epochs", type=int, default=12, help="epochs for Model_T and Model_ST")
    ap.add_argument("--steps-per-epoch", type=int, default=40)
    ap.add_argument("--patience", type=int, default=6)
    ap.add_argument("--freeze", default="none", help="Model_ST freezing: none, encoder, all-but-last-N")
    ap.add_argument("--lr-scratch", type=float, default=2e-3)
    ap.add_argument("--lr-finetune", type=float, default=1e-3)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(ROOT / "bench_out" / "transfer"))
    ap.add_argument("--quick", action="store_true", help="tiny smoke run (n=2, 2 held-out, 2 steps)")
    args = ap.parse_args(argv)
    if args.quick:
        args.n_target, args.held_out, args.epochs, args.steps_per_epoch = "2", 2, 1, 2

    from cervixtl.compare import compare_models, format_table, write_outputs
    from cervixtl.models.registry import Registry
    from cervixtl.phantom import site
    from cervixtl.progress import Progress
    from cervixtl.training import TrainConfig, default_card, finetune

    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    ns = [int(t) for t in args.n_target.split(",") if t.strip()]
    pool = phantoms("B", range(5000, 5000 + max(ns)))
    held = phantoms("B", range(9000, 9000 + args.held_out))
    proto_b = {"ctv_margin_mm": None, "ptv_margin_mm": list(site("B").ptv_margin_mm)}
    t_start = time.time()
    summary: dict = {"design": vars(args), "runs": []}
    with tempfile.TemporaryDirectory() as tmp:
        reg = Registry(Path(tmp) / "models")
        src = args.source
        if args.train_source:
            cfg = TrainConfig(epochs=args.epochs, steps_per_epoch=args.steps_per_epoch, patience=args.patience,
                              lr=args.lr_scratch, seed=args.seed, device=args.device)
            card_s = finetune(None, phantoms("A", range(1000, 1000 + args.source_cases)), "bench-S", config=cfg,
                              registry=reg, labels=LABELS, sites=["A"],
                              base_card=default_card("bench-S", LABELS, patch_size=(32, 48, 48)))
            src = card_s.spec
        card_src, _ = reg.load(src)
        print(f"Model_S = {card_src.spec} ({card_src.derivation[:100]})", flush=True)
        for n in ns:
            cases = pool[:n]
            common = dict(epochs=args.epochs, steps_per_epoch=args.steps_per_epoch, patience=args.patience,
                          seed=args.seed, device=args.device, val_fraction=0.2)
            t0 = time.time()
            card_t = finetune(None, cases, f"bench-T{n}", registry=reg, labels=LABELS, sites=["B"],
                              config=TrainConfig(lr=args.lr_scratch, **common), protocol=proto_b,
                              base_card=default_card(f"bench-T{n}", LABELS, spacing_mm=card_src.spacing_mm,
                                                     patch_size=card_src.patch_size))
            t_t = time.time() - t0
            t0 = time.time()
            card_st = finetune(src, cases, f"bench-ST{n}", registry=reg, sites=["B"], protocol=proto_b,
                               config=TrainConfig(lr=args.lr_finetune, freeze=args.freeze, **common))
            t_st = time.time() - t0
            print(f"n={n}: Model_T best val Dice {card_t.training['val_mean_dice']} at step "
                  f"{card_t.training['best_step']}/{card_t.training['steps']} ({t_t:.0f} s); Model_ST "
                  f"{card_st.training['val_mean_dice']} at step {card_st.training['best_step']}/"
                  f"{card_st.training['steps']} ({t_st:.0f} s)", flush=True)
            res = compare_models([src, card_t.spec, card_st.spec], held, registry=reg, device=args.device,
                                 structures=list(STRUCTS), progress=Progress("none"))
            paths = write_outputs(res, out / f"n{n}")
            print(format_table(res))
            dice = {m: {s: res["summary"][m][s]["dice"]["mean"] for s in STRUCTS} for m in res["models"]}
            tests = {(t["a"], t["b"], t["structure"]): t for t in res["tests"] if t["metric"] == "dice"}
            s_spec, t_spec, st_spec = res["models"]
            losing = sorted({r["case"] for r in res["rows"] if r["model"] == st_spec and r["structure"] == "CTV"
                             and r["dice"] < next(x["dice"] for x in res["rows"] if x["model"] == t_spec
                                                  and x["case"] == r["case"] and x["structure"] == "CTV")})
            run = {"n": n, "steps_to_best": {"T": card_t.training["best_step"], "ST": card_st.training["best_step"]},
                   "steps": {"T": card_t.training["steps"], "ST": card_st.training["steps"]},
                   "train_seconds": {"T": round(t_t), "ST": round(t_st)}, "mean_dice": dice,
                   "p_ST_vs_T": {s: tests[(t_spec, st_spec, s)]["p_value"] for s in STRUCTS},
                   "p_ST_vs_S": {s: tests[(s_spec, st_spec, s)]["p_value"] for s in STRUCTS},
                   "ctv_cases_where_ST_loses_to_T": losing, "files": {k: str(v) for k, v in paths.items()}}
            summary["runs"].append(run)
            print(f"\nn={n} mean Dice   " + "".join(f"{s:>15}" for s in STRUCTS))
            for label, m in (("Model_S", s_spec), ("Model_T", t_spec), ("Model_ST", st_spec)):
                print(f"{label:<16}" + "".join(f"{_fmt(dice[m][s]):>15}" for s in STRUCTS))
            print(f"{'p ST vs T':<16}" + "".join(f"{_fmt(run['p_ST_vs_T'][s]):>15}" for s in STRUCTS))
            print(f"{'p ST vs S':<16}" + "".join(f"{_fmt(run['p_ST_vs_S'][s]):>15}" for s in STRUCTS))
            ratio = run["steps_to_best"]["ST"] / max(1, run["steps_to_best"]["T"])
            print(f"steps to best validation Dice: Model_T {run['steps_to_best']['T']}, Model_ST "
                  f"{run['steps_to_best']['ST']} (ratio ST/T {ratio:.2f}); CTV cases where ST < T: "
                  f"{', '.join(losing) or 'none'}\n", flush=True)
    summary["seconds"] = round(time.time() - t_start)
    from cervixtl.atomic import write_json_atomic
    from cervixtl.metrics import json_safe

    write_json_atomic(out / "summary.json", json_safe(summary))
    print(f"wrote {out / 'summary.json'} ({summary['seconds']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
