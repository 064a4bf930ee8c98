"""Reading and writing 3D images (NIfTI, NRRD, MetaImage, a DICOM file or series folder).

Every image comes back as an :class:`~cervixtl.image.Image`: array (z, y, x), spacing and origin (x, y, z)
in mm, LPS direction. The reader checks the file before ITK sees it (truncated gzip, zero / negative spacing,
NaN in NIfTI floats; see :mod:`cervixtl.io.checks`) and the voxels after (NaN / Inf), so every command gets
the same refusals. Writers are atomic and verify what they wrote before the rename.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import SimpleITK as sitk

from ..atomic import atomic_path
from ..errors import BadInput
from ..image import Image
from .checks import check_complete_gzip, check_ct, check_finite, check_image_file
from .names import IMAGE_SUFFIXES, c_stderr_silenced, first_line, format_name, is_dicom_file, lower_name

__all__ = ["read_ct", "read_image", "verify_image_file", "write_image"]


def read_image(path: str | os.PathLike, series_uid: str | None = None, *, quiet: bool = False) -> Image:
    """Read a 3D image from a file or a DICOM series folder.

    Args:
        path: image file (NIfTI, NRRD, MHA/MHD, a single DICOM file) or a folder of DICOM files.
        series_uid: for a DICOM folder with several series, the SeriesInstanceUID to read.
        quiet: do not print which series of a several-series folder was read.

    Raises:
        BadInput: the path does not exist, is not an image, is not 3D, is truncated, has no positive voxel
            spacing, or holds NaN / infinite voxels.
    """
    from .dicom import read_dicom_series

    p = Path(path)
    if not p.exists():
        raise BadInput(f"{p}: no such file or folder")
    if p.is_dir():
        return read_dicom_series(p, series_uid, quiet=quiet)
    if p.stat().st_size == 0:
        raise BadInput(f"{p}: empty file (0 bytes), not an image")
    check_image_file(p)
    try:
        with c_stderr_silenced():
            img = sitk.ReadImage(str(p))
    except RuntimeError as exc:
        raise BadInput(f"{p}: not a readable image ({first_line(exc)})") from None
    one_dicom_slice = img.GetDimension() == 3 and img.GetSize()[2] == 1 and lower_name(p).endswith(".dcm")
    if img.GetDimension() == 2 or one_dicom_slice:
        # A single DICOM slice: read the whole series of its folder.
        if lower_name(p).endswith(".dcm") or is_dicom_file(p):
            return read_dicom_series(p.parent, series_uid, quiet=quiet)
        raise BadInput(f"{p}: a 2D image, expected a 3D volume")
    if img.GetDimension() == 4 and img.GetSize()[3] == 1:
        img = img[:, :, :, 0]
    if img.GetDimension() != 3:
        raise BadInput(f"{p}: a {img.GetDimension()}D image, expected a 3D volume")
    if img.GetNumberOfComponentsPerPixel() != 1:
        raise BadInput(f"{p}: a multi-component ({img.GetNumberOfComponentsPerPixel()}) image, expected a scalar "
                       "volume")
    meta: dict[str, Any] = {"source_format": format_name(p)}
    try:
        out = Image.from_sitk(img, meta)
    except BadInput as exc:
        raise BadInput(f"{p}: {exc}") from None
    check_finite(out, str(p))
    return out


def read_ct(path: str | os.PathLike, series_uid: str | None = None) -> Image:
    """Read a planning CT and check that it looks like a CT in Hounsfield units (see
    :func:`~cervixtl.io.checks.check_ct`)."""
    img = read_image(path, series_uid)
    check_ct(img, str(path))
    return img


def write_image(img: Image, path: str | os.PathLike, compress: bool = True) -> Path:
    """Write an image (NIfTI, NRRD, MHA by extension) atomically; the file is read back (header, size, whole
    gzip stream) before it is renamed into place, because ITK's NIfTI writer reports a full disk only on the
    console. Returns the path.

    Raises:
        BadInput: unknown extension, unwritable folder, or the write failed (disk full); nothing is left behind.
    """
    p = Path(path)
    if not any(lower_name(p).endswith(s) for s in IMAGE_SUFFIXES):
        raise BadInput(f"{p}: unknown image extension (use one of {', '.join(IMAGE_SUFFIXES)})")
    sitk_img = img.to_sitk()
    with atomic_path(p) as tmp:
        try:
            with c_stderr_silenced():
                sitk.WriteImage(sitk_img, str(tmp), compress)
        except RuntimeError as exc:
            if _disk_hint(p):
                raise BadInput(f"disk full while writing {p}; nothing was written") from None
            raise BadInput(f"cannot write {p}: {first_line(exc)}") from None
        verify_image_file(tmp, sitk_img, p)
    return p


def verify_image_file(tmp: Path, written: sitk.Image, dest: Path | None = None) -> None:
    """Check that ``tmp`` holds the whole of ``written``: a complete gzip stream, a readable header with the
    same size, and (uncompressed single files) at least the voxel bytes.

    Raises:
        BadInput: naming ``dest`` and saying "disk full" when the disk has no space left.
    """
    dest = dest or tmp
    problem = None
    try:
        if tmp.stat().st_size == 0:
            problem = "0 bytes on disk"
        elif lower_name(tmp).endswith(".gz"):
            check_complete_gzip(tmp)
        if problem is None:
            reader = sitk.ImageFileReader()
            reader.SetFileName(str(tmp))
            reader.ReadImageInformation()
            if tuple(reader.GetSize()[:3]) != tuple(written.GetSize()):
                problem = f"size {reader.GetSize()} read back, {written.GetSize()} written"
        if problem is None:
            problem = _data_problem(tmp, written.GetNumberOfPixels() * written.GetSizeOfPixelComponent())
    except BadInput as exc:
        problem = str(exc).split(": ", 1)[-1]
    except RuntimeError as exc:
        problem = first_line(exc)
    if problem:
        raise BadInput(f"writing {dest} failed, the file is incomplete ({problem}){_disk_hint(dest, always=True)}; "
                       "nothing was written")


def _data_problem(p: Path, n_bytes: int) -> str | None:
    """Why the voxel data of a single-file NIfTI / NRRD / MetaImage ``p`` is incomplete, or None: fewer raw
    bytes than ``n_bytes``, a compressed NRRD stream that ends early, or a MetaImage shorter than its
    ``CompressedDataSize``."""
    import re
    import zlib

    name, size = lower_name(p), p.stat().st_size
    if name.endswith(".nii"):
        return None if size >= n_bytes else f"{size} bytes on disk, {n_bytes} voxel bytes written"
    if not name.endswith((".nrrd", ".mha")):
        return None
    with open(p, "rb") as fh:
        head = fh.read(65536)
    if name.endswith(".mha"):
        end = head.find(b"ElementDataFile")
        end = head.find(b"\n", end) + 1 if end >= 0 else 0
        m = re.search(rb"CompressedDataSize\s*=\s*(\d+)", head[:end])
        need = end + (int(m.group(1)) if m else n_bytes)
        return None if size >= need else f"{size} bytes on disk, {need} expected"
    end = head.find(b"\n\n") + 2
    if b"encoding: gzip" not in head[:end].lower() and b"encoding: gz" not in head[:end].lower():
        return None if size - end >= n_bytes else f"{size - end} data bytes on disk, {n_bytes} written"
    d = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        with open(p, "rb") as fh:
            fh.seek(end)
            for block in iter(lambda: fh.read(1 << 20), b""):
                while block and not d.eof:
                    d.decompress(block, 1 << 24)
                    block = d.unconsumed_tail
    except zlib.error as exc:
        return f"corrupt compressed data ({exc})"
    return None if d.eof else "compressed data ends early"


def _disk_hint(p: Path, always: bool = False) -> str:
    """``"; disk full"`` when the destination's file system has (almost) no space left, else ``"; disk full?"``
    when ``always`` (else "")."""
    try:
        free = shutil.disk_usage(p.parent if str(p.parent) else ".").free
    except OSError:
        free = None
    if free is not None and free < (1 << 20):
        return "; disk full"
    return "; disk full?" if always else ""
