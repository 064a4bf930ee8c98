"""Anatomical clean-up of predicted masks.

Rules applied after the network (on any grid; arrays are (z, y, x) booleans):

* keep the largest connected component (26-connectivity) of single-body structures: GTV, CTV, Bladder,
  Rectum, Uterus, Body, and of each femoral head (one per side: ``FemoralHead_L`` / ``FemoralHead_R``);
* fill holes (in 3D, then slice by slice in the axial plane, as a clinician contours);
* nesting: GTV inside CTV inside PTV (each outer structure is united with the inner one);
* sides: for every left/right pair of labels (``X_L``/``X_R``, ``LeftX``/``RightX``, ``X_Left``/``X_Right``,
  ``L_X``/``R_X``), on an LPS-oriented grid (x index towards the patient's left; RAS mirrored), each side's
  structure is taken from its own side of the midline (centre of the midline organs, e.g. bladder, rectum,
  brainstem, spinal cord; else of the unsided structures; else the image centre), preferring the component
  the network gave that side's label. Left and right organs look alike, so a network that sees one of them in
  its window can swap them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

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


#: Structures on the patient's midline, whose centre splits left from right (the first present are used).
MIDLINE = ("Bladder", "Rectum", "Uterus", "CTV", "GTV", "Brainstem", "SpinalCord", "Mandible", "Esophagus",
           "Larynx", "Body")


def lr_counterpart(name: str) -> str:
    """The other side's name, lower case: ``FemoralHead_L`` -> ``femoralhead_r``, ``RightParotid`` ->
    ``leftparotid``, ``Parotid_Left`` -> ``parotid_right``, ``L_Kidney`` -> ``r_kidney``; the name itself
    (lower case) when it has no side."""
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


def side_pairs(names: Iterable[str]) -> list[tuple[str, str]]:
    """Every (left, right) pair among ``names`` (as given), e.g. ``("FemoralHead_L", "FemoralHead_R")`` or
    ``("LeftParotid", "RightParotid")``."""
    names = list(names)
    by_lower = {n.lower(): n for n in names}
    pairs = []
    for n in names:
        other = by_lower.get(lr_counterpart(n))
        if other is None or other == n:
            continue
        low = n.lower()
        is_left = "left" in low or low.endswith("_l") or low.startswith("l_")
        if is_left:
            pairs.append((n, other))
    return pairs


def _midline_x(masks: Mapping[str, np.ndarray], sided: set[str], width: int) -> float:
    """Mean x index of the :data:`MIDLINE` structures present, else of every unsided structure, else the
    image centre."""
    keys = {k.lower(): k for k in masks}
    mid = [masks[keys[n.lower()]] for n in MIDLINE if n.lower() in keys and masks[keys[n.lower()]].any()]
    if not mid:
        mid = [m for k, m in masks.items() if k.lower() not in sided and m.any()]
    if not mid:
        return (width - 1) / 2.0
    return float(np.nonzero(np.logical_or.reduce(mid))[2].mean())


def assign_sides(masks: dict[str, np.ndarray], left: str = "FemoralHead_L", right: str = "FemoralHead_R", *,
                 left_high_x: bool = True) -> dict[str, np.ndarray]:
    """Keep one component of ``left`` ∪ ``right`` on each side of the midline and name it by its side.

    Arrays are (z, y, x); on an LPS-oriented grid (``left_high_x``) a larger x index is further to the
    patient's left (RAS: to the right). The midline is the mean x index of the :data:`MIDLINE` structures
    present (else of the unsided structures, else the image centre). On each side the kept component is the
    largest one the network gave that side's label, else the largest one there. Modifies and returns
    ``masks``.
    """
    keys = {k.lower(): k for k in masks}
    kl, kr = keys.get(left.lower()), keys.get(right.lower())
    if kl is None or kr is None:
        return masks
    union = masks[kl] | masks[kr]
    if not union.any():
        return masks
    sided = {n.lower() for p in side_pairs(masks) for n in p}
    midline = _midline_x(masks, sided, union.shape[2])
    lab, n = ndimage.label(union, _STRUCT26)
    index = np.arange(1, n + 1)
    sizes = np.bincount(lab.ravel(), minlength=n + 1)[1:]
    cx = np.asarray(ndimage.mean(np.broadcast_to(np.arange(union.shape[2]), union.shape), lab, index))
    frac_left = np.asarray(ndimage.mean(masks[kl], lab, index))  # share of the component labelled left
    on_left = cx > midline if left_high_x else cx < midline
    out = {}
    for key, on_side, labelled in ((kl, on_left, frac_left >= 0.5), (kr, ~on_left, frac_left < 0.5)):
        cand = np.flatnonzero(on_side & labelled)
        if cand.size == 0:
            cand = np.flatnonzero(on_side)
        out[key] = lab == (index[cand[np.argmax(sizes[cand])]] if cand.size else -1)
    masks.update(out)
    return masks


def postprocess(masks: Mapping[str, np.ndarray], *, lps: bool = True,
                orientation: str | None = None) -> dict[str, np.ndarray]:
    """Assign sides to every left/right pair (:func:`side_pairs`; only on an LPS grid when ``lps`` and no
    ``orientation`` is given, or on an ``orientation`` of ``"LPS"`` / ``"RAS"``), clean every structure
    (:func:`clean_structure`), then enforce GTV ⊆ CTV ⊆ PTV; returns a new dict."""
    out = dict(masks)
    code = orientation if orientation is not None else ("LPS" if lps else None)
    if code in ("LPS", "RAS"):
        for left, right in side_pairs(out):
            assign_sides(out, left, right, left_high_x=code == "LPS")
    out = {name: clean_structure(name, m) for name, m in out.items()}
    return enforce_nesting(out)
