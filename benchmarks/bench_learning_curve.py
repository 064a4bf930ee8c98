"""OpenKBP learning curves of transfer learning (Model_S / Model_T / Model_ST), with fair budgets.

Data: ``../shared/data/openkbp`` (real head-and-neck planning CTs; split suggested by its README: in-plane
spacing 3.906 mm = site A). Organs Brainstem, SpinalCord, RightParotid, LeftParotid, Mandible; new target
PTV70 (learned as its own sigmoid output in every site-B arm).

Arms (budgets in optimiser steps, so that CPU contention changes the seconds but not the results):

* ``S``: from scratch on the 17 site-A cases, organs only, ``--source-steps``.
* for each n in ``--ns`` (default 1, 3, 5, 10) and each of ``--draws`` random draws of n of the 10 site-B
  few-shot cases:
  * ``T``: from scratch on the n cases (organs + PTV70), ``--target-steps``;
  * ``ST``: Model_S fine-tuned on the same n cases with a new PTV70 channel, ``--target-steps``;
  * ``T_plateau``: Model_T given ``--plateau-factor`` x the steps (its own plateau, not cut at ST's budget);
  * ``T_compute``: Model_T given ``--source-steps + --target-steps`` (the total compute of S + ST).
* Scored on the 13 held-out site-B cases with the production pipeline (:func:`cervixtl.compare.
  predict_structures`: window overlap 0.5, Gaussian blending, post-processing with side assignment).
  A structure a case did not contour is left out of its training loss and of its scores.

Reported per arm, n and structure: mean Dice and a 95 % bootstrap CI (draws and patients resampled), paired
Wilcoxon tests of ST against each Model_T arm on patient means over draws, Holm-corrected over the whole
family, and steps / seconds to each arm's plateau (first validation at which the smoothed Dice of a fixed
``--monitor``-case subset of the held-out cases reaches 95 % of its best; the monitor never selects: every arm
keeps its final state, as nnU-Net predicts with).

    python benchmarks/bench_learning_curve.py                          # full design (GPU recommended)
    python benchmarks/bench_learning_curve.py --ns 5 --draws 1 --arms T,ST   # reduced CPU run (about 90 min)
    python benchmarks/bench_learning_curve.py --quick --out /tmp/lc    # smoke run (CI)
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from bench_openkbp import DATA, FEW_SHOT, HELD_OUT, ORGANS, SITE_A, TARGET, load_case  # noqa: E402

ARMS = ("T", "ST", "T_plateau", "T_compute")
STRUCTS = ORGANS + TARGET


def parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(DATA))
    ap.add_argument("--out", default=str(ROOT / "bench_out" / "learning_curve"))
    ap.add_argument("--ns", default="1,3,5,10", help="numbers of site-B training cases")
    ap.add_argument("--draws", type=int, default=3, help="random draws of the n cases")
    ap.add_argument("--arms", default=",".join(ARMS), help=f"subset of {','.join(ARMS)}")
    ap.add_argument("--source-steps", type=int, default=5500, help="Model_S steps (5500: 56 min measured on 2 CPU cores)")
    ap.add_argument("--target-steps", type=int, default=1500, help="steps of T and ST (1500: 785-931 s measured on 2 cores, n = 1 and 5)")
    ap.add_argument("--plateau-factor", type=float, default=3.0)
    ap.add_argument("--steps-per-epoch", type=int, default=500, help="steps between monitoring validations")
    ap.add_argument("--held-out", type=int, default=len(HELD_OUT))
    ap.add_argument("--monitor", type=int, default=3, help="held-out cases used for the plateau curve only")
    ap.add_argument("--source-cases", type=int, default=len(SITE_A))
    ap.add_argument("--lr-scratch", type=float, default=3e-3)
    ap.add_argument("--lr-finetune", type=float, default=1e-3)
    ap.add_argument("--head-warmup", type=float, default=0.05, help="ST: share of steps training the new head only")
    ap.add_argument("--backbone-lr-scale", type=float, default=1.0,
                    help="ST: learning-rate factor of the tensors loaded from Model_S (the new head gets the full "
                         "LR); arms already in --out are kept, so use a new --out to compare settings")
    ap.add_argument("--size", default="small", help="network size of from-scratch arms: small, large, auto")
    ap.add_argument("--spacing", default="4", help="model voxel size in mm: one number (isotropic) or x,y,z "
                    "(e.g. 3.906,3.906,2.5), or median: the site-A cases' median spacing, nnU-Net's 3d_fullres rule")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="smoke run: 2 source cases, n=1, 1 draw, 2 held-out, "
                    "8 mm voxels, a few steps")
    args = ap.parse_args(argv)
    if args.quick:
        args.ns, args.draws, args.held_out, args.source_cases, args.monitor = "1", 1, 2, 2, 1
        args.source_steps, args.target_steps, args.steps_per_epoch, args.plateau_factor = 4, 2, 2, 2.0
        args.spacing = "8"
    args.n_list = [int(x) for x in args.ns.split(",") if x.strip()]
    from cervixtl.errors import BadInput
    from cervixtl.training import model_spacing

    try:  # checked here; run_design resolves it ('median': of the source cases)
        model_spacing(args.spacing, [(4.0, 4.0, 4.0)])
    except BadInput as exc:
        ap.error(str(exc))
    args.arm_list = [a for a in args.arms.split(",") if a.strip()]
    bad = [a for a in args.arm_list if a not in ARMS] + [n for n in args.n_list if not 1 <= n <= len(FEW_SHOT)]
    if bad:
        ap.error(f"unknown arm or n out of 1..{len(FEW_SHOT)}: {bad}")
    return args


def config(args: argparse.Namespace, steps: int, lr: float, **kw):
    from cervixtl.training import TrainConfig

    return TrainConfig(epochs=None, max_steps=steps, steps_per_epoch=min(args.steps_per_epoch, steps), lr=lr,
                       batch_size=2, batch_dice=True, select="final", seed=args.seed, device=args.device,
                       threads=args.threads, **kw)


def train_arm(name: str, source: str | None, cases, labels, targets, steps: int, lr: float, reg, monitor,
              args: argparse.Namespace, **kw):
    """One registered model (kept when ``reg`` already has it, so an interrupted run continues)."""
    from cervixtl.progress import Progress
    from cervixtl.training import default_card, finetune

    if reg.versions(name):
        return reg.load(name)[0]
    base = None if source else default_card(name, labels, size=args.size, spacing_mm=args.spacing_mm,
                                            ptv_margin_mm=0.0)
    t0 = time.time()
    card = finetune(source, cases, name, registry=reg, labels=labels if not source else None, targets=targets,
                    base_card=base, config=config(args, steps, lr, **kw), val_cases=monitor,
                    progress=Progress("none"))
    print(f"{name}: {card.training['steps']} steps in {time.time() - t0:.0f} s "
          f"({card.training['step_seconds']} s/step)", flush=True)
    return card


def score(card, reg, held, args) -> dict[str, list[float]]:
    """Dice per structure (list over held-out cases; NaN where a case or the model lacks it). Kept in
    ``<out>/scores.json`` by model version, weights SHA-256 and case list, so that a rerun adding arms does
    not re-score the models it already has."""
    from cervixtl.atomic import write_json_atomic
    from cervixtl.compare import predict_structures
    from cervixtl.training.validation import dice

    cache_file = Path(args.out) / "scores.json"
    cache = json.loads(cache_file.read_text()) if cache_file.exists() else {}
    key = f"{card.spec}|{card.weights['sha256']}|{','.join(c[0] for c in held)}"
    if key in cache:
        return {s: [float("nan") if v is None else float(v) for v in vals] for s, vals in cache[key].items()}
    _, net = reg.load(card.spec)
    out: dict[str, list[float]] = {s: [] for s in STRUCTS}
    for _, ct, truth in held:
        pred = predict_structures(ct, card, net, device=args.device)
        for s in STRUCTS:
            t, p = truth.find(s), pred.find(s)
            out[s].append(float("nan") if t is None or p is None else dice(p.mask, t.mask))
    cache[key] = out
    write_json_atomic(cache_file, cache)
    return out


def plateau(card) -> dict[str, float | None]:
    """Steps and seconds to the first monitoring validation whose EMA reaches 95 % of the run's best EMA."""
    curve = [v for v in card.training.get("validation_curve") or [] if v.get("ema") is not None]
    if not curve:
        return {"steps": None, "seconds": None}
    best = max(v["ema"] for v in curve)
    first = next(v for v in curve if v["ema"] >= 0.95 * best)
    return {"steps": first["step"], "seconds": first["seconds"]}


def run_design(args: argparse.Namespace) -> dict:
    from cervixtl.models.registry import Registry
    from cervixtl.training import model_spacing

    data = Path(args.data)
    reg = Registry(Path(args.out) / "models")
    held = [load_case(c, data) for c in HELD_OUT[: args.held_out]]
    monitor = held[: args.monitor]
    source_cases = [load_case(c, data) for c in SITE_A[: args.source_cases]]
    args.spacing_mm = model_spacing(args.spacing, [c[1].spacing for c in source_cases])
    src = train_arm("lc-S", None, source_cases, list(ORGANS), None, args.source_steps, args.lr_scratch, reg,
                    monitor, args)
    pool = [load_case(c, data) for c in FEW_SHOT]
    budgets = {"T": args.target_steps, "ST": args.target_steps,
               "T_plateau": int(args.plateau_factor * args.target_steps),
               "T_compute": args.source_steps + args.target_steps}
    results: dict = {"S": {"scores": score(src, reg, held, args), "plateau": plateau(src),
                           "steps": src.training["steps"], "seconds": src.training["seconds"]}, "runs": []}
    for n in args.n_list:
        for d in range(args.draws):
            idx = np.random.default_rng(1000 * n + d).choice(len(FEW_SHOT), n, replace=False)
            cases = [pool[i] for i in sorted(idx)]
            for arm in args.arm_list:
                name = f"lc-{arm}-n{n}-d{d}".replace("_", "")
                if arm == "ST":
                    card = train_arm(name, src.spec, cases, None, list(TARGET), budgets[arm], args.lr_finetune, reg,
                                     monitor, args, head_warmup_fraction=args.head_warmup,
                                     backbone_lr_scale=args.backbone_lr_scale)
                else:
                    card = train_arm(name, None, cases, list(STRUCTS), None, budgets[arm], args.lr_scratch, reg,
                                     monitor, args)
                results["runs"].append({"arm": arm, "n": n, "draw": d, "cases": [c[0] for c in cases],
                                        "steps": card.training["steps"], "seconds": card.training["seconds"],
                                        "plateau": plateau(card), "scores": score(card, reg, held, args)})
    return results


def summarise(results: dict, args: argparse.Namespace) -> dict:
    """Means, bootstrap CIs, Holm-corrected paired tests (ST vs each Model_T arm) per n and structure."""
    from cervixtl.stats import bootstrap_ci, holm, paired_wilcoxon

    table, tests = [], []
    for n in args.n_list:
        for arm in args.arm_list:
            runs = [r for r in results["runs"] if r["n"] == n and r["arm"] == arm]
            for s in STRUCTS:
                v = np.array([r["scores"][s] for r in runs], dtype=float)
                lo, hi = bootstrap_ci(v, seed=args.seed)
                table.append({"n": n, "arm": arm, "structure": s, "mean": float(np.nanmean(v)) if
                              np.isfinite(v).any() else float("nan"), "ci95": [lo, hi], "draws": len(runs),
                              "plateau_steps": [r["plateau"]["steps"] for r in runs],
                              "plateau_seconds": [r["plateau"]["seconds"] for r in runs]})
        st = [r for r in results["runs"] if r["n"] == n and r["arm"] == "ST"]
        for other in [a for a in args.arm_list if a != "ST"]:
            ot = [r for r in results["runs"] if r["n"] == n and r["arm"] == other]
            for s in STRUCTS:
                a = np.nanmean(np.array([r["scores"][s] for r in ot], float), axis=0) if ot else []
                b = np.nanmean(np.array([r["scores"][s] for r in st], float), axis=0) if st else []
                w = paired_wilcoxon(list(a), list(b)) if len(a) and len(b) else {"p_value": float("nan"), "n": 0}
                tests.append({"n": n, "a": other, "b": "ST", "structure": s, "n_pairs": w["n"],
                              "p": w["p_value"], "mean_diff": float(np.nanmean(b - a)) if len(a) and len(b) else None})
    for t, ph in zip(tests, holm([t["p"] for t in tests])):
        t["p_holm"] = ph
    return {"table": table, "tests": tests}


def print_report(results: dict, summary: dict, args: argparse.Namespace) -> None:
    s = results["S"]
    print(f"\nModel_S ({s['steps']} steps, {s['seconds']:.0f} s; plateau at step {s['plateau']['steps']}) on "
          f"{args.held_out} held-out site-B cases: " + ", ".join(
              f"{k} {np.nanmean(v):.3f}" for k, v in s["scores"].items() if np.isfinite(v).any()))
    print(f"\n{'n':>3} {'arm':<10}" + "".join(f"{x:>22}" for x in STRUCTS) + "   plateau steps")
    for n in args.n_list:
        for arm in args.arm_list:
            rows = [r for r in summary["table"] if r["n"] == n and r["arm"] == arm]
            cells = "".join(f"{_cell(r):>22}" for r in rows)
            print(f"{n:>3} {arm:<10}{cells}   {rows[0]['plateau_steps'] if rows else ''}")
    print("\npaired Wilcoxon on patient means (ST vs arm), Holm-corrected over all tests")
    for t in summary["tests"]:
        print(f"n={t['n']:<3} ST vs {t['a']:<10} {t['structure']:<13} diff {_f(t['mean_diff'])}  "
              f"p {_f(t['p'], 4)}  p_holm {_f(t['p_holm'], 4)}  (pairs {t['n_pairs']})")


def _f(x, nd: int = 3) -> str:
    return "-" if x is None or not math.isfinite(x) else f"{x:.{nd}f}"


def _cell(r: dict) -> str:
    return f"{_f(r['mean'])} [{_f(r['ci95'][0], 2)},{_f(r['ci95'][1], 2)}]"


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if not (Path(args.data) / "labels.json").exists():
        print(f"OpenKBP data not found at {args.data}; see ../shared/data/README.md", file=sys.stderr)
        return 2
    from cervixtl.atomic import write_json_atomic
    from cervixtl.metrics import json_safe

    torch.set_num_threads(args.threads)
    t0 = time.time()
    results = run_design(args)
    summary = summarise(results, args)
    print_report(results, summary, args)
    design = {k: v for k, v in vars(args).items()}
    write_json_atomic(Path(args.out) / "learning_curve.json",
                      json_safe({"design": design, "results": results, "summary": summary,
                                 "seconds": round(time.time() - t0)}))
    print(f"wrote {Path(args.out) / 'learning_curve.json'} ({time.time() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
