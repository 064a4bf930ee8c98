"""Sliding-window network inference over a whole normalised volume, and probabilities -> label masks.

* :func:`window_settings` -- window size (the card's training patch, voxels in the network's axis order),
  overlap and batch size; nnU-Net-style tiling when the card asks for it (:mod:`cervixtl.tiling`);
* :func:`predict_logits` / :func:`predict_probabilities` -- MONAI
  :func:`~monai.inferers.sliding_window_inference` with Gaussian blending (bf16/fp16 autocast on CUDA), or
  nnU-Net's tiling; CUDA out-of-memory retries with a smaller batch, then on the CPU;
* :func:`activate` / :func:`softmax_channels` -- sigmoid, softmax or ``softmax+sigmoid`` probabilities;
* :func:`probabilities_to_masks` -- sigmoid > 0.5 per channel, softmax argmax, or both.

Arrays are [C, *spatial] with the spatial axes in the order the network sees them ((z, y, x) unless the card
says ``xyz``). Re-exported by :mod:`cervixtl.inference`.
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from .errors import BadInput
from .progress import NULL_PROGRESS, Progress
from .tiling import _sliding_nnunet

__all__ = ["window_settings", "predict_logits", "predict_probabilities", "activate", "softmax_channels",
           "probabilities_to_masks"]

#: Windows of at most this many voxels are run 4 at a time on the CPU too (see :func:`window_settings`).
CPU_SMALL_WINDOW = 64 ** 3


def window_settings(card: Any, shape_zyx: Sequence[int], *, fast: bool, device: torch.device,
                    overlap: float | None) -> dict[str, Any]:
    """Sliding-window roi (z, y, x voxels), overlap and batch size for a volume of ``shape_zyx``.

    Windows are always the card's training patch: with group/instance normalisation a network's output depends
    on the window content, so larger windows than trained on can fail (seen with the demo model on a wide
    field of view). Normal: overlap 0.25 (or given; a MONAI source card's ``tiling.overlap``, e.g. 0.625 for
    Auto3DSeg), batch 4 on GPU; on CPU batch 4 for windows of at most :data:`CPU_SMALL_WINDOW` voxels, else 1.
    Fast: overlap 0 (or given), batch 4. A MONAI source's blending ``mode``, ``sigma_scale`` and
    ``padding_mode`` are passed on as ``tiling``.

    Why small CPU windows are batched: for a batch of one, PyTorch (2.x) runs a float32 3D convolution with
    its native im2col kernel instead of oneDNN whenever N x C x D x H <= 20480 (a rule made for 2D images).
    That hits every thin early layer of a small network: the 8-filter default network on a 32 x 64 x 64
    window takes 0.46 s a window alone and 0.08 s a window in batches of 4 (2 threads), with the same logits
    to float32 rounding.
    """
    roi = list(card.patch_size)  # the training patch: group/instance norms make larger windows unsafe
    tiling = dict((getattr(card, "input", None) or {}).get("tiling") or {})
    if tiling.get("style") == "nnunet":  # the source's own tiling (cervixtl.tiling); overlap = 1 - step
        step = float(tiling.get("step", 0.5)) if overlap is None else 1.0 - float(overlap)
        if not 0.0 < step <= 1.0:
            raise BadInput(f"overlap {overlap} must be in [0, 1)")
        return {"roi_size": roi, "overlap": 1.0 - step, "sw_batch_size": 1,
                "tiling": {"style": "nnunet", "step": step, "sigma_scale": float(tiling.get("sigma_scale", 0.125)),
                           "out_channels": int(card.architecture["params"]["out_channels"])}}
    own = tiling.get("overlap") if tiling.get("style") == "monai" and not fast else None  # the source's own
    ov = (0.0 if fast else 0.25 if own is None else float(own)) if overlap is None else float(overlap)
    if not 0.0 <= ov < 1.0:
        raise BadInput(f"overlap {ov} must be in [0, 1)")
    batch = 4 if (fast or device.type == "cuda" or math.prod(roi) <= CPU_SMALL_WINDOW) else 1
    out: dict[str, Any] = {"roi_size": roi, "overlap": ov, "sw_batch_size": batch}
    if tiling.get("style") == "monai":  # a MONAI source's blending and padding (default: Gaussian, replicate)
        out["tiling"] = {k: tiling[k] for k in ("style", "mode", "padding_mode", "sigma_scale") if k in tiling}
    return out


def _n_windows(shape: Sequence[int], roi: Sequence[int], overlap: float) -> int:
    """Number of MONAI sliding windows of ``roi`` voxels over ``shape`` voxels (same axis order) at ``overlap``."""
    n = 1
    for s, r in zip(shape, roi):
        r = min(r, s) if s < r else r
        step = max(1, int(r * (1 - overlap)))
        n *= 1 if s <= r else int(math.ceil((s - r) / step)) + 1
    return n


def predict_probabilities(net: torch.nn.Module, volume: np.ndarray, output: str, *,
                          n_softmax: int | None = None, **window: Any) -> tuple[torch.Tensor, dict[str, Any]]:
    """Probabilities [C, *volume.shape] float32 on the CPU (:func:`activate` of :func:`predict_logits`, in
    place; ``n_softmax`` = :func:`softmax_channels` for ``softmax+sigmoid``) and the run info. ``window``: the
    arguments of :func:`predict_logits`."""
    logits, info = predict_logits(net, volume, **window)
    return activate(logits, output, n_softmax, inplace=True), info


def predict_logits(net: torch.nn.Module, volume: np.ndarray, *, roi_size: Sequence[int], overlap: float,
                   sw_batch_size: int, device: torch.device, progress: Progress = NULL_PROGRESS,
                   tiling: dict[str, Any] | None = None, cpu_bf16: bool = False
                   ) -> tuple[torch.Tensor, dict[str, Any]]:
    """Run the network over a normalised volume (in the network's axis order); returns (logits
    [C, *volume.shape] float32 on CPU, run info: device used, batch size, warnings). ``tiling`` ``{"style":
    "nnunet", "step", "sigma_scale"}`` tiles as nnU-Net does (:mod:`cervixtl.tiling`), else MONAI's sliding
    window with ``overlap``. Falls back on CUDA OOM: halve the batch, then CPU."""
    from monai.inferers import sliding_window_inference

    info: dict[str, Any] = {"warnings": []}
    tile: dict[str, Any] = tiling or {}
    nn_style = tile.get("style") == "nnunet"
    if nn_style:
        from .tiling import n_tiles

        n_win = n_tiles(volume.shape, roi_size, float(tile["step"]))
    else:
        n_win = _n_windows(volume.shape, roi_size, overlap)
    # MONAI style: Gaussian blending (sigma 0.125) and replicate padding unless a MONAI source's card says
    # otherwise (``constant``: zeros after normalisation, MONAI's default)
    swi = functools.partial(sliding_window_inference, mode=str(tile.get("mode", "gaussian")),
                            sigma_scale=float(tile.get("sigma_scale", 0.125)),
                            padding_mode=str(tile.get("padding_mode", "replicate")))
    dev, batch = device, sw_batch_size
    while True:
        try:
            if nn_style:
                logits = _sliding_nnunet(net, volume, roi_size, tile, batch, dev, progress, cpu_bf16)
            else:
                logits = _sliding(net, volume, roi_size, overlap, batch, dev, n_win, progress, swi)
            break
        except torch.cuda.OutOfMemoryError:
            torch.cuda.empty_cache()
            if batch > 1:
                batch = max(1, batch // 2)
                msg = f"CUDA out of memory: retrying with {batch} window(s) per batch"
            elif dev.type == "cuda":
                dev = torch.device("cpu")
                msg = "CUDA out of memory: falling back to the CPU (slower)"
            else:
                raise
            warnings.warn(msg, RuntimeWarning, stacklevel=2)
            info["warnings"].append(msg)
            progress("network", 0.0, msg, warning=msg)
    info.update({"device": str(dev), "sw_batch_size": batch, "windows": n_win})
    return logits[0].float().cpu(), info


def activate(logits: torch.Tensor, output: str, n_softmax: int | None = None, *,
             inplace: bool = False) -> torch.Tensor:
    """Probabilities of [C, ...] logits: sigmoid, softmax over channels, or (``softmax+sigmoid``) softmax over
    the first ``n_softmax`` channels (background and exclusive organs) and sigmoid on the rest.

    ``inplace``: overwrite ``logits`` slab by slab along the first spatial axis (no second full-size volume:
    the logits of a whole CT at 1.5 mm with 25 classes are 3 GB)."""
    if not inplace:
        return _activate(logits, output, n_softmax)
    for slab in logits.split(8, dim=1):
        slab.copy_(_activate(slab, output, n_softmax))
    return logits


def _activate(logits: torch.Tensor, output: str, n_softmax: int | None) -> torch.Tensor:
    if output == "sigmoid":
        return torch.sigmoid(logits)
    if output == "softmax" or n_softmax is None or n_softmax >= logits.shape[0]:
        return torch.softmax(logits, dim=0)
    return torch.cat([torch.softmax(logits[:n_softmax], dim=0), torch.sigmoid(logits[n_softmax:])], dim=0)


def softmax_channels(card: Any) -> int | None:
    """Output channels of the softmax group of a ``softmax+sigmoid`` card (background included), else None."""
    if card.output != "softmax+sigmoid":
        return None
    return 1 + max((int(lab["channel"]) for lab in card.labels if lab.get("activation") == "softmax"), default=0)


def _sliding(net: torch.nn.Module, volume: np.ndarray, roi: Sequence[int], overlap: float, batch: int,
             dev: torch.device, n_win: int, progress: Progress, swi: Any) -> torch.Tensor:
    """Logits [1, C, *volume.shape] (on the CPU) of MONAI's sliding window ``swi`` (blending and padding bound
    by :func:`predict_probabilities`) over ``volume`` (network axis order); autocast bf16/fp16 on CUDA;
    ``n_win`` windows for the progress."""
    net = net.to(dev).eval()
    x = torch.from_numpy(np.ascontiguousarray(volume))[None, None].to(dev)  # whole volume on the GPU: no per-window copy
    done = [0]
    n_batches = max(1, math.ceil(n_win / batch))

    def predictor(patch: torch.Tensor) -> torch.Tensor:
        progress("network", done[0] / n_batches, f"window batch {done[0] + 1} of {n_batches}")
        if dev.type == "cuda":
            dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
            with torch.autocast("cuda", dtype=dtype):
                out = net(patch)
            out = out.float()
        else:
            out = net(patch)
        done[0] += 1
        return out

    with torch.inference_mode():
        out = swi(x, roi_size=list(roi), sw_batch_size=batch, predictor=predictor, overlap=overlap,
                  sw_device=dev, device=dev)
    if isinstance(out, (tuple, list)):
        out = out[0]
    return torch.as_tensor(out).cpu()


def probabilities_to_masks(probs: torch.Tensor, card: Any, labels: Sequence[dict[str, Any]] | None = None, *,
                           logits: bool = False) -> dict[str, np.ndarray]:
    """Label masks (same axes as ``probs``) by name: sigmoid channels > 0.5, softmax argmax == channel; for
    ``softmax+sigmoid`` the argmax is over the softmax group only (:func:`softmax_channels`). ``labels``: the
    card labels to decode (default all). ``logits``: ``probs`` are the logits before :func:`activate` (the same
    masks: a sigmoid channel is > 0.5 where its logit is > 0, and softmax keeps the argmax), which spares a
    second C-channel volume."""
    masks: dict[str, np.ndarray] = {}
    n_soft = (softmax_channels(card) or 0) if card.output == "softmax+sigmoid" else (
        probs.shape[0] if card.output == "softmax" else 0)
    arg = torch.argmax(probs[:n_soft], dim=0).numpy() if n_soft else None
    cut = 0.0 if logits else 0.5
    for lab in (card.labels if labels is None else labels):
        ch = int(lab["channel"])
        masks[str(lab["name"])] = arg == ch if arg is not None and ch < n_soft else (probs[ch] > cut).numpy()
    return masks
