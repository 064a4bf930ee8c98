"""DICOM SEG import/export (highdicom) on the dcmqi samples, coded terminology, and the CervixTL terminology
file checked against DICOM PS3.16 (pydicom's code dictionaries) and slicerio."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

pydicom = pytest.importorskip("pydicom")
pytest.importorskip("highdicom")

from cervixtl import structures  # noqa: E402
from cervixtl.cli import main as cli_main  # noqa: E402
from cervixtl.errors import BadInput, GeometryMismatch  # noqa: E402
from cervixtl.image import Image  # noqa: E402
from cervixtl.io import read_image, read_segmentation, write_segmentation  # noqa: E402
from cervixtl.rt.seg import export_seg, read_seg  # noqa: E402
from cervixtl.segmentation import Segmentation  # noqa: E402
from shared_data import DATA, need

SEGS = DATA / "dcmqi_seg" / "segmentations"
CT3 = SEGS / "ct-3slice"
TERM = Path(__file__).resolve().parents[2] / "Resources" / "CervixTL.term.json"


def test_read_liver_seg_equals_labelmap() -> None:
    need(CT3)
    ct = read_image(CT3)
    seg = read_seg(SEGS / "liver.dcm", reference=ct)
    ref = read_image(SEGS / "liver_seg.nrrd")
    assert seg.names == ["Liver"]
    assert seg["Liver"].voxels == 107098
    assert np.array_equal(seg.mask("Liver"), ref.array > 0)
    term = seg["Liver"].terminology
    assert term["type"][2] == "Liver" and term["category"][2] == "Tissue"
    # Without a reference, the SEG's own grid is the same physical grid (slices run inferior-wards).
    own = read_seg(SEGS / "liver.dcm")
    assert own.grid.orientation_code() == "LPI"
    assert np.array_equal(own.mask("Liver")[::-1], ref.array > 0)


def test_read_overlapping_segments() -> None:
    need(CT3)
    ct = read_image(CT3)
    seg = read_seg(SEGS / "partial_overlaps.dcm", reference=ct)
    assert [s.voxels for s in seg.segments] == [9602, 11888, 10743, 6693, 4713]
    assert seg.names == ["GREEN", "ORANGE", "PURPLE", "LIGHT_BLUE", "DARK_BLUE"]
    labels = {1: "partial_overlaps-1.nrrd", 4: "partial_overlaps-1.nrrd", 5: "partial_overlaps-1.nrrd",
              2: "partial_overlaps-2.nrrd", 3: "partial_overlaps-3.nrrd"}
    for number, name in enumerate(seg.names, start=1):
        ref = read_image(SEGS / labels[number])
        assert np.array_equal(seg.mask(name), ref.array == number), name
    assert seg.overlapping()


@pytest.mark.parametrize("case,voxels", [("23x38x3", 322), ("24x38x3", 315)])
def test_one_bit_packing(case: str, voxels: int) -> None:
    need(SEGS / case)
    ct = read_image(SEGS / case / "image")
    seg = read_seg(SEGS / case / "seg" / "label.seg", reference=ct)
    ref = read_image(SEGS / case / "nrrd" / "label.nrrd")
    assert seg["Liver"].voxels == voxels
    assert np.array_equal(seg.mask("Liver"), ref.array > 0)


def test_sparse_labelmap_seg() -> None:
    need(SEGS / "sparse-labelmap-noppv.dcm")
    ct = read_image(SEGS / "24x38x3" / "image")
    seg = read_seg(SEGS / "sparse-labelmap-noppv.dcm", reference=ct)
    ref = read_image(SEGS / "sparse_labelmap_noppv_seg.nrrd")
    assert seg.names == ["Liver"]  # the label-map background segment is not a structure
    assert np.array_equal(seg.mask("Liver"), ref.array == 1)


def _cervix_seg(ct: Image) -> Segmentation:
    seg = Segmentation(ct)
    zz, yy, xx = np.indices(ct.array.shape)
    seg.set("CTV", (xx - 250) ** 2 + (yy - 260) ** 2 < 40 ** 2)
    seg.set("GTV", (xx - 250) ** 2 + (yy - 260) ** 2 < 15 ** 2)
    seg.set("FemoralHead_L", (xx - 380) ** 2 + (yy - 300) ** 2 < 20 ** 2)
    seg.set("Bladder", (abs(xx - 250) < 30) & (abs(yy - 180) < 20) & (zz == 1))
    seg.set("Rectum", np.zeros(ct.array.shape, bool))
    return seg


def test_export_roundtrip_with_terminology(tmp_path: Path) -> None:
    need(CT3)
    ct = read_image(CT3)
    seg = _cervix_seg(ct)
    out, report = export_seg(CT3, seg, tmp_path / "seg.dcm")
    assert any("Rectum" in w for w in report["warnings"])  # empty: left out, reported
    back = read_seg(out, reference=ct)
    assert back.names == ["CTV", "GTV", "FemoralHead_L", "Bladder"]
    for s in back.segments:
        assert np.array_equal(s.mask, seg.mask(s.name)), s.name
        expected = structures.terminology(s.name)
        assert s.terminology["category"] == expected["category"]
        assert s.terminology["type"] == expected["type"]
        assert s.terminology.get("typeModifier") == expected.get("typeModifier")
        assert np.allclose(s.color, seg[s.name].color, atol=0.02)
    ds = pydicom.dcmread(out)
    assert ds.Modality == "SEG" and ds.FrameOfReferenceUID == pydicom.dcmread(CT3 / "01.dcm").FrameOfReferenceUID
    refs = {i.ReferencedSOPInstanceUID for i in ds.ReferencedSeriesSequence[0].ReferencedInstanceSequence}
    assert refs == {str(pydicom.dcmread(f).SOPInstanceUID) for f in CT3.glob("*.dcm")}
    if shutil.which("dciodvfy"):
        res = subprocess.run(["dciodvfy", str(out)], capture_output=True, text=True, timeout=60)
        errors = [ln for ln in (res.stdout + res.stderr).splitlines() if ln.startswith("Error")]
        assert errors == [], errors


def test_bad_input(tmp_path: Path) -> None:
    need(CT3)
    with pytest.raises(BadInput, match="not a DICOM Segmentation"):
        read_seg(CT3 / "01.dcm")
    (tmp_path / "x.dcm").write_bytes(b"junk")
    with pytest.raises(BadInput):
        read_seg(tmp_path / "x.dcm")
    other = Segmentation(Image(np.zeros((3, 8, 8), np.uint8)))
    other.set("GTV", np.ones((3, 8, 8), bool))
    with pytest.raises(GeometryMismatch):
        export_seg(CT3, other, tmp_path / "o.dcm")
    empty = Segmentation(read_image(CT3))
    empty.set("GTV", np.zeros(empty.grid.array.shape, bool))
    with pytest.raises(BadInput, match="no non-empty segment"):
        export_seg(CT3, empty, tmp_path / "o.dcm")
    assert not (tmp_path / "o.dcm").exists()


def test_cli_seg(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    need(CT3)
    nrrd = tmp_path / "liver.seg.nrrd"
    assert cli_main(["seg", "import", str(SEGS / "liver.dcm"), str(nrrd), "--reference", str(CT3)]) == 0
    assert read_segmentation(nrrd)["Liver"].voxels == 107098
    capsys.readouterr()
    out = tmp_path / "liver.dcm"
    assert cli_main(["seg", "export", str(CT3), str(nrrd), str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["segments"][0]["type"] == ["SRT", "T-62000", "Liver"]
    rc = cli_main(["seg", "import", str(CT3 / "01.dcm"), str(tmp_path / "bad.seg.nrrd")])
    assert rc == 2 and "not a DICOM Segmentation" in capsys.readouterr().err


# ============================================================================ terminology file
def test_terminology_codes_match_dicom_ps3_16() -> None:
    """Every coded entry must exist in DICOM PS3.16 (as packaged in pydicom) with the same meaning."""
    from pydicom.sr._concepts_dict import concepts

    data = json.loads(TERM.read_text(encoding="utf-8"))
    entries = data["cervixtl_entries"]
    assert set(entries) == {"GTV", "CTV", "PTV", "Bladder", "Rectum", "Sigmoid", "Bowel", "FemoralHead_L",
                            "FemoralHead_R", "Uterus", "Body", "Bone"}
    index: dict[tuple[str, str], set[str]] = {}
    for scheme, by_kw in concepts.items():
        for d in by_kw.values():
            for code, (meaning, _cids) in d.items():
                index.setdefault((scheme, code), set()).add(meaning.lower())
    for name, e in entries.items():
        for key in ("category", "type", "typeModifier"):
            if key not in e:
                continue
            scheme, code, meaning = e[key]
            assert (scheme, code) in index, (name, key, code)
            assert meaning.lower() in index[(scheme, code)], (name, key, index[(scheme, code)])
    assert entries["GTV"]["type"][1] == "228791009" and entries["CTV"]["type"][1] == "228792002"
    assert entries["FemoralHead_L"]["typeModifier"][2] == "Left"
    assert entries["FemoralHead_R"]["typeModifier"][2] == "Right"
    # The Slicer context part lists every entry under its category.
    listed = {(c["CodeValue"], t["CodeValue"]) for c in data["SegmentationCodes"]["Category"] for t in c["Type"]}
    for e in entries.values():
        assert (e["category"][1], e["type"][1]) in listed


def test_terminology_survives_seg_nrrd_in_slicerio(tmp_path: Path) -> None:
    slicerio = pytest.importorskip("slicerio")
    grid = Image(np.zeros((4, 6, 5), np.uint8), (1.0, 1.0, 2.0))
    seg = Segmentation(grid)
    for i, name in enumerate(("GTV", "FemoralHead_R", "Body")):
        m = np.zeros(grid.array.shape, bool)
        m[i, 1:3, 1:3] = True
        seg.set(name, m)
    out = write_segmentation(seg, tmp_path / "t.seg.nrrd")
    data = slicerio.read_segmentation(str(out))
    got = {s["name"]: s.get("terminology") for s in data["segments"]}
    for name in ("GTV", "FemoralHead_R", "Body"):
        exp = structures.terminology(name)
        assert got[name]["category"] == exp["category"] and got[name]["type"] == exp["type"]
        assert got[name].get("typeModifier") == exp.get("typeModifier")
        assert got[name]["contextName"] == exp["contextName"]
