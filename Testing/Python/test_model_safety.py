"""Issue 13, items 1, 2, 13, 14: model packages cannot write outside their folder, never register weights that
cannot load, leave no temporary folders behind, and two concurrent registrations get distinct versions."""

from __future__ import annotations

import hashlib
import io
import json
import multiprocessing
import os
import pickle
import subprocess
import sys
import tarfile
import time
import zipfile
from pathlib import Path

import pytest

from cervixtl.atomic import sweep_stale, temp_prefix
from cervixtl.cli import main
from cervixtl.errors import BadInput, ModelError
from cervixtl.models import registry as regmod
from cervixtl.models.networks import build_network, segresnet_card
from cervixtl.models.registry import Registry
from cervixtl.safepath import safe_extract, safe_join, safe_member_name
from test_registry import make_pkg  # one tiny-package maker for both files

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture()
def md(tmp_path, monkeypatch):
    monkeypatch.setattr(regmod, "bundled_models_dir", lambda: tmp_path / "bundled")
    return ["--models-dir", str(tmp_path / "reg")]


def _card_with(pkg: Path, weights_file: str, data: bytes) -> dict:
    card = json.loads((pkg / "model.json").read_text())
    card["weights"] = {"file": weights_file, "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    return card


# ------------------------------------------------------------------ 13.1 path traversal
@pytest.mark.parametrize("name", ["/etc/passwd", "../x", "a/../../x", "a\\..\\x", "C:/x", "", "a\x00b"])
def test_safe_member_name_refuses_escapes(name):
    with pytest.raises(BadInput, match="unsafe"):
        safe_member_name(name)


def test_safe_join_refuses_symlinks(tmp_path):
    (tmp_path / "outside").mkdir()
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "link").symlink_to(tmp_path / "outside")
    with pytest.raises(BadInput, match="symbolic link"):
        safe_join(tmp_path / "pkg", "link/w.safetensors")
    assert safe_join(tmp_path / "pkg", "./w.safetensors") == tmp_path / "pkg" / "w.safetensors"


def _traversal_archive(tmp_path: Path, kind: str) -> Path:
    """An archive with no '..' member: ``payload`` at the top and ``a/b/pkg/model.json`` whose weights file is
    ``../../../payload`` (found inside the unpacked archive, SHA-256 matching). Copied unchecked into
    ``<reg>/tiny/<tmp>/../../../payload`` it would land in ``tmp_path``, outside the registry."""
    pkg = make_pkg(tmp_path / "src")
    data = (pkg / "weights.safetensors").read_bytes()
    card = json.dumps(_card_with(pkg, "../../../payload", data)).encode()
    out = tmp_path / f"evil.{kind}"
    if kind == "zip":
        with zipfile.ZipFile(out, "w") as zf:
            zf.writestr("a/b/pkg/model.json", card)
            zf.writestr("payload", data)
    else:
        with tarfile.open(out, "w:gz") as tf:
            for n, b in (("a/b/pkg/model.json", card), ("payload", data)):
                ti = tarfile.TarInfo(n)
                ti.size = len(b)
                tf.addfile(ti, io.BytesIO(b))
    return out


@pytest.mark.parametrize("kind", ["zip", "tar.gz"])
def test_import_of_a_traversal_archive_writes_nothing_outside(tmp_path, md, capsys, kind):
    target = tmp_path / "payload"
    archive = _traversal_archive(tmp_path, kind)
    assert main(["models", "import", str(archive), *md]) == 2
    err = capsys.readouterr().err
    assert "unsafe" in err and err.count("\n") == 1
    assert not target.exists()


@pytest.mark.parametrize("kind", ["zip", "tar"])
def test_safe_extract_refuses_links_and_absolute_members(tmp_path, kind):
    a = tmp_path / f"a.{kind}"
    if kind == "zip":
        with zipfile.ZipFile(a, "w") as zf:
            info = zipfile.ZipInfo("pkg/link")
            info.external_attr = (0o120777 << 16)
            zf.writestr(info, "/etc/passwd")
    else:
        with tarfile.open(a, "w") as tf:
            ti = tarfile.TarInfo("pkg/link")
            ti.type = tarfile.SYMTYPE
            ti.linkname = "/etc/passwd"
            tf.addfile(ti)
    with pytest.raises(BadInput, match="link"):
        safe_extract(a, tmp_path / "out")
    b = tmp_path / f"b.{kind}"
    if kind == "zip":
        with zipfile.ZipFile(b, "w") as zf:
            zf.writestr("/abs/x", b"x")
    else:
        with tarfile.open(b, "w") as tf:
            ti = tarfile.TarInfo("/abs/x")
            ti.size = 1
            tf.addfile(ti, io.BytesIO(b"x"))
    with pytest.raises(BadInput, match="unsafe"):
        safe_extract(b, tmp_path / "out2")
    assert not Path("/abs/x").exists()


def test_card_weights_name_outside_the_package_is_refused(tmp_path, md, capsys):
    pkg = make_pkg(tmp_path / "p")
    outside = tmp_path / "elsewhere.safetensors"
    outside.write_bytes((pkg / "weights.safetensors").read_bytes())
    card = _card_with(pkg, "../elsewhere.safetensors", outside.read_bytes())
    (pkg / "model.json").write_text(json.dumps(card))
    assert main(["models", "import", str(pkg), *md]) == 2
    assert "unsafe weights file name" in capsys.readouterr().err


# ------------------------------------------------------------------ 13.2 weights validated on import
@pytest.mark.parametrize("kind", ["pickle", "random", "other-net"])
def test_import_refuses_weights_that_cannot_load(tmp_path, md, capsys, kind):
    pkg = make_pkg(tmp_path / "p")
    w = pkg / "weights.safetensors"
    if kind == "pickle":
        data = pickle.dumps({"a": [1, 2, 3]})
    elif kind == "random":
        data = os.urandom(4096)
    else:  # a valid safetensors file of another network (8 filters instead of 4)
        import torch
        from safetensors.torch import save_file

        other = segresnet_card("o", ["GTV", "CTV"], init_filters=8, spacing_mm=(3, 3, 3), patch_size=(16, 16, 16))
        torch.manual_seed(0)
        save_file({k: v.contiguous() for k, v in build_network(other).state_dict().items()}, str(w))
        data = w.read_bytes()
    w.write_bytes(data)
    (pkg / "model.json").write_text(json.dumps(_card_with(pkg, "weights.safetensors", data)))
    assert main(["models", "import", str(pkg), *md]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert {"pickle": "pickle", "random": "expected safetensors", "other-net": "do not fit"}[kind] in err
    assert not (tmp_path / "reg" / "tiny").exists()


@pytest.mark.parametrize("content,words", [(b"", "empty file"), (b"hello, not a model\n", "text file")])
def test_import_of_an_empty_or_text_file_says_what_it_is(tmp_path, md, capsys, content, words):
    f = tmp_path / "model.zip"
    f.write_bytes(content)
    assert main(["models", "import", str(f), *md]) == 2
    err = capsys.readouterr().err
    assert words in err and "--name" not in err


def test_import_of_an_archive_without_card_says_so(tmp_path, md, capsys):
    f = tmp_path / "x.zip"
    with zipfile.ZipFile(f, "w") as zf:
        zf.writestr("readme.txt", "nothing here")
    assert main(["models", "import", str(f), *md]) == 2
    assert "without model.json" in capsys.readouterr().err


# ------------------------------------------------------------------ 13.13 stale temporary folders
def test_sweep_removes_only_folders_of_dead_processes(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f".import.pid{dead.pid}.abc"
    stale.mkdir()
    (stale / "big.part").write_bytes(b"x" * 10)
    mine = tmp_path / f"{temp_prefix('import')}def"
    mine.mkdir()
    keep = tmp_path / "tiny"
    keep.mkdir()
    removed = sweep_stale(tmp_path)
    assert removed == [stale] and not stale.exists() and mine.exists() and keep.exists()


_SLOW_IMPORT = r"""
import sys, time
import cervixtl.models.registry as r
orig = r.Registry.add
def slow_add(self, *a, **k):
    print("adding", flush=True)
    time.sleep(30)
    return orig(self, *a, **k)
r.Registry.add = slow_add
from cervixtl.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_sigterm_during_import_cleans_up(tmp_path):
    import signal

    pkg = make_pkg(tmp_path / "p")
    root = tmp_path / "reg"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-c", _SLOW_IMPORT, "models", "import", str(pkg),
                             "--models-dir", str(root)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                            text=True)
    assert proc.stdout.readline().strip() == "adding"
    assert any(p.name.startswith(".import.pid") for p in root.iterdir())
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert "cancelled" in err and "Traceback" not in err
    assert [p.name for p in root.iterdir() if not p.name.startswith(".registry")] == []


# ------------------------------------------------------------------ 13.14 concurrent registrations
def _register(root: str, pkg: str, q) -> None:  # noqa: ANN001
    reg = Registry(root)
    q.put(reg.add(pkg, new_version=True).version)


def test_two_concurrent_registrations_get_distinct_versions(tmp_path):
    pkgs = [make_pkg(tmp_path / f"p{i}", "1", seed=i) for i in range(2)]
    ctx = multiprocessing.get_context("spawn")
    q = ctx.Queue()
    reg = Registry(tmp_path / "reg")
    with reg.locked():  # both wait for the lock, then allocate in turn
        procs = [ctx.Process(target=_register, args=(str(reg.root), str(p), q)) for p in pkgs]
        for p in procs:
            p.start()
        time.sleep(1.0)
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    assert sorted([q.get(), q.get()]) == ["1", "2"]
    assert reg.versions("tiny") == ["1", "2"]
    shas = {reg.card(f"tiny@{v}").weights["sha256"] for v in ("1", "2")}
    assert len(shas) == 2  # each run kept its own weights


def test_concurrent_runs_get_their_own_work_folder(tmp_path):
    a, b = Registry(tmp_path / "reg"), Registry(tmp_path / "reg")
    wa, wb = a.work_dir("m"), b.work_dir("m")
    assert wa == tmp_path / "reg" / ".work" / "m"
    assert wb != wa and wb.parent == wa.parent


def _finetune_once(root: str, seed: int, q) -> None:  # noqa: ANN001
    from cervixtl.phantom import make_phantom
    from cervixtl.training import TrainConfig, default_card, finetune

    cases = [(f"p{i}", *make_phantom(100 + i, "A")) for i in range(2)]
    card = default_card("same", ("GTV", "CTV"), init_filters=4, spacing_mm=(8.0, 8.0, 8.0), patch_size=(16, 32, 32))
    cfg = TrainConfig(epochs=1, steps_per_epoch=2, batch_size=1, device="cpu", seed=seed, threads=1)
    q.put(finetune(None, cases, "same", config=cfg, registry=Registry(root), base_card=card).version)


@pytest.mark.slow
def test_two_concurrent_finetunes_with_one_name_get_two_versions(tmp_path):
    ctx = multiprocessing.get_context("spawn")
    q = ctx.Queue()
    root = str(tmp_path / "reg")
    procs = [ctx.Process(target=_finetune_once, args=(root, s, q)) for s in (1, 2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(600)
        assert p.exitcode == 0
    assert sorted([q.get(), q.get()]) == ["1", "2"]
    reg = Registry(root)
    assert reg.versions("same") == ["1", "2"]
    assert reg.card("same@1").weights["sha256"] != reg.card("same@2").weights["sha256"]
    assert not [p for p in (tmp_path / "reg" / ".work").iterdir() if not p.name.endswith(".lock")]


def test_catalogue_file_entries_stay_inside_resources(tmp_path):
    from cervixtl.models import download as dl

    cat = tmp_path / "Resources" / "Models.json"
    cat.parent.mkdir()
    cat.write_text(json.dumps({"models": [{"name": "x", "url": "file:../../etc"}]}))
    with pytest.raises(ModelError, match="unsafe catalogue file"):
        dl.resolve_catalogue_source(dl.read_catalogue(cat)[0], cat)
