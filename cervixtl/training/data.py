"""Training data: cases on the model grid, foreground-biased patch sampling, left/right channel pairs.

Arrays are (z, y, x); spacing (x, y, z) mm; the model grid is the one inference uses
(:func:`cervixtl.inference.prepare_input`: the card's orientation, spacing and intensity normalisation), so
training and inference see identical inputs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..image import Image, resample_to_reference
from ..postprocess import lr_counterpart
from ..segmentation import Segmentation
from .config import UNKNOWN

__all__ = ["PreparedCase", "prepare_case", "sample_patch", "sample_batch", "lr_swap_pairs", "foreground_masks"]


@dataclass
class PreparedCase:
    """A case on the model grid, in the network's axis order (``axis_order``: ``"zyx"`` for CervixTL's own
    networks, ``"xyz"`` for a MONAI bundle, a transpose for an nnU-Net plan): ``image`` float32 (normalised as
    the card says), ``labels`` (C, *axes) uint8 (0/1, or :data:`UNKNOWN` in every voxel of a structure the
    case does not contour), ``missing`` = those label names, ``case_id``; ``ct`` / ``seg`` keep the original CT
    (HU) and contours so that validation runs the production pipeline on the CT's own grid."""

    image: np.ndarray
    labels: np.ndarray
    missing: list[str] = field(default_factory=list)
    case_id: str = ""
    ct: Image | None = None
    seg: Segmentation | None = None
    axis_order: str = "zyx"


def prepare_case(ct: Image, seg: Segmentation, card: Any, case_id: str = "") -> PreparedCase:
    """Resample a CT (HU) exactly as inference does and each card label's mask onto the same grid (linear
    interpolation of 0/1, threshold 0.5), then permute both to the card's network axis order (as
    :func:`cervixtl.inference.predict_labels` feeds the network). Structures the case lacks are
    :data:`UNKNOWN` channels.

    Raises:
        GeometryMismatch: the contours are not on the CT grid.
    """
    from ..inference import prepare_input
    from ..tiling import to_network_axes

    ct.require_same_geometry(seg.grid, f"contours of case {case_id or '?'}")
    vol, work = prepare_input(ct, card)
    labels = np.zeros((len(card.label_names),) + vol.shape, dtype=np.uint8)
    missing: list[str] = []
    for c, name in enumerate(card.label_names):
        s = seg.find(name)
        if s is None:
            missing.append(name)
            labels[c] = UNKNOWN
            continue
        res = resample_to_reference(ct.with_array(s.mask.astype(np.float32)), work, default=0.0)
        labels[c] = res.array >= 0.5
    order = str(getattr(card, "axis_order", "zyx"))
    vol, labels = to_network_axes(vol, order), to_network_axes(labels, order)
    return PreparedCase(np.ascontiguousarray(vol, dtype=np.float32), labels, missing, case_id, ct, seg, order)


def foreground_masks(cases: Sequence[tuple[str, Image, Segmentation]]) -> list[np.ndarray]:
    """Per case, the union of its contoured structures on the CT grid (z, y, x) bool: the foreground whose
    HU statistics define the CT z-score normalisation (:func:`cervixtl.intensity.foreground_statistics`)."""
    out = []
    for _, ct, seg in cases:
        m = np.zeros(ct.array.shape, dtype=bool)
        for s in seg.segments:
            m |= np.asarray(s.mask, dtype=bool)
        out.append(m)
    return out


def _pad_to(arr: np.ndarray, patch: Sequence[int], value: float = 0.0) -> np.ndarray:
    pads = [(0, 0)] * (arr.ndim - 3) + [(max(0, p - s) // 2, max(0, p - s) - max(0, p - s) // 2)
                                        for s, p in zip(arr.shape[-3:], patch)]
    return np.pad(arr, pads, constant_values=value) if any(a or b for a, b in pads) else arr


def sample_patch(case: PreparedCase, patch: Sequence[int], rng: np.random.Generator,
                 pos_fraction: float = 0.67) -> tuple[np.ndarray, np.ndarray]:
    """One (image [1, *axes], labels [C, *axes]) patch of size ``patch`` (voxels, in the case's
    ``axis_order``, as the card's ``patch_size``); with
    probability ``pos_fraction`` centred on a random voxel of a random non-empty label (every structure is
    drawn equally often, so small ones are seen), else anywhere. Labels keep :data:`UNKNOWN` channels."""
    img = _pad_to(case.image, patch, float(case.image.min()) if case.image.size else 0.0)
    lab = _pad_to(case.labels, patch)
    unknown = [c for c in range(lab.shape[0]) if (case.labels[c] == UNKNOWN).all()]
    lab[unknown] = UNKNOWN
    shape = img.shape
    centre: tuple[int, ...] | None = None
    if rng.random() < pos_fraction:
        present = [c for c in range(lab.shape[0]) if c not in unknown and (lab[c] == 1).any()]
        if present:
            c = present[int(rng.integers(len(present)))]
            idx = np.flatnonzero(lab[c] == 1)
            centre = tuple(int(v) for v in np.unravel_index(int(idx[rng.integers(len(idx))]), shape))
    if centre is None:
        centre = tuple(int(rng.integers(s)) for s in shape)
    start = [int(np.clip(c - p // 2, 0, s - p)) for c, p, s in zip(centre, patch, shape)]
    sl = tuple(slice(a, a + p) for a, p in zip(start, patch))
    return img[sl][None], lab[(slice(None),) + sl]


def sample_batch(cases: Sequence[PreparedCase], patch: Sequence[int], batch_size: int, rng: np.random.Generator,
                 pos_fraction: float = 0.67) -> tuple[torch.Tensor, torch.Tensor]:
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


def lr_swap_pairs(label_names: Sequence[str]) -> list[int]:
    """Channel permutation that swaps left/right structures for a mirrored image (``X_L`` <-> ``X_R``,
    ``..._Left`` <-> ``..._Right``, ``LeftX`` <-> ``RightX``, ``L_X`` <-> ``R_X``); unpaired channels map to
    themselves."""
    names = [n.lower() for n in label_names]
    perm = list(range(len(names)))
    for i, n in enumerate(names):
        other = lr_counterpart(n)
        if other != n and other in names:
            perm[i] = names.index(other)
    return perm
