"""Issue 13, items 15 and 16: one clear line and exit 2 instead of internal errors, library noise or silence;
bad paths reported before torch is imported."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cervixtl.cli import main
from cervixtl.image import Image
from cervixtl.io import read_dicom_series, write_image
from shared_data import DATA, need

REPO = Path(__file__).resolve().parents[2]
TSEG = DATA / "totalseg_example"


def error_lines(text: str) -> list[str]:
    return [ln for ln in text.splitlines() if ln.strip()]


def one_error(capsys) -> str:
    lines = error_lines(capsys.readouterr().err)
    assert len(lines) == 1 and lines[0].startswith("cervixtl: error: "), lines
    return lines[0]


def _run_and_report_torch(argv: list[str]) -> tuple[int, bool, str]:
    """Run the CLI in a fresh interpreter; returns (exit status, torch imported when it returned, stderr)."""
    code = ("import sys; from cervixtl.cli import main; rc = main(sys.argv[1:]); "
            "print('torch' in sys.modules); sys.exit(rc)")
    r = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True,
                       env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=120)
    return r.returncode, r.stdout.strip().endswith("True"), r.stderr


# ------------------------------------------------------------------ 13.16 start-up
@pytest.mark.parametrize("argv", [
    ["contour", "/no/such/ct.nii.gz", "out.seg.nrrd"],
    ["cases", "add", "/no/such/ct.nii.gz", "/no/such/labels.nii.gz"],
    ["evaluate", "--reference", "/no/such/ref.nii.gz", "--prediction", "/no/such/pred.nii.gz"],
    ["rtstruct", "export", "/no/such/ct", "/no/such/seg.nrrd", "o.dcm"],
])
def test_bad_paths_are_reported_before_torch_is_imported(argv, tmp_path):
    rc, torch_loaded, err = _run_and_report_torch(argv)
    assert rc == 2 and "no such file" in err and len(error_lines(err)) == 1
    assert not torch_loaded


# ------------------------------------------------------------------ 13.15 outputs checked before the work
def test_compare_with_an_impossible_out_fails_before_any_work(tmp_path):
    (tmp_path / "file").write_text("x")
    rc, torch_loaded, err = _run_and_report_torch(
        ["compare", "--models", "a", "b", "--cases", "all", "--out", str(tmp_path / "file" / "cmp"),
         "--cases-dir", str(tmp_path / "lib")])
    assert rc == 2 and "is a file" in err and len(error_lines(err)) == 1
    assert not torch_loaded  # no model was loaded, no case read


def test_compare_out_on_a_read_only_file_system(tmp_path):
    mnt = tmp_path / "ro"
    mnt.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a read-only tmpfs needs root")
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(mnt)]).returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    try:
        rc, _, err = _run_and_report_torch(["compare", "--models", "a", "b", "--cases", "all", "--out",
                                            str(mnt / "cmp"), "--cases-dir", str(tmp_path / "lib")])
    finally:
        subprocess.run(["umount", str(mnt)])
    assert rc == 2 and "not writable" in err and len(error_lines(err)) == 1


def test_demo_out_below_a_file_and_zero_threads(tmp_path, capsys):
    (tmp_path / "f").write_text("x")
    assert main(["demo", "--out", str(tmp_path / "f" / "x")]) == 2
    assert "is a file" in one_error(capsys)
    assert main(["demo", "--threads", "0", "--out", str(tmp_path / "d")]) == 2
    assert "--threads must be >= 1" in one_error(capsys)
    assert not (tmp_path / "d").exists()


# ------------------------------------------------------------------ 13.15 console
def test_itk_warnings_never_reach_the_console(tmp_path, capfd):
    import pydicom

    files = read_dicom_series(need(TSEG / "example_ct_dicom")).meta["files"]
    for i, f in enumerate(files):  # 0.01 mm jitter: within tolerance, but ITK calls it "non uniform"
        ds = pydicom.dcmread(f)
        ipp = [float(v) for v in ds.ImagePositionPatient]
        ds.ImagePositionPatient = [ipp[0], ipp[1], ipp[2] + (0.01 if i % 2 else 0.0)]
        ds.save_as(tmp_path / Path(f).name)
    capfd.readouterr()
    assert main(["info", str(tmp_path)]) == 0
    err = capfd.readouterr().err
    assert "WARNING" not in err and "itk" not in err.lower()


def test_which_series_of_a_two_series_folder_is_used_is_said(tmp_path, capsys):
    shutil.copytree(need(TSEG / "example_ct_dicom"), tmp_path / "a")
    shutil.copytree(need(DATA / "rtstruct_with_mask"), tmp_path / "b",
                    ignore=lambda d, names: [n for n in names if not n.startswith("CT")])
    assert main(["info", str(tmp_path), "--json"]) == 0
    cap = capsys.readouterr()
    info = json.loads(cap.out)
    assert "holds 2 image series" in cap.err and info["series_choice"] in cap.err
    assert cap.err.startswith("cervixtl: warning: ") and len(error_lines(cap.err)) == 1


def test_a_margin_cut_at_the_image_border_is_warned(tmp_path, capsys):
    arr = np.zeros((20, 30, 30), np.uint8)
    arr[2:6, 10:20, 10:20] = 1  # 2 slices (6 mm) from the inferior edge of an LPS grid
    write_image(Image(arr, (1.0, 1.0, 3.0)), tmp_path / "m.nii.gz")
    assert main(["margins", str(tmp_path / "m.nii.gz"), str(tmp_path / "o.nii.gz"), "--mm", "10"]) == 0
    err = capsys.readouterr().err
    assert "border (I)" in err
    assert main(["margins", str(tmp_path / "m.nii.gz"), str(tmp_path / "o2.nii.gz"), "--mm", "3"]) == 0
    assert "border" not in capsys.readouterr().err


class _Evil:  # pickled into a checkpoint: weights-only loading must refuse it
    def __reduce__(self):
        return (print, ("unpickled!",))


def test_torch_errors_reach_the_user_without_terminal_codes(tmp_path, capsys, monkeypatch):
    import torch

    monkeypatch.setattr("cervixtl.models.registry.bundled_models_dir", lambda: tmp_path / "bundled")
    ckpt = tmp_path / "bad.pt"
    torch.save({"w": torch.zeros(2), "x": _Evil()}, ckpt)
    assert main(["models", "import", str(ckpt), "--name", "evil", "--models-dir", str(tmp_path / "reg")]) == 2
    cap = capsys.readouterr()
    lines = error_lines(cap.err)
    assert len(lines) == 1 and "\x1b" not in cap.err and "unpickled!" not in cap.out


@pytest.mark.parametrize("argv", [["models", "list"], ["models", "show", "cervixtl-demo"], ["cases", "list"]])
def test_listing_commands_do_not_import_torch(argv, tmp_path):
    rc, torch_loaded, err = _run_and_report_torch(argv + ["--models-dir" if argv[0] == "models" else "--cases-dir",
                                                          str(tmp_path / "dir")])
    assert rc == 0, err
    assert not torch_loaded
