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
from .names import IMAGE_SUFFIXES, first_line, format_name, is_dicom_file, lower_name

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
        img = sitk.ReadImage(str(p))
    except RuntimeError as exc:
        raise BadInput(f"{p}: not a readable image ({first_line(exc)})") from None
    if img.GetDimension() == 2 or (img.GetDimension() == 3 and img.GetSize()[2] == 1 and lower_name(p).endswith(".dcm")):
        # A single DICOM slice: read the whole series of its folder.
        if lower_name(p).endswith(".dcm") or is_dicom_file(p):
            return read_dicom_series(p.parent, series_uid, quiet=quiet)
        raise BadInput(f"{p}: a 2D image, expected a 3D volume")
    if img.GetDimension() == 4 and img.GetSize()[3] == 1:
        img = img[:, :, :, 0]
    if img.GetDimension() != 3:
        raise BadInput(f"{p}: a {img.GetDimension()}D image, expected a 3D volume")
    if img.GetNumberOfComponentsPerPixel() != 1:
        raise BadInput(f"{p}: a multi-component ({img.GetNumberOfComponentsPerPixel()}) image, expected a scalar volume")
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
            sitk.WriteImage(sitk_img, str(tmp), compress)
        except RuntimeError as exc:
            raise BadInput(f"cannot write {p}: {first_line(exc)}{_disk_hint(p)}") from None
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
        n_bytes = written.GetNumberOfPixels() * written.GetSizeOfPixelComponent()
        if problem is None and lower_name(tmp).endswith((".nii", ".mha", ".nrrd")) and not _compressed(tmp):
            if tmp.stat().st_size < n_bytes:
                problem = f"{tmp.stat().st_size} bytes on disk, {n_bytes} voxel bytes written"
    except BadInput as exc:
        problem = str(exc).split(": ", 1)[-1]
    except RuntimeError as exc:
        problem = first_line(exc)
    if problem:
        raise BadInput(f"writing {dest} failed, the file is incomplete ({problem}){_disk_hint(dest, always=True)}; "
                       "nothing was written")


def _compressed(p: Path) -> bool:
    """True for NRRD / MetaImage files whose header says the voxels are compressed."""
    if lower_name(p).endswith(".nii"):
        return False
    with open(p, "rb") as fh:
        head = fh.read(4096).lower()
    return b"encoding: gzip" in head or b"compresseddata = true" in head or b"encoding: gz" in head


def _disk_hint(p: Path, always: bool = False) -> str:
    """``"; disk full"`` when the destination's file system has (almost) no space left, else ``"; disk full?"``
    when ``always``."""
    try:
        free = shutil.disk_usage(p.parent if str(p.parent) else ".").free
    except OSError:
        free = None
    if free is not None and free < (1 << 20):
        return "; disk full"
    return "; disk full?" if always else ""
