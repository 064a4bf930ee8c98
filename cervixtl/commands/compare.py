"""``cervixtl compare``: source vs site vs fine-tuned model on held-out cases, with paired statistics."""

from __future__ import annotations

import argparse
import json

from ._common import add_progress_arg, parse_name_list

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
    p.add_argument("--json", action="store_true", help="print the result JSON on stdout instead of the table")
    add_progress_arg(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..cases import load_cases
    from ..compare import compare_models, format_table, write_outputs
    from ..metrics import json_safe
    from ..models.registry import Registry
    from ..progress import Progress, cancel_on_signals

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    if not 2 <= len(args.models) <= 3:
        from ..errors import BadInput

        raise BadInput(f"--models needs 2 or 3 models, got {len(args.models)}")
    progress = Progress(args.progress)
    cases = load_cases(args.cases, args.cases_dir)
    structs = parse_name_list(args.structures)
    with cancel_on_signals(progress):
        res = compare_models(args.models, [(c.id, c.ct, c.final) for c in cases], registry=Registry(args.models_dir),
                             structures=structs, device=args.device, fast=not args.no_fast,
                             tolerance_mm=args.tolerance_mm, progress=progress)
    paths = write_outputs(res, args.out)
    if args.json:
        print(json.dumps(json_safe({k: v for k, v in res.items() if k != "rows"} | {"files": {
            k: str(v) for k, v in paths.items()}}), indent=2))
    else:
        print(format_table(res))
        print("wrote " + ", ".join(str(v) for v in paths.values()))
    return 0
