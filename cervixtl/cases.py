"""The local, anonymised case library: what a site teaches its model.

Each case is a folder ``<root>/<id>/`` (written atomically, so a reader never sees half a case)::

    ct.nii.gz            the planning CT in HU (NIfTI carries no patient fields)
    final.seg.nrrd       the clinician's final contours (names, colours, terminology)
    proposal.seg.nrrd    the model's original proposal (optional)
    case.json            id, added (date only), site, structures, grid size and spacing (mm, (x, y, z)),
                         proposal-vs-final Dice per structure

The id is random (``case-`` + 8 hex digits); no name, patient ID, birth date, institution, UID or acquisition
date is read into or written to the library. The root is ``$CERVIXTL_CASES_DIR``, else
``$CERVIXTL_HOME/cases``, else ``~/.cervixtl/cases``.
"""

from __future__ import annotations

import builtins
import datetime as _dt
import json
import os
import re
import secrets
import shutil
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .atomic import atomic_dir, sweep_stale, temp_prefix
from .errors import BadInput, CervixTLError
from .image import Image
from .segmentation import Segment, Segmentation

CASE_FORMAT = "cervixtl-case/1"
CT_FILE = "ct.nii.gz"
FINAL_FILE = "final.seg.nrrd"
PROPOSAL_FILE = "proposal.seg.nrrd"
INFO_FILE = "case.json"
_ID_RE = re.compile(r"^case-[0-9a-f]{8}$")
_SITE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ._-]{0,39}$")


def default_cases_dir() -> Path:
    """``$CERVIXTL_CASES_DIR``, else ``$CERVIXTL_HOME/cases``, else ``~/.cervixtl/cases``."""
    env = os.environ.get("CERVIXTL_CASES_DIR")
    if env:
        return Path(env).expanduser()
    home = os.environ.get("CERVIXTL_HOME")
    return (Path(home).expanduser() if home else Path.home() / ".cervixtl") / "cases"


@dataclass
class Case:
    """A loaded case: CT (HU), final contours, optional proposal, and its ``case.json`` info."""

    id: str
    ct: Image
    final: Segmentation
    proposal: Segmentation | None = None
    info: dict[str, Any] = field(default_factory=dict)


def _anonymous_grid(ct: Image) -> Image:
    """The CT's voxels and geometry with no metadata (no series description, UID, dates...)."""
    return Image(np.asarray(ct.array), ct.spacing, ct.origin, ct.direction.copy(), {})


def _clean_segmentation(seg: Segmentation, ct: Image, what: str) -> tuple[Segmentation, list[str]]:
    """Check ``seg`` is on the CT grid and not empty; return a copy without empty segments + their names."""
    ct.require_same_geometry(seg.grid, what)
    kept = [s for s in seg.segments if s.voxels > 0]
    if not kept:
        raise BadInput(f"{what} is empty: no segment has any voxel")
    dropped = [s.name for s in seg.segments if s.voxels == 0]
    out = Segmentation(_anonymous_grid(ct).with_array(np.broadcast_to(np.uint8(0), ct.array.shape)))
    for s in kept:
        r, g, b = (float(v) for v in s.color)
        out.segments.append(Segment(s.name, np.asarray(s.mask, dtype=bool), (r, g, b), s.label, s.terminology))
    return out, dropped


def proposal_dice(proposal: Segmentation, final: Segmentation) -> dict[str, float]:
    """Dice between proposal and final contour of every structure present in both (matched by name)."""
    from .metrics import dice  # scipy: only when a case is added, not to list the library

    out: dict[str, float] = {}
    for s in final.segments:
        p = proposal.find(s.name)
        if p is not None:
            out[s.name] = round(dice(p.mask, s.mask), 4)
    return out


class CaseLibrary:
    """A folder of anonymised cases (see the module docstring)."""

    def __init__(self, root: str | os.PathLike | None = None) -> None:
        self.root = Path(root).expanduser() if root else default_cases_dir()

    # ------------------------------------------------------------------ queries
    def ids(self) -> list[str]:
        """Case ids in the library, sorted by the date added then id. A case whose ``case.json`` cannot be
        read is left out with a warning naming it (``cervixtl cases check --repair`` rebuilds it)."""
        if not self.root.is_dir():
            return []
        infos = {}
        for p in self.root.iterdir():
            if p.is_dir() and _ID_RE.match(p.name) and (p / INFO_FILE).exists():
                try:
                    infos[p.name] = self.info(p.name)
                except CervixTLError as exc:
                    warnings.warn(f"case {p.name} skipped: {exc} (run 'cervixtl cases check --repair')",
                                  UserWarning, stacklevel=2)
        return sorted(infos, key=lambda i: (str(infos[i].get("added", "")), i))

    def path(self, case_id: str) -> Path:
        """Folder of case ``case_id``.

        Raises:
            BadInput: malformed or unknown id.
        """
        cid = str(case_id).strip()
        if not _ID_RE.match(cid):
            raise BadInput(f"{case_id!r} is not a case id (expected case-xxxxxxxx)")
        p = self.root / cid
        if not (p / INFO_FILE).exists():
            raise BadInput(f"no case {cid} in {self.root}")
        return p

    def info(self, case_id: str) -> dict[str, Any]:
        """The ``case.json`` of a case."""
        p = self.root / case_id / INFO_FILE
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise CervixTLError(f"{p}: unreadable case record ({exc})") from None
        if not isinstance(data, dict) or data.get("id") != case_id:
            raise CervixTLError(f"{p}: not a case record of {case_id}")
        return data

    def list(self) -> list[dict[str, Any]]:
        """One ``case.json`` dict per case."""
        return [self.info(i) for i in self.ids()]

    def show(self, case_id: str) -> dict[str, Any]:
        """The ``case.json`` of ``case_id`` plus the files present."""
        p = self.path(case_id)
        d = self.info(p.name)
        d["files"] = sorted(f.name for f in p.iterdir() if f.is_file())
        return d

    def load(self, case_id: str) -> Case:
        """Read a case (CT, final contours, proposal if any)."""
        from .io import read_image, read_segmentation

        p = self.path(case_id)
        ct = read_image(p / CT_FILE)
        final = read_segmentation(p / FINAL_FILE, reference=ct)
        prop = read_segmentation(p / PROPOSAL_FILE, reference=ct) if (p / PROPOSAL_FILE).exists() else None
        return Case(p.name, ct, final, prop, self.info(p.name))

    def resolve(self, spec: str) -> builtins.list[str]:
        """Case ids from ``"all"`` or comma-separated ids.

        Raises:
            BadInput: unknown id, or the library is empty.
        """
        if spec.strip().lower() in ("all", "*", ""):
            ids = self.ids()
            if not ids:
                raise BadInput(f"the case library {self.root} holds no case")
            return ids
        return [self.path(t.strip()).name for t in spec.split(",") if t.strip()]

    # ------------------------------------------------------------------ changes
    def add(self, ct: Image, final: Segmentation, proposal: Segmentation | None = None,
            site: str | None = None) -> str:
        """Store a case and return its new random id.

        Raises:
            GeometryMismatch: final or proposal contours are not on the CT grid.
            BadInput: empty contours, or a site name with other characters than letters, digits, space . _ -.
        """
        if site is not None and not _SITE_RE.match(site):
            raise BadInput(f"site name {site!r}: use up to 40 letters, digits, spaces, '.', '_' or '-'")
        final_c, dropped = _clean_segmentation(final, ct, "final contours")
        prop_c = _clean_segmentation(proposal, ct, "proposal contours")[0] if proposal is not None else None
        self.root.mkdir(parents=True, exist_ok=True)
        sweep_stale(self.root)  # what a 'cases add' killed outright left behind
        cid = self._new_id()
        info = case_record(cid, ct, final_c, prop_c, site, _dt.date.today().isoformat())
        info["empty_structures_dropped"] = dropped
        from .io import write_image, write_segmentation

        with atomic_dir(self.root / cid) as tmp:
            write_image(_anonymous_grid(ct), tmp / CT_FILE)
            write_segmentation(final_c, tmp / FINAL_FILE)
            if prop_c is not None:
                write_segmentation(prop_c, tmp / PROPOSAL_FILE)
            (tmp / INFO_FILE).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
        return cid

    def add_files(self, ct_path: str | os.PathLike, final_path: str | os.PathLike,
                  proposal_path: str | os.PathLike | None = None, site: str | None = None) -> str:
        """Read a CT (file or DICOM folder) and label files (``.seg.nrrd`` or label map + sidecar) and
        :meth:`add` them. Only voxels and geometry are kept from the headers."""
        from .io import read_ct, read_segmentation

        ct = read_ct(ct_path)
        final = read_segmentation(final_path)
        _check_grid(ct, final, final_path)
        prop = None
        if proposal_path is not None:
            prop = read_segmentation(proposal_path)
            _check_grid(ct, prop, proposal_path)
        return self.add(ct, final, prop, site)

    def remove(self, case_id: str) -> None:
        """Delete a case (moved aside first, so no half-deleted case remains visible)."""
        p = self.path(case_id)
        trash = Path(tempfile.mkdtemp(prefix=temp_prefix(p.name), suffix=".removed", dir=self.root))
        os.replace(p, trash / p.name)
        shutil.rmtree(trash, ignore_errors=True)

    def _new_id(self) -> str:
        while True:
            cid = "case-" + secrets.token_hex(4)
            if not (self.root / cid).exists():
                return cid


def case_record(cid: str, ct: Image, final: Segmentation, proposal: Segmentation | None, site: str | None,
                added: str) -> dict[str, Any]:
    """The ``case.json`` dict of a case (no patient data: id, date added, site, structure names, grid size
    and spacing (mm, (x, y, z)), proposal-vs-final Dice)."""
    return {
        "format": CASE_FORMAT, "id": cid, "added": added, "site": site,
        "structures": final.names, "empty_structures_dropped": [],
        "size": list(ct.size), "spacing_mm": [round(s, 4) for s in ct.spacing],
        "has_proposal": proposal is not None,
        "proposal_vs_final_dice": proposal_dice(proposal, final) if proposal is not None else {},
    }


def _check_grid(ct: Image, seg: Segmentation, path: str | os.PathLike) -> None:
    """Raise :class:`GeometryMismatch` naming ``path`` when ``seg`` is not on the CT grid."""
    ct.require_same_geometry(seg.grid, f"labels {Path(path).name}")


def load_cases(spec: str, cases_dir: str | os.PathLike | None = None) -> list[Case]:
    """Cases named by ``spec``: a case folder, a folder of case folders (a library), ``"all"`` or
    comma-separated case ids of the library ``cases_dir`` (default :func:`default_cases_dir`).

    Raises:
        BadInput: nothing matches.
    """
    p = Path(spec).expanduser()
    if p.is_dir():
        if (p / INFO_FILE).exists():
            return [CaseLibrary(p.parent).load(p.name)]
        lib = CaseLibrary(p)
        ids = lib.ids()
        if not ids:
            raise BadInput(f"{p}: neither a case folder nor a case library (no case-xxxxxxxx/case.json inside)")
        return [lib.load(i) for i in ids]
    lib = CaseLibrary(cases_dir)
    return [lib.load(i) for i in lib.resolve(spec)]
