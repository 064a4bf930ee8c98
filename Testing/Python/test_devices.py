"""``cervixtl devices --json`` (issue 14 defect 4): the device probe the Slicer modules ask instead of
importing torch in Slicer's process; its output matches ``Resources/schemas/cervixtl-devices.schema.json``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def test_devices_json_matches_its_schema_and_this_machine() -> None:
    jsonschema = pytest.importorskip("jsonschema")
    torch = pytest.importorskip("torch")
    res = subprocess.run([sys.executable, "-m", "cervixtl", "devices", "--json"], capture_output=True, text=True,
                         timeout=300, cwd=REPO)
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    schema = json.loads((REPO / "Resources" / "schemas" / "cervixtl-devices.schema.json").read_text())
    jsonschema.validate(out, schema)
    assert out["torch"] == torch.__version__ and out["cuda"] == torch.cuda.is_available()
    assert len(out["gpus"]) == (torch.cuda.device_count() if out["cuda"] else 0)
    assert out["fast_default"] is (not out["cuda"])


def test_devices_without_torch_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    from cervixtl import devices

    monkeypatch.setitem(sys.modules, "torch", None)  # import torch -> ImportError
    d = devices.probe_devices()
    assert d == {"format": "cervixtl-devices/1", "torch": None, "cuda": False, "gpus": [], "recommended": "cpu",
                 "fast_default": True}


def test_catalogue_and_model_cards_read_without_torch() -> None:
    code = ("import sys; from cervixtl.models.download import read_catalogue; from cervixtl.models.card import "
            "ModelCard; read_catalogue(); print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert out.stdout.strip() == "False"
