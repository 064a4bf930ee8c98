"""Model comparison: paired statistics against exact values, outputs, and an end-to-end run."""

from __future__ import annotations

import csv
import json
import math
import subprocess
import sys

import pytest
import torch

from cervixtl.compare import common_structures, compare_models, summarise, to_csv, write_outputs
from cervixtl.errors import BadInput
from cervixtl.models.networks import build_network
from cervixtl.models.package import save_package
from cervixtl.models.registry import Registry
from cervixtl.phantom import make_phantom
from cervixtl.training import default_card


def _rows():
    rows = []
    for i in range(6):
        a = 0.5 + 0.02 * i
        rows.append({"model": "S@1", "case": f"c{i}", "structure": "CTV", "dice": a, "hd95_mm": 10.0 + i,
                     "surface_dice": 0.5})
        rows.append({"model": "ST@1", "case": f"c{i}", "structure": "CTV", "dice": a + 0.1 + 0.01 * i,
                     "hd95_mm": 8.0 + i, "surface_dice": 0.5})
    return rows


def test_summary_and_exact_wilcoxon():
    res = summarise(_rows(), ["S@1", "ST@1"], ["CTV"])
    s = res["summary"]["S@1"]["CTV"]["dice"]
    assert s["mean"] == pytest.approx(0.55) and s["median"] == pytest.approx(0.55) and s["n"] == 6
    assert s["std"] == pytest.approx(math.sqrt(sum((0.5 + 0.02 * i - 0.55) ** 2 for i in range(6)) / 5))
    t = {x["metric"]: x for x in res["tests"]}
    # all 6 differences favour ST: exact two-sided signed-rank p = 2 / 2**6
    assert t["dice"]["p_value"] == pytest.approx(2 / 64)
    assert t["dice"]["better"] == "b" and t["dice"]["b_wins"] == 6 and t["dice"]["a_wins"] == 0
    assert t["hd95_mm"]["better"] == "b" and t["hd95_mm"]["b_wins"] == 6  # lower HD95 is better
    assert t["surface_dice"]["better"] == "equal" and t["surface_dice"]["p_value"] == 1.0


def test_csv_writes_nan_as_empty():
    text = to_csv([{"model": "a", "case": "c", "structure": "GTV", "dice": 0.0, "hd95_mm": float("nan")}])
    row = next(csv.DictReader(text.splitlines()))
    assert row["hd95_mm"] == "" and row["dice"] == "0.0"


def test_common_structures():
    assert common_structures([["GTV", "CTV", "Bladder"], ["gtv", "CTV"]], [["GTV", "CTV", "PTV"]]) == ["GTV", "CTV"]


@pytest.fixture(scope="module")
def two_models(tmp_path_factory):
    root = tmp_path_factory.mktemp("reg")
    reg = Registry(root / "models")
    torch.manual_seed(0)
    card = default_card("src", ["GTV", "CTV", "Bladder"], init_filters=4, spacing_mm=(8.0, 8.0, 8.0),
                        patch_size=(16, 32, 32))
    net = build_network(card)
    save_package(root / "p1", card, net.state_dict())
    card2 = default_card("copy", ["GTV", "CTV", "Bladder"], init_filters=4, spacing_mm=(8.0, 8.0, 8.0),
                         patch_size=(16, 32, 32))
    save_package(root / "p2", card2, net.state_dict())  # same weights under another name
    reg.add(root / "p1")
    reg.add(root / "p2")
    return reg


def test_compare_identical_models_end_to_end(tmp_path, two_models):
    torch.set_num_threads(2)
    cases = [(f"b{i}", *make_phantom(200 + i, "B")) for i in range(2)]
    res = compare_models(["src", "copy"], cases, registry=two_models, device="cpu")
    assert res["structures"] == ["GTV", "CTV", "PTV", "Bladder"]
    assert len(res["rows"]) == 2 * 2 * 4
    by = {(r["model"], r["case"], r["structure"]): r["dice"] for r in res["rows"]}
    assert all(by[("src@1", c, s)] == by[("copy@1", c, s)] for _, c, s in by)
    assert all(t["better"] == "equal" and t["a_wins"] == t["b_wins"] == 0 for t in res["tests"])
    paths = write_outputs(res, tmp_path / "out")
    data = json.loads(paths["json"].read_text())  # strict JSON: NaN written as null
    assert data["models"] == ["src@1", "copy@1"]
    assert len(list(csv.DictReader(paths["csv"].read_text().splitlines()))) == 16
    assert paths["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list((tmp_path / "out").glob(".*part*"))


def test_compare_refuses_bad_requests(two_models):
    with pytest.raises(BadInput):
        compare_models(["src"], [("x", None, None)], registry=two_models)
    with pytest.raises(BadInput):
        compare_models(["src", "copy"], [], registry=two_models)
    r = subprocess.run([sys.executable, "-m", "cervixtl", "compare", "--models", "src", "--cases", "all",
                        "--models-dir", str(two_models.root), "--cases-dir", str(two_models.root / "nocases")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "Traceback" not in r.stderr
