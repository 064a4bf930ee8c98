"""Issue 14, defects 2 and 5: the engine under Slicer's ``PythonSlicer`` launcher.

The launcher is the stand-in of ``stand_ins.python_slicer_launcher`` (starts the real interpreter as a child with
inherited stdio, forwards no signal, swallows SIGTERM), put in place through ``$CERVIXTL_PYTHON`` exactly as
``engine_python()`` would pick ``PythonSlicer``. A cancelled contour must write no output and leave no process;
a cancelled fine-tune with "Activate when done" must leave the active model as it was; module clean-up kills
what still runs.
"""

from __future__ import annotations

import os
import sys
import time
import types
from pathlib import Path

import numpy as np
import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(REPO / "CervixTL"))

import stand_ins  # noqa: E402

from cervixtl import runner  # noqa: E402

posix_only = pytest.mark.skipif(os.name != "posix", reason="the stand-in launcher is a POSIX script")
psutil = pytest.importorskip("psutil")


def _children(pidfile: Path) -> list[int]:
    return [int(t) for t in pidfile.read_text().split()] if pidfile.is_file() else []


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.Error:
        return True


@pytest.fixture()
def launcher(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> types.SimpleNamespace:
    script, pidfile = stand_ins.python_slicer_launcher(tmp_path / "bin")
    monkeypatch.setenv("CERVIXTL_PYTHON", str(script))
    return types.SimpleNamespace(script=script, pidfile=pidfile)


# ============================================================================ defect 5: the interpreter
def test_inside_slicer_a_missing_launcher_is_an_error_not_the_slicer_binary(monkeypatch: pytest.MonkeyPatch,
                                                                            tmp_path: Path) -> None:
    monkeypatch.delenv("CERVIXTL_PYTHON", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    monkeypatch.setitem(sys.modules, "slicer", types.SimpleNamespace(app=types.SimpleNamespace(
        slicerHome=str(tmp_path / "Slicer-5.10"))))
    with pytest.raises(runner.EngineError, match="cannot find Slicer's Python launcher 'PythonSlicer'"):
        runner.engine_python()
    with pytest.raises(runner.EngineError, match="PythonSlicer"):
        runner.EngineProcess(["--help"])
    # Slicer's own bin folder is the second place looked at
    script, _pids = stand_ins.python_slicer_launcher(tmp_path / "Slicer-5.10" / "bin")
    assert runner.engine_python() == str(script)


def test_processes_start_without_a_console_window_in_their_own_group() -> None:
    flags = runner.popen_options("nt")["creationflags"]
    assert flags & 0x08000000 and flags & 0x00000200  # CREATE_NO_WINDOW, CREATE_NEW_PROCESS_GROUP
    assert runner.popen_options("posix") == {"start_new_session": True}


# ============================================================================ defect 2: the whole tree
@posix_only
def test_cancel_stops_the_interpreter_under_a_launcher_that_ignores_sigterm(launcher, tmp_path: Path) -> None:
    """A 30 s 'engine' under the launcher: cancel ends both within a second (SIGTERM to the tree; the launcher
    exits when its child does), well before the kill grace period."""
    body = tmp_path / "slow.py"
    body.write_text("import sys, time\nprint('{\"stage\": \"train\", \"fraction\": 0.1}', file=sys.stderr, "
                    "flush=True)\ntime.sleep(30)\n", encoding="utf-8")
    job = _start_script(body)
    t0 = time.monotonic()
    while not job.records and time.monotonic() - t0 < 30:
        job.poll()
        time.sleep(0.02)
    kids = _children(launcher.pidfile)
    assert len(kids) >= 1 and not _gone(kids[-1])
    t0 = time.monotonic()
    job.cancel()
    assert job.wait(15) is not None
    assert time.monotonic() - t0 < 5, "the interpreter outlived the cancel (only the launcher was signalled)"
    assert all(_gone(p) for p in kids) and job.cancelled


def _start_script(script: Path) -> runner.EngineProcess:
    """An EngineProcess running ``launcher script`` (instead of ``launcher -m cervixtl``)."""
    orig = runner.engine_command
    runner.engine_command = lambda args: [runner.engine_python(), str(script)]
    try:
        return runner.EngineProcess([], kill_after_s=20)
    finally:
        runner.engine_command = orig


@posix_only
def test_kill_all_stops_every_tree_on_module_cleanup(launcher, tmp_path: Path) -> None:
    body = tmp_path / "stubborn.py"
    body.write_text("import signal, sys, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
                    "print('ready', file=sys.stderr, flush=True)\ntime.sleep(60)\n", encoding="utf-8")
    job = _start_script(body)
    t0 = time.monotonic()
    while not job.stderr_lines and time.monotonic() - t0 < 30:
        job.poll()
        time.sleep(0.02)
    kids = _children(launcher.pidfile)
    assert runner.kill_all() >= 1
    assert job.wait(10) is not None
    assert all(_gone(p) for p in kids)


def _demo_or_tiny_model(tmp_path: Path) -> Path:
    models = tmp_path / "models"
    if not (REPO / "Resources" / "Models" / "cervixtl-demo" / "model.json").is_file():
        torch = pytest.importorskip("torch")
        from cervixtl.models.networks import build_network, segresnet_card
        from cervixtl.models.package import save_package
        from cervixtl.models.registry import Registry

        torch.manual_seed(1)
        card = segresnet_card("cervixtl-demo", ["GTV", "CTV", "Bladder", "Rectum"], init_filters=4,
                              spacing_mm=(4.0, 4.0, 4.0), patch_size=(16, 32, 32))
        Registry(models).add(save_package(tmp_path / "pkg", card, build_network(card).state_dict()))
    return models


@posix_only
@pytest.mark.slicer
def test_cancelled_contour_under_the_launcher_writes_no_output(launcher, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    import mrml_harness

    from cervixtl.phantom import make_phantom
    from CervixTLLib.geometry import ijk_to_ras_from_grid
    from CervixTLLib.logic import ContourLogic

    env = mrml_harness.make_slicer_env()
    import slicer.util

    ct, _truth = make_phantom(3, spacing=(5.0, 5.0, 5.0), size=(160, 140, 100))
    vol = slicer.util.addVolumeFromArray(ct.array.astype(np.int16),
                                         ijk_to_ras_from_grid(ct.spacing, ct.origin, ct.direction), "CT")
    logic = ContourLogic(models_dir=_demo_or_tiny_model(tmp_path))
    n_nodes = env.scene.GetNumberOfNodes()
    job = logic.start_contour(vol, device="cpu", fast=True)
    t0 = time.monotonic()
    while not job.progress and time.monotonic() - t0 < 60:
        job.poll()
        time.sleep(0.02)
    assert job.progress, job.process.stderr_lines
    kids = _children(launcher.pidfile)
    job.cancel()
    t0 = time.monotonic()
    assert job.process.wait(60) is not None
    assert time.monotonic() - t0 < 30  # (the engine stops at its next check; the grace period is 15 s)
    assert all(_gone(p) for p in kids), "the engine under the launcher still runs after Cancel"
    assert not job.out_path.exists(), "a cancelled contour wrote its output"
    with pytest.raises(runner.EngineError, match="cancelled"):
        logic.finish_contour(job)
    assert env.scene.GetNumberOfNodes() == n_nodes


@posix_only
@pytest.mark.slicer
@pytest.mark.slow
def test_cancelled_finetune_with_activate_keeps_the_active_model(launcher, tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    from cervixtl import phantom
    from cervixtl.cases import CaseLibrary
    from cervixtl.models.networks import build_network, segresnet_card
    from cervixtl.models.package import save_package
    from cervixtl.models.registry import Registry

    sys.path.insert(0, str(REPO / "CervixTLTraining"))
    import mrml_harness

    from CervixTLTrainingLib.logic import FinetuneRequest, TrainingLogic

    env = mrml_harness.make_slicer_env()
    torch.manual_seed(0)
    reg = Registry(tmp_path / "models")
    for name in ("src6", "site"):
        card = segresnet_card(name, ["GTV", "CTV"], version="1", init_filters=4, spacing_mm=(6, 6, 6),
                              patch_size=(16, 16, 16))
        reg.add(save_package(tmp_path / f"pkg-{name}", card, build_network(card).state_dict()), activate=True)
    library = CaseLibrary(tmp_path / "cases")
    ids = [library.add(*phantom.make_phantom(seed=400 + i, site="B", spacing=(6.0, 6.0, 6.0)), site="B")
           for i in range(3)]
    before = [(r["name"], r["version"], r["active"]) for r in reg.list()]
    logic = TrainingLogic(env.scene, cases_dir=str(tmp_path / "cases"), models_dir=str(tmp_path / "models"))
    logic.start_finetune(FinetuneRequest(source="src6@1", name="site", cases=ids, epochs=30, val_fraction=0.34,
                                         device="cpu", activate=True))
    t0 = time.monotonic()
    while not any(r.get("stage") == "train" for r in logic.job.records) and time.monotonic() - t0 < 240:
        assert logic.poll().running, logic.job.error_message()
        time.sleep(0.05)
    kids = _children(launcher.pidfile)
    logic.cancel()
    st = logic.wait(timeout_s=60)
    assert not st.running, "the fine-tuning engine under the launcher ignored Cancel"
    assert st.cancelled and all(_gone(p) for p in kids)
    assert [(r["name"], r["version"], r["active"]) for r in Registry(tmp_path / "models").list()] == before


@posix_only
@pytest.mark.slicer
def test_module_cleanup_kills_a_running_contour_under_the_launcher(launcher, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Slicer exits (module clean-up) while a contour runs: the launcher AND the interpreter under it are
    killed at once, and nothing is written."""
    import test_cervixtl_ui

    monkeypatch.setenv("CERVIXTL_MODELS_DIR", str(_demo_or_tiny_model(tmp_path)))
    panel = test_cervixtl_ui.build_panel(monkeypatch, tmp_path)
    monkeypatch.setenv("CERVIXTL_PYTHON", str(launcher.script))  # (build_panel unset it for its PythonSlicer)
    import slicer.util

    from cervixtl.phantom import make_phantom
    from CervixTLLib.geometry import ijk_to_ras_from_grid

    ct, _truth = make_phantom(3, spacing=(5.0, 5.0, 5.0), size=(160, 140, 100))
    vol = slicer.util.addVolumeFromArray(ct.array.astype(np.int16),
                                         ijk_to_ras_from_grid(ct.spacing, ct.origin, ct.direction), "CT")
    w = panel.widget
    job = w._job = w.logic.start_contour(vol, device="cpu", fast=True)
    t0 = time.monotonic()
    while not _children(launcher.pidfile) and time.monotonic() - t0 < 30:
        time.sleep(0.02)
    kids = _children(launcher.pidfile)
    t0 = time.monotonic()
    w.cleanup()
    assert job.process.wait(10) is not None and time.monotonic() - t0 < 5
    assert kids and all(_gone(p) for p in kids)
    assert not job.out_path.exists()
