"""The bundled demo model and ``cervixtl demo`` end to end; a tiny fine-tune from the demo model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import ndimage

from cervixtl.io import read_image, read_segmentation
from cervixtl.models.package import verify_package
from cervixtl.models.registry import Registry
from cervixtl.phantom import make_phantom
from contract import progress_records, validate

DEMO = Path(__file__).resolve().parents[2] / "Resources" / "Models" / "cervixtl-demo"


def _dice(a, b):
    return 2 * np.count_nonzero(a & b) / (np.count_nonzero(a) + np.count_nonzero(b))


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    if not (DEMO / "model.json").exists():
        pytest.skip(f"bundled demo model missing at {DEMO}")
    out = tmp_path_factory.mktemp("demo")
    env_reg = tmp_path_factory.mktemp("emptyreg")
    r = subprocess.run([sys.executable, "-m", "cervixtl", "demo", "--out", str(out), "--json", "--threads", "2",
                        "--models-dir", str(env_reg), "--progress", "json"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    return out, json.loads(r.stdout), r.stderr


def test_bundled_model_package():
    if not (DEMO / "model.json").exists():
        pytest.skip(f"bundled demo model missing at {DEMO}")
    card = verify_package(DEMO)  # SHA-256 of the weights matches the card
    assert (DEMO / "weights.safetensors").stat().st_size <= 20 * 1024 * 1024
    assert "not for clinical use" in card.intended_use and "not for clinical use" in card.derivation
    assert card.label_names == ["GTV", "CTV", "Bladder", "Rectum", "FemoralHead_L", "FemoralHead_R"]
    assert card.output == "sigmoid" and card.parent is None and card.protocol["ptv_margin_mm"] == 7.0
    assert card.training["steps"] > 0 and card.training["seed"] == 7


def test_demo_outputs(demo_run):
    out, rep, stderr = demo_run
    for name in ("ct.nii.gz", "contours.seg.nrrd", "truth.seg.nrrd", "report.json", "overview.png"):
        assert (out / name).is_file(), name
    assert not list(out.glob(".*part*"))
    assert json.loads((out / "report.json").read_text())["metrics"] == rep["metrics"]
    assert (out / "overview.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "not for clinical use" in rep["notice"]
    validate(rep)  # the cervixtl-demo/1 contract
    assert any(r["stage"] == "network" for r in progress_records(stderr))
    ct_ref, truth_ref = make_phantom(rep["phantom"]["seed"], "A")
    ct = read_image(out / "ct.nii.gz")
    assert np.array_equal(ct.array, ct_ref.array) and ct.same_geometry(ct_ref)
    seg = read_segmentation(out / "contours.seg.nrrd", reference=ct)
    assert seg.names[:3] == ["GTV", "CTV", "PTV"]
    gtv, ctv, ptv = seg.mask("GTV"), seg.mask("CTV"), seg.mask("PTV")
    assert not (gtv & ~ctv).any() and not (ctv & ~ptv).any()
    # PTV = CTV + 7 mm (protocol of the card), checked with an independent Euclidean distance map
    dist = ndimage.distance_transform_edt(~ctv, sampling=ct.spacing[::-1])
    assert _dice(ptv, dist <= 7.0 + 1e-6) > 0.97
    # the report's Dice are those of the written files
    truth = read_segmentation(out / "truth.seg.nrrd", reference=ct)
    for m in rep["metrics"]:
        assert m["dice"] == pytest.approx(_dice(seg.mask(m["name"]), truth.mask(m["name"])), abs=1e-9)
        assert truth.mask(m["name"]).sum() == truth_ref.mask(m["name"]).sum()


def test_demo_model_quality(demo_run):
    """The phantom-trained model must find the structures on an unseen site-A phantom."""
    _, rep, _ = demo_run
    dice = {m["name"]: m["dice"] for m in rep["metrics"]}
    # measured with the shipped model (seed-7 recipe, 600 steps): GTV 0.87, CTV 0.85, PTV 0.90, Bladder 0.94,
    # Rectum 0.93, FemoralHead_L 0.93, FemoralHead_R 0.86; thresholds leave room for platform differences
    assert dice["Bladder"] > 0.85 and dice["Rectum"] > 0.8
    assert dice["FemoralHead_L"] > 0.75 and dice["FemoralHead_R"] > 0.75
    assert dice["GTV"] > 0.7 and dice["CTV"] > 0.75 and dice["PTV"] > 0.8


def test_tiny_finetune_from_demo_model(tmp_path):
    """A few fine-tuning steps from the bundled model on site-B phantoms register a child version."""
    if not (DEMO / "model.json").exists():
        pytest.skip(f"bundled demo model missing at {DEMO}")
    from cervixtl.training import TrainConfig, finetune

    torch.set_num_threads(2)
    reg = Registry(tmp_path / "models")  # empty: the bundled package is the fallback source
    cases = [(f"b{i}", *make_phantom(300 + i, "B")) for i in range(2)]
    src = verify_package(DEMO)
    card = finetune("cervixtl-demo", cases, "site-b", registry=reg, sites=["B"],
                    config=TrainConfig(epochs=1, steps_per_epoch=2, batch_size=1, freeze="encoder", device="cpu"))
    assert card.parent == {"name": "cervixtl-demo", "version": src.version, "sha256": src.weights["sha256"]}
    assert card.training["freeze"] == "encoder" and card.training["frozen_tensors"] > 0
    assert card.training["weights_loaded"] > 0 and card.training["weights_reinitialised"] == 0
    assert reg.versions("site-b") == ["1"] and card.training["sites"] == ["B"]


def test_readme_python_snippet_runs_on_the_demo_output(demo_run):
    """The README's Python example, run as written in the demo's output folder."""
    out, _, _ = demo_run
    text = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    start = text.index("this works as written:")
    code = text[text.index("```python\n", start) + len("```python\n"):]
    code = code[:code.index("```")]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=out, env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    lines = r.stdout.strip().splitlines()
    assert len(lines) == 3 and "'GTV'" in lines[0] and 0.0 < float(lines[1]) <= 1.0 and "('CTV'," in lines[2]
    assert (out / "again.seg.nrrd").is_file()
