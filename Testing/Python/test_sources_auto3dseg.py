"""MONAI Auto3DSeg sources (SlicerMONAIAuto3DSeg's TS2 models): a random-weight checkpoint in the layout the
extension downloads (``model.pt`` = {state_dict, config, epoch, best_metric} written by Auto3DSeg's SegResNet
trainer, ``labels.csv`` with LabelValue, Name and DICOM codes) is imported and run by CervixTL. The reference
is the extension's own inference, rebuilt in the test from the MONAI transforms its script uses, in its order:
LoadImaged, ConcatItemsd, EnsureTyped, ScaleIntensityRanged (to [-1, 1], no clip) + sigmoid, Orientationd RAS,
CropForegroundd (source: the image as loaded, margin 10, allow_smaller), Spacingd (min/max pixdim 0.75 / 1.25),
SlidingWindowInfererAdapt (overlap 0.625, Gaussian), softmax argmax, Invertd (nearest). The real CT is stored
LPS with air added on two sides, so that reorientation, the foreground box and zero padding all matter.
"""

from __future__ import annotations

import argparse
import csv
import shutil
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from cervixtl.errors import ModelError
from shared_data import DATA, need

CT = DATA / "totalseg_example" / "example_ct.nii.gz"
#: (value, name, type code, modifier code): TS2 pelvic labels as SlicerMONAIAuto3DSeg's labels.csv names them.
LABELS = [(1, "Colon", ("SCT", "71854001", "Colon"), None),
          (2, "Small Intestine", ("SCT", "30315005", "Small intestine"), None),
          (3, "Urinary bladder", ("SCT", "89837001", "Urinary bladder"), None),
          (4, "Sacrum", ("SCT", "54735007", "Sacrum"), None),
          (5, "Left Femur", ("SCT", "71341001", "Femur"), ("SCT", "7771000", "Left")),
          (6, "Right Femur", ("SCT", "71341001", "Femur"), ("SCT", "24028007", "Right")),
          (7, "Left Iliopsoas muscle", ("SCT", "68455001", "Iliopsoas muscle"), ("SCT", "7771000", "Left"))]
NET = {"_target_": "SegResNetDS", "init_filters": 8, "blocks_down": [1, 2, 2, 4], "norm": "INSTANCE_NVFUSER",
       "in_channels": 1, "out_channels": 8, "dsdepth": 2}
BOUNDS = [-160.0, 240.0]


def _config() -> dict:
    """A checkpoint config as Auto3DSeg's trainer saves it (resolved values, plus what inference ignores)."""
    return {"network": dict(NET), "roi_size": [64, 64, 64], "resample_resolution": [3.0, 3.0, 3.0],
            "normalize_mode": "range", "intensity_bounds": list(BOUNDS), "orientation_ras": True,
            "crop_foreground": True, "sigmoid": False, "modality": "ct", "bundle_root": "/models/whole-body-3mm",
            "class_names": [n for _, n, _, _ in LABELS], "extra_modalities": {}, "output_classes": 8,
            "loss": {"_target_": "DiceCELoss", "include_background": True, "softmax": True},
            "optimizer": {"_target_": "torch.optim.AdamW", "lr": 2e-4}, "amp": True, "channels_last": True,
            "infer": {"enabled": False, "ckpt_name": "$@bundle_root + '/model/model.pt'"}}


def _write_labels(path) -> None:
    cols = ["LabelValue", "Name"] + [f"{s}.{k}" for s in ("SegmentedPropertyCategoryCodeSequence",
                                                          "SegmentedPropertyTypeCodeSequence",
                                                          "SegmentedPropertyTypeModifierCodeSequence",
                                                          "AnatomicRegionSequence", "AnatomicRegionModifierSequence")
                                     for k in ("CodingSchemeDesignator", "CodeValue", "CodeMeaning")]
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(cols)
        for value, name, typ, mod in LABELS:
            w.writerow([value, name, "SCT", "123037004", "Anatomical Structure", *typ, *(mod or ("", "", "")),
                        "", "", "", "", "", ""])


def _make_model(root, config=None, seed=0):
    from monai.bundle import ConfigParser

    root.mkdir(parents=True)
    config = config or _config()
    torch.manual_seed(seed)
    net = ConfigParser(dict(config["network"])).get_parsed_content()  # as the extension's script builds it
    with torch.no_grad():  # random weights strong enough that several classes win somewhere
        head = net.up_layers[-1].head
        head.weight.mul_(40.0)
        head.bias.copy_(torch.randn(8))
    torch.save({"state_dict": net.state_dict(), "config": config, "epoch": 300,
                "best_metric": np.float64(0.871)}, root / "model.pt")
    _write_labels(root / "labels.csv")
    return root


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return _make_model(tmp_path_factory.mktemp("a3d") / "whole-body-3mm-v2.0.0")


def test_range_sigmoid_intensity_matches_monai_and_round_trips_through_a_card(tmp_path):
    from monai.transforms import ScaleIntensityRange

    from cervixtl.intensity import apply_intensity, spec_from_input

    spec = spec_from_input({"intensity": {"kind": "range_sigmoid", "range_hu": BOUNDS}})
    lo, hi = BOUNDS
    got = apply_intensity(np.array([lo, hi, (lo + hi) / 2, -1e6]), spec)
    assert np.allclose(got, [1 / (1 + np.e), 1 / (1 + np.exp(-1)), 0.5, 0.0], atol=1e-6)
    hu = np.random.default_rng(0).uniform(-1200, 2000, (4, 5, 6)).astype(np.float32)
    ref = torch.sigmoid(ScaleIntensityRange(a_min=lo, a_max=hi, b_min=-1, b_max=1, clip=False)(torch.from_numpy(hu)))
    assert np.allclose(apply_intensity(hu, spec), ref.numpy(), atol=1e-6)
    with pytest.raises(ModelError):
        spec_from_input({"intensity": {"kind": "range_sigmoid", "range_hu": [10, 10]}})


def test_spacing_tolerance_and_foreground_box_are_monais():
    from cervixtl.input_grid import foreground_box, model_spacing

    assert model_spacing((0.98, 0.98, 2.5), (3.0, 3.0, 3.0), (0.75, 1.25)) == (3.0, 3.0, 2.5)
    assert model_spacing((0.98, 0.98, 2.5), (3.0, 3.0, 3.0)) == (3.0, 3.0, 3.0)
    a = np.full((20, 30, 40), -1000.0)
    a[5:7, 12:13, 30:38] = 40.0
    assert foreground_box(a, 0.0, 10) == [(0, 17), (2, 23), (20, 40)]
    assert foreground_box(a - 2000, 0.0, 10) is None


def test_card_from_checkpoint_and_labels(model, tmp_path):
    from cervixtl.models.package import load_package
    from cervixtl.models.sources import default_name, import_source, source_kind

    assert source_kind(model) == "monai_auto3dseg"
    assert default_name(model, "monai_auto3dseg") == "auto3dseg-whole-body-3mm-v2.0.0"
    pkg, rep = import_source(model, tmp_path / "pkg", name="ts2-3mm")
    card, state = load_package(pkg)
    assert rep["classes"] == 7 and card.architecture["name"] == "SegResNetDS"
    assert card.architecture["params"]["norm"] == "INSTANCE"
    assert (card.orientation, card.axis_order, card.spacing_mm, card.patch_size) == ("RAS", "xyz", (3.0, 3.0, 3.0),
                                                                                      (64, 64, 64))
    assert card.intensity == {"kind": "range_sigmoid", "range_hu": BOUNDS}
    assert card.input["spacing_tolerance"] == [0.75, 1.25]
    assert card.input["crop_foreground"] == {"above_hu": 0.0, "margin_voxels": 10, "box_grid": "model"}
    assert card.input["tiling"]["overlap"] == 0.625 and card.input["tiling"]["padding_mode"] == "constant"
    assert card.label("Urinary bladder")["channel"] == 3 and card.label("Urinary bladder")["structure"] == "Bladder"
    assert card.label("Small Intestine")["structure"] == "Bowel" == card.label("Colon")["structure"]
    assert card.label("Left Femur")["structure"] == "FemoralHead_L"
    psoas = card.label("Left Iliopsoas muscle")  # not a CervixTL structure: labels.csv's own DICOM codes
    assert "structure" not in psoas and psoas["terminology"]["type"] == ["SCT", "68455001", "Iliopsoas muscle"]
    assert psoas["terminology"]["typeModifier"] == ["SCT", "7771000", "Left"]
    assert card.training["source"] == {"kind": "monai_auto3dseg", "model": "whole-body-3mm-v2.0.0", "epoch": 300,
                                       "best_metric": 0.871}
    src = torch.load(model / "model.pt", weights_only=False)["state_dict"]  # our own test file
    assert set(state) == set(src) and all(torch.equal(state[k], src[k]) for k in src)


def test_checkpoints_needing_more_than_weights_and_bad_configs_are_refused(model, tmp_path):
    from cervixtl.models.sources import import_source

    bad = tmp_path / "bad"
    shutil.copytree(model, bad)
    ckpt = torch.load(model / "model.pt", weights_only=False)
    torch.save({**ckpt, "args": argparse.Namespace(fold=0)}, bad / "model.pt")
    with pytest.raises(ModelError, match=r"argparse\.Namespace.*not unpickled"):
        import_source(bad, tmp_path / "p1", name="bad")
    for change, match in (({"network": {**NET, "_target_": "os.system"}}, "not one of"),
                          ({"network": {**NET, "preprocess": "$lambda x: x"}}, "not read by CervixTL"),
                          ({"normalize_mode": "meanstd"}, "normalize_mode"), ({"sigmoid": True}, "sigmoid")):
        torch.save({**ckpt, "config": {**ckpt["config"], **change}}, bad / "model.pt")
        with pytest.raises(ModelError, match=match):
            import_source(bad, tmp_path / "p2", name="bad")
    torch.save(ckpt, bad / "model.pt")
    (bad / "labels.csv").write_text("LabelValue,Name\n1,../../etc\n", encoding="utf-8")
    with pytest.raises(ModelError, match="label"):
        import_source(bad, tmp_path / "p3", name="bad")
    (bad / "labels.csv").write_text("LabelValue,Name\n9,Colon\n", encoding="utf-8")
    with pytest.raises(ModelError, match="1..7"):
        import_source(bad, tmp_path / "p4", name="bad")


def _test_ct(tmp_path):
    """A real 3 mm CT region stored LPS, with air added anteriorly / to one side (an asymmetric body box)."""
    lps = sitk.DICOMOrient(sitk.ReadImage(str(need(CT))), "LPS")
    arr = sitk.GetArrayFromImage(lps)[30:78, 10:90, 10:100]  # (z, y, x) = 48 x 80 x 90
    arr = np.pad(arr, ((0, 0), (20, 4), (3, 15)), constant_values=-1000)
    img = sitk.GetImageFromArray(arr.astype(np.int16))
    img.SetSpacing(lps.GetSpacing())
    img.SetDirection(lps.GetDirection())
    img.SetOrigin(lps.TransformContinuousIndexToPhysicalPoint((10.0 - 3, 10.0 - 20, 30.0)))
    path = tmp_path / "ct.nii.gz"
    sitk.WriteImage(img, str(path))
    return path


def _reference(model_dir, ct_file, box_grid):
    """The label map (x, y, z, as loaded) of SlicerMONAIAuto3DSeg's inference, rebuilt from MONAI transforms:
    ``box_grid`` ``input``: the current script (normalise, reorient, crop with the box of the image as loaded);
    ``model``: the order of Auto3DSeg's own transforms and of the script before (reorient, crop on the
    reoriented HU image, resample, normalise)."""
    from monai.bundle import ConfigParser
    from monai.data import decollate_batch, list_data_collate
    from monai.inferers import SlidingWindowInfererAdapt
    from monai.transforms import (
        Compose,
        ConcatItemsd,
        CropForegroundd,
        EnsureTyped,
        Invertd,
        Lambdad,
        LoadImaged,
        Orientationd,
        ScaleIntensityRanged,
        Spacingd,
    )
    from monai.utils import convert_to_dst_type

    ckpt = torch.load(model_dir / "model.pt", map_location="cpu", weights_only=False)  # our own test file
    config = ckpt["config"]
    net = ConfigParser(config["network"]).get_parsed_content()
    net.load_state_dict(ckpt["state_dict"], strict=True)
    net.eval()
    lo, hi = config["intensity_bounds"]
    pixdim = list(config["resample_resolution"])
    load = LoadImaged(keys=["image1"], ensure_channel_first=True, dtype=None, allow_missing_keys=True,
                      image_only=False)
    loaded = load({"image1": str(ct_file)})
    normalise = [ScaleIntensityRanged(keys="image", a_min=lo, a_max=hi, b_min=-1, b_max=1, clip=False),
                 Lambdad(keys="image", func=lambda x: torch.sigmoid(x))]
    spacing = Spacingd(keys=["image"], pixdim=pixdim, mode=["bilinear"], dtype=torch.float,
                       min_pixdim=np.array(pixdim) * 0.75, max_pixdim=np.array(pixdim) * 1.25, allow_missing_keys=True)
    first = [ConcatItemsd(keys=["image1"], name="image", dim=0),
             EnsureTyped(keys="image", data_type="tensor", dtype=torch.float, allow_missing_keys=True)]
    orient = Orientationd(keys="image", axcodes="RAS")
    if box_grid == "input":
        ts = [*first, *normalise, orient,
              CropForegroundd(keys="image", source_key="image1", margin=10, allow_smaller=True), spacing]
    else:
        ts = [*first, orient, CropForegroundd(keys="image", source_key="image", margin=10, allow_smaller=True),
              spacing, *normalise]
    inf = Compose(ts)
    batch = list_data_collate([inf([loaded])])
    data = batch["image"].as_subclass(torch.Tensor)
    inferer = SlidingWindowInfererAdapt(roi_size=config["roi_size"], sw_batch_size=1, overlap=0.625, mode="gaussian",
                                        cache_roi_weight_map=False)
    with torch.no_grad():
        logits = inferer(inputs=data, network=net)
    pred = torch.argmax(torch.softmax(logits, dim=1), dim=1, keepdim=True).to(dtype=torch.uint8)
    batch["pred"] = convert_to_dst_type(pred, batch["image"], dtype=pred.dtype, device=pred.device)[0]
    post = Compose([Invertd(keys="pred", orig_keys="image", transform=inf, nearest_interp=True)])
    seg = [post(x)["pred"] for x in decollate_batch(batch)][0][0]
    return seg.cpu().numpy().astype(np.uint8), tuple(batch["image"].shape[2:])


@pytest.mark.slow
@pytest.mark.parametrize("box_grid", ["model", "input"])
def test_fidelity_with_the_extensions_own_monai_inference(model, tmp_path, box_grid):
    from cervixtl.inference import predict_labels
    from cervixtl.io import read_ct
    from cervixtl.models.registry import Registry
    from cervixtl.models.sources import import_source

    torch.set_num_threads(2)
    ct_file = _test_ct(tmp_path)
    pkg, _ = import_source(model, tmp_path / "pkg", name="ts2-3mm")
    reg = Registry(tmp_path / "reg")
    reg.add(pkg)
    card, net = reg.load("ts2-3mm")
    card.input["crop_foreground"]["box_grid"] = box_grid  # "model" is the imported default
    ct = read_ct(ct_file)
    pred = predict_labels(ct, card, net, device="cpu", postprocess=False)
    ours = np.zeros(ct.array.shape, np.uint8)
    for lab in card.labels:
        ours[pred.masks[lab["name"]]] = int(lab["channel"])
    ref, cropped = _reference(model, ct_file, box_grid)
    ref = np.transpose(ref, (2, 1, 0))  # MONAI (x, y, z) as loaded -> (z, y, x)
    assert ref.shape == ours.shape == (48, 104, 108)
    counts = np.bincount(ref.ravel(), minlength=8) / ref.size
    agree = float((ref == ours).mean())
    print(f"auto3dseg ({box_grid} box) agreement {agree:.5f}; classes over 1 %: {int((counts > 0.01).sum())}, "
          f"largest {counts.max():.3f}")
    assert (counts[1:] > 0.01).sum() >= 3 and counts.max() < 0.8
    body = ct.array > 0
    if box_grid == "model":  # the box of the body (x 3..92, y 20..99 stored LPS) + 10 voxels, clipped
        assert cropped == (103, 94, 48)
        assert ref[:, :, 5:].max() > 0 and ref[:, 94:, :].max() > 0
    else:  # the script's box, taken before reorientation, is mirrored in x and y: stored LPS x < 5 and
        assert cropped == (103, 94, 48)  # y >= 94 are left out although y 94..99 is body
        assert body[:, 94:, :].any()
        for lab in (ref, ours):
            assert lab[:, :, :5].max() == 0 and lab[:, 94:, :].max() == 0
    assert agree >= 0.99


def test_zip_with_a_top_folder_imports_through_the_cli(model, tmp_path, capsys):
    from cervixtl.cli import main
    from cervixtl.models.registry import Registry

    archive = shutil.make_archive(str(tmp_path / "whole-body-3mm-v2.0.0"), "zip", model.parent, model.name)
    md = ["--models-dir", str(tmp_path / "reg")]
    assert main(["models", "import", archive, *md]) == 0
    assert "monai_auto3dseg source: 7 classes, SegResNetDS" in capsys.readouterr().out
    card = Registry(tmp_path / "reg").card("auto3dseg-whole-body-3mm-v2.0.0")
    assert card.training["source"]["model"] == "whole-body-3mm-v2.0.0.zip:whole-body-3mm-v2.0.0"
    bad = tmp_path / "bad"
    shutil.copytree(model, bad)
    torch.save({"state_dict": {}, "config": {"x": argparse.Namespace()}}, bad / "model.pt")
    assert main(["models", "import", str(bad), "--name", "bad", *md]) == 2
    err = capsys.readouterr().err
    assert err.startswith("cervixtl: error:") and "Traceback" not in err


@pytest.mark.slow
def test_finetune_from_an_auto3dseg_source_keeps_organ_rows_and_contours(tmp_path):
    """SegResNetDS fine-tuning: deep-supervision outputs in training mode, the encoder frozen by name, the TS2
    rows kept under CervixTL's names (Urinary bladder -> Bladder, Left / Right Femur -> FemoralHead_L / _R)."""
    from cervixtl.inference import run_contour
    from cervixtl.models.registry import Registry
    from cervixtl.models.sources import import_source
    from cervixtl.phantom import make_phantom
    from cervixtl.training import TrainConfig
    from cervixtl.training.finetune import finetune

    config = {**_config(), "roi_size": [32, 32, 32], "resample_resolution": [4.0, 4.0, 4.0]}
    reg = Registry(tmp_path / "reg")
    pkg, _ = import_source(_make_model(tmp_path / "whole-body-4mm", config), tmp_path / "pkg", name="a3d-src")
    reg.add(pkg)
    cases = [(f"p{i}", *make_phantom(100 + i, "A")) for i in range(2)]
    cfg = TrainConfig(epochs=1, steps_per_epoch=2, batch_size=1, device="cpu", seed=1, freeze="encoder")
    card = finetune("a3d-src", cases, "cervix-a3d", config=cfg, registry=reg,
                    labels=["Bladder", "FemoralHead_L", "FemoralHead_R"], targets=["GTV", "CTV", "PTV"])
    assert card.output == "softmax+sigmoid" and card.architecture["name"] == "SegResNetDS"
    assert card.axis_order == "xyz" and card.intensity["kind"] == "range_sigmoid"
    _, src_net = reg.load("a3d-src")
    new_card, new_net = reg.load("cervix-a3d")
    head = "up_layers.2.head.weight"  # the full-resolution head (blocks_down 1-2-2-4: three up levels)
    w_src, w_new = src_net.state_dict()[head], new_net.state_dict()[head]
    assert w_new.shape[0] == 7
    for new_c, src_c in ((1, 3), (2, 5), (3, 6)):
        assert torch.corrcoef(torch.stack([w_new[new_c].ravel(), w_src[src_c].ravel()]))[0, 1] > 0.9
    enc = "encoder.conv_init.weight"
    assert torch.equal(new_net.state_dict()[enc], src_net.state_dict()[enc])
    res = run_contour(cases[0][1], new_card, new_net, device="cpu", fast=True)
    names = [s.name for s in res.segmentation.segments]
    assert names[:3] == ["GTV", "CTV", "PTV"] and "Bladder" in names


def test_catalogue_entry_downloads_and_imports_the_zip(model, tmp_path):
    """The catalogue's TS2 3 mm entry, its zip (top folder = the model folder) served on 127.0.0.1."""
    import http.server
    import json
    import threading

    from cervixtl.models.card import ModelCard
    from cervixtl.models.sources.catalogue import import_catalogue_source
    from cervixtl.resources import resources_dir
    from test_catalogue_download import _RangeHandler

    entries = json.loads((resources_dir() / "Models.json").read_text(encoding="utf-8"))["models"]
    entry = next(e for e in entries if e["name"] == "auto3dseg-ts2-whole-body-3mm")
    archive = shutil.make_archive(str(tmp_path / "whole-body-3mm-v2.0.0"), "zip", model.parent, model.name)
    _RangeHandler.payload = Path(archive).read_bytes()
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _RangeHandler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{httpd.server_address[1]}/whole-body-3mm-v2.0.0.zip"
        pkg, report = import_catalogue_source(entry, tmp_path / "work", tmp_path / "pkg", name="ts2-3mm", url=url)
    finally:
        httpd.shutdown()
    card = ModelCard.read(pkg)
    assert report["classes"] == 7 and card.architecture["name"] == "SegResNetDS"
    assert card.training["source"]["kind"] == "monai_auto3dseg" and card.label("Urinary bladder")["structure"] == "Bladder"
