"""Case library: storing, listing, removing cases; refusals; no identifying data kept."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from cervixtl.cases import CaseLibrary, load_cases
from cervixtl.errors import BadInput, GeometryMismatch
from cervixtl.image import Image
from cervixtl.io import read_image, read_segmentation, write_image, write_segmentation
from cervixtl.phantom import make_phantom
from cervixtl.segmentation import Segmentation
from shared_data import DATA


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cervixtl", *args], capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def phantom_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("ph")
    ct, truth = make_phantom(11, "A")
    ct.meta["series_description"] = "Doe^Jane pelvis"  # must not reach the library
    write_image(ct, d / "ct.nii.gz")
    write_segmentation(truth, d / "final.seg.nrrd")
    # proposal: the truth with half of the GTV removed -> GTV Dice = 2h / (h + n) exactly
    prop = Segmentation(truth.grid)
    for s in truth.segments:
        prop.set(s.name, s.mask.copy())
    g = prop.mask("GTV").copy()
    idx = np.argwhere(g)
    half = idx[: len(idx) // 2]
    g2 = np.zeros_like(g)
    g2[tuple(half.T)] = True
    prop.set("GTV", g2)
    write_segmentation(prop, d / "proposal.seg.nrrd")
    n, h = int(g.sum()), len(half)
    return d, ct, truth, 2 * h / (h + n)


def test_add_list_show_remove_cli(tmp_path, phantom_files):
    d, ct, truth, gtv_dice = phantom_files
    lib = tmp_path / "cases"
    r = cli("cases", "--cases-dir", str(lib), "add", str(d / "ct.nii.gz"), str(d / "final.seg.nrrd"),
            "--proposal", str(d / "proposal.seg.nrrd"), "--site", "B-hospital")
    assert r.returncode == 0, r.stderr
    cid = r.stdout.strip()
    assert cid.startswith("case-") and len(cid) == 13
    folder = lib / cid
    assert sorted(p.name for p in folder.iterdir()) == ["case.json", "ct.nii.gz", "final.seg.nrrd",
                                                         "proposal.seg.nrrd"]
    info = json.loads((folder / "case.json").read_text())
    assert info["site"] == "B-hospital" and info["id"] == cid
    assert info["structures"] == truth.names
    assert info["spacing_mm"] == [3.0, 3.0, 3.0] and info["size"] == list(ct.size)
    assert info["proposal_vs_final_dice"]["GTV"] == pytest.approx(gtv_dice, abs=1e-4)
    assert info["proposal_vs_final_dice"]["Bladder"] == 1.0
    # stored data round-trips
    stored = read_image(folder / "ct.nii.gz")
    assert np.array_equal(stored.array, ct.array) and stored.same_geometry(ct)
    seg = read_segmentation(folder / "final.seg.nrrd")
    assert all(np.array_equal(seg.mask(n), truth.mask(n)) for n in truth.names)
    assert b"Doe" not in b"".join(p.read_bytes() for p in folder.iterdir())

    r = cli("cases", "--cases-dir", str(lib), "list", "--json")
    assert r.returncode == 0 and [c["id"] for c in json.loads(r.stdout)["cases"]] == [cid]
    r = cli("cases", "--cases-dir", str(lib), "show", cid, "--json")
    assert r.returncode == 0 and "final.seg.nrrd" in json.loads(r.stdout)["files"]
    assert len(load_cases("all", lib)) == 1 and load_cases(str(folder))[0].id == cid
    r = cli("cases", "--cases-dir", str(lib), "remove", cid)
    assert r.returncode == 0 and not folder.exists()
    r = cli("cases", "--cases-dir", str(lib), "remove", cid)
    assert r.returncode == 2 and "no case" in r.stderr and "Traceback" not in r.stderr


def test_refuses_empty_and_mismatched_labels(tmp_path, phantom_files):
    d, ct, truth, _ = phantom_files
    lib = CaseLibrary(tmp_path / "cases")
    empty = Segmentation(truth.grid)
    empty.set("GTV", np.zeros(ct.array.shape, bool))
    with pytest.raises(BadInput, match="empty"):
        lib.add(ct, empty)
    shifted = Image(ct.array, ct.spacing, (ct.origin[0] + 5, ct.origin[1], ct.origin[2]))
    moved = Segmentation(shifted)
    moved.set("GTV", truth.mask("GTV"))
    with pytest.raises(GeometryMismatch, match="origin"):
        lib.add(ct, moved)
    assert lib.ids() == [] and not any((tmp_path / "cases").glob("case-*"))
    # CLI: one clear line, exit 2, nothing written
    write_image(shifted.with_array(truth.mask("GTV").astype(np.uint8)), tmp_path / "moved.nii.gz")
    r = cli("cases", "--cases-dir", str(tmp_path / "cases"), "add", str(d / "ct.nii.gz"),
            str(tmp_path / "moved.nii.gz"))
    assert r.returncode == 2 and "does not match the CT grid" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    with pytest.raises(BadInput, match="site"):
        lib.add(ct, truth, site="../../etc")


def test_empty_segments_dropped_and_recorded(tmp_path, phantom_files):
    _, ct, truth, _ = phantom_files
    seg = Segmentation(truth.grid)
    seg.set("Bladder", truth.mask("Bladder"))
    seg.set("Sigmoid", np.zeros(ct.array.shape, bool))
    lib = CaseLibrary(tmp_path / "c")
    cid = lib.add(ct, seg)
    info = lib.show(cid)
    assert info["structures"] == ["Bladder"] and info["empty_structures_dropped"] == ["Sigmoid"]


def test_dicom_ct_leaves_no_identifying_data(tmp_path):
    src = DATA / "rtstruct_with_mask"
    if not (src / "CT_1.dcm").exists():
        pytest.skip(f"shared test data not found at {src}")
    lib = CaseLibrary(tmp_path / "cases")
    cid = lib.add_files(src, src / "Mask.nii.gz", site="vhm")
    folder = tmp_path / "cases" / cid
    blob = b"".join(p.read_bytes() for p in folder.iterdir())
    for ident in (b"xFGUXdDEoVLdjlzI", b"C5NnmkW2D8md5V6uoN7OM9PAU", b"Visible Human", b"UCSD", b"1.2.246.352"):
        assert ident not in blob
    case = lib.load(cid)
    assert case.ct.size == (512, 512, 4)
    # Mask.nii.gz: 1 = SpinalCord (745 voxels), 2 = BODY (164688)
    assert sorted(s.voxels for s in case.final.segments) == [745, 164688]
