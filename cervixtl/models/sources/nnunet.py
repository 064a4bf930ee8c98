"""nnU-Net v2 trained-model folders as CervixTL source models, read the way nnU-Net reads them.

A trained-model folder (``<results>/DatasetXXX_Name/<Trainer>__<Plans>__<configuration>/``) holds
``dataset.json`` (label names and values), ``plans.json`` (per configuration: spacing, patch size,
normalisation, network architecture; plus ``transpose_forward`` and the foreground intensity statistics) and
``fold_N/checkpoint_final.pth`` (a torch pickle: ``network_weights`` plus training state).

* The checkpoint is read with ``torch.load(weights_only=True)`` and :data:`NUMPY_GLOBALS`, an explicit
  allow-list of the numpy types nnU-Net's training log stores; a file needing anything else is refused.
* The network is rebuilt from the plans' architecture with ``dynamic_network_architectures``
  (:mod:`cervixtl.models.nnunet_net`); plans in nnU-Net's older format (``UNet_class_name``, before the
  ``architecture`` entry) are converted the way nnU-Net converts them.
* The card input: spacing (plans spacing, un-transposed to (x, y, z) mm), ``axis_order`` from
  ``transpose_forward``, ``patch_size`` (network axis order), CT normalisation (``ct_zscore`` from
  ``foreground_intensity_properties_per_channel``), nnU-Net tiling (step 0.5, Gaussian, no mirroring) and the
  orientation the images were given to nnU-Net in (``RAS`` for TotalSegmentator, which reorients to the
  closest canonical RAS first).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from ...errors import BadInput, ModelError

__all__ = ["NUMPY_GLOBALS", "is_nnunet_folder", "find_model_folder", "read_checkpoint", "configuration",
           "architecture_params", "label_values", "card_input", "import_nnunet"]

_TRAINER_DIR_RE = re.compile(r"^[A-Za-z0-9_.-]+__[A-Za-z0-9_.-]+__[A-Za-z0-9_.-]+$")
_FOLD_RE = re.compile(r"^fold_(\d+|all)$")


def _numpy_globals() -> list[Any]:
    """The numpy objects an nnU-Net checkpoint's pickle may name, under their numpy 1 and numpy 2 names."""
    import numpy as np

    mod = np._core.multiarray if hasattr(np, "_core") else np.core.multiarray  # type: ignore[attr-defined]
    out: list[Any] = [np.dtype, np.ndarray]
    for fn in (mod.scalar, mod._reconstruct):
        out += [fn, (fn, f"numpy.core.multiarray.{fn.__name__}"), (fn, f"numpy._core.multiarray.{fn.__name__}")]
    dtypes = getattr(np, "dtypes", None)
    for name in ("Float16DType", "Float32DType", "Float64DType", "Int8DType", "Int16DType", "Int32DType",
                 "Int64DType", "UInt8DType", "UInt16DType", "UInt32DType", "UInt64DType", "BoolDType"):
        if dtypes is not None and hasattr(dtypes, name):
            out.append(getattr(dtypes, name))
    return out


#: What an nnU-Net checkpoint may contain besides tensors and builtins: numpy scalars, arrays and dtypes.
NUMPY_GLOBALS = _numpy_globals()


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelError(f"{path}: unreadable JSON ({exc})") from None
    if not isinstance(data, dict):
        raise ModelError(f"{path}: not a JSON object")
    return data


def _fold_dirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and _FOLD_RE.match(p.name) and not p.is_symlink())


def is_nnunet_folder(path: str | os.PathLike) -> bool:
    """True for an nnU-Net v2 trained-model folder (``plans.json``, ``dataset.json``, ``fold_N/*.pth``) or a
    ``DatasetXXX_*`` folder holding exactly one."""
    try:
        find_model_folder(path)
        return True
    except (ModelError, BadInput, OSError):
        return False


def find_model_folder(path: str | os.PathLike) -> Path:
    """The trained-model folder at ``path``: the folder itself, or the single ``Trainer__Plans__config``
    sub-folder of a dataset folder.

    Raises:
        ModelError: not an nnU-Net folder, or several trainer folders (name the one to use).
    """
    p = Path(path)
    if not p.is_dir():
        raise BadInput(f"{p}: not a folder")
    if (p / "plans.json").is_file() and (p / "dataset.json").is_file():
        if not _fold_dirs(p):
            raise ModelError(f"{p}: nnU-Net folder without fold_N sub-folders (no trained weights)")
        return p
    subs = [s for s in sorted(p.iterdir()) if s.is_dir() and _TRAINER_DIR_RE.match(s.name)
            and (s / "plans.json").is_file() and not s.is_symlink()]
    if len(subs) == 1:
        return find_model_folder(subs[0])
    if len(subs) > 1:
        raise ModelError(f"{p}: several nnU-Net trained models ({', '.join(s.name for s in subs)}); give one")
    raise ModelError(f"{p}: not an nnU-Net v2 trained-model folder (needs plans.json, dataset.json, fold_N/)")


def checkpoint_path(folder: Path, fold: str | int | None = None, name: str = "checkpoint_final.pth") -> Path:
    """``fold_<fold>/<name>`` of a trained-model folder (``fold=None``: the first fold that has it)."""
    if not re.fullmatch(r"checkpoint_[A-Za-z0-9_]+\.pth", name):
        raise BadInput(f"checkpoint name {name!r} must look like checkpoint_final.pth")
    folds = _fold_dirs(folder)
    if fold is not None:
        folds = [f for f in folds if f.name == f"fold_{fold}"]
    for f in folds:
        if (f / name).is_file():
            return f / name
    raise ModelError(f"{folder}: no {'fold_' + str(fold) if fold is not None else 'fold_N'}/{name}")


def load_allowlisted(path: str | os.PathLike, what: str) -> Any:
    """``torch.load(weights_only=True)`` with only :data:`NUMPY_GLOBALS` allowed besides tensors and builtins.

    Raises:
        ModelError: unreadable (``what`` names the expected kind of file), or needs a global outside the
            allow-list (never unpickled fully).
    """
    p = Path(path)
    try:
        with torch.serialization.safe_globals(NUMPY_GLOBALS):
            return torch.load(str(p), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - UnpicklingError, RuntimeError, EOFError, ...
        text = str(exc)
        m = re.search(r"GLOBAL ([\w.]+)", text)
        if m:
            raise ModelError(f"{p}: the checkpoint needs {m.group(1)}, which is not on CervixTL's allow-list "
                             "(tensors, numpy scalars/arrays/dtypes); refused, not unpickled") from None
        first = text.splitlines()[0][:160] if text else type(exc).__name__
        raise ModelError(f"{p}: not a readable {what} ({first})") from None


def read_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """An nnU-Net checkpoint dict, read by :func:`load_allowlisted`.

    Raises:
        ModelError: unreadable, needs a global outside the allow-list, or not an nnU-Net v2 checkpoint.
    """
    p = Path(path)
    obj = load_allowlisted(p, "nnU-Net checkpoint")
    if not isinstance(obj, Mapping) or not isinstance(obj.get("network_weights"), Mapping):
        raise ModelError(f"{p}: not an nnU-Net v2 checkpoint (no 'network_weights')")
    return dict(obj)


def configuration(plans: Mapping[str, Any], name: str) -> dict[str, Any]:
    """Configuration ``name`` of the plans with ``inherits_from`` resolved and an ``architecture`` entry
    (built from the older plans format when absent).

    Raises:
        ModelError: unknown configuration, circular inheritance, unsupported architecture.
    """
    confs = plans.get("configurations") or {}
    chain: list[str] = []
    conf: dict[str, Any] = {}
    while name:
        if name in chain or name not in confs:
            raise ModelError(f"plans.json: configuration {name!r} is {'circular' if name in chain else 'missing'} "
                             f"(available: {', '.join(confs)})")
        chain.append(name)
        conf = {**confs[name], **conf}
        name = confs[name].get("inherits_from")
    conf.pop("inherits_from", None)
    if "architecture" not in conf:
        conf["architecture"] = _architecture_from_old_plans(conf)
    return conf


def _architecture_from_old_plans(conf: Mapping[str, Any]) -> dict[str, Any]:
    """The ``architecture`` entry for plans written before nnU-Net 2.4 (``UNet_class_name``)."""
    try:
        cls = str(conf["UNet_class_name"])
        n = len(conf["n_conv_per_stage_encoder"])
        dim = len(conf["patch_size"])
        base, top = int(conf["UNet_base_num_features"]), int(conf["unet_max_num_features"])
        blocks_key = {"PlainConvUNet": "n_conv_per_stage", "ResidualEncoderUNet": "n_blocks_per_stage"}[cls]
        kwargs = {"n_stages": n, "features_per_stage": [min(base * 2 ** i, top) for i in range(n)],
                  "conv_op": f"torch.nn.modules.conv.Conv{dim}d", "kernel_sizes": conf["conv_kernel_sizes"],
                  "strides": conf["pool_op_kernel_sizes"], blocks_key: conf["n_conv_per_stage_encoder"],
                  "n_conv_per_stage_decoder": conf["n_conv_per_stage_decoder"], "conv_bias": True,
                  "norm_op": f"torch.nn.modules.instancenorm.InstanceNorm{dim}d",
                  "norm_op_kwargs": {"eps": 1e-05, "affine": True}, "dropout_op": None, "dropout_op_kwargs": None,
                  "nonlin": "torch.nn.LeakyReLU", "nonlin_kwargs": {"inplace": True}}
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelError(f"plans.json: old-format configuration lacks {exc} or names an unsupported "
                         "UNet_class_name (PlainConvUNet, ResidualEncoderUNet)") from None
    return {"network_class_name": cls, "arch_kwargs": kwargs}


def architecture_params(conf: Mapping[str, Any], in_channels: int, out_channels: int) -> dict[str, Any]:
    """The card's ``nnUNet`` architecture params for a resolved configuration."""
    from ..nnunet_net import network_class_name

    arch = conf["architecture"]
    return {"network_class": network_class_name(arch["network_class_name"]), "in_channels": int(in_channels),
            "out_channels": int(out_channels), "arch_kwargs": dict(arch["arch_kwargs"])}


def label_values(dataset: Mapping[str, Any]) -> list[tuple[int, str]]:
    """(value, name) of each foreground label of ``dataset.json``, by value; background must be 0.

    Raises:
        ModelError: region-based labels, ignore label, or values that are not 0..K.
    """
    labels = dataset.get("labels")
    if not isinstance(labels, Mapping) or not labels:
        raise ModelError("dataset.json: no 'labels'")
    if any(not isinstance(v, int) or isinstance(v, bool) for v in labels.values()):
        raise ModelError("dataset.json: region-based labels (lists of values) are not supported")
    if "ignore" in labels:
        raise ModelError("dataset.json: an 'ignore' label is not supported")
    values = sorted(labels.values())
    if values != list(range(len(values))) or labels.get("background") != 0:
        raise ModelError("dataset.json: labels must be background = 0 and 1..K without gaps")
    return [(int(v), str(k)) for k, v in sorted(labels.items(), key=lambda kv: kv[1]) if v != 0]


def card_input(plans: Mapping[str, Any], conf: Mapping[str, Any], *, orientation: str) -> dict[str, Any]:
    """The card's ``input`` section (see the module docstring): spacing (x, y, z) mm, axis order, patch size in
    the network's axis order, intensity, tiling, orientation.

    Raises:
        ModelError: a normalisation other than nnU-Net's CTNormalization, or missing statistics.
    """
    tf = [int(i) for i in plans.get("transpose_forward", [0, 1, 2])]
    if sorted(tf) != [0, 1, 2] or len(conf.get("patch_size", [])) != 3:
        raise ModelError("plans.json: only 3D configurations with a transpose_forward permutation are supported")
    spacing_t = [float(s) for s in conf["spacing"]]  # transposed (z, y, x) order
    spacing_zyx = [0.0, 0.0, 0.0]
    for i, axis in enumerate(tf):
        spacing_zyx[axis] = spacing_t[i]
    schemes = list(conf.get("normalization_schemes", []))
    if schemes != ["CTNormalization"]:
        raise ModelError(f"plans.json: normalisation {schemes} is not supported (CervixTL reads CT sources "
                         "with nnU-Net's CTNormalization)")
    props = (plans.get("foreground_intensity_properties_per_channel") or {}).get("0") or {}
    try:
        intensity = {"kind": "ct_zscore", "clip_hu": [float(props["percentile_00_5"]), float(props["percentile_99_5"])],
                     "mean": float(props["mean"]), "std": float(props["std"])}
    except (KeyError, TypeError, ValueError):
        raise ModelError("plans.json: foreground_intensity_properties_per_channel['0'] lacks mean, std or "
                         "percentiles") from None
    return {"spacing_mm": spacing_zyx[::-1], "orientation": orientation,
            "axis_order": "".join("zyx"[a] for a in tf), "patch_size": [int(p) for p in conf["patch_size"]],
            "intensity": intensity, "tiling": {"style": "nnunet", "step": 0.5, "sigma_scale": 0.125,
                                               "mirroring": False},
            "resampling": "linear (nnU-Net: third-order spline; TotalSegmentator resamples before nnU-Net)"}


def import_nnunet(path: str | os.PathLike, dest_dir: str | os.PathLike, *, name: str, version: str = "1",
                  fold: str | int | None = None, orientation: str = "LPS", source: Mapping[str, Any] | None = None,
                  structure_map: Mapping[str, str] | None = None) -> tuple[Path, dict[str, Any]]:
    """Convert an nnU-Net v2 trained-model folder into a CervixTL package at ``dest_dir`` (safetensors weights).

    Args:
        path: trained-model folder (or its dataset folder); fold: which ``fold_N`` (default: first found).
        orientation: the orientation the training images had when nnU-Net read them (``"RAS"`` for
            TotalSegmentator; ``"LPS"`` for DICOM-derived images read with SimpleITK).
        source: provenance recorded in the card (e.g. ``{"kind": "totalsegmentator", "task": "total"}``).
        structure_map: source label name -> CervixTL structure name, recorded per label as ``structure``.

    Returns:
        (package path, report: tensors, classes, configuration, trainer).

    Raises:
        ModelError: unreadable/unsupported folder, plans, labels or checkpoint; weights that do not fit.
    """
    from ..card import ModelCard
    from ..networks import build_from_params
    from ..nnunet_net import plain_state
    from ..package import save_package

    folder = find_model_folder(path)
    plans, dataset = _read_json(folder / "plans.json"), _read_json(folder / "dataset.json")
    ckpt_file = checkpoint_path(folder, fold)
    ckpt = read_checkpoint(ckpt_file)
    conf_name = str((ckpt.get("init_args") or {}).get("configuration") or folder.name.rsplit("__", 1)[-1])
    conf = configuration(plans, conf_name)
    labels = label_values(dataset)
    channels = dataset.get("channel_names") or dataset.get("modality") or {"0": "CT"}
    if len(channels) != 1:
        raise ModelError(f"{folder}: the model takes {len(channels)} input channels; CervixTL feeds 1 (CT)")
    params = architecture_params(conf, 1, len(labels) + 1)
    net = build_from_params("nnUNet", params)
    state = plain_state({k: v for k, v in ckpt["network_weights"].items()}, net)
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0][:200]
        raise ModelError(f"{ckpt_file}: weights do not fit the network of plans.json ({first})") from None
    card = ModelCard(
        name=name, version=str(version), architecture={"name": "nnUNet", "params": params},
        labels=_card_labels(labels, structure_map or {}), output="softmax",
        input=card_input(plans, conf, orientation=orientation),
        derivation=f"imported from nnU-Net v2 {folder.parent.name}/{folder.name}/{ckpt_file.parent.name}"
                   f"/{ckpt_file.name}",
        training={"source": {"kind": "nnunet", "dataset": folder.parent.name, "trainer_folder": folder.name,
                             "configuration": conf_name, "fold": ckpt_file.parent.name,
                             "trainer": str(ckpt.get("trainer_name", "")), **dict(source or {})}},
        intended_use="transfer-learning source model (and zero-shot organ proposals for expert review)",
    )
    pkg = save_package(dest_dir, card, net.state_dict())
    return pkg, {"tensors": len(net.state_dict()), "classes": len(labels), "configuration": conf_name,
                 "trainer": str(ckpt.get("trainer_name", "")), "folder": str(folder)}


def _card_labels(labels: list[tuple[int, str]], structure_map: Mapping[str, str]) -> list[dict[str, Any]]:
    from ... import structures

    out = []
    for i, (value, lname) in enumerate(labels):
        mapped = structure_map.get(lname)
        entry: dict[str, Any] = {"channel": value, "name": lname,
                                 "color": list(structures.color_of(mapped or lname, i)),
                                 "terminology": structures.terminology(mapped) if mapped else None}
        if mapped:
            entry["structure"] = mapped
        out.append(entry)
    return out
