"""Issue 13, items 7-9 and the DICOM parts of 15: exports on a series with empty UIDs are valid and say so,
smoothed RTSTRUCT polygons keep their structures' area, empty named segments are kept, truncated RTSTRUCT / SEG
files are refused with one line."""

from __future__ import annotations

import json

import numpy as np
import pytest

pydicom = pytest.importorskip("pydicom")

from cervixtl.cli import main  # noqa: E402
from cervixtl.io import read_dicom_series, read_segmentation, write_image  # noqa: E402
from cervixtl.rt.contours import polygon_area  # noqa: E402
from cervixtl.rt.rtstruct import segment_contours  # noqa: E402
from cervixtl.rt.uids import is_valid_uid  # noqa: E402
from shared_data import DATA, need  # noqa: E402

TSEG = DATA / "totalseg_example"
ECLIPSE = DATA / "slicerrt_eclipse_prostate"
DCMQI = DATA / "dcmqi_seg"


def _uids(ds) -> list[str]:  # noqa: ANN001
    out: list[str] = []
    for el in ds.iterall():
        if el.VR == "UI" and el.value is not None:
            out += [str(v) for v in (el.value if el.VM > 1 else [el.value])]
    return out


@pytest.fixture(scope="module")
def blank_uid_ct(tmp_path_factory):
    """The real TotalSegmentator DICOM CT (empty SOP Instance / Class, Series and Study UIDs) and a bone /
    soft-tissue label map with a sidecar on its grid."""
    src = need(TSEG / "example_ct_dicom")
    ct = read_dicom_series(src)
    h = pydicom.dcmread(ct.meta["files"][0], stop_before_pixels=True)
    assert not str(getattr(h, "SOPInstanceUID", "") or "")  # the defect this test is about
    d = tmp_path_factory.mktemp("uids")
    lab = np.zeros(ct.array.shape, np.uint8)
    lab[5:15, 180:330, 160:360] = 2  # a block of soft tissue
    lab[ct.array > 300] = 1  # bone (many small islands and holes per slice)
    write_image(ct.with_array(lab), d / "lab.nii.gz")
    (d / "lab.json").write_text(json.dumps({"labels": [{"value": 1, "name": "Bone"}, {"value": 2, "name": "Soft"},
                                                       {"value": 3, "name": "GTV"}]}))
    return src, d


# ------------------------------------------------------------------ 13.7 empty UIDs
def test_rtstruct_export_on_a_series_with_empty_uids_is_valid_and_warns(blank_uid_ct, capsys):
    src, d = blank_uid_ct
    out = d / "rs.dcm"
    assert main(["rtstruct", "export", str(src), str(d / "lab.nii.gz"), str(out)]) == 0
    err = capsys.readouterr().err
    assert "UIDs" in err and "cannot refer to the original images" in err
    ds = pydicom.dcmread(out)
    uids = _uids(ds)
    assert uids and all(is_valid_uid(u) for u in uids), [u for u in uids if not is_valid_uid(u)]
    refs = [str(ci.ReferencedSOPInstanceUID)
            for ci in ds.ReferencedFrameOfReferenceSequence[0].RTReferencedStudySequence[0]
            .RTReferencedSeriesSequence[0].ContourImageSequence]
    assert len(set(refs)) == len(refs) == 20  # one distinct UID per slice


def test_seg_export_on_a_series_with_empty_uids_works_and_warns(blank_uid_ct, capsys):
    src, d = blank_uid_ct
    out = d / "seg.dcm"
    assert main(["seg", "export", str(src), str(d / "lab.nii.gz"), str(out)]) == 0
    err = capsys.readouterr().err
    assert "internal error" not in err and "UIDs" in err
    assert all(is_valid_uid(u) for u in _uids(pydicom.dcmread(out)))


# ------------------------------------------------------------------ 13.9 empty named segments
def test_empty_segment_named_in_the_sidecar_is_kept_as_an_empty_roi(blank_uid_ct, capsys):
    src, d = blank_uid_ct
    out = d / "rs9.dcm"
    assert main(["rtstruct", "export", str(src), str(d / "lab.nii.gz"), str(out)]) == 0
    err = capsys.readouterr().err
    assert "'GTV' is empty" in err
    names = [str(r.ROIName) for r in pydicom.dcmread(out).StructureSetROISequence]
    assert names == ["Bone", "Soft", "GTV"]


# ------------------------------------------------------------------ 13.8 polygon area of smoothed contours
def _polygon_volume_ml(mask: np.ndarray, grid, sigma: float) -> float:  # noqa: ANN001
    """Sum over slices of the even-odd polygon area (mm^2, LPS x-y plane of axial slices) x slice step."""
    by_slice: dict[int, list[np.ndarray]] = {}
    for k, pts in segment_contours(mask, grid, 0.0, sigma):
        by_slice.setdefault(k, []).append(pts[:, :2])
    total = 0.0
    for polys in by_slice.values():
        areas = [polygon_area(p) for p in polys]
        ref = np.sign(areas[int(np.argmax(np.abs(areas)))])
        total += sum(a * ref for a in areas)
    return total * grid.spacing[2] / 1000.0


def test_smoothed_polygons_keep_each_structures_voxel_area():
    names = {int(k): v for k, v in json.loads(need(TSEG / "labels.json").read_text()).items()}
    seg = read_segmentation(TSEG / "example_seg.nii.gz", names=names)
    grid = seg.grid
    vv = grid.voxel_volume_mm3 / 1000.0
    one = np.zeros(grid.array.shape, bool)
    one[50, 50, 60] = True
    line = np.zeros(grid.array.shape, bool)
    line[50, 40, 30:70] = True
    cases = [("one voxel", one), ("voxel line", line)] + [(s.name, s.mask) for s in seg.segments]
    for name, mask in cases:
        vox_ml = mask.sum() * vv
        ratio = _polygon_volume_ml(mask, grid, 0.5) / vox_ml
        assert ratio >= 0.5, (name, ratio)
        if vox_ml >= 2.0:
            assert abs(ratio - 1.0) <= 0.01, (name, vox_ml, ratio)
    assert any("rib" in n for n, _ in cases)  # thin curved structures are among them


def test_smoothed_polygons_still_give_back_the_exact_voxels(blank_uid_ct, tmp_path):
    src, d = blank_uid_ct
    out = tmp_path / "rs.dcm"
    assert main(["rtstruct", "export", str(src), str(d / "lab.nii.gz"), str(out)]) == 0
    back = tmp_path / "back.seg.nrrd"
    assert main(["rtstruct", "import", str(src), str(out), str(back), "--keep-names"]) == 0
    orig = read_segmentation(d / "lab.nii.gz")
    again = read_segmentation(back)
    for name in ("Bone", "Soft"):
        assert np.array_equal(orig[name].mask, again[name].mask)


# ------------------------------------------------------------------ 13.15 truncated RTSTRUCT / SEG
def one_error(capsys) -> str:
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("cervixtl: error: "), lines
    return lines[0]


def test_truncated_rtstruct_fails_rtstruct_list(tmp_path, capsys):
    rs = next(need(ECLIPSE).glob("RS.*.dcm"))
    assert main(["rtstruct", "list", str(rs)]) == 0
    capsys.readouterr()
    cut = tmp_path / "cut.dcm"
    data = rs.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    assert main(["rtstruct", "list", str(cut)]) == 2
    assert "truncated RTSTRUCT" in one_error(capsys)


def test_truncated_dicom_seg_says_truncated(tmp_path, capsys):
    seg = need(DCMQI / "segmentations" / "liver.dcm")
    cut = tmp_path / "cut.dcm"
    data = seg.read_bytes()
    cut.write_bytes(data[: int(len(data) * 0.6)])
    assert main(["seg", "import", str(cut), str(tmp_path / "o.seg.nrrd")]) == 2
    line = one_error(capsys)
    assert "truncated DICOM SEG" in line and "reshape" not in line
