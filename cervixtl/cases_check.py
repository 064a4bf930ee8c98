"""``cases check``: find and repair damaged cases in the case library.

A case is damaged when its ``case.json`` is missing, unreadable or not its own, or when its CT or final
contours cannot be read or do not share one grid. Repair rebuilds ``case.json`` from the files when the CT and
final contours are sound (the date added becomes the CT file's date; the site is kept when the old record
still says it) and otherwise moves the case aside into ``<root>/.damaged/`` (kept, not deleted, not listed).
"""

from __future__ import annotations

import datetime as _dt
import os
from pathlib import Path
from typing import Any

from .atomic import sweep_stale, write_json_atomic
from .cases import _ID_RE, CT_FILE, FINAL_FILE, INFO_FILE, PROPOSAL_FILE, CaseLibrary, case_record
from .errors import CervixTLError

__all__ = ["check_library", "DAMAGED_DIR"]

DAMAGED_DIR = ".damaged"


def _read_files(p: Path) -> tuple[Any, Any, Any, list[str]]:
    """(CT, final, proposal, problems) of case folder ``p``; None for what could not be read."""
    from .io import read_image, read_segmentation

    problems: list[str] = []
    ct = final = prop = None
    try:
        ct = read_image(p / CT_FILE)
    except CervixTLError as exc:
        problems.append(f"{CT_FILE}: {exc}")
    if ct is not None:
        try:
            final = read_segmentation(p / FINAL_FILE, reference=ct)
        except CervixTLError as exc:
            problems.append(f"{FINAL_FILE}: {exc}")
        if (p / PROPOSAL_FILE).exists():
            try:
                prop = read_segmentation(p / PROPOSAL_FILE, reference=ct)
            except CervixTLError as exc:
                problems.append(f"{PROPOSAL_FILE}: {exc} (ignored on repair)")
    return ct, final, prop, problems


def _old_site(lib: CaseLibrary, cid: str) -> str | None:
    try:
        site = lib.info(cid).get("site")
    except CervixTLError:
        return None
    return site if isinstance(site, str) else None


def check_case(lib: CaseLibrary, cid: str, repair: bool = False) -> dict[str, Any]:
    """Check one case folder; with ``repair`` rebuild its record or move it aside. Returns
    ``{"id", "problems": [...], "action": "none" | "rebuilt case.json" | "moved to .damaged"}``."""
    p = lib.root / cid
    problems: list[str] = []
    record_ok = True
    try:
        lib.info(cid)
    except CervixTLError as exc:
        record_ok = False
        problems.append(f"{INFO_FILE}: {exc}" if (p / INFO_FILE).exists() else f"{INFO_FILE} is missing")
    ct, final, prop, file_problems = _read_files(p)
    problems += file_problems
    action = "none"
    if repair and problems:
        if ct is not None and final is not None:
            if not record_ok or any(x.startswith(PROPOSAL_FILE) for x in file_problems):
                added = _dt.date.fromtimestamp((p / CT_FILE).stat().st_mtime).isoformat()
                info = case_record(cid, ct, final, prop, _old_site(lib, cid), added)
                write_json_atomic(p / INFO_FILE, info)
                action = f"rebuilt {INFO_FILE}"
        else:
            dest = lib.root / DAMAGED_DIR
            dest.mkdir(exist_ok=True)
            os.replace(p, dest / cid)
            action = f"moved to {DAMAGED_DIR}/"
    return {"id": cid, "problems": problems, "action": action}


def check_library(root: str | os.PathLike | None = None, repair: bool = False) -> dict[str, Any]:
    """Check every case folder of the library ``root`` (default :func:`cervixtl.cases.default_cases_dir`).

    Returns:
        ``{"root", "cases": N, "damaged": [per-case dicts with problems], "repaired": N, "stale_removed": N}``.
    """
    lib = CaseLibrary(root)
    rows: list[dict[str, Any]] = []
    stale = sweep_stale(lib.root) if repair else []
    if lib.root.is_dir():
        for p in sorted(lib.root.iterdir()):
            if p.is_dir() and _ID_RE.match(p.name):
                rows.append(check_case(lib, p.name, repair))
    damaged = [r for r in rows if r["problems"]]
    return {"root": str(lib.root), "cases": len(rows), "damaged": damaged,
            "repaired": sum(r["action"] != "none" for r in damaged), "stale_removed": len(stale)}
