"""MONAI bundle sources: a random-weight bundle in the wholeBody_ct_segmentation layout (SegResNet, 105
channels; configs/inference.json with its transforms, configs/metadata.json channel names, models/*.pt) is
imported and run by CervixTL; the reference is the bundle's own MONAI inference built in the test from the
transforms its config names (LoadImaged, EnsureChannelFirstd, Orientationd RAS, Spacingd, NormalizeIntensityd
nonzero, ScaleIntensityd -1..1, SlidingWindowInferer Gaussian / replicate, softmax argmax) on the real CT.
The low-resolution (3 mm) configuration is used so that the real 3 mm CT needs no resampling in either pipeline.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from cervixtl.errors import ModelError
from shared_data import DATA, need

CT = DATA / "totalseg_example" / "example_ct.nii.gz"
NET = {"_target_": "SegResNet", "spatial_dims": 3, "in_channels": 1, "out_channels": 105, "init_filters": 32,
       "blocks_down": [1, 2, 2, 4], "blocks_up": [1, 1, 1], "dropout_prob": 0.2}


def _config(highres: bool) -> dict:
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


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    from monai.networks.nets import SegResNet

    root = tmp_path_factory.mktemp("bundles") / "wholeBody_ct_segmentation"
    (root / "configs").mkdir(parents=True)
    (root / "models").mkdir()
    (root / "configs" / "inference.json").write_text(json.dumps(_config(highres=False), indent=2))
    names = json.loads((DATA / "totalseg_example" / "labels.json").read_text())  # TotalSegmentator v1 classes
    channel_def = {"0": "background", **{str(k): v for k, v in names.items()}}
    meta = {"version": "0.1.9", "name": "Whole body CT segmentation",
            "network_data_format": {"outputs": {"pred": {"type": "image", "num_channels": 105,
                                                         "channel_def": channel_def}}}}
    (root / "configs" / "metadata.json").write_text(json.dumps(meta, indent=2))
    torch.manual_seed(0)
    net = SegResNet(**{k: v for k, v in NET.items() if k != "_target_"})
    with torch.no_grad():
        net.conv_final[-1].conv.weight.mul_(30.0)
        net.conv_final[-1].conv.bias.copy_(torch.randn(105))
    torch.save(net.state_dict(), root / "models" / "model_lowres.pt")
    return root


def test_expressions_are_never_executed(tmp_path):
    from monai.bundle import ConfigParser

    from cervixtl.models.sources.monai_bundle import safe_value

    p = ConfigParser()
    p.read_config({"a": 2, "ok": "$[1, 2] if @a == 2 else [3]", "bad": "$__import__('os').system('true')"})
    assert safe_value(p, "ok") == [1, 2]
    with pytest.raises(ModelError, match="not evaluated"):
        safe_value(p, "bad")


def test_bundle_card(bundle, tmp_path):
    from cervixtl.models.package import load_package
    from cervixtl.models.sources import import_source, source_kind

    assert source_kind(bundle) == "monai_bundle"
    pkg, _ = import_source(bundle, tmp_path / "pkg", name="wholebody-lowres")
    card, state = load_package(pkg)
    assert card.architecture["name"] == "SegResNet" and card.architecture["params"]["out_channels"] == 105
    assert (card.orientation, card.axis_order, card.spacing_mm) == ("RAS", "xyz", (3.0, 3.0, 3.0))
    assert card.intensity == {"kind": "monai_normalize_scale", "nonzero": True, "minv": -1.0, "maxv": 1.0}
    assert card.label("urinary_bladder")["channel"] == 104 and card.label("urinary_bladder")["structure"] == "Bladder"
    src = torch.load(bundle / "models" / "model_lowres.pt", weights_only=True)
    assert set(state) == set(src) and all(torch.equal(state[k], src[k]) for k in src)


@pytest.mark.slow
def test_fidelity_with_the_bundles_own_monai_inference(bundle, tmp_path):
    from monai.inferers import SlidingWindowInferer
    from monai.transforms import (
        Compose,
        EnsureChannelFirstd,
        EnsureTyped,
        LoadImaged,
        NormalizeIntensityd,
        Orientationd,
        ScaleIntensityd,
        Spacingd,
    )

    from cervixtl.image import reorient
    from cervixtl.inference import predict_labels
    from cervixtl.io import read_ct
    from cervixtl.models.registry import Registry
    from cervixtl.models.sources import import_source

    torch.set_num_threads(2)
    crop = sitk.DICOMOrient(sitk.ReadImage(str(need(CT))), "LPS")[0:110, 0:96, 30:94]  # stored LPS, 3 mm
    ct_file = tmp_path / "ct.nii.gz"
    sitk.WriteImage(crop, str(ct_file))

    pkg, _ = import_source(bundle, tmp_path / "pkg", name="wholebody-lowres")
    reg = Registry(tmp_path / "reg")
    reg.add(pkg)
    card, net = reg.load("wholebody-lowres")
    ct = read_ct(ct_file)
    pred = predict_labels(ct, card, net, device="cpu", postprocess=False)
    ours = np.zeros(ct.array.shape, np.int16)
    for lab in card.labels:
        ours[pred.masks[lab["name"]]] = int(lab["channel"])
    ours_ras = np.transpose(reorient(ct.with_array(ours), "RAS").array, (2, 1, 0))  # (x, y, z) as MONAI

    k = "image"
    pre = Compose([LoadImaged(k), EnsureTyped(k), EnsureChannelFirstd(k), Orientationd(k, axcodes="RAS"),
                   Spacingd(k, pixdim=(3.0, 3.0, 3.0), mode="bilinear"), NormalizeIntensityd(k, nonzero=True),
                   ScaleIntensityd(k, minv=-1.0, maxv=1.0)])
    x = pre({k: str(ct_file)})[k]
    inferer = SlidingWindowInferer(roi_size=(96, 96, 96), sw_batch_size=1, overlap=0.25, mode="gaussian",
                                   padding_mode="replicate")
    with torch.inference_mode():
        ref = torch.argmax(torch.softmax(inferer(torch.as_tensor(x)[None], net), dim=1)[0], dim=0).numpy()
    assert ref.shape == ours_ras.shape
    counts = np.bincount(ref.ravel(), minlength=105) / ref.size
    agree = float((ref == ours_ras).mean())
    print(f"bundle agreement {agree:.5f}; {int((counts > 0.001).sum())} classes over 0.1 %, largest {counts.max():.3f}")
    assert (counts > 0.001).sum() >= 5 and counts.max() < 0.8
    assert agree >= 0.99


def test_bundle_zip_imports_through_the_cli(bundle, tmp_path, capsys):
    import shutil

    from cervixtl.cli import main
    from cervixtl.models.registry import Registry

    archive = shutil.make_archive(str(tmp_path / "wholeBody_ct_segmentation_v0.1.9"), "zip", bundle.parent,
                                  bundle.name)
    md = ["--models-dir", str(tmp_path / "reg")]
    assert main(["models", "import", archive, "--name", "wholebody", *md]) == 0
    assert "monai_bundle source: 104 classes" in capsys.readouterr().out
    card = Registry(tmp_path / "reg").card("wholebody")
    assert card.axis_order == "xyz" and card.training["source"]["weights"] == "model_lowres.pt"
