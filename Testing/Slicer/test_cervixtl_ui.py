"""CervixTL module file, panel and Slicer API use, checked without the Slicer application.

* the ``.ui`` loads with real Qt (PySide6, ``../shared/slicer_api/check_ui_qt.py``) without warnings, and every
  widget the module looks up (``self.ui.NAME``) is in it;
* every ``SlicerParameterName`` in the ``.ui`` is a field of the parameter node with a matching type;
* every ``slicer.*`` name passes ``../shared/slicer_api/check_slicer_names.py`` (0 unknown names);
* module structure: the four standard classes, CMakeLists (all scripts and resources, generic tests, self-test),
  128 x 128 icon;
* the module file imports with stand-ins for the Qt-only Slicer modules, and its self-test ``CervixTLTest``
  passes against the real MRML scene of slicer-core with a tiny random-weight stand-in for the demo model;
* the panel renders offscreen to a PNG (the README screenshot comes from the same code).
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
import types
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
MODULE_DIR = REPO / "CervixTL"
MODULE_PY = MODULE_DIR / "CervixTL.py"
UI_FILE = MODULE_DIR / "Resources" / "UI" / "CervixTL.ui"
KIT = REPO.parent / "shared" / "slicer_api"

qt_mark = pytest.mark.qt


def _kit_script(name: str) -> Path:
    path = KIT / name
    if not path.is_file():
        pytest.skip(f"Slicer API kit not found at {path} (../shared/slicer_api beside the repository)")
    return path


def _ui_names() -> dict[str, str]:
    """object name -> class of every widget in the .ui."""
    root = ET.parse(UI_FILE).getroot()
    return {w.get("name"): w.get("class") for w in root.iter("widget")}


def _ui_lookups() -> set[str]:
    return set(re.findall(r"self\.ui\.([A-Za-z_][A-Za-z0-9_]*)", MODULE_PY.read_text(encoding="utf-8")))


# ============================================================================ .ui with real Qt
@qt_mark
def test_ui_loads_with_real_qt_without_warnings() -> None:
    pytest.importorskip("PySide6", reason="PySide6 is not installed")
    res = subprocess.run([sys.executable, str(_kit_script("check_ui_qt.py")), str(UI_FILE)], capture_output=True,
                         text=True, timeout=120, env={**__import__("os").environ, "QT_QPA_PLATFORM": "offscreen"})
    assert res.returncode == 0, res.stdout + res.stderr
    assert "OK " in res.stdout and "FAIL" not in res.stdout
    loaded = {ln.strip() for ln in res.stdout.splitlines() if ln.startswith("    ")}
    missing = _ui_lookups() - loaded
    assert not missing, f"widgets looked up by CervixTL.py but not created by Qt from the .ui: {sorted(missing)}"


def test_every_widget_the_code_uses_is_in_the_ui() -> None:
    names = _ui_names()
    lookups = _ui_lookups()
    assert len(lookups) > 25
    assert not lookups - set(names), sorted(lookups - set(names))


def _parameter_fields() -> dict[str, str]:
    tree = ast.parse(MODULE_PY.read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == "CervixTLParameterNode":
            out = {}
            for stmt in node.body:
                if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name):
                    ann = stmt.annotation
                    if isinstance(ann, ast.Subscript):  # Annotated[T, ...]
                        ann = ann.slice.elts[0]  # type: ignore[attr-defined]
                    out[stmt.target.id] = ast.unparse(ann)
            return out
    raise AssertionError("CervixTLParameterNode not found")


def test_gui_bindings_match_the_parameter_node() -> None:
    fields = _parameter_fields()
    expected_type = {"ctkSliderWidget": "float", "QCheckBox": "bool", "QLineEdit": "str"}
    root = ET.parse(UI_FILE).getroot()
    bound = {}
    for w in root.iter("widget"):
        for p in w.findall("property"):
            if p.get("name") == "SlicerParameterName":
                bound[p.findtext("string")] = w
    assert {"inputVolume", "outputSegmentation", "ctvMarginMm", "ptvMarginMm", "ptvR", "ptvI"} <= set(bound)
    for name, w in bound.items():
        assert name in fields, f"{w.get('name')} is bound to unknown parameter {name!r}"
        cls = w.get("class")
        if cls == "qMRMLNodeComboBox":
            node_types = [s.text for s in w.iter("string") if (s.text or "").startswith("vtkMRML")]
            assert fields[name] in node_types, (name, fields[name], node_types)
        else:
            assert fields[name] == expected_type[cls], (name, cls, fields[name])


# ============================================================================ Slicer names
def test_every_slicer_name_is_known() -> None:
    res = subprocess.run([sys.executable, str(_kit_script("check_slicer_names.py")), str(MODULE_DIR)],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "unknown" not in res.stdout


# ============================================================================ module structure
def test_module_classes_cmake_and_icon() -> None:
    tree = ast.parse(MODULE_PY.read_text(encoding="utf-8"))
    bases = {n.name: [ast.unparse(b) for b in n.bases] for n in tree.body if isinstance(n, ast.ClassDef)}
    assert bases["CervixTL"] == ["ScriptedLoadableModule"]
    assert bases["CervixTLWidget"] == ["ScriptedLoadableModuleWidget", "VTKObservationMixin"]
    assert "ScriptedLoadableModuleLogic" in bases["CervixTLLogic"]
    assert bases["CervixTLTest"] == ["ScriptedLoadableModuleTest"]

    cmake = (MODULE_DIR / "CMakeLists.txt").read_text(encoding="utf-8")
    assert "slicerMacroBuildScriptedModule(" in cmake and "WITH_GENERIC_TESTS" in cmake
    assert "slicer_add_python_unittest(SCRIPT ${MODULE_NAME}.py)" in cmake
    listed = set(re.findall(r"\$\{MODULE_NAME\}(Lib/\w+\.py|\.py|\.png|\.ui)", cmake))
    for py in (MODULE_DIR / "CervixTLLib").glob("*.py"):
        assert f"Lib/{py.name}" in listed, f"{py.name} missing from CMakeLists.txt"
    assert (MODULE_DIR / "Resources" / "Icons" / "CervixTL.png").is_file() and UI_FILE.is_file()
    assert "add_subdirectory(CervixTL)" in (REPO / "CMakeLists.txt").read_text(encoding="utf-8")

    png = (MODULE_DIR / "Resources" / "Icons" / "CervixTL.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")
    assert (width, height) == (128, 128)


# ============================================================================ the module file in a stand-in Slicer
def _install_slicer_stand_ins(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> types.SimpleNamespace:
    """``slicer.ScriptedLoadableModule``, ``slicer.parameterNodeWrapper``, ``slicer.i18n``, ``qt`` and
    ``slicer.app``, which exist only inside the Slicer application, as minimal stand-ins."""
    import slicer
    import slicer.util

    shown: list[str] = []

    class _Base:
        def __init__(self, *args, **kwargs) -> None:  # noqa: ANN002, ANN003
            if args and args[0] is not None:
                self.parent = args[0]

        def setup(self) -> None:
            pass

    class _Test:
        def delayDisplay(self, message: str, msec: int = 0) -> None:  # noqa: N802
            shown.append(message)

        def assertIn(self, a, b) -> None:  # noqa: ANN001, N802
            assert a in b

        def assertEqual(self, a, b) -> None:  # noqa: ANN001, N802
            assert a == b

        def assertTrue(self, a, msg: str = "") -> None:  # noqa: ANN001, N802
            assert a, msg

        def assertGreater(self, a, b) -> None:  # noqa: ANN001, N802
            assert a > b

        def skipTest(self, reason: str) -> None:  # noqa: N802
            pytest.skip(reason)

    slm = types.ModuleType("slicer.ScriptedLoadableModule")
    slm.ScriptedLoadableModule = _Base
    slm.ScriptedLoadableModuleWidget = _Base
    slm.ScriptedLoadableModuleLogic = _Base
    slm.ScriptedLoadableModuleTest = _Test
    pnw = types.ModuleType("slicer.parameterNodeWrapper")
    pnw.parameterNodeWrapper = lambda cls: cls
    pnw.Choice = lambda *a, **k: None
    pnw.WithinRange = lambda *a, **k: None
    i18n = types.ModuleType("slicer.i18n")
    i18n.tr = lambda text: text
    i18n.translate = lambda context, text: text
    qt = types.ModuleType("qt")
    for mod in (slm, pnw, i18n):
        monkeypatch.setitem(sys.modules, mod.__name__, mod)
    monkeypatch.setitem(sys.modules, "qt", qt)
    # Slicer's home with its PythonSlicer launcher (the stand-in: real interpreter as a child, no signal
    # forwarding), which engine_python() must find there
    import stand_ins

    stand_ins.python_slicer_launcher(tmp_path / "Slicer" / "bin")
    monkeypatch.delenv("CERVIXTL_PYTHON", raising=False)
    monkeypatch.setattr(slicer, "app", types.SimpleNamespace(temporaryPath=str(tmp_path), processEvents=lambda: None,
                                                             connect=lambda *a: None,
                                                             slicerHome=str(tmp_path / "Slicer")), raising=False)
    # slicer.util.createProgressDialog needs Qt: a dialog that records its label
    monkeypatch.setattr(slicer.util, "createProgressDialog", lambda **kw: types.SimpleNamespace(
        labelText=kw.get("labelText"), close=lambda: None), raising=False)
    monkeypatch.setattr(slicer.util, "errorDisplay", lambda text, **kw: shown.append(text))
    monkeypatch.syspath_prepend(str(MODULE_DIR))
    monkeypatch.delitem(sys.modules, "CervixTL", raising=False)
    return types.SimpleNamespace(shown=shown)


@pytest.mark.slicer
def test_module_imports_and_errors_are_one_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import mrml_harness

    mrml_harness.make_slicer_env()
    stand_in = _install_slicer_stand_ins(monkeypatch, tmp_path)
    import CervixTL
    from CervixTLLib.logic import ContourLogic

    assert issubclass(CervixTL.CervixTLLogic, ContourLogic)
    assert CervixTL.CervixTLParameterNode.__annotations__["inputVolume"].__name__ == "vtkMRMLScalarVolumeNode"
    CervixTL.showError("Contouring did not complete", RuntimeError("cervixtl: error: model x: not found\nTraceback"))
    assert stand_in.shown == ["Contouring did not complete:\n\ncervixtl: error: model x: not found"]
    assert set(CervixTL.EXPORT_FORMATS.values()) == {"", ".seg.nrrd", ".nii.gz"}


@pytest.mark.slicer
@pytest.mark.slow
def test_module_self_test_passes_against_real_mrml(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Runs ``CervixTLTest`` (the Slicer self-test) with the real MRML scene and engine, on the bundled demo
    model ``Resources/Models/cervixtl-demo`` (the registry is empty, so the engine falls back to it); when the
    demo model is not there, on a tiny random-weight model registered under the same name."""
    import mrml_harness

    if not (REPO / "Resources" / "Models" / "cervixtl-demo" / "model.json").is_file():
        torch = pytest.importorskip("torch")
        from cervixtl.models.networks import build_network, segresnet_card
        from cervixtl.models.package import save_package
        from cervixtl.models.registry import Registry

        torch.manual_seed(1)
        card = segresnet_card("cervixtl-demo", ["GTV", "CTV", "Bladder", "Rectum"], init_filters=4,
                              spacing_mm=(4.0, 4.0, 4.0), patch_size=(16, 32, 32))
        Registry(tmp_path / "models").add(save_package(tmp_path / "pkg", card, build_network(card).state_dict()))
    monkeypatch.setenv("CERVIXTL_MODELS_DIR", str(tmp_path / "models"))
    mrml_harness.make_slicer_env()
    import slicer

    monkeypatch.setattr(slicer.mrmlScene, "Clear", lambda *a: None, raising=False)
    stand_in = _install_slicer_stand_ins(monkeypatch, tmp_path)
    import CervixTL

    CervixTL.CervixTLTest().runTest()
    assert stand_in.shown[-1] == "CervixTL self-test passed"


# ============================================================================ screenshot
@qt_mark
def test_panel_renders_offscreen(tmp_path: Path) -> None:
    pytest.importorskip("PySide6", reason="PySide6 is not installed")
    import ui_render

    out = ui_render.render(UI_FILE, tmp_path / "panel.png", {"deviceSelector": ["auto", "cpu", "cuda"]})
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert width >= 300 and height > 500
    # the panel's first state: "per direction" is off, so the six direction sliders are not shown (issue 14)
    panel = ui_render.load_panel(UI_FILE)
    from PySide6 import QtWidgets

    for name in ("ptvRSlider", "ptvLSlider", "ptvASlider", "ptvPSlider", "ptvSSlider", "ptvISlider", "logTextEdit"):
        assert not panel.findChild(QtWidgets.QWidget, name).isVisibleTo(panel), name
    assert panel.findChild(QtWidgets.QWidget, "ptvMarginSlider").isVisibleTo(panel)
    for name in ("cancelButton", "exportButton", "saveCaseButton", "undoButton"):  # nothing running, no result
        assert not panel.findChild(QtWidgets.QWidget, name).isEnabled(), name
    assert not panel.findChild(QtWidgets.QCheckBox, "fastCheckBox").isChecked()  # until the engine finds no GPU
    # the README screenshot is that state (same size as a fresh render: no extra slider rows)
    doc = (REPO / "docs" / "cervixtl_panel.png").read_bytes()
    assert (int.from_bytes(doc[16:20], "big"), int.from_bytes(doc[20:24], "big")) == (width, height)


# ============================================================================ the panel's code paths, with fake widgets
class _Signal:
    def __init__(self) -> None:
        self.slots: list = []

    def connect(self, slot) -> None:  # noqa: ANN001
        self.slots.append(slot)


class _FakeWidget:
    """Records what the module does to a widget (text, value, enabled, items) and its signal connections."""

    def __init__(self, name: str) -> None:
        self.objectName = name
        self.enabled = True
        self.visible = True
        self.toolTip = ""
        self.text = ""
        self.value = 0
        self.items: list[tuple[str, object]] = []
        self.currentIndex = -1
        self.connections: dict[str, list] = {}

    # signals (PythonQt style: widget.connect("signal(args)", slot))
    def connect(self, signal: str, slot) -> None:  # noqa: ANN001
        self.connections.setdefault(signal, []).append(slot)

    def emit(self, signal: str, *args) -> None:  # noqa: ANN002
        for slot in self.connections.get(signal, []):
            slot(*args)

    # QLabel / QProgressBar / QAbstractButton
    def setText(self, text: str) -> None:  # noqa: N802
        self.text = text

    def setValue(self, v) -> None:  # noqa: ANN001, N802
        self.value = v

    def appendPlainText(self, text: str) -> None:  # noqa: N802 (QPlainTextEdit)
        self.text = (self.text + "\n" if self.text else "") + text

    def setMRMLScene(self, scene) -> None:  # noqa: ANN001, N802
        pass

    # QComboBox
    def clear(self) -> None:
        self.items, self.currentIndex = [], -1

    def addItem(self, text: str, data=None) -> None:  # noqa: ANN001, N802
        self.items.append((text, data))
        if self.currentIndex < 0:
            self.currentIndex = 0

    def setItemData(self, index: int, value, role=None) -> None:  # noqa: ANN001, N802
        pass

    @property
    def count(self) -> int:
        return len(self.items)

    def findText(self, text: str) -> int:  # noqa: N802
        return next((i for i, (t, _d) in enumerate(self.items) if t == text), -1)

    def findData(self, data) -> int:  # noqa: ANN001, N802
        return next((i for i, (_t, d) in enumerate(self.items) if d == data), -1)

    def itemText(self, i: int) -> str:  # noqa: N802
        return self.items[i][0]

    def itemData(self, i: int):  # noqa: ANN201, N802
        return self.items[i][1]

    def setCurrentIndex(self, i: int) -> None:  # noqa: N802
        self.currentIndex = i
        self.emit("currentIndexChanged(int)", i)

    @property
    def currentText(self) -> str:  # noqa: N802
        return self.items[self.currentIndex][0] if self.currentIndex >= 0 else ""

    @property
    def currentData(self):  # noqa: ANN201, N802
        return self.items[self.currentIndex][1] if self.currentIndex >= 0 else None

    def blockSignals(self, flag: bool) -> None:  # noqa: N802
        pass


def _fake_qt(saved: dict) -> types.ModuleType:  # noqa: C901
    qt = types.ModuleType("qt")

    class QTimer:
        def __init__(self) -> None:
            self.timeout = _Signal()
            self.active = False

        def setInterval(self, ms: int) -> None:  # noqa: N802
            pass

        def setSingleShot(self, flag: bool) -> None:  # noqa: N802
            pass

        def start(self) -> None:
            self.active = True

        def stop(self) -> None:
            self.active = False

    class QFileDialog:
        @staticmethod
        def getSaveFileName(parent, title, default, filt) -> str:  # noqa: ANN001, N802
            return saved["export_path"]

        @staticmethod
        def getExistingDirectory(parent, title) -> str:  # noqa: ANN001, N802
            return saved.get("export_dir", "")

    class QApplication:
        @staticmethod
        def setOverrideCursor(cursor) -> None:  # noqa: ANN001, N802
            pass

        @staticmethod
        def restoreOverrideCursor() -> None:  # noqa: N802
            pass

    qt.QTimer, qt.QFileDialog, qt.QApplication = QTimer, QFileDialog, QApplication
    qt.Qt = types.SimpleNamespace(WaitCursor=3, ToolTipRole=3)
    return qt


def _parameter_wrapper(cls):  # noqa: ANN001, ANN202
    """Stand-in for slicer.parameterNodeWrapper: attributes with the annotated defaults, no GUI binding."""
    defaults = {k: getattr(cls, k, None) for k in cls.__annotations__}

    shared: dict = {}

    class Wrapped:
        def __init__(self, node) -> None:  # noqa: ANN001
            # every wrapper of the (one) parameter node sees the same state, as with the real MRML node
            if not shared:
                shared.update(defaults)
                shared["_observers"] = {}
            object.__setattr__(self, "__dict__", shared)

        def __setattr__(self, name: str, value) -> None:  # noqa: ANN001
            self.__dict__[name] = value  # like the real wrapper: a change fires ModifiedEvent
            for callback in list(self._observers.values()):
                callback(self, "ModifiedEvent")

        def connectGui(self, ui) -> str:  # noqa: ANN001, N802
            return "tag"

        def disconnectGui(self, tag) -> None:  # noqa: ANN001, N802
            pass

        def AddObserver(self, event, callback, priority=0.0) -> int:  # noqa: ANN001, N802
            tag = len(self._observers) + 1
            self._observers[tag] = callback
            return tag

        def RemoveObserver(self, tag) -> None:  # noqa: ANN001, N802
            self._observers.pop(tag, None)

    Wrapped.__annotations__ = cls.__annotations__
    Wrapped.__name__ = cls.__name__
    return Wrapped


@pytest.mark.slicer
@pytest.mark.slow
def test_panel_propose_margins_export_and_save_case(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The widget's own code (CervixTLWidget) driven like a user: Propose (polled by the timer), move a margin
    (live preview), Apply, Revert, Export .seg.nrrd, Save case, and an engine error shown as one line.
    Qt widgets are fakes built from the object names in the .ui; the MRML scene and the engine are real."""
    torch = pytest.importorskip("torch")
    import mrml_harness
    import numpy as np

    from cervixtl.io import read_segmentation
    from cervixtl.models.networks import build_network, segresnet_card
    from cervixtl.models.package import save_package
    from cervixtl.models.registry import Registry
    from cervixtl.phantom import make_phantom

    bundled = (REPO / "Resources" / "Models" / "cervixtl-demo" / "model.json").is_file()
    if not bundled:  # a random-weight stand-in under the demo model's name
        torch.manual_seed(2)
        card = segresnet_card("cervixtl-demo", ["GTV", "CTV", "Bladder", "Rectum"], init_filters=4,
                              spacing_mm=(4.0, 4.0, 4.0), patch_size=(16, 32, 32))
        Registry(tmp_path / "models").add(save_package(tmp_path / "pkg", card, build_network(card).state_dict()))
    monkeypatch.setenv("CERVIXTL_MODELS_DIR", str(tmp_path / "models"))
    monkeypatch.setenv("CERVIXTL_CASES_DIR", str(tmp_path / "cases"))
    env = mrml_harness.make_slicer_env()
    stand_in = _install_slicer_stand_ins(monkeypatch, tmp_path)
    saved = {"export_path": str(tmp_path / "export" / "contours")}
    (tmp_path / "export").mkdir()
    monkeypatch.setitem(sys.modules, "qt", _fake_qt(saved))
    sys.modules["slicer.parameterNodeWrapper"].parameterNodeWrapper = _parameter_wrapper
    import slicer
    import slicer.util

    ui = types.SimpleNamespace(**{name: _FakeWidget(name) for name in _ui_names()})
    monkeypatch.setattr(slicer.util, "loadUI", lambda path: _FakeWidget("CervixTL"), raising=False)
    monkeypatch.setattr(slicer.util, "childWidgetVariables", lambda w: ui, raising=False)
    monkeypatch.setattr(slicer.util, "confirmOkCancelDisplay", lambda *a, **k: True, raising=False)
    monkeypatch.setattr(slicer.util, "setSliceViewerLayers", lambda *a, **k: None, raising=False)

    import CervixTL

    class Widget(CervixTL.CervixTLWidget):
        def __init__(self) -> None:
            CervixTL.CervixTLWidget.__init__(self)
            self.layout = types.SimpleNamespace(addWidget=lambda w: None)
            self.parent = types.SimpleNamespace(isEntered=True)

        def resourcePath(self, p: str) -> str:  # noqa: N802
            return str(MODULE_DIR / "Resources" / p)

    CervixTL.ScriptedLoadableModuleLogic.getParameterNode = lambda self: None
    ct, _truth = make_phantom(4, spacing=(5.0, 5.0, 5.0), size=(160, 140, 100))
    from CervixTLLib.geometry import ijk_to_ras_from_grid

    vol = slicer.util.addVolumeFromArray(ct.array.astype(np.int16),
                                         ijk_to_ras_from_grid(ct.spacing, ct.origin, ct.direction), "CT")
    w = Widget()
    w.setup()
    p = w._parameterNode
    assert p.inputVolume is vol  # the first volume of the scene is picked
    assert ui.proposeButton.enabled and not ui.saveCaseButton.enabled
    assert [t for t, _ in ui.exportFormatSelector.items] == list(CervixTL.EXPORT_FORMATS)

    def pump(timeout_s: float = 300) -> None:
        import time

        t0 = time.monotonic()
        while w._pollTimer.active:
            w.onPoll()
            time.sleep(0.05)
            assert time.monotonic() - t0 < timeout_s

    assert not p.fast  # 'Fast' is off until the engine says there is no GPU
    w.enter()  # first entry: devices and models asked from the engine, in the background
    assert ui.deviceInfoLabel.text == "Looking for a GPU…"
    pump()
    assert ui.deviceInfoLabel.text.startswith("No CUDA GPU found") and p.fast  # (this machine has no GPU)
    if bundled:
        # the catalogue (Resources/Models.json) offers the demo model; Download imports it, SHA-256 verified
        assert ui.catalogueSelector.currentData == "cervixtl-demo"
        assert [t for t, _ in ui.modelSelector.items] == ["active default model", "cervixtl-demo@1 * (bundled)"]
        w.onDownloadModel()
        pump()
        pump()  # the model list is refreshed after the import
        assert (tmp_path / "models" / "cervixtl-demo" / "1" / "weights.safetensors").is_file(), stand_in.shown
    assert "cervixtl-demo@1 *" in [t for t, _ in ui.modelSelector.items], (ui.modelSelector.items, stand_in.shown)

    ui.deviceSelector.setCurrentIndex(ui.deviceSelector.findText("cpu"))
    assert p.device == "cpu"
    p.ptvMarginMm = 3.0
    w.onProposeButton()
    assert w._job is not None and ui.cancelButton.enabled and not ui.proposeButton.enabled
    pump()
    assert w._job is None and ui.progressBar.value == 100, stand_in.shown
    seg = p.outputSegmentation
    assert seg is not None and seg.GetName() == "CT CervixTL"
    assert ui.saveCaseButton.enabled and ui.editButton.enabled
    assert p.ptvMarginMm == 7.0 and not p.ptvAnisotropic  # the protocol margin of the model card is shown

    from CervixTLLib import nodes

    ptv_before = nodes.segment_mask(seg, nodes.find_segment_id(seg, "PTV"), vol)
    p.ptvMarginMm = 15.0
    w.onMarginChanged()
    assert w._previewTimer.active
    w.updateMarginPreview()  # what the single-shot timer calls
    assert ui.marginInfoLabel.text.startswith("CTV "), ui.marginInfoLabel.text
    grown = nodes.segment_mask(seg, nodes.find_segment_id(seg, "PTV"), vol)
    assert grown.sum() >= ptv_before.sum()
    w.onRevertMargins()
    assert np.array_equal(nodes.segment_mask(seg, nodes.find_segment_id(seg, "PTV"), vol), ptv_before)
    p.ptvAnisotropic = True
    p.ptvR = 12.0
    w.onApplyMargins()
    assert w._preview is None

    ui.exportFormatSelector.setCurrentIndex(ui.exportFormatSelector.findText("Slicer segmentation (.seg.nrrd)"))
    w.onExportButton()
    exported = read_segmentation(tmp_path / "export" / "contours.seg.nrrd")
    assert {"GTV", "CTV", "PTV"} <= set(exported.names)

    w.onSaveCaseButton()
    assert ui.statusLabel.text.startswith("Saved as case-"), (ui.statusLabel.text, stand_in.shown)

    # an engine error: a one-line message box, no new node in the scene
    # (a job whose engine command fails at once, instead of a second slow contouring run)
    from CervixTLLib.engine import EngineProcess
    from CervixTLLib.logic import ContourJob

    n_nodes = env.scene.GetNumberOfNodes()
    missing = tmp_path / "no-such-ct.nrrd"
    w._job = ContourJob(EngineProcess(["info", str(missing)]), tmp_path / "job", tmp_path / "job" / "out.seg.nrrd",
                        tmp_path / "job" / "summary.json", vol)
    w._pollTimer.start()
    pump()
    assert env.scene.GetNumberOfNodes() == n_nodes and p.outputSegmentation is seg
    assert stand_in.shown[-1].startswith("Contouring did not complete:") and "no-such-ct.nrrd" in stand_in.shown[-1]
    assert "Traceback" not in stand_in.shown[-1] and stand_in.shown[-1].count("\n") == 2
    w.cleanup()


# ============================================================================ issue 14 defect 3: first-use install
def test_engine_requirements_come_from_pyproject_not_a_copied_list() -> None:
    import tomllib

    sys.path.insert(0, str(MODULE_DIR))
    from CervixTLLib import deps

    declared = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]["dependencies"]
    assert deps.engine_requirements() == declared
    assert {"scikit-image", "einops", "psutil", "highdicom", "torch"} <= {deps._name(r) for r in declared}
    assert not hasattr(deps, "ENGINE_REQUIREMENTS")  # (the old hand-copied list)
    # Python 3.10 has no tomllib: the fallback reads the same list
    assert deps._pyproject_dependencies.__code__  # noqa: B018
    import builtins

    real_import = builtins.__import__

    def no_tomllib(name, *a, **k):  # noqa: ANN001, ANN002, ANN003, ANN202
        if name == "tomllib":
            raise ImportError(name)
        return real_import(name, *a, **k)

    builtins.__import__ = no_tomllib
    try:
        assert deps.engine_requirements() == declared
    finally:
        builtins.__import__ = real_import


def test_install_plan_keeps_slicers_packages_and_routes_torch() -> None:
    sys.path.insert(0, str(MODULE_DIR))
    from CervixTLLib import deps

    rows = [{"requirement": "torch>=2.4,<2.15", "name": "torch", "installed": None, "ok": False},
            {"requirement": "pydicom>=2.4,<4", "name": "pydicom", "installed": "2.4.4", "ok": True},
            {"requirement": "highdicom>=0.23,<1", "name": "highdicom", "installed": None, "ok": False},
            {"requirement": "monai>=1.4,<1.7", "name": "monai", "installed": "1.3.0", "ok": False},
            {"requirement": "SimpleITK>=2.3,<3", "name": "SimpleITK", "installed": "2.2.1", "ok": False},
            {"requirement": "einops>=0.7,<1", "name": "einops", "installed": "0.8.0", "ok": True},
            {"requirement": "numpy>=1.24,<3", "name": "numpy", "installed": None, "present": True, "ok": False}]
    plan = deps.plan_install(rows)  # (numpy built with Slicer, without metadata: left alone, not re-installed)
    assert plan.torch == "torch>=2.4,<2.15"
    assert plan.pip == ["highdicom>=0.23,<1", "monai>=1.4,<1.7"]  # version-checked, not only "present"
    assert plan.constraints == ["pydicom==2.4.4", "SimpleITK==2.2.1"]  # highdicom cannot upgrade Slicer's pydicom
    assert plan.conflicts == ["SimpleITK>=2.3,<3 (Slicer has SimpleITK 2.2.1)"]
    installed = deps.plan_install([dict(rows[0], installed="2.6.0", ok=True)])
    assert installed.torch is None and installed.constraints == ["torch==2.6.0"] and not installed.needed
    before = [{"name": "pydicom", "installed": "2.4.4"}, {"name": "einops", "installed": None}]
    after = [{"name": "pydicom", "installed": "3.0.1"}, {"name": "einops", "installed": "0.8.0"}]
    assert deps.loaded_and_changed(before, after, loaded=["pydicom.dataset", "qt"]) == ["pydicom"]
    assert deps.loaded_and_changed(before, after, loaded=["qt"]) == []
    assert deps.python_supported((3, 12, 0)) and not deps.python_supported((3, 9, 10))
    assert "Slicer 5.10 or later" in deps.unsupported_text((3, 9, 10)) and "Python 3.9" in deps.unsupported_text((3, 9))


class _InstallUI:
    def __init__(self, answers: list) -> None:
        self.answers, self.asked, self.errors, self.busy_texts, self.restarted = answers, [], [], [], False

    def confirm(self, text: str) -> bool:
        self.asked.append(text)
        return self.answers.pop(0)

    def error(self, text: str, details: str = "") -> None:
        self.errors.append((text, details))

    def busy(self, text: str):  # noqa: ANN201
        import contextlib

        self.busy_texts.append(text)
        return contextlib.nullcontext()

    def ask_restart(self, text: str) -> bool:
        self.asked.append(text)
        return True

    def restart(self) -> None:
        self.restarted = True


def test_first_use_install_checks_versions_in_a_subprocess_and_pins_slicers_packages(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The real version check (a subprocess of this Python); pip is a stand-in that 'installs' by writing the
    package's metadata where that subprocess finds it; its command must carry the constraints file."""
    import importlib.metadata

    sys.path.insert(0, str(MODULE_DIR))
    import stand_ins

    from CervixTLLib import deps

    site = tmp_path / "site"
    site.mkdir()
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]))
    numpy_version = importlib.metadata.version("numpy")
    calls: list = []

    def pip(cmd):  # noqa: ANN001, ANN202
        constraints = Path(cmd[cmd.index("-c") + 1]).read_text()
        calls.append((cmd, constraints))
        dist = site / "cervixtl_fake_pkg-1.2.dist-info"
        dist.mkdir()
        (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: cervixtl-fake-pkg\nVersion: 1.2\n")
        return 0, "Successfully installed cervixtl-fake-pkg-1.2"

    reqs = ["numpy>=1.24,<3", "cervixtl-fake-pkg>=1.0"]
    ui = _InstallUI([False])
    assert deps.ensure_installed(ui, None, requirements=reqs, pip_runner=pip) is False  # declined: nothing done
    assert calls == [] and "cervixtl-fake-pkg>=1.0" in ui.asked[0] and "numpy>=" not in ui.asked[0]
    ui = _InstallUI([True])
    assert deps.ensure_installed(ui, None, requirements=reqs, pip_runner=pip) is True, ui.errors
    (cmd, constraints), = calls
    assert cmd[1:4] == ["-m", "pip", "install"] and "cervixtl-fake-pkg>=1.0" in cmd and "numpy>=1.24,<3" not in cmd
    assert f"numpy=={numpy_version}" in constraints.split()
    assert ui.busy_texts == ["Checking CervixTL's Python packages…", "Installing cervixtl-fake-pkg…"]
    assert not ui.restarted  # nothing Slicer had imported changed
    # once installed: nothing is asked any more
    ui = _InstallUI([])
    assert deps.ensure_installed(ui, None, requirements=reqs, pip_runner=pip) is True and ui.asked == []

    # a failing pip: its whole log in the error dialog's details
    ui = _InstallUI([True])
    log = "ERROR: Could not find a version that satisfies the requirement cervixtl-other>=9"
    assert deps.ensure_installed(ui, None, requirements=["cervixtl-other>=9"], pip_runner=lambda c: (1, log)) is False
    assert ui.errors[-1][1] == log and "pip's log" in ui.errors[-1][0]

    # torch goes to the PyTorch extension with the engine's range, asking the user there
    torch_logic = stand_ins.PyTorchUtilsLogic(accept=False)
    ui = _InstallUI([True])
    assert deps.ensure_installed(ui, torch_logic, requirements=["torch>=99"], pip_runner=pip) is False
    assert torch_logic.calls == [{"askConfirmation": True, "torchVersionRequirement": ">=99"}]
    assert ui.errors[-1][0].startswith("PyTorch was not installed")
    ui = _InstallUI([True])
    assert deps.ensure_installed(ui, None, requirements=["torch>=99"], pip_runner=pip) is False
    assert "PyTorch' extension" in ui.errors[-1][0] and len(calls) == 1  # pip never installs torch


@pytest.mark.slicer
def test_first_use_install_from_the_widget(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The widget hands Slicer's dialogs and the PyTorch extension's logic to the installer."""
    import mrml_harness

    mrml_harness.make_slicer_env()
    stand_in = _install_slicer_stand_ins(monkeypatch, tmp_path)
    import stand_ins

    import CervixTL
    from CervixTLLib import deps

    seen: dict = {}

    def fake_ensure(ui, torch_logic, **kw):  # noqa: ANN001, ANN003, ANN202
        seen["ui"], seen["torch"] = ui, torch_logic
        return True

    monkeypatch.setattr(deps, "ensure_installed", fake_ensure)
    pytorch = types.ModuleType("PyTorchUtils")
    pytorch.PyTorchUtilsLogic = stand_ins.PyTorchUtilsLogic
    monkeypatch.setitem(sys.modules, "PyTorchUtils", pytorch)
    widget = CervixTL.CervixTLWidget.__new__(CervixTL.CervixTLWidget)
    widget.showDevices = lambda: seen.setdefault("devices", True)
    assert widget.ensureEngineDependencies() is True and seen["devices"]
    assert isinstance(seen["ui"], CervixTL.SlicerInstallUI) and isinstance(seen["torch"], stand_ins.PyTorchUtilsLogic)
    monkeypatch.setattr(deps, "ensure_installed", lambda ui, t, **k: (_ for _ in ()).throw(RuntimeError("boom")))
    assert widget.ensureEngineDependencies() is False
    assert stand_in.shown[-1].startswith("Cannot check CervixTL's Python packages")


# ============================================================================ issue 14 defect 4: no torch in Slicer's process
def build_panel(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> types.SimpleNamespace:
    """The CervixTL widget on the real MRML scene with fake Qt widgets (names from the .ui), set up as Slicer
    does (``setup()``); ``pump()`` runs its poll timer until idle."""
    import time

    import mrml_harness

    mrml_harness.make_slicer_env()
    stand_in = _install_slicer_stand_ins(monkeypatch, tmp_path)
    monkeypatch.setitem(sys.modules, "qt", _fake_qt({}))
    sys.modules["slicer.parameterNodeWrapper"].parameterNodeWrapper = _parameter_wrapper
    import slicer
    import slicer.util

    ui = types.SimpleNamespace(**{name: _FakeWidget(name) for name in _ui_names()})
    monkeypatch.setattr(slicer.util, "loadUI", lambda path: _FakeWidget("CervixTL"), raising=False)
    monkeypatch.setattr(slicer.util, "childWidgetVariables", lambda w: ui, raising=False)
    import CervixTL

    class Widget(CervixTL.CervixTLWidget):
        def __init__(self) -> None:
            CervixTL.CervixTLWidget.__init__(self)
            self.layout = types.SimpleNamespace(addWidget=lambda w: None)
            self.parent = types.SimpleNamespace(isEntered=True)

        def resourcePath(self, p: str) -> str:  # noqa: N802
            return str(MODULE_DIR / "Resources" / p)

    CervixTL.ScriptedLoadableModuleLogic.getParameterNode = lambda self: None
    w = Widget()
    w.setup()

    def pump(timeout_s: float = 300) -> None:
        t0 = time.monotonic()
        while w._pollTimer.active:
            w.onPoll()
            time.sleep(0.05)
            assert time.monotonic() - t0 < timeout_s

    return types.SimpleNamespace(widget=w, ui=ui, shown=stand_in.shown, pump=pump, module=CervixTL)


_TORCH_FREE = r"""
import json, sys
from pathlib import Path
sys.path[:0] = [{here!r}]
import pytest
import test_cervixtl_ui as t
panel = t.build_panel(pytest.MonkeyPatch(), Path(sys.argv[1]))
after_setup = "torch" in sys.modules
panel.widget.enter()
panel.pump()
print(json.dumps({{"after_setup": after_setup, "after_enter": "torch" in sys.modules,
                  "device": panel.ui.deviceInfoLabel.text, "catalogue": panel.ui.catalogueSelector.items,
                  "models": [x[0] for x in panel.ui.modelSelector.items]}}))
"""


@pytest.mark.slicer
def test_panel_setup_and_entry_never_import_torch_in_slicers_process(tmp_path: Path) -> None:
    """Defect 4: the model catalogue, the device probe and the model list come from the engine (its
    torch-free catalogue reader, ``cervixtl devices --json``, ``models list --json``); Slicer's process never
    imports torch (a fresh interpreter, so that no other test's import hides one)."""
    import json
    import os

    script = tmp_path / "panel.py"
    script.write_text(_TORCH_FREE.format(here=str(Path(__file__).resolve().parent)), encoding="utf-8")
    env = {**os.environ, "CERVIXTL_MODELS_DIR": str(tmp_path / "models"), "PYTHONPATH": os.pathsep.join(
        [str(REPO), os.environ.get("PYTHONPATH", "")])}
    res = subprocess.run([sys.executable, str(script), str(tmp_path)], capture_output=True, text=True, timeout=300,
                         env=env, cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["after_setup"] is False and out["after_enter"] is False
    assert out["device"].startswith(("No CUDA GPU found", "GPU found")), out
    if (REPO / "Resources" / "Models.json").is_file():  # the catalogue's names, read without torch
        names = [m["name"] for m in json.loads((REPO / "Resources" / "Models.json").read_text())["models"]
                     if m.get("offered_by_default", True)]  # non-commercial entries are listed only on request
        assert [d for _t, d in out["catalogue"]] == names and "cervixtl-demo" in names
    assert out["models"][0] == "active default model"


def test_reload_reloads_the_lib_packages() -> None:
    """Defect 11: Reload re-reads the Lib packages too (Slicer's own Reload re-reads only the module file)."""
    sys.path.insert(0, str(MODULE_DIR))
    from CervixTLLib import contract, ui

    contract.CANCELLED_TEXT = "edited in memory"
    reloaded = ui.reloadPackages(["CervixTLLib"])
    assert "CervixTLLib.contract" in reloaded and reloaded[-1] == "CervixTLLib"
    assert sys.modules["CervixTLLib.contract"].CANCELLED_TEXT.startswith("Stopped on request")
    for path, packages in ((MODULE_PY, "('CervixTLLib',)"),
                           (REPO / "CervixTLTraining" / "CervixTLTraining.py", "('CervixTLTrainingLib', 'CervixTLLib')")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        widget = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name.endswith("Widget"))
        reload = next(f for f in widget.body if isinstance(f, ast.FunctionDef) and f.name == "onReload")
        text = ast.unparse(reload)
        assert f"reloadPackages({packages})" in text and "ScriptedLoadableModuleWidget.onReload(self)" in text


# ============================================================================ issue 14: what a clinician expects
@pytest.mark.slicer
def test_undo_show_3d_and_log_box(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Applied margins are undoable (Undo puts back the segments as they were before the preview); Show 3D
    makes closed surfaces; the log box gets the engine's lines."""
    import numpy as np

    pytest.importorskip("cervixtl.margins")
    panel = build_panel(monkeypatch, tmp_path)
    w, ui = panel.widget, panel.ui
    import mrml_harness
    import slicer

    env = types.SimpleNamespace(scene=slicer.mrmlScene)
    shape = (20, 30, 40)
    vol = mrml_harness.add_volume(env, np.zeros(shape, np.int16), spacing_xyz=(2.0, 2.0, 3.0), name="CT")
    gtv = np.zeros(shape, bool)
    gtv[8:12, 12:18, 15:25] = True
    ctv = np.zeros(shape, bool)
    ctv[6:14, 10:20, 12:28] = True
    seg = mrml_harness.add_segmentation(env, vol, {"GTV": gtv, "CTV": ctv, "PTV": ctv.copy()}, name="contours")
    from CervixTLLib import nodes

    p = w._parameterNode
    p.inputVolume, p.outputSegmentation = vol, seg
    w.updateGUIFromParameterNode()
    assert not ui.undoButton.enabled  # nothing to undo yet
    before = nodes.segment_mask(seg, nodes.find_segment_id(seg, "PTV"), vol)
    p.ptvMarginMm = 6.0
    w.updateMarginPreview()
    w.onApplyMargins()
    grown = nodes.segment_mask(seg, nodes.find_segment_id(seg, "PTV"), vol)
    assert grown.sum() > before.sum() and ui.undoButton.enabled
    w.onUndo()
    assert np.array_equal(nodes.segment_mask(seg, nodes.find_segment_id(seg, "PTV"), vol), before)
    assert not ui.undoButton.enabled and ui.statusLabel.text.startswith("Undone")

    w.onShow3D(True)
    assert seg.GetSegmentation().ContainsRepresentation("Closed surface") and seg.GetDisplayNode().GetVisibility3D()
    w.onShow3D(False)
    assert not seg.GetDisplayNode().GetVisibility3D()

    w.showDevices()
    panel.pump()
    assert "$ cervixtl devices --json" in ui.logTextEdit.text


def test_sample_data_and_terminology_are_registered_at_startup(tmp_path: Path) -> None:
    """The phantom CT for Sample Data (stand-in enforcing the real registerCustomSampleDataSource's rules:
    parallel lists, ``SHA256:<digest>`` checksums that the downloaded file must match) and the terminology for
    the Terminologies module (stand-in: LoadTerminologyFromFile returns the file's context name)."""
    import hashlib
    import json
    import urllib.request

    sys.path.insert(0, str(MODULE_DIR))
    from CervixTLLib import startup

    registered: list[dict] = []

    class SampleDataLogic:
        @staticmethod
        def registerCustomSampleDataSource(category="Custom", sampleName=None, uris=None, fileNames=None,  # noqa: N802, N803
                                           nodeNames=None, customDownloader=None, thumbnailFileName=None,  # noqa: N803
                                           loadFileTypes=None, loadFiles=None, loadFileProperties={},  # noqa: B006, N803
                                           checksums=None, loadFileType=None):  # noqa: N803
            assert len(uris) == len(fileNames) == len(nodeNames) == len(checksums) == len(loadFileTypes)
            for uri, checksum in zip(uris, checksums):
                algo, digest = checksum.split(":")
                assert algo == "SHA256" and len(digest) == 64
                with urllib.request.urlopen(uri) as f:  # what SampleData's download does with the URI
                    assert hashlib.sha256(f.read()).hexdigest() == digest
            registered.append({"category": category, "name": sampleName, "uris": uris, "nodes": nodeNames})

    source = startup.register_sample_data(SampleDataLogic)
    assert registered and registered[0]["category"] == "CervixTL" and source["uris"][0].startswith("file://")
    assert Path(source["thumbnailFileName"]).is_file()

    class TerminologiesLogic:
        def LoadTerminologyFromFile(self, path: str) -> str:  # noqa: N802
            return json.loads(Path(path).read_text(encoding="utf-8"))["SegmentationCategoryTypeContextName"]

    assert startup.register_terminology(TerminologiesLogic()).startswith("Segmentation category and type - CervixTL")

    class Refusing:
        def LoadTerminologyFromFile(self, path: str) -> str:  # noqa: N802
            return ""

    with pytest.raises(RuntimeError, match="could not load CervixTL.term.json"):
        startup.register_terminology(Refusing())


@pytest.mark.slicer
def test_the_sample_ct_is_a_pelvic_ct(slicer_env) -> None:  # noqa: ANN001
    """The registered sample loads into a real volume node: HU from air to bone on a 4 x 4 x 5 mm grid."""
    import numpy as np
    import slicer.util

    path = REPO / "Resources" / "SampleData" / "CervixTLPhantomCT.nrrd"
    node = slicer_env.scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "sample")
    storage = slicer_env.scene.AddNewNodeByClass("vtkMRMLVolumeArchetypeStorageNode")
    storage.SetFileName(str(path))
    assert storage.ReadData(node)
    arr = slicer.util.arrayFromVolume(node)
    assert arr.min() <= -1000 and arr.max() >= 300 and np.allclose(node.GetSpacing(), (4.0, 4.0, 5.0))


@pytest.mark.slicer
def test_errors_show_one_line_and_the_engine_log_under_details(monkeypatch: pytest.MonkeyPatch,
                                                               tmp_path: Path) -> None:
    """Defect 11: the message is one line; the engine's whole stderr is in the dialog's details."""
    import mrml_harness

    mrml_harness.make_slicer_env()
    _install_slicer_stand_ins(monkeypatch, tmp_path)
    import slicer.util

    calls: list = []
    monkeypatch.setattr(slicer.util, "errorDisplay", lambda text, **kw: calls.append((text, kw)))
    sys.path.insert(0, str(MODULE_DIR))
    from CervixTLLib.ui import showError

    log = "loading model\nsliding window 3/8\ncervixtl: error: out of memory on cuda:0"
    showError("Contouring did not complete", RuntimeError("out of memory on cuda:0"), details=log)
    (text, kw), = calls
    assert text == "Contouring did not complete:\n\nout of memory on cuda:0"
    assert kw["detailedText"] == log and kw["windowTitle"] == "CervixTL"
