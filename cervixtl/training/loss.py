"""Segmentation loss for the three card outputs, with per-case, per-channel masks for partial labels.

Labels arrive as [B, C_labels, z, y, x] float tensors in card label order: 1/0 per voxel, or -1 throughout a
channel that the case did not contour. A structure a case did not contour is left out of that case's loss in
every output type:

* **sigmoid** channels (independent, may overlap: GTV ⊂ CTV ⊂ PTV): binary cross-entropy (or focal) + soft
  Dice per channel, each averaged over the samples that contour it;
* **softmax** channels 0..K (0 = background, exclusive organs): cross-entropy (or focal) + soft Dice of the
  organ channels (background excluded from Dice, as nnU-Net). For a sample that does not contour organ k the
  logit of k is removed from that sample's softmax (set to a large negative value), so organ k gets exactly
  zero gradient from it and its unlabelled voxels are not taught to be background *instead of k*;
* **softmax+sigmoid**: the softmax group's loss plus the sigmoid group's loss (targets as sigmoid channels
  beside exclusive softmax organs, so nested targets can all be on).

``batch_dice`` pools the Dice sums over the samples of the batch (per channel), as nnU-Net's batch Dice.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

__all__ = ["OutputGroups", "output_groups", "SegLoss", "make_loss", "label_channels"]

_NEG = -1.0e4  # logit of a channel removed from a softmax (exp underflows to 0 in float32)


@dataclass(frozen=True)
class OutputGroups:
    """Where each card label lives: ``softmax`` = [(label index, output channel)] of the exclusive group
    (background channel 0 implied when not empty), ``sigmoid`` = [(label index, output channel)]."""

    softmax: tuple[tuple[int, int], ...]
    sigmoid: tuple[tuple[int, int], ...]

    @property
    def n_softmax(self) -> int:
        """Output channels of the softmax group, background included (0 when there is none)."""
        return 1 + max(ch for _, ch in self.softmax) if self.softmax else 0


def output_groups(card: Any) -> OutputGroups:
    """The :class:`OutputGroups` of a card (labels sorted by channel; ``card.label_names`` order)."""
    labs = sorted(card.labels, key=lambda d: int(d["channel"]))
    soft: list[Any] = []
    sig: list[Any] = []
    for i, lab in enumerate(labs):
        act = lab.get("activation") or ("softmax" if card.output == "softmax" else "sigmoid")
        if card.output == "sigmoid":
            act = "sigmoid"
        (soft if act == "softmax" else sig).append((i, int(lab["channel"])))
    return OutputGroups(tuple(soft), tuple(sig))


def _soft_dice_loss(prob: torch.Tensor, target: torch.Tensor, keep: torch.Tensor, batch: bool) -> torch.Tensor:
    """1 - soft Dice per channel, averaged over kept (sample, channel) pairs; prob/target [B, C, ...],
    keep [B, C] bool."""
    dims = tuple(range(2, prob.dim()))
    inter = (prob * target).sum(dims)
    denom = prob.sum(dims) + target.sum(dims)
    k = keep.to(prob.dtype)
    if batch:
        inter, denom = (inter * k).sum(0), (denom * k).sum(0)
        valid = keep.any(0)
        dice = (2 * inter + 1e-5) / (denom + 1e-5)
        return (1 - dice)[valid].mean() if valid.any() else prob.sum() * 0.0
    dice = (2 * inter + 1e-5) / (denom + 1e-5)
    return (1 - dice)[keep].mean() if keep.any() else prob.sum() * 0.0


def _focal(ce: torch.Tensor, p_true: torch.Tensor, gamma: float = 2.0) -> torch.Tensor:
    return ce * (1 - p_true).clamp(min=0) ** gamma


class SegLoss(torch.nn.Module):
    """The loss of the module docstring for a card's :class:`OutputGroups`; ``forward(logits [B, C_out, ...],
    labels [B, C_labels, ...])``."""

    def __init__(self, groups: OutputGroups, *, focal: bool = False, batch_dice: bool = False) -> None:
        super().__init__()
        self.groups, self.focal, self.batch_dice = groups, focal, batch_dice

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        known = ~(labels < 0).flatten(2).all(dim=2)  # [B, C_labels]
        parts = []
        if self.groups.softmax:
            parts.append(self._softmax(logits, labels, known))
        if self.groups.sigmoid:
            parts.append(self._sigmoid(logits, labels, known))
        return torch.stack(parts).sum()

    def _sigmoid(self, logits: torch.Tensor, labels: torch.Tensor, known: torch.Tensor) -> torch.Tensor:
        li = [i for i, _ in self.groups.sigmoid]
        x = logits[:, [ch for _, ch in self.groups.sigmoid]].float()
        y = labels[:, li].clamp(min=0)
        keep = known[:, li]
        if not keep.any():
            return x.sum() * 0.0
        ce = F.binary_cross_entropy_with_logits(x, y, reduction="none")
        p = torch.sigmoid(x)
        if self.focal:
            ce = _focal(ce, torch.where(y > 0.5, p, 1 - p))
        ce_pc = ce.flatten(2).mean(2)  # [B, C]
        return ce_pc[keep].mean() + _soft_dice_loss(p, y, keep, self.batch_dice)

    def _softmax(self, logits: torch.Tensor, labels: torch.Tensor, known: torch.Tensor) -> torch.Tensor:
        n = self.groups.n_softmax
        x = logits[:, :n].float()
        li = [i for i, _ in self.groups.softmax]
        chans = [ch for _, ch in self.groups.softmax]
        keep = known[:, li]  # [B, K]
        drop = torch.zeros(x.shape[:2], dtype=torch.bool, device=x.device)
        drop[:, chans] = ~keep
        x = x.masked_fill(drop[(...,) + (None,) * (x.dim() - 2)], _NEG)
        index = torch.zeros((x.shape[0],) + tuple(x.shape[2:]), dtype=torch.long, device=x.device)
        onehot = torch.zeros_like(x)
        for (i, ch), k in zip(self.groups.softmax, range(len(chans))):
            on = (labels[:, i] > 0.5) & keep[:, k][(...,) + (None,) * (labels.dim() - 2)]
            index[on] = ch
        onehot.scatter_(1, index[:, None], 1.0)
        logp = F.log_softmax(x, dim=1)
        ce = -logp.gather(1, index[:, None])[:, 0]
        if self.focal:
            ce = _focal(ce, ce.neg().exp())
        p = logp.exp()
        return ce.mean() + _soft_dice_loss(p[:, chans], onehot[:, chans], keep, self.batch_dice)


def make_loss(card_or_output: Any, focal: bool = False, batch_dice: bool = False, *,
              n_labels: int | None = None) -> SegLoss:
    """The :class:`SegLoss` of a card, or of an output kind (``"sigmoid"`` / ``"softmax"``) with ``n_labels``
    labels on channels 0.. (sigmoid) or 1.. (softmax); ``n_labels`` defaults to the logits' channels
    (sigmoid) / channels - 1 (softmax) at first use."""
    if not isinstance(card_or_output, str):
        return SegLoss(output_groups(card_or_output), focal=focal, batch_dice=batch_dice)
    return _LazyLoss(card_or_output, focal, batch_dice, n_labels)


class _LazyLoss(SegLoss):
    """A :class:`SegLoss` whose groups are fixed from the first logits seen (tests, simple uses)."""

    def __init__(self, output: str, focal: bool, batch_dice: bool, n_labels: int | None) -> None:
        super().__init__(OutputGroups((), ()), focal=focal, batch_dice=batch_dice)
        self.output, self.n_labels = output, n_labels

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        first = 1 if self.output == "softmax" else 0
        n = self.n_labels if self.n_labels is not None else logits.shape[1] - first
        pairs = tuple((i, i + first) for i in range(n))
        self.groups = OutputGroups(pairs, ()) if first else OutputGroups((), pairs)
        return super().forward(logits, labels)


def label_channels(card: Any) -> Sequence[int]:
    """Output channel of each card label, in label (channel) order."""
    return [int(lab["channel"]) for lab in sorted(card.labels, key=lambda d: int(d["channel"]))]
