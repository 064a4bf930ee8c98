"""``margins_file``: grow or shrink one mask of a file by a margin in mm (the ``cervixtl margins`` job).

Also the readers it needs: :func:`load_mask` (one binary mask with its name and colour from a mask, a
multi-label map or a ``.seg.nrrd``) and :func:`check_output_writable`.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..errors import BadInput
from ..image import Image
from . import report

#: More distinct non-zero values than this and the input is taken for an intensity image, not a label map.
MAX_LABELS = 1000


def load_mask(path: str | os.PathLike, label: int | None = None) -> tuple[Image, str, tuple[float, float, float] | None]:
    """Read one binary mask from a mask / label map / .seg.nrrd; returns (mask, structure name, colour).

    Raises:
        BadInput: not a mask or label map, several labels without ``label``, absent label, or an empty mask.
    """
    from ..io import is_seg_nrrd, read_image, read_segmentation

    p = Path(path)
    if is_seg_nrrd(p):
        seg = read_segmentation(p)
        if label is None:
            if len(seg.segments) != 1:
                listing = ", ".join(f"{s.label}={s.name}" for s in seg.segments) or "none"
                raise BadInput(f"{p}: {len(seg.segments)} segments ({listing}); choose one with --label")
            s = seg.segments[0]
        else:
            found = [s for s in seg.segments if s.label == label]
            if not found:
                listing = ", ".join(f"{s.label}={s.name}" for s in seg.segments) or "none"
                raise BadInput(f"{p}: no segment with label {label} (segments: {listing})")
            s = found[0]
        mask, name, color = seg.grid.with_array(np.asarray(s.mask, bool)), s.name, s.color
    else:
        img = read_image(p)
        arr = img.array
        if arr.dtype.kind == "f" and not np.all(np.mod(arr, 1) == 0):
            raise BadInput(f"{p}: non-integer voxel values, not a mask or label map (an intensity image?)")
        values = np.unique(arr)
        nonzero = values[values != 0]
        if len(nonzero) > MAX_LABELS:
            raise BadInput(f"{p}: {len(nonzero)} distinct values, not a mask or label map (an intensity image?)")
        if label is None:
            if len(nonzero) > 1:
                shown = ", ".join(str(int(v)) for v in nonzero[:10])
                raise BadInput(f"{p}: {len(nonzero)} labels ({shown}{', ...' if len(nonzero) > 10 else ''}); "
                               "choose one with --label")
            mask = img.with_array(arr != 0)
            value = int(nonzero[0]) if len(nonzero) else 1
        else:
            if label not in nonzero:
                shown = ", ".join(str(int(v)) for v in nonzero[:10]) or "none"
                raise BadInput(f"{p}: label {label} is not present (labels: {shown})")
            mask = img.with_array(arr == label)
            value = label
        name, color = _sidecar_name(p, value)
    if not mask.array.any():
        raise BadInput(f"{p}: the mask{'' if label is None else f' (label {label})'} is empty: nothing to "
                       "grow or shrink")
    return mask, name, color


def _sidecar_name(path: Path, value: int) -> tuple[str, tuple[float, float, float] | None]:
    """Name and colour of label ``value`` from a label map's sidecar JSON (``Label_<value>`` without one)."""
    from ..io import read_label_sidecar

    side = read_label_sidecar(path)
    return side.get("names", {}).get(value, f"Label_{value}"), side.get("colors", {}).get(value)


def check_output_writable(path: str | os.PathLike) -> None:
    """Fail early, with one line, when ``path`` cannot be written (folder missing and not creatable, not
    writable, or not a real folder); probes by creating and deleting a temporary file beside it."""
    from ..fileio import check_writable_dir

    dest = check_writable_dir(path)
    if dest.is_dir():
        raise BadInput(f"{path} is a folder; give a file name")
    try:
        fd, tmp = tempfile.mkstemp(prefix=".cervixtl-probe.", dir=dest.parent if str(dest.parent) else ".")
        os.close(fd)
        os.unlink(tmp)
    except OSError as exc:
        raise BadInput(f"cannot write {path}: {exc.strerror or exc}") from None


def check_mask_output(path: str | os.PathLike) -> None:
    """Refuse an unknown extension or an unwritable place for a mask output. Raises: BadInput."""
    from ..io import IMAGE_SUFFIXES, is_seg_nrrd

    name = Path(path).name.lower()
    if not (is_seg_nrrd(path) or any(name.endswith(s) for s in IMAGE_SUFFIXES)):
        raise BadInput(f"{path}: unknown output extension (use .seg.nrrd or one of {', '.join(IMAGE_SUFFIXES)})")
    check_output_writable(path)


def margins_file(input: str | os.PathLike, output: str | os.PathLike, margin_mm: float | str | Sequence[float], *,
                 shrink: bool = False, label: int | None = None) -> dict[str, Any]:
    """Grow (or shrink) one mask of ``input`` by ``margin_mm`` and write it to ``output``.

    Args:
        input: mask, multi-label map (NIfTI/NRRD/MHA) or ``.seg.nrrd``; label: the label value to use when
            there are several.
        output: ``.seg.nrrd`` (one segment, name and colour kept) or an image format (0/1 mask plus a sidecar
            JSON with the name); the input's geometry (arrays (z, y, x), LPS mm).
        margin_mm: mm, one value (isotropic) or R, L, A, P, S, I (numbers or text ``"5,5,10,10,7,7"``), each
            0..50 mm (:func:`cervixtl.margins.normalize_margin`); exact in physical space.
        shrink: shrink instead of grow.

    Returns:
        The ``cervixtl-margins/1`` report: input, output, structure, operation, margin_mm {R..I},
        volume_in_ml, volume_out_ml, warnings.

    Raises:
        BadInput: bad margin, output or input (see :func:`load_mask`).
    """
    from ..io import write_segmentation
    from ..margins import DIRECTIONS, expand, parse_margin
    from ..segmentation import Segmentation

    margin = parse_margin(margin_mm, "--mm margin")
    check_mask_output(output)
    mask, name, color = load_mask(input, label)
    out = expand(mask, margin, shrink=shrink)
    # .seg.nrrd: one segment; other formats: a 0/1 mask plus a sidecar JSON that keeps the name and colour.
    seg = Segmentation(out.with_array(np.zeros(out.array.shape, np.uint8)))
    seg.set(name, out.array, color=color)
    write_segmentation(seg, output)
    vv = mask.voxel_volume_mm3 / 1000.0
    warnings = [] if out.array.any() else [f"{name} shrunk by this margin is empty (written as an empty mask)"]
    return report("margins", {
        "input": Path(input).name, "output": str(output), "structure": name,
        "operation": "shrink" if shrink else "grow", "margin_mm": dict(zip(DIRECTIONS, margin)),
        "volume_in_ml": round(int(mask.array.sum()) * vv, 3), "volume_out_ml": round(int(out.array.sum()) * vv, 3),
        "warnings": warnings})
