"""DICOM image series: finding the series in a folder, sorting slices, checking their spacing, reading.

Slices are sorted by position along the slice normal (ImagePositionPatient . normal), not by file name. A
series whose slice steps are not all equal (missing slices, or mixed 2.0 / 2.8 mm steps) is refused: ITK
would read it with one mean spacing and every contour would sit off the slice it belongs to.
"""

from __future__ import annotations

import os
import warnings
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from ..errors import BadInput
from ..image import Image
from .checks import check_finite
from .names import first_line

__all__ = ["SLICE_STEP_TOLERANCE", "list_dicom_series", "read_dicom_series"]

#: Largest accepted difference between one slice step and the usual (median) step: this fraction of the step
#: (plus 0.01 mm for rounding in the headers).
SLICE_STEP_TOLERANCE = 0.02

_TAGS = ["SeriesInstanceUID", "Modality", "SeriesDescription", "Rows", "Columns", "ImageOrientationPatient",
         "SOPClassUID"]


def list_dicom_series(folder: str | os.PathLike) -> list[dict[str, Any]]:
    """Describe every DICOM image series in ``folder`` (recursively): UID, modality, description, number of
    files, in-plane size. Only non-identifying header fields are read."""
    import pydicom

    folder = Path(folder)
    groups: dict[str, list[Path]] = defaultdict(list)
    info: dict[str, dict[str, Any]] = {}
    for f in sorted(folder.rglob("*")):
        if not f.is_file():
            continue
        try:
            ds = pydicom.dcmread(f, stop_before_pixels=True, force=False, specific_tags=_TAGS)
        except Exception:  # noqa: BLE001 - anything that is not DICOM is skipped
            continue
        if "Rows" not in ds:
            continue  # RTSTRUCT, RTPLAN, ... have no pixel rows
        uid = str(getattr(ds, "SeriesInstanceUID", "") or "")
        key = uid or f"no-series-uid:{f.parent}"  # de-identified data may blank the UID: group by folder
        groups[key].append(f)
        info.setdefault(key, {
            "series_uid": uid,
            "modality": str(getattr(ds, "Modality", "") or ""),
            "description": str(getattr(ds, "SeriesDescription", "") or ""),
            "rows": int(ds.Rows), "columns": int(getattr(ds, "Columns", 0) or 0),
        })
    out = []
    for uid, files in groups.items():
        d = dict(info[uid])
        d["files"] = files
        d["n_files"] = len(files)
        out.append(d)
    out.sort(key=lambda d: (-(d["modality"] == "CT"), -d["n_files"]))
    return out


def _choose_series(folder: Path, series: list[dict[str, Any]], series_uid: str | None) -> tuple[dict[str, Any], str]:
    if series_uid:
        chosen = [s for s in series if s["series_uid"] == series_uid]
        if not chosen:
            raise BadInput(f"{folder}: no series with UID {series_uid} (found {len(series)} series)")
        return chosen[0], "selected by --series"
    cts = [s for s in series if s["modality"] == "CT"]
    s = (cts or series)[0]
    why = ("the only series" if len(series) == 1 else
           f"largest CT series of {len(series)} ({s['n_files']} slices)" if cts else
           f"largest series of {len(series)} (no CT series)")
    return s, why


def read_dicom_series(folder: str | os.PathLike, series_uid: str | None = None, *, quiet: bool = False) -> Image:
    """Read one DICOM image series from a folder as an LPS :class:`Image` in Hounsfield units.

    With several series, ``series_uid`` picks one; otherwise the CT series with the most slices is read,
    ``meta["series_choice"]`` says which and why, and (unless ``quiet``) one note on stderr says so.
    Rescale slope/intercept are applied (HU).

    Raises:
        BadInput: no DICOM image series, unknown ``series_uid``, slices missing / unevenly spaced, NaN voxels.
    """
    folder = Path(folder)
    series = list_dicom_series(folder)
    if not series:
        raise BadInput(f"{folder}: no DICOM image series found")
    s, why = _choose_series(folder, series, series_uid)
    files = _sort_by_position([str(f) for f in s["files"]])
    check_slice_spacing(files, folder)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(files)
    try:
        img = reader.Execute()
    except RuntimeError as exc:
        raise BadInput(f"{folder}: cannot read DICOM series ({first_line(exc)})") from None
    if img.GetDimension() != 3 or img.GetNumberOfComponentsPerPixel() != 1:
        raise BadInput(f"{folder}: DICOM series {s['series_uid'] or '(no UID)'} is not a 3D scalar volume "
                       f"({img.GetDimension()}D, {img.GetNumberOfComponentsPerPixel()} components)")
    if len(series) > 1 and not series_uid and not quiet:
        _note(f"{folder} holds {len(series)} image series; using {s['modality'] or 'image'} series "
              f"{s['series_uid'] or '(no UID)'} '{s['description']}' ({why}); choose another with --series")
    meta = {
        "source_format": "DICOM",
        "modality": s["modality"],
        "series_uid": s["series_uid"],
        "series_description": s["description"],
        "series_choice": why,
        "n_series": len(series),
        "files": [str(f) for f in files],
    }
    out = Image.from_sitk(img, meta)
    check_finite(out, str(folder))
    return out


def _note(text: str) -> None:
    """A console note (the CLI prints warnings as one ``cervixtl: warning:`` line; callers that need quiet
    stderr, such as ``--progress json``, silence warnings)."""
    warnings.warn(text, UserWarning, stacklevel=3)


def _positions(files: list[str]) -> list[tuple[float, str]] | None:
    """(position along the slice normal in mm, file) per file; None when a file lacks the geometry tags."""
    import pydicom

    keyed = []
    for f in files:
        ds = pydicom.dcmread(f, stop_before_pixels=True,
                             specific_tags=["ImagePositionPatient", "ImageOrientationPatient"])
        ipp = getattr(ds, "ImagePositionPatient", None)
        iop = getattr(ds, "ImageOrientationPatient", None)
        if ipp is None or iop is None:
            return None
        normal = np.cross(np.asarray(iop[:3], float), np.asarray(iop[3:], float))
        keyed.append((float(np.dot(normal, np.asarray(ipp, float))), f))
    return keyed


def _sort_by_position(files: list[str]) -> list[str]:
    keyed = _positions(files)
    if keyed is None:
        return files
    keyed.sort()
    return [f for _, f in keyed]


def check_slice_spacing(files: list[str], folder: Path) -> None:
    """Refuse a series (files sorted by position) with duplicate slices, missing slices (a step over 1.5
    times the usual one) or uneven slice steps (any step off the median step by more than
    :data:`SLICE_STEP_TOLERANCE`)."""
    if len(files) < 3:
        return
    keyed = _positions(files)
    if keyed is None:
        return
    steps = np.abs(np.diff(np.asarray([p for p, _ in keyed])))
    if np.any(steps < 1e-3):
        raise BadInput(f"{folder}: two slices at the same position (duplicate slices in the series)")
    med = float(np.median(steps))
    gaps = np.where(steps > 1.5 * med)[0]
    if len(gaps):
        g = int(gaps[0])
        raise BadInput(f"{folder}: missing slices in the DICOM series: gap of {steps[g]:.2f} mm after slice "
                       f"{g + 1} of {len(files)} (usual step {med:.2f} mm)")
    off = np.abs(steps - med) > SLICE_STEP_TOLERANCE * med + 0.01
    if np.any(off):
        g = int(np.flatnonzero(off)[0])
        raise BadInput(f"{folder}: uneven slice spacing in the DICOM series: steps from {steps.min():.2f} to "
                       f"{steps.max():.2f} mm (step {steps[g]:.2f} mm after slice {g + 1} of {len(files)}, usual "
                       f"{med:.2f} mm); contours would be misplaced. Resample the series to even slices first")
