"""The model grid a source model's own pipeline builds from a CT, beyond reorientation and resampling.

Two settings of a card's ``input`` section, both optional (absent: the CT is reoriented and resampled to
``spacing_mm`` exactly):

* ``"spacing_tolerance": [lo, hi]``: an axis whose spacing is already within ``[lo, hi] x spacing_mm`` of the
  target keeps its own spacing (MONAI ``Spacingd`` with ``min_pixdim`` / ``max_pixdim``, per axis; MONAI
  Auto3DSeg uses [0.75, 1.25]);
* ``"crop_foreground": {"above_hu": t, "margin_voxels": m, "box_grid": "input" | "model"}``: the network
  only sees the bounding box of the voxels above ``t`` HU grown by ``m`` voxels per side and clipped to the
  image (MONAI ``CropForegroundd`` with ``allow_smaller``); voxels outside it are background. The box is
  computed on the CT as given (``"input"``: its own array index grid, then applied to the same array index
  ranges after reorientation, which is what MONAIAuto3DSeg's Slicer inference script does) or on the
  reoriented grid (``"model"``: what Auto3DSeg's training transforms do).

Arrays are (z, y, x); spacing (x, y, z) mm; boxes are (start, stop) voxel index pairs per array axis.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .errors import ModelError
from .image import Image

__all__ = ["BOX_GRIDS", "check_input_grid", "model_spacing", "foreground_box", "crop_image", "crop_to_foreground"]

BOX_GRIDS = ("input", "model")
_TOL_MM = 1e-3  # MONAI's affine tolerance when comparing spacings


def check_input_grid(card_input: Mapping[str, Any]) -> None:
    """Raise ModelError unless the optional ``spacing_tolerance`` / ``crop_foreground`` entries are valid."""
    tol = card_input.get("spacing_tolerance")
    if tol is not None:
        try:
            lo, hi = (float(v) for v in tol)
            ok = 0 < lo <= 1.0 <= hi
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise ModelError(f"model card input.spacing_tolerance {tol!r} must be [lo, hi] with 0 < lo <= 1 <= hi")
    crop = card_input.get("crop_foreground")
    if crop is not None:
        try:
            ok = (isinstance(crop, Mapping) and np.isfinite(float(crop["above_hu"]))
                  and int(crop["margin_voxels"]) >= 0 and crop.get("box_grid", "model") in BOX_GRIDS)
        except (KeyError, TypeError, ValueError):
            ok = False
        if not ok:
            raise ModelError(f"model card input.crop_foreground {crop!r} needs above_hu (HU), margin_voxels >= 0 "
                             f"and box_grid one of {', '.join(BOX_GRIDS)}")


def model_spacing(spacing: Sequence[float], target: Sequence[float],
                  tolerance: Sequence[float] | None = None) -> tuple[float, float, float]:
    """The spacing (x, y, z) mm the network sees for an image of ``spacing``: ``target``, except for axes
    already within ``tolerance`` (factors of the target) of it, which keep their own spacing."""
    if tolerance is None:
        return (float(target[0]), float(target[1]), float(target[2]))
    lo, hi = (float(v) for v in tolerance)
    out = []
    for s, t in zip(spacing, target):
        s, t = float(s), float(t)
        out.append(s if t * lo - _TOL_MM <= s <= t * hi + _TOL_MM else t)
    return (out[0], out[1], out[2])


def foreground_box(array: np.ndarray, above: float, margin: int) -> list[tuple[int, int]] | None:
    """Per array axis (start, stop) of the voxels ``> above`` grown by ``margin`` voxels and clipped to the
    array; None when no voxel is above."""
    fg = np.asarray(array) > above
    box = []
    for axis in range(fg.ndim):
        others = tuple(a for a in range(fg.ndim) if a != axis)
        idx = np.flatnonzero(fg.any(axis=others))
        if idx.size == 0:
            return None
        box.append((max(int(idx[0]) - margin, 0), min(int(idx[-1]) + margin + 1, fg.shape[axis])))
    return box


def crop_image(image: Image, box: Sequence[tuple[int, int]]) -> Image:
    """The sub-image of ``image`` inside ``box`` ((start, stop) per array axis (z, y, x), clipped to the
    array), with its origin moved so that every voxel keeps its physical position."""
    shape = image.array.shape
    (z0, z1), (y0, y1), (x0, x1) = ((min(max(a, 0), n), min(max(b, 0), n)) for (a, b), n in zip(box, shape))
    if z1 <= z0 or y1 <= y0 or x1 <= x0:
        return image
    origin = image.index_to_physical((x0, y0, z0))
    return Image(image.array[z0:z1, y0:y1, x0:x1], image.spacing, tuple(origin), image.direction.copy(),
                 dict(image.meta))


def crop_to_foreground(ct: Image, oriented: Image, spec: Mapping[str, Any]) -> Image:
    """``oriented`` (``ct`` reoriented for the model) cropped by ``spec`` (see the module docstring); unchanged
    when no voxel is above the threshold."""
    grid = str(spec.get("box_grid", "model"))
    source = ct if grid == "input" else oriented
    box = foreground_box(source.array, float(spec["above_hu"]), int(spec["margin_voxels"]))
    return oriented if box is None else crop_image(oriented, box)
