"""Live CTV / PTV margin preview on a segmentation node, with the engine's margin code.

CTV = GTV expanded by the CTV margin (``cervixtl.margins.ctv_from_gtv``) and PTV = CTV expanded by the PTV
margin (``cervixtl.margins.ptv_from_ctv``), both clipped to a ``Body`` segment when there is one. Margins are
one number of mm (isotropic) or six (R, L, A, P, S, I), 0..50 mm, in the PATIENT frame: the segment arrays are
wrapped in an LPS :class:`~cervixtl.image.Image` with the CT's geometry so "R" is the patient's right whatever
the voxel axes are.

Speed (target under 0.3 s per slider update on a 512 x 512 x 120 CT): the masks are read from the node once
(:class:`MarginPreview` snapshot); each update works on the bounding box of the GTV/CTV padded by the margin
plus two voxels (a margin of ``m`` mm cannot reach further, so the result equals the full-grid one), and only
the box that holds the old and new voxels is written back into the segment.
"""

from __future__ import annotations

import importlib
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Union

import numpy as np

from . import nodes

#: A margin in mm: isotropic, or six values R, L, A, P, S, I (Union, not |: Python 3.9 evaluates this line).
Margin = Union[float, Sequence[float]]  # noqa: UP007 - Python 3.9 (Slicer 5.8) evaluates this line
Box = tuple[slice, slice, slice]
#: Organs whose overlap with the PTV is reported (canonical engine names).
OVERLAP_ORGANS = ("Rectum", "Bladder")


def margin_reach_mm(margin: Margin | None) -> float:
    """Largest distance (mm) a margin can move a surface."""
    if margin is None:
        return 0.0
    if isinstance(margin, (int, float)):
        return float(margin)
    return float(max(margin))


def crop_box(masks: Sequence[np.ndarray], pad_voxels: Sequence[int]) -> Box | None:
    """(z, y, x) slices of the bounding box of the union of ``masks`` padded by ``pad_voxels`` (z, y, x),
    clipped to the grid; None when all masks are empty."""
    box = None
    for m in masks:
        b = bounding_box(m)
        box = b if box is None else union_box(box, b)
    if box is None:
        return None
    shape = masks[0].shape
    return tuple(slice(max(0, s.start - p), min(n, s.stop + p))  # type: ignore[return-value]
                 for s, p, n in zip(box, pad_voxels, shape))


def bounding_box(mask: np.ndarray) -> Box | None:
    """Tight (z, y, x) slices around the non-zero voxels, or None when empty."""
    out = []
    for axis in range(3):
        other = tuple(a for a in range(3) if a != axis)
        idx = np.flatnonzero(mask.any(axis=other))
        if idx.size == 0:
            return None
        out.append(slice(int(idx[0]), int(idx[-1]) + 1))
    return tuple(out)  # type: ignore[return-value]


def union_box(a: Box | None, b: Box | None) -> Box | None:
    """Smallest box containing both (None = empty)."""
    if a is None:
        return b
    if b is None:
        return a
    return tuple(slice(min(x.start, y.start), max(x.stop, y.stop)) for x, y in zip(a, b))  # type: ignore[return-value]


def _sub_image(grid: Any, array: np.ndarray, box: Box) -> Any:
    """The part ``box`` (z, y, x slices) of ``array`` on ``grid``, as an Image with the shifted origin."""
    from cervixtl.image import Image

    start_xyz = (box[2].start, box[1].start, box[0].start)
    origin = grid.index_to_physical(start_xyz)
    return Image(np.ascontiguousarray(array[box]), grid.spacing, tuple(origin), grid.direction.copy())


def compute_targets_in_box(grid: Any, gtv: np.ndarray, ctv: np.ndarray, ctv_margin: Margin | None,
                           ptv_margin: Margin, body: np.ndarray | None = None,
                           crop: bool = True) -> tuple[Box, np.ndarray, np.ndarray]:
    """(box, CTV inside the box, PTV inside the box): every target voxel lies in ``box`` (z, y, x slices).

    Args:
        grid: engine Image with the CT's geometry (array ignored).
        gtv: GTV mask; ctv: the current (model / clinician) CTV, kept when ``ctv_margin`` is None.
        ctv_margin: mm (isotropic or R,L,A,P,S,I) to grow the GTV into the CTV, or None to keep ``ctv``.
        ptv_margin: mm (isotropic or R,L,A,P,S,I) to grow the CTV into the PTV.
        body: optional body mask the targets are clipped to.
        crop: work on the padded bounding box (same result, faster); False = the whole grid.
    """
    from cervixtl import margins

    spacing_zyx = np.asarray(grid.spacing, dtype=float)[::-1]
    reach = margin_reach_mm(ctv_margin) + margin_reach_mm(ptv_margin)
    pad = [int(math.ceil(reach / s)) + 2 for s in spacing_zyx]
    box = crop_box([gtv, ctv] if ctv_margin is None else [gtv], pad) if crop else None
    if box is None:
        box = (slice(0, gtv.shape[0]), slice(0, gtv.shape[1]), slice(0, gtv.shape[2]))
    body_img = _sub_image(grid, body, box) if body is not None else None
    if ctv_margin is None:
        ctv_img = _sub_image(grid, ctv, box)
    else:
        ctv_img = margins.ctv_from_gtv(_sub_image(grid, gtv, box), ctv_margin, body=body_img)
    ptv_img = margins.ptv_from_ctv(ctv_img, ptv_margin, body=body_img)
    return box, np.asarray(ctv_img.array, dtype=bool), np.asarray(ptv_img.array, dtype=bool)


def compute_targets(grid: Any, gtv: np.ndarray, ctv: np.ndarray, ctv_margin: Margin | None, ptv_margin: Margin,
                    body: np.ndarray | None = None, crop: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """(CTV, PTV) boolean masks (z, y, x) on the whole grid; see :func:`compute_targets_in_box`."""
    box, ctv_sub, ptv_sub = compute_targets_in_box(grid, gtv, ctv, ctv_margin, ptv_margin, body, crop)
    ctv_out = np.zeros(gtv.shape, dtype=bool)
    ptv_out = np.zeros(gtv.shape, dtype=bool)
    ctv_out[box] = ctv_sub
    ptv_out[box] = ptv_sub
    return ctv_out, ptv_out


@dataclass
class PreviewResult:
    """One preview update: volumes (mL), PTV overlap with organs (mL), time (s)."""

    ctv_ml: float
    ptv_ml: float
    overlaps_ml: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0

    def warning(self) -> str:
        """One line naming the organs the PTV overlaps, or '' when none."""
        parts = [f"{name} {ml:.1f} mL" for name, ml in self.overlaps_ml.items() if ml > 0]
        return ("PTV overlaps " + ", ".join(parts)) if parts else ""


class MarginPreview:
    """Live margin editing of the GTV/CTV/PTV segments of one segmentation node.

    Creating it snapshots the masks; :meth:`update` recomputes CTV/PTV and writes them into the segments
    (preview); :meth:`apply` keeps the preview as the new state; :meth:`revert` restores the snapshot.
    A PTV segment is created when missing (and removed again by :meth:`revert`).
    """

    def __init__(self, seg_node: Any, reference_volume: Any, *, gtv: str = "GTV", ctv: str = "CTV",
                 ptv: str = "PTV", body: str = "Body") -> None:
        nodes.check_same_ct(seg_node, reference_volume, "preview margins")
        importlib.import_module("cervixtl.margins")  # now, so that the first slider move is not slowed

        self.seg_node = seg_node
        self.volume = reference_volume
        self.grid = nodes.volume_grid(reference_volume)
        self.ids: dict[str, str] = {}
        for role, name in (("GTV", gtv), ("CTV", ctv)):
            sid = nodes.find_segment_id(seg_node, name)
            if sid is None:
                raise ValueError(f"segmentation {seg_node.GetName()!r} has no {name} segment")
            self.ids[role] = sid
        self.created_ptv = False
        sid = nodes.find_segment_id(seg_node, ptv)
        if sid is None:
            sid = seg_node.GetSegmentation().AddEmptySegment(ptv, ptv, (0.2, 0.6, 1.0))
            self.created_ptv = True
        self.ids["PTV"] = sid
        segmentation = seg_node.GetSegmentation()
        for role in ("CTV", "PTV"):  # own labelmap layers: a growing PTV must not force a layer split mid-preview
            if segmentation.IsSharedBinaryLabelmap(self.ids[role]):
                segmentation.SeparateSegmentLabelmap(self.ids[role])
        self.original = {role: nodes.segment_mask(seg_node, sid, reference_volume) for role, sid in self.ids.items()}
        self.original_box = {role: bounding_box(m) for role, m in self.original.items()}
        body_id = nodes.find_segment_id(seg_node, body)
        self.body = nodes.segment_mask(seg_node, body_id, reference_volume) if body_id else None
        self.organs = {}
        for organ in OVERLAP_ORGANS:
            oid = nodes.find_segment_id(seg_node, organ)
            if oid is not None:
                self.organs[organ] = nodes.segment_mask(seg_node, oid, reference_volume)
        self.current = {k: v.copy() for k, v in self.original.items()}
        self.current_box = dict(self.original_box)
        self.stamp = self._stamp()

    def _stamp(self) -> tuple[int, ...]:
        """Modification times of the GTV/CTV/PTV labelmaps (changes when anything edits them)."""
        seg = self.seg_node.GetSegmentation()
        out = []
        for sid in self.ids.values():
            segment = seg.GetSegment(sid)
            rep = segment.GetRepresentation("Binary labelmap") if segment is not None else None
            out.append(int(rep.GetMTime()) if rep is not None else -1)
        return tuple(out)

    def stale(self) -> bool:
        """True when the segments were edited by someone else (e.g. the Segment Editor) since the last preview
        step: the snapshot must then be taken again, or the edits would be overwritten."""
        return self._stamp() != self.stamp

    @property
    def ml_per_voxel(self) -> float:
        """Volume of one voxel in mL."""
        return self.grid.voxel_volume_mm3 / 1000.0

    def compute(self, ctv_margin: Margin | None, ptv_margin: Margin) -> tuple[np.ndarray, np.ndarray]:
        """(CTV, PTV) on the whole grid for the given margins from the snapshot, without touching the node."""
        return compute_targets(self.grid, self.original["GTV"], self.original["CTV"], ctv_margin, ptv_margin,
                               self.body)

    def _set(self, role: str, box: Box | None, sub: np.ndarray | None, tight: Box | None) -> None:
        """Make ``current[role]`` = ``sub`` placed at ``box`` (zeros elsewhere) and write the change."""
        region = union_box(self.current_box[role], box)
        if region is None:
            return
        new_region = np.zeros(tuple(s.stop - s.start for s in region), dtype=bool)
        if box is not None and sub is not None:
            inner = tuple(slice(b.start - r.start, b.stop - r.start) for b, r in zip(box, region))
            new_region[inner] = sub
        if np.array_equal(self.current[role][region], new_region):
            self.current_box[role] = tight
            return
        self.current[role][region] = new_region
        self.current_box[role] = tight
        nodes.set_segment_mask_in_box(self.seg_node, self.ids[role], self.current[role], self.volume, region)

    def update(self, ctv_margin: Margin | None, ptv_margin: Margin) -> PreviewResult:
        """Recompute CTV/PTV for the margins and show them in the segments."""
        t0 = time.perf_counter()
        box, ctv_sub, ptv_sub = compute_targets_in_box(self.grid, self.original["GTV"], self.original["CTV"],
                                                       ctv_margin, ptv_margin, self.body)
        self._set("CTV", box, ctv_sub, box)
        self._set("PTV", box, ptv_sub, box)
        self.stamp = self._stamp()
        return self.result(time.perf_counter() - t0)

    def result(self, seconds: float = 0.0) -> PreviewResult:
        """Volumes and organ overlaps of the current state."""
        v = self.ml_per_voxel
        ptv_box = self.current_box["PTV"]
        ptv = self.current["PTV"][ptv_box] if ptv_box is not None else np.zeros((0, 0, 0), bool)
        ctv_box = self.current_box["CTV"]
        n_ctv = int(np.count_nonzero(self.current["CTV"][ctv_box])) if ctv_box is not None else 0
        overlaps = {name: round(float(np.count_nonzero(ptv & m[ptv_box])) * v, 3) if ptv_box is not None else 0.0
                    for name, m in self.organs.items()}
        return PreviewResult(round(n_ctv * v, 3), round(float(np.count_nonzero(ptv)) * v, 3), overlaps, seconds)

    def apply(self) -> PreviewResult:
        """Keep the previewed CTV/PTV (they become the state :meth:`revert` returns to)."""
        self.original = {k: v.copy() for k, v in self.current.items()}
        self.original_box = dict(self.current_box)
        self.created_ptv = False
        self.stamp = self._stamp()
        return self.result()

    def revert(self) -> None:
        """Restore the masks as they were when the preview started (or at the last :meth:`apply`)."""
        if self.created_ptv:
            self.seg_node.GetSegmentation().RemoveSegment(self.ids["PTV"])
            self.created_ptv = False
            self.current["PTV"] = self.original["PTV"].copy()
            self.current_box["PTV"] = self.original_box["PTV"]
        for role in ("CTV", "PTV"):
            box = self.original_box[role]
            sub = self.original[role][box] if box is not None else None
            self._set(role, box, sub, box)
        self.stamp = self._stamp()
