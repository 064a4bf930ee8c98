"""CervixTLTraining: make the contouring model the department's own.

Browse the local case library, fine-tune the active model on saved cases in a background process (live loss /
validation-Dice curve, ETA, Cancel, Resume), compare the new model with its source on held-out cases (Dice,
HD95, surface Dice, paired Wilcoxon p, plain verdict), and activate, roll back, export or import model versions.

The module is a thin Slicer layer: all work is done by the ``cervixtl`` engine command line in separate
processes, driven by the Qt-free :mod:`CervixTLTrainingLib` (tested without Slicer against real MRML nodes).
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from typing import Annotated

import qt
import slicer
from slicer import vtkMRMLPlotChartNode, vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode, vtkMRMLTableNode
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

from CervixTLLib import deps
from CervixTLLib.engine import EngineError
from CervixTLLib.ui import reloadPackages, showError
from CervixTLTrainingLib import estimates
from CervixTLTrainingLib.logic import FREEZE_HELP, FinetuneRequest, TrainingLogic, freeze_option
from CervixTLTrainingLib.tables import TrainingCurve
from CervixTLTrainingLib.verdict import StructureComparison, verdict

#: Milliseconds between two polls of a background engine process.
POLL_INTERVAL_MS = 500


#
# CervixTLTraining
#
class CervixTLTraining(ScriptedLoadableModule):
    """Module description (shown in Slicer's module panel and help)."""

    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("CervixTL Training")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Radiotherapy")]
        # CervixTL provides the shared Lib (engine runner, contract reader, node <-> file conversion)
        self.parent.dependencies = ["CervixTL"]
        self.parent.contributors = ["CervixTL developers"]
        self.parent.helpText = (deps.unsupported_text() + "\n\n" if not deps.python_supported() else "") + _(
            "Fine-tune the CervixTL contouring model on the department's own corrected cases, compare it with "
            "its source model on held-out cases, and activate or roll back model versions. Training runs in a "
            "separate process; Cancel leaves the active model unchanged. The bundled model is a demo model "
            "trained on synthetic phantoms. Research tool: Not for clinical use (a fine-tuned model needs local "
            "validation). Needs 3D Slicer 5.10 or later.")
        self.parent.acknowledgementText = _(
            "Built on MONAI and PyTorch. Transfer-learning recipes after published head-and-neck and "
            "nasopharyngeal cross-centre studies (frozen encoder / fine-tuned last blocks).")


#
# Parameter node
#
@parameterNodeWrapper
class CervixTLTrainingParameterNode:
    """The module's state (saved with the scene).

    inputVolume / finalSegmentation / proposalSegmentation: the case to add to the library.
    freezeStrategy: "encoder", "all-but-last-N" or "none"; unfrozenBlocks: N.
    budgetMode: "epochs" or "minutes". valFraction: held-out fraction of the cases (0..0.9).
    The table / chart nodes hold the case list, the training curve, the comparison and the model versions.
    """

    inputVolume: vtkMRMLScalarVolumeNode
    finalSegmentation: vtkMRMLSegmentationNode
    proposalSegmentation: vtkMRMLSegmentationNode
    siteTag: str = ""
    sourceModel: str = ""
    newModelName: str = "cervixtl-site"
    freezeStrategy: Annotated[str, Choice(["encoder", "all-but-last-N", "none"])] = "encoder"
    unfrozenBlocks: Annotated[int, WithinRange(1, 20)] = 2
    budgetMode: Annotated[str, Choice(["epochs", "minutes"])] = "epochs"
    epochs: Annotated[int, WithinRange(1, 1000)] = 20
    minutes: Annotated[float, WithinRange(1.0, 1440.0)] = 30.0
    valFraction: Annotated[float, WithinRange(0.0, 0.9)] = 0.2
    device: Annotated[str, Choice(["auto", "cuda", "cpu"])] = "auto"
    seed: Annotated[int, WithinRange(0, 999999)] = 0
    activateWhenDone: bool = False
    casesTable: vtkMRMLTableNode
    lossTable: vtkMRMLTableNode
    valDiceTable: vtkMRMLTableNode
    trainingChart: vtkMRMLPlotChartNode
    compareTable: vtkMRMLTableNode
    compareChart: vtkMRMLPlotChartNode
    versionsTable: vtkMRMLTableNode


#
# Widget
#
class CervixTLTrainingWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """The module panel: four collapsible sections (case library, fine-tuning, comparison, model versions)."""

    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.unsupported = False
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._timer = None
        self._devices = None
        self._models = {}
        self._refreshed = False

    # ------------------------------------------------------------------ set-up
    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        if not deps.python_supported():  # Slicer 5.8 and older (Python 3.9): say so instead of a broken panel
            self.layout.addWidget(qt.QLabel(deps.unsupported_text()))
            self.unsupported = True
            return
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/CervixTLTraining.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)

        self.logic = CervixTLTrainingLogic()
        self.logic.lib.report_error = lambda message, log: showError(_("The engine reported a problem"),
                                                                     RuntimeError(message), details=log)
        self._timer = qt.QTimer()
        self._timer.setInterval(POLL_INTERVAL_MS)
        self._timer.connect("timeout()", self.onTimer)

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)

        self.ui.refreshCasesButton.connect("clicked(bool)", self.onRefreshCases)
        self.ui.loadCaseButton.connect("clicked(bool)", self.onLoadCase)
        self.ui.removeCaseButton.connect("clicked(bool)", self.onRemoveCases)
        self.ui.addCaseButton.connect("clicked(bool)", self.onAddCase)
        self.ui.freezeComboBox.connect("currentIndexChanged(int)", self.updateFreezeHelp)
        self.ui.budgetModeComboBox.connect("currentIndexChanged(int)", self.updateBudgetWidgets)
        self.ui.sourceModelComboBox.connect("currentIndexChanged(int)", self.onSourceModelChanged)
        self.ui.estimateButton.connect("clicked(bool)", self.onEstimate)
        self.ui.startButton.connect("clicked(bool)", lambda checked=False: self.onStart(resume=False))
        self.ui.resumeButton.connect("clicked(bool)", lambda checked=False: self.onStart(resume=True))
        self.ui.cancelButton.connect("clicked(bool)", self.onCancel)
        self.ui.showCurveButton.connect("clicked(bool)", self.onShowCurve)
        self.ui.compareButton.connect("clicked(bool)", self.onCompare)
        self.ui.showComparePlotButton.connect("clicked(bool)", self.onShowComparePlot)
        self.ui.refreshModelsButton.connect("clicked(bool)", self.onRefreshModels)
        self.ui.activateButton.connect("clicked(bool)", self.onActivate)
        self.ui.rollbackButton.connect("clicked(bool)", self.onRollback)
        self.ui.exportButton.connect("clicked(bool)", self.onExport)
        self.ui.importButton.connect("clicked(bool)", self.onImport)
        self.ui.versionsTableView.connect("clicked(QModelIndex)", self.onVersionClicked)

        self.initializeParameterNode()
        self.updateFreezeHelp()
        self.updateBudgetWidgets()
        self._refreshed = False

    def cleanup(self) -> None:
        """Module closed (Slicer exits): kill every engine process tree (PythonSlicer and the interpreter it
        started), drop observers."""
        if self.unsupported:
            return
        if self.logic is not None:
            self.logic.lib.kill()
        if self._timer is not None:
            self._timer.stop()
        self.removeObservers()

    def enter(self) -> None:
        if self.unsupported:
            return
        self.initializeParameterNode()
        if not self._refreshed:
            # Reading the library and the registry starts two short engine processes: do it once the panel
            # is shown, not while Slicer builds the module.
            self._refreshed = True
            self.refreshAll()
            self.devices()

    def exit(self) -> None:
        if self.unsupported:
            return
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None

    def onSceneStartClose(self, caller, event) -> None:
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event) -> None:
        """A new scene: new parameter and output nodes at once when the panel is shown or a run goes on (its
        curve continues in the new scene's nodes, its end still updates the tables and starts the comparison)."""
        job = self.logic.lib.job
        if self.parent.isEntered or (job is not None and job.running):
            self.initializeParameterNode()
        if job is not None and job.running and self.logic.lib.job_kind == "finetune":
            self.logic.lib.curve = self.trainingCurve()

    def parameterNode(self):
        """The parameter node (re-made when a scene close dropped it while the panel was hidden)."""
        if self._parameterNode is None:
            self.initializeParameterNode()
        return self._parameterNode

    def initializeParameterNode(self) -> None:
        self.setParameterNode(self.logic.getParameterNode())
        if not self._parameterNode.inputVolume:
            first = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")
            if first:
                self._parameterNode.inputVolume = first
        self.logic.ensureOutputNodes(self._parameterNode)
        self.ui.casesTableView.setMRMLTableNode(self._parameterNode.casesTable)
        self.ui.compareTableView.setMRMLTableNode(self._parameterNode.compareTable)
        self.ui.versionsTableView.setMRMLTableNode(self._parameterNode.versionsTable)

    def setParameterNode(self, inputParameterNode: CervixTLTrainingParameterNode | None) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)

    # ------------------------------------------------------------------ helpers
    def _selectedRows(self, view) -> list:
        return sorted({index.row() for index in view.selectionModel().selectedIndexes()})

    def _selectedFirstColumn(self, view, tableNode) -> list:
        if tableNode is None:
            return []
        return [tableNode.GetCellText(row, 0) for row in self._selectedRows(view)]

    def selectedCaseIds(self) -> list:
        return self._selectedFirstColumn(self.ui.casesTableView, self._parameterNode.casesTable)

    def allCaseIds(self) -> list:
        table = self._parameterNode.casesTable
        return [table.GetCellText(r, 0) for r in range(table.GetNumberOfRows())] if table else []

    def selectedModelSpec(self) -> str:
        specs = self._selectedFirstColumn(self.ui.versionsTableView, self._parameterNode.versionsTable)
        return specs[0] if specs else ""

    def poll(self) -> None:
        """Start the timer that runs the queued engine commands and the long job."""
        if self._timer is not None:
            self._timer.start()

    def refreshAll(self) -> None:
        """Re-read the case library and the model registry (background engine commands)."""
        p = self.parameterNode()
        self.logic.lib.update_cases_table(p.casesTable, on_done=lambda table: None)
        self.logic.lib.list_models(self.updateModelLists)
        self.poll()

    def updateModelLists(self, models: list) -> None:
        """Fill the versions table and the three model selectors from :meth:`TrainingLogic.list_models` rows."""
        self._models = {m["spec"]: m for m in models}
        self.logic.lib.update_versions_table(self.parameterNode().versionsTable, models)
        specs = [m["spec"] for m in models]
        active = [m["spec"] for m in models if m["active"]]
        for combo, extra in ((self.ui.sourceModelComboBox, ["none"]), (self.ui.compareSourceComboBox, []),
                             (self.ui.compareNewComboBox, [])):
            current = combo.currentText
            combo.blockSignals(True)
            combo.clear()
            for spec in specs + extra:
                combo.addItem(spec)
            wanted = current or (active[0] if active else "")
            if wanted:
                combo.setCurrentText(wanted)
            combo.blockSignals(False)
        if self._parameterNode.sourceModel:
            self.ui.sourceModelComboBox.setCurrentText(self._parameterNode.sourceModel)

    def updateFreezeHelp(self, index: int = 0) -> None:
        strategy = self.ui.freezeComboBox.currentText or "encoder"
        self.ui.freezeHelpLabel.text = FREEZE_HELP.get(strategy, "")
        self.ui.lastNSpinBox.enabled = strategy == "all-but-last-N"

    def updateBudgetWidgets(self, index: int = 0) -> None:
        byTime = self.ui.budgetModeComboBox.currentText == "minutes"
        self.ui.epochsSpinBox.enabled = not byTime
        self.ui.minutesSpinBox.enabled = byTime

    def onSourceModelChanged(self, index: int) -> None:
        if self._parameterNode:
            self._parameterNode.sourceModel = self.ui.sourceModelComboBox.currentText

    def setBusy(self, busy: bool) -> None:
        for name in ("startButton", "resumeButton", "estimateButton", "compareButton", "activateButton",
                     "rollbackButton", "removeCaseButton", "importButton"):
            getattr(self.ui, name).enabled = not busy
        self.ui.cancelButton.enabled = busy

    # ------------------------------------------------------------------ case library
    def onRefreshCases(self) -> None:
        self.logic.lib.update_cases_table(self.parameterNode().casesTable, on_done=lambda table: None)
        self.poll()

    def onLoadCase(self) -> None:
        ids = self.selectedCaseIds()
        if not ids:
            slicer.util.warningDisplay(_("Select a case in the table first."))
            return
        with slicer.util.tryWithErrorDisplay(_("Could not load the case."), waitCursor=True):
            # read from the case's files (no engine process), then detached from them: a Save never writes
            # into the library
            volume, segmentation = self.logic.lib.load_case(ids[0])
            volume.CreateDefaultDisplayNodes()
            segmentation.CreateDefaultDisplayNodes()
            slicer.util.setSliceViewerLayers(background=volume, fit=True)

    def onRemoveCases(self) -> None:
        ids = self.selectedCaseIds()
        if not ids:
            slicer.util.warningDisplay(_("Select the cases to remove in the table first."))
            return
        if not slicer.util.confirmOkCancelDisplay(
                _("Delete {n} case(s) from the library? This cannot be undone.").format(n=len(ids))):
            return
        for case_id in ids:
            self.logic.lib.remove_case(case_id, on_done=lambda _out: None)
        self.onRefreshCases()

    def onAddCase(self) -> None:
        p = self.parameterNode()
        if not p.inputVolume or not p.finalSegmentation:
            slicer.util.warningDisplay(_("Choose the CT volume and its final segmentation first."))
            return
        with slicer.util.tryWithErrorDisplay(_("The case was not added."), waitCursor=True):
            self.logic.lib.add_case_from_nodes(p.inputVolume, p.finalSegmentation, p.proposalSegmentation,
                                               p.siteTag or None, on_done=self.onCaseAdded)
            self.poll()

    def onCaseAdded(self, case_id: str) -> None:
        self.ui.statusLabel.text = _("Case {id} added to the library.").format(id=case_id)
        self.onRefreshCases()

    # ------------------------------------------------------------------ fine-tuning
    def buildRequest(self, resume: bool) -> FinetuneRequest:
        p = self._parameterNode
        cases = self.selectedCaseIds() or self.allCaseIds()
        return FinetuneRequest(
            source=self.ui.sourceModelComboBox.currentText or "none", name=p.newModelName.strip(), cases=cases,
            freeze=freeze_option(p.freezeStrategy, p.unfrozenBlocks),
            epochs=p.epochs if p.budgetMode == "epochs" else None,
            minutes=p.minutes if p.budgetMode == "minutes" else None,
            val_fraction=p.valFraction, device=p.device, seed=p.seed, resume=resume, activate=p.activateWhenDone)

    def devices(self, then=None) -> None:
        """Ask the engine once which devices it sees (``cervixtl devices --json``); ``then(devices)`` after."""
        if self._devices is not None:
            if then is not None:
                then(self._devices)
            return

        def found(devices) -> None:
            self._devices = devices
            gpus = ", ".join(g["name"] for g in devices["gpus"])
            self.ui.deviceInfoLabel.text = (_("GPU: {name}").format(name=gpus) if devices["cuda"]
                                            else _("No CUDA GPU found: CPU only."))
            if then is not None:
                then(devices)

        self.logic.lib.devices(found)
        self.poll()

    def onEstimate(self) -> None:
        request = self.buildRequest(resume=False)

        def measured(timing) -> None:
            steps, seconds = self.logic.lib.time_estimate(request, timing)
            self.ui.statusLabel.text = _(
                "One training step takes {step:.2f} s on {device} (measured): {steps} steps, about {time}."
            ).format(step=timing.step_s, device=timing.device_name or timing.device, steps=steps,
                     time=estimates.format_duration(seconds))

        def withDevices(devices) -> None:
            dev = request.device if request.device != "auto" else devices["recommended"]
            self.logic.lib.measure_step(request.source, dev, on_done=measured)

        self.devices(withDevices)

    def onStart(self, resume: bool = False) -> None:
        request = self.buildRequest(resume)
        if not request.name:
            slicer.util.warningDisplay(_("Enter a name for the new model."))
            return
        problems = self.logic.lib.preflight(request)
        if problems:
            slicer.util.errorDisplay("\n".join(problems))
            return

        def offerCpu(timing) -> None:
            steps, _seconds = self.logic.lib.time_estimate(request, timing)
            n_train, n_val = estimates.split_counts(len(request.cases), request.val_fraction)
            if slicer.util.confirmOkCancelDisplay(
                    estimates.cpu_offer_text(timing, steps, n_val, request.epochs or 0, request.minutes)):
                request.device = "cpu"
                self.startFinetune(request)

        def withDevices(devices) -> None:
            if request.device in ("auto", "cuda") and not devices["cuda"]:
                self.logic.lib.measure_step(request.source, "cpu", on_done=offerCpu)
            else:
                self.startFinetune(request)

        self.devices(withDevices)

    def startFinetune(self, request) -> None:
        try:
            self.logic.lib.start_finetune(request, self.trainingCurve())
        except EngineError as exc:
            showError(_("Fine-tuning did not start"), exc)
            return
        self.ui.progressBar.value = 0
        self.ui.statusLabel.text = _("Fine-tuning started ({n} cases, device {device}).").format(
            n=len(request.cases), device=request.device)
        self.setBusy(True)
        self.poll()
        self.onShowCurve()

    def trainingCurve(self) -> TrainingCurve:
        p = self.parameterNode()
        return TrainingCurve(slicer.mrmlScene, p.lossTable, p.valDiceTable, p.trainingChart)

    def onCancel(self) -> None:
        self.logic.lib.cancel()
        self.ui.statusLabel.text = _("Stopping... (the active model stays as it is)")

    def onTimer(self) -> None:
        """Poll the queued engine commands and the long job (never blocks)."""
        busy = self.logic.lib.tasks.poll()
        if not self.logic.lib.job_active:
            if not busy:
                self._timer.stop()
            return
        status = self.logic.lib.poll()
        self.ui.progressBar.value = int(round(100 * status.fraction))
        text = status.message
        if status.eta_text:
            text += "  (" + status.eta_text + ")"
        self.ui.statusLabel.text = text
        if status.running:
            return
        self.setBusy(False)
        if status.error:
            self.ui.statusLabel.text = status.error
            if not status.cancelled and status.returncode != 130:
                showError(_("The engine stopped"), RuntimeError(status.error), details=status.log)
            return
        if status.kind == "finetune":
            self.onFinetuneFinished()
        elif status.kind == "compare":
            self.onCompareFinished()

    def onFinetuneFinished(self) -> None:
        request = self.logic.lib.job_request
        try:
            newSpec = self.logic.lib.new_model_spec()
        except EngineError as exc:
            showError(_("Fine-tuning finished, but its result could not be read"), exc)
            return
        self.ui.statusLabel.text = _("Fine-tuning finished: {model}.").format(model=newSpec)
        heldOut = list(self.logic.lib.last_held_out)

        def listed(models) -> None:
            self.updateModelLists(models)
            self.ui.compareNewComboBox.setCurrentText(newSpec)
            if request.source and request.source != "none":
                self.ui.compareSourceComboBox.setCurrentText(request.source)
                self.ui.compareCollapsibleButton.collapsed = False
                if heldOut:
                    self.startComparison(request.source, newSpec, heldOut)
                else:
                    self.ui.verdictLabel.text = _("Select held-out cases (not used for training) in the case "
                                                  "table and press Compare.")

        self.logic.lib.update_cases_table(self.parameterNode().casesTable, on_done=lambda table: None)
        self.logic.lib.list_models(listed)
        self.poll()

    # ------------------------------------------------------------------ comparison
    def onCompare(self) -> None:
        """Compare on the selected cases, else on the new model's held-out cases (from its card), else -- after
        a warning -- on all cases."""
        source, new = self.ui.compareSourceComboBox.currentText, self.ui.compareNewComboBox.currentText
        if not source or not new or source == new:
            slicer.util.warningDisplay(_("Choose two different models to compare."))
            return
        selected = self.selectedCaseIds()
        if selected:
            self.startComparison(source, new, selected)
            return

        def withHeldOut(held) -> None:
            cases = held
            allCases = self.allCaseIds()
            if not cases and allCases and slicer.util.confirmOkCancelDisplay(_(
                    "The new model does not list its held-out cases and no case is selected. Compare on all {n} "
                    "cases? Cases it was trained on favour the new model.").format(n=len(allCases))):
                cases = allCases
            if not cases:
                self.ui.verdictLabel.text = _("No cases to compare on: select held-out cases in the case table.")
                return
            self.startComparison(source, new, cases)

        self.logic.lib.held_out_cases(new, withHeldOut)
        self.poll()

    def startComparison(self, source: str, new: str, cases: list) -> None:
        """Run ``cervixtl compare`` on ``cases`` in the background."""
        outDir = os.path.join(slicer.app.temporaryPath, "CervixTLCompare-" + time.strftime("%Y%m%d-%H%M%S"))
        try:
            self.logic.lib.start_compare([source, new], cases, outDir)
        except EngineError as exc:
            showError(_("The comparison did not start"), exc)
            return
        self.ui.verdictLabel.text = _("Comparing on {n} case(s)...").format(n=len(cases))
        self.setBusy(True)
        self.poll()

    def onCompareFinished(self) -> None:
        source, new = self.logic.lib.compare_models
        p = self.parameterNode()
        with slicer.util.tryWithErrorDisplay(_("Could not read the comparison."), waitCursor=True):
            rows = self.logic.lib.read_comparison()
            text = self.logic.lib.update_compare_nodes(rows, p.compareTable, p.compareChart)
            self.ui.verdictLabel.text = _("{new} vs {source}: {verdict}").format(new=new, source=source, verdict=text)
            self.ui.statusLabel.text = _("Comparison finished.")

    def onShowCurve(self) -> None:
        slicer.modules.plots.logic().ShowChartInLayout(self.parameterNode().trainingChart)

    def onShowComparePlot(self) -> None:
        slicer.modules.plots.logic().ShowChartInLayout(self.parameterNode().compareChart)

    # ------------------------------------------------------------------ model versions
    def onRefreshModels(self) -> None:
        self.logic.lib.list_models(self.updateModelLists)
        self.poll()

    def onVersionClicked(self, index) -> None:
        spec = self.selectedModelSpec()
        if spec:
            self.logic.lib.show_model(spec, lambda shown: self.ui.modelCardTextEdit.setPlainText(
                json.dumps(shown["card"], indent=1)[:20000]))
            self.poll()

    def onActivate(self) -> None:
        spec = self.selectedModelSpec()
        if not spec:
            slicer.util.warningDisplay(_("Select a model version first."))
            return
        row = getattr(self, "_models", {}).get(spec, {})
        bundled = row.get("path") if row.get("source") == "bundled" else None

        def done(_out) -> None:
            self.ui.statusLabel.text = _("{model} is now the active model.").format(model=spec)
            self.onRefreshModels()

        self.logic.lib.activate(spec, done, bundled_path=bundled)
        self.poll()

    def onRollback(self) -> None:
        spec = self.selectedModelSpec() or self.ui.sourceModelComboBox.currentText
        name = spec.split("@")[0]
        if not name or name == "none":
            slicer.util.warningDisplay(_("Select a model version first."))
            return
        if getattr(self, "_models", {}).get(spec, {}).get("source") == "bundled":
            slicer.util.infoDisplay(_("{name} is the bundled model: it has no earlier version.").format(name=name))
            return
        if not slicer.util.confirmOkCancelDisplay(_("Re-activate the previous version of {name}?").format(name=name)):
            return
        self.logic.lib.rollback(name, lambda _out: self.onRefreshModels())
        self.poll()

    def onExport(self) -> None:
        spec = self.selectedModelSpec()
        if not spec:
            slicer.util.warningDisplay(_("Select a model version first."))
            return
        folder = qt.QFileDialog.getExistingDirectory(None, _("Export model package to folder"))
        if not folder:
            return
        dest = os.path.join(folder, spec.replace("@", "-v"))
        self.logic.lib.export_model(spec, dest, lambda _out: slicer.util.infoDisplay(
            _("Model package written to {dest}").format(dest=dest)))
        self.poll()

    def onImport(self) -> None:
        folder = qt.QFileDialog.getExistingDirectory(None, _("Model package folder (model.json + weights)"))
        if not folder:
            return

        def imported(message) -> None:
            self.ui.statusLabel.text = message or _("Model imported.")
            self.onRefreshModels()

        self.logic.lib.import_model(folder, on_done=imported)
        self.poll()

    def onReload(self) -> None:
        """Reload: the Lib packages (this module's and CervixTL's) too, not only this file."""
        reloadPackages(("CervixTLTrainingLib", "CervixTLLib"))
        ScriptedLoadableModuleWidget.onReload(self)


#
# Logic
#
class CervixTLTrainingLogic(ScriptedLoadableModuleLogic):
    """Slicer-side logic: the parameter node and its output nodes; everything else is delegated to
    :class:`CervixTLTrainingLib.logic.TrainingLogic` (``self.lib``), which runs the engine as a process."""

    def __init__(self, cases_dir: str | None = None, models_dir: str | None = None) -> None:
        ScriptedLoadableModuleLogic.__init__(self)
        self.lib = TrainingLogic(slicer.mrmlScene, cases_dir=cases_dir, models_dir=models_dir)

    def getParameterNode(self):
        return CervixTLTrainingParameterNode(super().getParameterNode())

    def ensureOutputNodes(self, parameterNode) -> None:
        """Create the table and chart nodes the panel shows, once per scene."""
        scene = slicer.mrmlScene
        for attr, cls, name in (("casesTable", "vtkMRMLTableNode", "CervixTL cases"),
                                ("lossTable", "vtkMRMLTableNode", "CervixTL training loss"),
                                ("valDiceTable", "vtkMRMLTableNode", "CervixTL validation Dice"),
                                ("trainingChart", "vtkMRMLPlotChartNode", "CervixTL training curve"),
                                ("compareTable", "vtkMRMLTableNode", "CervixTL comparison"),
                                ("compareChart", "vtkMRMLPlotChartNode", "CervixTL comparison chart"),
                                ("versionsTable", "vtkMRMLTableNode", "CervixTL model versions")):
            if not getattr(parameterNode, attr):
                setattr(parameterNode, attr, scene.AddNewNodeByClass(cls, name))


#
# Test
#
class CervixTLTrainingTest(ScriptedLoadableModuleTest):
    """Self-test, run inside Slicer (Reload and Test, or ctest). The fine-tuning part needs the engine and
    takes about a minute on a CPU."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_verdict_wording()
        self.setUp()
        self.test_training_curve_nodes()
        self.setUp()
        self.test_finetune_on_phantoms()

    def test_verdict_wording(self):
        self.delayDisplay("Verdict wording")
        rows = [StructureComparison("GTV", 6, 0.70, 0.71, p_value=0.6, median_difference=0.01),
                StructureComparison("CTV", 6, 0.70, 0.80, p_value=0.03, median_difference=0.1),
                StructureComparison("PTV", 6, 0.75, 0.85, p_value=0.03, median_difference=0.1)]
        self.assertEqual(verdict(rows), "better on CTV and PTV, no significant change on GTV with n = 6")

    def test_training_curve_nodes(self):
        self.delayDisplay("Training curve nodes")
        curve = TrainingCurve(slicer.mrmlScene)
        for step in range(1, 6):
            curve.add({"stage": "train", "fraction": step / 5, "step": step, "epoch": 0, "loss": 1.0 / step})
        curve.add({"stage": "validate", "fraction": 1.0, "step": 5, "epoch": 0, "val_dice": 0.4})
        self.assertEqual(curve.n_loss, 5)
        self.assertEqual(curve.n_val, 1)
        self.assertEqual(curve.chart.GetNumberOfPlotSeriesNodes(), 2)

    def test_finetune_on_phantoms(self):
        self.delayDisplay("Fine-tuning a few steps on phantom cases (about a minute on a CPU)")
        try:
            import torch

            from cervixtl import phantom
            from cervixtl.cases import CaseLibrary
            from cervixtl.models.networks import build_network, segresnet_card
            from cervixtl.models.package import save_package
        except ImportError as exc:
            self.delayDisplay(f"Engine or its dependencies not installed, fine-tuning test skipped: {exc}")
            return
        home = tempfile.mkdtemp(prefix="CervixTLTrainingTest-")
        logic = TrainingLogic(slicer.mrmlScene, cases_dir=os.path.join(home, "cases"),
                              models_dir=os.path.join(home, "models"))
        torch.manual_seed(0)
        card = segresnet_card("selftest-src", ["GTV", "CTV"], init_filters=4, spacing_mm=(6, 6, 6),
                              patch_size=(16, 16, 16))
        logic.import_model(str(save_package(os.path.join(home, "src"), card, build_network(card).state_dict())))
        library = CaseLibrary(os.path.join(home, "cases"))
        for i in range(3):
            ct, seg = phantom.make_phantom(seed=300 + i, site="B", spacing=(6.0, 6.0, 6.0))
            library.add(ct, seg, site="selftest")
        table = logic.update_cases_table()
        self.assertEqual(table.GetNumberOfRows(), 3)
        ids = [table.GetCellText(r, 0) for r in range(3)]
        request = FinetuneRequest(source="selftest-src@1", name="selftest", cases=ids, freeze="encoder", epochs=1,
                                  val_fraction=0.34, device="cpu")
        self.assertEqual(logic.preflight(request), [])
        logic.start_finetune(request)
        status = logic.wait(timeout_s=600)
        self.assertIsNone(status.error, status.error)
        self.assertEqual(logic.curve.n_loss, 8)
        self.assertEqual(logic.curve.n_val, 1)
        versions = logic.update_versions_table()
        self.assertIn("selftest@1", [versions.GetCellText(r, 0) for r in range(versions.GetNumberOfRows())])
        self.delayDisplay("Test passed")
