"""``cervixtl finetune``: adapt a source model (or train one from scratch) on the site's own cases."""

from __future__ import annotations

import argparse

from ..progress import Progress, cancel_on_signals
from ._common import add_json_arg, add_progress_arg, make_progress, parse_name_list, print_json

ORDER = 62


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("finetune", help="fine-tune a model on cases of the case library (transfer learning)",
                       description="Fine-tune --source (registry NAME[@VER], or 'none' to train from scratch) on "
                       "the cases --cases and register the result as a new version of --name, with a model card "
                       "that records the parent, frozen layers, cases, validation Dice and loss curve. The "
                       "active model changes only with --activate.")
    p.add_argument("--source", required=True, help="source model NAME[@VERSION], package folder, or 'none'")
    p.add_argument("--cases", required=True,
                   help="case ids (comma-separated), 'all', a case folder or a case-library folder")
    p.add_argument("--name", required=True, help="name of the new model in the registry")
    p.add_argument("--labels", default=None,
                   help="comma-separated label names of the new model (default: the source's); labels the "
                   "source has keep their trained output channels, new labels start from random")
    p.add_argument("--targets", default=None,
                   help="comma-separated new target structures added as independent sigmoid channels beside "
                   "the source's softmax organs (e.g. GTV,CTV,PTV on a TotalSegmentator source)")
    p.add_argument("--freeze", default="none", help="none, encoder or all-but-last-N blocks in forward order "
                   "(default none)")
    p.add_argument("--head-warmup", type=float, default=None, help="share of the steps that train only the new "
                   "output channels first (default 0.1 when fine-tuning, 0 from scratch)")
    p.add_argument("--select", choices=("ema", "final"), default="ema",
                   help="keep the state with the best smoothed validation Dice (ema) or the final state")
    p.add_argument("--size", choices=("small", "large", "auto"), default="auto",
                   help="from-scratch network: small (CPU, demo), large (GPU), auto (large with CUDA)")
    p.add_argument("--spacing", default=None,
                   help="from-scratch model voxel size in mm: one number, x,y,z, or 'median' (the training CTs' "
                   "median spacing, as nnU-Net); default 4 mm isotropic")
    lim = p.add_mutually_exclusive_group()
    lim.add_argument("--epochs", type=int, default=None, help="number of epochs (default 20)")
    lim.add_argument("--minutes", type=float, default=None, help="wall-clock budget in minutes; also sets the "
                     "learning-rate schedule's length (steps estimated from the measured step time)")
    p.add_argument("--steps-per-epoch", type=int, default=None, help="optimiser steps per epoch "
                   "(default max(8, 4 x training cases))")
    p.add_argument("--max-steps", type=int, default=None, help="stop after this many steps")
    p.add_argument("--batch-size", type=int, default=2, help="patches per step (default 2)")
    p.add_argument("--lr", type=float, default=None, help="learning rate (default 2e-3 from scratch, 5e-4 fine-tuning)")
    p.add_argument("--val-fraction", type=float, default=0.2, help="share of cases held out for validation")
    p.add_argument("--patience", type=int, default=0,
                   help="validations without improvement before early stop (default 0: the whole schedule)")
    p.add_argument("--focal", action="store_true", help="Dice + focal loss instead of Dice + cross-entropy")
    p.add_argument("--batch-dice", action="store_true",
                   help="Dice over the whole batch per structure (helps small organs on real CT)")
    p.add_argument("--no-augment", action="store_true", help="no mirror/rotation/scale/intensity augmentation")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--resume", action="store_true", help="continue a stopped run of the same --name")
    p.add_argument("--activate", action="store_true", help="make the new version the active one")
    p.add_argument("--models-dir", default=None, help="model registry folder (default $CERVIXTL_MODELS_DIR)")
    p.add_argument("--cases-dir", default=None, help="case library folder (default $CERVIXTL_CASES_DIR)")
    add_json_arg(p, "the new model (cervixtl-finetune/1: its exact spec and card summary)")
    add_progress_arg(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..api.training import finetune_cases
    from ..training import is_lead_process

    # Under torchrun (several processes, one per GPU) only rank 0 reports progress and the result.
    lead = is_lead_process()
    progress = make_progress(args) if lead else Progress("none")
    with cancel_on_signals(progress):
        rep = finetune_cases(
            args.source, args.cases, args.name, labels=parse_name_list(args.labels),
            targets=parse_name_list(args.targets), size=args.size, spacing=args.spacing, activate=args.activate,
            resume=args.resume, models_dir=args.models_dir, cases_dir=args.cases_dir, progress=progress,
            epochs=args.epochs, minutes=args.minutes, steps_per_epoch=args.steps_per_epoch,
            max_steps=args.max_steps, batch_size=args.batch_size, lr=args.lr, freeze=args.freeze,
            val_fraction=args.val_fraction, patience=args.patience, focal=args.focal, batch_dice=args.batch_dice,
            augment=not args.no_augment, seed=args.seed, device=args.device, threads=args.threads,
            select=args.select, head_warmup_fraction=args.head_warmup)
    if not lead:
        return 0
    if args.json:
        print_json(rep)
    else:
        t = rep["training"]
        kind = t.get("val_kind", "validation")
        print(f"registered {rep['model']}: {kind} Dice {t.get('val_mean_dice')} at step "
              f"{t.get('best_step')} of {t.get('steps')} "
              f"{'(no validation case: this is the Dice on the training cases) ' if kind != 'validation' else ''}"
              f"({'activated' if rep['activated'] else 'not activated'})")
    return 0
