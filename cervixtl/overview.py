"""PNG overview of a contoured CT: axial, coronal and sagittal slices with structure outlines.

Slices pass through the centre of the first non-empty structure of ``focus`` (default GTV, then CTV, then
PTV). Display conventions: radiological (patient right on the image's left in axial and coronal views,
anterior up in axial, superior up in coronal and sagittal, anterior on the left in sagittal), written on each
panel as the patient direction letters R/L, A/P, S/I at its edges; true mm aspect ratio, CT window
-200..300 HU. Every structure is outlined (targets and organs at risk) in its colour: predicted structures
solid, reference (truth) structures dashed.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .atomic import atomic_path
from .image import Image, reorient
from .segmentation import Segmentation
from .structures import TARGETS


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
                focus: Sequence[str] = TARGETS) -> tuple[int, int, int]:
    """(z, y, x) voxel at the centre of mass of the first non-empty ``focus`` structure (else the volume
    centre)."""
    lower = {k.lower(): v for k, v in masks.items()}
    for name in focus:
        m = lower.get(name.lower())
        if m is not None and m[0].any():
            cz, cy, cx = np.argwhere(m[0]).mean(axis=0)
            return int(round(cz)), int(round(cy)), int(round(cx))
    return int(shape[0]) // 2, int(shape[1]) // 2, int(shape[2]) // 2


#: Patient directions at the (left, right, top, bottom) edges of each view (radiological convention).
EDGE_LETTERS = {"axial": ("R", "L", "A", "P"), "coronal": ("R", "L", "S", "I"), "sagittal": ("A", "P", "S", "I")}

Masks = dict[str, tuple[np.ndarray, tuple]]


def _names(structures: Sequence[str] | None, *sources: Masks) -> list[str]:
    """``structures``, or every structure of the sources: targets first, then the others in their order."""
    if structures is not None:
        return list(structures)
    seen: dict[str, str] = {}
    for src in sources:
        for k in src:
            seen.setdefault(k.lower(), k)
    targets = [seen[t.lower()] for t in TARGETS if t.lower() in seen]
    return targets + [v for v in seen.values() if v not in targets]


def _draw_outlines(ax: Any, cut: Callable[[np.ndarray], np.ndarray], extent: Sequence[float], names: Sequence[str],
                   pred: Masks, ref: Masks) -> None:
    """Outline each structure's cut through this view: prediction solid, truth dashed, in its colour."""
    for name in names:
        for source, style in ((pred, "solid"), (ref, "dashed")):
            hit = next(((m, c) for k, (m, c) in source.items() if k.lower() == name.lower()), None)
            if hit is None:
                continue
            sl = cut(hit[0])
            if sl.any() and not sl.all():
                h, w = sl.shape
                # voxel-centre coordinates in mm; row i is at height i (the axial axis is inverted by the caller)
                xs = (np.arange(w) + 0.5) * (extent[1] - extent[0]) / w
                ys = (np.arange(h) + 0.5) * max(extent[2:]) / h
                ax.contour(xs, ys, sl.astype(float), levels=[0.5], colors=[hit[1]], linewidths=1.2,
                           linestyles=style)


def _letters(ax: Any, view: str) -> None:
    """The patient direction at each edge of the panel (R/L, A/P, S/I), in yellow on the image."""
    left, right, top, bottom = EDGE_LETTERS[view]
    style = {"color": "yellow", "fontsize": 11, "fontweight": "bold", "transform": ax.transAxes}
    ax.text(0.02, 0.5, left, ha="left", va="center", **style)
    ax.text(0.98, 0.5, right, ha="right", va="center", **style)
    ax.text(0.5, 0.98, top, ha="center", va="top", **style)
    ax.text(0.5, 0.02, bottom, ha="center", va="bottom", **style)


def _legend_handles(names: Sequence[str], pred: Masks, ref: Masks) -> list[Any]:
    from matplotlib.lines import Line2D

    handles = []
    for name in names:
        for source, tag in ((pred, ""), (ref, " (truth)")):
            hit = next((c for k, (_, c) in source.items() if k.lower() == name.lower()), None)
            if hit is not None:
                handles.append(Line2D([0], [0], color=hit, linestyle="dashed" if tag else "solid", label=name + tag))
    return handles


def write_overview(ct: Image, path: str | os.PathLike, prediction: Segmentation | None = None, *,
                   truth: Segmentation | None = None, structures: Sequence[str] | None = None,
                   title: str = "", window_hu: tuple[float, float] = (-200.0, 300.0)) -> Path:
    """Write a 3-panel PNG (axial, coronal, sagittal) of ``ct`` (HU, window ``window_hu``) with outlines of
    ``structures`` (default: every structure, targets first, organs at risk too) from ``prediction`` (solid)
    and ``truth`` (dashed) and the patient directions R/L/A/P/S/I at the panel edges, atomically."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    lps, pred = _to_lps(ct, prediction)
    _, ref = _to_lps(ct, truth)
    names = _names(structures, pred, ref)
    arr = lps.array.astype(np.float32)
    z, y, x = focus_point(ref or pred, arr.shape, TARGETS)
    sx, sy, sz = lps.spacing
    nz, ny, nx = arr.shape
    views = [
        ("axial", arr[z], (lambda m: m[z]), [0, nx * sx, ny * sy, 0]),
        ("coronal", arr[:, y, :], (lambda m: m[:, y, :]), [0, nx * sx, 0, nz * sz]),
        ("sagittal", arr[:, :, x], (lambda m: m[:, :, x]), [0, ny * sy, 0, nz * sz]),
    ]
    fig, axes = plt.subplots(1, 3, figsize=(13, 4.6))
    for ax, (label, img, cut, extent) in zip(axes, views):
        origin = "upper" if label == "axial" else "lower"
        ax.imshow(img, cmap="gray", vmin=window_hu[0], vmax=window_hu[1], extent=extent, origin=origin,
                  interpolation="nearest")
        _draw_outlines(ax, cut, extent, names, pred, ref)
        if origin == "upper":
            ax.set_ylim(extent[2], extent[3])
        _letters(ax, label)
        ax.set_title(label, fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_aspect("equal")
    handles = _legend_handles(names, pred, ref)
    if handles:
        fig.legend(handles=handles, loc="lower center", ncol=min(7, len(handles)), fontsize=8, frameon=False)
    fig.suptitle(title or "CervixTL overview", fontsize=11)
    fig.tight_layout(rect=(0, 0.1 if len(handles) > 7 else 0.06, 1, 0.95))
    p = Path(path)
    with atomic_path(p) as tmp:
        fig.savefig(tmp, dpi=90, format="png")
    plt.close(fig)
    return p
