"""``cervixtl contour`` end to end with a tiny random-weight SegResNet package, and its error handling."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from cervixtl.cli import main
from cervixtl.image import Image
from cervixtl.io import read_segmentation, write_image
from cervixtl.models.networks import build_network, segresnet_card
from cervixtl.models.package import save_package
from cervixtl.models.registry import Registry
from shared_data import DATA

REPO = Path(__file__).resolve().parents[2]


def add_model(reg_dir: Path, name: str, labels: list[str], tmp: Path) -> None:
    torch.manual_seed(0)
    card = segresnet_card(name, labels, init_filters=4, spacing_mm=(4.0, 4.0, 4.0), patch_size=(16, 32, 32))
    Registry(reg_dir).add(save_package(tmp / f"pkg-{name}", card, build_network(card).state_dict()))


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("contour")
    reg = tmp / "reg"
    add_model(reg, "tiny", ["GTV", "CTV", "Bladder", "Rectum"], tmp)
    add_model(reg, "oars", ["Bladder", "Rectum"], tmp)
    z, y, x = np.mgrid[0:24, 0:64, 0:64]
    arr = np.full((24, 64, 64), -1000, np.int16)
    body = (y - 32) ** 2 + (x - 32) ** 2 < 28 ** 2
    arr[body] = 30
    arr[body & (((y - 32) ** 2 + (x - 32) ** 2 + (z - 12) ** 2) < 64)] = 200
    direction = np.diag([-1.0, -1.0, 1.0])  # RAS file: must come back on the same grid
    write_image(Image(arr, (1.5, 1.5, 2.5), (40, 30, -20), direction), tmp / "ct.nii.gz")
    return tmp


def run_cli(env: Path, *args: str) -> int:
    return main(["contour", *args, "--models-dir", str(env / "reg"), "--threads", "2"])


def test_contour_seg_nrrd_and_summary(env, capsys):
    out = env / "out" / "case.seg.nrrd"
    assert run_cli(env, str(env / "ct.nii.gz"), str(out), "--model", "tiny", "--progress", "json",
                   "--ptv-mm", "5") == 0
    err = capsys.readouterr().err.strip().splitlines()
    recs = [json.loads(line) for line in err]
    assert {"read", "resample", "network", "post-process", "write"} <= {r["stage"] for r in recs}
    assert all(0.0 <= r["fraction"] <= 1.0 and "message" in r for r in recs)
    seg = read_segmentation(out)
    from cervixtl.io import read_ct

    ct = read_ct(env / "ct.nii.gz")
    assert seg.grid.same_geometry(ct)
    assert seg.names[:3] == ["GTV", "CTV", "PTV"] and {"Bladder", "Rectum"} <= set(seg.names)
    gtv, ctv, ptv = (seg.mask(n) for n in ("GTV", "CTV", "PTV"))
    assert np.all(ctv[gtv]) and np.all(ptv[ctv])
    summary = json.loads((env / "out" / "case_summary.json").read_text())
    assert summary["model"]["name"] == "tiny" and len(summary["model"]["sha256"]) == 64
    assert set(summary["timing_s"]) >= {"read_s", "resample_s", "network_s", "postprocess_s", "write_s", "total_s"}
    assert summary["ptv"] == {"source": "margin", "margin_mm": 5.0}
    assert "ct.nii.gz" not in json.dumps(summary)  # no input path (may name a patient) in the summary
    assert not [p for p in (env / "out").iterdir() if p.name.startswith(".")]


def test_anisotropic_ptv_margin(env, capsys):
    out = env / "aniso.seg.nrrd"
    assert run_cli(env, str(env / "ct.nii.gz"), str(out), "--model", "tiny", "--ptv-mm", "5,5,7,7,10,10") == 0
    seg = read_segmentation(out)
    assert np.all(seg.mask("PTV")[seg.mask("CTV")])
    summary = json.loads((env / "aniso_summary.json").read_text())
    assert summary["ptv"] == {"source": "margin", "margin_mm": [5, 5, 7, 7, 10, 10]}


def test_contour_label_map_fast(env, capsys):
    out = env / "lab.nii.gz"
    assert run_cli(env, str(env / "ct.nii.gz"), str(out), "--model", "tiny@1", "--fast", "--json",
                   "--summary", str(env / "s.json")) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["fast"] is True and summary["sliding_window"]["overlap"] == 0.0
    side = json.loads((env / "lab.json").read_text())
    assert [e["name"] for e in side["labels"]][:3] == ["GTV", "CTV", "PTV"]
    assert (env / "s.json").exists()


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("cervixtl: error:"), err
    return err


@pytest.mark.parametrize("kind, words", [
    ("mr", "not a CT"), ("mask", "mask"), ("truncated", "not a readable image"), ("missing", "no such"),
    ("nospacing", "no voxel spacing"), ("nospacing_nrrd", "no voxel spacing"),
])
def test_bad_ct_inputs(env, capsys, kind, words):
    src = env / f"{kind}.nii.gz"
    if kind == "mr":
        write_image(Image(np.random.default_rng(0).integers(0, 800, (10, 20, 20)).astype(np.int16)), src)
    elif kind == "mask":
        m = np.zeros((10, 20, 20), np.uint8)
        m[3:6, 5:9, 5:9] = 1
        write_image(Image(m), src)
    elif kind == "nospacing":  # NIfTI pixdim = 0: ITK would silently use 1 mm
        import gzip
        import struct

        raw = bytearray(gzip.decompress((env / "ct.nii.gz").read_bytes()))
        raw[80:92] = struct.pack("<3f", 0.0, 0.0, 0.0)
        src.write_bytes(gzip.compress(bytes(raw)))
    elif kind == "nospacing_nrrd":
        src = env / "nospacing.nrrd"
        vol = np.random.default_rng(1).integers(-1000, 500, (6, 8, 8)).astype("<i2")
        src.write_bytes(b"NRRD0004\ntype: short\ndimension: 3\nsizes: 8 8 6\nencoding: raw\nendian: little\n\n"
                        + vol.tobytes())
    elif kind == "truncated":
        data = (env / "ct.nii.gz").read_bytes()
        src.write_bytes(data[: len(data) // 3])
    out = env / f"o_{kind}.seg.nrrd"
    assert run_cli(env, str(src), str(out), "--model", "tiny") == 2
    assert words in one_error_line(capsys)
    assert not out.exists()


@pytest.mark.parametrize("args, words", [
    (["--model", "oars"], "does not predict GTV and CTV"),
    (["--model", "ghost"], "unknown model 'ghost'"),
    (["--model", "tiny", "--device", "tpu"], "unknown device"),
    (["--model", "tiny", "--ptv-mm", "1,2"], "margin needs 1 value or 6"),
    (["--model", "tiny", "--overlap", "0.95"], "--overlap"),
])
def test_bad_options(env, capsys, args, words):
    out = env / "o_opt.seg.nrrd"
    assert run_cli(env, str(env / "ct.nii.gz"), str(out), *args) == 2
    assert words in one_error_line(capsys)
    assert not out.exists()


def test_bad_output_extension_and_corrupt_model(env, capsys, tmp_path):
    assert run_cli(env, str(env / "ct.nii.gz"), str(env / "x.txt"), "--model", "tiny") == 2
    assert "output must end" in one_error_line(capsys)
    reg = tmp_path / "reg"
    add_model(reg, "tiny", ["GTV", "CTV"], tmp_path)
    w = reg / "tiny" / "1" / "weights.safetensors"
    b = bytearray(w.read_bytes())
    b[len(b) // 2] ^= 0xFF
    w.write_bytes(bytes(b))
    rc = main(["contour", str(env / "ct.nii.gz"), str(tmp_path / "o.seg.nrrd"), "--model", "tiny",
               "--models-dir", str(reg)])
    assert rc == 2 and "SHA-256" in one_error_line(capsys)


def test_sigterm_cancels_without_output(env):
    out = env / "cancel.seg.nrrd"
    big = np.full((60, 128, 128), -1000, np.int16)
    big[:, 20:108, 20:108] = 40
    big[20:40, 50:70, 50:70] = 200
    write_image(Image(big, (1.5, 1.5, 2.5)), env / "big.nii.gz")  # ~1000 windows at overlap 0.9
    cmd = [sys.executable, "-m", "cervixtl", "contour", str(env / "big.nii.gz"), str(out), "--model", "tiny",
           "--models-dir", str(env / "reg"), "--overlap", "0.9", "--threads", "1", "--progress", "json"]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
                            cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.stderr is not None
    for line in proc.stderr:
        if '"stage": "network"' in line and '"fraction": 0.0' not in line:
            proc.send_signal(signal.SIGTERM)
            break
    else:
        pytest.fail("the network stage never reported progress")
    rest = proc.stderr.read()
    rc = proc.wait(timeout=60)
    assert rc == 130, rest
    assert "cancelled" in rest
    assert not out.exists() and not list(env.glob(".cancel*"))
    assert not (env / "cancel_summary.json").exists()


def test_seg_nrrd_layers_match_slicerio():
    """The fast .seg.nrrd packing in cervixtl.io gives the same layers/labels as slicerio.add_segment."""
    import slicerio

    from cervixtl.io import _seg_layers
    from cervixtl.segmentation import Segmentation

    rng = np.random.default_rng(3)
    grid = Image(np.zeros((12, 20, 24), np.uint8))
    seg = Segmentation(grid)
    for n in range(7):
        m = np.zeros(grid.array.shape, bool)
        z, y, x = rng.integers(0, 8), rng.integers(0, 14), rng.integers(0, 18)
        m[z:z + 4, y:y + 6, x:x + 6] = True
        seg.set(f"S{n}", m)
    seg.set("Empty", np.zeros(grid.array.shape, bool))
    voxels, entries = _seg_layers(seg)
    ref = slicerio.create_segmentation((24, 20, 12), np.eye(4))
    for s in seg.segments:
        slicerio.add_segment(ref, np.transpose(s.mask, (2, 1, 0)), {"id": s.name})
    assert voxels.ndim == 4  # overlapping boxes need several layers
    assert np.array_equal(voxels, ref["voxels"])
    for e, r in zip(entries, ref["segments"]):
        assert (e["layer"], e["labelValue"], e["extent"]) == (r["layer"], r["labelValue"], r["extent"])


@pytest.mark.parametrize("src", ["totalseg_example/example_ct.nii.gz", "totalseg_example/example_ct_dicom"])
def test_real_ct_nifti_and_dicom(env, tmp_path, capsys, src):
    """Real CTs (RAS NIfTI, and a DICOM series folder) come back on their exact grid."""
    path = DATA / src
    if not path.exists():
        pytest.skip(f"shared test data not found: {path}")
    from cervixtl.io import read_ct

    out = tmp_path / "real.seg.nrrd"
    assert run_cli(env, str(path), str(out), "--model", "tiny", "--fast") == 0
    seg = read_segmentation(out)
    assert seg.grid.same_geometry(read_ct(path))
    assert seg.names[:3] == ["GTV", "CTV", "PTV"]
