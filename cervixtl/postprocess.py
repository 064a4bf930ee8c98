"""Anatomical clean-up of predicted masks.

Rules applied after the network (on any grid; arrays are (z, y, x) booleans):

* keep the largest connected component (26-connectivity) of single-body structures: GTV, CTV, Bladder,
  Rectum, Uterus, Body, and of each femoral head (one per side: ``FemoralHead_L`` / ``FemoralHead_R``);
* fill holes (in 3D, then slice by slice in the axial plane, as a clinician contours);
* nesting: GTV inside CTV inside PTV (each outer structure is united with the inner one);
* sides: on an LPS-oriented grid (x index towards the patient's left), each femoral head is taken from its
  own side of the midline (centre of bladder, rectum, uterus, CTV, GTV; else the image centre), preferring the
  component the network gave that side's label. Left and right femoral heads look alike, so a network that
  sees one head in its window can swap them.
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


#: Structures on the patient's midline, whose centre splits left from right.
MIDLINE = ("Bladder", "Rectum", "Uterus", "CTV", "GTV")


def assign_sides(masks: dict[str, np.ndarray], left: str = "FemoralHead_L", right: str = "FemoralHead_R") -> dict[str, np.ndarray]:
    """Keep one component of ``left`` ∪ ``right`` on each side of the midline and name it by its side.

    Arrays are (z, y, x) on an LPS-oriented grid: a larger x index is further to the patient's left. The
    midline is the mean x index of the :data:`MIDLINE` structures present (else the image centre). On each
    side the kept component is the largest one the network gave that side's label, else the largest one
    there. Modifies and returns ``masks``.
    """
    keys = {k.lower(): k for k in masks}
    kl, kr = keys.get(left.lower()), keys.get(right.lower())
    if kl is None or kr is None:
        return masks
    union = masks[kl] | masks[kr]
    if not union.any():
        return masks
    mid_masks = [masks[keys[n.lower()]] for n in MIDLINE if n.lower() in keys and masks[keys[n.lower()]].any()]
    if mid_masks:
        midline = float(np.nonzero(np.logical_or.reduce(mid_masks))[2].mean())
    else:
        midline = (union.shape[2] - 1) / 2.0
    lab, n = ndimage.label(union, _STRUCT26)
    index = np.arange(1, n + 1)
    sizes = np.bincount(lab.ravel(), minlength=n + 1)[1:]
    cx = np.asarray(ndimage.mean(np.broadcast_to(np.arange(union.shape[2]), union.shape), lab, index))
    frac_left = np.asarray(ndimage.mean(masks[kl], lab, index))  # share of the component labelled left
    out = {}
    for key, on_side, labelled in ((kl, cx > midline, frac_left >= 0.5), (kr, cx <= midline, frac_left < 0.5)):
        cand = np.flatnonzero(on_side & labelled)
        if cand.size == 0:
            cand = np.flatnonzero(on_side)
        out[key] = lab == (index[cand[np.argmax(sizes[cand])]] if cand.size else -1)
    masks.update(out)
    return masks


def postprocess(masks: Mapping[str, np.ndarray], *, lps: bool = True) -> dict[str, np.ndarray]:
    """Assign femoral-head sides (only when ``lps``: the arrays are on an LPS-oriented grid), clean every
    structure (:func:`clean_structure`), then enforce GTV ⊆ CTV ⊆ PTV; returns a new dict."""
    out = dict(masks)
    if lps:
        assign_sides(out)
    out = {name: clean_structure(name, m) for name, m in out.items()}
    return enforce_nesting(out)
