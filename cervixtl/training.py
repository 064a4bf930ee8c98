"""Training and fine-tuning of segmentation models (transfer learning from a source model).

Data flow (array order (z, y, x), spacing (x, y, z) mm, LPS):

1. :func:`prepare_case`: the CT is reoriented to LPS, resampled to the model card's spacing (linear) and
   windowed to 0..1 ("window-to-unit"); each card label becomes one 0/1 channel on that grid (linear
   interpolation of the mask, threshold 0.5). Structures a case lacks are empty channels.
2. :func:`sample_batch`: patches of the card's patch size; a ``pos_fraction`` of them are centred on a random
   target voxel (so small targets such as the GTV are seen often), the rest anywhere.
3. :func:`augment`: left-right mirror with ``*_L``/``*_R`` channels swapped (a mirrored patient is still
   anatomically valid only with the sides renamed), small rotation about the cranio-caudal axis and scaling,
   intensity shift/scale.
4. MONAI ``DiceCELoss`` (sigmoid for overlapping labels, softmax otherwise; ``DiceFocalLoss`` with
   ``focal=True``), AdamW, bf16 autocast on CUDA.
5. Validation Dice on whole held-out volumes (MONAI sliding-window inference) every epoch; the best weights
   are kept; early stopping after ``patience`` validations without improvement.
6. A checkpoint (``checkpoint.pt``, read back with ``torch.load(weights_only=True)``) after every epoch lets a
   stopped run :func:`train` ``resume=True``.

:func:`finetune` wraps this for the registry: source model (or ``None`` = from scratch), freezing strategy,
new version written with its model card; the active model is changed only with ``activate=True``.

Multi-GPU: under ``torchrun`` (``WORLD_SIZE`` > 1) the process group is initialised, the network is wrapped
in ``DistributedDataParallel`` and each rank draws its own random patches (seed + rank), which plays the role
of a ``DistributedSampler`` for patch-based training; rank 0 validates, saves and decides early stopping.
"""

from __future__ import annotations

import copy
import json
import math
import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .splits import split_cases
from .errors import BadInput, ModelError
from .image import Image, reorient, resample_to_reference, resample_to_spacing
from .progress import NULL_PROGRESS, Progress
from .segmentation import Segmentation

#: Label value of a structure that was not contoured in a case: left out of the loss, not "background".
UNKNOWN = 255

#: Labels of the default (from-scratch) model: targets and pelvic organs at risk.
DEFAULT_LABELS = ("GTV", "CTV", "Bladder", "Rectum", "FemoralHead_L", "FemoralHead_R")


# ============================================================================ configuration / data
@dataclass
class TrainConfig:
    """Training settings.

    Attributes:
        epochs: maximum epochs (None: only ``minutes``/``max_steps`` limit the run).
        minutes: wall-clock budget in minutes (None: no limit).
        steps_per_epoch: optimiser steps per epoch (None: ``max(8, 4 * training cases)``).
        max_steps: hard limit on optimiser steps (None: none).
        batch_size: patches per step.
        lr: AdamW learning rate; weight_decay: AdamW weight decay.
        freeze: ``none``, ``encoder`` or ``all-but-last-N`` (see :func:`cervixtl.models.transfer.freeze`).
        val_fraction: share of the cases held out for validation (at least one when there are >= 2 cases).
        patience: validations without improvement before stopping early (0: never stop early).
        pos_fraction: share of patches centred on a target voxel.
        focal: use Dice + focal loss instead of Dice + cross-entropy.
        batch_dice: Dice over the whole batch per structure (MONAI ``batch=True``, as nnU-Net) instead of per
            patch; a structure absent from one patch then no longer rewards an empty prediction, which helps
            small organs on real CT learn faster.
        augment: mirror/rotate/scale/intensity augmentation.
        seed: random seed (patch sampling, augmentation, initialisation, split).
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        amp: bf16 autocast on CUDA.
        threads: torch CPU threads (None: leave torch's setting).
    """

    epochs: int | None = 20
    minutes: float | None = None
    steps_per_epoch: int | None = None
    max_steps: int | None = None
    batch_size: int = 2
    lr: float = 2e-3
    weight_decay: float = 1e-5
    freeze: str = "none"
    val_fraction: float = 0.2
    patience: int = 8
    pos_fraction: float = 0.7
    focal: bool = False
    batch_dice: bool = False
    augment: bool = True
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
        if not self.lr > 0:
            raise BadInput(f"learning rate {self.lr} must be > 0")
        if not re.fullmatch(r"none|encoder|all-but-last-[1-9]\d*", (self.freeze or "none").strip().lower()):
            raise BadInput(f"unknown freeze strategy {self.freeze!r}: use none, encoder or all-but-last-N (N >= 1)")


@dataclass
class PreparedCase:
    """A case on the model grid: ``image`` (z, y, x) float32 0..1, ``labels`` (C, z, y, x) uint8 (0/1, or
    :data:`UNKNOWN` in every voxel of a structure the case does not contour), ``missing`` = those label names,
    ``case_id``."""

    image: np.ndarray
    labels: np.ndarray
    missing: list[str] = field(default_factory=list)
    case_id: str = ""


@dataclass
class TrainResult:
    """Outcome of :func:`train`: the best weights and a JSON-ready history."""

    state_dict: dict[str, torch.Tensor]
    history: dict[str, Any]


def normalise(array: np.ndarray, window_hu: Sequence[float]) -> np.ndarray:
    """Clip HU to ``window_hu`` (low, high) and scale to 0..1 (float32) -- the card's "window-to-unit"."""
    lo, hi = float(window_hu[0]), float(window_hu[1])
    return ((np.clip(np.asarray(array, dtype=np.float32), lo, hi) - lo) / (hi - lo)).astype(np.float32)


def prepare_case(ct: Image, seg: Segmentation, card: Any, case_id: str = "") -> PreparedCase:
    """Resample a CT (HU) and its contours to the model card's grid (see the module docstring).

    Raises:
        GeometryMismatch: the contours are not on the CT grid.
    """
    ct.require_same_geometry(seg.grid, f"contours of case {case_id or '?'}")
    lps = ct if ct.orientation_code() == "LPS" else reorient(ct, "LPS")
    work = resample_to_spacing(lps, card.spacing_mm, default=-1024.0)
    labels = np.zeros((len(card.label_names),) + work.array.shape, dtype=np.uint8)
    missing: list[str] = []
    for c, name in enumerate(card.label_names):
        s = seg.find(name)
        if s is None:
            missing.append(name)
            labels[c] = UNKNOWN
            continue
        m = ct.with_array(s.mask.astype(np.float32))
        res = resample_to_reference(m, work, default=0.0)
        labels[c] = res.array >= 0.5
    return PreparedCase(normalise(work.array, card.window_hu), labels, missing, case_id)


# ============================================================================ sampling / augmentation
def _pad_to(arr: np.ndarray, patch: Sequence[int]) -> np.ndarray:
    pads = [(0, 0)] * (arr.ndim - 3) + [(max(0, p - s) // 2, max(0, p - s) - max(0, p - s) // 2)
                                        for s, p in zip(arr.shape[-3:], patch)]
    return np.pad(arr, pads) if any(a or b for a, b in pads) else arr


def sample_patch(case: PreparedCase, patch: Sequence[int], rng: np.random.Generator,
                 pos_fraction: float = 0.7) -> tuple[np.ndarray, np.ndarray]:
    """One (image [1, z, y, x], labels [C, z, y, x]) patch of size ``patch`` (voxels, (z, y, x)); with
    probability ``pos_fraction`` centred on a random voxel of a random non-empty label (labels keep the
    :data:`UNKNOWN` value of structures the case does not contour)."""
    img = _pad_to(case.image, patch)
    lab = _pad_to(case.labels, patch)
    shape = img.shape
    centre = None
    if rng.random() < pos_fraction:
        present = [c for c in range(lab.shape[0]) if (lab[c] == 1).any()]
        if present:
            c = present[int(rng.integers(len(present)))]
            idx = np.flatnonzero(lab[c] == 1)
            centre = np.unravel_index(int(idx[rng.integers(len(idx))]), shape)
    if centre is None:
        centre = tuple(int(rng.integers(s)) for s in shape)
    start = [int(np.clip(c - p // 2, 0, s - p)) for c, p, s in zip(centre, patch, shape)]
    sl = tuple(slice(a, a + p) for a, p in zip(start, patch))
    return img[sl][None], lab[(slice(None),) + sl]


def sample_batch(cases: Sequence[PreparedCase], patch: Sequence[int], batch_size: int, rng: np.random.Generator,
                 pos_fraction: float = 0.7) -> tuple[torch.Tensor, torch.Tensor]:
    """A batch (images [B, 1, z, y, x] float32, labels [B, C, z, y, x] float32: 0/1, or -1 throughout a
    channel the case does not contour) from random cases."""
    imgs, labs = [], []
    for _ in range(batch_size):
        case = cases[int(rng.integers(len(cases)))]
        i, l_ = sample_patch(case, patch, rng, pos_fraction)
        imgs.append(i)
        labs.append(l_)
    lab_t = torch.from_numpy(np.stack(labs)).float()
    lab_t[lab_t == UNKNOWN] = -1.0
    return torch.from_numpy(np.stack(imgs)).float(), lab_t


def _lr_counterpart(name: str) -> str:
    """``FemoralHead_L`` -> ``femoralhead_r``, ``RightParotid`` -> ``leftparotid``, ``Parotid_Left`` ->
    ``parotid_right``, ``L_Kidney`` -> ``r_kidney`` (lower case); unchanged when the name has no side."""
    n = name.lower()
    if "left" in n or "right" in n:
        return n.replace("left", "\0").replace("right", "left").replace("\0", "right")
    for a, b in (("_l", "_r"), ("_r", "_l")):
        if n.endswith(a):
            return n[: -len(a)] + b
    for a, b in (("l_", "r_"), ("r_", "l_")):
        if n.startswith(a):
            return b + n[len(a):]
    return n


def lr_swap_pairs(label_names: Sequence[str]) -> list[int]:
    """Channel permutation that swaps left/right structures for a mirrored image (``X_L`` <-> ``X_R``,
    ``..._Left`` <-> ``..._Right``, ``LeftX`` <-> ``RightX``, ``L_X`` <-> ``R_X``); unpaired channels map to
    themselves."""
    names = [n.lower() for n in label_names]
    perm = list(range(len(names)))
    for i, n in enumerate(names):
        other = _lr_counterpart(n)
        if other != n and other in names:
            perm[i] = names.index(other)
    return perm


def augment(images: torch.Tensor, labels: torch.Tensor, rng: np.random.Generator, swap: Sequence[int],
            *, max_rotation_deg: float = 10.0, scale_range: float = 0.1) -> tuple[torch.Tensor, torch.Tensor]:
    """Random left-right mirror (x axis, with ``swap`` applied to the label channels), rotation about z
    (± ``max_rotation_deg``), isotropic scale (1 ± ``scale_range``) and intensity shift/scale, per sample.
    Tensors are [B, C, z, y, x]; labels stay 0/1 (channels that are -1 throughout, i.e. not contoured, stay
    -1)."""
    imgs, labs = images.clone(), labels.clone()
    perm = torch.as_tensor(list(swap))
    for b in range(imgs.shape[0]):
        if rng.random() < 0.5:
            imgs[b] = torch.flip(imgs[b], dims=[-1])
            labs[b] = torch.flip(labs[b], dims=[-1])[perm]
        if rng.random() < 0.5:
            ang = math.radians(rng.uniform(-max_rotation_deg, max_rotation_deg))
            sc = 1.0 + rng.uniform(-scale_range, scale_range)
            c, s = math.cos(ang) / sc, math.sin(ang) / sc
            # affine_grid works in (x, y, z) normalised coordinates; rotate in the axial (x, y) plane.
            theta = torch.tensor([[c, -s, 0.0, 0.0], [s, c, 0.0, 0.0], [0.0, 0.0, 1.0 / sc, 0.0]],
                                 dtype=torch.float32)[None]
            grid = F.affine_grid(theta, [1, 1, *imgs.shape[-3:]], align_corners=False)
            imgs[b] = F.grid_sample(imgs[b:b + 1], grid, mode="bilinear", padding_mode="border",
                                    align_corners=False)[0]
            unknown = (labs[b] < 0).flatten(1).all(dim=1)
            labs[b] = (F.grid_sample(labs[b:b + 1].clamp(min=0), grid, mode="bilinear", padding_mode="zeros",
                                     align_corners=False)[0] >= 0.5).float()
            labs[b][unknown] = -1.0
        imgs[b] = imgs[b] * (1.0 + rng.uniform(-0.05, 0.05)) + rng.uniform(-0.04, 0.04)
    return imgs, labs


# ============================================================================ loss / validation
def make_loss(output: str, focal: bool = False, batch_dice: bool = False) -> torch.nn.Module:
    """MONAI Dice + cross-entropy (or + focal) loss for ``output`` "sigmoid" (multi-label) or "softmax";
    ``batch_dice``: Dice over the batch per channel (MONAI ``batch=True``) rather than per sample."""
    from monai.losses import DiceCELoss, DiceFocalLoss

    cls = DiceFocalLoss if focal else DiceCELoss
    if output == "sigmoid":
        return cls(sigmoid=True, batch=batch_dice)
    return cls(softmax=True, to_onehot_y=True, batch=batch_dice)


def masked_loss(loss_fn: torch.nn.Module, logits: torch.Tensor, target: torch.Tensor, labels: torch.Tensor,
                output: str) -> torch.Tensor:
    """``loss_fn(logits, target)``, leaving out structures a case did not contour (label channel -1).

    Sigmoid: when any (sample, channel) is unknown the loss is averaged over channels, each on the samples
    that contour it. Softmax cannot separate channels: unknown structures count as background there."""
    unknown = (labels < 0).flatten(2).all(dim=2)  # [B, C]
    if output != "sigmoid" or not unknown.any():
        return loss_fn(logits, target.clamp(min=0) if output == "sigmoid" else target)
    parts = []
    for c in range(labels.shape[1]):
        keep = ~unknown[:, c]
        if keep.any():
            parts.append(loss_fn(logits[keep, c:c + 1], target[keep, c:c + 1]))
    return torch.stack(parts).mean() if parts else logits.sum() * 0.0


def to_index_target(labels: torch.Tensor, channels: Sequence[int]) -> torch.Tensor:
    """Softmax target [B, 1, z, y, x]: channel value of each label (later channels win overlaps), 0 elsewhere."""
    out = torch.zeros((labels.shape[0], 1) + tuple(labels.shape[2:]), dtype=labels.dtype, device=labels.device)
    for i, ch in enumerate(channels):
        out[:, 0][labels[:, i] > 0.5] = float(ch)  # unknown (-1) channels stay background
    return out


def _logits_to_masks(logits: torch.Tensor, card: Any) -> np.ndarray:
    """[C_out, z, y, x] logits -> [C_labels, z, y, x] bool masks in card label order."""
    chans = [int(lab["channel"]) for lab in sorted(card.labels, key=lambda d: int(d["channel"]))]
    if card.output == "sigmoid":
        return (logits[chans] > 0).cpu().numpy()
    arg = torch.argmax(logits, dim=0)
    return np.stack([(arg == ch).cpu().numpy() for ch in chans])


def dice_per_label(pred: np.ndarray, truth: np.ndarray, missing: Sequence[int] = ()) -> list[float]:
    """Dice per channel of [C, ...] bool arrays; NaN for channels in ``missing`` (structure not contoured)."""
    out = []
    for c in range(truth.shape[0]):
        if c in missing:
            out.append(float("nan"))
            continue
        a, b = pred[c], truth[c] > 0
        denom = int(a.sum()) + int(b.sum())
        out.append(1.0 if denom == 0 else 2.0 * int(np.logical_and(a, b).sum()) / denom)
    return out


@torch.no_grad()
def validate(net: torch.nn.Module, cases: Sequence[PreparedCase], card: Any, device: torch.device,
             amp: bool = False) -> dict[str, Any]:
    """Mean Dice per label (and overall) of ``net`` on whole prepared volumes (sliding window, no overlap)."""
    from monai.inferers import sliding_window_inference

    net.eval()
    names = list(card.label_names)
    per: list[list[float]] = []
    for case in cases:
        x = torch.from_numpy(case.image)[None, None].to(device)
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=amp and device.type == "cuda"):
            logits = sliding_window_inference(x, roi_size=list(card.patch_size), sw_batch_size=2, predictor=net,
                                              overlap=0.0, mode="constant")
        pred = _logits_to_masks(logits[0].float(), card)
        miss = [names.index(n) for n in case.missing]
        per.append(dice_per_label(pred, case.labels, miss))
    net.train()
    arr = np.array(per, dtype=float) if per else np.full((0, len(names)), np.nan)
    with np.errstate(all="ignore"):
        means = [float(np.nanmean(arr[:, c])) if arr.size and np.isfinite(arr[:, c]).any() else float("nan")
                 for c in range(len(names))]
    finite = [m for m in means if np.isfinite(m)]
    return {"mean_dice": float(np.mean(finite)) if finite else float("nan"),
            "per_label": {n: m for n, m in zip(names, means)}}


# ============================================================================ distributed helpers
def is_lead_process() -> bool:
    """True unless this is a rank other than 0 of a ``torchrun`` job (only rank 0 reports and writes)."""
    return int(os.environ.get("RANK", "0")) == 0


def _dist_setup() -> tuple[int, int, int]:
    """(rank, world size, local rank); initialises the process group under torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1, 0
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")
    return dist.get_rank(), world, int(os.environ.get("LOCAL_RANK", "0"))


def _broadcast_flag(flag: bool, world: int, device: torch.device) -> bool:
    if world <= 1:
        return flag
    import torch.distributed as dist

    t = torch.tensor([1 if flag else 0], device=device)
    dist.broadcast(t, src=0)
    return bool(t.item())


# ============================================================================ checkpoints
CHECKPOINT_FILE = "checkpoint.pt"


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write a training checkpoint atomically (tensors, numbers, strings and lists only)."""
    from .atomic import atomic_path

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


# ============================================================================ the loop
def train(net: torch.nn.Module, card: Any, train_cases: Sequence[PreparedCase], val_cases: Sequence[PreparedCase],
          config: TrainConfig, *, progress: Progress | None = None, checkpoint_dir: str | os.PathLike | None = None,
          resume: bool = False) -> TrainResult:
    """Train ``net`` (already built, weights loaded, layers frozen) on prepared cases.

    Args:
        net: the network ([B, 1, z, y, x] in, [B, C_out, z, y, x] logits out).
        card: its model card (labels, output, patch size).
        train_cases / val_cases: prepared cases; with no validation case the training cases are used.
        config: settings (:class:`TrainConfig`).
        progress: receives ``stage="train"`` lines with epoch, step, loss, val_dice, eta_s; its cancel flag
            stops the run with :class:`~cervixtl.errors.Cancelled` (the last checkpoint stays for resume).
        checkpoint_dir: folder for ``checkpoint.pt`` (None: no checkpoints).
        resume: continue from the checkpoint in ``checkpoint_dir`` if there is one.

    Returns:
        :class:`TrainResult` with the best-validation weights and the history (loss curve as [step, loss]
        pairs, validations, best step/Dice, stop reason, frozen tensor count, seconds).
    """
    config.check()
    if not train_cases:
        raise BadInput("no training case")
    progress = progress or NULL_PROGRESS
    from .inference import resolve_device

    rank, world, local_rank = _dist_setup()
    device = resolve_device(config.device)
    if world > 1 and device.type == "cuda":
        device = torch.device(f"cuda:{local_rank}")
    if config.threads:
        torch.set_num_threads(int(config.threads))
    torch.manual_seed(config.seed + rank)
    rng = np.random.default_rng(config.seed + 1000 * rank)
    val_cases = list(val_cases) or list(train_cases)
    net = net.to(device).train()
    model = net
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP

        model = DDP(net, device_ids=[local_rank] if device.type == "cuda" else None,
                    find_unused_parameters=any(not p.requires_grad for p in net.parameters()))
    params = [p for p in net.parameters() if p.requires_grad]
    if not params:
        raise BadInput(f"freeze strategy {config.freeze!r} leaves no parameter to train")
    opt = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    loss_fn = make_loss(card.output, config.focal, config.batch_dice)
    chans = [int(lab["channel"]) for lab in sorted(card.labels, key=lambda d: int(d["channel"]))]
    swap = lr_swap_pairs(card.label_names)
    patch = list(card.patch_size)
    spe = int(config.steps_per_epoch or max(8, 4 * len(train_cases)))
    amp = bool(config.amp and device.type == "cuda")

    ckpt = Path(checkpoint_dir) / CHECKPOINT_FILE if checkpoint_dir else None
    step, epoch = 0, 0
    loss_curve: list[list[float]] = []
    validations: list[dict[str, Any]] = []
    best = {"dice": -1.0, "step": 0, "epoch": 0, "per_label": {}}
    best_state = copy.deepcopy({k: v.detach().cpu() for k, v in net.state_dict().items()})
    elapsed_before = 0.0
    if resume and ckpt is not None and ckpt.exists():
        st = load_checkpoint(ckpt)
        try:
            net.load_state_dict(st["net"])
            opt.load_state_dict(st["opt"])
            best_state = st["best_net"]
            step, epoch = int(st["step"]), int(st["epoch"])
            loss_curve = [list(x) for x in st["loss_curve"]]
            hist = json.loads(st["history_json"])
        except (KeyError, ValueError, RuntimeError, TypeError):
            raise ModelError(f"{ckpt}: checkpoint does not fit this run (other model, labels or freeze "
                             "strategy); start again without --resume") from None
        validations, best, elapsed_before = hist["validations"], hist["best"], float(hist["seconds"])
        torch.manual_seed(config.seed + rank + step)
        rng = np.random.default_rng(config.seed + 1000 * rank + step)
        progress("train", 0.0, f"resumed at epoch {epoch}, step {step}", epoch=epoch, step=step)

    t0 = time.perf_counter() - elapsed_before
    budget_s = config.minutes * 60.0 if config.minutes else None
    stop_reason = "epochs"
    since_best = 0
    if validations:
        since_best = len([v for v in validations if v["step"] > best["step"]])

    def limit_fraction() -> float:
        fr = []
        if config.epochs:
            fr.append(step / (spe * config.epochs))
        if budget_s:
            fr.append((time.perf_counter() - t0) / budget_s)
        if config.max_steps:
            fr.append(step / config.max_steps)
        return min(1.0, max(fr) if fr else 0.0)

    def eta() -> float | None:
        f = limit_fraction()
        el = time.perf_counter() - t0
        return round(el * (1 - f) / f, 1) if f > 1e-6 else None

    while True:
        if config.epochs is not None and epoch >= config.epochs:
            stop_reason = "epochs"
            break
        ep_losses = []
        for _ in range(spe):
            progress.check_cancelled()
            x, y = sample_batch(train_cases, patch, config.batch_size, rng, config.pos_fraction)
            if config.augment:
                x, y = augment(x, y, rng, swap)
            x, y = x.to(device), y.to(device)
            target = y if card.output == "sigmoid" else to_index_target(y, chans)
            with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=amp):
                logits = model(x)
            if card.output == "sigmoid":
                logits = logits[:, chans]
            loss = masked_loss(loss_fn, logits.float(), target, y, card.output)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            lv = float(loss.detach().cpu())
            ep_losses.append(lv)
            loss_curve.append([step, round(lv, 5)])
            progress("train", limit_fraction(), f"epoch {epoch + 1} step {step} loss {lv:.4f}", epoch=epoch + 1,
                     step=step, loss=round(lv, 5), val_dice=(round(best["dice"], 4) if best["dice"] >= 0 else None),
                     eta_s=eta())
            if (budget_s and time.perf_counter() - t0 >= budget_s) or (config.max_steps and step >= config.max_steps):
                break
        epoch += 1
        stop = False
        if rank == 0:
            v = validate(net, val_cases, card, device, amp)
            validations.append({"epoch": epoch, "step": step, "mean_dice": round(v["mean_dice"], 4),
                                "train_loss": round(float(np.mean(ep_losses)), 5) if ep_losses else None})
            if np.isfinite(v["mean_dice"]) and v["mean_dice"] > best["dice"]:
                best = {"dice": float(v["mean_dice"]), "step": step, "epoch": epoch,
                        "per_label": {k: (round(x, 4) if np.isfinite(x) else None) for k, x in v["per_label"].items()}}
                best_state = {k: t.detach().cpu().clone() for k, t in net.state_dict().items()}
                since_best = 0
            else:
                since_best += 1
            progress("validate", limit_fraction(), f"epoch {epoch}: validation Dice {v['mean_dice']:.3f} "
                     f"(best {best['dice']:.3f} at step {best['step']})", epoch=epoch, step=step,
                     loss=validations[-1]["train_loss"], val_dice=round(v["mean_dice"], 4), eta_s=eta())
            if config.patience and since_best >= config.patience:
                stop, stop_reason = True, "early stopping"
            if budget_s and time.perf_counter() - t0 >= budget_s:
                stop, stop_reason = True, "time budget"
            if config.max_steps and step >= config.max_steps:
                stop, stop_reason = True, "max steps"
            if ckpt is not None:
                hist = {"validations": validations, "best": best, "seconds": time.perf_counter() - t0}
                save_checkpoint(ckpt, {"net": net.state_dict(), "opt": opt.state_dict(), "best_net": best_state,
                                       "step": step, "epoch": epoch, "loss_curve": loss_curve,
                                       "history_json": json.dumps(hist)})
        if _broadcast_flag(stop, world, device):
            break
    if best["dice"] < 0:  # no finite validation Dice (nothing to validate on): keep the final weights
        best_state = {k: t.detach().cpu().clone() for k, t in net.state_dict().items()}
        best["step"], best["epoch"] = step, epoch
    history = {
        "steps": step, "epochs": epoch, "stop_reason": stop_reason, "loss_curve": loss_curve,
        "validations": validations, "best_val_dice": round(best["dice"], 4), "best_step": best["step"],
        "best_epoch": best["epoch"], "val_per_label": best["per_label"],
        "seconds": round(time.perf_counter() - t0, 1), "device": str(device), "world_size": world,
        "frozen_tensors": sum(1 for p in net.parameters() if not p.requires_grad),
    }
    progress("train", 1.0, f"done: {stop_reason}, best validation Dice {best['dice']:.3f} at step {best['step']}",
             epoch=epoch, step=step, val_dice=round(best["dice"], 4), eta_s=0)
    return TrainResult(best_state, history)


# ============================================================================ registry-level fine-tuning
def default_card(name: str, labels: Sequence[str] = DEFAULT_LABELS, **kw: Any) -> Any:
    """Card of a from-scratch model: MONAI SegResNet (init_filters 8), sigmoid, 4 mm spacing, patch
    (32, 64, 64) voxels (z, y, x), window -200..300 HU, PTV protocol margin 7 mm."""
    from .models.networks import segresnet_card

    args = {"init_filters": 8, "spacing_mm": (4.0, 4.0, 4.0), "patch_size": (32, 64, 64),
            "window_hu": (-200.0, 300.0), "ptv_margin_mm": 7.0}
    args.update(kw)
    return segresnet_card(name, list(labels), **args)


def output_channel_map(source_card: Any, new_card: Any) -> dict[int, int]:
    """``{new output channel: source output channel}`` for the labels both cards share (names compared case
    insensitively; a softmax background channel 0 maps to 0), used to keep trained output weights when a
    fine-tuned model adds or drops structures. Empty when the outputs are of different kinds."""
    if source_card.output != new_card.output:
        return {}
    src = {str(lab["name"]).lower(): int(lab["channel"]) for lab in source_card.labels}
    out = {int(lab["channel"]): src[str(lab["name"]).lower()] for lab in new_card.labels
           if str(lab["name"]).lower() in src}
    if new_card.output == "softmax" and out:
        out[0] = 0
    return out


def _new_card(base: Any, name: str, version: str, labels: Sequence[str] | None) -> Any:
    from .models.card import ModelCard, make_labels

    d = base.to_dict()
    d["name"], d["version"] = name, version
    if labels is not None and [n.lower() for n in labels] != [n.lower() for n in base.label_names]:
        first = 1 if base.output == "softmax" else 0
        d["labels"] = make_labels(list(labels), first_channel=first)
        d["architecture"] = copy.deepcopy(d["architecture"])
        d["architecture"]["params"]["out_channels"] = len(labels) + first
    for k in ("training", "validation", "weights", "created", "parent"):
        d.pop(k, None)
    return ModelCard.from_dict(d)


def finetune(source: str | None, cases: Sequence[tuple[str, Image, Segmentation]], name: str, *,
             config: TrainConfig | None = None, registry: Any = None, labels: Sequence[str] | None = None,
             sites: Sequence[str] = (), activate: bool = False, resume: bool = False,
             checkpoint_dir: str | os.PathLike | None = None, progress: Progress | None = None,
             base_card: Any = None, note: str = "", protocol: dict[str, Any] | None = None) -> Any:
    """Fine-tune ``source`` (registry spec, or None / ``"none"`` for a from-scratch model) on ``cases`` and
    register the result as a new version of ``name``.

    Args:
        source: ``NAME[@VERSION]``, a package folder, or None/``"none"``.
        cases: (case id, CT in HU, final contours) triples.
        name: registry name of the new model.
        config: training settings (freezing strategy included).
        registry: a :class:`cervixtl.models.registry.Registry` (default: the default registry).
        labels: label names of the new model (default: the source's, or :data:`DEFAULT_LABELS`); labels the
            source also has keep their trained output channels (:func:`output_channel_map`), new labels
            start from random.
        sites: site names of the cases (recorded in the card).
        activate: make the new version active (otherwise only a brand-new name's first version is).
        resume / checkpoint_dir: continue a stopped run (default folder ``<registry>/.work/<name>``).
        base_card: card used for ``source=None`` (default :func:`default_card`).
        note: extra sentence appended to the card's derivation (e.g. the recipe that produced it).
        protocol: the new model's protocol margins (``{"ctv_margin_mm": ..., "ptv_margin_mm": ...}``, mm;
            default: the source card's).

    Returns:
        The new version's :class:`~cervixtl.models.card.ModelCard`.

    Raises:
        BadInput: no cases or bad settings; ModelError: unknown/corrupt source; Cancelled: stopped on request
        (the registry is unchanged).
    """
    from .models.networks import build_network
    from .models.package import save_package
    from .models.registry import Registry
    from .models.transfer import freeze, load_matching_weights

    config = config or TrainConfig()
    config.check()
    progress = progress or NULL_PROGRESS
    reg = registry if registry is not None else Registry()
    if not re.match(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$", name or ""):
        raise BadInput(f"model name {name!r}: use letters, digits, '.', '_' or '-'")
    if not cases:
        raise BadInput("no training cases given")
    if config.threads:
        torch.set_num_threads(int(config.threads))
    version = reg.next_version(name)
    torch.manual_seed(config.seed)
    if source is None or str(source).lower() == "none":
        card = _new_card(base_card or default_card(name, labels or DEFAULT_LABELS), name, version, labels)
        net = build_network(card)
        parent = None
        load_report: dict[str, Any] = {}
        derivation = f"trained from scratch on {len(cases)} cases"
    else:
        src_card, src_net = reg.load(source)
        card = _new_card(src_card, name, version, labels)
        net = build_network(card)
        kept = output_channel_map(src_card, card)
        load_report = load_matching_weights(net, src_net.state_dict(), kept)
        parent = {"name": src_card.name, "version": src_card.version, "sha256": src_card.weights.get("sha256")}
        copied = (f"; output channels of {len(kept)} kept labels copied from the source"
                  if load_report["partial_names"] else "")
        derivation = (f"fine-tuned from {src_card.spec} on {len(cases)} cases with freeze={config.freeze} "
                      f"({load_report['loaded']} tensors loaded, {load_report['reinitialised']} re-initialised"
                      f"{copied})")
    frozen = freeze(net, config.freeze)
    progress("prepare", 0.0, f"resampling {len(cases)} cases to {card.spacing_mm} mm")
    ids = [c[0] for c in cases]
    tr_ids, va_ids = split_cases(ids, config.val_fraction, config.seed)
    prepared = {}
    for i, (cid, ct, seg) in enumerate(cases):
        progress.check_cancelled()
        prepared[cid] = prepare_case(ct, seg, card, cid)
        progress("prepare", (i + 1) / len(cases), f"case {i + 1}/{len(cases)} ready")
    work = Path(checkpoint_dir) if checkpoint_dir else reg.work_dir(name)  # a concurrent run gets its own
    work.mkdir(parents=True, exist_ok=True)
    if not resume and (work / CHECKPOINT_FILE).exists():
        (work / CHECKPOINT_FILE).unlink(missing_ok=True)
    res = train(net, card, [prepared[i] for i in tr_ids], [prepared[i] for i in va_ids], config,
                progress=progress, checkpoint_dir=work, resume=resume)
    h = res.history
    card.parent = parent
    if protocol is not None:
        card.protocol = dict(protocol)
    card.derivation = derivation + f"; best validation Dice {h['best_val_dice']} at step {h['best_step']}" + (
        f"; {note}" if note else "")
    card.training = {"cases": len(cases), "train_cases": len(tr_ids), "val_cases": len(va_ids),
                     "train_case_ids": [str(i) for i in tr_ids], "val_case_ids": [str(i) for i in va_ids],
                     "sites": sorted({s for s in sites if s}), "epochs": h["epochs"], "steps": h["steps"],
                     "best_step": h["best_step"], "stop_reason": h["stop_reason"], "freeze": config.freeze,
                     "frozen_tensors": len(frozen), "loss_curve": _thin(h["loss_curve"]), "seed": config.seed,
                     "batch_size": config.batch_size, "lr": config.lr,
                     "loss": ("DiceFocalLoss" if config.focal else "DiceCELoss")
                     + (" (batch Dice)" if config.batch_dice else ""), "seconds": h["seconds"],
                     "device": h["device"], "world_size": h["world_size"],
                     "weights_loaded": load_report.get("loaded"), "weights_reinitialised": load_report.get("reinitialised")}
    card.validation = {n: {"dice": d, "cases": len(va_ids) or len(tr_ids)} for n, d in h["val_per_label"].items()}
    card.training["val_mean_dice"] = h["best_val_dice"]
    card.training["val_on"] = "validation cases" if va_ids else "training cases (no validation split)"
    import datetime as _dt

    card.created = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    if not is_lead_process():  # under torchrun only rank 0 writes the new version
        return card
    reg.root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}-{version}.", dir=reg.root))
    try:
        pkg = save_package(tmp / "pkg", card, res.state_dict)
        new = reg.add(pkg, activate=activate, new_version=True)  # version allocated under the registry lock
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    shutil.rmtree(work, ignore_errors=True)
    return new


def _thin(curve: list[list[float]], max_points: int = 400) -> list[list[float]]:
    """At most ``max_points`` [step, loss] pairs (averaged over equal step bins) for the model card."""
    if len(curve) <= max_points:
        return curve
    arr = np.array(curve, dtype=float)
    bins = np.array_split(np.arange(len(arr)), max_points)
    return [[int(arr[b[-1], 0]), round(float(arr[b, 1].mean()), 5)] for b in bins]


def card_summary(card: Any) -> dict[str, Any]:
    """Short JSON-ready description of a fine-tuned card (name, version, parent, derivation, validation)."""
    return {"name": card.name, "version": card.version, "parent": card.parent, "derivation": card.derivation,
            "training": {k: v for k, v in card.training.items() if k != "loss_curve"},
            "validation": card.validation}


__all__ = ["TrainConfig", "PreparedCase", "TrainResult", "prepare_case", "sample_patch", "sample_batch", "augment",
           "lr_swap_pairs", "output_channel_map", "make_loss", "validate", "train", "finetune", "default_card",
           "split_cases", "card_summary", "is_lead_process", "DEFAULT_LABELS"]
