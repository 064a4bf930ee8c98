"""Source-model import for transfer learning: MONAI bundle checkpoints, name mapping, head re-init, freezing."""

from __future__ import annotations

import pickle

import pytest
import torch

from cervixtl.cli import main
from cervixtl.errors import BadInput, ModelError
from cervixtl.models import registry as regmod
from cervixtl.models.networks import WHOLEBODY_CT_SEGRESNET, build_from_params, build_network, segresnet_card
from cervixtl.models.package import load_package, save_package
from cervixtl.models.transfer import load_matching_weights, package_from_checkpoint, read_checkpoint
from cervixtl.training import freeze


@pytest.fixture(scope="module")
def bundle_state():
    """Random weights with the architecture and shapes of the MONAI wholeBody_ct_segmentation SegResNet."""
    torch.manual_seed(1)
    net = build_from_params("SegResNet", WHOLEBODY_CT_SEGRESNET)
    return net.state_dict()


def our_net(out_channels=4):
    params = {**WHOLEBODY_CT_SEGRESNET, "out_channels": out_channels}
    return build_from_params("SegResNet", params)


def test_bundle_checkpoint_loads_all_but_head(tmp_path, bundle_state):
    ckpt = tmp_path / "model.pt"
    torch.save({f"module.{k}": v for k, v in bundle_state.items()}, ckpt)  # DataParallel-style names
    state = read_checkpoint(ckpt)
    net = our_net(4)
    report = load_matching_weights(net, state)
    n_total = len(bundle_state)
    head = {"conv_final.2.conv.weight", "conv_final.2.conv.bias"}
    assert report["reinitialised"] == 2 and set(report["reinitialised_names"]) == head
    assert report["loaded"] == n_total - 2
    assert report["skipped"] == 2 and {n.replace("module.", "") for n in report["skipped_names"]} == head
    own = net.state_dict()
    for k, v in bundle_state.items():
        if k in head:
            assert own[k].shape != v.shape
        else:
            assert torch.equal(own[k], v), k


def test_wrapped_and_safetensors_checkpoints(tmp_path, bundle_state):
    from safetensors.torch import save_file

    torch.save({"epoch": 3, "state_dict": {f"model.{k}": v for k, v in bundle_state.items()}}, tmp_path / "w.pth")
    save_file({k: v.contiguous() for k, v in bundle_state.items()}, str(tmp_path / "w.safetensors"))
    for name in ("w.pth", "w.safetensors"):
        st = read_checkpoint(tmp_path / name)
        report = load_matching_weights(our_net(105), st)
        assert report["loaded"] == len(bundle_state) and report["reinitialised"] == 0, name


class Evil:
    def __reduce__(self):
        return (print, ("unpickled!",))


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_pickled_objects_are_refused(tmp_path):
    p = tmp_path / "evil.pt"
    with open(p, "wb") as fh:
        pickle.dump({"w": Evil()}, fh)
    with pytest.raises(ModelError, match="weights-only"):
        read_checkpoint(p)
    (tmp_path / "junk.pt").write_bytes(b"\x00garbage")
    with pytest.raises(ModelError):
        read_checkpoint(tmp_path / "junk.pt")
    with pytest.raises(BadInput, match="no such"):
        read_checkpoint(tmp_path / "absent.pt")


def test_own_package_as_source(tmp_path):
    card = segresnet_card("src", ["GTV", "CTV", "Bladder"], init_filters=4)
    src = build_network(card)
    p = save_package(tmp_path / "src", card, src.state_dict())
    target = build_network(segresnet_card("dst", ["GTV", "CTV"], init_filters=4))
    report = load_matching_weights(target, read_checkpoint(p))
    assert report["reinitialised"] == 2 and report["loaded"] == len(src.state_dict()) - 2


def test_new_label_set_keeps_the_output_channels_of_kept_labels(tmp_path):
    """Source organs (Brainstem, Mandible) -> new model (Mandible, PTV70, Brainstem): the Mandible and
    Brainstem output rows of the head come from the source's rows 1 and 0, PTV70's row is freshly initialised;
    with softmax the background channel 0 is kept as well."""
    from cervixtl.training import output_channel_map

    for output, first in (("sigmoid", 0), ("softmax", 1)):
        src_card = segresnet_card("src", ["Brainstem", "Mandible"], init_filters=4, output=output)
        src = build_network(src_card)
        torch.manual_seed(1)
        with torch.no_grad():
            for prm in src.parameters():
                prm.add_(torch.randn_like(prm))
        new_card = segresnet_card("new", ["mandible", "PTV70", "Brainstem"], init_filters=4, output=output)
        cmap = output_channel_map(src_card, new_card)
        assert cmap == ({0: 1 + first, 2: 0 + first} if first == 0 else {0: 0, 1: 2, 3: 1})
        net = build_network(new_card)
        report = load_matching_weights(net, src.state_dict(), cmap)
        assert len(report["partial_names"]) == 2  # the head's weight and bias
        for name in report["partial_names"]:
            got, want = net.state_dict()[name], src.state_dict()[name]
            for new_c, src_c in cmap.items():
                assert torch.equal(got[new_c], want[src_c]), (output, name, new_c)
            ptv = 1 + first
            assert not any(torch.equal(got[ptv], want[c]) for c in range(want.shape[0]))
    assert output_channel_map(segresnet_card("a", ["X"], output="sigmoid"),
                              segresnet_card("b", ["X"], output="softmax")) == {}


def test_freeze_strategies():
    net = build_network(segresnet_card("f", ["GTV", "CTV"], init_filters=4))
    names = [n for n, _ in net.named_parameters()]
    patch = (16, 32, 32)
    frozen = freeze(net, "encoder", patch)
    assert frozen and all(n.startswith(("convInit.", "down_layers.")) for n in frozen)
    assert all(not p.requires_grad for n, p in net.named_parameters() if n in frozen)
    assert all(p.requires_grad for n, p in net.named_parameters() if n.startswith(("up_", "conv_final")))
    frozen = freeze(net, "all-but-last-1", patch)
    trainable = [n for n, p in net.named_parameters() if p.requires_grad]
    # the last block in forward order: SegResNet's head (its norm and the output convolution)
    assert trainable[-2:] == ["conv_final.2.conv.weight", "conv_final.2.conv.bias"]
    assert all(n.startswith("conv_final.") for n in trainable) and len(frozen) == len(names) - len(trainable)
    assert freeze(net, "none", patch) == [] and all(p.requires_grad for p in net.parameters())
    with pytest.raises(BadInput, match="unknown freeze"):
        freeze(net, "decoder", patch)


def test_import_checkpoint_as_source_model(tmp_path, bundle_state, monkeypatch, capsys):
    monkeypatch.setattr(regmod, "bundled_models_dir", lambda: tmp_path / "none")
    ckpt = tmp_path / "model.pt"
    torch.save(bundle_state, ckpt)
    pkg, report = package_from_checkpoint(ckpt, tmp_path / "pkg", name="wholebody")
    card, state = load_package(pkg)
    assert report["loaded"] == len(bundle_state) and len(card.labels) == 104 and card.output == "softmax"
    assert torch.equal(state["convInit.conv.weight"], bundle_state["convInit.conv.weight"])
    rc = main(["models", "import", str(ckpt), "--name", "wholebody", "--models-dir", str(tmp_path / "reg")])
    assert rc == 0
    out = capsys.readouterr().out
    assert f"{len(bundle_state)} loaded, 0 re-initialised, 0 skipped" in out
    assert (tmp_path / "reg" / "wholebody" / "1" / "weights.safetensors").exists()
