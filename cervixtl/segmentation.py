"""Segmentations: named binary masks on one voxel grid.

A :class:`Segmentation` is an ordered list of :class:`Segment` (name, boolean mask, colour, label value,
terminology) on a grid described by an :class:`~cervixtl.image.Image` (the CT, or any image with the same
geometry). Segments may overlap (GTV inside CTV inside PTV); a multi-label map cannot hold that, so a
multi-label array is only an import/export form (:meth:`Segmentation.to_labelmap`).

Masks are indexed (z, y, x) like :attr:`Image.array`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import structures
from .errors import BadInput, GeometryMismatch
from .image import Image


@dataclass
class Segment:
    """One structure.

    Attributes:
        name: segment name (canonical names from :mod:`cervixtl.structures` where known).
        mask: boolean array (z, y, x) on the segmentation's grid.
        color: RGB 0..1.
        label: integer value used when the segmentation is written as a multi-label map.
        terminology: slicerio-style coded entry (``category``/``type``/...), or None.
    """

    name: str
    mask: np.ndarray
    color: tuple[float, float, float] = (1.0, 1.0, 0.0)
    label: int = 1
    terminology: dict[str, Any] | None = None

    @property
    def voxels(self) -> int:
        """Number of voxels in the mask."""
        return int(np.count_nonzero(self.mask))


@dataclass
class Segmentation:
    """Named masks on the voxel grid of ``grid`` (only its geometry is used)."""

    grid: Image
    segments: list[Segment] = field(default_factory=list)

    # ------------------------------------------------------------------ access
    @property
    def names(self) -> list[str]:
        """Segment names in order."""
        return [s.name for s in self.segments]

    def __contains__(self, name: str) -> bool:
        return self.find(name) is not None

    def find(self, name: str) -> Segment | None:
        """The segment called ``name`` (case-insensitive), or None."""
        for s in self.segments:
            if s.name.lower() == name.lower():
                return s
        return None

    def __getitem__(self, name: str) -> Segment:
        s = self.find(name)
        if s is None:
            raise BadInput(f"no segment named {name!r} (segments: {', '.join(self.names) or 'none'})")
        return s

    def mask(self, name: str) -> np.ndarray:
        """Boolean mask (z, y, x) of segment ``name``."""
        return self[name].mask

    def mask_image(self, name: str) -> Image:
        """Segment ``name`` as a boolean :class:`Image` on the grid."""
        return self.grid.with_array(self[name].mask)

    def volume_ml(self, name: str) -> float:
        """Volume of segment ``name`` in mL (cm^3)."""
        return self[name].voxels * self.grid.voxel_volume_mm3 / 1000.0

    # ------------------------------------------------------------------ editing
    def set(self, name: str, mask: np.ndarray, color: tuple[float, float, float] | None = None,
            terminology: dict[str, Any] | None = None) -> Segment:
        """Add segment ``name`` or replace its mask; canonical names get their colour and terminology."""
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != self.grid.array.shape:
            raise GeometryMismatch(f"mask of {name!r} has shape {mask.shape}, grid is {self.grid.array.shape}")
        seg = self.find(name)
        if seg is not None:
            seg.mask = mask
            if color is not None:
                seg.color = color
            return seg
        label = max((s.label for s in self.segments), default=0) + 1
        seg = Segment(
            name=name,
            mask=mask,
            color=color or structures.color_of(name, len(self.segments)),
            label=label,
            terminology=terminology if terminology is not None else structures.terminology(name),
        )
        self.segments.append(seg)
        return seg

    def remove(self, name: str) -> None:
        """Remove segment ``name`` if present."""
        self.segments = [s for s in self.segments if s.name.lower() != name.lower()]

    # ------------------------------------------------------------------ conversion
    @classmethod
    def from_labelmap(cls, labelmap: Image, names: Mapping[int, str] | None = None,
                      colors: Mapping[int, tuple[float, float, float]] | None = None,
                      keep_empty: bool = False) -> Segmentation:
        """Split a multi-label map into segments (one per non-zero label value).

        Args:
            labelmap: integer image; 0 is background.
            names: label value -> name (missing values are called ``Label_<n>``).
            colors: label value -> RGB 0..1 (default: the structure's colour).
            keep_empty: also create segments for named labels that have no voxel.
        """
        arr = np.asarray(labelmap.array)
        if not np.issubdtype(arr.dtype, np.integer) and arr.dtype != bool:
            if not np.all(np.equal(np.mod(arr, 1), 0)):
                raise BadInput("label map has non-integer voxel values: is this an intensity image?")
            arr = arr.astype(np.int64)
        grid = labelmap.with_array(np.broadcast_to(np.uint8(0), arr.shape))
        present = [int(v) for v in np.unique(arr) if v != 0]
        values = sorted(set(present) | (set(names) if (names and keep_empty) else set()))
        seg = cls(grid)
        for v in values:
            name = (names or {}).get(v, f"Label_{v}")
            s = seg.set(name, arr == v, color=(colors or {}).get(v))
            s.label = v
        return seg

    def to_labelmap(self, order: Iterable[str] | None = None) -> Image:
        """A multi-label map (uint8/uint16) of the segments, each painted with its ``label`` value.

        Overlaps are resolved by painting larger segments first, so a smaller structure nested inside a larger
        one (GTV in CTV in PTV) stays visible; pass ``order`` (names, first painted first) to override.
        The mapping label -> name is :meth:`label_names`.
        """
        segs = list(self.segments)
        if order is not None:
            pos = {n.lower(): i for i, n in enumerate(order)}
            segs.sort(key=lambda s: pos.get(s.name.lower(), len(pos)))
        else:
            segs.sort(key=lambda s: -s.voxels)
        top = max((s.label for s in segs), default=0)
        dtype = np.uint8 if top < 256 else np.uint16
        out = np.zeros(self.grid.array.shape, dtype=dtype)
        for s in segs:
            out[s.mask] = s.label
        return self.grid.with_array(out)

    def label_names(self) -> dict[int, str]:
        """Label value -> segment name."""
        return {s.label: s.name for s in self.segments}

    def overlapping(self) -> bool:
        """True when any voxel belongs to two segments (then a multi-label map loses information)."""
        if len(self.segments) < 2:
            return False
        count = np.zeros(self.grid.array.shape, dtype=np.uint8)
        for s in self.segments:
            count += s.mask
            if count.max() > 1:
                return True
        return False

    def summary(self) -> list[dict[str, Any]]:
        """Per segment: name, label, voxels, volume (mL)."""
        vv = self.grid.voxel_volume_mm3 / 1000.0
        return [{"name": s.name, "label": s.label, "voxels": s.voxels, "volume_ml": round(s.voxels * vv, 3)}
                for s in self.segments]
