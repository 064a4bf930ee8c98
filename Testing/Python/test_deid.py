"""De-identification (PS3.15 Basic Profile): identifiers planted in every attribute must not leak."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

pydicom = pytest.importorskip("pydicom")
from pydicom.datadict import dictionary_VR, keyword_for_tag, tag_for_keyword  # noqa: E402
from pydicom.dataset import Dataset  # noqa: E402
from pydicom.sequence import Sequence  # noqa: E402

from cervixtl.errors import BadInput  # noqa: E402
from cervixtl.rt import deid  # noqa: E402
from shared_data import DATA

CT_FILE = DATA / "rtstruct_with_mask" / "CT_1.dcm"
RS_FILE = DATA / "rtstruct_with_mask" / "RS_Body_SpinalCord.dcm"

TEXT_VRS = {"LO", "SH", "LT", "ST", "UT", "AE", "CS", "UC", "PN", "UN"}


def _need_data() -> None:
    if not CT_FILE.exists():
        pytest.skip(f"shared test data not found at {CT_FILE.parent} (see shared/data/README.md)")


def _plant(ds: Dataset) -> dict[str, str]:
    """Put a unique marker into every identifying attribute (and PN/date elements, nested and private)."""
    markers: dict[str, str] = {}
    n = 0
    for kw in deid.IDENTIFYING_KEYWORDS + ("PatientName", "ReferringPhysicianName", "PerformingPhysicianName",
                                           "OperatorsName", "PhysiciansOfRecord", "NameOfPhysiciansReadingStudy",
                                           "RequestingPhysician", "PatientBirthDate", "StudyDate", "SeriesDate",
                                           "AcquisitionDate", "ContentDate", "StudyTime"):
        tag = tag_for_keyword(kw)
        if tag is None:
            continue
        vr = dictionary_VR(tag)
        if " or " in vr:
            continue
        n += 1
        if vr == "SQ":
            item = Dataset()
            item.PersonName = f"LEAKSQ^N{n:03d}"
            item.CodeMeaning = f"LEAKSQLO{n:03d}"
            setattr(ds, kw, Sequence([item]))
            markers[kw] = f"LEAKSQLO{n:03d}"
        elif vr in TEXT_VRS:
            value = f"LEAK{n:03d}"[:16]
            setattr(ds, kw, value)
            markers[kw] = value
        elif vr == "DA":
            value = f"1931{n % 12 + 1:02d}{n % 27 + 1:02d}"
            setattr(ds, kw, value)
            markers[kw] = value
        elif vr == "TM":
            setattr(ds, kw, "235959.123456")
            markers[kw] = "235959.123456"
        elif vr in ("DS", "IS"):
            setattr(ds, kw, "987.6" if vr == "DS" else "98765")
        elif vr == "AS":
            setattr(ds, kw, "077Y")
            markers[kw] = "077Y"
        elif vr in ("US", "SS", "UL"):
            setattr(ds, kw, 4)
        elif vr == "UI":
            setattr(ds, kw, "1.2.3.4.5.6.7.8.9.424242")
            markers[kw] = "1.2.3.4.5.6.7.8.9.424242"
    # A name and a date hidden in a nested sequence, and a private element.
    inner = Dataset()
    inner.ReferringPhysicianName = "LEAKNESTED^DOCTOR"
    inner.StudyDate = "19450508"
    ds.ReferencedSeriesSequence = Sequence([inner])
    markers["nested PN"] = "LEAKNESTED"
    markers["nested DA"] = "19450508"
    block = ds.private_block(0x0011, "LEAKY PRIVATE CREATOR", create=True)
    block.add_new(0x01, "LO", "LEAKPRIVATEVALUE")
    markers["private"] = "LEAKPRIVATEVALUE"
    return markers


def _bytes(ds: Dataset) -> bytes:
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=False)
    return buf.getvalue()


def test_planted_identifiers_do_not_leak() -> None:
    _need_data()
    ds = pydicom.dcmread(CT_FILE)
    markers = _plant(ds)
    old_uids = {str(ds.SOPInstanceUID), str(ds.SeriesInstanceUID), str(ds.StudyInstanceUID),
                str(ds.FrameOfReferenceUID)}
    raw = _bytes(ds)
    for kw, m in markers.items():  # the planting really happened
        assert m.encode() in raw, kw
    uid_map: dict[str, str] = {}
    deid.deidentify_dataset(ds, uid_map, pseudonym="case-0001")
    out = _bytes(ds)
    leaked = [kw for kw, m in markers.items() if m.encode() in out]
    assert not leaked, f"identifiers left in: {leaked}"
    for uid in old_uids:
        assert uid.encode() not in out
    assert deid.identifying_values(ds) == []
    assert ds.PatientName == "case-0001" and ds.PatientID == "case-0001"
    assert ds.PatientIdentityRemoved == "YES"
    assert ds.DeidentificationMethodCodeSequence[0].CodeValue == "113100"
    # Class UIDs are constants, not identifiers: kept.
    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.2"
    # Pixel data untouched.
    assert ds.pixel_array.shape == (512, 512)


def test_uids_replaced_consistently_across_files() -> None:
    """The RTSTRUCT's references to the CT must point at the CT's *new* UIDs."""
    _need_data()
    ct = pydicom.dcmread(CT_FILE)
    rs = pydicom.dcmread(RS_FILE)
    uid_map: dict[str, str] = {}
    old_sop, old_for, old_series = str(ct.SOPInstanceUID), str(ct.FrameOfReferenceUID), str(ct.SeriesInstanceUID)
    refs_before = {str(e.value) for e in rs.iterall() if e.keyword == "ReferencedSOPInstanceUID"}
    assert old_sop in refs_before
    deid.deidentify_dataset(ct, uid_map, pseudonym="c1")
    deid.deidentify_dataset(rs, uid_map, pseudonym="c1")
    refs_after = {str(e.value) for e in rs.iterall() if e.keyword == "ReferencedSOPInstanceUID"}
    assert str(ct.SOPInstanceUID) in refs_after and old_sop not in refs_after
    assert str(ct.SOPInstanceUID) == uid_map[old_sop] != old_sop
    assert rs.ReferencedFrameOfReferenceSequence[0].FrameOfReferenceUID == ct.FrameOfReferenceUID == uid_map[old_for]
    series = rs.ReferencedFrameOfReferenceSequence[0].RTReferencedStudySequence[0].RTReferencedSeriesSequence[0]
    assert series.SeriesInstanceUID == uid_map[old_series]
    assert ct.file_meta.MediaStorageSOPInstanceUID == ct.SOPInstanceUID
    # Contours survive de-identification.
    assert len(rs.ROIContourSequence[0].ContourSequence) == 4
    assert deid.identifying_values(rs) == []


def test_bad_pseudonym_and_scrub_metadata(tmp_path: Path) -> None:
    with pytest.raises(BadInput):
        deid.deidentify_dataset(Dataset(), {}, pseudonym="Doe^John")
    uid_map: dict[str, str] = {}
    meta = {"modality": "CT", "series_uid": "1.2.3.999", "series_description": "LEAK patient Smith",
            "files": ["/data/Smith_John/CT1.dcm"], "study_date": "20200101", "n_series": 2}
    clean = deid.scrub_metadata(meta, uid_map)
    text = repr(clean)
    # The new series UID is random ("2.25." + 38 digits), so look for the whole date, not "2020".
    assert "Smith" not in text and "LEAK" not in text and "1.2.3.999" not in text and "20200101" not in text
    assert "study_date" not in clean and "files" not in clean and "series_description" not in clean
    assert clean["modality"] == "CT" and clean["series_uid"] == uid_map["1.2.3.999"] and clean["n_series"] == 2


def test_deidentify_file_is_atomic_and_refuses_non_dicom(tmp_path: Path) -> None:
    _need_data()
    bad = tmp_path / "not.dcm"
    bad.write_text("hello")
    with pytest.raises(BadInput):
        deid.deidentify_file(str(bad), str(tmp_path / "out.dcm"), {})
    assert not (tmp_path / "out.dcm").exists()
    deid.deidentify_file(str(CT_FILE), str(tmp_path / "out.dcm"), {}, pseudonym="x")
    ds = pydicom.dcmread(tmp_path / "out.dcm")
    assert ds.PatientID == "x" and ds.PatientIdentityRemoved == "YES"
    assert keyword_for_tag(0x00100010) == "PatientName"


def _all_bytes(folder: Path) -> bytes:
    """Every stored byte of a folder, gzip members decompressed (NIfTI .nii.gz, gzip-encoded NRRD data)."""
    import gzip
    import zlib

    out = []
    for f in sorted(folder.rglob("*")):
        if not f.is_file():
            continue
        raw = f.read_bytes()
        out.append(f.name.encode() + raw)
        if raw[:2] == b"\x1f\x8b":
            out.append(gzip.decompress(raw))
        else:
            # NRRD: text header, blank line, then (here gzip) data.
            idx = raw.find(b"\n\n")
            if idx > 0 and raw[idx + 2:idx + 4] == b"\x1f\x8b":
                out.append(zlib.decompress(raw[idx + 2:], 16 + zlib.MAX_WBITS))
    return b"\n".join(out)


def test_case_library_stores_nothing_identifying(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """DICOM CT + RTSTRUCT with identifiers planted in every Basic Profile attribute -> RTSTRUCT import ->
    `cervixtl cases add`: no marker, no original UID appears in the stored case or in the command output."""
    _need_data()
    pytest.importorskip("cervixtl.cases")
    from cervixtl.cli import main as cli_main
    from cervixtl.io import write_segmentation
    from cervixtl.rt.rtstruct import import_rtstruct

    src = CT_FILE.parent
    ct_dir = tmp_path / "ct"
    ct_dir.mkdir()
    markers: dict[str, str] = {}
    uids: set[str] = set()
    for f in sorted(src.glob("CT_*.dcm")):
        ds = pydicom.dcmread(f)
        uids |= {str(ds.SOPInstanceUID), str(ds.SeriesInstanceUID), str(ds.StudyInstanceUID)}
        markers.update(_plant(ds))
        ds.save_as(ct_dir / f.name)
    rs = pydicom.dcmread(RS_FILE)
    markers.update({f"rs {k}": v for k, v in _plant(rs).items()})
    rs.save_as(tmp_path / "rs.dcm")
    planted = _all_bytes(ct_dir)  # positive control: the scan sees the planted markers in the input
    assert markers["InstitutionName"].encode() in planted and markers["PatientBirthDate"].encode() in planted
    seg, _ = import_rtstruct(ct_dir, tmp_path / "rs.dcm")
    final = tmp_path / "final.seg.nrrd"
    write_segmentation(seg, final)
    cases = tmp_path / "cases"
    capsys.readouterr()
    assert cli_main(["cases", "add", str(ct_dir), str(final), "--cases-dir", str(cases)]) == 0
    logs = capsys.readouterr()
    stored = _all_bytes(cases) + (logs.out + logs.err).encode()
    assert b"ct.nii.gz" in stored or b"case.json" in stored
    # Markers are at least 4 characters; skip the short generic ones (times, ages) that could occur by chance.
    leaked = sorted(k for k, m in markers.items() if len(m) >= 8 and m.encode() in stored)
    assert not leaked, f"identifiers stored in the case library: {leaked}"
    assert not [u for u in uids if u.encode() in stored]
