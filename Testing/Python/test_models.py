"""Model cards, verified packages and MONAI networks built from cards."""

from __future__ import annotations

import json

import pytest
import torch

from cervixtl.errors import ModelError
from cervixtl.models.card import SCHEMA, ModelCard
from cervixtl.models.networks import build_from_params, build_network, segresnet_card
from cervixtl.models.package import load_package, save_package, sha256_file


def tiny_card(**kw) -> ModelCard:
    return segresnet_card("tiny", ["GTV", "CTV", "Bladder"], init_filters=4, spacing_mm=(3, 3, 3),
                          patch_size=(16, 16, 16), **kw)


def test_card_round_trip_and_schema():
    card = tiny_card()
    d = json.loads(json.dumps(card.to_dict()))
    assert d["schema"] == SCHEMA and list(d)[0] == "schema"
    back = ModelCard.from_dict(d)
    assert back == card
    assert card.label_names == ["GTV", "CTV", "Bladder"] and card.label_names() == ["GTV", "CTV", "Bladder"]
    assert card.spacing_mm == (3.0, 3.0, 3.0) and card.patch_size == (16, 16, 16)
    assert d["architecture"]["params"]["out_channels"] == 3
    assert d["labels"][0]["terminology"] is None or isinstance(d["labels"][0]["terminology"], dict)


@pytest.mark.parametrize("change, words", [
    (lambda d: d.pop("labels"), "lacks labels"),
    (lambda d: d.update(schema="other/9"), "schema"),
    (lambda d: d["architecture"].update(name="ResNet50"), "architecture"),
    (lambda d: d.update(output="relu"), "output"),
    (lambda d: d["input"].update(spacing_mm=[1, 0, 1]), "spacing_mm"),
    (lambda d: d["input"].update(window_hu=[300, -200]), "window_hu"),
    (lambda d: d["labels"].append(dict(d["labels"][0])), "channels"),
    (lambda d: d["labels"][2].update(channel=7), "out_channels"),
    (lambda d: d.update(name="bad name/.."), "name"),
])
def test_card_rejects_bad_fields(change, words):
    d = tiny_card().to_dict()
    change(d)
    with pytest.raises(ModelError, match=words):
        ModelCard.from_dict(d)


def test_package_sha_verified(tmp_path):
    card = tiny_card()
    net = build_network(card)
    p = save_package(tmp_path / "pkg", card, net.state_dict())
    saved = json.loads((p / "model.json").read_text())
    assert saved["weights"]["sha256"] == sha256_file(p / "weights.safetensors")
    assert saved["weights"]["bytes"] == (p / "weights.safetensors").stat().st_size
    card2, state = load_package(p)
    for k, v in net.state_dict().items():
        assert torch.equal(state[k], v), k
    assert card2.label_names == card.label_names
    assert not list(tmp_path.glob(".*part"))  # no temporary folder left


def test_same_weights_same_sha(tmp_path):
    card = tiny_card()
    state = build_network(card).state_dict()
    a = save_package(tmp_path / "a", card, state)
    b = save_package(tmp_path / "b", tiny_card(), state)
    assert sha256_file(a / "weights.safetensors") == sha256_file(b / "weights.safetensors")


def test_tampered_and_truncated_weights_fail(tmp_path):
    card = tiny_card()
    p = save_package(tmp_path / "pkg", card, build_network(card).state_dict())
    w = p / "weights.safetensors"
    data = bytearray(w.read_bytes())
    data[-5] ^= 0xFF  # same size, other bytes
    w.write_bytes(bytes(data))
    with pytest.raises(ModelError, match="SHA-256"):
        load_package(p)
    w.write_bytes(bytes(data[: len(data) // 2]))
    with pytest.raises(ModelError, match="truncated"):
        load_package(p)
    (p / "model.json").write_text("{not json")
    with pytest.raises(ModelError, match="unreadable"):
        load_package(p)


def test_save_refuses_existing_folder(tmp_path):
    card = tiny_card()
    (tmp_path / "pkg").mkdir()
    with pytest.raises(Exception, match="exists"):
        save_package(tmp_path / "pkg", card, build_network(card).state_dict())


@pytest.mark.parametrize("arch, params", [
    ("SegResNet", dict(spatial_dims=3, in_channels=1, out_channels=3, init_filters=4, norm=["GROUP", {"num_groups": 2}])),
    ("UNet", dict(spatial_dims=3, in_channels=1, out_channels=3, channels=[4, 8, 16], strides=[2, 2])),
    ("DynUNet", dict(spatial_dims=3, in_channels=1, out_channels=3, kernel_size=[3, 3, 3], strides=[1, 2, 2],
                     upsample_kernel_size=[2, 2])),
    ("SwinUNETR", dict(spatial_dims=3, in_channels=1, out_channels=3, feature_size=12)),
])
def test_architectures_from_card(arch, params):
    net = build_from_params(arch, params).eval()
    with torch.no_grad():
        n = 64 if arch == "SwinUNETR" else 32  # SwinUNETR needs more than 1 voxel at its 1/32 bottleneck
        y = net(torch.zeros(1, 1, n, 32, 32))
    assert tuple(y.shape) == (1, 3, n, 32, 32)  # [batch, channel, z, y, x] preserved


def test_bad_architecture_arguments():
    with pytest.raises(ModelError, match="does not take"):
        build_from_params("SegResNet", {"spatial_dims": 3, "filters": 8})
    with pytest.raises(ModelError, match="not one of"):
        build_from_params("VNetX", {})
