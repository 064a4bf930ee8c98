"""Synthetic two-site transfer-learning benchmark (Model_S / Model_T / Model_ST).

Site A and site B phantoms (:mod:`cervixtl.phantom`) differ in contouring protocol (site B: larger CTV with
the whole uterus and upper vagina, directional PTV margins) and scanner (5 mm slices, more noise, +20 HU).

* Model_S: the source model, trained here on site A only (``--source-cases`` phantoms, ``--source-epochs``),
  GTV, CTV, PTV and the organs as outputs (``--source SPEC`` uses an existing model instead, e.g. the bundled
  ``cervixtl-demo``, whose PTV is then the CTV plus its protocol margin).
* Model_T: trained from scratch on ``n`` site-B cases.
* Model_ST: Model_S fine-tuned on the same ``n`` site-B cases (``--freeze``), same step budget as Model_T.
* T_plateau (``--plateau-factor F``): Model_T given F times the steps, so that it reaches its own plateau.

The PTV is learned as its own (sigmoid) output in every trained arm, so it is an independent endpoint and not
the CTV plus a fixed margin. Site B's scanner (calibration slope and offset, blur, noise; see
:mod:`cervixtl.phantom`) is not one of the training augmentations.

For each ``n`` in ``--n-target`` (default 5 and 10) all arms are scored on ``--held-out`` (default 20) unseen
site-B phantoms with :func:`cervixtl.compare.compare_models` (Dice, HD95, surface Dice, paired Wilcoxon):
S / T / ST together, then T_plateau against ST. The steps each trained model needed to reach its best
validation Dice are printed. Everything is written under ``--out`` (compare.json/csv/png in ``n<N>`` and
``n<N>-T_plateau``, and summary.json).

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
LABELS = ("GTV", "CTV", "PTV", "Bladder", "Rectum", "FemoralHead_L", "FemoralHead_R")
STRUCTS = ("GTV", "CTV", "PTV", "Bladder", "Rectum", "FemoralHead_L", "FemoralHead_R")


def phantoms(site: str, seeds: range) -> list:
    from cervixtl.phantom import make_phantom

    return [(f"{site}{s}", *make_phantom(s, site)) for s in seeds]


def _fmt(x: object) -> str:
    return "-" if x is None or (isinstance(x, float) and not math.isfinite(x)) else f"{x:.3f}"


def _train_arm(args: argparse.Namespace, reg, start: str | None, card_src, cases: list, name: str, epochs: int,
               protocol: dict):
    """Model_T (``start`` None: from scratch, Model_S's labels, spacing and patch) or Model_ST (fine-tune
    ``start``; the PTV is added as its own output when the source has none) on ``cases`` for ``epochs``."""
    from cervixtl.training import TrainConfig, default_card, finetune

    common = dict(epochs=epochs, steps_per_epoch=args.steps_per_epoch, patience=args.patience, seed=args.seed,
                  device=args.device, val_fraction=0.2)
    if start is None:
        return finetune(None, cases, name, registry=reg, labels=LABELS, sites=["B"], protocol=protocol,
                        config=TrainConfig(lr=args.lr_scratch, **common),
                        base_card=default_card(name, LABELS, spacing_mm=card_src.spacing_mm,
                                               patch_size=card_src.patch_size))
    return finetune(start, cases, name, registry=reg, sites=["B"], protocol=protocol,
                    targets=None if card_src.label("PTV") else ["PTV"],
                    config=TrainConfig(lr=args.lr_finetune, freeze=args.freeze, **common))


def _run_summary(n: int, results: dict, groups: dict, specs: dict, cards: dict, secs: dict, out: Path) -> dict:
    """Per-n record: steps, seconds, mean Dice per model, p values of ST against every other arm, and the
    held-out cases whose CTV Model_ST gets worse than Model_T. ``results[folder]`` compared ``groups[folder]``
    (arm names; ``specs`` maps them to registry specs); each comparison is written to ``out / folder``."""
    from cervixtl.compare import write_outputs

    dice, p, files, ctv = {}, {}, {}, {}
    for folder, res in results.items():
        dice.update({m: {s: res["summary"][m][s]["dice"]["mean"] for s in STRUCTS} for m in res["models"]})
        tests = {(t["a"], t["b"], t["structure"]): t["p_value"] for t in res["tests"] if t["metric"] == "dice"}
        for arm in groups[folder]:
            if arm != "ST":
                p[f"p_ST_vs_{arm}"] = {s: tests[(specs[arm], specs["ST"], s)] for s in STRUCTS}
        ctv.update({(r["model"], r["case"]): r["dice"] for r in res["rows"] if r["structure"] == "CTV"})
        files[folder] = {k: str(v) for k, v in write_outputs(res, out / folder).items()}
    losing = sorted({c for (m, c), d in ctv.items() if m == specs["ST"] and d < ctv[(specs["T"], c)]})
    return {"n": n, "steps_to_best": {a: c.training["best_step"] for a, c in cards.items()},
            "steps": {a: c.training["steps"] for a, c in cards.items()}, "train_seconds": secs,
            "models": specs, "mean_dice": dice, **p, "ctv_cases_where_ST_loses_to_T": losing, "files": files}


def _print_run(run: dict, specs: dict) -> None:
    print(f"\nn={run['n']} mean Dice     " + "".join(f"{s:>15}" for s in STRUCTS))
    for arm, m in specs.items():
        print(f"{'Model_' + arm:<18}" + "".join(f"{_fmt(run['mean_dice'][m][s]):>15}" for s in STRUCTS))
    for arm in specs:
        if arm != "ST":
            print(f"{'p ST vs ' + arm:<18}" + "".join(f"{_fmt(run[f'p_ST_vs_{arm}'][s]):>15}" for s in STRUCTS))
    steps = ", ".join(f"Model_{a} {b}" for a, b in run["steps_to_best"].items())
    print(f"steps to best validation Dice: {steps}; CTV cases where ST < T: "
          f"{', '.join(run['ctv_cases_where_ST_loses_to_T']) or 'none'}\n", flush=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--source", default=None, help="an existing Model_S (registry spec or package folder) "
                    "instead of training one here on site-A phantoms")
    ap.add_argument("--source-cases", type=int, default=16)
    ap.add_argument("--n-target", default="5,10", help="comma-separated numbers of site-B training cases")
    ap.add_argument("--held-out", type=int, default=20)
    ap.add_argument("--epochs", type=int, default=12, help="epochs for Model_T and Model_ST")
    ap.add_argument("--steps-per-epoch", type=int, default=40)
    ap.add_argument("--source-epochs", type=int, default=0, help="epochs for a Model_S trained here "
                    "(0: --epochs)")
    ap.add_argument("--plateau-factor", type=int, default=0, help="also train Model_T with this many times "
                    "--epochs (T_plateau: Model_T to its own plateau); 0: not run")
    ap.add_argument("--patience", type=int, default=0, help="0: the whole schedule")
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
        args.n_target, args.held_out, args.epochs, args.steps_per_epoch, args.source_cases = "2", 2, 1, 2, 2

    from cervixtl.compare import compare_models, format_table
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
        if src is None:
            cfg = TrainConfig(epochs=args.source_epochs or args.epochs, steps_per_epoch=args.steps_per_epoch,
                              patience=args.patience, lr=args.lr_scratch, seed=args.seed, device=args.device)
            t0 = time.time()
            card_s = finetune(None, phantoms("A", range(1000, 1000 + args.source_cases)), "bench-S", config=cfg,
                              registry=reg, labels=LABELS, sites=["A"],
                              base_card=default_card("bench-S", LABELS, patch_size=(32, 48, 48)))
            src = card_s.spec
            summary["source"] = {"steps": card_s.training["steps"], "best_step": card_s.training["best_step"],
                                 "val_mean_dice": card_s.training["val_mean_dice"],
                                 "train_seconds": round(time.time() - t0)}
            print(f"Model_S trained {card_s.training['steps']} steps in {summary['source']['train_seconds']} s",
                  flush=True)
        card_src, _ = reg.load(src)
        print(f"Model_S = {card_src.spec} ({card_src.derivation[:100]})", flush=True)
        for n in ns:
            arms = {"T": (None, args.epochs), "ST": (src, args.epochs)}
            if args.plateau_factor > 1:  # Model_T with several times the steps: its own plateau
                arms["T_plateau"] = (None, args.epochs * args.plateau_factor)
            cards, secs = {}, {}
            for arm, (start, epochs) in arms.items():
                t0 = time.time()
                cards[arm] = _train_arm(args, reg, start, card_src, pool[:n], f"bench-{arm.replace('_plateau', 'p')}{n}",
                                        epochs, proto_b)
                secs[arm] = round(time.time() - t0)
                tr = cards[arm].training
                print(f"n={n}: {arm} best val Dice {tr['val_mean_dice']} at step {tr['best_step']}/{tr['steps']} "
                      f"({secs[arm]} s)", flush=True)
            # compare_models takes 3 models at most: S, T, ST, then each further arm against ST
            groups = {f"n{n}": ["S", "T", "ST"], **{f"n{n}-{a}": [a, "ST"] for a in cards if a not in ("T", "ST")}}
            load = {"S": src, **{a: c.spec for a, c in cards.items()}}  # --source may be a package folder
            specs = {**load, "S": card_src.spec}  # as compare_models names them
            results = {}
            for folder, group in groups.items():
                results[folder] = compare_models([load[a] for a in group], held, registry=reg, device=args.device,
                                                 structures=list(STRUCTS), progress=Progress("none"))
                print(format_table(results[folder]))
            summary["runs"].append(_run_summary(n, results, groups, specs, cards, secs, out))
            _print_run(summary["runs"][-1], specs)
    summary["seconds"] = round(time.time() - t_start)
    from cervixtl.atomic import write_json_atomic
    from cervixtl.metrics import json_safe

    write_json_atomic(out / "summary.json", json_safe(summary))
    print(f"wrote {out / 'summary.json'} ({summary['seconds']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
