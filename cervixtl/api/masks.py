"""``margins_file``: grow or shrink one mask of a file by a margin in mm (the ``cervixtl margins`` job).

The mask is read by :func:`cervixtl.io.read_mask` (one label of a mask, a multi-label map or a ``.seg.nrrd``,
with its name and colour); :func:`check_output_writable` probes the output place before any work.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import BadInput
from . import report


def check_output_writable(path: str | os.PathLike) -> None:
    """Fail early, with one line, when ``path`` cannot be written (folder missing and not creatable, not
    writable, or not a real folder); probes by creating and deleting a temporary file beside it."""
    from ..atomic import check_writable_dir

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
        BadInput: bad margin, output or input (see :func:`cervixtl.io.read_mask`).
    """
    from ..io import read_mask, write_segmentation
    from ..margins import DIRECTIONS, expand, parse_margin
    from ..segmentation import Segmentation

    margin = parse_margin(margin_mm, "--mm margin")
    check_mask_output(output)
    mask = read_mask(input, label, require_nonempty=True)
    name, color = mask.meta["structure"], mask.meta.get("color")
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
