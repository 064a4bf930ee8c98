"""Reading and writing segmentations and single masks.

Slicer ``.seg.nrrd`` (via ``slicerio``; overlapping segments kept in layers) and multi-label NIfTI / NRRD /
MHA with a sidecar ``<stem>.json`` carrying the label names and colours. Masks are (z, y, x) on the image's
grid; the ``.seg.nrrd`` geometry is the IJK -> LPS matrix (mm).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from .. import structures
from ..atomic import atomic_path, write_json_atomic
from ..errors import BadInput
from ..image import Image, ijk_to_lps_matrix
from ..segmentation import Segment, Segmentation
from .checks import check_label_values
from .images import read_image, write_image
from .names import first_line, is_seg_nrrd, sidecar_path

__all__ = ["ijk_to_lps_matrix", "read_label_sidecar", "read_mask", "read_segmentation", "write_segmentation"]


def read_segmentation(path: str | os.PathLike, reference: Image | None = None,
                      names: Mapping[int, str] | None = None) -> Segmentation:
    """Read a segmentation: ``.seg.nrrd`` (segment names, colours, terminology, overlapping layers) or a
    multi-label image (names from ``names``, the sidecar JSON, or ``Label_<n>``).

    Args:
        path: segmentation file.
        reference: when given, the segmentation must be on this grid (else :class:`GeometryMismatch`).
        names: label value -> name, overriding the sidecar.
    """
    p = Path(path)
    if not p.exists():
        raise BadInput(f"{p}: no such file")
    if is_seg_nrrd(p):
        seg = _read_seg_nrrd(p)
    else:
        lab = read_image(p, quiet=True)
        check_label_values(lab.array, str(p))
        side = read_label_sidecar(p)
        label_names = dict(names or side.get("names", {}))
        colors = side.get("colors", {})
        # Labels the sidecar names but no voxel carries stay as empty segments, as in a .seg.nrrd (writers
        # warn about them); an explicit ``names`` mapping only names what is present.
        seg = Segmentation.from_labelmap(lab, label_names, colors, keep_empty=names is None)
    if reference is not None:
        reference.require_same_geometry(seg.grid, f"segmentation {p.name}")
    return seg


def read_label_sidecar(p: str | os.PathLike) -> dict[str, Any]:
    """Label names and colours from the JSON sidecar of a label-map file ({} when there is none):
    ``{"names": {value: name}, "colors": {value: (r, g, b)}}``."""
    p = Path(p)
    sc = sidecar_path(p)
    if not sc.exists():
        return {}
    try:
        data = json.loads(sc.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise BadInput(f"{sc}: unreadable label sidecar ({exc})") from None
    names: dict[int, str] = {}
    colors: dict[int, tuple[float, float, float]] = {}
    try:
        for entry in data.get("labels", []):
            v = int(entry["value"])
            names[v] = str(entry["name"])
            if "color" in entry:
                colors[v] = tuple(float(c) for c in entry["color"])  # type: ignore[assignment]
    except (AttributeError, KeyError, TypeError, ValueError) as exc:
        raise BadInput(f"{sc}: malformed label sidecar (each label needs an integer 'value' and a 'name'; "
                       f"{type(exc).__name__}: {exc})") from None
    return {"names": names, "colors": colors}


def _read_seg_nrrd(p: Path) -> Segmentation:
    import slicerio

    try:
        data = slicerio.read_segmentation(str(p))
    except Exception as exc:  # noqa: BLE001 - slicerio raises plain exceptions on bad files
        raise BadInput(f"{p}: not a readable .seg.nrrd ({first_line(exc)})") from None
    voxels = np.asarray(data["voxels"])
    ijk_to_lps = np.asarray(data["ijkToLPS"], dtype=float)
    spatial = voxels.shape[-3:]  # (i, j, k)
    m = ijk_to_lps[:3, :3]
    spacing = np.linalg.norm(m, axis=0)
    direction = m / spacing
    origin = ijk_to_lps[:3, 3]
    grid = Image(np.broadcast_to(np.uint8(0), spatial[::-1]), tuple(spacing), tuple(origin), direction,
                 {"source_format": "seg.nrrd"})
    seg = Segmentation(grid)
    for i, s in enumerate(data.get("segments", [])):
        mask_ijk = slicerio.segment_mask(data, s)
        mask = np.ascontiguousarray(np.transpose(mask_ijk, (2, 1, 0)))
        color = tuple(float(c) for c in s.get("color", structures.color_of(s.get("name", ""), i)))
        seg.segments.append(Segment(name=str(s.get("name", s.get("id", f"Segment_{i + 1}"))), mask=mask,
                                    color=color,  # type: ignore[arg-type]
                                    label=int(s.get("labelValue", i + 1)), terminology=s.get("terminology")))
    # Labels must be unique for a multi-label export: renumber when layers reuse values.
    if len({s.label for s in seg.segments}) != len(seg.segments):
        for i, s in enumerate(seg.segments):
            s.label = i + 1
    return seg


def write_segmentation(seg: Segmentation, path: str | os.PathLike) -> Path:
    """Write a segmentation atomically.

    * ``.seg.nrrd``: Slicer segmentation with names, colours, terminology; overlapping segments go to extra
      layers, so nothing is lost.
    * ``.nii.gz`` / ``.nii`` / ``.nrrd`` / ``.mha``: a multi-label map plus a sidecar ``<stem>.json`` with label
      values, names and colours. Overlaps are resolved by painting larger segments first (a nested GTV stays
      visible inside CTV/PTV); the sidecar lists the overlapping pairs so a reader knows.
    """
    p = Path(path)
    if is_seg_nrrd(p):
        return _write_seg_nrrd(seg, p)
    lab = seg.to_labelmap()
    write_image(lab, p)
    side = {
        "format": "cervixtl-labelmap-1",
        "labels": [{"value": s.label, "name": s.name, "color": [round(c, 4) for c in s.color],
                    "voxels": s.voxels,
                    "volume_ml": round(s.voxels * seg.grid.voxel_volume_mm3 / 1000.0, 3)} for s in seg.segments],
        "overlaps_resolved": "larger segments painted first" if seg.overlapping() else "none",
        "axis_order": "image file (LPS world coordinates)",
    }
    write_json_atomic(sidecar_path(p), side)
    return p


def _seg_layers(seg: Segmentation) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Pack segments into as few uint8 layers as overlaps allow, as ``slicerio.add_segment`` does (first layer
    where the segment overlaps nothing; label = 1 + labels already in that layer), but checking overlaps only
    inside each segment's bounding box and building the (layer, i, j, k) array without copies: ~15x faster
    on a 512 x 512 x 160 CT. Returns (voxels (i, j, k) or (layer, i, j, k), slicerio segment entries)."""
    nz, ny, nx = seg.grid.array.shape
    layers: list[np.ndarray] = []
    counts: list[int] = []
    entries: list[dict[str, Any]] = []
    for s in seg.segments:
        m = np.asarray(s.mask, dtype=bool)
        idx = [np.flatnonzero(m.any(axis=a)) for a in ((1, 2), (0, 2), (0, 1))]  # z, y, x
        box = tuple(slice(int(i[0]), int(i[-1]) + 1) for i in idx) if m.any() else None
        for li, lay in enumerate(layers):
            if counts[li] < 255 and (box is None or not np.any(lay[box][m[box]])):
                break
        else:
            layers.append(np.zeros((nz, ny, nx), dtype=np.uint8))
            counts.append(0)
            li = len(layers) - 1
        counts[li] += 1
        if box is not None:
            layers[li][box][m[box]] = counts[li]
        extent = ([int(idx[2][0]), int(idx[2][-1]), int(idx[1][0]), int(idx[1][-1]), int(idx[0][0]), int(idx[0][-1])]
                  if box is not None else [0, -1, 0, -1, 0, -1])
        entry: dict[str, Any] = {"id": s.name, "name": s.name, "color": [float(c) for c in s.color],
                                 "labelValue": counts[li], "layer": li, "extent": extent}
        if s.terminology:
            entry["terminology"] = s.terminology
        entries.append(entry)
    if len(layers) <= 1:
        voxels = (layers[0] if layers else np.zeros((nz, ny, nx), dtype=np.uint8)).T  # (i, j, k) view
    else:
        voxels = np.stack(layers, axis=-1).T  # (layer, i, j, k) view, contiguous in NRRD (Fortran) order
    return voxels, entries


def _write_seg_nrrd(seg: Segmentation, p: Path) -> Path:
    import slicerio

    voxels, entries = _seg_layers(seg)
    data = {"voxels": voxels, "ijkToLPS": ijk_to_lps_matrix(seg.grid), "segments": entries,
            "containedRepresentationNames": ["Binary labelmap"]}
    with atomic_path(p) as tmp:
        slicerio.write_segmentation(str(tmp), data)
    return p


def read_mask(path: str | os.PathLike, label: int | None = None, reference: Image | None = None, *,
              require_nonempty: bool = False) -> Image:
    """Read one binary mask: a non-zero mask, or label ``label`` of a multi-label map / ``.seg.nrrd``.

    The mask comes back as a boolean :class:`Image` (z, y, x) whose ``meta`` holds ``structure`` (the
    segment or sidecar name, ``Label_<n>`` without one), ``color`` (RGB 0..1 or None) and ``label``.

    Raises:
        BadInput: not a mask or label map, several labels and ``label`` not given, the label is absent, or
            (``require_nonempty``) the mask has no voxel.
    """
    p = Path(path)
    if not p.exists():
        raise BadInput(f"{p}: no such file")
    if is_seg_nrrd(p):
        out = _mask_from_seg_nrrd(p, label)
    else:
        out = _mask_from_labelmap(p, label)
    if require_nonempty and not out.array.any():
        raise BadInput(f"{p}: the mask{'' if label is None else f' (label {label})'} is empty")
    if reference is not None:
        reference.require_same_geometry(out, f"mask {p.name}")
    return out


def _mask_from_seg_nrrd(p: Path, label: int | None) -> Image:
    seg = _read_seg_nrrd(p)
    listing = ", ".join(f"{s.label}={s.name}" for s in seg.segments) or "none"
    if label is None:
        if len(seg.segments) != 1:
            raise BadInput(f"{p}: {len(seg.segments)} segments ({listing}); choose one with --label")
        s = seg.segments[0]
    else:
        found = [s for s in seg.segments if s.label == label]
        if not found:
            raise BadInput(f"{p}: no segment with label {label} (segments: {listing})")
        s = found[0]
    return seg.grid.with_array(np.asarray(s.mask, dtype=bool), structure=s.name, color=tuple(s.color),
                               label=s.label)


def _mask_from_labelmap(p: Path, label: int | None) -> Image:
    img = read_image(p, quiet=True)
    arr = img.array
    nonzero = check_label_values(arr, str(p))
    shown = ", ".join(str(int(v)) for v in nonzero[:10]) + (", ..." if len(nonzero) > 10 else "")
    if label is None:
        if len(nonzero) > 1:
            raise BadInput(f"{p}: {len(nonzero)} labels ({shown}); choose one with --label")
        value = int(nonzero[0]) if len(nonzero) else 1
        mask = arr != 0
    else:
        if label not in nonzero:
            raise BadInput(f"{p}: label {label} is not present (labels: {shown or 'none'})")
        value, mask = int(label), arr == label
    side = read_label_sidecar(p)
    return img.with_array(mask, structure=side.get("names", {}).get(value, f"Label_{value}"),
                          color=side.get("colors", {}).get(value), label=value)
