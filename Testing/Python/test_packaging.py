"""Packaging: the wheel of a non-editable ``pip install .`` carries what the engine needs (demo model,
catalogue, terminology, ROI mapping, schemas), and a fresh virtual environment without the checkout on the
path runs the demo and ``cervixtl contour`` from it. Offline: the dependencies come from the running
interpreter's site-packages through a ``.pth`` file (no download), the wheel is installed with ``--no-deps``."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
#: The files a build needs (a copy, so the build leaves nothing in the checkout).
SOURCES = ("cervixtl", "Resources", "pyproject.toml", "setup.py", "MANIFEST.in", "README.md", "LICENSE")


def _build_wheel(tmp: Path) -> Path:
    src = tmp / "src"
    for name in SOURCES:
        p = REPO / name
        if p.is_dir():
            shutil.copytree(p, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "docs"))
        else:
            shutil.copy2(p, src / name)
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", str(src), "--no-deps", "--no-build-isolation",
                        "--no-index", "-w", str(tmp / "dist")], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert "SetuptoolsDeprecationWarning" not in r.stdout + r.stderr
    return next((tmp / "dist").glob("cervixtl-*.whl"))


def _fresh_venv(tmp: Path, wheel: Path) -> tuple[Path, dict[str, str]]:
    env_dir = tmp / "venv"
    venv.EnvBuilder(system_site_packages=False, with_pip=False).create(env_dir)
    py = env_dir / "bin" / "python"
    purelib = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    # dependencies (torch, MONAI, ...) from this interpreter's site-packages, after the venv's own
    (Path(purelib) / "shared-deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    r = subprocess.run([sys.executable, "-m", "pip", "--python", str(py), "install", "--no-deps", "--no-index",
                        str(wheel)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(CERVIXTL_HOME=str(tmp / "home"), OMP_NUM_THREADS="2")
    return env_dir, env


@pytest.mark.slow
def test_wheel_installs_and_runs_demo_and_contour(tmp_path: Path):
    wheel = _build_wheel(tmp_path)
    names = set(zipfile.ZipFile(wheel).namelist())
    for shipped in ("Models/cervixtl-demo/model.json", "Models/cervixtl-demo/weights.safetensors", "Models.json",
                    "CervixTL.term.json", "roi_mapping.json", "source_structures.json",
                    "schemas/cervixtl-contour.schema.json"):
        assert f"cervixtl/resources/{shipped}" in names, shipped
    env_dir, env = _fresh_venv(tmp_path, wheel)
    work = tmp_path / "work"  # not the checkout: nothing of the repository is importable from here
    work.mkdir()
    where = subprocess.run([str(env_dir / "bin" / "python"), "-c",
                            "import cervixtl, cervixtl.resources as r; print(cervixtl.__file__); "
                            "print(r.resources_dir())"], capture_output=True, text=True, cwd=work, env=env,
                           check=True).stdout.split()
    assert all(w.startswith(str(env_dir)) for w in where), where
    exe = str(env_dir / "bin" / "cervixtl")
    r = subprocess.run([exe, "demo", "--out", "demo", "--threads", "2", "--json"], capture_output=True, text=True,
                       cwd=work, env=env, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    rep = json.loads(r.stdout)
    assert rep["format"] == "cervixtl-demo/1" and rep["model"]["name"] == "cervixtl-demo"
    assert rep["mean_dice_targets"] > 0.7 and (work / "demo" / "overview.png").is_file()
    r = subprocess.run([exe, "contour", "demo/ct.nii.gz", "out.seg.nrrd", "--fast", "--device", "cpu", "--threads",
                        "2", "--json"], capture_output=True, text=True, cwd=work, env=env, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    out = json.loads(r.stdout)
    assert out["format"] == "cervixtl-contour/1" and {s["name"] for s in out["structures"]} >= {"GTV", "CTV", "PTV"}
    assert (work / "out.seg.nrrd").is_file()
