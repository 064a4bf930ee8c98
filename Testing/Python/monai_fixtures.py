"""A random-weight MONAI bundle in the ``wholeBody_ct_segmentation`` layout, for tests and benchmarks:
``configs/inference.json`` (the bundle's transforms and inferer, with its ``$`` expressions),
``configs/metadata.json`` (TotalSegmentator v1 channel names) and ``models/model_lowres.pt`` (SegResNet, 105
channels, MONAI's random initialisation with a spread-out final layer so that the argmax is not a near tie)."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from shared_data import DATA, need

__all__ = ["NET", "wholebody_config", "make_wholebody_bundle"]

NET = {"_target_": "SegResNet", "spatial_dims": 3, "in_channels": 1, "out_channels": 105, "init_filters": 32,
       "blocks_down": [1, 2, 2, 4], "blocks_up": [1, 1, 1], "dropout_prob": 0.2}


def wholebody_config(highres: bool) -> dict:
    """The bundle's ``configs/inference.json`` (1.5 mm ``model.pt`` or 3 mm ``model_lowres.pt``)."""
    keys = "@image_key"
    return {
        "displayable_configs": {"highres": highres, "sw_overlap": 0.25, "sw_batch_size": 1},
        "imports": ["$import glob", "$import os"], "bundle_root": ".", "image_key": "image",
        "device": "$torch.device('cuda:0' if torch.cuda.is_available() else 'cpu')",
        "pixdim": "$[1.5, 1.5, 1.5] if @displayable_configs#highres else [3.0, 3.0, 3.0]",
        "modelname": "$'model.pt' if @displayable_configs#highres else 'model_lowres.pt'",
        "network_def": NET, "network": "$@network_def.to(@device)",
        "preprocessing": {"_target_": "Compose", "transforms": [
            {"_target_": "LoadImaged", "keys": keys}, {"_target_": "EnsureTyped", "keys": keys},
            {"_target_": "EnsureChannelFirstd", "keys": keys},
            {"_target_": "Orientationd", "keys": keys, "axcodes": "RAS"},
            {"_target_": "Spacingd", "keys": keys, "pixdim": "@pixdim", "mode": "bilinear"},
            {"_target_": "NormalizeIntensityd", "keys": keys, "nonzero": True},
            {"_target_": "ScaleIntensityd", "keys": keys, "minv": -1.0, "maxv": 1.0}]},
        "inferer": {"_target_": "SlidingWindowInferer", "roi_size": [96, 96, 96],
                    "sw_batch_size": "@displayable_configs#sw_batch_size",
                    "overlap": "@displayable_configs#sw_overlap", "padding_mode": "replicate", "mode": "gaussian"},
    }


def make_wholebody_bundle(root: Path, seed: int = 0, *, init_filters: int = 32, pixdim_mm: float | None = None,
                          roi_size: int | None = None, spread_head: bool = True) -> Path:
    """Write the bundle folder ``root`` (low-resolution configuration); returns ``root``.

    ``init_filters``, ``pixdim_mm`` (isotropic, replaces the config's spacing expression) and ``roi_size``
    (cubic window, voxels) make a smaller, coarser bundle; ``spread_head`` scales the final layer so that the
    argmax is not a near tie (off: MONAI's plain random initialisation)."""
    from monai.networks.nets import SegResNet

    net_def = {**NET, "init_filters": init_filters}
    cfg = {**wholebody_config(highres=False), "network_def": net_def}
    if pixdim_mm is not None:
        cfg["pixdim"] = [pixdim_mm] * 3
    if roi_size is not None:
        cfg["inferer"] = {**cfg["inferer"], "roi_size": [roi_size] * 3}
    (root / "configs").mkdir(parents=True)
    (root / "models").mkdir()
    (root / "configs" / "inference.json").write_text(json.dumps(cfg, indent=2))
    names = json.loads(need(DATA / "totalseg_example" / "labels.json").read_text())  # TotalSegmentator v1 classes
    channel_def = {"0": "background", **{str(k): v for k, v in names.items()}}
    meta = {"version": "0.1.9", "name": "Whole body CT segmentation",
            "network_data_format": {"outputs": {"pred": {"type": "image", "num_channels": 105,
                                                         "channel_def": channel_def}}}}
    (root / "configs" / "metadata.json").write_text(json.dumps(meta, indent=2))
    torch.manual_seed(seed)
    net = SegResNet(**{k: v for k, v in net_def.items() if k != "_target_"})
    if spread_head:
        with torch.no_grad():
            net.conv_final[-1].conv.weight.mul_(30.0)
            net.conv_final[-1].conv.bias.copy_(torch.randn(105))
    torch.save(net.state_dict(), root / "models" / "model_lowres.pt")
    return root
