"""Issue 13, items 3-6 and 10: damaged or wrong inputs are refused by every command with one line and exit 2,
never read as something else (zero-filled slices, 1 mm voxels, 0 HU for NaN, a mean slice step).

The images are the real TotalSegmentator CT and DICOM series of ``../shared/data`` (cropped copies, damaged
here); the expected refusals are the defects themselves, not this code's output.
"""

from __future__ import annotations

import gzip
import json
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from cervixtl.cli import main
from cervixtl.errors import BadInput
from cervixtl.image import Image
from cervixtl.io import check_ct, read_dicom_series, read_image, write_image
from shared_data import DATA, need

TOTALSEG = DATA / "totalseg_example"


def one_error(capsys) -> str:
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("cervixtl: error: "), err
    return lines[0]


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """A cropped real CT (HU), a bone mask on it, and damaged copies of both."""
    d = tmp_path_factory.mktemp("damaged")
    ct = read_image(need(TOTALSEG / "example_ct.nii.gz"))
    small = ct.array[40:80, 20:80, 20:100].astype(np.int16)
    ct = Image(small, ct.spacing, ct.origin, ct.direction)
    write_image(ct, d / "ct.nii.gz")
    mask = ct.with_array((small > 200).astype(np.uint8))
    write_image(mask, d / "mask.nii.gz")
    for name in ("ct", "mask"):
        data = (d / f"{name}.nii.gz").read_bytes()
        (d / f"{name}_cut.nii.gz").write_bytes(data[: len(data) // 2])
        raw = bytearray(gzip.decompress(data))
        for tag, pix in (("zero", (0.0, 0.0, 0.0)), ("neg", (-3.0, 3.0, 3.0))):
            bad = bytearray(raw)
            bad[80:92] = struct.pack("<3f", *pix)
            (d / f"{name}_{tag}.nii.gz").write_bytes(gzip.compress(bytes(bad)))
    return d


# ------------------------------------------------------------------ 13.3 truncated .nii.gz, 13.4 bad spacing
COMMANDS = {
    "info": lambda d, f: ["info", str(d / f"ct{f}")],
    "margins": lambda d, f: ["margins", str(d / f"mask{f}"), str(d / "out.nii.gz"), "--mm", "5"],
    "evaluate": lambda d, f: ["evaluate", "--reference", str(d / f"mask{f}"), "--prediction", str(d / "mask.nii.gz")],
    "cases add": lambda d, f: ["cases", "add", str(d / f"ct{f}"), str(d / "mask.nii.gz"), "--cases-dir",
                               str(d / "lib")],
}


@pytest.mark.parametrize("command", sorted(COMMANDS))
@pytest.mark.parametrize("damage,words", [("_cut.nii.gz", "truncated"), ("_zero.nii.gz", "voxel spacing"),
                                          ("_neg.nii.gz", "voxel spacing")])
def test_every_command_refuses_truncated_or_spacing_less_images(env, capsys, command, damage, words):
    assert main(COMMANDS[command](env, damage)) == 2
    assert words in one_error(capsys)
    assert not (env / "out.nii.gz").exists()
    assert not (env / "lib").exists() or not any((env / "lib").glob("case-*"))


def test_empty_gzip_image_is_called_empty(tmp_path, capsys):
    (tmp_path / "e.nii.gz").write_bytes(gzip.compress(b""))
    (tmp_path / "z.nii.gz").write_bytes(b"")
    for f in ("e.nii.gz", "z.nii.gz"):
        assert main(["info", str(tmp_path / f)]) == 2
        line = one_error(capsys)
        assert "empty" in line and "truncated" not in line


# ------------------------------------------------------------------ 13.5 NaN / Inf
def _nan_ct(env: Path, n_nan: int) -> Image:
    ct = read_image(env / "ct.nii.gz")
    arr = ct.array.astype(np.float32)
    arr.ravel()[: n_nan] = np.nan
    if n_nan < arr.size:
        arr.ravel()[n_nan] = np.inf
    return ct.with_array(arr)


@pytest.mark.parametrize("ext", ["nii.gz", "nii", "nrrd", "mha"])
def test_nan_voxels_are_refused_in_every_format(env, tmp_path, capsys, ext):
    f = tmp_path / f"nan.{ext}"
    sitk.WriteImage(_nan_ct(env, 32).to_sitk(), str(f))  # plain ITK writer: the NaN reach the file
    with pytest.raises(BadInput, match="33 voxels are NaN or infinite"):
        read_image(f)
    assert main(["info", str(f)]) == 2
    assert "NaN" in one_error(capsys)


def test_all_nan_ct_is_not_called_a_mask(env, tmp_path):
    img = _nan_ct(env, 10**9)
    with pytest.raises(BadInput, match="all voxels are NaN") as exc:
        check_ct(img, "ct")
    assert "mask" not in str(exc.value)
    sitk.WriteImage(img.to_sitk(), str(tmp_path / "allnan.nrrd"))
    with pytest.raises(BadInput, match="all voxels are NaN"):
        read_image(tmp_path / "allnan.nrrd")


# ------------------------------------------------------------------ 13.6 uneven DICOM slice steps
def test_dicom_series_with_uneven_slice_steps_is_refused(tmp_path, capsys):
    import pydicom

    src = need(TOTALSEG / "example_ct_dicom")
    files = read_dicom_series(src).meta["files"]
    step = 2.0  # the series' slice step (PROVENANCE: 0.98 x 0.98 x 2 mm)
    for i, f in enumerate(files):  # slices above the middle move up 0.8 mm: one 2.8 mm step, the rest 2.0 mm
        ds = pydicom.dcmread(f)
        if i >= len(files) // 2:
            ipp = [float(v) for v in ds.ImagePositionPatient]
            ds.ImagePositionPatient = [ipp[0], ipp[1], ipp[2] + 0.4 * step]
        ds.save_as(tmp_path / Path(f).name)
    with pytest.raises(BadInput, match="uneven slice spacing.*2.00 to 2.80 mm"):
        read_dicom_series(tmp_path)
    assert main(["info", str(tmp_path)]) == 2
    assert "uneven slice spacing" in one_error(capsys)


def test_dicom_series_with_a_middle_slice_removed_is_refused_by_the_cli(tmp_path, capsys):
    src = need(TOTALSEG / "example_ct_dicom")
    files = read_dicom_series(src).meta["files"]
    for f in files[:10] + files[11:]:
        shutil.copy(f, tmp_path / Path(f).name)
    assert main(["info", str(tmp_path)]) == 2
    line = one_error(capsys)
    assert "missing slices" in line and "WARNING" not in line


# ------------------------------------------------------------------ 13.10 garbage in the case library
def test_cases_add_refuses_a_ct_as_labels(env, capsys):
    lib = env / "lib10"
    assert main(["cases", "add", str(env / "ct.nii.gz"), str(env / "ct.nii.gz"), "--cases-dir", str(lib)]) == 2
    assert "not a mask or label map" in one_error(capsys)
    assert not lib.exists() or not any(lib.glob("case-*"))


@pytest.mark.parametrize("kind,words", [("float", "non-integer"), ("negative", "negative"),
                                        ("many", "more than 255 labels")])
def test_cases_add_refuses_label_files_that_are_not_label_maps(env, tmp_path, capsys, kind, words):
    mask = read_image(env / "mask.nii.gz")
    arr = mask.array.astype(np.float32)
    if kind == "float":
        arr = arr * 0.5
    elif kind == "negative":
        arr[0, 0, 0] = -1
    else:
        arr = (np.arange(arr.size) % 300).reshape(arr.shape).astype(np.int16)
    write_image(mask.with_array(arr), tmp_path / "lab.nii.gz")
    assert main(["cases", "add", str(env / "ct.nii.gz"), str(tmp_path / "lab.nii.gz"), "--cases-dir",
                 str(tmp_path / "lib")]) == 2
    assert words in one_error(capsys)


def test_a_corrupt_case_record_is_skipped_and_repaired(env, tmp_path, capsys):
    lib = tmp_path / "lib"
    md = ["--cases-dir", str(lib)]
    ids = []
    for _ in range(2):
        assert main(["cases", "add", str(env / "ct.nii.gz"), str(env / "mask.nii.gz"), *md]) == 0
        ids.append(capsys.readouterr().out.strip())
    (lib / ids[0] / "case.json").write_text("{ not json")
    assert main(["cases", "list", "--json", *md]) == 0
    cap = capsys.readouterr()
    assert [r["id"] for r in json.loads(cap.out)["cases"]] == [ids[1]]
    assert ids[0] in cap.err and "warning" in cap.err
    assert main(["cases", "check", *md]) == 1  # a problem found
    cap = capsys.readouterr()
    assert ids[0] in cap.out and "case.json" in cap.out
    assert main(["cases", "check", "--repair", *md]) == 0
    cap = capsys.readouterr()
    assert "repaired" in cap.out
    assert main(["cases", "list", "--json", *md]) == 0
    assert sorted(r["id"] for r in json.loads(capsys.readouterr().out)["cases"]) == sorted(ids)
    assert main(["cases", "check", *md]) == 0
