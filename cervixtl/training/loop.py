"""The training loop, one function per phase (as nnU-Net's trainer): :func:`train_step`,
:func:`validation_step`, :func:`on_epoch_end` (selection, checkpoint, schedule length, stop), checkpoints.

Schedule: AdamW, linear warm-up then poly decay (:mod:`cervixtl.training.schedule`) over the run's total
steps: ``max_steps`` or ``epochs x steps_per_epoch``, or, with ``minutes``, as many steps as the measured
step and validation times let fit in the budget (re-estimated after every validation). Gradients are clipped
to norm ``grad_clip``. With a head warm-up only the freshly initialised tensors train for the first
``head_warmup_fraction`` of the steps (linear probing, then fine-tuning).

Under ``torchrun`` each rank draws its own patches (seed + rank); rank 0 validates, saves, and decides every
step whether to stop and how long the schedule is; the decision is broadcast so that every rank leaves the
loop at the same step (no mismatched collectives under a wall-clock budget).
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import BadInput, ModelError
from ..progress import NULL_PROGRESS, Progress
from .augment import Augmenter
from .config import TrainConfig, TrainResult
from .data import PreparedCase, lr_swap_pairs, sample_batch
from .distributed import broadcast_ints, dist_setup
from .freezing import freeze_norm_stats
from .loss import make_loss
from .schedule import WARMUP_START, lr_factor, steps_for_budget
from .validation import EmaSelector, validate

__all__ = ["train", "train_step", "validation_step", "on_epoch_end", "save_checkpoint", "load_checkpoint",
           "CHECKPOINT_FILE", "CALIBRATION_STEPS"]

CHECKPOINT_FILE = "checkpoint.pt"
#: Steps timed (at the warm-up's start learning rate) before a ``minutes`` budget sets the schedule length.
CALIBRATION_STEPS = 3


@dataclass
class Run:
    """Everything one training run carries between phases (see :func:`train`)."""

    net: torch.nn.Module
    model: torch.nn.Module
    card: Any
    config: TrainConfig
    train_cases: Sequence[PreparedCase]
    val_cases: Sequence[PreparedCase]
    device: torch.device
    opt: torch.optim.Optimizer
    loss_fn: torch.nn.Module
    augmenter: Augmenter | None
    rng: np.random.Generator
    progress: Progress
    rank: int = 0
    world: int = 1
    spe: int = 8
    total_steps: int | None = None
    step: int = 0
    epoch: int = 0
    t0: float = 0.0
    step_s: list[float] = field(default_factory=list)
    val_s: float = 0.0
    loss_curve: list[list[float]] = field(default_factory=list)
    validations: list[dict[str, Any]] = field(default_factory=list)
    selector: EmaSelector = field(default_factory=EmaSelector)
    best_state: dict[str, torch.Tensor] = field(default_factory=dict)
    best_per_label: dict[str, Any] = field(default_factory=dict)
    since_best: int = 0
    stop_reason: str = ""
    ckpt: Path | None = None

    @property
    def amp(self) -> bool:
        return bool(self.config.amp and self.device.type == "cuda")

    @property
    def budget_s(self) -> float | None:
        return self.config.minutes * 60.0 if self.config.minutes else None

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def fraction(self) -> float:
        total = self.total_steps or 0
        fr = [self.step / total] if total else []
        if self.budget_s:
            fr.append(self.elapsed() / self.budget_s)
        return min(1.0, max(fr) if fr else 0.0)

    def eta(self) -> float | None:
        f = self.fraction()
        return round(self.elapsed() * (1 - f) / f, 1) if f > 1e-6 else None


# ---------------------------------------------------------------------------- set-up
def explicit_total(config: TrainConfig, spe: int) -> int | None:
    """Schedule length from ``epochs`` / ``max_steps`` (the smaller), None when only ``minutes`` limit."""
    caps = [c for c in ((config.epochs or 0) * spe, config.max_steps or 0) if c]
    return min(caps) if caps else None


def make_optimizer(net: torch.nn.Module, config: TrainConfig,
                   new_parameters: Sequence[str] | None) -> torch.optim.Optimizer:
    """AdamW with two parameter groups: ``head`` (freshly initialised tensors; all of them when
    ``new_parameters`` is None) and ``body`` (loaded from a source: learning rate x ``backbone_lr_scale``)."""
    new = set(new_parameters) if new_parameters is not None else None
    head: list[torch.nn.Parameter] = []
    body: list[torch.nn.Parameter] = []
    for n, p in net.named_parameters():
        if p.requires_grad:
            (head if new is None or n in new else body).append(p)
    if not head and not body:
        raise BadInput(f"freeze strategy {config.freeze!r} leaves no parameter to train")
    groups = [{"params": head, "name": "head", "scale": 1.0},
              {"params": body, "name": "body", "scale": config.backbone_lr_scale}]
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=config.lr, weight_decay=config.weight_decay)


def set_learning_rate(run: Run) -> float:
    """Set each group's learning rate for the current step; returns the head's."""
    cfg = run.config
    if run.total_steps is None:
        factor = WARMUP_START
    else:
        factor = lr_factor(run.step, run.total_steps, int(round(cfg.warmup_fraction * run.total_steps)))
    head_only = run.total_steps is not None and run.step < cfg.head_warmup_fraction * run.total_steps
    for g in run.opt.param_groups:
        g["lr"] = cfg.lr * factor * (0.0 if head_only and g["name"] == "body" else g["scale"])
    return cfg.lr * factor


# ---------------------------------------------------------------------------- phases
def train_step(run: Run) -> float:
    """One optimiser step on a fresh augmented batch; returns the loss."""
    t = time.perf_counter()
    run.progress.check_cancelled()
    cfg = run.config
    x, y = sample_batch(run.train_cases, run.card.patch_size, cfg.batch_size, run.rng, cfg.pos_fraction)
    if run.augmenter is not None:
        x, y = run.augmenter(x, y)
    x, y = x.to(run.device), y.to(run.device)
    lr = set_learning_rate(run)
    with torch.autocast(device_type=run.device.type, dtype=torch.bfloat16, enabled=run.amp):
        logits = run.model(x)
    if isinstance(logits, (list, tuple)):  # deep supervision in training mode (SegResNetDS): full resolution
        logits = logits[0]
    loss = run.loss_fn(logits.float(), y)
    run.opt.zero_grad(set_to_none=True)
    loss.backward()
    if cfg.grad_clip:
        torch.nn.utils.clip_grad_norm_([p for g in run.opt.param_groups for p in g["params"]], cfg.grad_clip)
    run.opt.step()
    run.step += 1
    lv = float(loss.detach().cpu())
    run.loss_curve.append([run.step, round(lv, 5)])
    run.step_s.append(time.perf_counter() - t)
    best = run.selector.best
    run.progress("train", run.fraction(), f"epoch {run.epoch + 1} step {run.step} loss {lv:.4f}",
                 epoch=run.epoch + 1, step=run.step, loss=round(lv, 5), lr=float(f"{lr:.3g}"),
                 val_dice=(round(best, 4) if best >= 0 else None), eta_s=run.eta())
    return lv


def validation_step(run: Run) -> dict[str, Any]:
    """Validate (rank 0), record per-structure Dice and the EMA, keep the state if it is the selected one."""
    t = time.perf_counter()
    v = validate(run.net, run.val_cases, run.card, run.device, run.amp, overlap=run.config.val_overlap)
    run.net.train()
    freeze_norm_stats(run.net)
    run.val_s = time.perf_counter() - t
    chosen = run.selector.update(v["mean_dice"], run.step)
    per = {k: (round(x, 4) if np.isfinite(x) else None) for k, x in v["per_label"].items()}
    ep_losses = [lv for s, lv in run.loss_curve[-run.spe:]]
    rec = {"epoch": run.epoch, "step": run.step, "mean_dice": _r(v["mean_dice"]), "ema": _r(run.selector.ema),
           "per_label": per, "train_loss": round(float(np.mean(ep_losses)), 5) if ep_losses else None,
           "seconds": round(run.elapsed(), 1), "lr": float(f"{run.opt.param_groups[0]['lr']:.3g}")}
    run.validations.append(rec)
    if chosen:
        run.best_state = {k: t_.detach().cpu().clone() for k, t_ in run.net.state_dict().items()}
        run.best_per_label, run.since_best = per, 0
    else:
        run.since_best += 1
    run.progress("validate", run.fraction(), f"epoch {run.epoch}: validation Dice {v['mean_dice']:.3f}, smoothed "
                 f"{run.selector.ema or 0:.3f} (selected step {run.selector.best_step})", epoch=run.epoch,
                 step=run.step, loss=rec["train_loss"], val_dice=rec["mean_dice"], val_ema=rec["ema"],
                 val_per_label=per, eta_s=run.eta())
    return rec


def _r(x: float | None) -> float | None:
    return round(float(x), 4) if x is not None and np.isfinite(x) else None


def on_epoch_end(run: Run) -> bool:
    """Rank 0 after each epoch (``run.epoch`` already counts it): validate, re-estimate the schedule length
    of a ``minutes`` budget, save the checkpoint; returns True when training should stop (patience)."""
    validation_step(run)
    estimate_total_steps(run)
    if run.ckpt is not None:
        save_checkpoint(run.ckpt, checkpoint_state(run))
    if run.config.patience and run.since_best >= run.config.patience:
        run.stop_reason = "early stopping"
        return True
    return False


def estimate_total_steps(run: Run) -> None:
    """With a ``minutes`` budget: total steps = the explicit limit or the steps that fit the remaining time
    (measured median step time, validation time spread over an epoch), whichever is smaller."""
    if not run.budget_s or len(run.step_s) < CALIBRATION_STEPS:
        return
    step_s = float(np.median(run.step_s[-50:]))
    est = steps_for_budget(run.budget_s, run.elapsed(), run.step, step_s, run.val_s, run.spe)
    cap = explicit_total(run.config, run.spe)
    run.total_steps = min(est, cap) if cap else est


def should_stop(run: Run) -> bool:
    """Rank 0's per-step decision: schedule done, time budget spent, or max steps reached."""
    if run.total_steps is not None and run.step >= run.total_steps:
        run.stop_reason = run.stop_reason or ("time budget" if run.budget_s else "schedule done")
        return True
    if run.budget_s and run.elapsed() >= run.budget_s:
        run.stop_reason = "time budget"
        return True
    return False


# ---------------------------------------------------------------------------- checkpoints
def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write a training checkpoint atomically (tensors, numbers, strings and lists only)."""
    from ..atomic import atomic_path

    with atomic_path(path) as tmp:
        torch.save(state, str(tmp))


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint` (``weights_only=True``: no code is unpickled).

    Raises:
        ModelError: unreadable checkpoint.
    """
    try:
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises many error types on bad files
        raise ModelError(f"{path}: unreadable training checkpoint ({str(exc).splitlines()[0][:120]})") from None


def checkpoint_state(run: Run) -> dict[str, Any]:
    """What a resumed run needs (weights, optimiser, selected weights, counters, history as JSON)."""
    hist = {"validations": run.validations, "selector": run.selector.state(), "seconds": run.elapsed(),
            "best_per_label": run.best_per_label, "total_steps": run.total_steps, "step_s": run.step_s[-50:],
            "val_s": run.val_s}
    return {"net": run.net.state_dict(), "opt": run.opt.state_dict(), "best_net": run.best_state,
            "step": run.step, "epoch": run.epoch, "loss_curve": run.loss_curve, "history_json": json.dumps(hist)}


def resume_from(run: Run) -> None:
    """Continue from ``run.ckpt``.

    Raises:
        ModelError: the checkpoint belongs to another model, label set or freeze strategy.
    """
    st = load_checkpoint(run.ckpt)  # type: ignore[arg-type]
    try:
        run.net.load_state_dict(st["net"])
        run.opt.load_state_dict(st["opt"])
        run.best_state = st["best_net"]
        run.step, run.epoch = int(st["step"]), int(st["epoch"])
        run.loss_curve = [list(x) for x in st["loss_curve"]]
        hist = json.loads(st["history_json"])
        run.selector.load(hist["selector"])
    except (KeyError, ValueError, RuntimeError, TypeError):
        raise ModelError(f"{run.ckpt}: checkpoint does not fit this run (other model, labels or freeze "
                         "strategy); start again without --resume") from None
    run.validations, run.best_per_label = hist["validations"], hist["best_per_label"]
    run.step_s, run.val_s = hist["step_s"], hist["val_s"]
    run.total_steps = explicit_total(run.config, run.spe) or hist["total_steps"]
    run.t0 = time.perf_counter() - float(hist["seconds"])
    torch.manual_seed(run.config.seed + run.rank + run.step)
    run.rng = np.random.default_rng(run.config.seed + 1000 * run.rank + run.step)
    run.progress("train", 0.0, f"resumed at epoch {run.epoch}, step {run.step}", epoch=run.epoch, step=run.step)


# ---------------------------------------------------------------------------- the loop
def setup_run(net: torch.nn.Module, card: Any, train_cases: Sequence[PreparedCase],
              val_cases: Sequence[PreparedCase], config: TrainConfig, progress: Progress,
              new_parameters: Sequence[str] | None) -> Run:
    """Device, DDP wrapper, optimiser, loss, augmentation and seeds of a run."""
    from ..inference import resolve_device

    rank, world, local_rank = dist_setup()
    device = resolve_device(config.device)
    if world > 1 and device.type == "cuda":
        device = torch.device(f"cuda:{local_rank}")
    if config.threads:
        torch.set_num_threads(int(config.threads))
    torch.manual_seed(config.seed + rank)
    net = net.to(device).train()
    freeze_norm_stats(net)
    model = net
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP

        model = DDP(net, device_ids=[local_rank] if device.type == "cuda" else None,
                    find_unused_parameters=any(not p.requires_grad for p in net.parameters()))
    aug = (Augmenter(lr_swap_pairs(card.label_names), seed=config.seed + 7919 * rank,
                     axis_order=str(getattr(card, "axis_order", "zyx"))) if config.augment else None)
    spe = int(config.steps_per_epoch or max(8, 4 * len(train_cases)))
    run = Run(net, model, card, config, list(train_cases), list(val_cases) or list(train_cases), device,
              make_optimizer(net, config, new_parameters), make_loss(card, config.focal, config.batch_dice), aug,
              np.random.default_rng(config.seed + 1000 * rank), progress, rank, world, spe,
              explicit_total(config, spe))
    run.selector = EmaSelector(config.select if len(val_cases) >= 2 else "final")
    if config.select == "ema" and len(val_cases) < 2:
        msg = (f"{len(val_cases)} validation case(s) cannot select a checkpoint: keeping the final state"
               + ("; the Dice shown is on the training cases" if not val_cases else ""))
        progress("train", 0.0, msg, warning=msg)
    run.best_state = copy.deepcopy({k: v.detach().cpu() for k, v in net.state_dict().items()})
    return run


def train(net: torch.nn.Module, card: Any, train_cases: Sequence[PreparedCase], val_cases: Sequence[PreparedCase],
          config: TrainConfig, *, progress: Progress | None = None, checkpoint_dir: Any = None,
          resume: bool = False, new_parameters: Sequence[str] | None = None) -> TrainResult:
    """Train ``net`` (already built, weights loaded, layers frozen) on prepared cases.

    Args:
        net: the network ([B, 1, z, y, x] in, [B, C_out, z, y, x] logits out).
        card: its model card (labels, output, patch size, preprocessing).
        train_cases / val_cases: prepared cases; with no validation case the training cases are validated on
            (the history then says "training-set Dice") and the final state is kept.
        config: settings (:class:`TrainConfig`).
        progress: ``train`` records per step (epoch, step, loss, lr, val_dice, eta_s) and ``validate`` records
            per epoch (val_dice, val_ema, val_per_label); its cancel flag raises
            :class:`~cervixtl.errors.Cancelled` (the last checkpoint stays for resume).
        checkpoint_dir: folder for ``checkpoint.pt`` (None: none); resume: continue from it.
        new_parameters: names of freshly initialised tensors (the head warm-up trains only these first).

    Returns:
        :class:`TrainResult`: the selected weights and the history.
    """
    config.check()
    if not train_cases:
        raise BadInput("no training case")
    run = setup_run(net, card, train_cases, val_cases, config, progress or NULL_PROGRESS, new_parameters)
    run.ckpt = Path(checkpoint_dir) / CHECKPOINT_FILE if checkpoint_dir else None
    run.t0 = time.perf_counter()
    if resume and run.ckpt is not None and run.ckpt.exists():
        resume_from(run)
    stop = False
    while not stop:
        for _ in range(run.spe):
            train_step(run)
            if len(run.step_s) == CALIBRATION_STEPS and run.rank == 0:
                estimate_total_steps(run)
            flags = broadcast_ints([should_stop(run) if run.rank == 0 else 0, run.total_steps or 0],
                                   run.world, run.device)
            run.total_steps = flags[1] or None
            if flags[0]:
                break
        else:
            flags = [0]
        run.epoch += 1
        end = on_epoch_end(run) if run.rank == 0 else False
        stop = bool(broadcast_ints([int(flags[0] or end)], run.world, run.device)[0])
    return finish(run, val_cases)


def finish(run: Run, val_cases: Sequence[PreparedCase]) -> TrainResult:
    """The selected state and the JSON-ready history of a finished run."""
    history = {
        "steps": run.step, "epochs": run.epoch, "total_steps": run.total_steps, "stop_reason": run.stop_reason,
        "loss_curve": run.loss_curve, "validations": run.validations, "best_val_dice": _r(run.selector.best)
        if run.selector.best >= 0 else None, "best_step": run.selector.best_step, "best_epoch": run.epoch,
        "selection": run.selector.rule, "val_per_label": run.best_per_label,
        "val_kind": "validation" if val_cases else "training-set",
        "seconds": round(run.elapsed(), 1), "device": str(run.device), "world_size": run.world,
        "frozen_tensors": sum(1 for p in run.net.parameters() if not p.requires_grad),
        "step_seconds": round(float(np.median(run.step_s)), 4) if run.step_s else None,
        "validation_seconds": round(run.val_s, 2),
    }
    best = history["best_val_dice"]
    run.progress("train", 1.0, f"done: {run.stop_reason}, selected step {run.selector.best_step} "
                 f"({run.selector.rule}, {history['val_kind']} Dice {best})", epoch=run.epoch, step=run.step,
                 val_dice=best, eta_s=0)
    return TrainResult(run.best_state, history)
