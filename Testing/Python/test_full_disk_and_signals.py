"""Issue 13, items 12 and 13: a full disk or a kill never leaves a half-written output or temporary files, and
the user reads one line ("disk full", exit 2; "cancelled", exit 130)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from cervixtl.cli import main
from cervixtl.errors import BadInput
from cervixtl.image import Image
from cervixtl.io import read_image, write_image, write_segmentation
from cervixtl.segmentation import Segmentation
from shared_data import DATA, need

REPO = Path(__file__).resolve().parents[2]


def one_error(capsys) -> str:
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("cervixtl: error: "), lines
    return lines[0]


@pytest.fixture(scope="module")
def noise_mask(tmp_path_factory) -> Path:
    """A 10 MB uint8 mask that compresses badly (random voxels)."""
    d = tmp_path_factory.mktemp("noise")
    rng = np.random.default_rng(0)
    arr = (rng.random((160, 256, 256)) > 0.5).astype(np.uint8)
    write_image(Image(arr, (1.0, 1.0, 2.0)), d / "noise.nii.gz")
    return d / "noise.nii.gz"


@pytest.fixture()
def tiny_disk(tmp_path):
    """A 1 MB tmpfs (needs root and mount(8)); skipped where it cannot be mounted."""
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a small tmpfs needs root")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], capture_output=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.decode(errors='replace').strip()}")
    yield mnt
    subprocess.run(["umount", str(mnt)], capture_output=True)


@pytest.mark.parametrize("out", ["m.nii", "m.nii.gz", "m.mha", "m.nrrd", "m.seg.nrrd"])
def test_margins_on_a_full_disk_says_disk_full_and_leaves_nothing(noise_mask, tiny_disk, capsys, out):
    assert main(["margins", str(noise_mask), str(tiny_disk / out), "--mm", "0"]) == 2
    line = one_error(capsys)
    assert "disk full" in line
    assert list(tiny_disk.iterdir()) == []


def test_cases_add_on_a_full_disk_leaves_no_case(tiny_disk, capsys):
    ct = read_image(need(DATA / "totalseg_example" / "example_ct.nii.gz"))
    lab = DATA / "totalseg_example" / "example_seg.nii.gz"
    assert ct.array.nbytes > 1 << 20
    assert main(["cases", "add", str(DATA / "totalseg_example" / "example_ct.nii.gz"), str(lab),
                 "--cases-dir", str(tiny_disk / "lib")]) == 2
    assert "disk full" in one_error(capsys)
    assert [p.name for p in (tiny_disk / "lib").iterdir()] == []


def test_a_writer_that_fails_silently_is_caught_before_the_rename(tmp_path, monkeypatch):
    """ITK's NIfTI writer reports a full disk only by printing: simulate it (half the file, no exception)."""
    real = sitk.WriteImage

    def half_writer(img, path, *args):  # noqa: ANN001
        real(img, path, *args)
        data = Path(path).read_bytes()
        Path(path).write_bytes(data[: len(data) // 2])

    monkeypatch.setattr(sitk, "WriteImage", half_writer)
    img = Image(np.arange(40 * 50 * 60, dtype=np.int16).reshape(40, 50, 60) % 700 - 300, (1.0, 1.0, 2.0))
    for name in ("a.nii.gz", "a.nii", "a.mha"):
        with pytest.raises(BadInput, match="disk full"):
            write_image(img, tmp_path / name)
    seg = Segmentation(img.with_array(np.zeros(img.array.shape, np.uint8)))
    seg.set("GTV", img.array > 100)
    with pytest.raises(BadInput, match="disk full"):
        write_segmentation(seg, tmp_path / "s.nii.gz")
    assert list(tmp_path.iterdir()) == []  # no output, no sidecar, no temporary file


_SLOW_CASES_ADD = r"""
import sys, time
import cervixtl.io as cio
real = cio.write_segmentation
def slow(*a, **k):
    out = real(*a, **k)
    print("writing", flush=True)
    time.sleep(30)
    return out
cio.write_segmentation = slow
from cervixtl.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_sigterm_during_cases_add_leaves_no_temporary_folder(tmp_path):
    ct = need(DATA / "totalseg_example" / "example_ct.nii.gz")
    lab = DATA / "totalseg_example" / "example_seg.nii.gz"
    lib = tmp_path / "lib"
    proc = subprocess.Popen([sys.executable, "-c", _SLOW_CASES_ADD, "cases", "add", str(ct), str(lab),
                             "--cases-dir", str(lib)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.stdout.readline().strip() == "writing"
    assert any(p.name.endswith(".part") for p in lib.iterdir())  # the case is being written
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    assert list(lib.iterdir()) == []


def test_contour_whose_summary_cannot_be_written_leaves_no_label_map(tmp_path, capsys, monkeypatch):
    import torch

    from cervixtl.atomic import write_json_atomic
    from cervixtl.models.networks import build_network, segresnet_card
    from cervixtl.models.package import save_package
    from cervixtl.models.registry import Registry

    torch.manual_seed(0)
    card = segresnet_card("tiny", ["GTV", "CTV"], init_filters=4, spacing_mm=(4.0, 4.0, 4.0), patch_size=(16, 32, 32))
    Registry(tmp_path / "reg").add(save_package(tmp_path / "pkg", card, build_network(card).state_dict()))
    arr = np.full((24, 48, 48), -1000, np.int16)
    arr[:, 8:40, 8:40] = 40
    arr[8:16, 16:32, 16:32] = 300
    write_image(Image(arr, (1.5, 1.5, 2.5)), tmp_path / "ct.nii.gz")

    def full(path, data):  # noqa: ANN001
        if str(path).endswith("_summary.json"):
            raise BadInput(f"disk full while writing {path}; nothing was written")
        return write_json_atomic(path, data)

    monkeypatch.setattr("cervixtl.atomic.write_json_atomic", full)
    out = tmp_path / "out" / "case.nii.gz"
    assert main(["contour", str(tmp_path / "ct.nii.gz"), str(out), "--model", "tiny", "--models-dir",
                 str(tmp_path / "reg"), "--threads", "1"]) == 2
    assert "disk full" in one_error(capsys)
    assert list((tmp_path / "out").iterdir()) == []  # neither the label map nor its sidecar stays


def test_torch_save_on_a_full_disk_is_a_disk_full_error(tiny_disk):
    import torch

    from cervixtl.atomic import atomic_path

    with pytest.raises(BadInput, match="disk full"), atomic_path(tiny_disk / "ckpt.pt") as tmp:
        torch.save({"w": torch.zeros(1 << 19)}, tmp)  # 2 MB on a 1 MB disk
    assert list(tiny_disk.iterdir()) == []
