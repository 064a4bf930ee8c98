"""Data augmentation: nnU-Net's set built from MONAI transforms, plus an anatomy-safe left-right mirror.

Per patch (tensors [C, *axes] in the network's axis order, ``axis_order``: (z, y, x) for CervixTL's networks,
(x, y, z) for MONAI bundles; MONAI's spatial axes are the array axes, so the larger "axial" rotation range is
put on the array axis that is z), each with its probability (:data:`DEFAULT_AUGMENTATION`, recorded in the card):

* rotation about all three axes and scaling (one :class:`monai.transforms.RandAffined` resample; labels
  bilinear then threshold 0.5), scale 0.7-1.4 as nnU-Net;
* Gaussian noise, Gaussian blur, brightness (multiplicative), contrast (about the mean), gamma, simulation
  of low resolution (down- then up-sampling);
* left-right mirror (the array axis that is x) with ``*_L`` / ``*_R`` channels swapped: a mirrored patient is anatomically
  valid only with the sides renamed.

Channels a case does not contour (-1 throughout) stay -1.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

__all__ = ["DEFAULT_AUGMENTATION", "Augmenter", "augment"]

#: Probabilities and ranges (angles in degrees, factors unitless) of the augmentation set.
DEFAULT_AUGMENTATION: dict[str, Any] = {
    "rotate": {"p": 0.2, "deg_axial": 30.0, "deg_other": 15.0},
    "scale": {"p": 0.2, "range": [0.7, 1.4]},
    "noise": {"p": 0.1, "std": 0.1},
    "blur": {"p": 0.2, "sigma": [0.5, 1.0]},
    "brightness": {"p": 0.15, "range": [0.75, 1.25]},
    "contrast": {"p": 0.15, "range": [0.75, 1.25]},
    "lowres": {"p": 0.25, "zoom": [0.5, 1.0]},
    "gamma": {"p": 0.3, "range": [0.7, 1.5]},
    "mirror_lr": {"p": 0.5},
}


class Augmenter:
    """The transform chain of the module docstring, seeded once (``seed``) for reproducible runs."""

    def __init__(self, swap: Sequence[int], settings: Mapping[str, Any] | None = None, seed: int = 0,
                 axis_order: str = "zyx") -> None:
        if sorted(axis_order) != ["x", "y", "z"]:
            raise ValueError(f"axis order {axis_order!r} must be a permutation of xyz")
        self.axis_order = axis_order
        self.settings = {**DEFAULT_AUGMENTATION, **(settings or {})}
        self.perm = torch.as_tensor(list(swap))
        self.rng = np.random.default_rng(seed)
        self.spatial, self.intensity = self._build(seed)

    def _build(self, seed: int) -> tuple[Any, Any]:
        from monai.transforms import (
            Compose,
            RandAdjustContrastd,
            RandAffined,
            RandGaussianNoised,
            RandGaussianSmoothd,
            RandScaleIntensityd,
            RandScaleIntensityFixedMeand,
            RandSimulateLowResolutiond,
        )

        s = self.settings
        rot, sc = s["rotate"], s["scale"]
        ax, ot = math.radians(rot["deg_axial"]), math.radians(rot["deg_other"])
        p_aff = 1.0 - (1.0 - rot["p"]) * (1.0 - sc["p"])
        lo, hi = sc["range"]
        ranges = tuple(ax if a == "z" else ot for a in self.axis_order)
        spatial = RandAffined(keys=("image", "label"), prob=p_aff, rotate_range=ranges,
                              scale_range=(lo - 1.0, hi - 1.0), mode=("bilinear", "bilinear"),
                              padding_mode=("border", "zeros"), cache_grid=False)
        sig = s["blur"]["sigma"]
        intensity = Compose([
            RandGaussianNoised("image", prob=s["noise"]["p"], std=s["noise"]["std"]),
            RandGaussianSmoothd("image", sigma_x=sig, sigma_y=sig, sigma_z=sig, prob=s["blur"]["p"]),
            RandScaleIntensityd("image", factors=(s["brightness"]["range"][0] - 1, s["brightness"]["range"][1] - 1),
                                prob=s["brightness"]["p"]),
            RandScaleIntensityFixedMeand("image", factors=(s["contrast"]["range"][0] - 1,
                                                           s["contrast"]["range"][1] - 1),
                                         preserve_range=True, prob=s["contrast"]["p"]),
            RandSimulateLowResolutiond("image", zoom_range=tuple(s["lowres"]["zoom"]), prob=s["lowres"]["p"]),
            RandAdjustContrastd("image", gamma=tuple(s["gamma"]["range"]), prob=s["gamma"]["p"]),
        ])
        spatial.set_random_state(seed)
        intensity.set_random_state(seed + 1)
        return spatial, intensity

    def __call__(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Augment a batch (images [B, 1, z, y, x], labels [B, C, z, y, x] with -1 channels = uncontoured)."""
        imgs, labs = images.clone(), labels.clone()
        for b in range(imgs.shape[0]):
            imgs[b], labs[b] = self.one(imgs[b], labs[b])
        return imgs, labs

    def one(self, img: torch.Tensor, lab: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Augment one patch ([1, *axes] image, [C, *axes] labels, axes in ``axis_order``)."""
        unknown = (lab < 0).flatten(1).all(dim=1)
        if self.rng.random() < self.settings["mirror_lr"]["p"]:
            x_dim = 1 + self.axis_order.index("x")
            img, lab = torch.flip(img, dims=[x_dim]), torch.flip(lab, dims=[x_dim])[self.perm]
            unknown = unknown[self.perm]
        out = self.spatial({"image": img, "label": lab.clamp(min=0)})
        img = torch.as_tensor(out["image"]).float()
        lab = (torch.as_tensor(out["label"]) >= 0.5).float()
        img = torch.as_tensor(self.intensity({"image": img})["image"]).float()
        lab[unknown] = -1.0
        return img, lab


def augment(images: torch.Tensor, labels: torch.Tensor, rng: np.random.Generator, swap: Sequence[int],
            *, max_rotation_deg: float | None = None, scale_range: float | None = None,
            axis_order: str = "zyx") -> tuple[torch.Tensor, torch.Tensor]:
    """One-off augmentation of a batch with a new :class:`Augmenter` seeded from ``rng``;
    ``max_rotation_deg`` / ``scale_range`` = 0 switch rotation / scaling off (for tests)."""
    settings: dict[str, Any] = {}
    if max_rotation_deg == 0:
        settings["rotate"] = {**DEFAULT_AUGMENTATION["rotate"], "p": 0.0}
    if scale_range == 0:
        settings["scale"] = {**DEFAULT_AUGMENTATION["scale"], "p": 0.0}
    return Augmenter(swap, settings, seed=int(rng.integers(2**31)), axis_order=axis_order)(images, labels)
