"""CLI of the foundation commands (info, margins, evaluate): results on files, exit codes, one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cervixtl.cli import main
from cervixtl.image import Image
from cervixtl.io import read_image, read_segmentation, write_image, write_segmentation
from cervixtl.segmentation import Segmentation
from shared_data import DATA

TOTALSEG = DATA / "totalseg_example"


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    rc = main([str(a) for a in argv])
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def _assert_one_line_error(rc: int, err: str, *words: str) -> None:
    assert rc == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("cervixtl: error:"), err
    assert "Traceback" not in err
    for w in words:
        assert w.lower() in err.lower(), (w, err)


def _ras_grid(shape=(24, 60, 60), spacing=(0.98, 0.98, 2.5)) -> Image:
    """A RAS-stored grid (x and y index axes reversed), as NIfTI files usually are."""
    return Image(np.zeros(shape, np.uint8), spacing, (30.0, 25.0, -20.0), np.diag([-1.0, -1.0, 1.0]))


def _centres(img: Image):
    nz, ny, nx = img.array.shape
    k, j, i = np.meshgrid(np.arange(nz), np.arange(ny), np.arange(nx), indexing="ij")
    pts = np.stack([i, j, k], -1).reshape(-1, 3) * np.asarray(img.spacing)
    lps = pts @ img.direction.T + np.asarray(img.origin)
    return lps.reshape(nz, ny, nx, 3)


# ---------------------------------------------------------------------------- help / entry point
@pytest.mark.parametrize("cmd", ["info", "margins", "evaluate"])
def test_help_exits_0(cmd):
    r = subprocess.run([sys.executable, "-m", "cervixtl", cmd, "--help"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "usage" in r.stdout.lower()


def test_bad_input_through_the_real_entry_point_is_one_line(tmp_path):
    txt = tmp_path / "notes.txt"
    txt.write_text("not an image")
    r = subprocess.run([sys.executable, "-m", "cervixtl", "margins", str(txt), str(tmp_path / "o.nii.gz"),
                        "--mm", "10"], capture_output=True, text=True, timeout=120)
    _assert_one_line_error(r.returncode, r.stderr, "notes.txt")
    assert not (tmp_path / "o.nii.gz").exists()


# ---------------------------------------------------------------------------- info
def test_info_real_ct(capsys):
    ct = TOTALSEG / "example_ct.nii.gz"
    if not ct.exists():
        pytest.skip(f"real test data not found: {ct}")
    rc, out, _ = _run(capsys, "info", ct, "--json")
    d = json.loads(out)
    assert rc == 0 and d["size"] == [122, 101, 112] and d["spacing_mm"] == [3.0, 3.0, 3.0]
    assert d["orientation"] == "RAS" and d["min"] == -1207 and d["max"] == 3382  # PROVENANCE.md


def test_info_missing_file(capsys, tmp_path):
    rc, _, err = _run(capsys, "info", tmp_path / "nope.nii.gz")
    _assert_one_line_error(rc, err, "nope.nii.gz")


# ---------------------------------------------------------------------------- margins
def test_margins_directional_on_ras_file_moves_faces_in_patient_directions(capsys, tmp_path):
    grid = _ras_grid()
    c = _centres(grid)
    box = ((c[..., 0] >= -5) & (c[..., 0] <= 5) & (c[..., 1] >= -4) & (c[..., 1] <= 6)
           & (c[..., 2] >= 5) & (c[..., 2] <= 15))
    src = write_image(grid.with_array(box.astype(np.uint8)), tmp_path / "box.nii.gz")
    out = tmp_path / "ptv.nii.gz"
    rc, stdout, _ = _run(capsys, "margins", src, out, "--mm", "5,8,10,3,7.5,0")
    assert rc == 0 and "mL" in stdout
    res = read_image(out)
    assert res.same_geometry(grid)
    m = res.array != 0
    pts = c[m]
    half = np.array([0.49, 0.49, 1.25])
    lo, hi = pts.min(0) - half, pts.max(0) + half
    blo, bhi = c[box].min(0) - half, c[box].max(0) + half
    # R = -x, L = +x, A = -y, P = +y, I = -z, S = +z (LPS)
    expect_lo = blo - np.array([5.0, 10.0, 0.0])
    expect_hi = bhi + np.array([8.0, 3.0, 7.5])
    assert np.all(np.abs(lo - expect_lo) <= half + 1e-6), (lo, expect_lo)
    assert np.all(np.abs(hi - expect_hi) <= half + 1e-6), (hi, expect_hi)
    assert lo[2] == pytest.approx(blo[2]), "I margin 0: no growth inferiorly"


def test_margins_label_seg_nrrd_output_and_shrink(capsys, tmp_path):
    grid = Image(np.zeros((20, 40, 40), np.uint8), (1.0, 1.0, 2.0))
    c = _centres(grid)
    r = np.linalg.norm(c - np.array([20.0, 20.0, 20.0]), axis=-1)
    lab = np.zeros(grid.array.shape, np.uint8)
    lab[r <= 12] = 3
    lab[(r > 12) & (r <= 14)] = 5
    src = write_image(grid.with_array(lab), tmp_path / "labels.nrrd")
    rc, _, err = _run(capsys, "margins", src, tmp_path / "x.nii.gz", "--mm", "2")
    _assert_one_line_error(rc, err, "--label")
    out = tmp_path / "small.seg.nrrd"
    rc, _, _ = _run(capsys, "margins", src, out, "--mm", "4", "--label", "3", "--shrink")
    assert rc == 0
    seg = read_segmentation(out)
    assert seg.grid.same_geometry(grid) and len(seg.segments) == 1
    got = seg.segments[0].mask
    # eroding the r <= 12 voxel ball by 4 mm: contains r <= 8 - half-diagonal, within r <= 8 + half-diagonal
    hd = np.linalg.norm([1.0, 1.0, 2.0]) / 2
    assert np.all(got[r <= 8 - hd]) and not np.any(got[r > 8 + hd])


def test_margins_bad_inputs(capsys, tmp_path):
    grid = Image(np.zeros((8, 10, 10), np.uint8), (1.0, 1.0, 1.0))
    empty = write_image(grid, tmp_path / "empty.nii.gz")
    m = grid.array.copy()
    m[3:5, 3:6, 3:6] = 1
    mask = write_image(grid.with_array(m), tmp_path / "mask.nii.gz")
    ct = write_image(grid.with_array(np.random.default_rng(0).normal(0, 300, m.shape).astype(np.float32)),
                     tmp_path / "ct.nii.gz")
    notimg = tmp_path / "x.nii.gz"
    notimg.write_bytes(b"garbage")
    (tmp_path / "afile").write_text("x")
    out = tmp_path / "out.nii.gz"
    cases = [
        (["margins", empty, out, "--mm", "5"], ["empty"]),
        (["margins", mask, out, "--mm", "51"], ["out of range", "50"]),
        (["margins", mask, out, "--mm", "-1"], ["out of range"]),
        (["margins", mask, out, "--mm", "1,2,3"], ["6 values"]),
        (["margins", mask, out, "--mm", "ten"], ["margin"]),
        (["margins", ct, out, "--mm", "5"], ["intensity"]),
        (["margins", notimg, out, "--mm", "5"], ["x.nii.gz"]),
        (["margins", tmp_path / "missing.nii.gz", out, "--mm", "5"], ["no such file"]),
        (["margins", mask, out, "--mm", "5", "--label", "7"], ["label 7"]),
        (["margins", mask, tmp_path / "afile" / "o.nii.gz", "--mm", "5"], ["afile"]),
        (["margins", mask, tmp_path / "o.txt", "--mm", "5"], ["extension"]),
    ]
    for argv, words in cases:
        rc, _, err = _run(capsys, *argv)
        _assert_one_line_error(rc, err, *words)
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile", "ct.nii.gz", "empty.nii.gz", "mask.nii.gz",
                                                          "x.nii.gz"], "no partial output left behind"


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere")
def test_margins_unwritable_folder(capsys, tmp_path):
    grid = Image(np.zeros((4, 4, 4), np.uint8), (1.0, 1.0, 1.0))
    m = grid.array.copy()
    m[1:3, 1:3, 1:3] = 1
    src = write_image(grid.with_array(m), tmp_path / "m.nii.gz")
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    rc, _, err = _run(capsys, "margins", src, ro / "o.nii.gz", "--mm", "2")
    _assert_one_line_error(rc, err, "not writable")


# ---------------------------------------------------------------------------- evaluate
def _cube_maps(tmp_path: Path) -> tuple[Path, Path]:
    grid = Image(np.zeros((30, 30, 30), np.uint8), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0))
    a = np.zeros((30, 30, 30), np.uint8)
    b = np.zeros((30, 30, 30), np.uint8)
    a[10:20, 10:20, 10:20] = 1
    b[10:20, 10:20, 12:22] = 1
    a[2:5, 2:5, 2:5] = 2
    b[2:5, 2:5, 2:5] = 2
    return (write_image(grid.with_array(a), tmp_path / "ref.nii.gz"),
            write_image(grid.with_array(b), tmp_path / "pred.nii.gz"))


def test_evaluate_label_maps_table_and_json(capsys, tmp_path):
    ref, pred = _cube_maps(tmp_path)
    js = tmp_path / "res" / "metrics.json"
    rc, out, _ = _run(capsys, "evaluate", "--reference", ref, "--prediction", pred, "--labels", "1,2",
                      "--tolerance-mm", "1", "--json", js)
    assert rc == 0
    lines = out.strip().splitlines()
    assert len(lines) == 3 and "dice" in lines[0] and "hd95" in lines[0]
    d = json.loads(js.read_text())
    s1, s2 = d["structures"]
    assert s1["label"] == 1 and s1["dice"] == pytest.approx(0.8) and s1["hd95_mm"] == pytest.approx(2.0)
    # two offset 10-voxel cubes, hand count (see test_metrics): 576 of 976 surface voxels at 0, 128 at 1 mm
    assert s1["surface_dice"] == pytest.approx(704 / 976) and s1["msd_mm"] == pytest.approx(672 / 976)
    assert s2["dice"] == 1.0 and s2["hd95_mm"] == 0.0


def test_evaluate_seg_nrrd_matches_by_name(capsys, tmp_path):
    grid = Image(np.zeros((20, 20, 20), np.uint8), (1.0, 1.0, 1.0))
    a = np.zeros((20, 20, 20), bool)
    a[5:10, 5:10, 5:10] = True
    b = np.zeros((20, 20, 20), bool)
    b[12:16, 12:16, 12:16] = True
    ref = Segmentation(grid)
    ref.set("GTV", a)
    ref.set("Bladder", b)
    pred = Segmentation(grid)
    pred.set("Bladder", b)  # label 1 here, 2 in the reference
    pred.set("GTV", a)
    write_segmentation(ref, tmp_path / "ref.seg.nrrd")
    write_segmentation(pred, tmp_path / "pred.nii.gz")  # label map + sidecar names
    js = tmp_path / "e.json"
    rc, _, _ = _run(capsys, "evaluate", "--reference", tmp_path / "ref.seg.nrrd", "--prediction",
                    tmp_path / "pred.nii.gz", "--json", js)
    assert rc == 0
    rows = {r["name"]: r for r in json.loads(js.read_text())["structures"]}
    assert set(rows) == {"GTV", "Bladder"} and all(r["dice"] == 1.0 for r in rows.values())


def test_evaluate_empty_structure_is_null_in_json(capsys, tmp_path):
    ref, pred = _cube_maps(tmp_path)
    grid = read_image(pred)
    arr = grid.array.copy()
    arr[arr == 2] = 0
    pred2 = write_image(grid.with_array(arr), tmp_path / "pred2.nii.gz")
    js = tmp_path / "e.json"
    rc, out, _ = _run(capsys, "evaluate", "--reference", ref, "--prediction", pred2, "--json", js)
    assert rc == 0 and "prediction empty" in out
    row = json.loads(js.read_text())["structures"][1]
    assert row["dice"] == 0.0 and row["hd95_mm"] is None and row["empty"] == "prediction"


def test_evaluate_bad_inputs(capsys, tmp_path):
    ref, pred = _cube_maps(tmp_path)
    other = write_image(Image(np.ones((30, 30, 31), np.uint8), (1.0, 1.0, 1.0)), tmp_path / "other.nii.gz")
    notimg = tmp_path / "p.nii.gz"
    notimg.write_text("nope")
    js = tmp_path / "out.json"
    cases = [
        (["--reference", ref, "--prediction", other], ["does not match", "size"]),
        (["--reference", ref, "--prediction", notimg], ["p.nii.gz"]),
        (["--reference", ref, "--prediction", pred, "--labels", "9"], ["label 9"]),
        (["--reference", ref, "--prediction", pred, "--labels", "a,b"], ["labels"]),
        (["--reference", ref, "--prediction", pred, "--tolerance-mm", "0"], ["tolerance"]),
        (["--reference", ref, "--prediction", pred, "--json", tmp_path], ["folder"]),
        (["--reference", ref, "--prediction", other, "--json", js], ["does not match"]),
    ]
    for argv, words in cases:
        rc, _, err = _run(capsys, "evaluate", *argv)
        _assert_one_line_error(rc, err, *words)
    assert not js.exists()


def test_evaluate_real_labels_against_themselves(capsys, tmp_path):
    seg = TOTALSEG / "example_seg.nii.gz"
    if not seg.exists():
        pytest.skip(f"real test data not found: {seg}")
    js = tmp_path / "e.json"
    rc, out, _ = _run(capsys, "evaluate", "--reference", seg, "--prediction", seg, "--labels", "104,92",
                      "--json", js)
    assert rc == 0
    rows = json.loads(js.read_text())["structures"]
    assert [r["label"] for r in rows] == [104, 92]
    assert rows[0]["volume_ref_ml"] == pytest.approx(17744 * 0.027)  # urinary bladder, PROVENANCE.md
    assert rows[1]["volume_ref_ml"] == pytest.approx(7761 * 0.027)  # sacrum
    assert all(r["dice"] == 1.0 and r["hd95_mm"] == 0.0 for r in rows)
