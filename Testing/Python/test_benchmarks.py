"""The transfer-learning benchmarks run end to end in their tiny ``--quick`` form (a few CPU steps).

The older staged OpenKBP script (``bench_openkbp.py``) is not run here: ``bench_learning_curve.py`` covers the
same OpenKBP pipeline (source, target and transfer arms, held-out scoring at overlap 0.5) and its quick form
costs about 3 minutes where the staged script's took about 13 on 2 cores.

These check that the scripts whose figures the README reports still run against the current engine and
write their summary files; the figures themselves come from the full-length runs documented in the README.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from shared_data import DATA, need

ROOT = Path(__file__).resolve().parents[2]


def _run(script: str, *args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, str(ROOT / "benchmarks" / script), "--quick", "--device", "cpu", "--threads", "2", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=ROOT)


@pytest.mark.slow
def test_synthetic_transfer_benchmark_quick(tmp_path):
    r = _run("bench_transfer.py", "--out", str(tmp_path), "--source-epochs", "2", "--plateau-factor", "3")
    assert r.returncode == 0, r.stderr[-3000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    (run,) = summary["runs"]
    assert run["n"] == 2 and run["steps"] == {"T": 2, "ST": 2, "T_plateau": 6}
    assert set(run["mean_dice"]) == {"bench-S@1", "bench-T2@1", "bench-ST2@1", "bench-Tp2@1"}
    assert set(run["p_ST_vs_T_plateau"]) == set(run["p_ST_vs_T"]) == set(run["p_ST_vs_S"])
    for folder in ("n2", "n2-T_plateau"):  # S / T / ST, then T_plateau against ST
        assert (tmp_path / folder / "compare.csv").exists() and (tmp_path / folder / "compare.png").exists()


@pytest.mark.slow
def test_synthetic_transfer_benchmark_from_package_folder(tmp_path):
    """``--source`` as a model package folder (not in the benchmark's registry) is scored too."""
    r = _run("bench_transfer.py", "--out", str(tmp_path), "--source", str(ROOT / "Resources" / "Models" / "cervixtl-demo"))
    assert r.returncode == 0, r.stderr[-3000:]
    (run,) = json.loads((tmp_path / "summary.json").read_text())["runs"]
    assert run["models"]["S"].startswith("cervixtl-demo@") and run["models"]["S"] in run["mean_dice"]
    assert set(run["p_ST_vs_S"]) == set(run["p_ST_vs_T"])


@pytest.mark.slow
def test_learning_curve_benchmark_quick(tmp_path):
    """One command runs the whole learning-curve design (S, and T / ST / T_plateau / T_compute at n = 1)."""
    data = need(DATA / "openkbp" / "labels.json").parent
    r = _run("bench_learning_curve.py", "--data", str(data), "--out", str(tmp_path))
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads((tmp_path / "learning_curve.json").read_text())
    arms = {(x["arm"], x["n"]) for x in out["results"]["runs"]}
    assert arms == {("T", 1), ("ST", 1), ("T_plateau", 1), ("T_compute", 1)}
    steps = {x["arm"]: x["steps"] for x in out["results"]["runs"]}
    assert steps == {"T": 2, "ST": 2, "T_plateau": 4, "T_compute": 6}
    tests = out["summary"]["tests"]
    assert {t["a"] for t in tests} == {"T", "T_plateau", "T_compute"} and all("p_holm" in t for t in tests)
    assert {r["structure"] for r in out["summary"]["table"]} >= {"PTV70", "LeftParotid"}
