"""MONAI bundles (e.g. the model zoo's ``wholeBody_ct_segmentation``) as CervixTL source models.

A bundle folder (or zip of one) holds ``configs/inference.json`` (network, preprocessing transforms,
sliding-window inferer), ``configs/metadata.json`` (output channel names) and ``models/model.pt``. The config is
read with MONAI's own ``monai.bundle.ConfigParser`` (``@`` references, ``#`` paths), but **no expression is
executed**: ``$...`` values are evaluated only when they are literals, references and ``a if cond else b``
(:func:`safe_value`); anything else is refused. What is read:

* network: ``network_def`` (``_target_`` one of CervixTL's MONAI architectures, literal arguments);
* ``Orientationd`` axcodes -> card ``orientation``; MONAI arrays are channel-first (x, y, z) -> ``axis_order``
  ``"xyz"``; ``Spacingd`` pixdim -> ``spacing_mm``;
* ``NormalizeIntensityd`` (``nonzero``) then ``ScaleIntensityd`` (minv, maxv) -> intensity kind
  ``monai_normalize_scale``;
* ``SlidingWindowInferer`` roi, overlap -> patch and overlap (MONAI tiling, Gaussian, replicate padding);
* labels: ``metadata.json`` ``network_data_format.outputs.pred.channel_def`` (0 = background, softmax).
"""

from __future__ import annotations

import ast
import json
import os
import tempfile
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ...errors import ModelError

__all__ = ["is_bundle", "safe_value", "read_bundle", "import_bundle"]

_ALLOWED_AST = (ast.Expression, ast.IfExp, ast.Constant, ast.List, ast.Tuple, ast.Name, ast.Load, ast.BoolOp,
                ast.And, ast.Or, ast.UnaryOp, ast.Not, ast.USub, ast.Compare, ast.Eq, ast.NotEq)


def zip_names(path: Path) -> list[str] | None:
    """The member names of a zip file, or None when ``path`` is not a readable zip."""
    if not (path.is_file() and zipfile.is_zipfile(path)):
        return None
    try:
        with zipfile.ZipFile(path) as zf:
            return zf.namelist()
    except (zipfile.BadZipFile, OSError):
        return None


def is_bundle(path: str | os.PathLike) -> bool:
    """True for a MONAI bundle folder or a zip holding ``configs/inference.json`` + ``configs/metadata.json``."""
    p = Path(path)
    if p.is_dir():
        return (p / "configs" / "inference.json").is_file() and (p / "configs" / "metadata.json").is_file()
    names = zip_names(p)
    if names is not None:
        return any(n.endswith("configs/inference.json") for n in names) and any(
            n.endswith("configs/metadata.json") for n in names)
    return False


def safe_value(parser: Any, key: str, _depth: int = 0) -> Any:
    """The value of config ``key`` with ``@`` references resolved and ``$`` expressions evaluated only if they
    are literals / references / conditional expressions (no calls, attributes or imports).

    Raises:
        ModelError: an expression CervixTL will not evaluate, or a reference loop.
    """
    if _depth > 20:
        raise ModelError(f"bundle config: reference loop at {key!r}")
    raw = parser.get(key)
    return _resolve(parser, raw, key, _depth)


def _resolve(parser: Any, raw: Any, key: str, depth: int) -> Any:
    if isinstance(raw, dict):
        return {k: _resolve(parser, v, key, depth) for k, v in raw.items()}
    if isinstance(raw, list):
        return [_resolve(parser, v, key, depth) for v in raw]
    if not isinstance(raw, str):
        return raw
    if raw.startswith("@"):
        return safe_value(parser, raw[1:], depth + 1)
    if not raw.startswith("$"):
        return raw
    expr = raw[1:]
    refs: dict[str, Any] = {}

    def sub(text: str) -> str:
        import re

        def repl(m: re.Match[str]) -> str:
            name = f"_ref{len(refs)}"
            refs[name] = safe_value(parser, m.group(1), depth + 1)
            return name

        return re.sub(r"@([A-Za-z0-9_#]+)", repl, text)

    code = sub(expr)
    try:
        tree = ast.parse(code, mode="eval")
    except SyntaxError:
        raise ModelError(f"bundle config {key!r}: cannot read expression {raw!r}") from None
    for node in ast.walk(tree):
        if not isinstance(node, _ALLOWED_AST) or (isinstance(node, ast.Name) and node.id not in refs):
            raise ModelError(f"bundle config {key!r}: expression {raw!r} is not evaluated by CervixTL "
                             "(only literals, references and 'a if b else c')")
    return eval(compile(tree, "<bundle>", "eval"), {"__builtins__": {}}, refs)  # noqa: S307 - AST checked above


def _transform(transforms: list[Mapping[str, Any]], name: str) -> Mapping[str, Any] | None:
    for t in transforms:
        if str(t.get("_target_", "")).rsplit(".", 1)[-1] in (name, name + "d"):
            return t
    return None


def read_bundle(folder: str | os.PathLike, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Everything CervixTL needs from a bundle folder: architecture, params, weights file, card input, labels.

    ``overrides``: config values set before anything is read, as the bundle's own ``--key value`` options
    (e.g. ``{"displayable_configs#highres": True}`` selects wholeBody's 1.5 mm model and its weights). Values
    must be JSON literals (numbers, strings, booleans, lists, objects); a ``$`` expression is refused.

    Raises:
        ModelError: missing files, unsupported network or transforms, unsafe expressions.
    """
    from monai.bundle import ConfigParser

    from ..card import ARCHITECTURES

    root = Path(folder)
    parser = ConfigParser()
    try:
        parser.read_config(str(root / "configs" / "inference.json"))
        for key, value in (overrides or {}).items():
            if isinstance(value, str) and value.startswith(("$", "@", "%")):
                raise ModelError(f"bundle override {key}: {value!r} is an expression, not a value")
            parser[str(key)] = value
        meta = json.loads((root / "configs" / "metadata.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelError(f"{root}: unreadable bundle config ({exc})") from None
    net_def = safe_value(parser, "network_def")
    arch = str(net_def.pop("_target_", "")).rsplit(".", 1)[-1]
    if arch not in ARCHITECTURES or arch == "nnUNet":
        raise ModelError(f"{root}: bundle network {arch!r} is not one CervixTL builds")
    pre = safe_value(parser, "preprocessing")
    transforms = list(pre.get("transforms", [])) if isinstance(pre, dict) else list(pre)
    orient = _transform(transforms, "Orientation")
    spacing = _transform(transforms, "Spacing")
    norm, scale = _transform(transforms, "NormalizeIntensity"), _transform(transforms, "ScaleIntensity")
    if not (orient and spacing and norm and scale):
        raise ModelError(f"{root}: the bundle's preprocessing is not Orientation, Spacing, NormalizeIntensity, "
                         "ScaleIntensity (the only CT pipeline CervixTL reproduces)")
    inferer = safe_value(parser, "inferer")
    channel_def = (((meta.get("network_data_format") or {}).get("outputs") or {}).get("pred") or {}).get("channel_def")
    if not isinstance(channel_def, Mapping):
        raise ModelError(f"{root}: metadata.json has no network_data_format.outputs.pred.channel_def")
    labels = sorted((int(k), str(v)) for k, v in channel_def.items() if int(k) != 0)
    config: Any = parser.config or {}
    model_name = safe_value(parser, "modelname") if "modelname" in config else "model.pt"
    return {
        "architecture": arch, "params": net_def, "weights": root / "models" / Path(str(model_name)).name,
        "labels": labels, "name": str(meta.get("name") or root.name), "version": str(meta.get("version", "")),
        "input": {"spacing_mm": [float(v) for v in spacing["pixdim"]],
                  "orientation": str(orient.get("axcodes", "RAS")), "axis_order": "xyz",
                  "patch_size": [int(v) for v in inferer.get("roi_size", [96, 96, 96])],
                  "intensity": {"kind": "monai_normalize_scale", "nonzero": bool(norm.get("nonzero", False)),
                                "minv": float(scale.get("minv", 0.0)), "maxv": float(scale.get("maxv", 1.0))},
                  "tiling": {"style": "monai", "overlap": float(inferer.get("overlap", 0.25)),
                             "mode": str(inferer.get("mode", "constant")),
                             "padding_mode": str(inferer.get("padding_mode", "constant"))}},
    }


def import_bundle(path: str | os.PathLike, dest_dir: str | os.PathLike, *, name: str, version: str = "1",
                  overrides: Mapping[str, Any] | None = None) -> tuple[Path, dict[str, Any]]:
    """Convert a MONAI bundle folder or zip into a CervixTL package (safetensors weights, card from the config;
    ``overrides`` as :func:`read_bundle`).

    Raises:
        ModelError: see :func:`read_bundle`; weights that do not fit the network.
    """
    p = Path(path)
    if p.is_file():
        from ..download import unpack_archive

        with tempfile.TemporaryDirectory(prefix=".bundle-") as tmp:
            unpack_archive(p, Path(tmp))
            inner = [c.parent.parent for c in Path(tmp).rglob("inference.json") if c.parent.name == "configs"]
            if not inner:
                raise ModelError(f"{p}: zip holds no configs/inference.json")
            return import_bundle(inner[0], dest_dir, name=name, version=version, overrides=overrides)
    from ..card import ModelCard
    from ..networks import build_from_params
    from ..package import save_package
    from ..transfer import normalise_names, read_checkpoint
    from . import structure_map
    from .nnunet import _card_labels

    info = read_bundle(p, overrides)
    if info["input"]["orientation"] not in ("RAS", "LPS"):
        raise ModelError(f"{p}: bundle orientation {info['input']['orientation']!r} is not RAS or LPS")
    net = build_from_params(info["architecture"], info["params"])
    state = normalise_names(read_checkpoint(info["weights"]))
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ModelError(f"{info['weights']}: weights do not fit the bundle's network "
                         f"({str(exc).splitlines()[0][:160]})") from None
    card = ModelCard(
        name=name, version=str(version), architecture={"name": info["architecture"], "params": info["params"]},
        labels=_card_labels(info["labels"], structure_map()), output="softmax", input=info["input"],
        derivation=f"imported from MONAI bundle {info['name']} {info['version']} ({info['weights'].name})",
        training={"source": {"kind": "monai_bundle", "bundle": info["name"], "bundle_version": info["version"],
                             "weights": info["weights"].name, "overrides": dict(overrides or {})}},
        intended_use="transfer-learning source model (and zero-shot organ proposals for expert review)")
    return save_package(dest_dir, card, net.state_dict()), {"tensors": len(state), "classes": len(info["labels"])}
