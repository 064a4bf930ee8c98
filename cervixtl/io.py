"""Reading and writing CTs, label maps and segmentations.

Supported inputs: a DICOM series folder (the CT series is picked; see :func:`read_dicom_series`), NIfTI
(``.nii``, ``.nii.gz``), NRRD (``.nrrd``, ``.nhdr``), MetaImage (``.mha``, ``.mhd``). Segmentations: Slicer
``.seg.nrrd`` (via ``slicerio``, overlapping segments kept in layers) and multi-label NIfTI/NRRD/MHA with a
sidecar ``<stem>.json`` carrying the label names and colours.

All images come back as :class:`~cervixtl.image.Image` in SimpleITK's (z, y, x) array order with LPS geometry;
every writer is atomic (see :mod:`cervixtl.fileio`).
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import SimpleITK as sitk

from . import structures
from .errors import BadInput
from .fileio import atomic_path, write_json_atomic
from .image import Image, ijk_to_lps_matrix
from .segmentation import Segment, Segmentation

IMAGE_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")


def _lower_name(path: Path) -> str:
    return path.name.lower()


def is_seg_nrrd(path: str | os.PathLike) -> bool:
    """True for a Slicer segmentation file name (``*.seg.nrrd``)."""
    return _lower_name(Path(path)).endswith(".seg.nrrd")


def stem(path: str | os.PathLike) -> str:
    """File name without its image extension (``ct.nii.gz`` -> ``ct``, ``x.seg.nrrd`` -> ``x``)."""
    name = Path(path).name
    for suf in (".seg.nrrd",) + IMAGE_SUFFIXES + (".dcm",):
        if name.lower().endswith(suf):
            return name[: -len(suf)]
    return Path(name).stem


def sidecar_path(path: str | os.PathLike) -> Path:
    """The JSON sidecar of a label-map file: ``labels.nii.gz`` -> ``labels.json``."""
    p = Path(path)
    return p.with_name(stem(p) + ".json")


# ============================================================================ images
def read_image(path: str | os.PathLike, series_uid: str | None = None) -> Image:
    """Read a 3D image from a file or a DICOM series folder.

    Args:
        path: image file (NIfTI, NRRD, MHA/MHD, a single DICOM file) or a folder of DICOM files.
        series_uid: for a DICOM folder with several series, the SeriesInstanceUID to read.

    Raises:
        BadInput: the path does not exist, is not an image, or is not 3D.
    """
    p = Path(path)
    if not p.exists():
        raise BadInput(f"{p}: no such file or folder")
    if p.is_dir():
        return read_dicom_series(p, series_uid)
    if p.stat().st_size == 0:
        raise BadInput(f"{p}: empty file, not an image")
    try:
        img = sitk.ReadImage(str(p))
    except RuntimeError as exc:
        raise BadInput(f"{p}: not a readable image ({_first_line(exc)})") from None
    if img.GetDimension() == 2 or (img.GetDimension() == 3 and img.GetSize()[2] == 1 and _lower_name(p).endswith(".dcm")):
        # A single DICOM slice: read the whole series of its folder.
        if _lower_name(p).endswith(".dcm") or _is_dicom(p):
            return read_dicom_series(p.parent, series_uid)
        raise BadInput(f"{p}: a 2D image, expected a 3D volume")
    if img.GetDimension() == 4 and img.GetSize()[3] == 1:
        img = img[:, :, :, 0]
    if img.GetDimension() != 3:
        raise BadInput(f"{p}: a {img.GetDimension()}D image, expected a 3D volume")
    if img.GetNumberOfComponentsPerPixel() != 1:
        raise BadInput(f"{p}: a multi-component ({img.GetNumberOfComponentsPerPixel()}) image, expected a scalar volume")
    meta: dict[str, Any] = {"source_format": _format_name(p)}
    return Image.from_sitk(img, meta)


def _format_name(p: Path) -> str:
    n = _lower_name(p)
    for suf, name in ((".nii.gz", "NIfTI"), (".nii", "NIfTI"), (".nrrd", "NRRD"), (".nhdr", "NRRD"),
                      (".mha", "MetaImage"), (".mhd", "MetaImage"), (".dcm", "DICOM")):
        if n.endswith(suf):
            return name
    return "unknown"


def _is_dicom(p: Path) -> bool:
    try:
        with open(p, "rb") as fh:
            fh.seek(128)
            return fh.read(4) == b"DICM"
    except OSError:
        return False


def _first_line(exc: BaseException) -> str:
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    # ITK messages put the useful sentence last ("...: Could not create IO object for reading file ...").
    useful = [ln for ln in lines if "Could not" in ln or "Unable" in ln or "error" in ln.lower()]
    text = (useful or lines or ["unknown error"])[-1]
    return text[:200]


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
            ds = pydicom.dcmread(f, stop_before_pixels=True, force=False,
                                 specific_tags=["SeriesInstanceUID", "Modality", "SeriesDescription", "Rows",
                                                "Columns", "ImageOrientationPatient", "SOPClassUID"])
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


def read_dicom_series(folder: str | os.PathLike, series_uid: str | None = None) -> Image:
    """Read one DICOM image series from a folder as an LPS :class:`Image` in Hounsfield units.

    With several series, ``series_uid`` picks one; otherwise the CT series with the most slices is read and
    ``meta["series_choice"]`` says which and why. Slices are sorted by position along the slice normal
    (ImagePositionPatient), not by file name; rescale slope/intercept are applied (HU).

    Raises:
        BadInput: no DICOM image series, unknown ``series_uid``, or slices missing / unevenly spaced.
    """
    folder = Path(folder)
    series = list_dicom_series(folder)
    if not series:
        raise BadInput(f"{folder}: no DICOM image series found")
    if series_uid:
        chosen = [s for s in series if s["series_uid"] == series_uid]
        if not chosen:
            raise BadInput(f"{folder}: no series with UID {series_uid} (found {len(series)} series)")
        s = chosen[0]
        why = "selected by --series"
    else:
        cts = [s for s in series if s["modality"] == "CT"]
        s = (cts or series)[0]
        why = ("the only series" if len(series) == 1 else
               f"largest CT series of {len(series)} ({s['n_files']} slices)" if cts else
               f"largest series of {len(series)} (no CT series)")
    reader = sitk.ImageSeriesReader()
    files = _sort_by_position([str(f) for f in s["files"]])
    _check_slice_spacing(files, folder)
    reader.SetFileNames(files)
    try:
        img = reader.Execute()
    except RuntimeError as exc:
        raise BadInput(f"{folder}: cannot read DICOM series ({_first_line(exc)})") from None
    if img.GetDimension() != 3 or img.GetNumberOfComponentsPerPixel() != 1:
        raise BadInput(f"{folder}: DICOM series {s['series_uid'] or '(no UID)'} is not a 3D scalar volume "
                       f"({img.GetDimension()}D, {img.GetNumberOfComponentsPerPixel()} components)")
    meta = {
        "source_format": "DICOM",
        "modality": s["modality"],
        "series_uid": s["series_uid"],
        "series_description": s["description"],
        "series_choice": why,
        "n_series": len(series),
        "files": [str(f) for f in files],
    }
    return Image.from_sitk(img, meta)


def _sort_by_position(files: list[str]) -> list[str]:
    import pydicom

    keyed = []
    for f in files:
        ds = pydicom.dcmread(f, stop_before_pixels=True,
                             specific_tags=["ImagePositionPatient", "ImageOrientationPatient", "InstanceNumber"])
        ipp = getattr(ds, "ImagePositionPatient", None)
        iop = getattr(ds, "ImageOrientationPatient", None)
        if ipp is None or iop is None:
            return files
        normal = np.cross(np.asarray(iop[:3], float), np.asarray(iop[3:], float))
        keyed.append((float(np.dot(normal, np.asarray(ipp, float))), f))
    keyed.sort()
    return [f for _, f in keyed]


def _check_slice_spacing(files: list[str], folder: Path) -> None:
    """Refuse series with missing slices (a gap larger than 1.5 times the usual slice step)."""
    import pydicom

    if len(files) < 3:
        return
    pos = []
    for f in files:
        ds = pydicom.dcmread(f, stop_before_pixels=True, specific_tags=["ImagePositionPatient", "ImageOrientationPatient"])
        if getattr(ds, "ImagePositionPatient", None) is None or getattr(ds, "ImageOrientationPatient", None) is None:
            return
        iop = np.asarray(ds.ImageOrientationPatient, float)
        pos.append(float(np.dot(np.cross(iop[:3], iop[3:]), np.asarray(ds.ImagePositionPatient, float))))
    steps = np.diff(np.asarray(pos))
    if np.any(np.abs(steps) < 1e-3):
        raise BadInput(f"{folder}: two slices at the same position (duplicate slices in the series)")
    med = float(np.median(np.abs(steps)))
    gaps = np.where(np.abs(steps) > 1.5 * med)[0]
    if len(gaps):
        g = int(gaps[0])
        raise BadInput(f"{folder}: missing slices in the DICOM series: gap of {abs(steps[g]):.2f} mm after slice "
                       f"{g + 1} of {len(files)} (usual step {med:.2f} mm)")


def read_ct(path: str | os.PathLike, series_uid: str | None = None) -> Image:
    """Read a planning CT and check that it looks like a CT in Hounsfield units (see :func:`check_ct`)."""
    img = read_image(path, series_uid)
    check_ct(img, str(path))
    return img


def check_ct(img: Image, name: str = "image") -> None:
    """Refuse images that are not CTs in HU: another modality in the header, a mask (two values), or
    intensities without air (minimum above -500 HU, as in MR or an already normalised image).

    Raises:
        BadInput: with the reason.
    """
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


def write_image(img: Image, path: str | os.PathLike, compress: bool = True) -> Path:
    """Write an image (NIfTI, NRRD, MHA by extension) atomically; returns the path."""
    p = Path(path)
    if not any(_lower_name(p).endswith(s) for s in IMAGE_SUFFIXES):
        raise BadInput(f"{p}: unknown image extension (use one of {', '.join(IMAGE_SUFFIXES)})")
    with atomic_path(p) as tmp:
        sitk.WriteImage(img.to_sitk(), str(tmp), compress)
    return p


# ============================================================================ segmentations
def read_segmentation(path: str | os.PathLike, reference: Image | None = None,
                      names: Mapping[int, str] | None = None) -> Segmentation:
    """Read a segmentation: ``.seg.nrrd`` (segment names, colours, terminology, overlapping layers) or a
    multi-label image (names from ``names``, the sidecar JSON, or ``Label_<n>``).

    Args:
        path: segmentation file.
        reference: when given, the segmentation must be on this grid (else :class:`GeometryMismatch`).
        names: label value -> name, overriding the sidecar.
    """
    p = Path(path)
    if not p.exists():
        raise BadInput(f"{p}: no such file")
    if is_seg_nrrd(p):
        seg = _read_seg_nrrd(p)
    else:
        lab = read_image(p)
        side = read_label_sidecar(p)
        label_names = dict(names or side.get("names", {}))
        colors = side.get("colors", {})
        seg = Segmentation.from_labelmap(lab, label_names, colors)
    if reference is not None:
        reference.require_same_geometry(seg.grid, f"segmentation {p.name}")
    return seg


def read_label_sidecar(p: str | os.PathLike) -> dict[str, Any]:
    """Label names and colours from the JSON sidecar of a label-map file ({} when there is none):
    ``{"names": {value: name}, "colors": {value: (r, g, b)}}``."""
    p = Path(p)
    sc = sidecar_path(p)
    if not sc.exists():
        return {}
    try:
        data = json.loads(sc.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise BadInput(f"{sc}: unreadable label sidecar ({exc})") from None
    names: dict[int, str] = {}
    colors: dict[int, tuple[float, float, float]] = {}
    for entry in data.get("labels", []):
        v = int(entry["value"])
        names[v] = str(entry["name"])
        if "color" in entry:
            colors[v] = tuple(float(c) for c in entry["color"])  # type: ignore[assignment]
    return {"names": names, "colors": colors}


def _read_seg_nrrd(p: Path) -> Segmentation:
    import slicerio

    try:
        data = slicerio.read_segmentation(str(p))
    except Exception as exc:  # noqa: BLE001 - slicerio raises plain exceptions on bad files
        raise BadInput(f"{p}: not a readable .seg.nrrd ({_first_line(exc)})") from None
    voxels = np.asarray(data["voxels"])
    ijk_to_lps = np.asarray(data["ijkToLPS"], dtype=float)
    spatial = voxels.shape[-3:]  # (i, j, k)
    m = ijk_to_lps[:3, :3]
    spacing = np.linalg.norm(m, axis=0)
    direction = m / spacing
    origin = ijk_to_lps[:3, 3]
    grid = Image(np.broadcast_to(np.uint8(0), spatial[::-1]), tuple(spacing), tuple(origin), direction,
                 {"source_format": "seg.nrrd"})
    seg = Segmentation(grid)
    for i, s in enumerate(data.get("segments", [])):
        mask_ijk = slicerio.segment_mask(data, s)
        mask = np.ascontiguousarray(np.transpose(mask_ijk, (2, 1, 0)))
        color = tuple(float(c) for c in s.get("color", structures.color_of(s.get("name", ""), i)))
        seg.segments.append(Segment(name=str(s.get("name", s.get("id", f"Segment_{i + 1}"))), mask=mask,
                                    color=color,  # type: ignore[arg-type]
                                    label=int(s.get("labelValue", i + 1)), terminology=s.get("terminology")))
    # Labels must be unique for a multi-label export: renumber when layers reuse values.
    if len({s.label for s in seg.segments}) != len(seg.segments):
        for i, s in enumerate(seg.segments):
            s.label = i + 1
    return seg


def write_segmentation(seg: Segmentation, path: str | os.PathLike) -> Path:
    """Write a segmentation atomically.

    * ``.seg.nrrd``: Slicer segmentation with names, colours, terminology; overlapping segments go to extra
      layers, so nothing is lost.
    * ``.nii.gz`` / ``.nii`` / ``.nrrd`` / ``.mha``: a multi-label map plus a sidecar ``<stem>.json`` with label
      values, names and colours. Overlaps are resolved by painting larger segments first (a nested GTV stays
      visible inside CTV/PTV); the sidecar lists the overlapping pairs so a reader knows.
    """
    p = Path(path)
    if is_seg_nrrd(p):
        return _write_seg_nrrd(seg, p)
    lab = seg.to_labelmap()
    write_image(lab, p)
    side = {
        "format": "cervixtl-labelmap-1",
        "labels": [{"value": s.label, "name": s.name, "color": [round(c, 4) for c in s.color],
                    "voxels": s.voxels,
                    "volume_ml": round(s.voxels * seg.grid.voxel_volume_mm3 / 1000.0, 3)} for s in seg.segments],
        "overlaps_resolved": "larger segments painted first" if seg.overlapping() else "none",
        "axis_order": "image file (LPS world coordinates)",
    }
    write_json_atomic(sidecar_path(p), side)
    return p


def _seg_layers(seg: Segmentation) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Pack segments into as few uint8 layers as overlaps allow, as ``slicerio.add_segment`` does (first layer
    where the segment overlaps nothing; label = 1 + labels already in that layer), but checking overlaps only
    inside each segment's bounding box and building the (layer, i, j, k) array without copies: ~15x faster
    on a 512 x 512 x 160 CT. Returns (voxels (i, j, k) or (layer, i, j, k), slicerio segment entries)."""
    nz, ny, nx = seg.grid.array.shape
    layers: list[np.ndarray] = []
    counts: list[int] = []
    entries: list[dict[str, Any]] = []
    for s in seg.segments:
        m = np.asarray(s.mask, dtype=bool)
        idx = [np.flatnonzero(m.any(axis=a)) for a in ((1, 2), (0, 2), (0, 1))]  # z, y, x
        box = tuple(slice(int(i[0]), int(i[-1]) + 1) for i in idx) if m.any() else None
        for li, lay in enumerate(layers):
            if counts[li] < 255 and (box is None or not np.any(lay[box][m[box]])):
                break
        else:
            layers.append(np.zeros((nz, ny, nx), dtype=np.uint8))
            counts.append(0)
            li = len(layers) - 1
        counts[li] += 1
        if box is not None:
            layers[li][box][m[box]] = counts[li]
        extent = ([int(idx[2][0]), int(idx[2][-1]), int(idx[1][0]), int(idx[1][-1]), int(idx[0][0]), int(idx[0][-1])]
                  if box is not None else [0, -1, 0, -1, 0, -1])
        entry: dict[str, Any] = {"id": s.name, "name": s.name, "color": [float(c) for c in s.color],
                                 "labelValue": counts[li], "layer": li, "extent": extent}
        if s.terminology:
            entry["terminology"] = s.terminology
        entries.append(entry)
    if len(layers) <= 1:
        voxels = (layers[0] if layers else np.zeros((nz, ny, nx), dtype=np.uint8)).T  # (i, j, k) view
    else:
        voxels = np.stack(layers, axis=-1).T  # (layer, i, j, k) view, contiguous in NRRD (Fortran) order
    return voxels, entries


def _write_seg_nrrd(seg: Segmentation, p: Path) -> Path:
    import slicerio

    voxels, entries = _seg_layers(seg)
    data = {"voxels": voxels, "ijkToLPS": ijk_to_lps_matrix(seg.grid), "segments": entries,
            "containedRepresentationNames": ["Binary labelmap"]}
    with atomic_path(p) as tmp:
        slicerio.write_segmentation(str(tmp), data)
    return p


def write_mask(mask: Image, path: str | os.PathLike) -> Path:
    """Write a binary mask as a uint8 image (0/1), atomically."""
    return write_image(mask.with_array(np.asarray(mask.array, dtype=bool).astype(np.uint8)), path)


def read_mask(path: str | os.PathLike, label: int | None = None, reference: Image | None = None) -> Image:
    """Read one binary mask: a non-zero mask, or label ``label`` of a multi-label map / ``.seg.nrrd``.

    Raises:
        BadInput: the file has several labels and ``label`` was not given, or the label is absent.
    """
    p = Path(path)
    if is_seg_nrrd(p):
        seg = _read_seg_nrrd(p)
        if label is None:
            if len(seg.segments) != 1:
                raise BadInput(f"{p}: {len(seg.segments)} segments ({', '.join(seg.names)}); choose one with --label")
            s = seg.segments[0]
        else:
            cand = [s for s in seg.segments if s.label == label]
            if not cand:
                raise BadInput(f"{p}: no segment with label {label}")
            s = cand[0]
        out = seg.grid.with_array(s.mask)
    else:
        img = read_image(p)
        arr = img.array
        values = np.unique(arr)
        nonzero = values[values != 0]
        if label is None:
            if len(nonzero) > 1:
                raise BadInput(f"{p}: {len(nonzero)} labels ({', '.join(str(int(v)) for v in nonzero[:10])}); "
                               "choose one with --label")
            out = img.with_array(arr != 0)
        else:
            if label not in nonzero:
                raise BadInput(f"{p}: label {label} not present (labels: {', '.join(str(int(v)) for v in nonzero[:10]) or 'none'})")
            out = img.with_array(arr == label)
    if reference is not None:
        reference.require_same_geometry(out, f"mask {p.name}")
    return out
