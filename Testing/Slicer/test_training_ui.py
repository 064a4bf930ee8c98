"""CervixTLTraining module without Slicer: the .ui loads with real Qt (PySide6) without warnings, every widget
and parameter the code uses exists in it, every ``slicer.*`` name passes the Slicer API name checker, and the
panel renders offscreen (the screenshot in ``docs/``).

Run ``python Testing/Slicer/test_training_ui.py --screenshot docs/cervixtl_training_panel.png`` to refresh the
screenshot.
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

REPO = Path(__file__).resolve().parents[2]
MODULE_DIR = REPO / "CervixTLTraining"
MODULE_PY = MODULE_DIR / "CervixTLTraining.py"
UI_FILE = MODULE_DIR / "Resources" / "UI" / "CervixTLTraining.ui"
ICON = MODULE_DIR / "Resources" / "Icons" / "CervixTLTraining.png"
KIT = REPO.parent / "shared" / "slicer_api"

#: Stand-ins for Slicer/CTK widgets when rendering the screenshot (close in look to the real ones).
SCREENSHOT_STANDINS = {"ctkCollapsibleButton": "QGroupBox", "qMRMLNodeComboBox": "QComboBox",
                       "qMRMLTableView": "QTableView", "qMRMLWidget": "QWidget"}


def ui_object_names() -> set[str]:
    """objectName of every widget, layout and spacer in the .ui."""
    root = ET.parse(UI_FILE).getroot()
    return {e.get("name") for tag in ("widget", "layout", "spacer") for e in root.iter(tag) if e.get("name")}


def ui_parameter_names() -> dict[str, str]:
    """widget name -> SlicerParameterName for every widget bound to the parameter node."""
    out = {}
    for w in ET.parse(UI_FILE).getroot().iter("widget"):
        for p in w.findall("property"):
            if p.get("name") == "SlicerParameterName":
                out[w.get("name")] = p.findtext("string")
    return out


def parameter_node_fields() -> dict[str, str]:
    """Field name -> annotation source of the module's parameterNodeWrapper class."""
    tree = ast.parse(MODULE_PY.read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == "CervixTLTrainingParameterNode":
            return {st.target.id: ast.unparse(st.annotation) for st in node.body
                    if isinstance(st, ast.AnnAssign) and isinstance(st.target, ast.Name)}
    raise AssertionError("CervixTLTrainingParameterNode not found")


def test_every_ui_name_used_by_the_code_exists() -> None:
    used = set(re.findall(r"self\.ui\.(\w+)", MODULE_PY.read_text(encoding="utf-8")))
    names = ui_object_names()
    assert used, "the module uses no self.ui widgets?"
    missing = sorted(used - names)
    assert not missing, f"widgets used in CervixTLTraining.py but absent from the .ui: {missing}"
    # getattr(self.ui, name) in setBusy
    busy = re.search(r'for name in \(([^)]*)\):\s*\n\s*getattr\(self\.ui, name\)', MODULE_PY.read_text())
    assert busy
    dyn = set(re.findall(r'"(\w+)"', busy.group(1)))
    assert dyn <= names, f"setBusy names absent from the .ui: {sorted(dyn - names)}"


def test_bound_widgets_match_parameter_node_fields() -> None:
    fields = parameter_node_fields()
    bound = ui_parameter_names()
    assert len(bound) >= 12
    unknown = {w: p for w, p in bound.items() if p not in fields}
    assert not unknown, f".ui widgets bound to parameters the parameter node does not have: {unknown}"
    # Choice lists in the code must equal the combo box items in the .ui (the GUI connector requires it).
    root = ET.parse(UI_FILE).getroot()
    for w in root.iter("widget"):
        if w.get("class") != "QComboBox" or w.get("name") not in bound:
            continue
        items = [i.findtext("property/string") for i in w.findall("item")]
        ann = fields[bound[w.get("name")]]
        choices = re.search(r"Choice\((\[.*?\])\)", ann)
        assert choices, f"{w.get('name')} is bound to {bound[w.get('name')]} which has no Choice annotation"
        assert items == ast.literal_eval(choices.group(1)), (w.get("name"), items, ann)


def test_module_source_compiles_and_has_the_four_classes() -> None:
    tree = ast.parse(MODULE_PY.read_text(encoding="utf-8"))
    classes = {n.name for n in tree.body if isinstance(n, ast.ClassDef)}
    for c in ("CervixTLTraining", "CervixTLTrainingWidget", "CervixTLTrainingLogic", "CervixTLTrainingTest",
              "CervixTLTrainingParameterNode"):
        assert c in classes


def test_cmake_lists_every_lib_file_and_resource() -> None:
    cmake = (MODULE_DIR / "CMakeLists.txt").read_text(encoding="utf-8")
    for py in sorted((MODULE_DIR / "CervixTLTrainingLib").glob("*.py")):
        assert f"${{MODULE_NAME}}Lib/{py.name}" in cmake, f"{py.name} is not installed by CMakeLists.txt"
    assert "WITH_GENERIC_TESTS" in cmake and "slicer_add_python_unittest" in cmake


def test_icon_is_128_png() -> None:
    data = ICON.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert (width, height) == (128, 128)


@pytest.mark.qt
def test_slicer_names_pass_the_checker() -> None:
    checker = KIT / "check_slicer_names.py"
    if not checker.exists():
        pytest.skip(f"Slicer API kit not found at {KIT}")
    proc = subprocess.run([sys.executable, str(checker), str(MODULE_DIR)], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "unknown" not in proc.stdout


@pytest.mark.qt
def test_ui_loads_with_pyside6_without_warnings() -> None:
    pytest.importorskip("PySide6", reason="PySide6 is not installed")
    checker = KIT / "check_ui_qt.py"
    if not checker.exists():
        pytest.skip(f"Slicer API kit not found at {KIT}")
    proc = subprocess.run([sys.executable, str(checker), str(UI_FILE)], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "QT_QPA_PLATFORM": "offscreen"})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "1/1 .ui files loaded cleanly" in proc.stdout
    loaded = {ln.strip() for ln in proc.stdout.splitlines()[1:] if ln.startswith("    ")}
    used = set(re.findall(r"self\.ui\.(\w+)", MODULE_PY.read_text(encoding="utf-8")))
    assert used <= loaded, f"widgets not created by QUiLoader: {sorted(used - loaded)}"


# ------------------------------------------------------------------------------------------- screenshot
def standin_ui_xml() -> bytes:
    """The .ui with Slicer widgets replaced by look-alike Qt widgets (collapsible button -> group box with
    its title, node combo box -> combo box, MRML table view -> table view)."""
    root = ET.parse(UI_FILE).getroot()
    for w in root.iter("widget"):
        cls = w.get("class")
        if cls in SCREENSHOT_STANDINS:
            w.set("class", SCREENSHOT_STANDINS[cls])
            for p in list(w.findall("property")):
                name = p.get("name")
                if cls == "ctkCollapsibleButton" and name == "text":
                    p.set("name", "title")
                elif name not in ("toolTip", "minimumSize", "maximumSize", "geometry", "selectionBehavior",
                                  "editTriggers"):
                    w.remove(p)
    for parent in root.iter():
        for child in list(parent):
            if child.tag in ("customwidgets", "connections"):
                parent.remove(child)
    return ET.tostring(root, encoding="utf-8")


SAMPLE_ROWS = {
    "casesTableView": (["Case ID", "Added", "Site", "Structures", "CTV Dice proposal vs final"],
                       [["c-3f9a1e", "2026-11-20", "siteB", "GTV, CTV, PTV, Bladder, Rectum", "0.912"],
                        ["c-7b21d4", "2026-11-21", "siteB", "GTV, CTV, PTV, Bladder, Rectum", "0.874"],
                        ["c-a0c65f", "2026-11-22", "siteB", "GTV, CTV, PTV, Bladder, Rectum", "0.951"]]),
    "compareTableView": (["Structure", "n", "Dice source", "Dice new", "Wilcoxon p", "Result"],
                         [["GTV", "6", "0.71", "0.73", "0.44", "no significant change"],
                          ["CTV", "6", "0.74", "0.81", "0.031", "better"],
                          ["PTV", "6", "0.78", "0.85", "0.031", "better"]]),
    "versionsTableView": (["Model", "Active", "Parent", "Cases used", "Freeze", "Created"],
                          [["cervixtl-demo@1", "", "(none)", "24", "none", "2026-11-01"],
                           ["cervixtl-site@1", "yes", "cervixtl-demo@1", "6", "encoder", "2026-11-22"]]),
}


def render_panel(out_png: str | os.PathLike, width: int = 460) -> Path:
    """Render the panel offscreen to ``out_png`` (sample rows in the tables, as after a run)."""
    from PySide6 import QtCore, QtGui, QtWidgets
    from PySide6.QtUiTools import QUiLoader

    app = QtWidgets.QApplication.instance() or QtWidgets.QApplication(["render"])
    buf = QtCore.QBuffer()
    buf.setData(QtCore.QByteArray(standin_ui_xml()))
    buf.open(QtCore.QIODevice.ReadOnly)
    panel = QUiLoader().load(buf)
    buf.close()
    assert panel is not None
    for view_name, (header, rows) in SAMPLE_ROWS.items():
        view = panel.findChild(QtWidgets.QTableView, view_name)
        model = QtGui.QStandardItemModel(len(rows), len(header), view)
        model.setHorizontalHeaderLabels(header)
        for r, row in enumerate(rows):
            for c, value in enumerate(row):
                model.setItem(r, c, QtGui.QStandardItem(value))
        view.setModel(model)
        view.resizeColumnsToContents()
        view.verticalHeader().setVisible(False)
    for name, text in (("sourceModelComboBox", "cervixtl-demo@1"), ("compareNewComboBox", "cervixtl-site@1"),
                       ("compareSourceComboBox", "cervixtl-demo@1"), ("inputVolumeSelector", "Pelvis CT"),
                       ("finalSegmentationSelector", "CervixTL contours"),
                       ("proposalSegmentationSelector", "CervixTL proposal")):
        panel.findChild(QtWidgets.QComboBox, name).addItem(text)
    panel.findChild(QtWidgets.QLineEdit, "newModelNameLineEdit").setText("cervixtl-site")
    panel.findChild(QtWidgets.QProgressBar, "progressBar").setValue(100)
    panel.findChild(QtWidgets.QLabel, "statusLabel").setText("Fine-tuning finished: cervixtl-site@1.")
    panel.findChild(QtWidgets.QLabel, "deviceInfoLabel").setText("No CUDA GPU found: CPU only.")
    panel.findChild(QtWidgets.QLabel, "verdictLabel").setText(
        "cervixtl-site@1 vs cervixtl-demo@1: better on CTV and PTV, no significant change on GTV with n = 6")
    panel.resize(width, 800)
    layout = panel.layout()
    height = layout.heightForWidth(width) if layout.hasHeightForWidth() else layout.sizeHint().height()
    panel.resize(width, max(height, layout.sizeHint().height()) + 40)
    pixmap = panel.grab()
    out = Path(out_png)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.stem + ".tmp.png")
    assert pixmap.save(str(tmp), "PNG")
    os.replace(tmp, out)
    panel.deleteLater()
    app.processEvents()
    return out


@pytest.mark.qt
def test_panel_renders_offscreen(tmp_path: Path) -> None:
    pytest.importorskip("PySide6", reason="PySide6 is not installed")
    from PySide6 import QtGui

    png = render_panel(tmp_path / "panel.png")
    img = QtGui.QImage(str(png))
    assert img.width() == 460 and img.height() > 600
    colours = {img.pixel(x, y) for x in range(0, img.width(), 7) for y in range(0, img.height(), 7)}
    assert len(colours) > 20, "the rendered panel is blank"


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--screenshot":
        print(render_panel(sys.argv[2]))
    else:
        sys.exit(pytest.main([__file__, "-q"]))


@pytest.mark.slicer
def test_module_imports_and_logic_creates_its_nodes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Import CervixTLTraining.py with stand-ins for the Slicer modules that need the application (Qt,
    ScriptedLoadableModule, parameterNodeWrapper, i18n), then run its Logic on a real MRML scene."""
    pytest.importorskip("slicer", reason="slicer-core (real MRML libraries) is not installed")
    import types

    import mrml_harness
    import slicer

    scene = mrml_harness.make_scene()

    class _Base:
        def __init__(self, *args, **kwargs) -> None:
            pass

    class _Logic(_Base):
        def getParameterNode(self):  # noqa: ANN202
            return scene.AddNewNodeByClass("vtkMRMLScriptedModuleNode")

    import unittest

    class _Test(unittest.TestCase):
        def delayDisplay(self, message: str, msec: int | None = None) -> None:  # noqa: N802
            pass

    slm = types.ModuleType("slicer.ScriptedLoadableModule")
    slm.ScriptedLoadableModule = slm.ScriptedLoadableModuleWidget = _Base
    slm.ScriptedLoadableModuleTest = _Test
    slm.ScriptedLoadableModuleLogic = _Logic
    pnw = types.ModuleType("slicer.parameterNodeWrapper")
    pnw.parameterNodeWrapper = lambda cls: cls
    pnw.Choice = pnw.WithinRange = lambda *a, **k: None
    i18n = types.ModuleType("slicer.i18n")
    i18n.tr = lambda text: text
    i18n.translate = lambda context, text: text
    util = types.ModuleType("slicer.util")
    util.VTKObservationMixin = type("VTKObservationMixin", (), {})
    for name, mod in (("slicer.ScriptedLoadableModule", slm), ("slicer.parameterNodeWrapper", pnw),
                      ("slicer.i18n", i18n), ("qt", types.ModuleType("qt"))):
        monkeypatch.setitem(sys.modules, name, mod)
    monkeypatch.setattr(slicer, "util", util, raising=False)
    monkeypatch.setitem(sys.modules, "slicer.util", util)
    monkeypatch.syspath_prepend(str(MODULE_DIR))
    import importlib.util

    spec = importlib.util.spec_from_file_location("CervixTLTraining_under_test", MODULE_PY)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    logic = module.CervixTLTrainingLogic()
    assert logic.lib.scene is scene
    params = types.SimpleNamespace(**{f: None for f in ("casesTable", "lossTable", "valDiceTable", "trainingChart",
                                                         "compareTable", "compareChart", "versionsTable")})
    logic.ensureOutputNodes(params)
    assert params.trainingChart.IsA("vtkMRMLPlotChartNode") and params.casesTable.IsA("vtkMRMLTableNode")
    first = params.casesTable
    logic.ensureOutputNodes(params)
    assert params.casesTable is first  # created once
    # the Slicer self-test's quick parts (the fine-tuning part is the same run as test_training_logic's)
    selftest = module.CervixTLTrainingTest("test_verdict_wording")
    selftest.test_verdict_wording()
    selftest.test_training_curve_nodes()
