"""cervixtl.io and cervixtl.image on real files: geometry, orientation, DICOM series, .seg.nrrd, label maps.

Expected values come from each data folder's PROVENANCE.md (measured there with nibabel / SimpleITK /
pydicom), not from this code.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from cervixtl.errors import BadInput, GeometryMismatch
from cervixtl.image import Image, reorient, resample_to_reference, resample_to_spacing
from cervixtl.io import (
    read_ct,
    read_dicom_series,
    read_image,
    read_mask,
    read_segmentation,
    stem,
    write_image,
    write_segmentation,
)
from cervixtl.segmentation import Segmentation
from shared_data import DATA, need

TOTALSEG = DATA / "totalseg_example"
SLICERIO = DATA / "slicerio_samples"
RTUTILS = DATA / "rtutils_mock"


# ---------------------------------------------------------------------------- NIfTI CT + label map (RAS)
def test_nifti_ct_geometry_is_lps():
    ct = read_ct(need(TOTALSEG / "example_ct.nii.gz"))
    assert ct.size == (122, 101, 112) and ct.array.shape == (112, 101, 122)
    assert ct.spacing == pytest.approx((3.0, 3.0, 3.0))
    assert ct.origin == pytest.approx((177.956, -11.319, 94.302), abs=1e-3)
    assert np.allclose(ct.direction, np.diag([-1.0, -1.0, 1.0]))
    assert ct.orientation_code() == "RAS"
    assert ct.axis_directions() == ["S", "A", "R"]  # array axes (z, y, x)
    assert ct.array.min() == -1207 and ct.array.max() == 3382
    # index -> physical -> index round trip, and the corner voxel's LPS position
    ijk = np.array([10.0, 20.0, 30.0])
    p = ct.index_to_physical(ijk)
    assert p == pytest.approx([177.956 - 30.0, -11.319 - 60.0, 94.302 + 90.0], abs=1e-3)
    assert ct.physical_to_index(p) == pytest.approx(ijk)


def test_label_map_counts_and_names():
    names = {int(k): v for k, v in json.loads(need(TOTALSEG / "labels.json").read_text()).items()}
    seg = read_segmentation(TOTALSEG / "example_seg.nii.gz", names=names)
    ct = read_image(TOTALSEG / "example_ct.nii.gz")
    assert seg.grid.same_geometry(ct)
    assert len(seg.segments) == 59
    for name, voxels in (("urinary_bladder", 17744), ("colon", 57888), ("sacrum", 7761), ("femur_left", 2267),
                         ("lung_middle_lobe_right", 1)):
        assert seg[name].voxels == voxels
    assert seg.volume_ml("urinary_bladder") == pytest.approx(479.1, abs=0.05)
    # bladder z-slices 4..32 (PROVENANCE.md)
    zs = np.flatnonzero(seg.mask("urinary_bladder").any(axis=(1, 2)))
    assert (zs[0], zs[-1]) == (4, 32)


def test_read_ct_refuses_label_map_and_read_mask_picks_labels():
    with pytest.raises(BadInput, match="not a CT|expected a CT"):
        read_ct(need(TOTALSEG / "example_seg.nii.gz"))
    with pytest.raises(BadInput, match="--label"):
        read_mask(TOTALSEG / "example_seg.nii.gz")
    m = read_mask(TOTALSEG / "example_seg.nii.gz", label=104)
    assert m.array.dtype == bool and int(m.array.sum()) == 17744
    with pytest.raises(BadInput, match="not present"):
        read_mask(TOTALSEG / "example_seg.nii.gz", label=15)


def test_reorient_to_lps_keeps_physical_positions():
    ct = read_image(need(TOTALSEG / "example_ct.nii.gz"))
    lps = reorient(ct, "LPS")
    assert lps.orientation_code() == "LPS" and np.allclose(lps.direction, np.eye(3))
    # RAS -> LPS flips x and y: same voxels, reversed
    assert np.array_equal(lps.array, ct.array[:, ::-1, ::-1])
    p = ct.index_to_physical((5, 7, 9))
    q = lps.physical_to_index(p)
    assert q == pytest.approx((121 - 5, 100 - 7, 9))


def test_resample_to_spacing_keeps_the_box_and_structure_position():
    seg = read_image(need(TOTALSEG / "example_seg.nii.gz"))
    bl = seg.with_array(seg.array == 104)
    out = resample_to_spacing(bl, (2.0, 2.0, 2.0), label=True)
    assert out.size == (183, 152, 168)  # 3 mm -> 2 mm over the same extent (151.5 rounds to 152)
    # the first voxel's outer corner does not move
    c0 = bl.index_to_physical((-0.5, -0.5, -0.5))
    c1 = out.index_to_physical((-0.5, -0.5, -0.5))
    assert c1 == pytest.approx(c0, abs=1e-6)

    def centroid(img: Image) -> np.ndarray:
        k, j, i = np.nonzero(img.array)
        return img.index_to_physical((i.mean(), j.mean(), k.mean()))

    assert centroid(out) == pytest.approx(centroid(bl), abs=1.0)  # mm
    assert out.array.sum() * 8 == pytest.approx(bl.array.sum() * 27, rel=0.03)  # volume in mm^3


def test_seg_nrrd_roundtrip_keeps_ras_geometry_names_and_masks(tmp_path):
    names = {int(k): v for k, v in json.loads(need(TOTALSEG / "labels.json").read_text()).items()}
    seg = read_segmentation(TOTALSEG / "example_seg.nii.gz", names=names)
    small = Segmentation(seg.grid)
    for n in ("urinary_bladder", "sacrum", "hip_left"):
        small.set(n, seg.mask(n))
    small.set("overlap", seg.mask("urinary_bladder") | seg.mask("sacrum"))  # overlaps two segments
    out = write_segmentation(small, tmp_path / "pelvis.seg.nrrd")
    back = read_segmentation(out, reference=seg.grid)
    assert back.names == small.names
    for n in small.names:
        assert np.array_equal(back.mask(n), small.mask(n)), n
    lab = write_segmentation(small, tmp_path / "pelvis.nii.gz")
    back2 = read_segmentation(lab)
    assert back2.grid.same_geometry(seg.grid) and "urinary_bladder" in back2.names
    assert stem(lab) == "pelvis" and (tmp_path / "pelvis.json").exists()


# ---------------------------------------------------------------------------- DICOM series + LAS-flipped seg
def test_dicom_series_geometry_and_hu():
    ct = read_dicom_series(need(TOTALSEG / "example_ct_dicom"))
    assert ct.size == (512, 512, 20)
    assert ct.spacing == pytest.approx((0.9766, 0.9766, 2.0), abs=1e-3)
    assert ct.origin == pytest.approx((-249.512, -437.512, -804.5), abs=1e-3)
    assert np.allclose(ct.direction, np.eye(3)) and ct.orientation_code() == "LPS"
    assert ct.array.min() == -1024 and ct.array.max() == 1839
    assert ct.meta["modality"] == "CT" and ct.meta["source_format"] == "DICOM"


def test_las_flipped_seg_resamples_onto_dicom_grid_as_a_y_flip():
    ct = read_dicom_series(need(TOTALSEG / "example_ct_dicom"))
    seg = read_image(TOTALSEG / "example_seg_dicom_v2.nii.gz")
    assert seg.orientation_code() == "LAS" and not seg.same_geometry(ct)
    on_ct = resample_to_reference(seg, ct, label=True)
    assert np.array_equal(on_ct.array, seg.array[:, ::-1, :])
    assert int((on_ct.array == 1).sum()) == 130634  # spleen, PROVENANCE.md
    with pytest.raises(GeometryMismatch, match="direction"):
        read_segmentation(TOTALSEG / "example_seg_dicom_v2.nii.gz", reference=ct)


def test_dicom_series_with_a_missing_slice_is_refused(tmp_path):
    files = sorted(need(TOTALSEG / "example_ct_dicom").iterdir())
    dcm = [f for f in files if f.is_file()]
    ct = read_dicom_series(TOTALSEG / "example_ct_dicom")
    inner = Path(ct.meta["files"][10]).name  # a slice from the middle of the sorted series
    for f in dcm:
        if f.name != inner:
            shutil.copy(f, tmp_path / f.name)
    with pytest.raises(BadInput, match="missing slices"):
        read_dicom_series(tmp_path)


def test_oblique_series_geometry_and_axis_directions_refused():
    img = read_image(need(RTUTILS / "oriented_data"))
    assert img.size == (100, 50, 3)
    assert img.spacing[:2] == pytest.approx((2.5, 3.5))
    d = img.direction
    assert d[:, 0] == pytest.approx([0.954, -0.208, 0.215], abs=2e-3)
    assert d[:, 1] == pytest.approx([0.279, 0.880, -0.384], abs=2e-3)
    assert np.allclose(d.T @ d, np.eye(3), atol=1e-3)
    with pytest.raises(BadInput, match="oblique"):
        img.axis_directions()


# ---------------------------------------------------------------------------- NRRD + Slicer .seg.nrrd
def test_nrrd_with_negative_directions_and_slicer_segmentation():
    ct = read_image(need(SLICERIO / "CTChest4.nrrd"))
    assert ct.size == (128, 128, 34)
    assert ct.spacing == pytest.approx((3.0469, 3.0469, 10.0), abs=1e-3)
    assert ct.origin == pytest.approx((193.096, 216.396, -340.25), abs=1e-3)
    assert np.allclose(ct.direction, np.diag([-1.0, -1.0, 1.0]))
    seg = read_segmentation(SLICERIO / "Segmentation.seg.nrrd", reference=ct)
    assert seg.names == ["ribs", "cervical vertebral column", "thoracic vertebral column",
                         "lumbar vertebral column", "right lung", "left lung", "tissue"]
    assert [s.voxels for s in seg.segments] == [8487, 1216, 2712, 3259, 34450, 33700, 154589]
    assert seg.segments[0].terminology  # Slicer terminology kept


def test_overlapping_seg_nrrd_layers():
    seg = read_segmentation(need(SLICERIO / "SegmentationOverlapping.seg.nrrd"))
    assert len(seg.segments) == 8 and seg.overlapping()
    sphere = seg.segments[-1]
    assert sphere.voxels == 19139
    assert len({s.label for s in seg.segments}) == 8, "labels renumbered to be unique"


# ---------------------------------------------------------------------------- bad files
def test_bad_files_are_one_clear_error(tmp_path):
    with pytest.raises(BadInput, match="no such file"):
        read_image(tmp_path / "missing.nii.gz")
    empty = tmp_path / "empty.nii.gz"
    empty.write_bytes(b"")
    with pytest.raises(BadInput, match="empty file"):
        read_image(empty)
    junk = tmp_path / "junk.nrrd"
    junk.write_text("hello")
    with pytest.raises(BadInput, match="junk.nrrd"):
        read_image(junk)
    with pytest.raises(BadInput, match="no DICOM"):
        read_dicom_series(tmp_path)
    with pytest.raises(BadInput, match="extension"):
        write_image(Image(np.zeros((2, 2, 2), np.uint8)), tmp_path / "x.txt")


def test_write_image_roundtrip_keeps_geometry(tmp_path):
    img = Image(np.arange(24, dtype=np.int16).reshape(2, 3, 4), (0.7, 0.8, 2.5), (1.0, -2.0, 3.0),
                np.diag([-1.0, 1.0, -1.0]))
    for ext in (".nii.gz", ".nrrd", ".mha"):
        back = read_image(write_image(img, tmp_path / f"a{ext}"))
        assert back.same_geometry(img) and np.array_equal(back.array, img.array), ext


def test_read_ct_refuses_a_real_label_map(shared_data):
    """The TotalSegmentator label map (float voxels 0..104) is named as a label map, not read as a CT."""
    from cervixtl.io import read_ct

    with pytest.raises(BadInput, match="label map"):
        read_ct(shared_data / "totalseg_example" / "example_seg.nii.gz")
