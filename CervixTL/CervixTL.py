"""CervixTL: one-click GTV / CTV / PTV proposal on a planning CT, live margins, editing and export.

The module is a thin Slicer layer over the ``cervixtl`` engine:

* **Propose contours** writes the CT to a temporary NRRD and runs ``cervixtl contour`` in a separate process
  (Slicer's Python launcher); a timer polls its JSON progress lines, so the GUI stays responsive, and
  **Cancel** stops it without writing anything. The result is one segmentation node (GTV, CTV, PTV, organs;
  names, colours and terminology from the engine) on the CT's geometry, under the CT's study.
* **Margins**: CTV from GTV and PTV from CTV, isotropic or R/L/A/P/S/I mm, previewed live with the engine's
  margin code on the segments' labelmaps; Apply / Revert; PTV overlap with rectum / bladder in mL.
* **Edit** opens the Segment Editor on the result with the CT as source volume; **Export** writes DICOM
  RTSTRUCT (SlicerRT when installed, else the engine), ``.seg.nrrd`` or NIfTI; **Save case for training**
  stores the CT, the model's original proposal and the edited contours in the anonymised case library.

All scene <-> engine conversion lives in the Qt-free :mod:`CervixTLLib` (tested without Slicer against the real
MRML libraries of ``slicer-core``).
"""

import logging
import os
from typing import Annotated, Optional

import qt
import slicer
from slicer import vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.parameterNodeWrapper import Choice, WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

from CervixTLLib import contract, deps, nodes
from CervixTLLib.engine import TaskQueue
from CervixTLLib.geometry import parse_margin_text
from CervixTLLib.logic import ContourLogic
from CervixTLLib.margins_preview import MarginPreview
from CervixTLLib.nodes import ContourHistory
from CervixTLLib.ui import reloadPackages, showError

#: Milliseconds between two polls of the engine process.
POLL_INTERVAL_MS = 200
#: Milliseconds of slider stillness before the margin preview is recomputed.
PREVIEW_DELAY_MS = 60
#: Export formats offered (label -> file suffix; "" = DICOM folder).
EXPORT_FORMATS = {"DICOM RTSTRUCT": "", "Slicer segmentation (.seg.nrrd)": ".seg.nrrd",
                  "NIfTI label map (.nii.gz)": ".nii.gz"}


#
# CervixTL
#
class CervixTL(ScriptedLoadableModule):
    """Module description shown in Slicer."""

    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("CervixTL")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Radiotherapy")]
        self.parent.dependencies = []
        self.parent.contributors = ["CervixTL developers"]
        self.parent.helpText = (deps.unsupported_text() + "\n\n" if not deps.python_supported() else "") + _(
            "Propose GTV, CTV, PTV and pelvic organs at risk on a planning CT with the active CervixTL model, "
            "adjust CTV/PTV margins with live preview, edit in the Segment Editor, export (RTSTRUCT, .seg.nrrd, "
            "NIfTI) and save the corrected case for fine-tuning. The only bundled model is a small demo model "
            "trained on synthetic phantoms, for trying the workflow; it is not a clinical model. Every proposal "
            "must be reviewed by a qualified clinician. Research tool: Not for clinical use. Needs 3D Slicer "
            "5.10 or later.")
        # once Slicer has started: the phantom CT in Sample Data, the terminology for the Segment Editor
        slicer.app.connect("startupCompleted()", registerAtStartup)
        self.parent.acknowledgementText = _(
            "Built on MONAI, PyTorch, SimpleITK and slicerio. Margins follow the cervical-cancer contouring "
            "consensus practice of growing GTV to CTV and CTV to PTV in the patient frame.")


#
# Parameter node
#
@parameterNodeWrapper
class CervixTLParameterNode:
    """The module's state, saved with the scene.

    inputVolume: planning CT (HU). outputSegmentation: result node (None = create one).
    model: "NAME[@VERSION]" ("" = the active default model). device: auto / cpu / cuda. fast: CPU-friendly.
    ctvFromGtv: replace the model's CTV by GTV + ctvMarginMm. ptvAnisotropic: use ptvR..ptvI instead of
    ptvMarginMm (mm, patient directions). livePreview: recompute while sliders move. site: case-library site.
    """

    inputVolume: vtkMRMLScalarVolumeNode
    outputSegmentation: vtkMRMLSegmentationNode
    model: str = ""
    device: Annotated[str, Choice(["auto", "cpu", "cuda"])] = "auto"
    fast: bool = False
    ctvFromGtv: bool = False
    ctvMarginMm: Annotated[float, WithinRange(0, 50)] = 5.0
    ptvAnisotropic: bool = False
    ptvMarginMm: Annotated[float, WithinRange(0, 50)] = 7.0
    ptvR: Annotated[float, WithinRange(0, 50)] = 7.0
    ptvL: Annotated[float, WithinRange(0, 50)] = 7.0
    ptvA: Annotated[float, WithinRange(0, 50)] = 7.0
    ptvP: Annotated[float, WithinRange(0, 50)] = 7.0
    ptvS: Annotated[float, WithinRange(0, 50)] = 7.0
    ptvI: Annotated[float, WithinRange(0, 50)] = 7.0
    livePreview: bool = True
    site: str = ""


#
# Widget
#
class CervixTLWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """The module panel."""

    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.unsupported = False
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._job = None
        self.tasks = TaskQueue()
        self._preview = None
        self._devicesShown = False
        self._fastChosen = False
        self.history = ContourHistory()
        self._logged = 0

    # ------------------------------------------------------------------ set-up
    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        if not deps.python_supported():  # Slicer 5.8 and older (Python 3.9): say so instead of a broken panel
            self.layout.addWidget(qt.QLabel(deps.unsupported_text()))
            self.unsupported = True
            return
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/CervixTL.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = CervixTLLogic()

        self._pollTimer = qt.QTimer()
        self._pollTimer.setInterval(POLL_INTERVAL_MS)
        self._pollTimer.timeout.connect(self.onPoll)
        self._previewTimer = qt.QTimer()
        self._previewTimer.setSingleShot(True)
        self._previewTimer.setInterval(PREVIEW_DELAY_MS)
        self._previewTimer.timeout.connect(self.updateMarginPreview)

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)

        self.ui.deviceSelector.clear()
        for device in ("auto", "cpu", "cuda"):
            self.ui.deviceSelector.addItem(device)
        self.ui.exportFormatSelector.clear()
        for label in EXPORT_FORMATS:
            self.ui.exportFormatSelector.addItem(label)

        self.ui.proposeButton.connect("clicked(bool)", self.onProposeButton)
        self.ui.cancelButton.connect("clicked(bool)", self.onCancelButton)
        self.ui.refreshModelsButton.connect("clicked(bool)", self.refreshModels)
        self.ui.downloadModelButton.connect("clicked(bool)", self.onDownloadModel)
        self.ui.modelSelector.connect("currentIndexChanged(int)", self.onModelChanged)
        self.ui.deviceSelector.connect("currentIndexChanged(int)", self.onDeviceChanged)
        for slider in self._marginSliders():
            slider.connect("valueChanged(double)", self.onMarginChanged)
        self.ui.ctvFromGtvCheckBox.connect("toggled(bool)", self.onMarginChanged)
        self.ui.ptvAnisotropicCheckBox.connect("toggled(bool)", self.onAnisotropicToggled)
        self.ui.applyMarginsButton.connect("clicked(bool)", self.onApplyMargins)
        self.ui.revertMarginsButton.connect("clicked(bool)", self.onRevertMargins)
        self.ui.editButton.connect("clicked(bool)", self.onEditButton)
        self.ui.exportButton.connect("clicked(bool)", self.onExportButton)
        self.ui.saveCaseButton.connect("clicked(bool)", self.onSaveCaseButton)
        self.ui.show3DButton.connect("toggled(bool)", self.onShow3D)
        self.ui.undoButton.connect("clicked(bool)", self.onUndo)

        self.ui.cancelButton.enabled = False
        self.ui.progressBar.setValue(0)
        self.ui.overlapWarningLabel.setText("")
        self.fillCatalogue()
        self.initializeParameterNode()

    def _marginSliders(self) -> list:
        return [self.ui.ctvMarginSlider, self.ui.ptvMarginSlider, self.ui.ptvRSlider, self.ui.ptvLSlider,
                self.ui.ptvASlider, self.ui.ptvPSlider, self.ui.ptvSSlider, self.ui.ptvISlider]

    def cleanup(self) -> None:
        """Module closed (Slicer exits): kill every engine process tree still running, drop observers."""
        if self.unsupported:
            return
        self.removeObservers()
        if self._job is not None:
            self._job.process.kill()
        self.tasks.kill()
        self._pollTimer.stop()

    def onReload(self) -> None:
        """Reload: the Lib package too, not only this file."""
        reloadPackages(("CervixTLLib",))
        ScriptedLoadableModuleWidget.onReload(self)

    def enter(self) -> None:
        if self.unsupported:
            return
        self.initializeParameterNode()
        if not self._devicesShown:
            self._devicesShown = True
            self.showDevices()
            self.refreshModels()

    def exit(self) -> None:
        if self.unsupported:
            return
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk_modified_event(), self.updateGUIFromParameterNode)

    def onSceneStartClose(self, caller, event) -> None:
        if self._job is not None:  # its CT is going away: stop the engine, nothing is loaded
            self._job.cancel()
        self._preview = None
        self.history.forget()
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self) -> None:
        self.setParameterNode(self.logic.getParameterNode())
        if not self._parameterNode.inputVolume:
            first = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")
            if first:
                self._parameterNode.inputVolume = first

    def setParameterNode(self, inputParameterNode: Optional[CervixTLParameterNode]) -> None:  # noqa: UP045 (3.9)
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk_modified_event(), self.updateGUIFromParameterNode)
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk_modified_event(), self.updateGUIFromParameterNode)
            self.updateGUIFromParameterNode()

    def updateGUIFromParameterNode(self, caller=None, event=None) -> None:
        p = self._parameterNode
        if p is None:
            return
        busy = self._job is not None
        self.ui.proposeButton.enabled = bool(p.inputVolume) and not busy
        self.ui.proposeButton.toolTip = (_("Propose GTV, CTV, PTV and organs on the selected CT") if p.inputVolume
                                         else _("Select a CT volume first"))
        haveResult = bool(p.outputSegmentation) and bool(p.inputVolume) and not busy
        for w in (self.ui.editButton, self.ui.exportButton, self.ui.saveCaseButton, self.ui.applyMarginsButton,
                  self.ui.revertMarginsButton, self.ui.show3DButton):
            w.enabled = haveResult
        self.ui.undoButton.enabled = not busy and self.history.can_undo(p.outputSegmentation)
        self.ui.anisotropicFrame.visible = p.ptvAnisotropic
        self.ui.ptvMarginSlider.enabled = not p.ptvAnisotropic
        self.ui.ctvMarginSlider.enabled = p.ctvFromGtv
        idx = self.ui.deviceSelector.findText(p.device)
        if idx >= 0 and idx != self.ui.deviceSelector.currentIndex:
            self.ui.deviceSelector.setCurrentIndex(idx)

    # ------------------------------------------------------------------ models and devices
    def showDevices(self) -> None:
        """Ask the engine which devices it sees (``cervixtl devices --json``, background process: torch is
        never imported in Slicer's process)."""
        self.ui.deviceInfoLabel.setText(_("Looking for a GPU…"))
        self.runTask(["devices", "--json"], self.onDevicesFound, _("Looking for a GPU…"))

    def onDevicesFound(self, result) -> None:
        if not result.ok:
            self.ui.deviceInfoLabel.setText(_("PyTorch not installed yet (installed on first use)"))
            return
        try:
            found = contract.devices(result.stdout)
        except Exception as exc:  # noqa: BLE001 - a one-line label, never a crash
            self.ui.deviceInfoLabel.setText(str(exc))
            return
        if found["torch"] is None:
            text = _("PyTorch not installed yet (installed on first use)")
        elif found["cuda"]:
            text = _("GPU found: {names}").format(names=", ".join(g["name"] for g in found["gpus"]))
        else:
            text = _("No CUDA GPU found: auto uses the CPU ('Fast' is on for the CPU)")
        self.ui.deviceInfoLabel.setText(text)
        if self._parameterNode and not self._fastChosen:  # once: 'Fast' on only without a GPU
            self._fastChosen = True
            self._parameterNode.fast = bool(found["fast_default"])

    def fillCatalogue(self) -> None:
        self.ui.catalogueSelector.clear()
        for entry in self.logic.catalogue():
            size = entry.get("bytes")
            sha = entry.get("sha256") or ""
            label = "{name} v{version}  ({size}{sha})".format(
                name=entry.get("name", "?"), version=entry.get("version", "?"),
                size=(f"{size / 1e6:.1f} MB" if size else _("size unknown")),
                sha=(f", SHA-256 {sha[:12]}…" if sha else ""))
            self.ui.catalogueSelector.addItem(label, entry.get("name", ""))
            self.ui.catalogueSelector.setItemData(self.ui.catalogueSelector.count - 1, entry.get("description", ""),
                                                  qt.Qt.ToolTipRole)

    def refreshModels(self) -> None:
        """List the registry's models (background engine process)."""
        args = ["models", "list", "--json"] + (["--models-dir", self.logic.models_dir] if self.logic.models_dir else [])
        self.runTask(args, self.onModelsListed, _("Listing models…"))

    def onModelsListed(self, result) -> None:

        if not result.ok:
            self.ui.modelInfoLabel.setText(_("Models unavailable: {error}").format(error=contract.error_text(result)))
            return
        try:
            rows = contract.model_rows(result.stdout)
        except Exception as exc:  # noqa: BLE001
            self.ui.modelInfoLabel.setText(_("Models unavailable: {error}").format(error=str(exc)))
            return
        wanted = self._parameterNode.model if self._parameterNode else ""
        self.ui.modelSelector.blockSignals(True)
        self.ui.modelSelector.clear()
        self.ui.modelSelector.addItem(_("active default model"), "")
        for row in rows:
            spec = row["spec"]
            label = spec + (" *" if row["active"] else "") + (" (bundled)" if row["source"] == "bundled" else "")
            self.ui.modelSelector.addItem(label, spec)
            self.ui.modelSelector.setItemData(self.ui.modelSelector.count - 1,
                                              f"{row['derivation']}\nSHA-256 {row['sha256']}", qt.Qt.ToolTipRole)
        idx = max(0, self.ui.modelSelector.findData(wanted))
        self.ui.modelSelector.setCurrentIndex(idx)
        self.ui.modelSelector.blockSignals(False)
        self.ui.modelInfoLabel.setText(_("{n} model version(s) registered").format(n=len(rows)))

    def onModelChanged(self, index: int) -> None:
        if self._parameterNode:
            self._parameterNode.model = self.ui.modelSelector.itemData(index) or ""

    def onDeviceChanged(self, index: int) -> None:
        if self._parameterNode:
            self._parameterNode.device = self.ui.deviceSelector.itemText(index) or "auto"

    def onDownloadModel(self) -> None:
        name = self.ui.catalogueSelector.currentData
        if not name:
            return
        if not slicer.util.confirmOkCancelDisplay(
                _("Download and import the model '{name}'? Its SHA-256 checksum is verified before it is "
                  "registered.").format(name=name)):
            return
        args = ["models", "import", name] + (["--models-dir", self.logic.models_dir] if self.logic.models_dir else [])
        self.runTask(args, self.onModelImported, _("Downloading {name}…").format(name=name))

    def onModelImported(self, result) -> None:
        if not result.ok:
            showError(_("Model import failed"), RuntimeError(contract.error_text(result)), details=result.log)
            return
        self.refreshModels()

    # ------------------------------------------------------------------ background processes
    def runTask(self, args, onDone, message: str) -> None:
        """Queue a short engine command (background process, :class:`CervixTLLib.engine.TaskQueue`);
        ``onDone(EngineResult)`` when it ends."""
        def done(result) -> None:
            self.ui.logTextEdit.appendPlainText("$ cervixtl " + " ".join(args[:2]) + ("" if result.ok else
                                                "  (failed)") + ("\n" + result.log if result.log else ""))
            onDone(result)

        self.tasks.submit(args, done, message)
        self.ui.statusLabel.setText(message)
        self._pollTimer.start()

    def onPoll(self) -> None:
        if self._job is not None:
            rec = self._job.poll()
            if rec is not None:
                self.ui.progressBar.setValue(int(round(100 * float(rec.get("fraction", 0.0)))))
                self.ui.statusLabel.setText(f"{rec.get('stage', '')}: {rec.get('message', '')}")
            if not self._job.running:
                self.onContourFinished()
        if not self.tasks.poll() and self._job is None:
            self._pollTimer.stop()

    # ------------------------------------------------------------------ first use
    def ensureEngineDependencies(self) -> bool:
        """First use: install the engine's packages after the user confirms (:func:`CervixTLLib.deps.
        ensure_installed`: checks in a subprocess, torch through the PyTorch extension, Slicer's own packages
        kept, pip's log on failure, restart prompt); False when they are still missing."""
        try:
            import PyTorchUtils  # the PyTorch extension (a declared dependency of CervixTL)

            torchLogic = PyTorchUtils.PyTorchUtilsLogic()
        except ImportError:
            torchLogic = None
        try:
            ok = deps.ensure_installed(SlicerInstallUI(), torchLogic)
        except Exception as exc:  # noqa: BLE001 - the check itself failed: one line + details
            showError(_("Cannot check CervixTL's Python packages"), exc)
            return False
        if ok:
            self.showDevices()
        return ok

    # ------------------------------------------------------------------ propose
    def onProposeButton(self) -> None:
        p = self._parameterNode
        if not p or not p.inputVolume or self._job is not None:
            return
        if not self.ensureEngineDependencies():
            return
        self.discardPreview()
        try:
            # the PTV margin of the model's protocol is used; the Margins panel adjusts it afterwards
            self._job = self.logic.start_contour(p.inputVolume, model=p.model or None, device=p.device,
                                                 fast=p.fast)
        except Exception as exc:  # noqa: BLE001 - shown as one line, the scene is untouched
            showError(_("Cannot start contouring"), exc)
            return
        self.ui.progressBar.setValue(0)
        self.ui.statusLabel.setText(_("Starting the engine…"))
        self.ui.cancelButton.enabled = True
        self.updateGUIFromParameterNode()
        self._pollTimer.start()

    def onCancelButton(self) -> None:
        if self._job is not None:
            self._job.cancel()
            self.ui.statusLabel.setText(_("Cancelling…"))

    def onContourFinished(self) -> None:
        job, self._job = self._job, None
        self.ui.cancelButton.enabled = False
        p = self._parameterNode
        self.showLog(job.process)
        if p and p.outputSegmentation:  # the proposal replaces its segments: Undo brings them back
            self.history.keep(p.outputSegmentation)
        try:
            with WaitCursor():
                segNode = self.logic.finish_contour(job, p.outputSegmentation if p else None)
        except Exception as exc:  # noqa: BLE001 - engine errors / cancel: one readable line, scene unchanged
            if job.process.cancelled:
                self.ui.statusLabel.setText(_("Cancelled; nothing was changed."))
            else:
                self.ui.statusLabel.setText(_("Contouring failed."))
                showError(_("Contouring did not complete"), exc, details="\n".join(job.process.stderr_lines))
            self.ui.progressBar.setValue(0)
            self.updateGUIFromParameterNode()
            return
        if p:
            p.outputSegmentation = segNode
            self.showProtocolMargin(job.ptv_margin())
        self.ui.progressBar.setValue(100)
        self.ui.statusLabel.setText(_("Proposal ready: review every contour."))
        slicer.util.setSliceViewerLayers(background=job.ct_node)
        self.updateGUIFromParameterNode()

    # ------------------------------------------------------------------ margins
    def ptvMargin(self):
        p = self._parameterNode
        if p.ptvAnisotropic:
            return (p.ptvR, p.ptvL, p.ptvA, p.ptvP, p.ptvS, p.ptvI)
        return p.ptvMarginMm

    def showProtocolMargin(self, margin) -> None:
        """Set the PTV sliders to the margin the engine used (number or R,L,A,P,S,I), so that the live preview
        starts from the proposal."""
        p = self._parameterNode
        if margin is None or p is None:
            return
        if isinstance(margin, (int, float)):
            p.ptvAnisotropic = False
            p.ptvMarginMm = float(margin)
        elif len(margin) == 6:
            p.ptvAnisotropic = True
            p.ptvR, p.ptvL, p.ptvA, p.ptvP, p.ptvS, p.ptvI = (float(v) for v in margin)
        self._previewTimer.stop()

    def onAnisotropicToggled(self, checked: bool) -> None:
        self.updateGUIFromParameterNode()
        self.onMarginChanged()

    def onMarginChanged(self, *args) -> None:
        if self._parameterNode and self._parameterNode.livePreview:
            self._previewTimer.start()

    def updateMarginPreview(self) -> None:
        p = self._parameterNode
        if not p or not p.outputSegmentation or not p.inputVolume or self._job is not None:
            return
        try:
            if (self._preview is None or self._preview.seg_node is not p.outputSegmentation
                    or self._preview.volume is not p.inputVolume or self._preview.stale()):
                # (re)take the snapshot: first move, other node, or the segments were edited meanwhile
                self._preview = MarginPreview(p.outputSegmentation, p.inputVolume)
                self.history.keep(p.outputSegmentation)  # Undo after Apply: the segments before the preview
            ctv = p.ctvMarginMm if p.ctvFromGtv else None
            result = self._preview.update(ctv, self.ptvMargin())
        except Exception as exc:  # engine BadInput or a missing GTV/CTV segment: show, never crash
            self._preview = None
            self.ui.marginInfoLabel.setText(_("Margins unavailable: {error}").format(error=str(exc).splitlines()[0]))
            return
        self.showMarginResult(result)

    def showMarginResult(self, result) -> None:
        self.ui.marginInfoLabel.setText(_("CTV {ctv:.1f} mL, PTV {ptv:.1f} mL (preview {ms:.0f} ms)").format(
            ctv=result.ctv_ml, ptv=result.ptv_ml, ms=1000 * result.seconds))
        warning = result.warning()
        self.ui.overlapWarningLabel.setText(("⚠ " + warning) if warning else "")

    def onApplyMargins(self) -> None:
        if self._preview is None:
            self.updateMarginPreview()
        if self._preview is not None:
            self.showMarginResult(self._preview.apply())
            self._preview = None
        self.updateGUIFromParameterNode()

    def onRevertMargins(self) -> None:
        if self._preview is not None:
            self._preview.revert()
            self._preview = None
            self.history.undo(self._parameterNode.outputSegmentation)  # (the kept copy equals the reverted state)
            self.updateGUIFromParameterNode()
        self.ui.marginInfoLabel.setText(_("Margins reverted"))
        self.ui.overlapWarningLabel.setText("")

    def onUndo(self) -> None:
        """Put back the segments as they were before the last proposal or applied margins."""
        p = self._parameterNode
        self._preview = None
        if p and self.history.undo(p.outputSegmentation):
            self.ui.statusLabel.setText(_("Undone: the contours are as they were before."))
            self.ui.marginInfoLabel.setText("")
            self.ui.overlapWarningLabel.setText("")
        self.updateGUIFromParameterNode()

    def onShow3D(self, checked: bool) -> None:
        p = self._parameterNode
        if p and p.outputSegmentation:
            nodes.show_3d(p.outputSegmentation, bool(checked))

    def showLog(self, process) -> None:
        """Append what ``process`` (an engine run) printed to the log box: progress messages and log lines."""
        lines = [f"{r.get('stage', '')}: {r.get('message', '')}" for r in process.records] + process.stderr_lines
        self.ui.logTextEdit.appendPlainText("$ cervixtl " + " ".join(process.args[:2]) + "\n" + "\n".join(lines))

    def discardPreview(self) -> None:
        """Keep whatever is shown (used before a new proposal replaces the segments)."""
        self._preview = None

    # ------------------------------------------------------------------ review
    def onEditButton(self) -> None:
        p = self._parameterNode
        if self._preview is not None:
            self.onApplyMargins()
        with slicer.util.tryWithErrorDisplay(_("Cannot open the Segment Editor."), waitCursor=True):
            nodes.check_same_ct(p.outputSegmentation, p.inputVolume, "edit")
            slicer.util.selectModule("SegmentEditor")
            editor = slicer.modules.segmenteditor.widgetRepresentation().self().editor
            editor.setSegmentationNode(p.outputSegmentation)
            editor.setSourceVolumeNode(p.inputVolume)

    def onExportButton(self) -> None:
        p = self._parameterNode
        label = self.ui.exportFormatSelector.currentText
        suffix = EXPORT_FORMATS.get(label, ".seg.nrrd")
        if suffix == "":
            path = qt.QFileDialog.getExistingDirectory(None, _("Folder for the RTSTRUCT file"))
        else:
            default = os.path.join(os.path.expanduser("~"), "contours" + suffix)
            path = qt.QFileDialog.getSaveFileName(None, _("Export segmentation"), default, f"*{suffix}")
            if path and not path.lower().endswith(suffix):
                path += suffix
        if not path:
            return
        try:
            with WaitCursor():
                if suffix == "":
                    path = self.logic.exportRtStruct(p.inputVolume, p.outputSegmentation, path)
                else:
                    self.logic.export_segmentation(p.outputSegmentation, p.inputVolume, path)
        except Exception as exc:  # noqa: BLE001
            showError(_("Export failed"), exc)
            return
        self.ui.statusLabel.setText(_("Exported {path}").format(path=path))

    def onSaveCaseButton(self) -> None:
        p = self._parameterNode
        if not slicer.util.confirmOkCancelDisplay(
                _("Save the CT, the model's proposal and the edited contours in the local case library for "
                  "fine-tuning? Only voxels and geometry are stored: no names, dates or DICOM identifiers.")):
            return
        try:
            with WaitCursor():
                caseId = self.logic.save_case(p.inputVolume, p.outputSegmentation, site=p.site.strip() or None)
        except Exception as exc:  # noqa: BLE001
            showError(_("The case could not be saved"), exc)
            return
        self.ui.statusLabel.setText(_("Saved as {case}").format(case=caseId))


class SlicerInstallUI(deps.InstallUI):
    """Slicer's dialogs for :func:`CervixTLLib.deps.ensure_installed`."""

    def confirm(self, text: str) -> bool:
        return slicer.util.confirmOkCancelDisplay(text, windowTitle=_("Install CervixTL dependencies"))

    def error(self, text: str, details: str = "") -> None:
        showError(_("CervixTL dependencies"), RuntimeError(text), details=details)

    def busy(self, text: str):
        return InstallProgress(text)

    def ask_restart(self, text: str) -> bool:
        return slicer.util.confirmYesNoDisplay(text, windowTitle=_("Restart Slicer"))

    def restart(self) -> None:
        slicer.util.restart()


class InstallProgress:
    """A busy progress dialog (no cancel) and the wait cursor while the installer works."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.dialog = None

    def __enter__(self):
        self.dialog = slicer.util.createProgressDialog(labelText=self.text, maximum=0, windowTitle="CervixTL")
        slicer.app.processEvents()
        qt.QApplication.setOverrideCursor(qt.Qt.WaitCursor)
        return self

    def __exit__(self, *exc) -> None:
        qt.QApplication.restoreOverrideCursor()
        if self.dialog is not None:
            self.dialog.close()


class WaitCursor:
    """Context manager showing the busy cursor."""

    def __enter__(self):
        qt.QApplication.setOverrideCursor(qt.Qt.WaitCursor)
        return self

    def __exit__(self, *exc) -> None:
        qt.QApplication.restoreOverrideCursor()


def registerAtStartup() -> None:
    """Register the phantom sample CT (Sample Data module) and the CervixTL terminology (Terminologies module);
    a failure is logged, never shown (the modules work without them)."""
    from CervixTLLib import startup

    try:
        import SampleData

        startup.register_sample_data(SampleData.SampleDataLogic)
    except Exception as exc:  # noqa: BLE001
        logging.warning("CervixTL: sample data not registered: %s", exc)
    try:
        startup.register_terminology(slicer.modules.terminologies.logic())
    except Exception as exc:  # noqa: BLE001
        logging.warning("CervixTL: terminology not registered: %s", exc)


def vtk_modified_event() -> int:
    import vtk

    return vtk.vtkCommand.ModifiedEvent


#
# Logic
#
class CervixTLLogic(ScriptedLoadableModuleLogic, ContourLogic):
    """Module logic: :class:`CervixTLLib.logic.ContourLogic` (engine process, scene loading, export, cases)
    plus the parts that need the Slicer application (DICOM database, SlicerRT)."""

    def __init__(self) -> None:
        ScriptedLoadableModuleLogic.__init__(self)
        ContourLogic.__init__(self, models_dir=os.environ.get("CERVIXTL_MODELS_DIR") or None,
                              cases_dir=os.environ.get("CERVIXTL_CASES_DIR") or None)

    def getParameterNode(self):
        return CervixTLParameterNode(super().getParameterNode())

    def exportRtStruct(self, volumeNode, segNode, folder: str):
        """DICOM RTSTRUCT in ``folder`` with :meth:`ContourLogic.export_rtstruct`: the engine's exporter on the
        CT's own DICOM instances (default), SlicerRT (CT + segmentation) only for a CT not loaded from DICOM."""
        try:
            import DicomRtImportExportPlugin  # SlicerRT
            slicerRt = DicomRtImportExportPlugin.DicomRtImportExportPluginClass()
        except ImportError:
            slicerRt = None
        return self.export_rtstruct(volumeNode, segNode, folder, dicom_database=slicer.dicomDatabase,
                                    slicer_rt=slicerRt)


#
# Test
#
class CervixTLTest(ScriptedLoadableModuleTest):
    """Self-test: a small phantom CT, the demo model, a margin, and the segments checked."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_CervixTL_propose_and_margins()

    def test_CervixTL_propose_and_margins(self):
        import numpy as np

        self.delayDisplay("Starting the CervixTL self-test")
        missing = [r["requirement"] for r in deps.check_requirements(deps.engine_requirements()) if not r["ok"]]
        if missing:  # (a fresh Slicer before the first-use install: nothing to contour with yet)
            self.skipTest("engine dependencies are not installed: " + ", ".join(missing))
        from cervixtl.structures import resources_dir

        demo = resources_dir() / "Models" / "cervixtl-demo"  # (the build tree has it too, see CMakeLists.txt)
        self.assertTrue((demo / "model.json").is_file(), f"the bundled demo model is missing: {demo}")
        from cervixtl.phantom import make_phantom
        from CervixTLLib.geometry import ijk_to_ras_from_grid

        ct, _truth = make_phantom(1, spacing=(5.0, 5.0, 5.0), size=(160, 140, 100))
        ijkToRas = ijk_to_ras_from_grid(ct.spacing, ct.origin, ct.direction)
        volume = slicer.util.addVolumeFromArray(ct.array.astype(np.int16), ijkToRas, "CervixTLTestCT")

        logic = CervixTLLogic()
        segNode = logic.contour(volume, model=None, device="cpu", fast=True, timeout_s=600)
        names = [segNode.GetSegmentation().GetSegment(s).GetName() for s in nodes.segment_ids(segNode)]
        for required in ("GTV", "CTV", "PTV"):
            self.assertIn(required, names)
        self.assertEqual(segNode.GetAttribute(nodes.MODEL_ATTRIBUTE).split("@")[0], "cervixtl-demo")
        gtv = nodes.segment_mask(segNode, nodes.find_segment_id(segNode, "GTV"), volume)
        ctv = nodes.segment_mask(segNode, nodes.find_segment_id(segNode, "CTV"), volume)
        ptv = nodes.segment_mask(segNode, nodes.find_segment_id(segNode, "PTV"), volume)
        self.assertEqual(gtv.shape, ct.array.shape)
        self.assertTrue(np.all(ctv[gtv]), "GTV must lie inside CTV")
        self.assertTrue(np.all(ptv[ctv]), "CTV must lie inside PTV")

        self.assertTrue(ctv.any(), "the demo model found no CTV on the phantom")

        self.delayDisplay("Growing the PTV by 10 mm")
        preview = MarginPreview(segNode, volume)
        result = preview.update(None, parse_margin_text("10"))
        grown = nodes.segment_mask(segNode, nodes.find_segment_id(segNode, "PTV"), volume)
        self.assertTrue(np.all(grown[ctv]))
        self.assertGreater(int(grown.sum()), int(ctv.sum()))
        self.assertGreater(result.ptv_ml, result.ctv_ml)
        preview.revert()
        self.assertTrue(np.array_equal(nodes.segment_mask(segNode, nodes.find_segment_id(segNode, "PTV"), volume),
                                       ptv))
        logging.info("CervixTL self-test passed")
        self.delayDisplay("CervixTL self-test passed")
