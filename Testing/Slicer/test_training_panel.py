"""The CervixTLTraining panel's own code (``CervixTLTrainingWidget``) driven like a user, on the real MRML scene
of slicer-core with the real engine; Qt widgets are fakes built from the object names in the .ui.

* issue 14 defect 9: no click runs an engine process in the GUI thread -- every engine call goes through the
  one background runner (``CervixTLLib.engine.TaskQueue``) polled by the panel's timer;
* defect 8: closing the scene during a fine-tune, with the panel hidden, neither raises when the run ends nor
  loses its result: the new scene gets the versions table and the automatic comparison still runs;
* defect 7: a case loaded from the library is not bound to the library's files.
"""

from __future__ import annotations

import subprocess
import sys
import time
import types
import xml.etree.ElementTree as ET
from contextlib import contextmanager
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
MODULE_DIR = REPO / "CervixTLTraining"
UI_FILE = MODULE_DIR / "Resources" / "UI" / "CervixTLTraining.ui"

from test_cervixtl_ui import _fake_qt, _FakeWidget, _install_slicer_stand_ins  # noqa: E402

pytestmark = pytest.mark.slicer


class _Widget(_FakeWidget):
    """A fake widget with what the Training panel also uses (table views, combo text, plain text)."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.selected: list[int] = []
        self.table = None
        self.collapsed = True

    def setCurrentText(self, text: str) -> None:  # noqa: N802
        i = self.findText(text)
        if i >= 0:
            self.setCurrentIndex(i)

    def selectionModel(self):  # noqa: ANN201, N802
        return types.SimpleNamespace(selectedIndexes=lambda: [types.SimpleNamespace(row=lambda r=r: r)
                                                              for r in self.selected])

    def setMRMLTableNode(self, node) -> None:  # noqa: ANN001, N802
        self.table = node

    def setPlainText(self, text: str) -> None:  # noqa: N802
        self.text = text


def _wrapper(cls):  # noqa: ANN001, ANN202
    """parameterNodeWrapper stand-in: the annotated defaults; a node reference whose node left the scene (scene
    close) reads as None, as the real wrapper's reference does."""
    defaults = {k: getattr(cls, k, None) for k in cls.__annotations__}
    state: dict = {}

    class Wrapped:
        def __init__(self, node) -> None:  # noqa: ANN001
            if not state:
                state.update(defaults)

        def __getattr__(self, name: str):  # noqa: ANN204
            v = state[name]
            return None if hasattr(v, "GetScene") and v.GetScene() is None else v

        def __setattr__(self, name: str, value) -> None:  # noqa: ANN001
            state[name] = value

        def connectGui(self, ui) -> str:  # noqa: ANN001, N802
            return "tag"

        def disconnectGui(self, tag) -> None:  # noqa: ANN001, N802
            pass

    Wrapped.__name__ = cls.__name__
    return Wrapped


def _panel(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> types.SimpleNamespace:
    import mrml_harness

    env = mrml_harness.make_slicer_env()
    env.modules.plots = types.SimpleNamespace(logic=lambda: types.SimpleNamespace(ShowChartInLayout=lambda n: None))
    stand_in = _install_slicer_stand_ins(monkeypatch, tmp_path)
    qt = _fake_qt({})

    class QTimer(qt.QTimer):
        def connect(self, signal: str, slot) -> None:  # noqa: ANN001
            self.timeout.connect(slot)

    qt.QTimer = QTimer
    monkeypatch.setitem(sys.modules, "qt", qt)
    sys.modules["slicer.parameterNodeWrapper"].parameterNodeWrapper = _wrapper
    import slicer
    import slicer.util

    errors: list[str] = []

    @contextmanager
    def try_with_error_display(message=None, show=True, waitCursor=False):  # noqa: ANN001, ANN202, N803
        try:
            yield
        except Exception as exc:  # noqa: BLE001 - what Slicer's helper does: show it
            errors.append(f"{message} {exc}")

    names = {w.get("name") for w in ET.parse(UI_FILE).getroot().iter("widget")}
    ui = types.SimpleNamespace(**{n: _Widget(n) for n in names})
    for attr, value in (("loadUI", lambda path: _Widget("panel")), ("childWidgetVariables", lambda w: ui),
                        ("confirmOkCancelDisplay", lambda *a, **k: True), ("setSliceViewerLayers", lambda *a, **k: None),
                        ("tryWithErrorDisplay", try_with_error_display), ("WaitCursor", contextmanager(lambda: (yield))),
                        ("warningDisplay", lambda text, **k: errors.append(text)),
                        ("infoDisplay", lambda text, **k: stand_in.shown.append(text))):
        monkeypatch.setattr(slicer.util, attr, value, raising=False)
    monkeypatch.syspath_prepend(str(MODULE_DIR))
    monkeypatch.delitem(sys.modules, "CervixTLTraining", raising=False)
    import CervixTLTraining as module

    class Widget(module.CervixTLTrainingWidget):
        def __init__(self) -> None:
            module.CervixTLTrainingWidget.__init__(self)
            self.layout = types.SimpleNamespace(addWidget=lambda w: None)
            self.parent = types.SimpleNamespace(isEntered=True)

        def resourcePath(self, p: str) -> str:  # noqa: N802
            return str(MODULE_DIR / "Resources" / p)

    module.ScriptedLoadableModuleLogic.getParameterNode = lambda self: None
    w = Widget()

    def pump(timeout_s: float = 600) -> None:
        t0 = time.monotonic()
        while w._timer.active:
            w.onTimer()
            time.sleep(0.05)
            assert time.monotonic() - t0 < timeout_s, ui.statusLabel.text

    return types.SimpleNamespace(widget=w, ui=ui, env=env, pump=pump, errors=errors, shown=stand_in.shown,
                                 module=module)


def _library(root: Path) -> list[str]:
    """Three phantom cases and a tiny source model src6@1 (6 mm voxels, 16^3 patches) for fast CPU runs."""
    torch = pytest.importorskip("torch")
    from cervixtl import phantom
    from cervixtl.cases import CaseLibrary
    from cervixtl.models.networks import build_network, segresnet_card
    from cervixtl.models.package import save_package
    from cervixtl.models.registry import Registry

    torch.manual_seed(0)
    card = segresnet_card("src6", ["GTV", "CTV"], version="1", init_filters=4, spacing_mm=(6, 6, 6),
                          patch_size=(16, 16, 16))
    Registry(root / "models").add(save_package(root / "pkg", card, build_network(card).state_dict()))
    library = CaseLibrary(root / "cases")
    return [library.add(*phantom.make_phantom(seed=500 + i, site="B", spacing=(6.0, 6.0, 6.0)), site="B")
            for i in range(3)]


def test_no_click_runs_the_engine_in_the_gui_thread(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Defect 9 (and 7): set-up, entry and the case / model buttons return at once; the engine runs only in the
    background queue. A loaded case has no storage node pointing into the library."""
    ids = _library(tmp_path)
    monkeypatch.setenv("CERVIXTL_CASES_DIR", str(tmp_path / "cases"))
    monkeypatch.setenv("CERVIXTL_MODELS_DIR", str(tmp_path / "models"))
    panel = _panel(monkeypatch, tmp_path)
    w, ui = panel.widget, panel.ui
    from cervixtl import runner

    def forbidden(*a, **k):  # noqa: ANN002, ANN003, ANN202
        raise AssertionError("an engine command ran in the GUI thread")

    monkeypatch.setattr(runner, "run_engine", forbidden)
    monkeypatch.setattr(sys.modules["CervixTLTrainingLib.logic"], "run_engine", forbidden)
    monkeypatch.setattr(subprocess, "run", forbidden)

    slowest = 0.0

    def click(handler, *args) -> None:  # noqa: ANN001, ANN002
        nonlocal slowest
        t0 = time.perf_counter()
        handler(*args)
        slowest = max(slowest, time.perf_counter() - t0)

    click(w.setup)
    click(w.enter)
    assert w.logic.lib.tasks.busy and w._timer.active
    panel.pump()
    cases = w._parameterNode.casesTable
    assert sorted(cases.GetCellText(r, 0) for r in range(cases.GetNumberOfRows())) == sorted(ids)
    assert "src6@1" in [t for t, _d in ui.sourceModelComboBox.items]
    assert ui.deviceInfoLabel.text.startswith(("No CUDA GPU", "GPU:"))
    ui.versionsTableView.selected = [0]
    assert w.selectedModelSpec() == "src6@1"
    for handler in (w.onRefreshCases, w.onRefreshModels, w.onActivate, lambda: w.onVersionClicked(None)):
        click(handler)
        assert w.logic.lib.tasks.busy
        panel.pump()
    assert '"name": "src6"' in ui.modelCardTextEdit.text
    assert ui.statusLabel.text == "src6@1 is now the active model."
    assert slowest < 0.5, f"a click took {slowest:.2f} s"
    assert panel.errors == [] and panel.shown == []

    # Load case: the nodes are detached from the library's files (a Save cannot write into the library)
    ui.casesTableView.selected = [0]
    w.onLoadCase()
    scene = panel.env.scene
    loaded = [scene.GetNthNode(i) for i in range(scene.GetNumberOfNodes())]
    loaded = [n for n in loaded if n.GetName().startswith("case ")]
    assert len(loaded) == 2 and panel.errors == []
    for node in loaded:
        assert node.GetStorageNode() is None, node.GetName()
    assert scene.GetFirstNodeByClass("vtkMRMLVolumeArchetypeStorageNode") is None
    assert scene.GetFirstNodeByClass("vtkMRMLSegmentationStorageNode") is None


@pytest.mark.slow
def test_scene_close_during_finetune_keeps_the_result_and_starts_the_comparison(monkeypatch: pytest.MonkeyPatch,
                                                                                 tmp_path: Path) -> None:
    """Defect 8: start a fine-tune from the panel, leave the module, close the scene; when the run ends the
    new scene's tables show the new version and the automatic comparison runs on the held-out case."""
    _library(tmp_path)
    monkeypatch.setenv("CERVIXTL_CASES_DIR", str(tmp_path / "cases"))
    monkeypatch.setenv("CERVIXTL_MODELS_DIR", str(tmp_path / "models"))
    panel = _panel(monkeypatch, tmp_path)
    w, ui = panel.widget, panel.ui
    w.setup()
    w.enter()
    panel.pump()
    p = w._parameterNode
    p.device, p.epochs, p.valFraction, p.newModelName = "cpu", 1, 0.34, "site"
    ui.sourceModelComboBox.setCurrentText("src6@1")
    w.onStart()
    t0 = time.monotonic()
    while not (w.logic.lib.job is not None and w.logic.lib.job.records) and time.monotonic() - t0 < 240:
        w.onTimer()
        time.sleep(0.05)
    assert w.logic.lib.job_kind == "finetune" and w.logic.lib.job.running
    w.exit()
    w.parent.isEntered = False
    old_versions = p.versionsTable
    panel.env.scene.Clear(0)  # File > Close scene, with the module hidden
    assert old_versions.GetScene() is None
    panel.pump(900)
    assert panel.errors == [] and panel.shown == [], (panel.errors, panel.shown)
    p = w._parameterNode
    versions = p.versionsTable
    assert versions.GetScene() is panel.env.scene
    assert "site@1" in [versions.GetCellText(r, 0) for r in range(versions.GetNumberOfRows())]
    assert w.logic.lib.job_kind == "compare" and w.logic.lib.job.returncode == 0, ui.statusLabel.text
    assert ui.verdictLabel.text.startswith("site@1 vs src6@1:")
    assert p.compareTable.GetNumberOfRows() >= 2 and p.compareTable.GetScene() is panel.env.scene
    assert p.lossTable.GetScene() is panel.env.scene


_TORCH_FREE = r"""
import json, sys
from pathlib import Path
sys.path[:0] = [{here!r}]
import pytest
import test_training_panel as t
panel = t._panel(pytest.MonkeyPatch(), Path(sys.argv[1]))
panel.widget.setup()
after_setup = "torch" in sys.modules
panel.widget.enter()
panel.pump()
ui = panel.ui
ui.versionsTableView.selected = [0]
panel.widget.onVersionClicked(None)
panel.pump()
print(json.dumps({{"after_setup": after_setup, "after_enter": "torch" in sys.modules,
                  "models": [x[0] for x in ui.sourceModelComboBox.items], "errors": panel.errors}}))
"""


def test_training_panel_never_imports_torch_in_slicers_process(tmp_path: Path) -> None:
    """Defect 4 for CervixTLTraining: set-up, entry (cases, models, devices) and a model card, all without torch
    in Slicer's process (a fresh interpreter)."""
    import json
    import os

    _library(tmp_path)
    script = tmp_path / "panel.py"
    script.write_text(_TORCH_FREE.format(here=str(HERE)), encoding="utf-8")
    env = {**os.environ, "CERVIXTL_CASES_DIR": str(tmp_path / "cases"), "CERVIXTL_MODELS_DIR": str(tmp_path / "models"),
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    res = subprocess.run([sys.executable, str(script), str(tmp_path)], capture_output=True, text=True, timeout=600,
                         env=env, cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["after_setup"] is False and out["after_enter"] is False, out
    assert "src6@1" in out["models"] and out["errors"] == []
