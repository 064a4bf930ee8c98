"""Transfer learning helpers: read source checkpoints safely, load matching weights, freeze layers.

Source weights may come from a MONAI bundle checkpoint (``model.pt``: a plain state dict, or one wrapped in
``{"state_dict": ...}`` / ``{"model": ...}``; loaded with ``torch.load(weights_only=True)``, never plain
pickle), a ``.safetensors`` file, or one of our model packages. Parameter names are mapped by stripping
wrapper prefixes (``module.`` from DataParallel, ``model.``/``net.``/``network.`` from Lightning or bundle
wrappers) so that they match the MONAI network's own names.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from ..errors import BadInput, ModelError

_PREFIXES = ("module.", "model.", "net.", "network.", "_orig_mod.")
_WRAPPER_KEYS = ("state_dict", "model", "network", "net", "model_state_dict")


def read_checkpoint(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Tensors of a checkpoint: a model package folder, a ``.safetensors`` file or a torch checkpoint
    (``.pt``/``.pth``/``.ckpt``, read with ``weights_only=True``). Non-tensor entries are dropped.

    Raises:
        BadInput: the path does not exist; ModelError: unreadable / not a state dict / needs unpickling.
    """
    p = Path(path)
    if not p.exists():
        raise BadInput(f"{p}: no such checkpoint file or model package")
    if p.is_dir():
        from .package import load_package

        return load_package(p, verify=True)[1]
    if p.name.lower().endswith(".safetensors"):
        from .package import read_safetensors

        return read_safetensors(p)
    try:
        obj = torch.load(str(p), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises UnpicklingError, RuntimeError, EOFError, ...
        msg = str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__
        raise ModelError(f"{p}: not a loadable weights-only checkpoint ({msg})") from None
    return _unwrap(obj, p)


def _unwrap(obj: Any, p: Path) -> dict[str, torch.Tensor]:
    for _ in range(3):
        if isinstance(obj, Mapping) and not any(isinstance(v, torch.Tensor) for v in obj.values()):
            inner = next((obj[k] for k in _WRAPPER_KEYS if k in obj and isinstance(obj[k], Mapping)), None)
            if inner is None:
                break
            obj = inner
    if not isinstance(obj, Mapping):
        raise ModelError(f"{p}: checkpoint holds a {type(obj).__name__}, not a state dict")
    tensors = {str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise ModelError(f"{p}: checkpoint has no tensors")
    return tensors


def normalise_names(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Strip wrapper prefixes (``module.``, ``model.``, ``net.``, ``network.``, ``_orig_mod.``) repeatedly."""
    out = {}
    for k, v in state_dict.items():
        name = k
        changed = True
        while changed:
            changed = False
            for pre in _PREFIXES:
                if name.startswith(pre):
                    name, changed = name[len(pre):], True
        out[name] = v
    return out


def load_matching_weights(net: torch.nn.Module, state_dict: Mapping[str, torch.Tensor],
                          channel_map: Mapping[int, int] | None = None) -> dict[str, Any]:
    """Copy every source tensor whose (prefix-stripped) name and shape match a tensor of ``net``.

    Tensors of ``net`` with no source counterpart of the same shape (e.g. the output head when the label set
    differs) are re-initialised with their module's ``reset_parameters`` (fresh random init).

    Args:
        channel_map: ``{new output channel: source output channel}`` for a label set that changed (e.g. organs
            kept, a target added): in a tensor that differs from its source only in the first (output-channel)
            dimension, those rows are copied from the source, so kept structures keep their trained output
            weights and only the new channels start from random.

    Returns:
        ``{"loaded": n, "reinitialised": n, "skipped": n, "loaded_names": [...], "reinitialised_names": [...],
        "skipped_names": [...], "partial_names": [...]}``; skipped = source tensors not used (no such name or
        other shape); partial = head tensors whose mapped channels were copied (also counted as re-initialised).
    """
    src = normalise_names(state_dict)
    own = net.state_dict()
    own_keys = set(own)
    # Allow the network's names to carry a prefix the source lacks (or vice versa).
    own_norm = {k2: k for k, k2 in ((k, next(iter(normalise_names({k: own[k]})))) for k in own)}
    loaded: list[str] = []
    new_state: dict[str, torch.Tensor] = {}
    used: set[str] = set()
    rows: dict[str, torch.Tensor] = {}  # own key -> source tensor whose mapped rows are copied after re-init
    for skey, tensor in src.items():
        okey = skey if skey in own_keys else own_norm.get(skey)
        if okey is None:
            continue
        if tuple(own[okey].shape) != tuple(tensor.shape):
            if channel_map and own[okey].dim() == tensor.dim() and own[okey].shape[1:] == tensor.shape[1:]:
                rows[okey] = tensor
                used.add(skey)
            continue
        new_state[okey] = tensor.to(dtype=own[okey].dtype)
        loaded.append(okey)
        used.add(skey)
    reinit = sorted(k for k in own if k not in new_state and own[k].is_floating_point()
                    and not k.endswith("num_batches_tracked"))
    _reset_modules(net, reinit)
    fresh = net.state_dict()
    for okey, tensor in rows.items():
        t = fresh[okey].clone()
        for new_c, src_c in (channel_map or {}).items():  # rows is empty without a channel map
            if 0 <= new_c < t.shape[0] and 0 <= src_c < tensor.shape[0]:
                t[new_c] = tensor[src_c].to(dtype=t.dtype)
        new_state[okey] = t
    net.load_state_dict(new_state, strict=False)
    skipped = sorted(k for k in src if k not in used)
    return {"loaded": len(loaded), "reinitialised": len(reinit), "skipped": len(skipped),
            "loaded_names": sorted(loaded), "reinitialised_names": reinit, "skipped_names": skipped,
            "partial_names": sorted(rows)}


def _reset_modules(net: torch.nn.Module, names: list[str]) -> None:
    modules = dict(net.named_modules())
    done: set[str] = set()
    for n in names:
        mod_name = n.rsplit(".", 1)[0] if "." in n else ""
        if mod_name in done:
            continue
        done.add(mod_name)
        mod = modules.get(mod_name)
        if mod is not None and hasattr(mod, "reset_parameters"):
            mod.reset_parameters()


# ---------------------------------------------------------------------------- freezing
_ENCODER_PATTERNS = {
    "SegResNet": (r"^convInit\.", r"^down_layers\."),
    "SegResNetDS": (r"^encoder\.",),  # MONAI Auto3DSeg: SegResNetEncoder (stem conv + every down-sampling level)
    "DynUNet": (r"^input_block\.", r"^downsamples\.", r"^bottleneck\."),
    "SwinUNETR": (r"^swinViT\.", r"^encoder\d+\."),
    # nnU-Net (dynamic_network_architectures): every encoder stage, the last one being the bottleneck.
    "PlainConvUNet": (r"^encoder\.",),
    "ResidualEncoderUNet": (r"^encoder\.",),
    # MONAI UNet nests (down, SkipConnection(...), up) Sequentials: the encoder path is the 0th element at
    # each level and the innermost bottom block.
    "UNet": (r"^model\.(1\.submodule\.)*0\.", r"^model\.(1\.submodule\.)*1\.submodule\.(conv|residual|unit|adn)"),
}


def encoder_parameter_names(net: torch.nn.Module) -> list[str]:
    """Names of the encoder (down-sampling path) parameters of a MONAI SegResNet/DynUNet/UNet/SwinUNETR."""
    pats = _ENCODER_PATTERNS.get(type(net).__name__)
    if pats is None:
        raise ModelError(f"freeze=encoder is not defined for {type(net).__name__}")
    rx = [re.compile(p) for p in pats]
    return [n for n, _ in net.named_parameters() if any(r.search(n) for r in rx)]


# ---------------------------------------------------------------------------- source models
def package_from_checkpoint(checkpoint: str | os.PathLike, dest_dir: str | os.PathLike, *, name: str,
                            version: str = "1", architecture: str = "SegResNet",
                            params: Mapping[str, Any] | None = None, label_names: list[str] | None = None,
                            output: str = "softmax", spacing_mm: tuple[float, float, float] = (1.5, 1.5, 1.5),
                            window_hu: tuple[float, float] = (-1000.0, 1000.0),
                            patch_size: tuple[int, int, int] = (96, 96, 96),
                            derivation: str | None = None) -> tuple[Path, dict[str, Any]]:
    """Turn a foreign checkpoint (e.g. the MONAI ``wholeBody_ct_segmentation`` bundle's ``model.pt``) into one
    of our verified packages, to be used as a transfer-learning source.

    The network (default: the bundle's SegResNet, :data:`~cervixtl.models.networks.WHOLEBODY_CT_SEGRESNET`)
    is built, every matching tensor is loaded (:func:`load_matching_weights`) and the package is written with
    a card whose labels are ``label_names`` (default ``class_1`` .. ``class_<out_channels - 1>`` for softmax).
    Spacing is in mm (x, y, z), patch size in voxels (z, y, x).

    Returns:
        (package path, load report of :func:`load_matching_weights`).

    Raises:
        ModelError: unreadable checkpoint, or no tensor of it fits the architecture.
    """
    from .card import ModelCard
    from .networks import WHOLEBODY_CT_SEGRESNET, build_from_params
    from .package import save_package

    params = dict(params or WHOLEBODY_CT_SEGRESNET)
    state = read_checkpoint(checkpoint)
    net = build_from_params(architecture, params)
    report = load_matching_weights(net, state)
    if report["loaded"] == 0:
        raise ModelError(f"{checkpoint}: no tensor matches a {architecture} with {params}")
    out_ch = int(params.get("out_channels", 1))
    first = 1 if output == "softmax" else 0
    names = label_names or [f"class_{i}" for i in range(first, out_ch)]
    labels = [{"channel": first + i, "name": n, "color": [0.5, 0.5, 0.5], "terminology": None}
              for i, n in enumerate(names)]
    card = ModelCard(
        name=name, version=str(version), architecture={"name": architecture, "params": params},
        labels=labels, output=output,
        input={"spacing_mm": list(spacing_mm), "orientation": "LPS", "window_hu": list(window_hu),
               "normalisation": "window-to-unit", "patch_size": list(patch_size)},
        derivation=derivation or f"imported from checkpoint {Path(checkpoint).name}: {report['loaded']} tensors "
                                 f"loaded, {report['reinitialised']} re-initialised, {report['skipped']} skipped",
        training={}, intended_use="transfer-learning source model; not for clinical contouring as is",
    )
    return save_package(dest_dir, card, net.state_dict()), report
