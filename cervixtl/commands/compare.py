"""``cervixtl compare``: source vs site vs fine-tuned model on held-out cases, with paired statistics."""

from __future__ import annotations

import argparse

from ..progress import cancel_on_signals
from ._common import add_json_arg, add_progress_arg, make_progress, parse_name_list, print_json

ORDER = 64


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("compare", help="compare 2-3 models on held-out cases (Dice, HD95, surface Dice, Wilcoxon)",
                       description="Contour held-out cases with each model and compare per case and structure: "
                       "mean ± sd, median, paired Wilcoxon signed-rank p-value per structure; writes compare.json, "
                       "compare.csv and compare.png in --out.")
    p.add_argument("--models", nargs="+", required=True, metavar="MODEL", help="2 or 3 models NAME[@VERSION]")
    p.add_argument("--cases", required=True,
                   help="held-out case ids (comma-separated), 'all', a case folder or a case-library folder")
    p.add_argument("--out", default="compare", help="output folder (default ./compare)")
    p.add_argument("--structures", default=None, help="comma-separated structures (default: all in common)")
    p.add_argument("--tolerance-mm", type=float, default=2.0, help="surface Dice tolerance in mm (default 2)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--no-fast", action="store_true", help="full sliding-window overlap (slower on CPU)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch")
    p.add_argument("--models-dir", default=None, help="model registry folder (default $CERVIXTL_MODELS_DIR)")
    p.add_argument("--cases-dir", default=None, help="case library folder (default $CERVIXTL_CASES_DIR)")
    add_json_arg(p, "the result (cervixtl-compare/1) instead of the table")
    add_progress_arg(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..api.training import compare_cases
    from ..compare import format_table

    progress = make_progress(args)
    with cancel_on_signals(progress):
        rep = compare_cases(args.models, args.cases, out=args.out, structures=parse_name_list(args.structures),
                            tolerance_mm=args.tolerance_mm, device=args.device, fast=not args.no_fast,
                            threads=args.threads, models_dir=args.models_dir, cases_dir=args.cases_dir,
                            progress=progress)
    if args.json:
        print_json(rep)
    else:
        print(format_table(rep))
        print("wrote " + ", ".join(rep["files"].values()))
    return 0
