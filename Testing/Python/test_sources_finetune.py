"""Fine-tuning from a random-weight TotalSegmentator-style nnU-Net source, end to end: the source's organ rows
are kept under CervixTL's names (urinary_bladder -> Bladder, femur_* -> FemoralHead_*), the nested targets are
new sigmoid outputs, freezing counts the nnU-Net stages, and the registered model contours."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cervixtl.phantom import make_phantom
from nnunet_fixtures import make_totalseg_model, plans_new_format

DS = "Dataset291_TotalSegmentator_part1_organs_1559subj"
ORGANS = ["urinary_bladder", "colon", "small_bowel", "femur_left", "femur_right", "hip_left", "hip_right"]


@pytest.fixture()
def source(tmp_path, monkeypatch):
    from cervixtl.models.registry import Registry
    from cervixtl.models.sources import import_source

    home = tmp_path / "tshome"
    labels = {"background": 0, **{n: i + 1 for i, n in enumerate(ORGANS)}}
    make_totalseg_model(home / "nnunet" / "results", DS, "nnUNetTrainerNoMirroring",
                        plans_new_format(DS, (4.0, 4.0, 4.0), (32, 32, 32), features=(4, 8, 16, 16)), labels)
    monkeypatch.setenv("TOTALSEG_HOME_DIR", str(home))
    reg = Registry(tmp_path / "reg")
    pkg, _ = import_source("totalsegmentator:291", tmp_path / "pkg", name="ts-organs")
    reg.add(pkg)
    return reg


def test_nnunet_freezing_counts_stages(source):
    from cervixtl.training.freezing import forward_order, freeze

    card, net = source.load("ts-organs")
    order = forward_order(net, card.patch_size)
    assert order[-1] == "decoder.seg_layers.2" and order.index("encoder.stages.3") < order.index("decoder.stages.0")
    assert [b for b in order if b.startswith("decoder.stages")] == ["decoder.stages.0", "decoder.stages.1",
                                                                     "decoder.stages.2"]
    frozen = freeze(net, "all-but-last-2", card.patch_size)  # trains the last decoder stage and the head
    trainable = {n.rsplit(".", 3)[0] for n, p in net.named_parameters() if p.requires_grad}
    assert all(n.startswith(("decoder.stages.2", "decoder.seg_layers.2")) for n, p in net.named_parameters()
               if p.requires_grad) and frozen
    enc = freeze(net, "encoder", card.patch_size)
    assert enc and all(n.startswith("encoder.") for n in enc) and trainable


@pytest.mark.slow
def test_finetune_keeps_organ_rows_adds_nested_targets_and_contours(source):
    from cervixtl.inference import run_contour
    from cervixtl.training import TrainConfig
    from cervixtl.training.finetune import finetune

    cases = [(f"p{i}", *make_phantom(100 + i, "A")) for i in range(2)]
    cfg = TrainConfig(epochs=1, steps_per_epoch=2, batch_size=1, device="cpu", seed=1, freeze="encoder")
    card = finetune("ts-organs", cases, "cervix-ts", config=cfg, registry=source,
                    labels=["Bladder", "FemoralHead_L", "FemoralHead_R"], targets=["GTV", "CTV", "PTV"])
    assert card.output == "softmax+sigmoid" and card.architecture["name"] == "nnUNet"
    assert [(lab["name"], lab["activation"]) for lab in card.labels] == [
        ("Bladder", "softmax"), ("FemoralHead_L", "softmax"), ("FemoralHead_R", "softmax"),
        ("GTV", "sigmoid"), ("CTV", "sigmoid"), ("PTV", "sigmoid")]
    assert card.parent["name"] == "ts-organs" and card.orientation == "RAS"
    src_card, src_net = source.load("ts-organs")
    new_card, new_net = source.load("cervix-ts")
    w_src = src_net.state_dict()["decoder.seg_layers.2.weight"]
    w_new = new_net.state_dict()["decoder.seg_layers.2.weight"]
    assert w_new.shape[0] == 7 and "frozen_tensors" in new_card.training
    # the kept organ rows started from the source's urinary_bladder (1) and femur rows (4, 5); the encoder was
    # frozen, so the head moved only by a few steps of training
    for new_c, src_c in ((1, 1), (2, 4), (3, 5)):
        assert torch.corrcoef(torch.stack([w_new[new_c].ravel(), w_src[src_c].ravel()]))[0, 1] > 0.9
    enc = "encoder.stages.0.0.convs.0.conv.weight"
    assert torch.equal(new_net.state_dict()[enc], src_net.state_dict()[enc])
    ct = cases[0][1]
    res = run_contour(ct, new_card, new_net, device="cpu", fast=True)
    names = [s.name for s in res.segmentation.segments]
    assert names[:3] == ["GTV", "CTV", "PTV"] and "Bladder" in names and res.summary["mode"] == "targets"
    assert np.asarray(res.segmentation.segments[0].mask).shape == ct.array.shape


@pytest.mark.slow
def test_cli_sources_import_and_zero_shot_contour(tmp_path, monkeypatch, capsys):
    """`models sources` lists the TotalSegmentator model, `models import totalsegmentator:291` registers it,
    `contour` proposes the organs it knows under CervixTL's names and says which need a site model."""
    import json

    from cervixtl.cli import main
    from shared_data import DATA, need

    home = tmp_path / "tshome"
    labels = {"background": 0, **{n: i + 1 for i, n in enumerate(ORGANS)}}
    make_totalseg_model(home / "nnunet" / "results", DS, "nnUNetTrainerNoMirroring",
                        plans_new_format(DS, (3.0, 3.0, 3.0), (64, 64, 64), features=(4, 8, 16, 16)), labels,
                        head_scale=5.0)
    monkeypatch.setenv("TOTALSEG_HOME_DIR", str(home))
    md = ["--models-dir", str(tmp_path / "reg")]
    assert main(["models", "sources", "--json", *md]) == 0
    out = json.loads(capsys.readouterr().out)
    import jsonschema

    from cervixtl.structures import resources_dir

    jsonschema.validate(out, json.loads((resources_dir() / "schemas" / "cervixtl-models-sources.schema.json").read_text()))
    assert out["format"] == "cervixtl-models-sources/1" and out["sources"][0]["classes"] == ORGANS
    assert main(["models", "import", "totalsegmentator:291", *md]) == 0
    assert "imported totalseg-291@1" in capsys.readouterr().out
    ct = need(DATA / "totalseg_example" / "example_ct.nii.gz")
    seg = tmp_path / "out.seg.nrrd"
    assert main(["contour", str(ct), str(seg), "--model", "totalseg-291", *md, "--device", "cpu"]) == 0
    summary = json.loads((tmp_path / "out_summary.json").read_text())
    names = {s["name"] for s in summary["structures"]}
    assert summary["mode"] == "organs" and names <= {"Bladder", "Bowel", "FemoralHead_L", "FemoralHead_R", "Bone"}
    assert {"GTV", "CTV", "PTV", "Rectum", "Uterus"} <= set(summary["needs_site_model"])
    assert "need a site model" in capsys.readouterr().err
