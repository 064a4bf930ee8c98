"""Model registry: versions, active version, rollback, removal, export, verified import (local HTTP)."""

from __future__ import annotations

import functools
import hashlib
import http.server
import json
import threading
from pathlib import Path

import pytest

from cervixtl.cli import main
from cervixtl.errors import BadInput, ModelError
from cervixtl.models import download as dl
from cervixtl.models import registry as regmod
from cervixtl.models.networks import build_network, segresnet_card
from cervixtl.models.package import save_package, verify_package
from cervixtl.models.registry import Registry


def make_pkg(dest, version="1", name="tiny", seed=0):
    import torch

    torch.manual_seed(seed)
    card = segresnet_card(name, ["GTV", "CTV"], version=version, init_filters=4, spacing_mm=(3, 3, 3),
                          patch_size=(16, 16, 16))
    return save_package(dest, card, build_network(card).state_dict())


@pytest.fixture()
def reg(tmp_path, monkeypatch):
    monkeypatch.setattr(regmod, "bundled_models_dir", lambda: tmp_path / "bundled")
    return Registry(tmp_path / "reg")


def test_versions_activate_rollback_remove(reg, tmp_path):
    for v in ("1", "2", "10"):
        reg.add(make_pkg(tmp_path / f"p{v}", v, seed=int(v)))
    assert reg.versions("tiny") == ["1", "2", "10"]  # numeric order, not text order
    assert reg.active("tiny") == "1"  # the first version added becomes active
    assert reg.resolve("tiny") == reg.root / "tiny" / "1"
    reg.activate("tiny@10")
    reg.activate("tiny@2")
    assert reg.active("tiny") == "2"
    assert reg.rollback("tiny") == "10"
    assert reg.rollback("tiny") == "1"
    with pytest.raises(ModelError, match="no earlier"):
        reg.rollback("tiny")
    state = json.loads((reg.root / "tiny" / "active.json").read_text())
    assert state["active"] == "1"
    reg.activate("tiny@10")
    reg.remove("tiny@10")  # removing the active version re-activates the previous one
    assert reg.versions("tiny") == ["1", "2"] and reg.active("tiny") == "1"
    with pytest.raises(ModelError, match="give the version"):
        reg.remove("tiny")
    rows = reg.list()
    assert [(r["version"], r["active"]) for r in rows] == [("1", True), ("2", False)]
    assert reg.next_version("tiny") == "3"


def test_add_is_idempotent_but_refuses_other_weights(reg, tmp_path):
    reg.add(make_pkg(tmp_path / "a", "1", seed=1))
    reg.add(make_pkg(tmp_path / "b", "1", seed=1))  # same weights: nothing happens
    with pytest.raises(ModelError, match="different weights"):
        reg.add(make_pkg(tmp_path / "c", "1", seed=2))


def test_resolve_errors_and_bundled_fallback(reg, tmp_path):
    with pytest.raises(ModelError, match="unknown model 'nope'"):
        reg.resolve("nope")
    make_pkg(tmp_path / "bundled" / "cervixtl-demo", "1", name="cervixtl-demo")
    assert reg.resolve(None) == tmp_path / "bundled" / "cervixtl-demo"
    assert any(r["source"] == "bundled" for r in reg.list())
    reg.add(make_pkg(tmp_path / "x", "2", name="cervixtl-demo"))
    assert reg.resolve(None) == reg.root / "cervixtl-demo" / "2"  # registered beats bundled
    with pytest.raises(ModelError, match="no version '9'"):
        reg.resolve("cervixtl-demo@9")


def test_load_verifies_weights(reg, tmp_path):
    reg.add(make_pkg(tmp_path / "p", "1"))
    card, net = reg.load("tiny@1")
    assert not net.training and card.spec == "tiny@1"
    w = reg.root / "tiny" / "1" / "weights.safetensors"
    b = bytearray(w.read_bytes())
    b[-1] ^= 1
    w.write_bytes(bytes(b))
    with pytest.raises(ModelError, match="SHA-256"):
        reg.load("tiny")


def test_export_copies_a_verified_package(reg, tmp_path):
    reg.add(make_pkg(tmp_path / "p", "1"))
    out = reg.export("tiny", tmp_path / "exported")
    assert (out / "model.json").exists() and (out / "weights.safetensors").exists()
    with pytest.raises(Exception, match="exists"):
        reg.export("tiny", tmp_path / "exported")


@pytest.fixture()
def http_root(tmp_path):
    root = tmp_path / "www"
    root.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *a, **k: None  # type: ignore[attr-defined]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    th = threading.Thread(target=server.serve_forever, daemon=True)
    th.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_download_verifies_sha(http_root, tmp_path):
    root, url = http_root
    (root / "f.bin").write_bytes(b"x" * 3000)
    good = hashlib.sha256(b"x" * 3000).hexdigest()
    out = dl.download(f"{url}/f.bin", tmp_path / "d" / "f.bin", good)
    assert out.read_bytes() == b"x" * 3000
    with pytest.raises(ModelError, match="does not match"):
        dl.download(f"{url}/f.bin", tmp_path / "d" / "g.bin", "0" * 64)
    assert sorted(p.name for p in (tmp_path / "d").iterdir()) == ["f.bin"]  # nothing half-written
    with pytest.raises(BadInput, match="HTTP error 404"):
        dl.download(f"{url}/missing.bin", tmp_path / "d" / "m.bin")


def test_cli_import_from_url_and_manage(http_root, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(regmod, "bundled_models_dir", lambda: tmp_path / "bundled")
    root, url = http_root
    arch = dl.make_archive(make_pkg(tmp_path / "tiny", "1"), root / "tiny-1.zip")
    sha = hashlib.sha256(arch.read_bytes()).hexdigest()
    md = ["--models-dir", str(tmp_path / "reg")]
    assert main(["models", "import", f"{url}/tiny-1.zip", "--sha256", "f" * 64, *md]) == 2
    assert "does not match" in capsys.readouterr().err
    assert not (tmp_path / "reg" / "tiny").exists()
    assert main(["models", "import", f"{url}/tiny-1.zip", "--sha256", sha, *md]) == 0
    assert main(["models", "import", str(make_pkg(tmp_path / "t2", "2", seed=3)), *md]) == 0
    capsys.readouterr()
    assert main(["models", "list", "--json", *md]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert listed["format"] == "cervixtl-models-list/1"
    assert [(r["spec"], r["active"]) for r in listed["models"]] == [("tiny@1", True), ("tiny@2", False)]
    assert main(["models", "activate", "tiny@2", *md]) == 0
    assert main(["models", "show", "tiny", "--json", *md]) == 0
    shown = json.loads(capsys.readouterr().out.split("\n", 1)[1])
    assert shown["version"] == "2" and shown["active"] is True
    assert main(["models", "rollback", "tiny", *md]) == 0
    assert main(["models", "export", "tiny@2", str(tmp_path / "exp"), *md]) == 0
    assert (tmp_path / "exp" / "model.json").exists()
    assert main(["models", "remove", "tiny@2", *md]) == 0
    capsys.readouterr()
    assert main(["models", "remove", "tiny@7", *md]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no version '7'" in err
    assert main(["models", "show", "ghost", *md]) == 2


def test_catalogue_lists_the_demo_model():
    entries = dl.read_catalogue()
    assert entries, "Resources/Models.json must list at least the demo model"
    for e in entries:
        assert {"name", "version", "url", "sha256", "bytes", "description"} <= set(e)
        src = dl.resolve_catalogue_source(e)
        if e["url"].startswith("file:") and (Path(src) / "model.json").exists() and e["sha256"]:
            card = verify_package(src)  # the catalogue must follow the bundled package when it is retrained
            assert (card.weights["sha256"], card.weights["bytes"]) == (e["sha256"], e["bytes"])


def test_cli_import_from_catalogue_name(tmp_path, capsys):
    entry = dl.catalogue_entry("cervixtl-demo")
    if entry is None or not (Path(dl.resolve_catalogue_source(entry)) / "model.json").exists():
        pytest.skip("the bundled demo model Resources/Models/cervixtl-demo is not built")
    assert main(["models", "import", "cervixtl-demo", "--models-dir", str(tmp_path / "reg")]) == 0
    assert Registry(tmp_path / "reg").active("cervixtl-demo") == str(entry["version"])
