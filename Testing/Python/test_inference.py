"""Inference pipeline geometry and logic, checked against analytic spheres with an 'oracle' network.

The oracle is a parameter-free network whose logits are a steep function of the normalised CT intensity, so
the expected segmentation is known exactly: a bright sphere (GTV) inside a less bright sphere (CTV). What is
tested is everything around the network: reorientation, resampling to the model spacing and back onto the CT's
exact grid, sliding windows, sigmoid/softmax decoding, post-processing, nesting and the PTV margin.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cervixtl.errors import BadInput, Cancelled, ModelError
from cervixtl.image import Image
from cervixtl.inference import mask_to_reference, normalise, resolve_device, run_contour, window_settings
from cervixtl.models.networks import segresnet_card
from cervixtl.postprocess import enforce_nesting, fill_holes, largest_component
from cervixtl.progress import Progress

R_GTV, R_CTV, CENTRE = 12.0, 22.0, np.array([5.0, -8.0, 30.0])  # mm, LPS


class Oracle(torch.nn.Module):
    """Channel c: logit = 60 * (x - thresholds[c]) on the window-normalised intensity x."""

    def __init__(self, thresholds):
        super().__init__()
        self.register_buffer("t", torch.tensor(thresholds, dtype=torch.float32).view(1, -1, 1, 1, 1))

    def forward(self, x):
        return 60.0 * (x - self.t)


def phantom(direction=np.diag([-1.0, -1.0, 1.0]), spacing=(0.9, 0.9, 2.5), shape=(40, 90, 90)):
    """Body of water (40 HU) in air, CTV sphere 150 HU, GTV sphere 250 HU; RAS by default."""
    nz, ny, nx = shape
    img = Image(np.zeros(shape, np.int16), spacing, (0, 0, 0), direction)
    centre_idx = np.array([(nx - 1) / 2, (ny - 1) / 2, (nz - 1) / 2])
    img.origin = tuple(CENTRE - img.direction @ (np.asarray(spacing) * centre_idx))
    k, j, i = np.mgrid[0:nz, 0:ny, 0:nx]
    pts = np.stack([i, j, k], -1).reshape(-1, 3) * np.asarray(spacing)
    lps = pts @ img.direction.T + np.asarray(img.origin)
    r = np.linalg.norm(lps - CENTRE, axis=1).reshape(shape)
    arr = np.full(shape, -1000, np.int16)
    arr[np.hypot(*(lps[:, :2] - CENTRE[:2]).T).reshape(shape) < 38] = 40
    arr[r <= R_CTV] = 150
    arr[r <= R_GTV] = 250
    img.array = arr
    return img, r


def dice(a, b):
    return 2 * np.sum(a & b) / (np.sum(a) + np.sum(b))


def card_and_net(output="sigmoid", **kw):
    card = segresnet_card("oracle", ["GTV", "CTV"], init_filters=4, spacing_mm=(2.0, 2.0, 3.0),
                          patch_size=(16, 32, 32), window_hu=(-200, 300), output=output, ptv_margin_mm=5.0, **kw)
    # window -200..300: 250 HU -> 0.9, 150 HU -> 0.7, 40 HU -> 0.48
    return card, Oracle([0.8, 0.6])


@pytest.mark.parametrize("output", ["sigmoid", "softmax"])
def test_spheres_on_exact_ct_grid(output):
    ct, r = phantom()
    card, net = card_and_net(output)
    if output == "softmax":  # channels: background, GTV, CTV; make background win outside the CTV
        net = SoftmaxOracle()
    res = run_contour(ct, card, net, device="cpu")
    seg = res.segmentation
    assert seg.names[:3] == ["GTV", "CTV", "PTV"]
    assert seg.grid.same_geometry(ct) and seg.grid.orientation_code() == "RAS"
    gtv, ctv, ptv = (seg.mask(n) for n in ("GTV", "CTV", "PTV"))
    assert dice(gtv, r <= R_GTV) > 0.93
    assert dice(ctv, r <= R_CTV) > 0.95
    assert np.all(ctv[gtv]) and np.all(ptv[ctv])  # GTV ⊆ CTV ⊆ PTV
    vol_ptv = ptv.sum() * ct.voxel_volume_mm3
    expected = 4 / 3 * np.pi * (R_CTV + 5.0) ** 3  # CTV grown by the card's 5 mm protocol margin
    assert abs(vol_ptv - expected) / expected < 0.1
    assert res.summary["ptv"] == {"source": "margin", "margin_mm": 5.0}
    assert set(res.summary["timing_s"]) == {"resample_s", "network_s", "postprocess_s"}


class SoftmaxOracle(torch.nn.Module):
    def forward(self, x):
        ctv = 60 * (x - 0.6)
        return torch.cat([torch.zeros_like(x), ctv + 60 * (x - 0.8), ctv], dim=1)  # background, GTV, CTV


def test_fast_mode_and_ptv_override_agree_with_normal():
    ct, r = phantom(direction=np.eye(3), spacing=(1.2, 1.2, 2.0), shape=(36, 70, 70))
    card, net = card_and_net()
    normal = run_contour(ct, card, net, device="cpu", overlap=0.5)
    fast = run_contour(ct, card, net, device="cpu", fast=True, ptv_mm=10.0)
    assert fast.summary["sliding_window"]["overlap"] == 0.0
    assert fast.summary["sliding_window"]["windows"] <= normal.summary["sliding_window"]["windows"]
    assert dice(fast.segmentation.mask("CTV"), normal.segmentation.mask("CTV")) > 0.99
    vol = fast.segmentation.volume_ml("PTV") * 1000
    expected = 4 / 3 * np.pi * (R_CTV + 10.0) ** 3
    assert abs(vol - expected) / expected < 0.1


def test_cancel_stops_the_network():
    ct, _ = phantom()
    card, net = card_and_net()
    prog = Progress("none")
    prog.callback = lambda rec: prog.cancel() if rec["stage"] == "network" else None
    with pytest.raises(Cancelled):
        run_contour(ct, card, net, device="cpu", progress=prog)


def test_model_without_targets_and_bad_device():
    ct, _ = phantom()
    card = segresnet_card("oars", ["Bladder", "Rectum"], init_filters=4)
    with pytest.raises(ModelError, match="does not predict GTV and CTV"):
        run_contour(ct, card, Oracle([0.5, 0.5]), device="cpu")
    with pytest.raises(BadInput, match="unknown device"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(BadInput, match="no CUDA"):
            resolve_device("cuda")


def test_mask_to_reference_identity_and_shift():
    m = np.zeros((10, 20, 30), bool)
    m[3:7, 5:15, 10:25] = True
    img = Image(m, (1.0, 2.0, 3.0), (1, 2, 3))
    assert np.array_equal(mask_to_reference(img, img), m)
    shifted = Image(np.zeros((10, 20, 30), np.uint8), (1.0, 2.0, 3.0), (1 + 2.0, 2, 3))  # +2 voxels in x
    out = mask_to_reference(img, shifted)
    assert np.array_equal(out[:, :, :-2], m[:, :, 2:])


def test_postprocess_rules():
    m = np.zeros((20, 20, 20), bool)
    m[2:10, 2:10, 2:10] = True
    m[14:16, 14:16, 14:16] = True  # small second blob
    lc = largest_component(m)
    assert lc.sum() == 8 ** 3 and not lc[15, 15, 15]
    hollow = np.zeros((20, 20, 20), bool)
    hollow[4:16, 4:16, 4:16] = True
    hollow[7:13, 7:13, 7:13] = False
    assert fill_holes(hollow).sum() == 12 ** 3
    masks = enforce_nesting({"GTV": m.copy(), "ctv": np.zeros_like(m), "PTV": np.zeros_like(m)})
    assert np.array_equal(masks["ctv"], m) and np.array_equal(masks["PTV"], m)


def test_normalise_and_window_settings():
    x = normalise(np.array([-1000, -200, 50, 300, 3000]), (-200, 300))
    assert np.allclose(x, [0, 0, 0.5, 1, 1])
    card, _ = card_and_net()
    ws = window_settings(card, (100, 250, 250), fast=True, device=torch.device("cpu"), overlap=None)
    assert ws == {"roi_size": [16, 32, 32], "overlap": 0.0, "sw_batch_size": 4}  # the training patch
    with pytest.raises(BadInput, match="overlap"):
        window_settings(card, (100, 250, 250), fast=False, device=torch.device("cpu"), overlap=1.0)


def test_small_cpu_windows_are_batched_with_the_same_logits():
    """Small windows run 4 to a network call on the CPU (batch-1 3D convolutions of thin layers take
    PyTorch's slow native path); windows are independent, so batching changes nothing but rounding."""
    from cervixtl.models.networks import build_network
    from cervixtl.sliding_window import CPU_SMALL_WINDOW, predict_logits

    cpu = torch.device("cpu")
    card, _ = card_and_net()
    normal = window_settings(card, (100, 250, 250), fast=False, device=cpu, overlap=0.5)
    assert normal["sw_batch_size"] == 4 and normal["overlap"] == 0.5
    big = segresnet_card("big", ["GTV"], patch_size=(96, 96, 96))
    assert CPU_SMALL_WINDOW < 96 ** 3
    assert window_settings(big, (200, 200, 200), fast=False, device=cpu, overlap=None)["sw_batch_size"] == 1
    torch.manual_seed(0)
    net = build_network(card).eval()
    vol = np.random.default_rng(0).normal(size=(40, 70, 70)).astype(np.float32)
    one, _ = predict_logits(net, vol, device=cpu, **{**normal, "sw_batch_size": 1})
    four, _ = predict_logits(net, vol, device=cpu, **normal)
    assert one.shape == four.shape == (2, 40, 70, 70)
    assert torch.allclose(one, four, atol=1e-4, rtol=1e-4)


def test_cuda_out_of_memory_falls_back(monkeypatch):
    """Simulated OOM: halve the window batch first, then move to the CPU, with warnings, no crash."""
    import cervixtl.inference as inf
    from cervixtl import sliding_window

    calls = []

    def fake_sliding(net, volume, roi, overlap, batch, dev, n_win, progress, swi):
        calls.append((dev.type, batch))
        if dev.type == "cuda":
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        return torch.zeros((1, 2) + volume.shape)

    monkeypatch.setattr(sliding_window, "_sliding", fake_sliding)  # predict_probabilities lives there
    with pytest.warns(RuntimeWarning, match="out of memory"):
        probs, info = inf.predict_probabilities(torch.nn.Identity(), np.zeros((8, 8, 8), np.float32), "sigmoid",
                                                roi_size=(8, 8, 8), overlap=0.0, sw_batch_size=4,
                                                device=torch.device("cuda"))
    assert calls == [("cuda", 4), ("cuda", 2), ("cuda", 1), ("cpu", 1)]
    assert info["device"] == "cpu" and len(info["warnings"]) == 3
    assert probs.shape == (2, 8, 8, 8) and torch.allclose(probs, torch.full_like(probs, 0.5))


def test_anisotropic_ptv_margin_per_patient_direction():
    """PTV = CTV + (R, L, A, P, S, I) mm on a RAS-stored CT: each PTV face moves by its own margin."""
    ct, _ = phantom(spacing=(1.0, 1.0, 2.0), shape=(50, 100, 100))
    card, net = card_and_net()
    margins = (4.0, 10.0, 6.0, 12.0, 8.0, 16.0)  # R, L, A, P, S, I
    seg = run_contour(ct, card, net, device="cpu", ptv_mm=margins).segmentation

    def extent(mask):  # LPS min/max of voxel centres along x (R-/L+), y (A-/P+), z (I-/S+)
        k, j, i = np.nonzero(mask)
        pts = np.stack([i, j, k], 1) * np.asarray(ct.spacing) @ ct.direction.T + np.asarray(ct.origin)
        return pts.min(0), pts.max(0)

    (clo, chi), (plo, phi) = extent(seg.mask("CTV")), extent(seg.mask("PTV"))
    r, lm, a, p, s, i = margins
    got = np.array([clo[0] - plo[0], phi[0] - chi[0], clo[1] - plo[1], phi[1] - chi[1], phi[2] - chi[2],
                    clo[2] - plo[2]])
    tol = np.array([1.0, 1.0, 1.0, 1.0, 2.0, 2.0])  # one voxel
    assert np.all(np.abs(got - np.array([r, lm, a, p, s, i])) <= tol), got


def test_bundled_demo_model_on_a_new_phantom():
    """End to end with the trained demo model on a phantom it never saw, stored RAS at another spacing."""
    from cervixtl.image import reorient
    from cervixtl.models.registry import Registry, bundled_models_dir
    from cervixtl.phantom import make_phantom

    if not (bundled_models_dir() / "cervixtl-demo" / "model.json").exists():
        pytest.skip("the bundled demo model Resources/Models/cervixtl-demo is not built")
    card, net = Registry(bundled_models_dir() / "none").load("cervixtl-demo")
    ct, truth = make_phantom(7, "A", spacing=(2.5, 2.5, 3.0))
    ras = reorient(ct, "RAS")
    torch.set_num_threads(2)
    seg = run_contour(ras, card, net, device="cpu", fast=True).segmentation
    assert seg.grid.same_geometry(ras)
    back = {n: reorient(seg.mask_image(n), "LPS").array for n in ("GTV", "CTV", "PTV", "Bladder")}
    assert dice(back["CTV"], truth.mask("CTV")) > 0.6
    assert dice(back["Bladder"], truth.mask("Bladder")) > 0.7
    assert dice(back["PTV"], truth.mask("PTV")) > 0.75
    assert np.all(back["CTV"][back["GTV"]]) and np.all(back["PTV"][back["CTV"]])
