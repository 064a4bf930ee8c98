"""MONAI Auto3DSeg SegResNet models as distributed by SlicerMONAIAuto3DSeg (the "TS2" whole-body, abdominal
organs, ... models), read the way that extension's inference script reads them.

A model folder (what the distributed zip unpacks to, at its top or in one sub-folder) holds:

* ``model.pt``: a torch pickle ``{"state_dict", "config", "epoch", "best_metric", ...}`` written by Auto3DSeg's
  SegResNet trainer. It is read with ``torch.load(weights_only=True)`` and only the numpy scalar/array/dtype
  globals of :data:`~cervixtl.models.sources.nnunet.NUMPY_GLOBALS` allowed; anything else is refused.
* ``labels.csv``: ``LabelValue``, ``Name`` and the DICOM codes of each label (segmented property category,
  type, modifier, anatomic region); the label value is the output channel (softmax argmax).

From ``config`` (what the script reads):

* ``network``: ``_target_`` must be ``SegResNetDS`` (or ``SegResNet``), built with MONAI's own class from an
  allow-list of literal arguments (``INSTANCE_NVFUSER`` norm -> ``INSTANCE``, as MONAI does without apex);
* ``orientation_ras`` -> card ``orientation`` ``RAS`` (else ``LPS``, the stored order of an axial DICOM CT the
  script is given as NRRD); MONAI arrays are channel-first (x, y, z) -> ``axis_order`` ``xyz``;
* ``crop_foreground`` (default true) -> card ``crop_foreground``: voxels > 0 HU, 10-voxel margin, box taken
  on the reoriented CT (``box_grid`` ``model``), as Auto3DSeg's training and validation transforms and the
  script before its multi-modal rewrite do. The current script takes the box on the image as loaded and
  applies it after reorientation: for a CT stored LPS this mirrors the box in x and y and can cut body off
  when the body is off-centre in the field of view; ``box_grid`` ``input`` reproduces that exactly;
* ``resample_resolution`` -> ``spacing_mm`` (x, y, z) with ``spacing_tolerance`` [0.75, 1.25] (MONAI
  ``Spacingd`` ``min_pixdim`` / ``max_pixdim``: axes already within it are not resampled);
* ``normalize_mode`` ``range`` / ``ct`` with ``intensity_bounds`` -> intensity kind ``range_sigmoid``;
* ``roi_size`` -> ``patch_size``; tiling: MONAI sliding window, overlap 0.625, Gaussian (sigma 0.125), zero
  padding (the script's ``SlidingWindowInfererAdapt`` settings); ``sigmoid`` false -> softmax.

Not reproduced: multi-modal models (``extra_modalities``), sigmoid (BraTS-style) outputs, ``normalize_mode``
other than ``range`` / ``ct``; they are refused with a ModelError.
"""

from __future__ import annotations

import csv
import math
import os
import re
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ...errors import BadInput, ModelError
from .monai_bundle import zip_names

__all__ = ["NETWORKS", "NETWORK_ARGS", "is_auto3dseg", "find_model_dir", "read_checkpoint", "read_labels",
           "network_params", "card_input", "import_auto3dseg"]

#: MONAI classes an Auto3DSeg checkpoint may name (``config["network"]["_target_"]``, last dotted part).
NETWORKS = ("SegResNetDS", "SegResNet")
#: Constructor arguments taken from the checkpoint's network config; anything else is refused.
NETWORK_ARGS = {
    "SegResNetDS": ("spatial_dims", "init_filters", "in_channels", "out_channels", "act", "norm", "blocks_down",
                    "blocks_up", "dsdepth", "upsample_mode", "resolution"),
    "SegResNet": ("spatial_dims", "init_filters", "in_channels", "out_channels", "dropout_prob", "act", "norm",
                  "norm_name", "num_groups", "use_conv_final", "blocks_down", "blocks_up", "upsample_mode"),
}
_SLIDING = {"style": "monai", "overlap": 0.625, "mode": "gaussian", "sigma_scale": 0.125, "padding_mode": "constant"}
_LABEL_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 _.,()'+-]{0,63}$")
_CODE_RE = re.compile(r"^[\w .,()'+/-]{0,64}$")
_MAX_LABELS = 1000


def _model_dirs(root: Path) -> list[Path]:
    return sorted({p.parent for p in root.rglob("labels.csv") if (p.parent / "model.pt").is_file()
                   and not p.is_symlink()})


def is_auto3dseg(path: str | os.PathLike) -> bool:
    """True for a folder (or zip) holding ``labels.csv`` next to ``model.pt`` (at its top or below)."""
    p = Path(path)
    if p.is_dir():
        return len(_model_dirs(p)) == 1
    names = zip_names(p)
    if names is not None:
        dirs = {n[: -len("labels.csv")] for n in names if n == "labels.csv" or n.endswith("/labels.csv")}
        return any(d + "model.pt" in names for d in dirs)
    return False


def find_model_dir(path: str | os.PathLike) -> Path:
    """The one folder under ``path`` (itself included) holding ``labels.csv`` and ``model.pt``.

    Raises:
        ModelError: none, or several (give the one to use).
    """
    p = Path(path)
    if not p.is_dir():
        raise BadInput(f"{p}: not a folder")
    dirs = _model_dirs(p)
    if len(dirs) != 1:
        raise ModelError(f"{p}: {'several' if dirs else 'no'} MONAI Auto3DSeg model folders (labels.csv next to "
                         f"model.pt){': ' + ', '.join(str(d) for d in dirs) if dirs else ''}")
    return dirs[0]


def read_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """The checkpoint dict of an Auto3DSeg ``model.pt`` (``state_dict`` and ``config`` required), read with
    ``weights_only=True`` and only numpy scalars/arrays/dtypes allowed besides tensors and builtins.

    Raises:
        ModelError: unreadable, needs a global outside the allow-list (never unpickled fully), or not an
            Auto3DSeg checkpoint.
    """
    from .nnunet import load_allowlisted

    p = Path(path)
    obj = load_allowlisted(p, "MONAI Auto3DSeg checkpoint")
    if not isinstance(obj, Mapping) or not isinstance(obj.get("state_dict"), Mapping) \
            or not isinstance(obj.get("config"), Mapping):
        raise ModelError(f"{p}: not a MONAI Auto3DSeg checkpoint (needs 'state_dict' and 'config')")
    return dict(obj)


def _code(row: Mapping[str, str], field: str) -> list[str] | None:
    parts = [str(row.get(f"{field}.{k}") or "").strip() for k in ("CodingSchemeDesignator", "CodeValue", "CodeMeaning")]
    if not any(parts):
        return None
    if not all(_CODE_RE.match(v) for v in parts):
        raise ModelError(f"labels.csv: unreadable {field} code {parts!r}")
    return parts


def read_labels(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The labels of ``labels.csv`` by value: ``{"value", "name", "codes"}`` (codes: slicerio-style
    ``category`` / ``type`` / ``typeModifier`` / ``anatomicRegion`` / ``anatomicRegionModifier`` triples).

    Raises:
        ModelError: missing columns, values that are not distinct integers >= 1, unsafe or duplicate names.
    """
    from ...safepath import safe_member_name

    p = Path(path)
    try:
        with p.open(encoding="utf-8-sig", newline="") as f:
            rows = list(csv.DictReader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise ModelError(f"{p}: unreadable labels.csv ({exc})") from None
    if not rows or "LabelValue" not in rows[0] or "Name" not in rows[0]:
        raise ModelError(f"{p}: labels.csv needs LabelValue and Name columns")
    if len(rows) > _MAX_LABELS:
        raise ModelError(f"{p}: more than {_MAX_LABELS} labels")
    out: list[dict[str, Any]] = []
    fields = {"category": "SegmentedPropertyCategoryCodeSequence", "type": "SegmentedPropertyTypeCodeSequence",
              "typeModifier": "SegmentedPropertyTypeModifierCodeSequence", "anatomicRegion": "AnatomicRegionSequence",
              "anatomicRegionModifier": "AnatomicRegionModifierSequence"}
    for row in rows:
        name = str(row.get("Name") or "").strip()
        try:
            value = int(str(row.get("LabelValue", "")).strip())
            safe_member_name(name, "label name")
        except (ValueError, BadInput):
            raise ModelError(f"{p}: row {row.get('LabelValue')!r}, {name!r}: label value must be an integer and "
                             "the name a plain label name") from None
        if value == 0 and name.lower() == "background":
            continue
        if value < 1 or not _LABEL_NAME_RE.match(name):
            raise ModelError(f"{p}: label {value} {name!r}: values must be >= 1 and names plain text "
                             "(letters, digits, spaces, _ . , ( ) ' + -; at most 64 characters)")
        codes = {k: c for k, f in fields.items() if (c := _code(row, f)) is not None}
        out.append({"value": value, "name": name, "codes": codes})
    if len({lab["value"] for lab in out}) != len(out) or len({lab["name"] for lab in out}) != len(out):
        raise ModelError(f"{p}: label values and names must be distinct")
    return sorted(out, key=lambda lab: lab["value"])


def network_params(config: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """(MONAI class name, constructor arguments) of the checkpoint config's ``network``.

    Raises:
        ModelError: a class outside :data:`NETWORKS`, arguments outside :data:`NETWORK_ARGS` or not literal,
            more than one input channel.
    """
    net = config.get("network")
    if not isinstance(net, Mapping):
        raise ModelError("model.pt config has no 'network' entry")
    arch = str(net.get("_target_", "")).rsplit(".", 1)[-1]
    if arch not in NETWORKS:
        raise ModelError(f"model.pt network {net.get('_target_')!r} is not one of {', '.join(NETWORKS)}")
    params = {k: v for k, v in net.items() if k != "_target_"}
    unknown = sorted(set(params) - set(NETWORK_ARGS[arch]))
    if unknown:
        raise ModelError(f"model.pt network {arch}: argument(s) {', '.join(unknown)} are not read by CervixTL")
    for k, v in params.items():
        if not _literal(v) or (isinstance(v, str) and (v.startswith(("$", "@")) or "_target_" in v)):
            raise ModelError(f"model.pt network {arch}: argument {k} = {v!r} is not a literal value")
    norm = params.get("norm")
    name = norm if isinstance(norm, str) else norm[0] if isinstance(norm, (list, tuple)) and norm else None
    if isinstance(name, str) and name.upper() == "INSTANCE_NVFUSER":  # MONAI's fallback without apex
        params["norm"] = "INSTANCE" if isinstance(norm, str) else ["INSTANCE", *list(norm or [])[1:]]
    if params.get("in_channels", 1) != 1 or config.get("extra_modalities"):
        raise ModelError("model.pt: a multi-modal Auto3DSeg model (CervixTL feeds one CT channel)")
    return arch, params


def _literal(v: Any) -> bool:
    if isinstance(v, Mapping):
        return all(isinstance(k, str) and _literal(x) for k, x in v.items())
    if isinstance(v, (list, tuple)):
        return all(_literal(x) for x in v)
    return v is None or isinstance(v, (bool, int, float, str))


def card_input(config: Mapping[str, Any]) -> dict[str, Any]:
    """The card's ``input`` section for an Auto3DSeg checkpoint config (see the module docstring).

    Raises:
        ModelError: sigmoid output, no resampling resolution, a normalisation other than range / ct.
    """
    if config.get("sigmoid", False):
        raise ModelError("model.pt: sigmoid (overlapping-label) Auto3DSeg models are not supported")
    mode = str(config.get("normalize_mode", ""))
    try:
        lo, hi = (float(v) for v in config.get("intensity_bounds") or ())
        spacing = [float(v) for v in config.get("resample_resolution") or ()]
        roi = [int(v) for v in config.get("roi_size") or ()]
    except (TypeError, ValueError):
        raise ModelError("model.pt config: intensity_bounds, resample_resolution or roi_size unreadable") from None
    if mode not in ("range", "ct") or not lo < hi:
        raise ModelError(f"model.pt config: normalize_mode {mode!r} is not supported (CervixTL reads CT models "
                         "with normalize_mode 'range' / 'ct' and intensity_bounds)")
    if len(spacing) != 3 or min(spacing) <= 0 or len(roi) != 3 or min(roi) <= 0:
        raise ModelError("model.pt config: needs resample_resolution (3 spacings, mm) and roi_size (3 voxels)")
    out: dict[str, Any] = {
        "spacing_mm": spacing, "spacing_tolerance": [0.75, 1.25],
        "orientation": "RAS" if config.get("orientation_ras", False) else "LPS", "axis_order": "xyz",
        "patch_size": roi, "intensity": {"kind": "range_sigmoid", "range_hu": [lo, hi]}, "tiling": dict(_SLIDING),
        "resampling": "linear (MONAI Spacingd: bilinear; labels back by nearest neighbour)"}
    if config.get("crop_foreground", True):
        out["crop_foreground"] = {"above_hu": 0.0, "margin_voxels": 10, "box_grid": "model"}
    return out


def _card_labels(labels: list[dict[str, Any]], smap: Mapping[str, str]) -> list[dict[str, Any]]:
    from ... import structures

    out = []
    for i, lab in enumerate(labels):
        mapped = smap.get(lab["name"])
        term = structures.terminology(mapped) if mapped else None
        if term is None and lab["codes"]:  # slicerio-style entry, Slicer's default contexts
            term = {"contextName": "Segmentation category and type - DICOM master list", **lab["codes"]}
            if "anatomicRegion" in term:
                term["anatomicContextName"] = "Anatomic codes - DICOM master list"
        entry: dict[str, Any] = {"channel": lab["value"], "name": lab["name"],
                                 "color": list(structures.color_of(mapped or lab["name"], i)), "terminology": term}
        if mapped:
            entry["structure"] = mapped
        out.append(entry)
    return out


def import_auto3dseg(path: str | os.PathLike, dest_dir: str | os.PathLike, *, name: str, version: str = "1"
                     ) -> tuple[Path, dict[str, Any]]:
    """Convert a SlicerMONAIAuto3DSeg model folder or zip into a CervixTL package at ``dest_dir``
    (safetensors weights; card from the checkpoint's config and ``labels.csv``).

    Returns:
        (package path, report: tensors, classes, network).

    Raises:
        ModelError: see :func:`read_checkpoint`, :func:`read_labels`, :func:`network_params`,
            :func:`card_input`; weights that do not fit the network; labels beyond its channels.
    """
    p = Path(path)
    if p.is_file():
        from ..download import unpack_archive

        with tempfile.TemporaryDirectory(prefix=".auto3dseg-") as tmp:
            unpack_archive(p, Path(tmp))
            folder = find_model_dir(tmp)
            return _import_folder(folder, dest_dir, name=name, version=version,
                                  source=p.name if folder == Path(tmp) else f"{p.name}:{folder.name}")
    folder = find_model_dir(p)
    return _import_folder(folder, dest_dir, name=name, version=version, source=folder.name)


def _import_folder(folder: Path, dest_dir: str | os.PathLike, *, name: str, version: str, source: str
                   ) -> tuple[Path, dict[str, Any]]:
    from ..card import ModelCard
    from ..networks import build_from_params
    from ..package import save_package
    from . import structure_map

    ckpt = read_checkpoint(folder / "model.pt")
    config = ckpt["config"]
    arch, params = network_params(config)
    labels = read_labels(folder / "labels.csv")
    n_out = _int(params.get("out_channels")) or 0
    if not labels or labels[-1]["value"] >= n_out:
        raise ModelError(f"{folder}: labels.csv values must be 1..{n_out - 1} (the network's channels)")
    net = build_from_params(arch, params)
    try:
        net.load_state_dict({str(k): v for k, v in ckpt["state_dict"].items()}, strict=True)
    except (RuntimeError, TypeError) as exc:
        raise ModelError(f"{folder / 'model.pt'}: weights do not fit the {arch} of its config "
                         f"({str(exc).splitlines()[0][:160]})") from None
    card = ModelCard(
        name=name, version=str(version), architecture={"name": arch, "params": params},
        labels=_card_labels(labels, structure_map("monai_auto3dseg")), output="softmax", input=card_input(config),
        derivation=f"imported from MONAI Auto3DSeg model {source} (model.pt, epoch {_int(ckpt.get('epoch'))})",
        training={"source": {"kind": "monai_auto3dseg", "model": source, "epoch": _int(ckpt.get("epoch")),
                             "best_metric": _float(ckpt.get("best_metric"))}},
        intended_use="transfer-learning source model (and zero-shot organ proposals for expert review)")
    pkg = save_package(dest_dir, card, net.state_dict())
    return pkg, {"tensors": len(net.state_dict()), "classes": len(labels), "network": arch}


def _int(v: Any) -> int | None:
    try:
        return int(v)
    except (TypeError, ValueError):
        return None


def _float(v: Any) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return round(f, 6) if math.isfinite(f) else None
