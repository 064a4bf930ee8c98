"""DICOM Segmentation (SEG) export and import, built on highdicom.

* :func:`export_seg` writes a BINARY Segmentation Storage object referring to the CT series, one segment per
  CervixTL segment with its coded terminology (category / type from ``Resources/CervixTL.term.json`` or the
  segment's own slicerio-style entry), display colour and algorithm identification.
* :func:`read_seg` reads a SEG (binary, fractional or label-map) into a :class:`Segmentation`, with names,
  colours and terminology; with a ``reference`` grid (the CT) the masks are placed on that grid.

Arrays follow :mod:`cervixtl.image`: (z, y, x), LPS mm.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .. import __version__, structures
from ..atomic import atomic_path
from ..errors import BadInput
from ..image import Image, resample_to_reference
from ..segmentation import Segment, Segmentation
from .dicomfile import read_dataset

#: Fallback coded concepts when a segment has no terminology: SCT "Anatomical Structure" / "Tissue"
#: (DICOM PS3.16 CID 9580 / CID 7166).
DEFAULT_CATEGORY = ("SCT", "91723000", "Anatomical Structure")
DEFAULT_TYPE = ("SCT", "85756007", "Tissue")


def _coded(triple: Sequence[str]) -> Any:
    import highdicom as hd

    scheme, code, meaning = (str(t) for t in triple[:3])
    return hd.sr.CodedConcept(value=code, scheme_designator=scheme, meaning=meaning)


def _triple(entry: Any) -> tuple[str, str, str] | None:
    """A (scheme, code, meaning) triple from a slicerio-style entry (list or dict) or None."""
    if entry is None:
        return None
    if isinstance(entry, dict):
        vals = (entry.get("CodingSchemeDesignator") or entry.get("scheme"), entry.get("CodeValue") or entry.get("code"),
                entry.get("CodeMeaning") or entry.get("meaning"))
    else:
        vals = tuple(entry)[:3]
    if len(vals) != 3 or not all(vals):
        return None
    return (str(vals[0]), str(vals[1]), str(vals[2]))


def segment_codes(name: str, terminology: dict[str, Any] | None) -> tuple[tuple[str, str, str], tuple[str, str, str],
                                                                       tuple[str, str, str] | None]:
    """(category, type, type modifier or None) code triples of a segment: its own terminology, else the
    CervixTL entry of its canonical name, else Anatomical Structure / Tissue."""
    term = terminology or structures.terminology(name) or {}
    cat = _triple(term.get("category")) or DEFAULT_CATEGORY
    typ = _triple(term.get("type")) or DEFAULT_TYPE
    mod = _triple(term.get("typeModifier"))
    return cat, typ, mod


def export_seg(ct_dir: str | os.PathLike, seg: Segmentation, out: str | os.PathLike, *,
               names: Iterable[str] | None = None, series_description: str = "CervixTL segmentation",
               algorithm_type: str = "SEMIAUTOMATIC") -> tuple[Path, dict[str, Any]]:
    """Write ``seg`` (on the CT grid) as a DICOM SEG file referring to the CT in ``ct_dir`` (atomically).

    Empty segments cannot be encoded in a SEG: they are left out and reported.

    Args:
        ct_dir: the CT DICOM folder the segmentation was drawn on.
        seg: segmentation on the CT grid.
        names: segments to export (default all).
        algorithm_type: ``SEMIAUTOMATIC`` (AI proposal reviewed by a person), ``AUTOMATIC`` or ``MANUAL``.

    Returns:
        (path, report with the exported segments, their codes and warnings).

    Raises:
        GeometryMismatch: ``seg`` is not on the CT grid.
        BadInput: nothing to export, bad algorithm type.
    """
    import pydicom

    from .ct_series import read_ct_series

    algorithm_type = algorithm_type.upper()
    if algorithm_type not in ("SEMIAUTOMATIC", "AUTOMATIC", "MANUAL"):
        raise BadInput(f"algorithm type {algorithm_type!r}: use SEMIAUTOMATIC, AUTOMATIC or MANUAL")
    cts = read_ct_series(ct_dir)
    cts.image.require_same_geometry(seg.grid, "segmentation")
    segments = seg.segments if names is None else [seg[n] for n in names]
    report: dict[str, Any] = {"segments": [], "warnings": []}
    kept = _non_empty(segments, report["warnings"])
    sources = [pydicom.dcmread(f) for f in cts.image.meta["files"]]
    from .uids import ensure_uids

    report["warnings"] += ensure_uids(sources)  # highdicom fails on empty UIDs with "KeyError: ''"
    for src in sources:  # an empty Specific Character Set means the default repertoire: say so explicitly
        if "SpecificCharacterSet" in src and not src.SpecificCharacterSet:
            del src.SpecificCharacterSet
    descriptions = _segment_descriptions(kept, algorithm_type, report["segments"])
    pixels = np.stack([s.mask for s in kept], axis=-1).astype(np.uint8)  # (frames=z, rows=y, cols=x, segments)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*person name.*", category=UserWarning)
        try:
            dcm = _build(sources, pixels, descriptions, series_description)
        except (ValueError, TypeError, AttributeError) as exc:
            raise BadInput(f"{ct_dir}: cannot build a DICOM SEG on this CT series ({str(exc)[:160]})") from None
    out = Path(out)
    with atomic_path(out) as tmp:
        dcm.save_as(tmp)
    report["file"] = str(out)
    return out, report


def _non_empty(segments: Sequence[Segment], warnings: list[str]) -> list[Segment]:
    """The segments with at least one voxel (a DICOM SEG cannot hold an empty one; each is reported)."""
    kept = []
    for s in segments:
        if s.voxels == 0:
            warnings.append(f"segment {s.name!r} is empty: a DICOM SEG cannot hold it, left out")
        else:
            kept.append(s)
    if not kept:
        raise BadInput("no non-empty segment to export as DICOM SEG")
    return kept


def _segment_descriptions(kept: Sequence[Segment], algorithm_type: str, report: list[dict[str, Any]]) -> list[Any]:
    """highdicom Segment Descriptions (numbered from 1, coded terminology, CIELab colour); one report entry each."""
    import highdicom as hd
    from pydicom.sr.codedict import codes

    algo = None
    if algorithm_type != "MANUAL":
        algo = hd.AlgorithmIdentificationSequence(name="CervixTL", family=codes.cid7162.ArtificialIntelligence,
                                                  version=str(__version__))
    descriptions = []
    for number, s in enumerate(kept, start=1):
        cat, typ, mod = segment_codes(s.name, s.terminology)
        descriptions.append(hd.seg.SegmentDescription(
            segment_number=number, segment_label=s.name[:64], segmented_property_category=_coded(cat),
            segmented_property_type=_coded(typ), algorithm_type=algorithm_type, algorithm_identification=algo,
            tracking_id=s.name[:64], tracking_uid=hd.UID(),
            display_color=hd.color.CIELabColor.from_rgb(*[int(round(c * 255)) for c in s.color])))
        if mod is not None:  # laterality etc. qualifies the type item
            descriptions[-1].SegmentedPropertyTypeCodeSequence[0].SegmentedPropertyTypeModifierCodeSequence = [_coded(mod)]
        report.append({"number": number, "name": s.name, "voxels": s.voxels,
                       "category": list(cat), "type": list(typ),
                       "type_modifier": list(mod) if mod else None})
    return descriptions


def _build(sources: list, pixels: np.ndarray, descriptions: list, series_description: str) -> Any:
    """The highdicom BINARY Segmentation of ``pixels`` (frames = z, rows = y, columns = x, segments)."""
    import highdicom as hd

    return hd.seg.Segmentation(
        source_images=sources, pixel_array=pixels, segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions, series_instance_uid=hd.UID(), series_number=9002,
        sop_instance_uid=hd.UID(), instance_number=1, manufacturer="CervixTL", manufacturer_model_name="cervixtl",
        software_versions=str(__version__), device_serial_number="0",
        series_description=series_description[:64])


def _rgb(desc: Any) -> tuple[float, float, float] | None:
    import highdicom as hd

    lab = getattr(desc, "RecommendedDisplayCIELabValue", None)
    if lab is None:
        return None
    try:
        r, g, b = hd.color.CIELabColor.from_dicom_value(tuple(int(v) for v in lab)).to_rgb(clip=True)
    except (ValueError, TypeError):
        return None
    return (r / 255.0, g / 255.0, b / 255.0)


def _concept(c: Any) -> list[str]:
    return [str(c.scheme_designator), str(c.value), str(c.meaning)]


def read_seg(path: str | os.PathLike, reference: Image | None = None) -> Segmentation:
    """Read a DICOM SEG file into a :class:`Segmentation`.

    Args:
        path: the SEG file.
        reference: optional grid (e.g. the CT); the masks are resampled (nearest neighbour, physical positions
            kept) onto it when the SEG's own grid differs (e.g. it covers only some slices).

    Raises:
        BadInput: not a DICOM SEG, or its frames do not form a regular volume.
    """
    import highdicom as hd

    p = Path(path)
    ds = read_dataset(p, "DICOM SEG")
    if str(getattr(ds, "Modality", "")) != "SEG":
        raise BadInput(f"{p}: not a DICOM Segmentation (Modality {getattr(ds, 'Modality', 'missing')})")
    try:
        dseg = hd.seg.Segmentation.from_dataset(ds, copy=False)
        vol = dseg.get_volume(combine_segments=False, dtype=np.uint8)
    except (ValueError, RuntimeError, AttributeError, KeyError, TypeError, IndexError) as exc:
        raise BadInput(f"{p}: cannot place the SEG frames on a regular 3D grid ({str(exc)[:160]})") from None
    a = np.asarray(vol.affine, dtype=float)
    cols = a[:3, [2, 1, 0]]  # index axes i (columns), j (rows), k (slices)
    spacing = np.linalg.norm(cols, axis=0)
    direction = cols / spacing
    arr = np.asarray(vol.array)
    if arr.ndim == 3:
        arr = arr[..., None]
    grid = Image(np.zeros(arr.shape[:3], np.uint8), tuple(spacing), tuple(a[:3, 3]), direction,
                 {"source_format": "DICOM SEG"})
    numbers = list(dseg.get_segment_numbers())
    out_grid = reference if reference is not None else grid
    result = Segmentation(out_grid.with_array(np.zeros(out_grid.array.shape, np.uint8)))
    result.grid.meta = {"source_format": "DICOM SEG"}
    is_labelmap = str(getattr(ds, "SegmentationType", "")) == "LABELMAP"
    for idx, number in enumerate(numbers):
        if is_labelmap and number == 0:
            continue  # the background of a label-map SEG
        desc = dseg.get_segment_description(number)
        mask = arr[..., idx] > 0
        if reference is not None and not reference.same_geometry(grid):
            mask = resample_to_reference(grid.with_array(mask), reference, label=True).array.astype(bool)
        term: dict[str, Any] = {"category": _concept(desc.segmented_property_category),
                                "type": _concept(desc.segmented_property_type)}
        type_item = desc.SegmentedPropertyTypeCodeSequence[0]
        if "SegmentedPropertyTypeModifierCodeSequence" in type_item:
            m = type_item.SegmentedPropertyTypeModifierCodeSequence[0]
            term["typeModifier"] = [str(m.CodingSchemeDesignator), str(m.CodeValue), str(m.CodeMeaning)]
        name = str(desc.segment_label or f"Segment_{number}")
        s = result.set(name, mask, color=_rgb(desc), terminology=term)
        s.label = int(number)
    return result
