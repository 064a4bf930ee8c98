"""Checks that keep damaged or wrong inputs out: truncated gzip streams, missing or non-positive voxel
spacing in the header, NaN / infinite voxels (also where ITK would hide them), label files that are not label
maps, images that are not CTs in HU.

Each check raises :class:`~cervixtl.errors.BadInput` with one sentence naming the file and the problem.
"""

from __future__ import annotations

import gzip
import math
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from ..errors import BadInput
from ..image import Image

__all__ = [
    "MAX_LABELS",
    "check_complete_gzip",
    "check_ct",
    "check_finite",
    "check_header_spacing",
    "check_image_file",
    "check_label_values",
]

#: More distinct non-zero values than this and a "label file" is taken for an intensity image.
MAX_LABELS = 255

_BLOCK = 1 << 20
_NIFTI_FLOATS: dict[int, np.dtype] = {16: np.dtype("f4"), 64: np.dtype("f8")}


def check_image_file(path: str | Path) -> None:
    """All checks that need the file itself, before ITK reads it (ITK zero-fills a cut gzip stream, reads a
    pixdim of 0 as 1 mm and turns NaN into 0 in NIfTI): header spacing, gzip completeness, NaN / Inf in the raw
    NIfTI floats. One pass over the (decompressed) bytes."""
    p = Path(path)
    if not p.is_file():
        return
    check_header_spacing(p)
    name = p.name.lower()
    nifti = _nifti_float_layout(p) if name.endswith((".nii", ".nii.gz")) else None
    if not name.endswith(".gz") and nifti is None:
        return
    blocks = _gunzip_blocks(p) if name.endswith(".gz") else _raw_blocks(p)
    if nifti is None:
        for _ in blocks:
            pass
        return
    bad = _count_nonfinite(blocks, *nifti)
    if bad:
        raise BadInput(f"{p}: {bad} voxels are NaN or infinite (not numbers); refusing to read them as 0 HU. "
                       "Fill or remove them first")


def check_complete_gzip(path: str | Path) -> None:
    """Refuse a truncated or corrupt ``.gz`` file (ITK's NIfTI reader silently zero-fills a cut stream)."""
    p = Path(path)
    if p.is_file() and p.name.lower().endswith(".gz"):
        for _ in _gunzip_blocks(p):
            pass


def _gunzip_blocks(p: Path) -> Iterator[bytes]:
    """Decompressed blocks of a gzip file; raises BadInput when the stream is corrupt or ends early."""
    d = zlib.decompressobj(16 + zlib.MAX_WBITS)
    total = 0
    try:
        with open(p, "rb") as fh:
            for block in iter(lambda: fh.read(_BLOCK), b""):
                while block:
                    out = d.decompress(block, 1 << 24)
                    total += len(out)
                    yield out
                    block = d.unconsumed_tail
                if d.eof:
                    break
    except zlib.error as exc:
        raise BadInput(f"{p}: corrupt compressed image ({exc})") from None
    if not d.eof:
        raise BadInput(f"{p}: truncated file (compressed data ends early), not a readable image")
    if total == 0:
        raise BadInput(f"{p}: empty image (the compressed file holds no data)")


def _raw_blocks(p: Path) -> Iterator[bytes]:
    with open(p, "rb") as fh:
        yield from iter(lambda: fh.read(_BLOCK), b"")


def _nifti_header(p: Path) -> bytes:
    opener = gzip.open if p.name.lower().endswith(".gz") else open
    try:
        with opener(p, "rb") as fh:
            return fh.read(348)
    except (OSError, EOFError, zlib.error):
        return b""  # unreadable: the gzip check or the image reader reports it


def _nifti_float_layout(p: Path) -> tuple[int, int, np.dtype] | None:
    """(data offset, voxel count, dtype) of a NIfTI-1 file with float voxels, else None."""
    hdr = _nifti_header(p)
    if len(hdr) < 348:
        return None
    for endian in "<>":
        if struct.unpack(endian + "i", hdr[:4])[0] == 348:
            break
    else:
        return None
    dims = struct.unpack(endian + "8h", hdr[40:56])
    dtype_code = struct.unpack(endian + "h", hdr[70:72])[0]
    if dtype_code not in _NIFTI_FLOATS or not 1 <= dims[0] <= 7:
        return None
    offset = int(struct.unpack(endian + "f", hdr[108:112])[0])  # vox_offset: 352 in a single-file .nii
    n = int(np.prod([max(1, d) for d in dims[1: dims[0] + 1]]))
    return max(offset, 352), n, _NIFTI_FLOATS[dtype_code].newbyteorder("<" if endian == "<" else ">")


def _count_nonfinite(blocks: Iterator[bytes], offset: int, n: int, dtype: np.dtype) -> int:
    """Number of NaN / Inf values among the ``n`` items of ``dtype`` that start ``offset`` bytes into the
    stream of ``blocks`` (the whole stream is consumed, so a gzip stream is also checked to its end)."""
    pos, bad, carry = 0, 0, b""
    end = offset + n * dtype.itemsize
    for block in blocks:
        lo, hi = max(offset - pos, 0), min(end - pos, len(block))
        pos += len(block)
        if hi <= lo:
            continue
        data = carry + block[lo:hi]
        usable = len(data) - len(data) % dtype.itemsize
        carry = data[usable:]
        bad += int(np.count_nonzero(~np.isfinite(np.frombuffer(data[:usable], dtype=dtype))))
    return bad


def check_header_spacing(path: str | Path) -> None:
    """Refuse an image file whose header gives no, zero or negative voxel spacing (ITK then silently assumes
    1 mm or takes the absolute value): NIfTI ``pixdim`` <= 0, NRRD without ``space directions``/``spacings``,
    MetaImage without ``ElementSpacing``.
    """
    p = Path(path)
    name = p.name.lower()
    problem = None
    try:
        if name.endswith((".nii", ".nii.gz")):
            hdr = _nifti_header(p)
            if len(hdr) == 348:
                endian = "<" if struct.unpack("<i", hdr[:4])[0] == 348 else ">"
                pix = struct.unpack(endian + "3f", hdr[80:92])
                ndim = struct.unpack(endian + "h", hdr[40:42])[0]
                pix = pix[: max(1, min(3, ndim))]
                if any(not math.isfinite(v) or v <= 0 for v in pix):
                    problem = f"NIfTI pixdim {tuple(round(v, 4) for v in pix)} mm: zero, negative or not a number"
        elif name.endswith((".nrrd", ".nhdr")) and not name.endswith(".seg.nrrd"):
            with open(p, "rb") as fh:
                head = fh.read(65536).split(b"\n\n", 1)[0].lower()
            if b"space directions:" not in head and b"spacings:" not in head:
                problem = "NRRD header has neither 'space directions' nor 'spacings'"
        elif name.endswith((".mha", ".mhd")):
            with open(p, "rb") as fh:
                head = fh.read(65536).split(b"ElementDataFile", 1)[0]
            if b"ElementSpacing" not in head and b"ElementSize" not in head:
                problem = "MetaImage header has no ElementSpacing"
    except (OSError, EOFError, struct.error):
        return  # unreadable: the image reader reports it
    if problem:
        raise BadInput(f"{p}: no voxel spacing in the header, or a zero / negative one ({problem}); "
                       "cannot measure in millimetres")


def check_finite(img: Image, name: str = "image") -> None:
    """Refuse an image with NaN or infinite voxels (they would reach the network or the volumes)."""
    arr = img.array
    if arr.dtype.kind not in "fc":
        return
    bad = int(arr.size - np.count_nonzero(np.isfinite(arr)))
    if bad:
        what = "all voxels are" if bad == arr.size else f"{bad} voxels are"
        raise BadInput(f"{name}: {what} NaN or infinite (not numbers); fill or remove them first")


def check_label_values(arr: np.ndarray, name: str) -> np.ndarray:
    """Refuse an array that is not a label map (non-integer or negative values, or more than
    :data:`MAX_LABELS` labels); return its sorted non-zero label values."""
    if arr.dtype == bool:
        return np.array([1]) if arr.any() else np.array([], dtype=int)
    if arr.dtype.kind == "f" and not np.all(np.mod(arr[np.isfinite(arr)], 1) == 0):
        raise BadInput(f"{name}: non-integer voxel values, not a mask or label map (an intensity image?)")
    values = _distinct(arr)
    if values.size and values[0] < 0:
        raise BadInput(f"{name}: negative voxel values ({values[0]:g}), not a mask or label map (a CT?)")
    nonzero = values[values != 0]
    if len(nonzero) > MAX_LABELS:
        raise BadInput(f"{name}: {len(nonzero)} distinct values, more than {MAX_LABELS} labels: not a mask or "
                       "label map (an intensity image?)")
    return nonzero


def _distinct(arr: np.ndarray) -> np.ndarray:
    """Sorted distinct values; a histogram instead of a sort for small integer types (10x faster on a CT)."""
    if arr.dtype.kind in "iu" and arr.dtype.itemsize <= 2 and arr.size:
        lo = int(arr.min())
        counts = np.bincount((arr.ravel().astype(np.int64) - lo) if lo else arr.ravel())
        return np.flatnonzero(counts) + lo
    return np.unique(arr)


def check_ct(img: Image, name: str = "image") -> None:
    """Refuse images that are not CTs in HU: NaN / infinite voxels, another modality in the header, a mask (two
    values), or intensities without air (minimum above -500 HU, as in MR or an already normalised image).

    Raises:
        BadInput: with the reason.
    """
    check_finite(img, name)
    modality = str(img.meta.get("modality") or "")
    if modality and modality != "CT":
        raise BadInput(f"{name}: modality {modality}, expected a CT")
    arr = img.array
    if arr.dtype == bool:
        raise BadInput(f"{name}: a binary mask, expected a CT")
    lo, hi = float(np.min(arr)), float(np.max(arr))
    if hi - lo < 1e-6:
        raise BadInput(f"{name}: constant image ({lo:g}), expected a CT")
    sample = arr[:: max(1, arr.shape[0] // 8), ::4, ::4]
    if np.unique(sample).size <= 2:
        raise BadInput(f"{name}: only {np.unique(sample).size} distinct values, looks like a mask, expected a CT")
    if lo >= 0 and hi <= 255 and np.all(np.mod(sample, 1) == 0) and np.unique(sample).size <= 128:
        raise BadInput(f"{name}: only small whole numbers 0..{hi:g}: looks like a label map, not a CT")
    if lo > -500:
        raise BadInput(f"{name}: minimum intensity {lo:g} > -500, no air in Hounsfield units: not a CT "
                       "(an MR, or a CT already normalised?)")
