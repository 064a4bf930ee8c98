"""The structures CervixTL knows: names, display colours, DICOM RT ROI types and ROI-name synonyms.

Names are the canonical segment names used in every output. Colours are RGB in 0..1. The terminology codes
(SNOMED CT, as used in DICOM and in Slicer's terminology files) live in ``Resources/CervixTL.term.json``;
:func:`terminology` reads them so the engine and the Slicer module use one list.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from .resources import resources_dir


@dataclass(frozen=True)
class Structure:
    """A structure CervixTL can propose or read.

    Attributes:
        name: canonical segment name (e.g. ``"CTV"``).
        color: display colour, RGB 0..1.
        rt_type: DICOM RT ROI Interpreted Type (``GTV``, ``CTV``, ``PTV``, ``ORGAN``, ``EXTERNAL``, ``AVOIDANCE``).
        synonyms: regular expressions (case-insensitive, full match) of clinical ROI names mapped to it.
    """

    name: str
    color: tuple[float, float, float]
    rt_type: str
    synonyms: tuple[str, ...] = field(default=())


#: Canonical structures, in the order they are listed in outputs.
STRUCTURES: tuple[Structure, ...] = (
    Structure("GTV", (1.0, 0.0, 0.0), "GTV", (r"gtv.*", r"gross.?tumou?r.*")),
    Structure("CTV", (1.0, 0.55, 0.0), "CTV", (r"ctv(?!.*(node|n\b|ln)).*", r"clinical.?target.*")),
    Structure("PTV", (0.0, 0.8, 1.0), "PTV", (r"ptv(?!.*(node|n\b|ln)).*", r"planning.?target.*")),
    Structure("Bladder", (0.85, 0.85, 0.2), "ORGAN", (r"bladder.*", r"urinary.?bladder", r"blase")),
    Structure("Rectum", (0.55, 0.3, 0.15), "ORGAN", (r"rectum.*", r"rect")),
    Structure("Sigmoid", (0.75, 0.5, 0.3), "ORGAN", (r"sigmoid.*", r"colon.?sigmoid")),
    Structure("Bowel", (0.9, 0.7, 0.6), "ORGAN", (r"bowel.*", r"small.?bowel.*", r"small.?intestine", r"bag.?bowel")),
    Structure("FemoralHead_L", (0.6, 0.9, 0.6), "ORGAN", (r"femoral.?head.?(l|lt|left)", r"femur.?(l|lt|left)", r"(l|lt|left).?femoral.?head")),
    Structure("FemoralHead_R", (0.4, 0.8, 0.4), "ORGAN", (r"femoral.?head.?(r|rt|right)", r"femur.?(r|rt|right)", r"(r|rt|right).?femoral.?head")),
    Structure("Uterus", (0.9, 0.5, 0.7), "ORGAN", (r"uterus.*", r"uterus.?cervix")),
    Structure("Body", (0.9, 0.8, 0.7), "EXTERNAL", (r"body", r"external", r"outline", r"skin")),
    Structure("Bone", (0.95, 0.95, 0.9), "ORGAN", (r"pelvic.?bones?", r"bone.*")),
)

_BY_NAME = {s.name.lower(): s for s in STRUCTURES}

#: Target structures, from inner to outer.
TARGETS = ("GTV", "CTV", "PTV")


def get(name: str) -> Structure | None:
    """The canonical structure called ``name`` (case-insensitive), or None."""
    return _BY_NAME.get(name.lower())


def color_of(name: str, index: int = 0) -> tuple[float, float, float]:
    """Display colour (RGB 0..1) of a structure; unknown names get a stable colour from a small palette."""
    s = get(name)
    if s is not None:
        return s.color
    palette = ((0.5, 0.7, 1.0), (0.8, 0.4, 1.0), (0.4, 1.0, 0.8), (1.0, 0.8, 0.4), (0.7, 0.7, 0.7))
    return palette[index % len(palette)]


def rt_type_of(name: str) -> str:
    """DICOM RT ROI Interpreted Type of a structure name (``ORGAN`` for unknown names, unless the name starts
    with GTV/CTV/PTV)."""
    s = get(name) or match_roi_name(name)
    if s is not None:
        return s.rt_type
    return "ORGAN"


def match_roi_name(roi_name: str, mapping: dict[str, str] | None = None) -> Structure | None:
    """Map a clinical ROI name (e.g. ``"CTV_45"``, ``"PTV 45Gy"``) to a canonical structure.

    A site ``mapping`` (exact ROI name, case-insensitive -> canonical name) wins over the built-in synonyms.
    PRV/optimisation structures (``Rectum_PRV``, ``zPTV-opt``) are *not* mapped to the organ or target.
    """
    key = roi_name.strip()
    if mapping:
        for k, v in mapping.items():
            if k.strip().lower() == key.lower():
                return get(v)
    norm = re.sub(r"[\s_\-]+", " ", key.lower()).strip()
    if re.search(r"\b(prv|opt|ring|avoid|help|dummy)\b|^z", norm):
        return None
    for s in STRUCTURES:
        for pat in s.synonyms:
            if re.fullmatch(pat, norm) or re.fullmatch(pat, norm.replace(" ", "")):
                return s
    return None


@lru_cache(maxsize=1)
def _terminology_file() -> dict[str, Any]:
    path = resources_dir() / "CervixTL.term.json"
    if not path.exists():
        return {}
    return json.loads(path.read_text(encoding="utf-8"))


def terminology(name: str) -> dict[str, Any] | None:
    """Coded terminology entry of a canonical structure as a slicerio-style dict (``category``, ``type``,
    optional ``anatomicRegion``), or None when it has none."""
    entries = _terminology_file().get("cervixtl_entries", {})
    return entries.get(name)
