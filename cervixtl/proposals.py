"""Zero-shot organ proposals from source models (TotalSegmentator, MONAI wholeBody).

A source model's card labels carry ``structure`` where the source class proposes a CervixTL structure
(``Resources/source_structures.json``: ``urinary_bladder`` -> ``Bladder``; ``colon`` and ``small_bowel`` ->
``Bowel``, the bowel bag; ``femur_*`` -> ``FemoralHead_*``; ``hip_*`` + ``sacrum`` -> ``Bone``). Contouring with
such a model proposes those organs under CervixTL's names and lists what needs a site model (the targets, and
organs the source does not know, e.g. rectum and uterus). Masks are boolean (z, y, x) arrays.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .structures import TARGETS

__all__ = ["source_structures", "needs_site_model", "has_targets", "to_structures"]


def source_structures(card: Any) -> dict[str, list[str]]:
    """CervixTL structure -> the source labels that propose it (card labels with a ``structure`` entry, e.g.
    TotalSegmentator's ``urinary_bladder`` -> ``Bladder``; ``colon`` + ``small_bowel`` -> ``Bowel``)."""
    out: dict[str, list[str]] = {}
    for lab in getattr(card, "labels", []):
        if lab.get("structure"):
            out.setdefault(str(lab["structure"]), []).append(str(lab["name"]))
    return out


def needs_site_model(card: Any) -> list[str]:
    """The targets and pelvic organs a model does not predict (they need a site model)."""
    have = {n.lower() for n in card.label_names} | {s.lower() for s in source_structures(card)}
    wanted = (*TARGETS, "Bladder", "Rectum", "Sigmoid", "Bowel", "Uterus", "FemoralHead_L", "FemoralHead_R")
    return [w for w in wanted if w.lower() not in have]


def has_targets(card: Any) -> bool:
    """True when the model predicts GTV and CTV (target contouring); else only organ proposals are made."""
    names = {n.lower() for n in card.label_names}
    return "gtv" in names and "ctv" in names


def to_structures(masks: dict[str, np.ndarray], card: Any) -> dict[str, np.ndarray]:
    """Source label masks united into the CervixTL structures they propose (:func:`source_structures`)."""
    out: dict[str, np.ndarray] = {}
    for structure, names in source_structures(card).items():
        for n in names:
            if n in masks:
                out[structure] = out[structure] | masks[n] if structure in out else masks[n].copy()
    return out
