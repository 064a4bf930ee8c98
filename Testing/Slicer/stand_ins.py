"""Stand-ins for the parts of a real 3D Slicer that cannot run here, each enforcing the real component's
documented behaviour (what the module must cope with), not what the module happens to do.

* :func:`python_slicer_launcher` -- Slicer's ``PythonSlicer`` (a CTK app launcher): it starts the real
  interpreter as a CHILD process with inherited stdin/stdout/stderr, forwards no signal to it (SIGTERM /
  SIGINT to the launcher are swallowed) and exits with the child's status when the child ends.
* :class:`SlicerRTExporter` -- SlicerRT's ``DicomRtImportExportPluginClass``: its ``export(exportables)``
  refuses an export without the primary anatomical image (``vtkSlicerDicomRtImportExportModuleLogic::
  ExportDicomRTStudy``: "Must export the primary anatomical (CT/MR) image"), and needs a segmentation.
* :class:`PyTorchUtilsLogic` -- the PyTorch extension's ``PyTorchUtils.PyTorchUtilsLogic``: ``torchInstalled()``
  and ``installTorch(askConfirmation, forceComputationBackend, torchVersionRequirement, torchvisionVersion
  Requirement)`` which returns None when the user declines.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["python_slicer_launcher", "SlicerRTExporter", "SlicerRTExportable", "PyTorchUtilsLogic"]

_LAUNCHER = '''#!{python}
import signal, subprocess, sys
# CTK's launcher forwards no signal to the interpreter it starts: a handler that does nothing (children get
# the default dispositions back at exec, like the real interpreter does)
signal.signal(signal.SIGTERM, lambda *a: None)
signal.signal(signal.SIGINT, lambda *a: None)
child = subprocess.Popen([{python!r}] + sys.argv[1:])  # inherited stdio
with open({pidfile!r}, "a") as f:
    f.write(str(child.pid) + "\\n")
while True:
    try:
        sys.exit(child.wait())
    except InterruptedError:
        continue
'''


def python_slicer_launcher(folder: Path, name: str = "PythonSlicer") -> tuple[Path, Path]:
    """Write a stand-in ``PythonSlicer`` launcher in ``folder``; returns (launcher, file of the child pids)."""
    folder.mkdir(parents=True, exist_ok=True)
    pidfile = folder / f"{name}.children"
    script = folder / name
    script.write_text(_LAUNCHER.format(python=sys.executable, pidfile=str(pidfile)), encoding="utf-8")
    script.chmod(0o755)
    return script, pidfile


class SlicerRTExportable:
    """``slicer.qSlicerDICOMExportable``: what a plugin offers to export (node id, plugin, tags, directory)."""

    def __init__(self, node_id: str, plugin: str) -> None:
        self.subjectHierarchyItemID = 0
        self.nodeID = node_id
        self.pluginClass = plugin
        self.directory = ""
        self.tags: dict[str, str] = {}

    def setTag(self, key: str, value: str) -> None:  # noqa: N802
        self.tags[key] = value

    def tag(self, key: str) -> str:
        return self.tags.get(key, "")


class SlicerRTExporter:
    """``DicomRtImportExportPluginClass`` with SlicerRT's rules: ``examineForExport`` offers an exportable for a
    segmentation (or a scalar volume) item; ``export`` returns an error string (empty = success) and refuses
    exportables without a CT/MR volume, or without a segmentation, exactly as
    ``ExportDicomRTStudy`` does; on success it records what it would write in :attr:`exported`."""

    PRIMARY_ERROR = "Must export the primary anatomical (CT/MR) image"

    def __init__(self, scene: Any) -> None:
        self.scene = scene
        self.exported: list[dict[str, Any]] = []

    def examineForExport(self, sh_item: int) -> list[SlicerRTExportable]:  # noqa: N802
        import slicer

        sh = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(self.scene)
        node = sh.GetItemDataNode(sh_item)
        if node is None or not (node.IsA("vtkMRMLSegmentationNode") or node.IsA("vtkMRMLScalarVolumeNode")):
            return []
        e = SlicerRTExportable(node.GetID(), "DicomRtImportExportPlugin")
        e.subjectHierarchyItemID = sh_item
        return [e]

    def export(self, exportables: Sequence[SlicerRTExportable]) -> str:
        kinds = {"volume": [], "segmentation": []}
        for e in exportables:
            node = self.scene.GetNodeByID(e.nodeID)
            if node is None:
                return f"no node {e.nodeID}"
            kinds["segmentation" if node.IsA("vtkMRMLSegmentationNode") else "volume"].append(node)
        if not kinds["volume"]:
            return self.PRIMARY_ERROR
        if not kinds["segmentation"]:
            return "No segmentation to export"
        folders = {e.directory for e in exportables}
        if len(folders) != 1 or not next(iter(folders)):
            return "Export folder not set"
        self.exported.append({"volume": kinds["volume"][0], "segmentation": kinds["segmentation"][0],
                              "directory": next(iter(folders)), "tags": [dict(e.tags) for e in exportables]})
        return ""


class PyTorchUtilsLogic:
    """``PyTorchUtils.PyTorchUtilsLogic`` of the PyTorch extension (only what CervixTL calls)."""

    def __init__(self, installed: bool = False, accept: bool = True) -> None:
        self.installed = installed
        self.accept = accept
        self.calls: list[dict[str, Any]] = []

    def torchInstalled(self) -> bool:  # noqa: N802
        return self.installed

    def installTorch(self, askConfirmation: bool = False, forceComputationBackend: str | None = None,  # noqa: N802
                     torchVersionRequirement: str | None = None, torchvisionVersionRequirement: str | None = None):
        self.calls.append({"askConfirmation": askConfirmation, "torchVersionRequirement": torchVersionRequirement})
        if askConfirmation and not self.accept:
            return None
        self.installed = True
        return object()  # the real one returns the imported torch module
