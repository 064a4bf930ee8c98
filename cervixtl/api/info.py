"""``image_info``: geometry and intensity facts of an image file (the ``cervixtl info`` job)."""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from . import report

#: Metadata copied from the reader when present (DICOM series: which series was read and why).
META_KEYS = ("source_format", "modality", "series_description", "series_uid", "series_choice")


def image_info(path: str | os.PathLike, series: str | None = None) -> dict[str, Any]:
    """Geometry (size, spacing_mm, origin_mm, direction, orientation; (x, y, z) order, LPS mm) and intensity
    range of an image file, a DICOM series folder or a ``.seg.nrrd``.

    Returns:
        The ``cervixtl-info/1`` report. Every key is always there: ``kind`` is ``"image"`` or
        ``"segmentation"``; ``dtype``/``min``/``max`` (voxel values, HU for a CT) are null for a segmentation,
        ``segments`` (label, name, voxels, volume_ml) null for an image; the DICOM keys null when unknown.

    Raises:
        BadInput: unreadable or not an image.
    """
    from ..io import is_seg_nrrd, read_image, read_segmentation

    d: dict[str, Any] = {"file": os.fspath(path)}
    if is_seg_nrrd(path):
        seg = read_segmentation(path)
        d.update(kind="segmentation", **seg.grid.copy_geometry(), dtype=None, min=None, max=None,
                 segments=seg.summary(), **dict.fromkeys(META_KEYS))
        d["source_format"] = "seg.nrrd"
        return report("info", d)
    img = read_image(path, series)
    arr = img.array
    d.update(kind="image", **img.copy_geometry(), dtype=str(arr.dtype), min=float(np.min(arr)),
             max=float(np.max(arr)), segments=None)
    d.update({k: img.meta.get(k) or None for k in META_KEYS})
    return report("info", d)
