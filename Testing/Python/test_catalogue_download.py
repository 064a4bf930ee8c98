"""The model catalogue (Resources/Models.json) against its schema, and resumable verified downloads from a
server on 127.0.0.1 (no URL of the catalogue is ever fetched in tests)."""

from __future__ import annotations

import hashlib
import http.server
import json
import threading

import pytest

from cervixtl.errors import BadInput, Cancelled, ModelError
from cervixtl.models import download as dl
from cervixtl.structures import resources_dir


def test_every_catalogue_entry_matches_the_schema():
    import jsonschema

    data = json.loads((resources_dir() / "Models.json").read_text())
    schema = json.loads((resources_dir() / "schemas" / "cervixtl-model-catalogue.schema.json").read_text())
    jsonschema.validate(data, schema)
    names = {e["name"] for e in data["models"]}
    assert {"totalseg-291", "totalseg-292", "totalseg-294", "totalseg-297", "monai-wholebody-ct",
            "monai-wholebody-ct-lowres", "auto3dseg-ts2-whole-body", "auto3dseg-ts2-whole-body-3mm",
            "auto3dseg-ts2-abdominal-organs", "monai-vista3d"} <= names
    for e in data["models"]:
        assert e["bytes"] > 0 and e["licence"], f"{e['name']}: a weight file needs a size and a licence"
        assert (e["trust"] == "publisher-hash") == (e["hash"] is not None or e["sha256"] is not None)
        assert e["bytes_exact"] or e.get("size_note") or e["kind"] != "monai-bundle", e["name"]
        if not e["commercial_use"]:
            assert not e["offered_by_default"]
        if e["kind"] == "monai-bundle" and e.get("importable", True):
            assert "displayable_configs#highres" in e["bundle_overrides"], "which of the bundle's models"
        for h in [] if e["hash"] is None else (e["hash"] if isinstance(e["hash"], list) else [e["hash"]]):
            assert len(h["value"]) == {"md5": 32, "sha1": 40, "sha256": 64}[h["type"]], e["name"]
    vista = next(e for e in data["models"] if e["name"] == "monai-vista3d")
    assert not vista["commercial_use"] and not vista["offered_by_default"] and vista["importable"] is False
    assert "monai-vista3d" not in {e["name"] for e in dl.read_catalogue()}


def test_hidden_catalogue_model_is_refused_with_its_licence(tmp_path, capsys):
    from cervixtl.cli import main

    assert main(["models", "import", "monai-vista3d", "--models-dir", str(tmp_path / "reg")]) == 2
    err = capsys.readouterr().err
    assert "not offered by default" in err and "non-commercially" in err and "Traceback" not in err


def test_non_commercial_entries_are_not_offered_by_default(tmp_path):
    cat = {"format": "cervixtl-model-catalogue/1", "models": [
        {"name": "open", "offered_by_default": True}, {"name": "vista3d", "offered_by_default": False}]}
    (tmp_path / "Models.json").write_text(json.dumps(cat))
    assert [e["name"] for e in dl.read_catalogue(tmp_path / "Models.json")] == ["open"]
    assert len(dl.read_catalogue(tmp_path / "Models.json", include_all=True)) == 2


class _RangeHandler(http.server.BaseHTTPRequestHandler):
    payload = b""

    def do_GET(self):  # noqa: N802 - http.server API
        start = 0
        rng = self.headers.get("Range")
        if rng and rng.startswith("bytes="):
            start = int(rng[6:].split("-")[0])
            self.send_response(206)
        else:
            self.send_response(200)
        body = self.payload[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):  # quiet
        pass


@pytest.fixture()
def server():
    _RangeHandler.payload = bytes(range(256)) * 20000  # 5.1 MB: several 1 MiB blocks
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _RangeHandler)
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/weights.zip", _RangeHandler.payload
    httpd.shutdown()


def test_download_cancel_then_resume_verified(server, tmp_path):
    url, payload = server
    sha, md5 = hashlib.sha256(payload).hexdigest(), hashlib.md5(payload).hexdigest()
    dest = tmp_path / "w.zip"
    seen = []
    with pytest.raises(Cancelled):
        dl.download(url, dest, sha, progress=lambda got, total: seen.append((got, total)), cancel=lambda: len(seen) >= 2)
    part = tmp_path / "w.zip.part"
    assert not dest.exists() and part.stat().st_size == 2 * dl.CHUNK
    assert seen[0] == (dl.CHUNK, len(payload))
    seen.clear()
    dl.download(url, dest, sha, md5=md5, progress=lambda got, total: seen.append((got, total)))
    assert dest.read_bytes() == payload and not part.exists()
    assert seen[0][0] == 3 * dl.CHUNK  # resumed after the two blocks already there, not from 0


def test_download_hash_mismatch_discards(server, tmp_path):
    url, _ = server
    with pytest.raises(ModelError, match="MD5 .* does not match"):
        dl.download(url, tmp_path / "w.zip", md5="0" * 32)
    assert not (tmp_path / "w.zip").exists() and not (tmp_path / "w.zip.part").exists()
    with pytest.raises(BadInput):
        dl.download("http://127.0.0.1:9/none", tmp_path / "x")
