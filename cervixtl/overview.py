"""PNG overview of a contoured CT: axial, coronal and sagittal slices with structure outlines.

Slices pass through the centre of the first non-empty structure of ``focus`` (default GTV, then CTV, then
PTV). Display conventions: radiological (patient right on the image's left in axial and coronal views,
anterior up in axial, superior up in coronal and sagittal, anterior on the left in sagittal), true mm aspect
ratio, CT window -200..300 HU. Predicted structures are solid lines, reference (truth) structures dashed.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np

from .atomic import atomic_path
from .image import Image, reorient
from .segmentation import Segmentation


def _to_lps(ct: Image, seg: Segmentation | None) -> tuple[Image, dict[str, tuple[np.ndarray, tuple]]]:
    lps = ct if ct.orientation_code() == "LPS" else reorient(ct, "LPS")
    masks: dict[str, tuple[np.ndarray, tuple]] = {}
    if seg is not None:
        for s in seg.segments:
            m = seg.grid.with_array(s.mask)
            if ct.orientation_code() != "LPS":
                m = reorient(m, "LPS")
            masks[s.name] = (np.asarray(m.array, dtype=bool), tuple(s.color))
    return lps, masks


def focus_point(masks: dict[str, tuple[np.ndarray, tuple]], shape: Sequence[int],
                focus: Sequence[str] = ("GTV", "CTV", "PTV")) -> tuple[int, int, int]:
    """(z, y, x) voxel at the centre of mass of the first non-empty ``focus`` structure (else the volume
    centre)."""
    lower = {k.lower(): v for k, v in masks.items()}
    for name in focus:
        m = lower.get(name.lower())
        if m is not None and m[0].any():
            return tuple(int(round(c)) for c in np.argwhere(m[0]).mean(axis=0))  # type: ignore[return-value]
    return tuple(s // 2 for s in shape)  # type: ignore[return-value]


def write_overview(ct: Image, path: str | os.PathLike, prediction: Segmentation | None = None, *,
                   truth: Segmentation | None = None, structures: Sequence[str] = ("GTV", "CTV", "PTV"),
                   title: str = "", window_hu: tuple[float, float] = (-200.0, 300.0)) -> Path:
    """Write a 3-panel PNG (axial, coronal, sagittal) of ``ct`` (HU) with outlines of ``structures`` from
    ``prediction`` (solid) and ``truth`` (dashed), atomically; returns the path."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    lps, pred = _to_lps(ct, prediction)
    _, ref = _to_lps(ct, truth)
    arr = lps.array.astype(np.float32)
    z, y, x = focus_point(ref or pred, arr.shape, structures)
    sx, sy, sz = lps.spacing
    nz, ny, nx = arr.shape
    views = [
        ("axial", arr[z], (lambda m: m[z]), [0, nx * sx, ny * sy, 0]),
        ("coronal", arr[:, y, :], (lambda m: m[:, y, :]), [0, nx * sx, 0, nz * sz]),
        ("sagittal", arr[:, :, x], (lambda m: m[:, :, x]), [0, ny * sy, 0, nz * sz]),
    ]
    fig, axes = plt.subplots(1, 3, figsize=(13, 4.6))
    handles = []
    for ax, (label, img, cut, extent) in zip(axes, views):
        origin = "upper" if label == "axial" else "lower"
        ax.imshow(img, cmap="gray", vmin=window_hu[0], vmax=window_hu[1], extent=extent, origin=origin,
                  interpolation="nearest")
        for name in structures:
            for source, style in ((pred, "solid"), (ref, "dashed")):
                hit = next(((m, c) for k, (m, c) in source.items() if k.lower() == name.lower()), None)
                if hit is None:
                    continue
                sl = cut(hit[0])
                if sl.any() and not sl.all():
                    h, w = sl.shape
                    # voxel-centre coordinates in mm; row i is at height i (the axial axis is inverted below)
                    xs = (np.arange(w) + 0.5) * (extent[1] - extent[0]) / w
                    ys = (np.arange(h) + 0.5) * max(extent[2:]) / h
                    ax.contour(xs, ys, sl.astype(float), levels=[0.5], colors=[hit[1]], linewidths=1.2,
                               linestyles=style)
        if origin == "upper":
            ax.set_ylim(extent[2], extent[3])
        ax.set_title(label, fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_aspect("equal")
    for name in structures:
        for source, style, tag in ((pred, "-", ""), (ref, "--", " (truth)")):
            hit = next((c for k, (_, c) in source.items() if k.lower() == name.lower()), None)
            if hit is not None:
                handles.append(Line2D([0], [0], color=hit, linestyle=style, label=name + tag))
    if handles:
        fig.legend(handles=handles, loc="lower center", ncol=min(6, len(handles)), fontsize=8, frameon=False)
    fig.suptitle(title or "CervixTL overview", fontsize=11)
    fig.tight_layout(rect=(0, 0.06, 1, 0.95))
    p = Path(path)
    with atomic_path(p) as tmp:
        fig.savefig(tmp, dpi=90, format="png")
    plt.close(fig)
    return p
