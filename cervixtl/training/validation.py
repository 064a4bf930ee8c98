"""Validation with the production pipeline, per-structure Dice, and checkpoint selection by a smoothed mean.

Validation contours each held-out CT exactly as ``contour`` does (:func:`cervixtl.inference.predict_labels`:
the card's preprocessing, sliding windows with overlap >= 0.5 and Gaussian blending, the post-processing of
:mod:`cervixtl.postprocess` including side assignment) and scores every card label on the CT's own grid
against the case's contours. Structures a case did not contour are NaN (left out of the means). The mean
is over foreground structures only (there is no background term).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from .data import PreparedCase

__all__ = ["dice", "validate", "EmaSelector", "EMA_WEIGHT"]

#: Weight of the old value in the exponential moving average of the validation Dice (nnU-Net: 0.9).
EMA_WEIGHT = 0.9


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice of two boolean masks (1.0 when both are empty)."""
    a, b = np.asarray(a, dtype=bool), np.asarray(b, dtype=bool)
    denom = int(a.sum()) + int(b.sum())
    return 1.0 if denom == 0 else 2.0 * int(np.logical_and(a, b).sum()) / denom


def _case_dice(net: torch.nn.Module, case: PreparedCase, card: Any, device: torch.device,
               overlap: float) -> list[float]:
    from ..inference import predict_labels

    names = list(card.label_names)
    if case.ct is None or case.seg is None:
        return [float("nan")] * len(names)
    pred = predict_labels(case.ct, card, net, device=device, overlap=overlap)
    out = []
    for n in names:
        truth = case.seg.find(n)
        out.append(float("nan") if truth is None else dice(pred.masks[n], truth.mask))
    return out


@torch.no_grad()
def validate(net: torch.nn.Module, cases: Sequence[PreparedCase], card: Any, device: torch.device,
             amp: bool = False, *, overlap: float = 0.5) -> dict[str, Any]:
    """Dice per label (mean over cases that contour it) and their mean, of ``net`` on whole CTs through the
    production pipeline (module docstring). Returns ``{"mean_dice": float, "per_label": {name: float}}``
    (NaN where no case contours a label)."""
    names = list(card.label_names)
    per = [_case_dice(net, c, card, device, overlap) for c in cases]
    arr = np.array(per, dtype=float) if per else np.full((0, len(names)), np.nan)
    means = []
    for c in range(len(names)):
        col = arr[:, c] if arr.size else np.array([])
        fin = col[np.isfinite(col)]
        means.append(float(fin.mean()) if fin.size else float("nan"))
    finite = [m for m in means if math.isfinite(m)]
    return {"mean_dice": float(np.mean(finite)) if finite else float("nan"),
            "per_label": dict(zip(names, means))}


class EmaSelector:
    """Keeps the state with the best exponential moving average of the mean validation Dice
    (``ema = 0.9 ema + 0.1 dice``, the first value as is), or always the latest state (``rule="final"``)."""

    def __init__(self, rule: str = "ema") -> None:
        self.rule = rule
        self.ema: float | None = None
        self.best = -1.0
        self.best_step = 0

    def update(self, mean_dice: float, step: int) -> bool:
        """Record one validation; True when this state becomes the selected one."""
        if math.isfinite(mean_dice):
            self.ema = mean_dice if self.ema is None else EMA_WEIGHT * self.ema + (1 - EMA_WEIGHT) * mean_dice
        if self.rule == "final":
            self.best, self.best_step = (self.ema if self.ema is not None else -1.0), step
            return True
        if self.ema is not None and self.ema > self.best:
            self.best, self.best_step = self.ema, step
            return True
        return False

    def state(self) -> dict[str, Any]:
        """JSON-ready state (for checkpoints)."""
        return {"rule": self.rule, "ema": self.ema, "best": self.best, "best_step": self.best_step}

    def load(self, d: dict[str, Any]) -> None:
        """Restore :meth:`state`."""
        self.rule, self.ema, self.best, self.best_step = d["rule"], d["ema"], float(d["best"]), int(d["best_step"])
