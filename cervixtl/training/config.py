"""Training settings (:class:`TrainConfig`) and the training result type."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import torch

from ..errors import BadInput

__all__ = ["TrainConfig", "TrainResult", "DEFAULT_LABELS", "UNKNOWN", "SELECTIONS", "INTENSITIES"]

#: Label value of a structure that was not contoured in a case: left out of the loss, not "background".
UNKNOWN = 255

#: Labels of the default (from-scratch) model: targets and pelvic organs at risk.
DEFAULT_LABELS = ("GTV", "CTV", "Bladder", "Rectum", "FemoralHead_L", "FemoralHead_R")

#: Checkpoint selection rules: best smoothed (EMA) foreground validation Dice, or the final state.
SELECTIONS = ("ema", "final")
#: CT normalisation of a from-scratch model: nnU-Net's foreground z-score, or the base card's HU window.
INTENSITIES = ("ct_zscore", "window")


@dataclass
class TrainConfig:
    """Training settings.

    Attributes:
        epochs: maximum epochs (None: only ``minutes``/``max_steps`` limit the run).
        minutes: wall-clock budget in minutes (None: no limit). It also sets the schedule's length: the number
            of steps that fit is estimated from the measured step (and validation) time.
        steps_per_epoch: optimiser steps per epoch = between validations (None: ``max(8, 4 * training cases)``).
        max_steps: hard limit on optimiser steps (None: none).
        batch_size: patches per step.
        lr: peak AdamW learning rate; weight_decay: AdamW weight decay.
        warmup_fraction: share of the schedule with a linear learning-rate warm-up (from 1 % of ``lr``),
            followed by poly decay ``(1 - t)^0.9`` to 0 (nnU-Net's schedule).
        grad_clip: gradient-norm clipping (12, as nnU-Net; 0: off).
        freeze: ``none``, ``encoder`` or ``all-but-last-N`` (N blocks in forward order, see
            :mod:`cervixtl.training.freezing`).
        head_warmup_fraction: share of the steps during which only the freshly initialised tensors (a new
            output head) train, before the rest (linear probing, then fine-tuning). Fine-tuning only.
        backbone_lr_scale: learning-rate factor of the tensors loaded from the source (discriminative LR).
        val_fraction: share of the cases held out for validation (at least one when there are >= 2 cases).
        select: ``ema`` (the state with the best exponential moving average, weight 0.9, of the foreground
            validation Dice, as nnU-Net) or ``final``; with fewer than 2 validation cases ``final`` is used.
        patience: validations without EMA improvement before stopping early (0: never).
        pos_fraction: share of patches centred on a foreground voxel.
        focal: focal loss instead of cross-entropy (with Dice).
        batch_dice: Dice over the whole batch per structure (as nnU-Net) instead of per patch.
        augment: the augmentation set of :mod:`cervixtl.training.augment` (False: none).
        intensity: CT normalisation of a from-scratch model (``ct_zscore`` from the training foreground, or
            ``window``); a fine-tuned model keeps its source's.
        val_overlap: sliding-window overlap of validation (>= 0.5, Gaussian blending).
        seed: random seed (patch sampling, augmentation, initialisation, split).
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``; amp: bf16 autocast on CUDA.
        threads: torch CPU threads (None: leave torch's setting).
    """

    epochs: int | None = 20
    minutes: float | None = None
    steps_per_epoch: int | None = None
    max_steps: int | None = None
    batch_size: int = 2
    lr: float = 2e-3
    weight_decay: float = 1e-5
    warmup_fraction: float = 0.05
    grad_clip: float = 12.0
    freeze: str = "none"
    head_warmup_fraction: float = 0.0
    backbone_lr_scale: float = 1.0
    val_fraction: float = 0.2
    select: str = "ema"
    patience: int = 0
    pos_fraction: float = 0.67
    focal: bool = False
    batch_dice: bool = False
    augment: bool = True
    intensity: str = "ct_zscore"
    val_overlap: float = 0.5
    seed: int = 0
    device: str = "auto"
    amp: bool = True
    threads: int | None = None

    def check(self) -> None:
        """Raise :class:`BadInput` for out-of-range settings."""
        if self.epochs is None and self.minutes is None and self.max_steps is None:
            raise BadInput("give --epochs or --minutes: training needs a limit")
        if self.epochs is not None and self.epochs < 1:
            raise BadInput(f"--epochs {self.epochs} must be >= 1")
        if self.minutes is not None and not self.minutes > 0:
            raise BadInput(f"--minutes {self.minutes} must be > 0")
        if not 0.0 <= self.val_fraction < 1.0:
            raise BadInput(f"--val-fraction {self.val_fraction} must be in [0, 1)")
        if self.batch_size < 1 or (self.steps_per_epoch is not None and self.steps_per_epoch < 1):
            raise BadInput("batch size and steps per epoch must be >= 1")
        if not self.lr > 0 or not self.backbone_lr_scale >= 0:
            raise BadInput(f"learning rate {self.lr} must be > 0 (and the backbone scale >= 0)")
        if not (0.0 <= self.warmup_fraction < 1.0 and 0.0 <= self.head_warmup_fraction < 1.0):
            raise BadInput("warm-up fractions must be in [0, 1)")
        if self.select not in SELECTIONS:
            raise BadInput(f"selection {self.select!r} must be one of {', '.join(SELECTIONS)}")
        if self.intensity not in INTENSITIES:
            raise BadInput(f"intensity {self.intensity!r} must be one of {', '.join(INTENSITIES)}")
        if not 0.0 <= self.val_overlap < 1.0:
            raise BadInput(f"validation overlap {self.val_overlap} must be in [0, 1)")
        if not re.fullmatch(r"none|encoder|all-but-last-[1-9]\d*", (self.freeze or "none").strip().lower()):
            raise BadInput(f"unknown freeze strategy {self.freeze!r}: use none, encoder or all-but-last-N (N >= 1)")


@dataclass
class TrainResult:
    """Outcome of :func:`cervixtl.training.loop.train`: the selected weights and a JSON-ready history."""

    state_dict: dict[str, torch.Tensor]
    history: dict[str, Any]
