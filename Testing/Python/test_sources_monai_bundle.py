"""MONAI bundle sources: a random-weight bundle in the wholeBody_ct_segmentation layout (SegResNet, 105
channels; configs/inference.json with its transforms, configs/metadata.json channel names, models/*.pt) is
imported and run by CervixTL; the reference is the bundle's own MONAI inference built in the test from the
transforms its config names (LoadImaged, EnsureChannelFirstd, Orientationd RAS, Spacingd, NormalizeIntensityd
nonzero, ScaleIntensityd -1..1, SlidingWindowInferer Gaussian / replicate, softmax argmax) on the real CT.
The low-resolution (3 mm) configuration is used so that the real 3 mm CT needs no resampling in either pipeline.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from cervixtl.errors import ModelError
from monai_fixtures import make_wholebody_bundle
from shared_data import DATA, need

CT = DATA / "totalseg_example" / "example_ct.nii.gz"


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return make_wholebody_bundle(tmp_path_factory.mktemp("bundles") / "wholeBody_ct_segmentation")


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


@pytest.mark.slow
def test_finetune_from_an_xyz_bundle_runs_in_the_bundles_axis_order(tmp_path):
    """A small bundle (RAS, (x, y, z) arrays, 6 mm) fine-tuned on phantoms with nested targets: the new model
    keeps the bundle's axis order, orientation and intensity, and contours a CT of another shape."""

    from cervixtl.inference import run_contour
    from cervixtl.models.registry import Registry
    from cervixtl.models.sources import import_source
    from cervixtl.phantom import make_phantom
    from cervixtl.training import TrainConfig
    from cervixtl.training.finetune import finetune

    root = make_wholebody_bundle(tmp_path / "small_bundle", init_filters=8, pixdim_mm=6.0, roi_size=32,
                                 spread_head=False)
    reg = Registry(tmp_path / "reg")
    reg.add(import_source(root, tmp_path / "pkg", name="small-bundle")[0])
    cases = [(f"p{i}", *make_phantom(100 + i, "A")) for i in range(2)]
    card = finetune("small-bundle", cases, "cervix-bundle", registry=reg,
                    config=TrainConfig(epochs=1, steps_per_epoch=2, batch_size=1, device="cpu", seed=1),
                    labels=["Bladder", "FemoralHead_L", "FemoralHead_R"], targets=["GTV", "CTV", "PTV"])
    assert (card.axis_order, card.orientation, card.intensity["kind"]) == ("xyz", "RAS", "monai_normalize_scale")
    assert card.output == "softmax+sigmoid"
    new_card, net = reg.load("cervix-bundle")
    ct = make_phantom(7, "B")[0]
    res = run_contour(ct, new_card, net, device="cpu", fast=True)
    assert [s.name for s in res.segmentation.segments][:3] == ["GTV", "CTV", "PTV"]
    assert all(np.asarray(s.mask).shape == ct.array.shape for s in res.segmentation.segments)


def _serve(payload: bytes):
    import http.server
    import threading

    from test_catalogue_download import _RangeHandler

    _RangeHandler.payload = payload
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _RangeHandler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd, f"http://127.0.0.1:{httpd.server_address[1]}/bundle.zip"


def test_catalogue_bundle_checks_archive_sha1_and_weights_md5_and_picks_the_variant(bundle, tmp_path):
    """A wholeBody-style catalogue entry served on 127.0.0.1: the archive's SHA-1 (MONAI model_info.json) is
    checked before unpacking, the weights' MD5 (large_files.yml) after; ``bundle_overrides`` selects the
    bundle's 1.5 mm model (``displayable_configs#highres``: pixdim 1.5 and models/model.pt). A wrong hash of
    either kind is refused and nothing is imported."""
    import hashlib
    import shutil

    from cervixtl.models.card import ModelCard
    from cervixtl.models.sources.catalogue import import_catalogue_source

    root = tmp_path / "b" / bundle.name
    shutil.copytree(bundle, root)
    shutil.copy(root / "models" / "model_lowres.pt", root / "models" / "model.pt")  # the "highres" weights
    archive = Path(shutil.make_archive(str(tmp_path / "wb"), "zip", root.parent, root.name))
    payload = archive.read_bytes()
    sha1 = hashlib.sha1(payload).hexdigest()
    md5 = hashlib.md5((root / "models" / "model.pt").read_bytes()).hexdigest()

    def entry(sha1_value: str, md5_value: str) -> dict:
        return {"name": "monai-wholebody-ct", "kind": "monai-bundle", "url": "https://example.invalid/wb.zip",
                "sha256": None, "bundle_overrides": {"displayable_configs#highres": True},
                "hash": [{"type": "sha1", "value": sha1_value, "of": "archive", "source": "model_info.json"},
                         {"type": "md5", "value": md5_value, "of": "models/model.pt", "source": "large_files.yml"}]}

    httpd, url = _serve(payload)
    try:
        with pytest.raises(ModelError, match="archive does not match the publisher's SHA1"):
            import_catalogue_source(entry("0" * 40, md5), tmp_path / "w1", tmp_path / "p1", name="wb", url=url)
        assert not (tmp_path / "w1" / "unpacked").exists() and not (tmp_path / "p1").exists()
        with pytest.raises(ModelError, match="models/model.pt does not match the publisher's MD5"):
            import_catalogue_source(entry(sha1, "0" * 32), tmp_path / "w2", tmp_path / "p2", name="wb", url=url)
        pkg, report = import_catalogue_source(entry(sha1, md5), tmp_path / "w3", tmp_path / "p3", name="wb", url=url)
    finally:
        httpd.shutdown()
    card = ModelCard.read(pkg)
    assert report["trust"] == "publisher-hash" and card.spacing_mm == (1.5, 1.5, 1.5)
    assert card.training["source"]["weights"] == "model.pt"
    assert card.training["source"]["overrides"] == {"displayable_configs#highres": True}
    assert [h["type"] for h in card.training["source"]["download"]["publisher_hash"]] == ["sha1", "md5"]


def test_bundle_override_must_be_a_value_not_an_expression(bundle):
    from cervixtl.models.sources.monai_bundle import read_bundle

    assert read_bundle(bundle, {"displayable_configs#highres": True})["input"]["spacing_mm"] == [1.5, 1.5, 1.5]
    assert read_bundle(bundle)["input"]["spacing_mm"] == [3.0, 3.0, 3.0]
    with pytest.raises(ModelError, match="expression"):
        read_bundle(bundle, {"pixdim": "$__import__('os').getcwd()"})


def test_unimportable_catalogue_entry_is_refused_with_its_reason(tmp_path):
    from cervixtl.models.sources.catalogue import import_catalogue_source

    entry = {"name": "monai-vista3d", "kind": "monai-bundle", "url": "https://example.invalid/v.zip",
             "importable": False, "import_note": "the VISTA3D network is not one CervixTL builds yet"}
    with pytest.raises(ModelError, match="VISTA3D network is not one CervixTL builds"):
        import_catalogue_source(entry, tmp_path / "w", tmp_path / "p", name="v")
    assert not (tmp_path / "w").exists()
