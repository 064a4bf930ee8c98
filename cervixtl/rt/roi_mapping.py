"""Clinical ROI names -> CervixTL structure names, with per-site mapping files.

Mapping file (JSON, schema ``cervixtl-roi-mapping/1``; the default is ``Resources/roi_mapping.json``)::

    {"schema": "cervixtl-roi-mapping/1",
     "sites": {"default": {"CTV_45": "CTV", "Rectum_PRV": null, ...},
               "my-hospital": {"CTV45_Uterus": "CTV"}}}

Keys are exact ROI names, compared case-insensitively; a ``null`` value means "never map" (PRVs, helpers).
A site inherits ``default`` and overrides it. A flat JSON object ``{"ROI name": "Canonical"}`` is also
accepted. Names not in the mapping fall back to :func:`cervixtl.structures.match_roi_name`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .. import structures
from ..errors import BadInput
from ..resources import resources_dir

SCHEMA = "cervixtl-roi-mapping/1"


def default_mapping_path() -> Path:
    """The shipped default mapping file."""
    return resources_dir() / "roi_mapping.json"


def load_mapping(path: str | os.PathLike | None = None, site: str = "default") -> dict[str, str | None]:
    """Read a mapping file and return the mapping of ``site`` (merged over ``default``).

    Args:
        path: mapping JSON; None = the shipped default.
        site: site key under ``"sites"``.

    Raises:
        BadInput: unreadable file, unknown site, or a target that is not a CervixTL structure name.
    """
    p = Path(path) if path is not None else default_mapping_path()
    if not p.is_file():
        if path is None:
            return {}
        raise BadInput(f"{p}: no such ROI mapping file")
    try:
        data: Any = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise BadInput(f"{p}: not a readable JSON ROI mapping ({exc})") from None
    if not isinstance(data, dict):
        raise BadInput(f"{p}: an ROI mapping must be a JSON object")
    if "sites" in data:
        sites = data["sites"]
        if not isinstance(sites, dict) or (site not in sites and site != "default"):
            raise BadInput(f"{p}: no site {site!r} (sites: {', '.join(sites) if isinstance(sites, dict) else 'none'})")
        merged: dict[str, Any] = dict(sites.get("default", {}))
        if site != "default":
            merged.update(sites[site])
    else:
        merged = {k: v for k, v in data.items() if k != "schema"}
    out: dict[str, str | None] = {}
    for k, v in merged.items():
        if v is not None:
            s = structures.get(str(v))
            if s is None:
                known = ", ".join(x.name for x in structures.STRUCTURES)
                raise BadInput(f"{p}: ROI {k!r} maps to {v!r}, which is not a CervixTL structure ({known})")
            v = s.name
        out[str(k).strip().lower()] = v
    return out


def canonical_name(roi_name: str, mapping: Mapping[str, str | None] | None = None) -> str | None:
    """The CervixTL structure name of a clinical ROI name, or None (unknown, PRV, helper structure).

    ``mapping`` (from :func:`load_mapping`; keys lower-case or not) wins over the built-in synonyms.
    """
    key = roi_name.strip().lower()
    if mapping:
        for k, v in mapping.items():
            if k.strip().lower() == key:
                return v
    s = structures.match_roi_name(roi_name)
    return s.name if s is not None else None
