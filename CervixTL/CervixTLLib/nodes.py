"""MRML nodes <-> CervixTL engine images, segmentations and files.

Only the MRML classes and the ``slicer.util`` array helpers are used (``arrayFromVolume``,
``arrayFromSegmentBinaryLabelmap``, ``updateSegmentBinaryLabelmapFromArray``, storage nodes), all of which the
``slicer-core`` package provides, so this module is tested against a real MRML scene outside Slicer. Geometry:
the engine works in LPS (see :mod:`.geometry`); arrays are (z, y, x) on both sides.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .geometry import grid_from_ijk_to_ras

#: Node attribute holding the model spec that produced a segmentation node.
MODEL_ATTRIBUTE = "CervixTL.Model"
#: Node reference role segmentation -> the CT it was proposed on (saved with the scene).
CT_REFERENCE_ROLE = "CervixTL.CT"
#: Node reference role segmentation -> the hidden copy of the model's original proposal (saved with the scene).
PROPOSAL_REFERENCE_ROLE = "CervixTL.Proposal"


def _slicer() -> Any:
    import slicer
    import slicer.util  # noqa: F401

    return slicer


def ijk_to_ras_array(volume_node: Any) -> np.ndarray:
    """The volume's IJK->RAS matrix as a 4 x 4 numpy array (mm)."""
    import vtk

    m = vtk.vtkMatrix4x4()
    volume_node.GetIJKToRASMatrix(m)
    return np.array([[m.GetElement(r, c) for c in range(4)] for r in range(4)])


def volume_grid(volume_node: Any) -> Any:
    """An empty (uint8 zeros) engine :class:`~cervixtl.image.Image` with the volume's grid (LPS geometry).

    Raises:
        ValueError: no image data, or the volume is under a non-hardened transform.
    """
    from cervixtl.image import Image

    _check_volume(volume_node)
    spacing, origin, direction = grid_from_ijk_to_ras(ijk_to_ras_array(volume_node))
    nx, ny, nz = volume_node.GetImageData().GetDimensions()
    return Image(np.broadcast_to(np.uint8(0), (nz, ny, nx)), spacing, origin, direction)


def _check_volume(volume_node: Any) -> None:
    if volume_node is None or volume_node.GetImageData() is None:
        raise ValueError("no CT volume selected (or the volume has no image data)")
    if volume_node.GetParentTransformNode() is not None:
        raise ValueError(f"volume {volume_node.GetName()!r} is under a transform: harden the transform first")


def volume_to_image(volume_node: Any) -> Any:
    """The volume node as an engine :class:`~cervixtl.image.Image` (array z,y,x copied; LPS geometry).
    No node name or other metadata is carried over (nothing identifying)."""
    slicer = _slicer()
    grid = volume_grid(volume_node)
    return grid.with_array(np.array(slicer.util.arrayFromVolume(volume_node), copy=True))


def write_volume(volume_node: Any, path: str | os.PathLike) -> Path:
    """Write the volume for the engine (NRRD / NIfTI by extension), atomically, in LPS with its exact grid."""
    from cervixtl.io import write_image

    return write_image(volume_to_image(volume_node), path)


# ============================================================================ segments
def segment_ids(seg_node: Any) -> list[str]:
    """Segment IDs of a segmentation node, in order."""
    seg = seg_node.GetSegmentation()
    return [seg.GetNthSegmentID(i) for i in range(seg.GetNumberOfSegments())]


def find_segment_id(seg_node: Any, name: str) -> str | None:
    """ID of the segment named ``name`` (case-insensitive; the ID itself also matches), or None."""
    seg = seg_node.GetSegmentation()
    for sid in segment_ids(seg_node):
        if seg.GetSegment(sid).GetName().lower() == name.lower():
            return sid
    for sid in segment_ids(seg_node):
        if sid.lower() == name.lower():
            return sid
    return None


def segment_mask(seg_node: Any, segment_id: str, reference_volume: Any) -> np.ndarray:
    """Boolean mask (z, y, x) of a segment resampled on ``reference_volume``'s grid."""
    slicer = _slicer()
    scene = seg_node.GetScene()
    before = _node_ids(scene)
    try:
        arr = slicer.util.arrayFromSegmentBinaryLabelmap(seg_node, segment_id, reference_volume)
    finally:  # slicer.util removes its temporary label map node but leaves that node's display node behind
        for node_id in _node_ids(scene) - before:
            node = scene.GetNodeByID(node_id)
            if node is not None and node.IsA("vtkMRMLDisplayNode"):
                scene.RemoveNode(node)
    if arr is None:
        return np.zeros(tuple(reversed(reference_volume.GetImageData().GetDimensions())), dtype=bool)
    return np.asarray(arr) > 0


def _node_ids(scene: Any) -> set[str]:
    return {scene.GetNthNode(i).GetID() for i in range(scene.GetNumberOfNodes())} if scene is not None else set()


def set_segment_mask(seg_node: Any, segment_id: str, mask: np.ndarray, reference_volume: Any) -> None:
    """Replace a segment's voxels by ``mask`` (z, y, x on ``reference_volume``'s grid); keeps name and colour."""
    slicer = _slicer()
    segment = seg_node.GetSegmentation().GetSegment(segment_id)
    name = segment.GetName()
    slicer.util.updateSegmentBinaryLabelmapFromArray(np.asarray(mask, dtype=np.uint8), seg_node, segment_id,
                                                     reference_volume)
    segment.SetName(name)


def set_segment_mask_in_box(seg_node: Any, segment_id: str, mask: np.ndarray, reference_volume: Any,
                            box: tuple[slice, slice, slice]) -> None:
    """Replace a segment's voxels by ``mask`` (z, y, x, reference grid) when the segment's old AND new voxels all
    lie inside ``box`` (z, y, x slices): only that box is copied, so a live preview on a 512 x 512 x 120 CT
    writes a few MB instead of the whole grid. Same result as :func:`set_segment_mask` under that condition."""
    import vtk
    from vtk.util import numpy_support

    slicer = _slicer()
    sub = np.ascontiguousarray(np.asarray(mask[box], dtype=np.uint8))
    if sub.size == 0:
        return
    z0, y0, x0 = (b.start for b in box)
    nz, ny, nx = sub.shape
    image = slicer.vtkOrientedImageData()
    image.SetExtent(x0, x0 + nx - 1, y0, y0 + ny - 1, z0, z0 + nz - 1)
    image.AllocateScalars(vtk.VTK_UNSIGNED_CHAR, 1)
    numpy_support.vtk_to_numpy(image.GetPointData().GetScalars())[:] = sub.ravel()
    m = vtk.vtkMatrix4x4()
    reference_volume.GetIJKToRASMatrix(m)
    image.SetImageToWorldMatrix(m)
    segment = seg_node.GetSegmentation().GetSegment(segment_id)
    name = segment.GetName()
    logic = slicer.vtkSlicerSegmentationsModuleLogic
    if not logic.SetBinaryLabelmapToSegment(image, seg_node, segment_id, logic.MODE_REPLACE, image.GetExtent()):
        raise RuntimeError(f"could not update segment {name!r}")
    segment.SetName(name)


def segmentation_to_engine(seg_node: Any, reference_volume: Any, names: Sequence[str] | None = None) -> Any:
    """An engine :class:`~cervixtl.segmentation.Segmentation` on the reference volume's grid, with the segments'
    names, colours and terminology (all segments, or those named in ``names``)."""
    from slicerio.segmentation import terminology_entry_from_string

    from cervixtl.segmentation import Segment, Segmentation

    grid = volume_grid(reference_volume)
    out = Segmentation(grid)
    seg = seg_node.GetSegmentation()
    wanted = None if names is None else {n.lower() for n in names}
    for i, sid in enumerate(segment_ids(seg_node)):
        segment = seg.GetSegment(sid)
        if wanted is not None and segment.GetName().lower() not in wanted:
            continue
        term = None
        term_str = segment.GetTerminology() if hasattr(segment, "GetTerminology") else ""
        if term_str:
            try:
                term = terminology_entry_from_string(term_str)
            except Exception:  # noqa: BLE001 - a malformed tag only loses the terminology
                term = None
        out.segments.append(Segment(name=segment.GetName(), mask=segment_mask(seg_node, sid, reference_volume),
                                    color=tuple(float(c) for c in segment.GetColor()),  # type: ignore[arg-type]
                                    label=i + 1, terminology=term))
    return out


def write_segmentation_node(seg_node: Any, reference_volume: Any, path: str | os.PathLike,
                            names: Sequence[str] | None = None) -> Path:
    """Export segments on the reference volume's grid with the engine writer (atomic): ``.seg.nrrd`` (overlaps
    kept, names/colours/terminology) or ``.nii.gz``/``.nii``/``.nrrd`` label map + sidecar JSON."""
    from cervixtl.io import write_segmentation

    low = str(path).lower()
    if not low.endswith((".seg.nrrd", ".nii.gz", ".nii", ".nrrd")):
        raise ValueError(f"{path}: export must end in .seg.nrrd, .nii.gz, .nii or .nrrd")
    return write_segmentation(segmentation_to_engine(seg_node, reference_volume, names), path)


# ============================================================================ loading engine output
def subject_hierarchy_parent(scene: Any, data_node: Any) -> int | None:
    """Subject-hierarchy item that holds ``data_node`` (its study), or None."""
    slicer = _slicer()
    sh = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
    if sh is None:
        return None
    item = sh.GetItemByDataNode(data_node)
    if not item:
        return None
    return sh.GetItemParent(item)


def place_beside(scene: Any, node: Any, reference_node: Any) -> None:
    """Put ``node`` under the same subject-hierarchy parent (the CT's study) as ``reference_node``."""
    slicer = _slicer()
    sh = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
    parent = subject_hierarchy_parent(scene, reference_node)
    if sh is None or parent is None:
        return
    item = sh.GetItemByDataNode(node)
    if not item:
        item = sh.CreateItem(parent, node)
    sh.SetItemParent(item, parent)


def load_segmentation_file(path: str | os.PathLike, reference_volume: Any, *, name: str | None = None,
                           target_node: Any = None) -> Any:
    """Load an engine ``.seg.nrrd`` into a segmentation node on ``reference_volume``'s geometry.

    Segment names, colours and terminology come from the file. With ``target_node`` its segments are replaced
    (the node is kept); otherwise a new node is added. The node is placed under the CT's study in the subject
    hierarchy. On any failure the scene is left as it was.

    Raises:
        ValueError: unreadable file, or its grid differs from the reference volume's.
    """
    slicer = _slicer()
    scene = reference_volume.GetScene()
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"{p}: no such segmentation file")
    _check_same_grid(p, reference_volume)
    temp = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", name or "CervixTL contours")
    try:
        storage = slicer.vtkMRMLSegmentationStorageNode()
        storage.SetFileName(str(p))
        if not storage.ReadData(temp):
            raise ValueError(f"{p}: not a readable .seg.nrrd")
        temp.SetReferenceImageGeometryParameterFromVolumeNode(reference_volume)
        if target_node is None:
            temp.CreateDefaultDisplayNodes()
            place_beside(scene, temp, reference_volume)
            return temp
    except Exception:
        _remove_with_display(scene, temp)
        raise
    try:
        target_node.GetSegmentation().DeepCopy(temp.GetSegmentation())
        target_node.SetReferenceImageGeometryParameterFromVolumeNode(reference_volume)
        target_node.CreateDefaultDisplayNodes()
        place_beside(scene, target_node, reference_volume)
    finally:
        _remove_with_display(scene, temp)
    return target_node


def _remove_with_display(scene: Any, node: Any) -> None:
    """Remove a node and its display / storage nodes from the scene."""
    extra = [node.GetNthDisplayNode(i) for i in range(node.GetNumberOfDisplayNodes())]
    extra += [node.GetNthStorageNode(i) for i in range(node.GetNumberOfStorageNodes())]
    for n in extra:
        if n is not None:
            scene.RemoveNode(n)
    scene.RemoveNode(node)


def _check_same_grid(path: Path, reference_volume: Any) -> None:
    from cervixtl.errors import CervixTLError
    from cervixtl.image import geometry_differences
    from cervixtl.io import read_segmentation

    try:
        seg = read_segmentation(path)
    except CervixTLError as exc:
        raise ValueError(str(exc)) from None
    diffs = geometry_differences(volume_grid(reference_volume), seg.grid)
    if diffs:
        raise ValueError(f"{path.name} is not on the CT grid: " + "; ".join(diffs))


def segment_summary(seg_node: Any, reference_volume: Any) -> list[dict[str, Any]]:
    """Per segment: name, voxels and volume (mL) on the reference grid."""
    grid = volume_grid(reference_volume)
    ml_per_voxel = grid.voxel_volume_mm3 / 1000.0
    seg = seg_node.GetSegmentation()
    rows = []
    for sid in segment_ids(seg_node):
        n = int(np.count_nonzero(segment_mask(seg_node, sid, reference_volume)))
        rows.append({"id": sid, "name": seg.GetSegment(sid).GetName(), "voxels": n,
                     "volume_ml": round(n * ml_per_voxel, 3)})
    return rows


# ============================================================================ segmentation <-> CT ties
def tie_to_ct(seg_node: Any, ct_node: Any) -> None:
    """Record that ``seg_node`` was made on ``ct_node`` (a node reference, saved with the scene)."""
    seg_node.SetNodeReferenceID(CT_REFERENCE_ROLE, ct_node.GetID())


def tied_ct(seg_node: Any) -> Any:
    """The CT ``seg_node`` belongs to: its CervixTL reference, else Slicer's reference-geometry volume; None when
    it has neither."""
    ct = seg_node.GetNodeReference(CT_REFERENCE_ROLE)
    if ct is None:
        ct = seg_node.GetNodeReference(seg_node.GetReferenceImageGeometryReferenceRole())
    return ct


def check_same_ct(seg_node: Any, ct_node: Any, action: str) -> None:
    """Refuse ``action`` (e.g. "export") when ``seg_node`` belongs to another CT than ``ct_node``.

    Raises:
        ValueError: one readable line naming both nodes.
    """
    if seg_node is None or ct_node is None:
        raise ValueError(f"cannot {action}: select the planning CT and its segmentation first")
    ct = tied_ct(seg_node)
    if ct is not None and ct.GetID() != ct_node.GetID():
        raise ValueError(f"cannot {action}: segmentation {seg_node.GetName()!r} was made on CT {ct.GetName()!r}, "
                         f"not on the selected CT {ct_node.GetName()!r}; select its own CT")


def detach_from_files(node: Any) -> None:
    """Remove the storage nodes of ``node``, so that a normal Save never writes into the file it came from
    (it asks for a new location instead)."""
    scene = node.GetScene()
    storage = [node.GetNthStorageNode(i) for i in range(node.GetNumberOfStorageNodes())]
    node.SetAndObserveStorageNodeID(None)
    for st in storage:
        if st is not None and scene is not None:
            scene.RemoveNode(st)


def keep_proposal_copy(seg_node: Any, ct_node: Any) -> Any:
    """Keep a hidden copy of ``seg_node``'s segments as the model's original proposal (referenced from
    ``seg_node`` and saved with the scene: no temporary file that a reopened scene would miss); replaces an
    earlier copy. Returns the copy."""
    scene = seg_node.GetScene()
    old = seg_node.GetNodeReference(PROPOSAL_REFERENCE_ROLE)
    if old is not None:
        _remove_with_display(scene, old)
    copy = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", f"{seg_node.GetName()} original proposal")
    copy.GetSegmentation().DeepCopy(seg_node.GetSegmentation())
    copy.SetReferenceImageGeometryParameterFromVolumeNode(ct_node)
    copy.SetHideFromEditors(True)
    copy.SetAttribute("CervixTL.Role", "original proposal")
    tie_to_ct(copy, ct_node)
    seg_node.SetNodeReferenceID(PROPOSAL_REFERENCE_ROLE, copy.GetID())
    return copy


def proposal_copy(seg_node: Any) -> Any:
    """The hidden original-proposal node of ``seg_node`` (None when there is none)."""
    return seg_node.GetNodeReference(PROPOSAL_REFERENCE_ROLE)


# ============================================================================ DICOM
def ct_instance_files(ct_node: Any, dicom_database: Any) -> list[str]:
    """The DICOM files of the CT's own instances (``DICOM.instanceUIDs`` of the volume, looked up with
    ``dicom_database.fileForInstance``), in the volume's order; [] when the CT was not loaded from DICOM.

    Raises:
        ValueError: some instance is no longer in the database or its file is gone.
    """
    uids = (ct_node.GetAttribute("DICOM.instanceUIDs") or "").split()
    if not uids or dicom_database is None:
        return []
    files = [dicom_database.fileForInstance(uid) for uid in uids]
    missing = [u for u, f in zip(uids, files) if not f or not os.path.isfile(f)]
    if missing:
        raise ValueError(f"{len(missing)} of the {len(uids)} DICOM files of CT {ct_node.GetName()!r} are no longer "
                         "in the DICOM database; re-import the CT series")
    return [str(f) for f in files]


def export_with_slicer_rt(exporter: Any, ct_node: Any, seg_node: Any, folder: Path) -> Path:
    """Export the CT and the segmentation as one new DICOM RT study with SlicerRT's plugin (``exporter``:
    ``DicomRtImportExportPluginClass``): both exportables (SlicerRT needs the primary CT image), under the
    CT's subject-hierarchy study (a new anonymous patient/study when it has none).

    Raises:
        ValueError: SlicerRT's error message.
    """
    slicer = _slicer()
    scene = ct_node.GetScene()
    sh = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
    if subject_hierarchy_parent(scene, ct_node) in (None, sh.GetSceneItemID()):
        patient = sh.CreateSubjectItem(sh.GetSceneItemID(), "Anonymous")
        study = sh.CreateStudyItem(patient, "CervixTL")
        item = sh.GetItemByDataNode(ct_node)
        if item:
            sh.SetItemParent(item, study)
        else:
            sh.CreateItem(study, ct_node)
    place_beside(scene, seg_node, ct_node)
    exportables = [*exporter.examineForExport(sh.GetItemByDataNode(ct_node)),
                   *exporter.examineForExport(sh.GetItemByDataNode(seg_node))]
    folder.mkdir(parents=True, exist_ok=True)
    for e in exportables:
        e.directory = str(folder)
    error = exporter.export(exportables)
    if error:
        raise ValueError(f"SlicerRT: {error}")
    return folder


# ============================================================================ reading files into the scene
def read_file_detached(scene: Any, path: str | os.PathLike, name: str, *, segmentation: bool = False,
                       reference_volume: Any = None) -> Any:
    """Read a volume file (or a ``.seg.nrrd``) into a new node called ``name``, NOT bound to the file: the
    storage node is removed after reading, so that Slicer's Save asks for a new place instead of writing edits
    back (into the case library, bypassing its anonymisation and geometry checks). A segmentation gets
    ``reference_volume``'s geometry and a tie to it.

    Raises:
        OSError: unreadable file (the scene is left as it was).
    """
    node_class, storage_class = (("vtkMRMLSegmentationNode", "vtkMRMLSegmentationStorageNode") if segmentation
                                 else ("vtkMRMLScalarVolumeNode", "vtkMRMLVolumeArchetypeStorageNode"))
    node = scene.AddNewNodeByClass(node_class, name)
    storage = scene.AddNewNodeByClass(storage_class)
    try:
        storage.SetFileName(str(path))
        if not storage.ReadData(node):
            scene.RemoveNode(node)
            raise OSError(f"could not read {Path(path).name}")
    finally:
        scene.RemoveNode(storage)
    node.SetAndObserveStorageNodeID(None)
    if segmentation and reference_volume is not None:
        node.SetReferenceImageGeometryParameterFromVolumeNode(reference_volume)
        tie_to_ct(node, reference_volume)
    return node


# ============================================================================ undo
class ContourHistory:
    """Undo for the changes the module makes to a segmentation (a new proposal into an existing node, applied
    margins): :meth:`keep` saves a copy of its segments (a ``vtkSegmentation`` deep copy) before the change,
    :meth:`undo` puts the last copy back. At most ``depth`` copies per node."""

    def __init__(self, depth: int = 5) -> None:
        self.depth = int(depth)
        self._copies: dict[str, list[Any]] = {}

    def keep(self, seg_node: Any) -> None:
        """Save ``seg_node``'s segments as they are now."""
        slicer = _slicer()
        copy = slicer.vtkSegmentation()
        copy.DeepCopy(seg_node.GetSegmentation())
        stack = self._copies.setdefault(seg_node.GetID(), [])
        stack.append(copy)
        del stack[:-self.depth]

    def can_undo(self, seg_node: Any) -> bool:
        """True when :meth:`undo` has something to restore for ``seg_node``."""
        return seg_node is not None and bool(self._copies.get(seg_node.GetID()))

    def undo(self, seg_node: Any) -> bool:
        """Restore the last kept segments of ``seg_node``; False when there is nothing to undo."""
        stack = self._copies.get(seg_node.GetID()) if seg_node is not None else None
        if not stack:
            return False
        seg_node.GetSegmentation().DeepCopy(stack.pop())
        seg_node.Modified()
        return True

    def forget(self, seg_node: Any = None) -> None:
        """Drop the copies of ``seg_node`` (all nodes when None: scene closed)."""
        if seg_node is None:
            self._copies.clear()
        else:
            self._copies.pop(seg_node.GetID(), None)


def show_3d(seg_node: Any, visible: bool = True) -> None:
    """Show (or hide) the segments as closed surfaces in the 3D views."""
    if visible:
        seg_node.CreateClosedSurfaceRepresentation()
    display = seg_node.GetDisplayNode()
    if display is None:
        seg_node.CreateDefaultDisplayNodes()
        display = seg_node.GetDisplayNode()
    display.SetVisibility3D(bool(visible))
