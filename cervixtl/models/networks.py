"""Networks built from a model card: MONAI ``SegResNet``, ``SegResNetDS`` (MONAI Auto3DSeg), ``DynUNet``,
``UNet`` and ``SwinUNETR``, and
nnU-Net v2's U-Nets (``nnUNet``: ``PlainConvUNet`` / ``ResidualEncoderUNet`` of ``dynamic_network_architectures``,
the package nnU-Net itself builds its networks with).

For MONAI networks the card's ``architecture.params`` are passed unchanged to the constructor (``spatial_dims``,
``in_channels``, ``out_channels``, ...). For ``nnUNet`` they are ``{"network_class", "in_channels",
"out_channels", "arch_kwargs"}`` as in an nnU-Net ``plans.json`` (operator names such as
``"torch.nn.modules.conv.Conv3d"`` are resolved from a fixed allow-list, never imported by name). Networks take
tensors shaped [batch, channel, *the card's axis order*] (``input.axis_order``, default (z, y, x)).
"""

from __future__ import annotations

import inspect
from typing import Any

import torch

from ..errors import ModelError
from .card import ModelCard

#: The MONAI model-zoo ``wholeBody_ct_segmentation`` bundle network (SegResNet, 104 TotalSegmentator classes
#: + background = 105 softmax channels; trained at 1.5 mm isotropic, or 3.0 mm for the low-resolution model,
#: in RAS orientation with z-score then [-1, 1] intensity scaling).
WHOLEBODY_CT_SEGRESNET: dict[str, Any] = {
    "spatial_dims": 3,
    "in_channels": 1,
    "out_channels": 105,
    "init_filters": 32,
    "blocks_down": [1, 2, 2, 4],
    "blocks_up": [1, 1, 1],
    "dropout_prob": 0.2,
}


def _classes() -> dict[str, type]:
    from monai.networks.nets import DynUNet, SegResNet, SegResNetDS, SwinUNETR, UNet

    return {"SegResNet": SegResNet, "SegResNetDS": SegResNetDS, "DynUNet": DynUNet, "UNet": UNet,
            "SwinUNETR": SwinUNETR}


def build_from_params(arch_name: str, params: dict[str, Any]) -> torch.nn.Module:
    """Build network ``arch_name`` (a MONAI class name, or ``"nnUNet"``) with constructor arguments ``params``.

    Raises:
        ModelError: unknown architecture, unknown or invalid argument.
    """
    if arch_name == "nnUNet":
        from .nnunet_net import build_nnunet

        return build_nnunet(params)
    classes = _classes()
    cls = classes.get(arch_name)
    if cls is None:
        raise ModelError(f"architecture {arch_name!r} is not one of {', '.join(classes)}")
    accepted = set(inspect.signature(cls).parameters) - {"self"}
    unknown = sorted(set(params) - accepted)
    if unknown:
        raise ModelError(f"{arch_name} does not take argument(s) {', '.join(unknown)}")
    kwargs = dict(params)
    if arch_name == "SwinUNETR" and "img_size" in kwargs and "img_size" not in accepted:
        kwargs.pop("img_size")
    try:
        return cls(**kwargs)
    except (TypeError, ValueError, AssertionError, RuntimeError) as exc:
        raise ModelError(f"cannot build {arch_name} with {params}: {exc}") from None


def build_network(card: ModelCard) -> torch.nn.Module:
    """The (randomly initialised) network described by ``card`` (weights are loaded separately)."""
    return build_from_params(card.architecture["name"], card.architecture["params"])


def segresnet_card(name: str, labels: list[str], *, version: str = "1", init_filters: int = 8,
                   spacing_mm: tuple[float, float, float] = (2.0, 2.0, 3.0),
                   patch_size: tuple[int, int, int] = (32, 96, 96), window_hu: tuple[float, float] = (-200.0, 300.0),
                   output: str = "sigmoid", ptv_margin_mm: float | list[float] = 7.0,
                   ctv_margin_mm: float | list[float] | None = None, derivation: str = "trained from scratch",
                   intended_use: str = "research: proposal of cervical-cancer RT targets for expert review"):
    """A model card for a MONAI SegResNet (blocks 1-2-2-4 / 1-1-1) predicting ``labels`` (canonical names).

    ``init_filters`` must be even; group normalisation uses ``min(8, init_filters // 2)`` groups so that small
    test networks (init_filters 4) build. Spacing in mm (x, y, z); patch in voxels (z, y, x), each a multiple
    of 8.
    """
    from .card import ModelCard, make_labels

    first = 1 if output == "softmax" else 0
    params = {"spatial_dims": 3, "in_channels": 1, "out_channels": len(labels) + first,
              "init_filters": int(init_filters), "blocks_down": [1, 2, 2, 4], "blocks_up": [1, 1, 1],
              "norm": ["GROUP", {"num_groups": max(1, min(8, int(init_filters) // 2))}]}
    return ModelCard(
        name=name, version=str(version), architecture={"name": "SegResNet", "params": params},
        labels=make_labels(labels, first_channel=first), output=output,
        input={"spacing_mm": list(spacing_mm), "orientation": "LPS", "window_hu": list(window_hu),
               "normalisation": "window-to-unit", "patch_size": list(patch_size)},
        protocol={"ctv_margin_mm": ctv_margin_mm, "ptv_margin_mm": ptv_margin_mm},
        derivation=derivation, intended_use=intended_use,
    )
