"""The training recipe (issue 15): nested and partial labels, schedule, selection, freezing order, CT
normalisation round trip, side assignment, refusals (issue 13.11)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from cervixtl.errors import BadInput, ModelError
from cervixtl.phantom import make_phantom
from cervixtl.training import (
    EmaSelector,
    PreparedCase,
    TrainConfig,
    default_card,
    finetune,
    forward_order,
    freeze,
    freeze_norm_stats,
    lr_factor,
    make_loss,
    output_channel_map,
    prepare_case,
    steps_for_budget,
    train,
    with_sigmoid_targets,
)

torch.set_num_threads(2)


def _mixed_card(name="mixed"):
    """Softmax organs Bladder, Rectum (channels 1, 2) + sigmoid targets GTV, CTV, PTV (3, 4, 5)."""
    src = default_card("src", ["Bladder", "Rectum"], output="softmax", init_filters=4, spacing_mm=(8.0,) * 3,
                       patch_size=(16, 32, 32))
    return with_sigmoid_targets(src, name, "1", None, ["GTV", "CTV", "PTV"])


# ---------------------------------------------------------------------------- card layout
def test_softmax_plus_sigmoid_card_layout_and_channel_map():
    card = _mixed_card()
    assert card.output == "softmax+sigmoid"
    assert [(lab["name"], lab["channel"], lab["activation"]) for lab in card.labels] == [
        ("Bladder", 1, "softmax"), ("Rectum", 2, "softmax"), ("GTV", 3, "sigmoid"), ("CTV", 4, "sigmoid"),
        ("PTV", 5, "sigmoid")]
    assert card.architecture["params"]["out_channels"] == 6
    src = default_card("src", ["Bladder", "Rectum"], output="softmax", init_filters=4)
    assert output_channel_map(src, card) == {0: 0, 1: 1, 2: 2}  # organs and background keep their weights
    d = card.to_dict()
    d["labels"][2]["channel"] = 1  # a sigmoid label inside the softmax group
    d["labels"][0]["channel"] = 3
    from cervixtl.models.card import ModelCard

    with pytest.raises(ModelError):
        ModelCard.from_dict(d)


# ---------------------------------------------------------------------------- loss masks
@pytest.mark.parametrize("kind", ["softmax", "softmax+sigmoid"])
def test_uncontoured_structure_gets_zero_gradient(kind):
    card = _mixed_card() if kind == "softmax+sigmoid" else default_card(
        "s", ["Bladder", "Rectum", "GTV"], output="softmax", init_filters=4)
    loss_fn = make_loss(card)
    torch.manual_seed(0)
    n_out = card.architecture["params"]["out_channels"]
    logits = torch.randn(2, n_out, 4, 8, 8, requires_grad=True)
    y = (torch.rand(2, len(card.labels), 4, 8, 8) > 0.7).float()
    y[1, 1] = -1.0  # case 2 did not contour Rectum (softmax channel 2)
    y[1, -1] = -1.0  # nor the last label
    loss_fn(logits, y).backward()
    for lab_idx in (1, len(card.labels) - 1):
        ch = sorted(card.labels, key=lambda d: d["channel"])[lab_idx]["channel"]
        assert logits.grad[1, ch].abs().max() == 0, f"uncontoured channel {ch} got a gradient"
        assert logits.grad[0, ch].abs().sum() > 0


def test_perfect_prediction_has_zero_loss_and_dice_excludes_background():
    card = _mixed_card()
    loss_fn = make_loss(card)
    y = torch.zeros(1, 5, 4, 8, 8)
    y[0, 0, :2] = 1  # bladder
    y[0, 4, 1:] = 1  # PTV ⊃ CTV ⊃ GTV
    y[0, 3, 1:3] = 1
    y[0, 2, 2] = 1
    logits = torch.full((1, 6, 4, 8, 8), -40.0)
    logits[0, 0] = 40 * (1 - y[0, 0] - y[0, 1]).clamp(min=0) - 40 * (y[0, 0] + y[0, 1])  # background
    logits[0, 1] = 80 * y[0, 0] - 40
    logits[0, 2] = -40
    logits[0, 3:] = 80 * y[0, 2:] - 40
    assert float(loss_fn(logits, y)) < 1e-3
    # rectum absent from this patch (empty truth, empty prediction): no Dice penalty, no background Dice term
    empty = torch.zeros_like(y)
    logits_bg = torch.full_like(logits, -40.0)
    logits_bg[0, 0] = 40.0
    assert float(loss_fn(logits_bg, empty)) < 1e-3


def _nested_case(rng, contour_rectum=True):
    """A 16 x 32 x 32 volume: bladder (exclusive organ) and nested PTV ⊃ CTV ⊃ GTV spheres, each with its
    own intensity, so each structure is learnable."""
    z, y, x = np.ogrid[:16, :32, :32]
    cz, cy, cx = 8 + rng.integers(-1, 2), 18 + rng.integers(-2, 3), 16 + rng.integers(-2, 3)
    r = np.sqrt((z - cz) ** 2 * 1.0 + (y - cy) ** 2 + (x - cx) ** 2)
    gtv, ctv, ptv = r <= 3, r <= 5, r <= 7
    bladder = ((z - 8) ** 2 + (y - 5) ** 2 + (x - 10) ** 2) <= 12
    rectum = ((z - 8) ** 2 + (y - 5) ** 2 + (x - 22) ** 2) <= 12
    img = np.where(gtv, 1.0, np.where(ctv, 0.7, np.where(ptv, 0.45, np.where(bladder, -0.5,
                                                                            np.where(rectum, -1.0, 0.0)))))
    img = (img + rng.normal(0, 0.05, img.shape)).astype(np.float32)
    labels = np.stack([bladder, rectum, gtv, ctv, ptv]).astype(np.uint8)
    if not contour_rectum:
        labels[1] = 255  # Rectum not contoured in this case
    return PreparedCase(img, labels, [] if contour_rectum else ["Rectum"], "n")


def test_nested_targets_each_learn_non_empty():
    """GTV ⊂ CTV ⊂ PTV as sigmoid channels beside softmax organs: each is learned (with one softmax over
    all of them the inner ones would get no voxel)."""
    from cervixtl.inference import activate, probabilities_to_masks, softmax_channels
    from cervixtl.models.networks import build_network
    from cervixtl.training.validation import dice

    rng = np.random.default_rng(0)
    cases = [_nested_case(rng, contour_rectum=i > 0) for i in range(3)]  # case 0 has no Rectum contour
    card = _mixed_card()
    # a small MONAI UNet learns this intensity-defined task in a few seconds of CPU
    card.architecture = {"name": "UNet", "params": {"spatial_dims": 3, "in_channels": 1, "out_channels": 6,
                                                    "channels": [8, 16], "strides": [2], "num_res_units": 0}}
    torch.manual_seed(0)
    net = build_network(card)
    cfg = TrainConfig(epochs=None, max_steps=60, steps_per_epoch=60, batch_size=2, lr=3e-2, device="cpu",
                      augment=False, pos_fraction=0.5)
    res = train(net, card, cases, [], cfg)
    net.load_state_dict(res.state_dict)
    net.eval()
    test = _nested_case(np.random.default_rng(5))
    with torch.no_grad():
        logits = net(torch.from_numpy(test.image)[None, None])[0]
    masks = probabilities_to_masks(activate(logits, card.output, softmax_channels(card)), card)
    for i, name in enumerate(["Bladder", "Rectum", "GTV", "CTV", "PTV"]):
        truth = test.labels[i].astype(bool)
        assert masks[name].any(), f"{name} is empty"
        assert dice(masks[name], truth) > 0.7, (name, dice(masks[name], truth))


# ---------------------------------------------------------------------------- schedule and selection
def test_schedule_shape():
    assert lr_factor(0, 100, 10) == pytest.approx(0.01)
    assert lr_factor(5, 100, 10) == pytest.approx(0.01 + 0.99 * 0.5)
    assert lr_factor(10, 100, 10) == pytest.approx(1.0)
    assert lr_factor(55, 100, 10) == pytest.approx(0.5 ** 0.9)
    assert lr_factor(100, 100, 10) == 0.0 and lr_factor(150, 100, 10) == 0.0
    decay = [lr_factor(s, 100, 10) for s in range(10, 101)]
    assert all(a > b for a, b in zip(decay, decay[1:]))
    assert lr_factor(0, 100, 0) == 1.0
    # 60 s budget, 10 s spent on 20 steps, 0.5 s/step + 5 s validation per 10 steps = 1 s per step -> 50 more
    assert steps_for_budget(60.0, 10.0, 20, 0.5, 5.0, 10) == 70


def test_minutes_budget_sets_the_schedule_length():
    rng = np.random.default_rng(0)
    card = _mixed_card()
    from cervixtl.models.networks import build_network

    net = build_network(card)
    lines = []
    from cervixtl.progress import Progress

    cfg = TrainConfig(epochs=None, minutes=0.15, steps_per_epoch=4, batch_size=1, device="cpu", augment=False)
    res = train(net, card, [_nested_case(rng)], [], cfg, progress=Progress(callback=lines.append))
    h = res.history
    assert h["total_steps"] is not None and h["steps"] <= h["total_steps"] + 1
    assert h["stop_reason"] in ("time budget", "schedule done") and h["seconds"] < 0.15 * 60 + 30
    lrs = [ln["lr"] for ln in lines if ln.get("stage") == "train" and "lr" in ln]
    assert max(lrs) > lrs[-1], "the learning rate decays towards the end of the budget"
    assert any("warning" in ln for ln in lines), "no validation case: a warning says so"
    assert h["selection"] == "final" and h["val_kind"] == "training-set"


def test_ema_selection():
    sel = EmaSelector("ema")
    assert sel.update(0.5, 10) and sel.ema == pytest.approx(0.5)
    assert sel.update(0.9, 20) and sel.ema == pytest.approx(0.54)
    assert not sel.update(0.0, 30) and sel.ema == pytest.approx(0.486) and sel.best_step == 20
    final = EmaSelector("final")
    assert final.update(0.9, 1) and final.update(0.1, 2) and final.best_step == 2


# ---------------------------------------------------------------------------- freezing
def test_forward_order_freezing_segresnet():
    from cervixtl.models.networks import build_network

    card = default_card("f", ["GTV", "CTV"], init_filters=4)
    net = build_network(card)
    order = forward_order(net, (16, 32, 32))
    assert order[-3:] == ["up_samples.2", "up_layers.2", "conv_final"]
    frozen = set(freeze(net, "all-but-last-3", (16, 32, 32)))
    trains = {n for n, p in net.named_parameters() if p.requires_grad}
    assert any(n.startswith("up_layers.2.") for n in trains) and any(n.startswith("up_samples.2.") for n in trains)
    assert any(n.startswith("conv_final.") for n in trains)
    assert any(n.startswith("up_layers.1.") for n in frozen) and not any(n.startswith("up_layers.2.") for n in frozen)


def test_frozen_batchnorm_stays_in_eval_mode():
    net = torch.nn.Sequential(torch.nn.Conv3d(1, 4, 3, padding=1), torch.nn.BatchNorm3d(4), torch.nn.ReLU(),
                              torch.nn.Conv3d(4, 2, 1))
    freeze(net, "all-but-last-1", (4, 8, 8))
    net.train()
    assert freeze_norm_stats(net) == 1 and not net[1].training
    before = net[1].running_mean.clone()
    net(torch.randn(2, 1, 4, 8, 8) + 3.0)
    assert torch.equal(before, net[1].running_mean)


# ---------------------------------------------------------------------------- CT normalisation round trip
def test_ct_zscore_from_training_foreground_round_trip(tmp_path):
    """From scratch, the card carries nnU-Net's CT z-score of the training foreground; inference applies
    exactly the same normalisation as training did."""
    from cervixtl.inference import prepare_input
    from cervixtl.models.registry import Registry

    cases = [(f"p{i}", *make_phantom(300 + i, "A")) for i in range(2)]
    base = default_card("z", ["GTV", "CTV", "Bladder"], init_filters=4, spacing_mm=(8.0,) * 3,
                        patch_size=(16, 32, 32))
    cfg = TrainConfig(epochs=1, steps_per_epoch=1, batch_size=1, device="cpu", val_fraction=0.0)
    card = finetune(None, cases, "z", config=cfg, registry=Registry(tmp_path), base_card=base)
    spec = card.intensity
    assert spec["kind"] == "ct_zscore"
    hu = np.concatenate([ct.array[np.logical_or.reduce([s.mask for s in seg.segments])] for _, ct, seg in cases])
    assert spec["mean"] == pytest.approx(float(hu.mean()), rel=1e-3)
    assert spec["std"] == pytest.approx(float(hu.std()), rel=1e-3)
    assert spec["clip_hu"][0] == pytest.approx(float(np.percentile(hu, 0.5)), abs=1.0)
    loaded, _ = Registry(tmp_path).load(card.spec)
    _, ct, seg = cases[0]
    vol, _ = prepare_input(ct, loaded)
    np.testing.assert_array_equal(prepare_case(ct, seg, loaded).image, vol)
    lo, hi = spec["clip_hu"]
    assert vol.max() <= (hi - spec["mean"]) / spec["std"] + 1e-4 and vol.min() >= (lo - spec["mean"]) / spec["std"] - 1e-4


# ---------------------------------------------------------------------------- refusals (issue 13.11)
def test_labels_no_case_contours_are_refused(tmp_path):
    from cervixtl.models.registry import Registry

    cases = [("p0", *make_phantom(1, "A"))]
    cfg = TrainConfig(epochs=1, steps_per_epoch=1, batch_size=1, device="cpu")
    base = default_card("r", ["Sigmoid", "Uterus"], init_filters=4, spacing_mm=(8.0,) * 3, patch_size=(16, 32, 32))
    for s in cases[0][2].segments[:]:
        if s.name in ("Sigmoid", "Uterus"):
            cases[0][2].remove(s.name)
    with pytest.raises(BadInput, match="no training case contours"):
        finetune(None, cases, "r", config=cfg, registry=Registry(tmp_path), base_card=base)
    assert not Registry(tmp_path).versions("r")


def test_single_case_reports_training_set_dice(tmp_path):
    from cervixtl.models.registry import Registry

    cases = [("p0", *make_phantom(2, "A"))]
    base = default_card("one", ["GTV", "CTV"], init_filters=4, spacing_mm=(8.0,) * 3, patch_size=(16, 32, 32))
    cfg = TrainConfig(epochs=1, steps_per_epoch=1, batch_size=1, device="cpu")
    card = finetune(None, cases, "one", config=cfg, registry=Registry(tmp_path), base_card=base)
    assert card.training["val_kind"] == "training-set" and "training-set Dice" in card.derivation
    assert card.training["val_cases"] == 0 and all(v["kind"] == "training-set" for v in card.validation.values())


def test_source_softmax_organs_plus_new_sigmoid_targets(tmp_path):
    """The fine-tuning API for "source softmax organs + new sigmoid targets" keeps the organ channels."""
    from cervixtl.models.networks import build_network
    from cervixtl.models.package import save_package
    from cervixtl.models.registry import Registry

    reg = Registry(tmp_path / "models")
    src = default_card("src", ["Bladder", "Rectum", "FemoralHead_L"], output="softmax", init_filters=4,
                       spacing_mm=(8.0,) * 3, patch_size=(16, 32, 32))
    torch.manual_seed(0)
    src_net = build_network(src)
    save_package(tmp_path / "pkg", src, src_net.state_dict())
    reg.add(tmp_path / "pkg")
    cases = [(f"p{i}", *make_phantom(40 + i, "A")) for i in range(2)]
    cfg = TrainConfig(epochs=1, steps_per_epoch=1, batch_size=1, device="cpu", lr=1e-9, augment=False)
    card = finetune("src", cases, "tgt", config=cfg, registry=reg, labels=["Bladder", "Rectum"],
                    targets=["GTV", "CTV"])
    assert card.output == "softmax+sigmoid" and card.label_names == ["Bladder", "Rectum", "GTV", "CTV"]
    _, net = reg.load(card.spec)
    w_new = net.state_dict()["conv_final.2.conv.weight"]
    w_src = src_net.state_dict()["conv_final.2.conv.weight"]
    assert torch.allclose(w_new[:3], w_src[:3], atol=1e-6), "background and organ channels keep source weights"


def test_side_assignment_for_every_pair():
    from cervixtl.postprocess import postprocess, side_pairs

    assert side_pairs(["Brainstem", "RightParotid", "LeftParotid", "Kidney_L", "Kidney_R"]) == [
        ("LeftParotid", "RightParotid"), ("Kidney_L", "Kidney_R")]
    shape = (20, 30, 60)
    z, y, x = np.ogrid[:20, :30, :60]
    ball = lambda cx: (z - 10) ** 2 + (y - 15) ** 2 + (x - cx) ** 2 <= 16  # noqa: E731
    left, right = ball(48), ball(12)  # LPS: larger x = patient's left
    masks = {"LeftParotid": right.copy(), "RightParotid": left.copy(), "Brainstem": ball(30)}
    out = postprocess(masks, orientation="LPS")
    assert np.array_equal(out["LeftParotid"], left) and np.array_equal(out["RightParotid"], right)
    ras = postprocess({"LeftParotid": left.copy(), "RightParotid": right.copy(), "Brainstem": ball(30)},
                      orientation="RAS")
    assert np.array_equal(ras["LeftParotid"], right), "RAS: larger x = patient's right"
    assert np.zeros(shape).shape == shape


def test_compare_uses_the_production_pipeline(monkeypatch):
    import cervixtl.inference as inf
    from cervixtl.compare import predict_structures
    from cervixtl.models.networks import build_network

    calls = []
    real = inf.predict_labels

    def spy(*a, **kw):
        calls.append(kw)
        return real(*a, **kw)

    monkeypatch.setattr(inf, "predict_labels", spy)
    ct, _ = make_phantom(3, "A")
    card = default_card("c", ["Bladder", "FemoralHead_L", "FemoralHead_R"], init_filters=4, spacing_mm=(8.0,) * 3,
                        patch_size=(16, 32, 32))
    seg = predict_structures(ct, card, build_network(card), device="cpu")
    assert calls and calls[0]["overlap"] >= 0.5 and not calls[0]["fast"]
    assert set(seg.names) >= {"Bladder", "FemoralHead_L"}
    assert math.isfinite(float(seg.find("Bladder").mask.sum()))
