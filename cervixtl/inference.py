"""Whole-CT contouring with a registered model.

Pipeline of :func:`run_contour` = :func:`predict_labels` + :func:`build_targets` (array order (z, y, x), spacing (x, y, z) mm, LPS):

1. reorient the CT to LPS and resample it to the model's voxel spacing (linear);
2. the card's intensity normalisation (:mod:`cervixtl.intensity`: HU window to 0..1, or nnU-Net's CT z-score);
3. MONAI :func:`~monai.inferers.sliding_window_inference` with Gaussian blending (``overlap`` configurable;
   bf16/fp16 autocast on CUDA); CUDA out-of-memory retries with a smaller window batch, then on the CPU;
4. labels: sigmoid > 0.5 per channel (overlapping labels), softmax argmax, or both (``softmax+sigmoid``:
   argmax over background + exclusive organs, sigmoid > 0.5 for the nested targets);
5. clean-up on the model grid (:mod:`cervixtl.postprocess`: main connected component, holes);
6. each mask back onto the CT's exact original grid (linear interpolation of the 0/1 mask, threshold 0.5);
7. GTV ⊆ CTV; the PTV is the CTV grown by the protocol margin (:func:`cervixtl.margins.ptv_from_ctv`) when
   the model has no PTV output or ``ptv_mm`` is given, else the predicted PTV united with the CTV.

``fast=True`` is the setting for CPUs: no window overlap unless asked for (about 2.4x fewer windows than the
default 0.25 in 3D, and no blending between windows) and 4 windows per network call. Windows stay the size
of the training patch (see :func:`window_settings`).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from . import structures
from .errors import BadInput, ModelError
from .image import Image, reorient, resample_to_reference, resample_to_spacing
from .progress import NULL_PROGRESS, Progress
from .proposals import has_targets, needs_site_model, source_structures, to_structures
from .segmentation import Segment, Segmentation
from .sliding_window import (
    activate,
    predict_logits,
    predict_probabilities,
    probabilities_to_masks,
    softmax_channels,
    window_settings,
)
from .structures import TARGETS
from .tiling import mask_from_network_axes, to_network_axes

__all__ = [
    "ContourResult", "LabelPrediction", "check_model_for_contouring", "resolve_device", "normalise",
    "window_settings", "predict_logits", "predict_probabilities", "activate", "softmax_channels",
    "probabilities_to_masks",
    "mask_to_reference", "make_ptv", "prepare_input", "predict_labels", "build_targets", "run_contour",
]


@dataclass
class ContourResult:
    """Segmentation on the CT grid plus a JSON-ready summary (volumes, timing in s, model, device)."""

    segmentation: Segmentation
    summary: dict[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------------------- checks
def check_model_for_contouring(card: Any) -> None:
    """Refuse models that cannot produce the targets: labels must include GTV and CTV, input 1 channel.

    Raises:
        ModelError: one line naming the model and what is missing.
    """
    names = [n.lower() for n in card.label_names]
    missing = [t for t in ("GTV", "CTV") if t.lower() not in names]
    if missing and not source_structures(card):
        raise ModelError(f"model {card.name}@{card.version} does not predict {' and '.join(missing)} "
                         f"(labels: {', '.join(card.label_names)}); it cannot be used for target contouring")
    if int(card.architecture["params"].get("in_channels", 1)) != 1:
        raise ModelError(f"model {card.name}@{card.version} expects "
                         f"{card.architecture['params'].get('in_channels')} input channels; CervixTL feeds 1 (CT)")


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """``"auto"`` (CUDA when available, else CPU), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.

    Raises:
        BadInput: unknown device name, or CUDA requested but not available.
    """
    if isinstance(device, torch.device):
        return device
    d = (device or "auto").strip().lower()
    if d == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if d == "cpu":
        return torch.device("cpu")
    if d == "cuda" or (d.startswith("cuda:") and d[5:].isdigit()):
        if not torch.cuda.is_available():
            raise BadInput(f"device {device!r} requested but no CUDA GPU is available (use --device cpu or auto)")
        if ":" in d and int(d[5:]) >= torch.cuda.device_count():
            raise BadInput(f"device {device!r}: only {torch.cuda.device_count()} CUDA device(s)")
        return torch.device(d)
    raise BadInput(f"unknown device {device!r}: use auto, cpu or cuda")


# ---------------------------------------------------------------------------- steps
def normalise(array: np.ndarray, window_hu: Sequence[float]) -> np.ndarray:
    """Clip HU to ``window_hu`` = (low, high) and scale linearly to 0..1 (float32)."""
    from .intensity import apply_intensity, window_spec

    return apply_intensity(array, window_spec(window_hu))


def mask_to_reference(mask: Image, reference: Image) -> np.ndarray:
    """Boolean mask on ``reference``'s grid from a mask on another grid: linear interpolation of 0/1 then
    threshold 0.5 (smoother than nearest neighbour); only the mask's bounding box is resampled."""
    out = np.zeros(reference.array.shape, dtype=bool)
    m = np.asarray(mask.array, dtype=bool)
    if not m.any():
        return out
    if mask.same_geometry(reference, tol=1e-6):  # the model ran on the CT's own grid: nothing to resample
        return m.copy()
    zs, ys, xs = (np.flatnonzero(m.any(axis=a)) for a in ((1, 2), (0, 2), (0, 1)))
    lo = np.array([xs[0], ys[0], zs[0]], dtype=float) - 1.5
    hi = np.array([xs[-1], ys[-1], zs[-1]], dtype=float) + 1.5
    corners = np.array([[a, b, c] for a in (lo[0], hi[0]) for b in (lo[1], hi[1]) for c in (lo[2], hi[2])])
    ref_idx = np.array([reference.physical_to_index(tuple(mask.index_to_physical(c))) for c in corners])
    size = np.array(reference.size)
    i0 = np.clip(np.floor(ref_idx.min(axis=0)).astype(int), 0, size - 1)
    i1 = np.clip(np.ceil(ref_idx.max(axis=0)).astype(int), 0, size - 1)
    sub_shape = (i1 - i0 + 1)[::-1]
    sub = Image(np.zeros(sub_shape, dtype=np.uint8), reference.spacing, tuple(reference.index_to_physical(i0)),
                reference.direction)
    res = resample_to_reference(mask.with_array(m.astype(np.float32)), sub, default=0.0)
    out[i0[2]:i1[2] + 1, i0[1]:i1[1] + 1, i0[0]:i1[0] + 1] = res.array >= 0.5
    return out


def make_ptv(ctv: Image, margin_mm: float | Sequence[float], body: Image | None = None) -> Image:
    """PTV = CTV grown by ``margin_mm`` (isotropic, or R, L, A, P, S, I in mm) with the margin engine
    (:func:`cervixtl.margins.ptv_from_ctv`), clipped to the body when given."""
    from .margins import ptv_from_ctv

    return ptv_from_ctv(ctv, margin_mm, body=body)


# ---------------------------------------------------------------------------- the pipeline
@dataclass
class LabelPrediction:
    """The network's labels on the CT's exact grid (boolean (z, y, x) masks by card label name), after the
    card's preprocessing and the production post-processing, with run information (device, windows, timing
    in s, warnings)."""

    masks: dict[str, np.ndarray]
    grid: Image
    run: dict[str, Any] = field(default_factory=dict)


def prepare_input(ct: Image, card: Any) -> tuple[np.ndarray, Image]:
    """The network input for ``ct`` (HU): reoriented to the card's orientation (LPS or RAS), cropped to the
    foreground and resampled within a spacing tolerance when the card asks (:mod:`cervixtl.input_grid`),
    resampled (linear) to the card's spacing (x, y, z mm), normalised by the card's intensity spec. Returns
    the float32 (z, y, x) volume and the model grid (an all-zero Image carrying its geometry)."""
    from .input_grid import crop_to_foreground, model_spacing
    from .intensity import apply_intensity

    target = card.orientation if hasattr(card, "orientation") else "LPS"
    oriented = ct if ct.orientation_code() == target else reorient(ct, target)
    extra = getattr(card, "input", None) or {}  # source pipelines: foreground crop, spacing tolerance
    if extra.get("crop_foreground"):
        oriented = crop_to_foreground(ct, oriented, extra["crop_foreground"])
    spacing = model_spacing(oriented.spacing, card.spacing_mm, extra.get("spacing_tolerance"))
    if np.allclose(oriented.spacing, spacing, rtol=0, atol=1e-6):
        work = oriented  # already on the model spacing: no interpolation (keeps exact values, e.g. 0 HU)
    else:
        work = resample_to_spacing(oriented, spacing, default=-1024.0)
    vol = apply_intensity(work.array, card.intensity)
    return vol, work.with_array(np.broadcast_to(np.uint8(0), work.array.shape))


def _network_masks(net: torch.nn.Module, vol: np.ndarray, card: Any, ws: dict[str, Any], dev: torch.device,
                   progress: Progress, *, cpu_bf16: bool, as_structures: bool
                   ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Label masks (z, y, x, on the model grid) of the normalised (z, y, x) ``vol``, and the run info.

    The volume goes to the network in the card's axis order and comes back as (z, y, x); with
    ``as_structures`` only the labels a source model maps to CervixTL structures are decoded and merged.
    """
    order = getattr(card, "axis_order", "zyx")
    logits, run = predict_logits(net, to_network_axes(vol, order), device=dev, progress=progress,
                                 cpu_bf16=cpu_bf16, **ws)
    labels = None
    if as_structures:
        wanted = {n for names in source_structures(card).values() for n in names}
        labels = [lab for lab in card.labels if lab["name"] in wanted]
    # decode in the network's axes and move each mask (not the C-channel logits) back to (z, y, x)
    masks = probabilities_to_masks(logits, card, labels, logits=True)
    del logits
    if as_structures:
        masks = to_structures(masks, card)
    return {name: mask_from_network_axes(m, order) for name, m in masks.items()}, run


def _masks_to_ct(masks: dict[str, np.ndarray], work_grid: Image, ct: Image, progress: Progress, *,
                 postprocess: bool) -> dict[str, np.ndarray]:
    """Post-process (optional, on the model grid) and move each (z, y, x) mask onto the CT's exact grid.

    ``masks`` is emptied as it goes (each model-grid mask is released once it is on the CT grid).
    """
    if postprocess:
        progress("post-process", 0.0, "connected components, holes, nesting, sides")
        from .postprocess import postprocess as _postprocess

        masks = _postprocess(masks, orientation=work_grid.orientation_code())
    out: dict[str, np.ndarray] = {}
    for i, name in enumerate(list(masks)):
        progress("post-process", 0.1 + 0.6 * i / max(1, len(masks)), f"{name} to the CT grid")
        out[name] = mask_to_reference(work_grid.with_array(masks.pop(name)), ct)
    return out


def predict_labels(ct: Image, card: Any, net: torch.nn.Module, *, device: str | torch.device = "auto",
                   overlap: float | None = None, fast: bool = False, progress: Progress | None = None,
                   sw_batch_size: int | None = None, postprocess: bool = True,
                   as_structures: bool = False, cpu_bf16: bool = False) -> LabelPrediction:
    """Every label of the model on the CT's exact grid: :func:`prepare_input`, the sliding window
    (:func:`window_settings`), threshold / argmax, the post-processing of :mod:`cervixtl.postprocess`
    (components, holes, nesting, sides; on the model grid) and each mask back to the CT grid.

    Args:
        ct: CT in HU, any orientation; arrays (z, y, x).
        card, net: the model card and its network with weights loaded.
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``; overlap: window overlap 0..1 (None: 0.25, 0 with
            ``fast``); sw_batch_size: windows per network call (default from the setting).
        postprocess: apply the production post-processing (default True).
        as_structures: return the CervixTL structures a source model proposes (``urinary_bladder`` ->
            ``Bladder``, colon + small bowel -> ``Bowel``; :func:`to_structures`) instead of its own labels.
        cpu_bf16: run nnU-Net-tiled source networks under bfloat16 autocast on the CPU (faster on CPUs with
            AVX512-BF16/AMX; check agreement with ``benchmarks/bench_sources.py``).

    Raises:
        BadInput: bad device / overlap; Cancelled: on request.
    """
    progress = progress or NULL_PROGRESS
    dev = resolve_device(device)
    timing: dict[str, float] = {}
    t = time.perf_counter()
    progress("resample", 0.0, f"resampling to {card.spacing_mm} mm")
    vol, work_grid = prepare_input(ct, card)
    timing["resample_s"] = time.perf_counter() - t

    t = time.perf_counter()
    ws = window_settings(card, vol.shape, fast=fast, device=dev, overlap=overlap)
    if sw_batch_size:
        ws["sw_batch_size"] = int(sw_batch_size)
    progress("network", 0.0, f"sliding window {ws['roi_size']} on {dev}")
    masks, run = _network_masks(net, vol, card, ws, dev, progress, cpu_bf16=cpu_bf16, as_structures=as_structures)
    del vol
    timing["network_s"] = time.perf_counter() - t

    t = time.perf_counter()
    out = _masks_to_ct(masks, work_grid, ct, progress, postprocess=postprocess)
    timing["postprocess_s"] = time.perf_counter() - t
    run.update({"sliding_window": {"roi_size": ws["roi_size"], "overlap": ws["overlap"],
                                   "sw_batch_size": run["sw_batch_size"], "windows": run["windows"],
                                   "style": (ws.get("tiling") or {}).get("style", "monai")},
                "timing_s": timing})
    grid = ct.with_array(np.broadcast_to(np.uint8(0), ct.array.shape))
    return LabelPrediction(out, grid, run)


def build_targets(pred: LabelPrediction, card: Any, *, ptv_mm: float | Sequence[float] | None = None,
                  progress: Progress | None = None) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """The target chain on the CT grid: GTV ⊆ CTV ⊆ PTV, where the PTV is the CTV grown by ``ptv_mm``
    (isotropic, or R, L, A, P, S, I in mm) or the card's protocol margin when the model has no PTV output or
    ``ptv_mm`` is given (clipped to the body when the model has one), else the predicted PTV ∪ CTV.

    Returns the masks (``pred.masks`` updated in place, a PTV added when needed) and the PTV info
    ``{"source": "model"|"margin", "margin_mm": ...}``.

    Raises:
        BadInput: no PTV output and no margin.
    """
    progress = progress or NULL_PROGRESS
    masks = pred.masks
    canon = {n.lower(): n for n in masks}
    gtv, ctv = masks[canon["gtv"]], masks[canon["ctv"]]
    ctv |= gtv
    if ptv_mm is None and "ptv" in canon:
        ptv = masks[canon["ptv"]]
        ptv |= ctv
        return masks, {"source": "model", "margin_mm": None}
    margin = ptv_mm if ptv_mm is not None else (card.protocol or {}).get("ptv_margin_mm")
    if margin is None:
        raise BadInput(f"model {card.name}@{card.version} has no PTV output and no protocol PTV margin: "
                       "give --ptv-mm")
    progress("post-process", 0.8, f"PTV = CTV + {margin} mm")
    body_key = canon.get("body")
    body = pred.grid.with_array(masks[body_key]) if body_key else None
    ptv = np.asarray(make_ptv(pred.grid.with_array(ctv), margin, body=body).array, dtype=bool)
    masks[canon.get("ptv", "PTV")] = ptv | ctv
    return masks, {"source": "margin", "margin_mm": margin}


def run_contour(ct: Image, card: Any, net: torch.nn.Module, *, device: str | torch.device = "auto",
                overlap: float | None = None, fast: bool = False, ptv_mm: float | Sequence[float] | None = None,
                progress: Progress | None = None, sw_batch_size: int | None = None) -> ContourResult:
    """The whole pipeline of the module docstring: :func:`predict_labels` then :func:`build_targets`.

    Args:
        ct: planning CT in HU, any orientation.
        card: the model card (``ModelCard``); net: its network with weights loaded.
        device, overlap, fast, sw_batch_size: see :func:`predict_labels`.
        ptv_mm: PTV margin in mm (isotropic or R, L, A, P, S, I); None: the card's protocol margin, used when
            the model has no PTV output.
        progress: progress reporter / cancel flag.

    Raises:
        ModelError: the model lacks GTV/CTV; BadInput: bad device/overlap/margin; Cancelled: on request.
    """
    progress = progress or NULL_PROGRESS
    check_model_for_contouring(card)
    targets = has_targets(card)
    pred = predict_labels(ct, card, net, device=device, overlap=overlap, fast=fast, progress=progress,
                          sw_batch_size=sw_batch_size, as_structures=not targets)
    t = time.perf_counter()
    if targets:
        masks, ptv_info = build_targets(pred, card, ptv_mm=ptv_mm, progress=progress)
    else:  # a source model (e.g. TotalSegmentator): zero-shot organ proposals only
        masks, ptv_info = pred.masks, {"source": None, "margin_mm": None}
    timing = pred.run["timing_s"]
    timing["postprocess_s"] += time.perf_counter() - t
    warn = list(pred.run.get("warnings", []))
    seg = _build_segmentation(pred.grid, card, masks)
    for s in seg.segments:
        if s.name in TARGETS and s.voxels == 0:
            warn.append(f"{s.name} is empty")
    missing = needs_site_model(card)
    if not targets:
        warn.append(f"model {card.spec} is a source model: organ proposals only; {', '.join(missing)} need a "
                    "site model (fine-tune one from this source with `cervixtl finetune`)")
    summary = {
        "model": {"name": card.name, "version": card.version, "sha256": card.weights.get("sha256"),
                  "architecture": card.architecture.get("name"), "output": card.output},
        "device": pred.run["device"], "fast": bool(fast),
        "sliding_window": pred.run["sliding_window"],
        "model_spacing_mm": list(card.spacing_mm),
        "ptv": ptv_info, "mode": "targets" if targets else "organs",
        "needs_site_model": missing,
        "grid": {k: v for k, v in ct.copy_geometry().items() if k in ("size", "spacing_mm", "orientation")},
        "structures": seg.summary(),
        "timing_s": {k: round(v, 3) for k, v in timing.items()},
        "warnings": warn,
    }
    progress("post-process", 1.0, "done")
    return ContourResult(seg, summary)


def _build_segmentation(grid: Image, card: Any, masks: dict[str, np.ndarray]) -> Segmentation:
    """Targets first (GTV, CTV, PTV), then the other labels in card order, with the card's colours and
    terminology (falling back to the canonical structure's)."""
    by_lower = {n.lower(): n for n in masks}
    order = [by_lower[t.lower()] for t in TARGETS if t.lower() in by_lower]
    order += [n for n in masks if n not in order]
    seg = Segmentation(grid)
    for i, name in enumerate(order):
        lab = card.label(name) or {}
        canonical = structures.get(name)
        out_name = canonical.name if canonical else name
        color = tuple(float(c) for c in (lab.get("color") or structures.color_of(out_name, i)))
        term = lab.get("terminology") or structures.terminology(out_name)
        seg.segments.append(Segment(name=out_name, mask=masks[name], color=color,  # type: ignore[arg-type]
                                    label=i + 1, terminology=term))
    return seg
