"""Training / fine-tuning: sampling, anatomy-safe augmentation, freezing, registry versions, cancel, resume."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from cervixtl.errors import BadInput, Cancelled
from cervixtl.models.registry import Registry
from cervixtl.phantom import make_phantom
from cervixtl.progress import Progress
from cervixtl.training import (
    PreparedCase,
    TrainConfig,
    augment,
    default_card,
    finetune,
    lr_swap_pairs,
    prepare_case,
    sample_patch,
    split_cases,
    train,
)

torch.set_num_threads(2)


def tiny_card(name="tiny", labels=("GTV", "CTV", "Bladder", "FemoralHead_L", "FemoralHead_R")):
    return default_card(name, labels, init_filters=4, spacing_mm=(8.0, 8.0, 8.0), patch_size=(16, 32, 32))


@pytest.fixture(scope="module")
def cases():
    out = []
    for i in range(3):
        ct, seg = make_phantom(100 + i, "A")
        out.append((f"p{i}", ct, seg))
    return out


def test_lr_swap_pairs():
    assert lr_swap_pairs(["GTV", "FemoralHead_L", "Bladder", "FemoralHead_R"]) == [0, 3, 2, 1]
    assert lr_swap_pairs(["Parotid_Left", "Parotid_Right", "CTV"]) == [1, 0, 2]
    assert lr_swap_pairs(["GTV", "FemoralHead_L"]) == [0, 1]  # unpaired stays
    assert lr_swap_pairs(["Brainstem", "RightParotid", "LeftParotid", "L_Kidney", "R_Kidney"]) == [0, 2, 1, 4, 3]


def test_prepare_case_keeps_volumes(cases):
    card = tiny_card()
    _, ct, seg = cases[0]
    pc = prepare_case(ct, seg, card, "p0")
    assert pc.image.dtype == np.float32 and pc.image.min() >= 0.0 and pc.image.max() <= 1.0  # window card
    assert pc.labels.shape[0] == 5 and pc.missing == []
    for c, name in enumerate(card.label_names):
        vol_model = pc.labels[c].sum() * 8.0 ** 3 / 1000
        assert vol_model == pytest.approx(seg.volume_ml(name), rel=0.25), name
    # the left femoral head stays on the +x (patient left) side after resampling
    xs = np.argwhere(pc.labels[3])[:, 2]
    assert xs.mean() > pc.labels.shape[3] / 2


def test_sample_patch_is_target_biased_and_padded():
    img = np.zeros((10, 20, 20), np.float32)
    lab = np.zeros((1, 10, 20, 20), np.uint8)
    lab[0, 5, 2, 17] = 1
    pc = PreparedCase(img, lab)
    rng = np.random.default_rng(0)
    for _ in range(20):
        x, y = sample_patch(pc, (16, 8, 8), rng, pos_fraction=1.0)
        assert x.shape == (1, 16, 8, 8) and y.shape == (1, 16, 8, 8)
        assert y.sum() == 1


def test_augment_is_anatomy_safe():
    """Mirroring must rename left/right: FemoralHead_L must stay on the patient's left (+x) side."""
    names = ["FemoralHead_L", "FemoralHead_R"]
    lab = torch.zeros(1, 2, 8, 16, 16)
    lab[0, 0, :, 4:12, 11:15] = 1  # left = high x index
    lab[0, 1, :, 4:12, 1:5] = 1
    img = lab[:, :1] * 0.5 + lab[:, 1:] * 0.8  # the image tells which side is which
    rng = np.random.default_rng(1)
    flipped = 0
    for _ in range(30):
        xi, yi = augment(img, lab, rng, lr_swap_pairs(names), max_rotation_deg=0.0, scale_range=0.0)
        left = torch.nonzero(yi[0, 0])[:, 2].float().mean()
        right = torch.nonzero(yi[0, 1])[:, 2].float().mean()
        assert left > 8 > right
        flipped += int(xi[0, 0, 4, 8, 13] > xi[0, 0, 4, 8, 2])  # the brighter structure now sits on the left
    assert 5 < flipped < 25


def test_uncontoured_structure_is_left_out_of_the_loss():
    """A structure a case does not contour must not be trained as background (sigmoid): zero gradient."""
    from cervixtl.training import make_loss

    loss_fn = make_loss("sigmoid")
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 4, 8, 8, requires_grad=True)
    y = (torch.rand(2, 3, 4, 8, 8) > 0.5).float()
    y[1, 2] = -1.0  # case 2 did not contour structure 3
    loss = loss_fn(logits, y)
    loss.backward()
    assert logits.grad[1, 2].abs().sum() == 0 and logits.grad[0, 2].abs().sum() > 0
    # a case missing a structure -> that channel is UNKNOWN in the prepared case
    ct, seg = make_phantom(1, "A")
    seg.remove("Bladder")
    pc = prepare_case(ct, seg, tiny_card(), "x")
    assert pc.missing == ["Bladder"] and (pc.labels[2] == 255).all()


def test_batch_dice_pools_the_batch():
    """Analytic check of ``batch_dice``: sample 0 has no truth but 10 predicted voxels, sample 1 is predicted
    perfectly (10 voxels). Per-sample Dice losses are 1 and 0 (mean 1/2); pooled over the batch the Dice is
    2*10 / (20 + 10), so the loss is 1/3. The cross-entropy part is the same for both."""
    from cervixtl.training import make_loss

    y = torch.zeros(2, 1, 2, 4, 4)
    y[1, 0, 0, :, :].view(-1)[:10] = 1.0
    pred = torch.zeros_like(y)
    pred[0, 0, 1, :, :].view(-1)[:10] = 1.0
    pred[1] = y[1]
    logits = (pred * 2 - 1) * 30.0  # sigmoid exactly 0 or 1
    per_sample = make_loss("sigmoid")(logits, y)
    pooled = make_loss("sigmoid", batch_dice=True)(logits, y)
    assert float(per_sample - pooled) == pytest.approx(0.5 - 1.0 / 3.0, abs=1e-4)


def test_split_cases():
    tr, va = split_cases([f"c{i}" for i in range(10)], 0.2, seed=3)
    assert len(va) == 2 and not set(tr) & set(va) and len(tr) == 8
    assert split_cases(["a"], 0.5, 0) == (["a"], [])
    assert len(split_cases(["a", "b"], 0.9, 0)[1]) == 1


def test_finetune_versions_freeze_and_card(tmp_path, cases):
    reg = Registry(tmp_path / "models")
    cfg = TrainConfig(epochs=1, steps_per_epoch=2, batch_size=1, device="cpu", seed=1)
    lines = []
    c1 = finetune(None, cases[:2], "site", config=cfg, registry=reg, base_card=tiny_card("site"), sites=["A"],
                  progress=Progress(callback=lines.append))
    assert c1.spec == "site@1" and c1.parent is None and reg.active("site") == "1"
    assert c1.training["steps"] == 2 and len(c1.training["loss_curve"]) == 2
    assert c1.training["freeze"] == "none" and c1.training["frozen_tensors"] == 0
    tr_ids, va_ids = c1.training["train_case_ids"], c1.training["val_case_ids"]
    assert sorted(tr_ids + va_ids) == ["p0", "p1"] and not set(tr_ids) & set(va_ids)
    assert (len(tr_ids), len(va_ids)) == (c1.training["train_cases"], c1.training["val_cases"])
    assert reg.load("site@1")[0].training["val_case_ids"] == va_ids, "held-out case ids must be saved in the card"
    assert set(c1.validation) == set(c1.label_names)
    train_lines = [ln for ln in lines if ln["stage"] == "train" and "loss" in ln]
    assert train_lines and {"epoch", "step", "loss", "val_dice", "eta_s"} <= set(train_lines[0])

    # fine-tune with a frozen encoder and a new label set (new output head)
    cfg2 = TrainConfig(epochs=1, steps_per_epoch=2, batch_size=1, device="cpu", freeze="encoder", seed=2)
    c2 = finetune("site@1", cases[:2], "site", config=cfg2, registry=reg, labels=["GTV", "CTV", "PTV"])
    assert c2.spec == "site@2" and c2.parent["sha256"] == c1.weights["sha256"]
    assert c2.training["frozen_tensors"] > 0 and "freeze=encoder" in c2.derivation
    assert c2.label_names == ["GTV", "CTV", "PTV"]
    assert reg.active("site") == "1", "a new version must not become active without activate=True"
    _, n1 = reg.load("site@1")
    _, n2 = reg.load("site@2")
    s1, s2 = n1.state_dict(), n2.state_dict()
    enc = [k for k in s2 if k.startswith(("convInit.", "down_layers.")) and s2[k].is_floating_point()]
    assert enc and all(torch.equal(s1[k], s2[k]) for k in enc), "frozen encoder weights changed"
    dec = [k for k in s2 if k.startswith("up_layers.") and k.endswith("weight") and k in s1]
    assert any(not torch.equal(s1[k], s2[k]) for k in dec), "decoder did not train"
    c3 = finetune("site@2", cases[:2], "site", config=cfg, registry=reg, activate=True)
    assert reg.active("site") == "3" and c3.label_names == ["GTV", "CTV", "PTV"]


def test_cancel_leaves_registry_untouched(tmp_path, cases):
    reg = Registry(tmp_path / "models")
    finetune(None, cases[:2], "m", config=TrainConfig(epochs=1, steps_per_epoch=1, batch_size=1, device="cpu"),
             registry=reg, base_card=tiny_card("m"))
    before = sorted(p.relative_to(reg.root).as_posix() for p in reg.root.rglob("*") if ".work" not in p.parts)
    prog = Progress()

    def cancel_at_step_2(rec):
        if rec.get("step") == 2:
            prog.cancel()

    prog.callback = cancel_at_step_2
    with pytest.raises(Cancelled):
        finetune("m", cases[:2], "m", config=TrainConfig(epochs=3, steps_per_epoch=3, batch_size=1, device="cpu"),
                 registry=reg, activate=True, progress=prog)
    after = sorted(p.relative_to(reg.root).as_posix() for p in reg.root.rglob("*") if ".work" not in p.parts)
    assert after == before and reg.versions("m") == ["1"] and reg.active("m") == "1"


def test_resume_continues_from_checkpoint(tmp_path, cases):
    card = tiny_card()
    pcs = [prepare_case(ct, seg, card, cid) for cid, ct, seg in cases[:2]]
    from cervixtl.models.networks import build_network

    torch.manual_seed(0)
    net = build_network(card)
    cfg = TrainConfig(epochs=1, steps_per_epoch=2, batch_size=1, device="cpu", patience=0)
    r1 = train(net, card, pcs[:1], pcs[1:], cfg, checkpoint_dir=tmp_path)
    assert (tmp_path / "checkpoint.pt").exists() and r1.history["steps"] == 2
    cfg.epochs = 2
    r2 = train(build_network(card), card, pcs[:1], pcs[1:], cfg, checkpoint_dir=tmp_path, resume=True)
    assert r2.history["steps"] == 4 and r2.history["epochs"] == 2
    assert [s for s, _ in r2.history["loss_curve"]] == [1, 2, 3, 4]
    assert r2.history["loss_curve"][:2] == r1.history["loss_curve"]


def test_bad_settings():
    with pytest.raises(BadInput):
        TrainConfig(epochs=None, minutes=None).check()
    with pytest.raises(BadInput):
        TrainConfig(val_fraction=1.0).check()


def test_model_spacing_median_and_bad_values():
    from cervixtl.training import model_spacing

    assert model_spacing(None) is None
    assert model_spacing("4") == (4.0, 4.0, 4.0) and model_spacing(3) == (3.0, 3.0, 3.0)
    assert model_spacing("3.906,3.906,2.5") == (3.906, 3.906, 2.5) and model_spacing([1, 2, 3]) == (1.0, 2.0, 3.0)
    # per-axis median (x, y, z), not the median of all numbers: z of the three cases is 2.5, 3, 5 mm
    spacings = [(3.906, 3.906, 2.5), (4.688, 4.688, 3.0), (3.5, 3.5, 5.0)]
    assert model_spacing("median", spacings) == (3.906, 3.906, 3.0)
    assert model_spacing(" Median ", spacings[:2]) == (4.297, 4.297, 2.75)
    for bad in ("1,2", "a,b,c", "0", "0.1", "30", "nan", [4, 4], "", "median"):
        with pytest.raises(BadInput, match="spacing"):
            model_spacing(bad)


def test_finetune_cases_spacing_sets_the_card_and_is_refused_for_a_source(tmp_path, cases):
    from cervixtl.api.training import finetune_cases
    from cervixtl.cases import CaseLibrary

    with pytest.raises(BadInput, match="from scratch only"):
        finetune_cases("some-source", "all", "m", spacing="3", cases_dir=tmp_path / "none")
    lib = CaseLibrary(tmp_path / "cases")
    for _cid, ct, seg in cases[:2]:
        lib.add(ct, seg, site="A")
    kw = dict(models_dir=tmp_path / "models", cases_dir=tmp_path / "cases", labels=["CTV", "Bladder"], size="small",
              epochs=1, steps_per_epoch=1, batch_size=1, device="cpu", val_fraction=0.5)
    with pytest.raises(BadInput, match="spacing"):
        finetune_cases(None, "all", "m", spacing="1,2", **kw)
    out = finetune_cases(None, "all", "m", spacing="9,9,12", **kw)
    card = Registry(tmp_path / "models").load(out["model"])[0]
    assert card.spacing_mm == (9.0, 9.0, 12.0)


@pytest.mark.slow
def test_cli_finetune_from_case_library(tmp_path, cases):
    from cervixtl.cases import CaseLibrary

    lib = CaseLibrary(tmp_path / "cases")
    for _cid, ct, seg in cases[:2]:
        lib.add(ct, seg, site="A")
    from cervixtl.models.networks import build_network
    from cervixtl.models.package import save_package

    src = tiny_card("src")
    save_package(tmp_path / "src-pkg", src, build_network(src).state_dict())
    Registry(tmp_path / "models").add(tmp_path / "src-pkg")
    cmd = [sys.executable, "-m", "cervixtl", "finetune", "--source", "src", "--cases", "all", "--name", "cli-model",
           "--epochs", "1", "--steps-per-epoch", "1", "--batch-size", "1", "--device", "cpu", "--threads", "2",
           "--models-dir", str(tmp_path / "models"), "--cases-dir", str(tmp_path / "cases"), "--progress", "json",
           "--json"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    recs = [json.loads(ln) for ln in r.stderr.splitlines() if ln.startswith("{")]
    assert any(x["stage"] == "train" and "eta_s" in x for x in recs)
    out = json.loads(r.stdout)
    assert out["name"] == "cli-model" and out["training"]["sites"] == ["A"] and out["parent"]["name"] == "src"
    bad = subprocess.run(cmd[:-3] + ["--freeze", "half"], capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "freeze" in bad.stderr and "Traceback" not in bad.stderr


@pytest.mark.slow
def test_finetune_under_torchrun_two_processes(tmp_path, cases):
    """DistributedDataParallel path: two CPU processes (gloo) under torchrun train one model together; only
    rank 0 reports and writes the new registry version, and the card records the world size."""
    import torch.distributed as dist

    if not dist.is_available() or not dist.is_gloo_available():
        pytest.skip("torch.distributed with the gloo backend is not available in this torch build")
    from cervixtl.cases import CaseLibrary
    from cervixtl.models.networks import build_network
    from cervixtl.models.package import save_package

    lib = CaseLibrary(tmp_path / "cases")
    for _, ct, seg in cases:
        lib.add(ct, seg, site="B")
    src = tiny_card("src")
    save_package(tmp_path / "src-pkg", src, build_network(src).state_dict())
    Registry(tmp_path / "models").add(tmp_path / "src-pkg")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "cervixtl", "finetune", "--source", "src", "--cases", "all", "--name", "ddp-model",
           "--freeze", "encoder", "--epochs", "2", "--steps-per-epoch", "2", "--batch-size", "1",
           "--device", "cpu", "--threads", "1", "--models-dir", str(tmp_path / "models"),
           "--cases-dir", str(tmp_path / "cases"), "--progress", "json", "--json"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout)  # one JSON document: rank 1 printed nothing
    assert out["name"] == "ddp-model" and out["training"]["world_size"] == 2
    assert out["training"]["steps"] == 4 and out["training"]["frozen_tensors"] > 0
    validations = [json.loads(ln) for ln in r.stderr.splitlines() if ln.startswith("{")
                   and json.loads(ln)["stage"] == "validate"]
    assert len(validations) == 2  # rank 0 alone validates and reports, once per epoch
    reg = Registry(tmp_path / "models")
    assert reg.versions("ddp-model") == ["1"]
    card, net = reg.load("ddp-model")
    assert card.parent["name"] == "src"
    assert not (tmp_path / "models" / ".work" / "ddp-model").exists()


@pytest.mark.slow
def test_torchrun_minutes_budget_stops_every_rank_at_the_same_step(tmp_path, cases):
    """Under torchrun with a wall-clock budget, rank 0 decides when to stop and broadcasts it: both ranks
    leave the loop at the same step (a rank that stopped alone would hang the other in a collective)."""
    import torch.distributed as dist

    if not dist.is_available() or not dist.is_gloo_available():
        pytest.skip("torch.distributed with the gloo backend is not available in this torch build")
    from cervixtl.cases import CaseLibrary
    from cervixtl.models.networks import build_network
    from cervixtl.models.package import save_package

    lib = CaseLibrary(tmp_path / "cases")
    for _, ct, seg in cases:
        lib.add(ct, seg, site="B")
    src = tiny_card("src")
    save_package(tmp_path / "src-pkg", src, build_network(src).state_dict())
    Registry(tmp_path / "models").add(tmp_path / "src-pkg")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "cervixtl", "finetune", "--source", "src", "--cases", "all", "--name", "ddp-min",
           "--minutes", "0.3", "--steps-per-epoch", "3", "--batch-size", "1", "--no-augment",
           "--device", "cpu", "--threads", "1", "--models-dir", str(tmp_path / "models"),
           "--cases-dir", str(tmp_path / "cases"), "--progress", "json", "--json"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout)
    assert out["training"]["world_size"] == 2 and out["training"]["stop_reason"] in ("time budget", "schedule done")
    assert out["training"]["total_steps"] and out["training"]["steps"] <= out["training"]["total_steps"]
