"""nnU-Net-style sliding-window inference: the tiling a source model was validated with.

nnU-Net (and TotalSegmentator through it) places tiles differently from MONAI's ``sliding_window_inference``:
per axis, the number of tiles is ``ceil((size - patch) / (patch * step)) + 1`` and the tiles are spread evenly
between the first and last possible position; volumes smaller than the patch are padded symmetrically with 0
(in normalised intensity); each tile's logits are weighted by a Gaussian (sigma = patch / 8) and the sum is
divided by the summed weights. With instance-normalised networks the tile positions change the output, so a
source model's card (``input.tiling = {"style": "nnunet", "step": 0.5}``) makes CervixTL tile as its own
pipeline did. Test-time mirroring is not done (TotalSegmentator runs without it).

Arrays are in the network's axis order (``card.axis_order``); sizes in voxels.
"""

from __future__ import annotations

import collections
import contextlib
import math
from collections.abc import Callable, Iterator, Sequence
from functools import lru_cache
from typing import Any

import numpy as np
import torch

__all__ = ["tile_starts", "tile_slices", "gaussian_weights", "sliding_window_nnunet", "n_tiles", "to_network_axes",
           "mask_from_network_axes"]


#: tiles run at the same time on the CPU (:func:`sliding_window_nnunet` ``workers``): 2 calls of 1 thread each
#: are about 11 % faster than 1 call of 2 threads for a TotalSegmentator network on 2 cores; each call holds
#: its own activations (about 1.5 GB for a 128³ tile), so more would cost memory for little gain.
CPU_TILE_WORKERS = 2


def tile_starts(size: int, patch: int, step: float) -> list[int]:
    """Start indices of the tiles along one axis of ``size`` voxels (``size >= patch``), ``step`` a fraction of
    the patch (0.5 = half-overlapping tiles)."""
    if size <= patch:
        return [0]
    n = int(math.ceil((size - patch) / (patch * step))) + 1
    stride = (size - patch) / (n - 1)
    return [int(round(stride * i)) for i in range(n)]


def tile_slices(shape: Sequence[int], patch: Sequence[int], step: float) -> list[tuple[slice, ...]]:
    """Every tile of a (padded) volume of ``shape`` as a tuple of slices, last axis fastest."""
    starts = [tile_starts(int(s), int(p), step) for s, p in zip(shape, patch)]
    out: list[tuple[slice, ...]] = []
    for a in starts[0]:
        for b in starts[1]:
            for c in starts[2]:
                out.append(tuple(slice(s, s + int(p)) for s, p in zip((a, b, c), patch)))
    return out


def n_tiles(shape: Sequence[int], patch: Sequence[int], step: float) -> int:
    """Number of tiles :func:`sliding_window_nnunet` runs for a volume of ``shape`` (before padding)."""
    padded = [max(int(s), int(p)) for s, p in zip(shape, patch)]
    return int(np.prod([len(tile_starts(s, int(p), step)) for s, p in zip(padded, patch)]))


@lru_cache(maxsize=8)
def _gaussian(patch: tuple[int, ...], sigma_scale: float) -> np.ndarray:
    from scipy.ndimage import gaussian_filter

    delta = np.zeros(patch, dtype=np.float64)
    delta[tuple(p // 2 for p in patch)] = 1.0
    g = gaussian_filter(delta, [p * sigma_scale for p in patch], order=0, mode="constant", cval=0.0)
    g /= g.max()
    g[g == 0] = g[g > 0].min()  # no zero weight anywhere (the corners of a tile)
    return g.astype(np.float32)


def gaussian_weights(patch: Sequence[int], sigma_scale: float = 0.125) -> torch.Tensor:
    """The tile weighting: a Gaussian centred on the tile, sigma = ``sigma_scale`` x patch, peak 1 (float32)."""
    return torch.from_numpy(_gaussian(tuple(int(p) for p in patch), float(sigma_scale)))


def _pad(volume: np.ndarray, patch: Sequence[int]) -> tuple[np.ndarray, tuple[slice, ...]]:
    pads = [max(0, int(p) - s) for s, p in zip(volume.shape, patch)]
    if not any(pads):
        return volume, tuple(slice(None) for _ in volume.shape)
    widths = [(d // 2, d - d // 2) for d in pads]
    padded = np.pad(volume, widths, mode="constant", constant_values=0.0)
    return padded, tuple(slice(lo, lo + s) for (lo, _), s in zip(widths, volume.shape))


def sliding_window_nnunet(net: Callable[[torch.Tensor], Any], volume: np.ndarray, patch: Sequence[int], *,
                          out_channels: int, step: float = 0.5, sigma_scale: float = 0.125,
                          device: torch.device | None = None, batch: int = 1,
                          on_tile: Callable[[int, int], None] | None = None,
                          autocast_dtype: torch.dtype | None = None, workers: int = 1) -> torch.Tensor:
    """Logits [C, *volume.shape] (float32, CPU) of ``net`` over ``volume`` (normalised, network axis order).

    Args:
        net: the network (eval mode); called on [batch, 1, *patch] tensors.
        volume: 3D float32 array; padded with 0 to at least ``patch``.
        patch: tile size in voxels; step: tile step as a fraction of the patch.
        out_channels: number of output channels; device: where the network runs (default CPU).
        batch: tiles per network call; on_tile: called with (tiles done, tiles total).
        autocast_dtype: e.g. ``torch.bfloat16`` to run the network under autocast (None: float32).
        workers: network calls run at the same time on the CPU, each with ``torch.get_num_threads() //
            workers`` threads (CPU convolutions scale less than linearly with threads, so 2 calls of 1 thread
            beat 1 call of 2). Tiles are still added in order, so the result does not depend on ``workers``.
    """
    dev = device or torch.device("cpu")
    padded, crop = _pad(np.asarray(volume, dtype=np.float32), patch)
    x = torch.from_numpy(np.ascontiguousarray(padded))
    tiles = tile_slices(padded.shape, patch, step)
    weight = gaussian_weights(patch, sigma_scale)
    acc = torch.zeros((out_channels, *padded.shape), dtype=torch.float32)
    norm = torch.zeros(padded.shape, dtype=torch.float32)
    groups = [tiles[i:i + max(1, batch)] for i in range(0, len(tiles), max(1, batch))]

    def forward(group: list[tuple[slice, ...]]) -> torch.Tensor:
        inp = torch.stack([x[s] for s in group])[:, None].to(dev)
        cast = (contextlib.nullcontext() if autocast_dtype is None
                else torch.autocast(dev.type, dtype=autocast_dtype))
        with torch.inference_mode(), cast:  # both are per thread
            out = net(inp)
        return (out[0] if isinstance(out, (list, tuple)) else out).float().cpu()

    done = 0
    with _parallel_tiles(workers if dev.type == "cpu" else 1) as run:
        for group, out in run(forward, groups):
            for j, s in enumerate(group):
                acc[(slice(None),) + tuple(s)].addcmul_(out[j], weight)
                norm[s] += weight
            done += len(group)
            if on_tile is not None:
                on_tile(done, len(tiles))
    acc /= norm
    return acc[(slice(None),) + tuple(crop)]


@contextlib.contextmanager
def _parallel_tiles(workers: int) -> Iterator[Callable[..., Iterator[tuple[Any, torch.Tensor]]]]:
    """A runner ``run(forward, groups)`` that yields ``(group, forward(group))`` in the order of ``groups``,
    with up to ``workers`` forwards in flight (threads; torch releases the GIL), each on its share of the
    intra-op threads (restored on exit)."""
    threads = torch.get_num_threads()
    workers = max(1, min(int(workers), threads))
    if workers == 1:
        yield lambda forward, groups: ((g, forward(g)) for g in groups)
        return
    from concurrent.futures import ThreadPoolExecutor

    def run(forward: Callable[[Any], torch.Tensor], groups: list[Any]) -> Iterator[tuple[Any, torch.Tensor]]:
        pending: collections.deque = collections.deque()
        for g in groups:
            pending.append((g, pool.submit(forward, g)))
            if len(pending) >= workers:
                g0, f0 = pending.popleft()
                yield g0, f0.result()
        while pending:
            g0, f0 = pending.popleft()
            yield g0, f0.result()

    torch.set_num_threads(max(1, threads // workers))
    pool = ThreadPoolExecutor(workers, thread_name_prefix="cervixtl-tile")
    try:
        yield run
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        torch.set_num_threads(threads)


def to_network_axes(volume: np.ndarray, axis_order: str) -> np.ndarray:
    """A (..., z, y, x) array (a volume, or channels first) with its last three axes permuted to the network's
    axis order (e.g. ``"xyz"``; ``"zyx"`` = unchanged); leading axes stay in place."""
    if axis_order == "zyx":
        return volume
    lead = volume.ndim - 3
    return np.ascontiguousarray(np.transpose(volume, [*range(lead), *(lead + "zyx".index(a) for a in axis_order)]))


def mask_from_network_axes(mask: np.ndarray, axis_order: str) -> np.ndarray:
    """A 3D array in the network's axis order back to (z, y, x), contiguous."""
    if axis_order == "zyx":
        return mask
    return np.ascontiguousarray(np.transpose(mask, [axis_order.index(a) for a in "zyx"]))


def _autocast_dtype(dev: torch.device, cpu_bf16: bool = False) -> torch.dtype | None:
    if dev.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if cpu_bf16 else None


def _sliding_nnunet(net: torch.nn.Module, volume: np.ndarray, roi: Sequence[int], tiling: dict[str, Any],
                    batch: int, dev: torch.device, progress: Any, cpu_bf16: bool = False) -> torch.Tensor:
    net = net.to(dev).eval()
    out_ch = int(tiling.get("out_channels") or _out_channels(net))

    def on_tile(done: int, total: int) -> None:
        progress("network", done / total, f"tile {done} of {total}")

    logits = sliding_window_nnunet(net, volume, roi, out_channels=out_ch, step=float(tiling["step"]),
                                   sigma_scale=float(tiling.get("sigma_scale", 0.125)), device=dev, batch=batch,
                                   on_tile=on_tile, autocast_dtype=_autocast_dtype(dev, cpu_bf16),
                                   workers=CPU_TILE_WORKERS)
    return logits[None]


def _out_channels(net: torch.nn.Module) -> int:
    """Output channels of ``net``: its last convolution's ``out_channels`` (no forward pass needed)."""
    convs = [m for m in net.modules() if isinstance(m, (torch.nn.Conv3d, torch.nn.ConvTranspose3d))]
    return int(convs[-1].out_channels)
