"""``cervixtl demo [--out DIR]``: phantom CT -> demo model contours -> protocol margins -> scores + overview."""

from __future__ import annotations

import argparse

from ..progress import cancel_on_signals
from ._common import add_json_arg, add_progress_arg, make_progress, print_json

ORDER = 5


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="run the whole workflow on a synthetic phantom (offline, ~1 min on CPU)",
                       description="Make a synthetic pelvic CT phantom, contour it with the phantom-trained demo "
                       "model, apply the protocol PTV margin, score against the phantom truth and write ct.nii.gz, "
                       "contours.seg.nrrd, truth.seg.nrrd, report.json and overview.png. Not for clinical use.")
    p.add_argument("--out", default="cervixtl-demo", help="output folder (default ./cervixtl-demo)")
    p.add_argument("--seed", type=int, default=None, help="phantom seed (default: the fixed demo seed)")
    p.add_argument("--site", default="A", choices=["A", "B"], help="phantom site (default A)")
    p.add_argument("--model", default=None, help="model NAME[@VERSION] (default cervixtl-demo)")
    p.add_argument("--device", default="cpu", help="cpu (default), auto or cuda")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch")
    p.add_argument("--models-dir", default=None, help="model registry folder (default $CERVIXTL_MODELS_DIR)")
    add_json_arg(p, "the report (cervixtl-demo/1)")
    add_progress_arg(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..demo import DEMO_SEED, run_demo

    progress = make_progress(args)
    with cancel_on_signals(progress):
        rep = run_demo(args.out, seed=DEMO_SEED if args.seed is None else args.seed, site=args.site,
                       model=args.model, models_dir=args.models_dir, device=args.device, threads=args.threads,
                       progress=progress)
    if args.json:
        print_json(rep)
        return 0
    print(rep["notice"])
    print(f"model {rep['model']['name']}@{rep['model']['version']}, phantom seed {rep['phantom']['seed']} "
          f"site {rep['phantom']['site']}, {rep['timing_s']['total']} s")
    print(f"{'structure':<16}{'Dice':>7}{'HD95 mm':>9}{'sDice':>7}{'ref mL':>9}{'pred mL':>9}")
    for m in rep["metrics"]:
        hd = m.get("hd95_mm")
        print(f"{m['name']:<16}{m['dice']:>7.3f}{(f'{hd:.1f}' if hd is not None else '-'):>9}"
              f"{m['surface_dice']:>7.3f}{m['volume_ref_ml']:>9.1f}{m['volume_pred_ml']:>9.1f}")
    for k, v in rep["files"].items():
        print(f"{k:>13}: {v}")
    return 0
