"""Atomic writes and the Segmentation type: nothing half-written, overlaps kept in .seg.nrrd."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from cervixtl.atomic import atomic_path, write_json_atomic
from cervixtl.errors import BadInput, GeometryMismatch
from cervixtl.image import Image
from cervixtl.io import read_segmentation, write_segmentation
from cervixtl.segmentation import Segmentation


def _grid(shape=(6, 8, 10), spacing=(0.8, 0.9, 2.5)) -> Image:
    d = np.diag([-1.0, -1.0, 1.0])  # RAS-flipped in-plane axes, as NIfTI from many scanners
    return Image(np.zeros(shape, np.int16), spacing, (10.0, -20.0, 30.0), d)


def test_atomic_path_keeps_old_file_on_failure(tmp_path):
    dest = tmp_path / "out.json"
    dest.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(dest) as tmp:
        tmp.write_text("half")
        raise RuntimeError("boom")
    assert dest.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"], "temporary file left behind"


def test_atomic_path_keeps_double_extension(tmp_path):
    with atomic_path(tmp_path / "a.seg.nrrd") as tmp:
        assert tmp.name.endswith(".seg.nrrd")
        tmp.write_text("x")
    assert (tmp_path / "a.seg.nrrd").read_text() == "x"


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere")
def test_unwritable_folder_is_bad_input(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    with pytest.raises(BadInput, match="not writable"):
        write_json_atomic(ro / "x.json", {})


def test_full_disk_is_reported_and_leaves_nothing(tmp_path):
    if not os.path.exists("/dev/full"):
        pytest.skip("/dev/full not available")
    # Writing into /dev/full raises ENOSPC: emulate a full disk by writing through it.
    with pytest.raises(BadInput, match="disk full"), atomic_path(tmp_path / "x.bin"), open("/dev/full", "w") as fh:
        fh.write("x" * 10)
        fh.flush()
    assert list(tmp_path.iterdir()) == []


def test_labelmap_roundtrip_keeps_names_and_nested_targets(tmp_path):
    g = _grid()
    seg = Segmentation(g)
    ptv = np.zeros(g.array.shape, bool)
    ptv[1:5, 1:7, 1:9] = True
    ctv = np.zeros_like(ptv)
    ctv[2:4, 2:6, 2:8] = True
    gtv = np.zeros_like(ptv)
    gtv[2:3, 3:5, 3:6] = True
    seg.set("PTV", ptv)
    seg.set("CTV", ctv)
    seg.set("GTV", gtv)
    assert seg.overlapping()

    write_segmentation(seg, tmp_path / "s.seg.nrrd")
    back = read_segmentation(tmp_path / "s.seg.nrrd")
    assert back.names == ["PTV", "CTV", "GTV"]
    for n in ("PTV", "CTV", "GTV"):
        assert np.array_equal(back.mask(n), seg.mask(n)), n  # layers keep the overlaps
    assert back.grid.same_geometry(g)
    assert back.find("GTV").color == pytest.approx((1.0, 0.0, 0.0))

    write_segmentation(seg, tmp_path / "s.nii.gz")
    side = json.loads((tmp_path / "s.json").read_text())
    assert [e["name"] for e in side["labels"]] == ["PTV", "CTV", "GTV"]
    lab = read_segmentation(tmp_path / "s.nii.gz")
    # Multi-label form: larger painted first, so the nested GTV is whole and CTV keeps its ring.
    assert np.array_equal(lab.mask("GTV"), gtv)
    assert np.array_equal(lab.mask("CTV"), ctv & ~gtv)
    assert lab.grid.same_geometry(g)


def test_segmentation_rejects_wrong_shape_and_geometry(tmp_path):
    g = _grid()
    seg = Segmentation(g)
    with pytest.raises(GeometryMismatch):
        seg.set("GTV", np.zeros((2, 2, 2), bool))
    seg.set("GTV", np.ones(g.array.shape, bool))
    write_segmentation(seg, tmp_path / "s.seg.nrrd")
    other = Image(np.zeros(g.array.shape), (1.0, 1.0, 1.0))
    with pytest.raises(GeometryMismatch, match="spacing"):
        read_segmentation(tmp_path / "s.seg.nrrd", reference=other)


def test_outputs_get_normal_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        write_json_atomic(tmp_path / "x.json", {"a": 1})
    finally:
        os.umask(old)
    assert (tmp_path / "x.json").stat().st_mode & 0o777 == 0o644


def test_writing_onto_a_folder_is_bad_input(tmp_path):
    (tmp_path / "d.json").mkdir()
    with pytest.raises(BadInput, match="folder"):
        write_json_atomic(tmp_path / "d.json", {})
