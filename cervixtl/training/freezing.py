"""Freezing for fine-tuning, counted in the order the network runs (a traced forward pass).

A network's *blocks* are its top-level children, with ``ModuleList`` children expanded into their elements
(SegResNet: ``convInit``, ``down_layers.0..3``, ``up_samples.i`` / ``up_layers.i`` interleaved,
``conv_final``; a network with a single container child is expanded one level down). Their order is the order
of their first call in a forward pass with hooks, not the order of definition: SegResNet defines all
``up_layers`` before all ``up_samples`` but runs ``up_samples.2`` then ``up_layers.2`` then ``conv_final``.

Strategies: ``none``; ``encoder`` (the down-sampling path and bottleneck, by the architecture's parameter
names, :func:`cervixtl.models.transfer.encoder_parameter_names`); ``all-but-last-N`` (every block except the
last N in forward order). Normalisation layers whose parameters are all frozen are kept in eval mode
(:func:`freeze_norm_stats`), so their running statistics do not drift either.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import torch

from ..errors import BadInput

__all__ = ["blocks", "forward_order", "freeze", "freeze_norm_stats"]


def blocks(net: torch.nn.Module) -> list[tuple[str, torch.nn.Module]]:
    """The blocks of ``net`` (see the module docstring) in definition order, those owning parameters.
    nnU-Net U-Nets: each encoder stage, each decoder up-convolution and stage, and the output heads."""
    if hasattr(net, "encoder") and hasattr(net, "decoder") and hasattr(net.decoder, "seg_layers"):
        return [(f"{part}.{k}", m) for part in ("encoder.stages", "decoder.transpconvs", "decoder.stages",
                                                "decoder.seg_layers")
                for k, m in net.get_submodule(part).named_children() if any(True for _ in m.parameters())]
    items = list(net.named_children())
    while len(items) == 1 and list(items[0][1].children()):
        name, mod = items[0]
        items = [(f"{name}.{k}", m) for k, m in mod.named_children()]
    out: list[tuple[str, torch.nn.Module]] = []
    for name, mod in items:
        if isinstance(mod, torch.nn.ModuleList):
            out += [(f"{name}.{k}", m) for k, m in mod.named_children()]
        else:
            out.append((name, mod))
    return [(n, m) for n, m in out if any(True for _ in m.parameters())]


@torch.no_grad()
def forward_order(net: torch.nn.Module, patch_size: Sequence[int], in_channels: int = 1) -> list[str]:
    """Block names in the order a forward pass on a zero input [1, in_channels, *patch_size] calls them
    (blocks never called come first)."""
    order: list[str] = []
    handles = []
    named = blocks(net)
    for name, mod in named:
        handles.append(mod.register_forward_pre_hook(lambda m, a, name=name: order.append(name)
                                                     if name not in order else None))
    was_training = net.training
    try:
        dev = next(net.parameters()).device
        net.eval()(torch.zeros((1, in_channels, *[int(p) for p in patch_size]), device=dev))
    finally:
        for h in handles:
            h.remove()
        net.train(was_training)
    return [n for n, _ in named if n not in order] + order


def freeze(net: torch.nn.Module, strategy: str, patch_size: Sequence[int], in_channels: int = 1) -> list[str]:
    """Freeze parameters of ``net`` (``requires_grad = False``) by ``strategy`` (module docstring) and return
    their names. ``patch_size`` (z, y, x voxels) is the input of the tracing forward pass.

    Raises:
        BadInput: unknown strategy, or N not smaller than the number of blocks.
    """
    for p in net.parameters():
        p.requires_grad_(True)
    strategy = (strategy or "none").strip().lower()
    if strategy == "none":
        return []
    if strategy == "encoder":
        from ..models.transfer import encoder_parameter_names

        names = set(encoder_parameter_names(net))
    else:
        m = re.fullmatch(r"all-but-last-(\d+)", strategy)
        if not m or int(m.group(1)) < 1:
            raise BadInput(f"unknown freeze strategy {strategy!r}: use none, encoder or all-but-last-N (N >= 1)")
        order = forward_order(net, patch_size, in_channels)
        n_keep = int(m.group(1))
        if n_keep >= len(order):
            raise BadInput(f"freeze {strategy}: the network has only {len(order)} blocks ({', '.join(order)})")
        keep = order[-n_keep:]
        names = {n for n, _ in net.named_parameters() if not any(n.startswith(k + ".") for k in keep)}
    frozen = []
    for n, p in net.named_parameters():
        if n in names:
            p.requires_grad_(False)
            frozen.append(n)
    return frozen


def freeze_norm_stats(net: torch.nn.Module) -> int:
    """Put every normalisation layer with running statistics (BatchNorm, InstanceNorm with
    ``track_running_stats``) whose parameters are all frozen into eval mode; call after each ``net.train()``.
    Returns how many."""
    n = 0
    for mod in net.modules():
        if isinstance(mod, (torch.nn.modules.batchnorm._BatchNorm, torch.nn.modules.instancenorm._InstanceNorm)):
            params = list(mod.parameters(recurse=False))
            if getattr(mod, "track_running_stats", False) and params and all(not p.requires_grad for p in params):
                mod.eval()
                n += 1
    return n
