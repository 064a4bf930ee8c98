"""Anatomical clean-up of predicted masks.

Rules applied after the network (on any grid; arrays are (z, y, x) booleans):

* keep the largest connected component (26-connectivity) of single-body structures: GTV, CTV, Bladder,
  Rectum, Uterus, Body, and of each femoral head (one per side: ``FemoralHead_L`` / ``FemoralHead_R``);
* fill holes (in 3D, then slice by slice in the axial plane, as a clinician contours);
* nesting: GTV inside CTV inside PTV (each outer structure is united with the inner one).
"""

from __future__ import annotations

from typing import Iterable, Mapping

import numpy as np
from scipy import ndimage

#: Structures that are one connected body.
SINGLE_COMPONENT = frozenset({"gtv", "ctv", "bladder", "rectum", "uterus", "body", "femoralhead_l",
                              "femoralhead_r"})
#: Structures whose holes are filled.
FILL_HOLES = frozenset({"gtv", "ctv", "ptv", "bladder", "rectum", "uterus", "body", "femoralhead_l",
                        "femoralhead_r", "sigmoid"})
_STRUCT26 = np.ones((3, 3, 3), dtype=bool)


def largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest 26-connected component of a boolean (z, y, x) mask (empty stays empty)."""
    mask = np.asarray(mask, dtype=bool)
    if not mask.any():
        return mask
    sl = ndimage.find_objects(mask.astype(np.uint8))[0]
    sub = mask[sl]
    lab, n = ndimage.label(sub, structure=_STRUCT26)
    if n <= 1:
        return mask
    sizes = np.bincount(lab.ravel())
    sizes[0] = 0
    out = np.zeros_like(mask)
    out[sl] = lab == int(np.argmax(sizes))
    return out


def fill_holes(mask: np.ndarray) -> np.ndarray:
    """Fill enclosed holes of a boolean (z, y, x) mask in 3D, then in each axial (y, x) slice."""
    mask = np.asarray(mask, dtype=bool)
    if not mask.any():
        return mask
    sl = ndimage.find_objects(mask.astype(np.uint8))[0]
    sub = ndimage.binary_fill_holes(mask[sl])
    for k in range(sub.shape[0]):
        if sub[k].any():
            sub[k] = ndimage.binary_fill_holes(sub[k])
    out = mask.copy()
    out[sl] = sub
    return out


def clean_structure(name: str, mask: np.ndarray) -> np.ndarray:
    """Apply the rules of the module docstring that concern structure ``name`` (case-insensitive)."""
    key = name.lower()
    if key in SINGLE_COMPONENT:
        mask = largest_component(mask)
    if key in FILL_HOLES:
        mask = fill_holes(mask)
    return mask


def enforce_nesting(masks: dict[str, np.ndarray], order: Iterable[str] = ("GTV", "CTV", "PTV")) -> dict[str, np.ndarray]:
    """Make each structure of ``order`` (inner to outer) contain the previous one present in ``masks``
    (case-insensitive names); modifies and returns ``masks``."""
    keys = {k.lower(): k for k in masks}
    inner: np.ndarray | None = None
    for name in order:
        k = keys.get(name.lower())
        if k is None:
            continue
        if inner is not None:
            masks[k] = masks[k] | inner
        inner = masks[k]
    return masks


def postprocess(masks: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Clean every structure (:func:`clean_structure`) then enforce GTV ⊆ CTV ⊆ PTV; returns a new dict."""
    out = {name: clean_structure(name, m) for name, m in masks.items()}
    return enforce_nesting(out)
