"""The case-library jobs: ``add_case``, ``list_cases``, ``show_case`` (``cervixtl cases ...``; torch-free)."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from . import report

if TYPE_CHECKING:
    from ..cases import CaseLibrary

#: Keys of every case row (older ``case.json`` files lacking one get its default).
CASE_DEFAULTS: dict[str, Any] = {"id": "", "added": "", "site": None, "structures": [], "has_proposal": False,
                                 "proposal_vs_final_dice": {}, "size": None, "spacing_mm": None,
                                 "empty_structures_dropped": []}


def _library(cases_dir: str | os.PathLike | None) -> CaseLibrary:
    from ..cases import CaseLibrary

    return CaseLibrary(cases_dir)


def _row(info: dict[str, Any], path: os.PathLike | str) -> dict[str, Any]:
    row = {k: info.get(k, v) for k, v in CASE_DEFAULTS.items()}
    row["path"] = os.fspath(path)
    return row


def list_cases(cases_dir: str | os.PathLike | None = None) -> dict[str, Any]:
    """The cases of the library ``cases_dir`` (default ``$CERVIXTL_CASES_DIR`` / ``~/.cervixtl/cases``).

    Returns:
        The ``cervixtl-cases-list/1`` report: ``cases_dir`` and ``cases``, one row per case with id, added
        (ISO date), site, structures, has_proposal, proposal_vs_final_dice {name: Dice}, size (x, y, z voxels),
        spacing_mm (x, y, z), empty_structures_dropped, path.
    """
    lib = _library(cases_dir)
    rows = [_row(info, lib.root / str(info.get("id", ""))) for info in lib.list()]
    return report("cases-list", {"cases_dir": str(lib.root), "cases": rows})


def show_case(case_id: str, cases_dir: str | os.PathLike | None = None) -> dict[str, Any]:
    """One case: the row of :func:`list_cases` plus ``files`` (names in the case folder).

    Raises:
        BadInput: malformed or unknown id.
    """
    lib = _library(cases_dir)
    info = lib.show(case_id)
    return report("cases-show", {**_row(info, lib.path(case_id)), "files": info.get("files", [])})


def add_case(ct: str | os.PathLike, final: str | os.PathLike, proposal: str | os.PathLike | None = None, *,
             site: str | None = None, cases_dir: str | os.PathLike | None = None) -> dict[str, Any]:
    """Store a CT (file or DICOM folder, HU) with its final contours (``.seg.nrrd`` or label map + sidecar on
    the CT grid) and optionally the model's proposal, anonymised, under a new random id.

    Returns:
        The ``cervixtl-cases-add/1`` report: the new case's row (as :func:`show_case`).

    Raises:
        BadInput, GeometryMismatch: unreadable files, contours not on the CT grid, empty contours, bad site.
    """
    lib = _library(cases_dir)
    cid = lib.add_files(ct, final, proposal, site)
    info = lib.show(cid)
    return report("cases-add", {**_row(info, lib.path(cid)), "files": info.get("files", [])})


def check_cases(cases_dir: str | os.PathLike | None = None, *, repair: bool = False) -> dict[str, Any]:
    """Check every case of the library (record, CT, contours); with ``repair`` rebuild damaged records from
    the files and move unreadable cases to ``.damaged/`` (:func:`cervixtl.cases_check.check_library`).

    Returns:
        The ``cervixtl-cases-check/1`` report: root, cases (count), damaged [{id, problems, action}], repaired,
        stale_removed.
    """
    from ..cases_check import check_library

    return report("cases-check", check_library(cases_dir, repair=repair))
