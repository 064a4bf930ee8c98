"""nnU-Net v2 networks rebuilt from their ``plans.json`` architecture with ``dynamic_network_architectures``.

The card's ``architecture`` is ``{"name": "nnUNet", "params": {"network_class": "PlainConvUNet",
"in_channels": 1, "out_channels": K, "arch_kwargs": {...}}}`` where ``arch_kwargs`` are the plans'
``architecture.arch_kwargs`` (``n_stages``, ``features_per_stage``, ``kernel_sizes``, ``strides``, ...). The
operator entries nnU-Net stores as dotted names (``conv_op``, ``norm_op``, ``dropout_op``, ``nonlin``) are
resolved from :data:`OPERATORS`, a fixed allow-list: a card can never make CervixTL import an arbitrary name.

The network is built without deep supervision (one output, the full-resolution head); the deep-supervision
heads (``decoder.seg_layers.0 .. n-2``) still exist as parameters, as in nnU-Net, so checkpoints load strictly.
``dynamic_network_architectures`` registers some modules twice (``decoder.encoder.*`` is the encoder,
``*.all_modules.*`` repeats each conv block): the built network's ``state_dict()`` leaves these aliases out and
``load_state_dict`` fills them from their originals, so a package stores each tensor once.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from ..errors import ModelError

__all__ = ["OPERATORS", "NETWORK_CLASSES", "build_nnunet", "resolve_operator", "alias_map"]

#: nnU-Net operator names (as written in plans.json) -> torch classes. Anything else is refused.
OPERATORS: dict[str, type] = {
    f"torch.nn.modules.{mod}.{cls}": getattr(torch.nn, cls)
    for mod, classes in {
        "conv": ("Conv1d", "Conv2d", "Conv3d"),
        "instancenorm": ("InstanceNorm1d", "InstanceNorm2d", "InstanceNorm3d"),
        "batchnorm": ("BatchNorm1d", "BatchNorm2d", "BatchNorm3d"),
        "dropout": ("Dropout", "Dropout1d", "Dropout2d", "Dropout3d"),
        "activation": ("LeakyReLU", "ReLU", "PReLU", "ELU", "GELU"),
    }.items() for cls in classes
}
OPERATORS.update({name.replace(f".modules.{name.split('.')[3]}", ""): op for name, op in list(OPERATORS.items())})

#: The nnU-Net network classes CervixTL rebuilds (the plain and residual-encoder U-Nets).
NETWORK_CLASSES = ("PlainConvUNet", "ResidualEncoderUNet")
_OPERATOR_KEYS = ("conv_op", "norm_op", "dropout_op", "nonlin")


def resolve_operator(name: Any) -> type | None:
    """The torch class of an nnU-Net operator name (``None`` stays ``None``).

    Raises:
        ModelError: a name that is not on the allow-list :data:`OPERATORS`.
    """
    if name is None:
        return None
    op = OPERATORS.get(str(name))
    if op is None:
        raise ModelError(f"nnU-Net operator {name!r} is not one CervixTL builds (allowed: torch.nn Conv, "
                         "InstanceNorm, BatchNorm, Dropout, LeakyReLU/ReLU/PReLU/ELU/GELU)")
    return op


def network_class_name(name: str) -> str:
    """The short class name of a plans ``network_class_name`` (e.g. ``...unet.PlainConvUNet`` -> ``PlainConvUNet``).

    Raises:
        ModelError: not one of :data:`NETWORK_CLASSES`.
    """
    short = str(name).rsplit(".", 1)[-1]
    if short not in NETWORK_CLASSES:
        raise ModelError(f"nnU-Net network class {name!r} is not supported (supported: {', '.join(NETWORK_CLASSES)})")
    return short


def build_nnunet(params: Mapping[str, Any]) -> torch.nn.Module:
    """The nnU-Net network of card ``params`` (see the module docstring), randomly initialised as nnU-Net does.

    Raises:
        ModelError: unknown class, operator or argument.
    """
    try:
        from dynamic_network_architectures.architectures import unet
    except ImportError:
        raise ModelError("nnU-Net source models need the package dynamic-network-architectures "
                         "(pip install --no-deps dynamic-network-architectures==0.4.4)") from None

    try:
        cls = getattr(unet, network_class_name(params["network_class"]))
        kwargs = dict(params["arch_kwargs"])
        in_ch, out_ch = int(params["in_channels"]), int(params["out_channels"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelError(f"nnUNet architecture params are incomplete ({exc})") from None
    for key in _OPERATOR_KEYS:
        if key in kwargs:
            kwargs[key] = resolve_operator(kwargs[key])
    if "block" in kwargs:
        raise ModelError("nnUNet architecture: custom residual 'block' classes are not supported")
    kwargs["deep_supervision"] = False
    try:
        net = cls(input_channels=in_ch, num_classes=out_ch, **kwargs)
    except (TypeError, ValueError, AssertionError, RuntimeError, IndexError) as exc:
        raise ModelError(f"cannot build nnU-Net {params.get('network_class')} from the plans: {exc}") from None
    if hasattr(net, "initialize"):
        net.apply(net.initialize)
    _install_alias_hooks(net)
    return net


def alias_map(net: torch.nn.Module) -> dict[str, str]:
    """``{alias key: original key}`` for state-dict entries that are the same tensor registered twice.

    Tensors are matched by identity (a module registered twice holds the very same parameter objects), not by
    storage address, so this also holds for a network built on the ``meta`` device (every address 0), as the
    registry's import check builds it."""
    first: dict[int, str] = {}
    aliases: dict[str, str] = {}
    for key, tensor in torch.nn.Module.state_dict(net, keep_vars=True).items():
        if not isinstance(tensor, torch.Tensor) or tensor.numel() == 0:
            continue
        ptr = id(tensor)
        if ptr in first:
            aliases[key] = first[ptr]
        else:
            first[ptr] = key
    return aliases


def _install_alias_hooks(net: torch.nn.Module) -> None:
    aliases = alias_map(net)
    net.__dict__["_cervixtl_aliases"] = aliases  # a plain attribute (not a parameter, buffer or sub-module)

    def drop_aliases(module: torch.nn.Module, state: dict, prefix: str, local_metadata: Any) -> None:
        for key in aliases:
            state.pop(prefix + key, None)

    def fill_aliases(module: torch.nn.Module, state: dict, prefix: str, *args: Any) -> None:
        for alias, original in aliases.items():
            if prefix + alias not in state and prefix + original in state:
                state[prefix + alias] = state[prefix + original]

    net.register_state_dict_post_hook(drop_aliases)
    net.register_load_state_dict_pre_hook(fill_aliases)


def plain_state(net_state: Mapping[str, torch.Tensor], net: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A checkpoint's ``network_weights`` without the alias keys of ``net`` (see :func:`alias_map`)."""
    aliases = getattr(net, "_cervixtl_aliases", None) or alias_map(net)
    return {k: v for k, v in net_state.items() if k not in aliases}
