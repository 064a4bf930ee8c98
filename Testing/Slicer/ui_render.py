"""Render a Slicer module ``.ui`` panel to a PNG with PySide6 (offscreen), for documentation screenshots.

Slicer's custom widgets do not exist outside Slicer, so they are drawn with look-alike Qt stand-ins:
``ctkCollapsibleButton`` -> a titled ``QGroupBox``, ``qMRMLNodeComboBox`` -> ``QComboBox`` (showing its
``noneDisplay`` or first node type), ``ctkSliderWidget`` -> ``QSlider`` + ``QDoubleSpinBox`` with the .ui's
range, value and suffix, ``qMRMLWidget`` -> ``QWidget``. Everything else is the real .ui loaded by QUiLoader.

Usage::

    .venv/bin/python Testing/Slicer/ui_render.py CervixTL/Resources/UI/CervixTL.ui docs/cervixtl_panel.png \
        [--combo NAME=item1,item2 ...]
"""

from __future__ import annotations

import argparse
import os
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

STAND_INS = {"ctkCollapsibleButton": "QGroupBox", "qMRMLNodeComboBox": "QComboBox", "ctkSliderWidget": "QWidget",
             "qMRMLWidget": "QWidget"}
#: Widgets the module hides in the panel's first state (so a screenshot never shows what the panel does not):
#: CervixTL shows the six R/L/A/P/S/I sliders only with "per direction" on, and its log box starts collapsed.
INITIALLY_HIDDEN = {"CervixTL.ui": ("anisotropicFrame", "logTextEdit")}
#: Buttons the module disables until there is something to act on (no proposal yet, nothing running).
INITIALLY_DISABLED = {"CervixTL.ui": ("cancelButton", "applyMarginsButton", "revertMarginsButton", "editButton",
                                      "show3DButton", "undoButton", "exportButton", "saveCaseButton",
                                      "ctvMarginSlider")}


def _prop(widget: ET.Element, name: str) -> str | None:
    for p in widget.findall("property"):
        if p.get("name") == name:
            child = list(p)[0] if len(p) else None
            if child is None:
                return None
            if child.tag == "stringlist":
                return ",".join(s.text or "" for s in child)
            return child.text
    return None


def rewrite(xml_bytes: bytes) -> tuple[bytes, dict[str, dict[str, Any]]]:
    """The .ui with stand-in classes, and per replaced widget its original class and properties."""
    root = ET.fromstring(xml_bytes)
    info: dict[str, dict[str, Any]] = {}
    for w in root.iter("widget"):
        cls = w.get("class", "")
        if cls not in STAND_INS:
            continue
        props = {p.get("name"): _prop(w, p.get("name")) for p in w.findall("property")}
        info[w.get("name", "")] = {"class": cls, **props}
        w.set("class", STAND_INS[cls])
        keep = {"geometry", "toolTip"}
        if cls == "ctkCollapsibleButton":
            for p in w.findall("property"):
                if p.get("name") == "text":
                    p.set("name", "title")
            keep.add("title")
        for p in list(w.findall("property")):
            if p.get("name") not in keep:
                w.remove(p)
    for tag in ("customwidgets", "connections"):
        for el in root.findall(tag):
            root.remove(el)
    return ET.tostring(root, encoding="utf-8"), info


def render(ui_path: str | os.PathLike, png_path: str | os.PathLike, combos: dict[str, list[str]] | None = None,
           width: int = 380, hidden: tuple[str, ...] | None = None) -> Path:
    """Load ``ui_path`` with stand-ins, fill ``combos`` (object name -> items), hide ``hidden`` (default: the
    widgets the module hides in its first state, :data:`INITIALLY_HIDDEN`) and save a PNG; returns its path."""
    panel = load_panel(ui_path, combos, width, hidden)
    pixmap = panel.grab()
    out = Path(png_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp.png")
    if not pixmap.save(str(tmp), "PNG"):
        raise RuntimeError(f"could not write {out}")
    os.replace(tmp, out)
    panel.deleteLater()
    return out


def load_panel(ui_path: str | os.PathLike, combos: dict[str, list[str]] | None = None, width: int = 380,
               hidden: tuple[str, ...] | None = None) -> Any:
    """The panel as :func:`render` draws it (a laid-out QWidget)."""
    from PySide6 import QtCore, QtWidgets
    from PySide6.QtUiTools import QUiLoader

    app = QtWidgets.QApplication.instance() or QtWidgets.QApplication([sys.argv[0]])
    data, info = rewrite(Path(ui_path).read_bytes())
    buf = QtCore.QBuffer()
    buf.setData(QtCore.QByteArray(data))
    buf.open(QtCore.QIODevice.ReadOnly)
    panel = QUiLoader().load(buf)
    buf.close()
    if panel is None:
        raise RuntimeError(f"{ui_path}: QUiLoader could not load the panel")
    for name, props in info.items():
        w = panel.findChild(QtWidgets.QWidget, name) if panel.objectName() != name else panel
        if w is None:
            continue
        if props["class"] == "qMRMLNodeComboBox":
            w.addItem(props.get("noneDisplay") or (props.get("nodeTypes") or "").split(",")[0].replace("vtkMRML", ""))
        elif props["class"] == "ctkSliderWidget":
            lay = QtWidgets.QHBoxLayout(w)
            lay.setContentsMargins(0, 0, 0, 0)
            lo, hi = float(props.get("minimum") or 0), float(props.get("maximum") or 100)
            val = float(props.get("value") or lo)
            slider = QtWidgets.QSlider(QtCore.Qt.Horizontal)
            slider.setRange(int(lo * 10), int(hi * 10))
            slider.setValue(int(val * 10))
            spin = QtWidgets.QDoubleSpinBox()
            spin.setRange(lo, hi)
            spin.setDecimals(int(props.get("decimals") or 1))
            spin.setValue(val)
            spin.setSuffix(props.get("suffix") or "")
            lay.addWidget(slider, 1)
            lay.addWidget(spin)
        elif props["class"] == "ctkCollapsibleButton":
            w.setStyleSheet("QGroupBox { font-weight: bold; }")
    for name, items in (combos or {}).items():
        combo = panel.findChild(QtWidgets.QComboBox, name)
        if combo is not None:
            combo.clear()
            combo.addItems(items)
    for name in (INITIALLY_HIDDEN.get(Path(ui_path).name, ()) if hidden is None else hidden):
        w = panel.findChild(QtWidgets.QWidget, name)
        if w is None:
            raise ValueError(f"{ui_path}: no widget {name!r} to hide")
        w.setVisible(False)
    for name in INITIALLY_DISABLED.get(Path(ui_path).name, ()) if hidden is None else ():
        panel.findChild(QtWidgets.QWidget, name).setEnabled(False)
    panel.resize(width, panel.sizeHint().height())
    panel.adjustSize()
    panel.resize(width, max(panel.sizeHint().height(), 200))
    app.processEvents()
    return panel


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("ui")
    ap.add_argument("png")
    ap.add_argument("--combo", action="append", default=[], help="NAME=item1,item2 to fill a combo box")
    ap.add_argument("--width", type=int, default=380)
    a = ap.parse_args(argv)
    combos = {}
    for spec in a.combo:
        name, _, items = spec.partition("=")
        combos[name] = [i for i in items.split(",") if i]
    print(render(a.ui, a.png, combos, a.width))
    return 0


if __name__ == "__main__":
    sys.exit(main())
