"""Write scene nodes to files the engine reads, and read case files back into the scene (no Qt).

Uses MRML storage nodes only (they exist in Slicer and in ``slicer-core``); segment masks are moved between
grids with ``slicer.util`` (``arrayFromSegmentBinaryLabelmap`` / ``updateSegmentBinaryLabelmapFromArray``), which
resamples every segment onto the CT's voxel grid, so that the written ``.seg.nrrd`` has exactly the CT's
geometry (the engine refuses a case whose labels are on another grid). Overlapping segments (GTV inside CTV
inside PTV) are kept: each goes to its own layer. Temporary nodes are removed from the scene afterwards.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any


def _write_with_storage(scene: Any, node: Any, storage_class: str, path: str | os.PathLike) -> Path:
    storage = scene.AddNewNodeByClass(storage_class)
    try:
        storage.SetFileName(str(path))
        if hasattr(storage, "SetUseCompression"):
            storage.SetUseCompression(1)
        if not storage.WriteData(node):
            raise OSError(f"could not write {node.GetName()} to {path}")
    finally:
        scene.RemoveNode(storage)
    return Path(path)


def write_volume(scene: Any, volume_node: Any, path: str | os.PathLike) -> Path:
    """Write a scalar volume node (``.nrrd`` / ``.nii.gz``; LPS on disk whatever Slicer's RAS in memory)."""
    return _write_with_storage(scene, volume_node, "vtkMRMLVolumeArchetypeStorageNode", path)


def segment_names(segmentation_node: Any) -> list[str]:
    """Names of the segments of a segmentation node, in order."""
    seg = segmentation_node.GetSegmentation()
    return [seg.GetNthSegment(i).GetName() for i in range(seg.GetNumberOfSegments())]


def _node_ids(scene: Any) -> set[str]:
    return {scene.GetNthNode(i).GetID() for i in range(scene.GetNumberOfNodes())}


def _remove_new_nodes(scene: Any, before: set[str]) -> None:
    """Remove every node added since ``before`` (temporary label maps and their display nodes)."""
    for node_id in sorted(_node_ids(scene) - before):
        node = scene.GetNodeByID(node_id)
        if node is not None:
            scene.RemoveNode(node)


def write_segmentation_on_grid(scene: Any, segmentation_node: Any, volume_node: Any,
                               path: str | os.PathLike) -> Path:
    """Write every segment of ``segmentation_node`` resampled onto ``volume_node``'s voxel grid as a
    ``.seg.nrrd`` (names and colours kept, overlaps kept in layers).

    Raises:
        ValueError: the segmentation has no segments.
    """
    import slicer.util as su

    src = segmentation_node.GetSegmentation()
    if src.GetNumberOfSegments() == 0:
        raise ValueError(f"segmentation {segmentation_node.GetName()} has no segments")
    before = _node_ids(scene)
    tmp = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "CervixTL export (temporary)")
    try:
        tmp.SetReferenceImageGeometryParameterFromVolumeNode(volume_node)
        dst = tmp.GetSegmentation()
        for i in range(src.GetNumberOfSegments()):
            sid = src.GetNthSegmentID(i)
            segment = src.GetSegment(sid)
            mask = su.arrayFromSegmentBinaryLabelmap(segmentation_node, sid, volume_node)
            new_id = dst.AddEmptySegment(sid, segment.GetName(), segment.GetColor())
            su.updateSegmentBinaryLabelmapFromArray(mask, tmp, new_id, volume_node)
            dst.GetSegment(new_id).SetName(segment.GetName())  # the update may rename it
        storage = scene.AddNewNodeByClass("vtkMRMLSegmentationStorageNode")
        try:
            storage.SetCropToMinimumExtent(False)
            storage.SetFileName(str(path))
            if not storage.WriteData(tmp):
                raise OSError(f"could not write {segmentation_node.GetName()} to {path}")
        finally:
            scene.RemoveNode(storage)
    finally:
        _remove_new_nodes(scene, before)
    return Path(path)


def _read_node(scene: Any, node_class: str, storage_class: str, path: str | os.PathLike, name: str,
               what: str) -> Any:
    """Read ``path`` into a new ``node_class`` node called ``name`` with a ``storage_class`` storage node
    (both removed again when reading fails)."""
    node = scene.AddNewNodeByClass(node_class, name)
    storage = scene.AddNewNodeByClass(storage_class)
    storage.SetFileName(str(path))
    if not storage.ReadData(node):
        scene.RemoveNode(node)
        scene.RemoveNode(storage)
        raise OSError(f"could not read the {what} {path}")
    node.SetAndObserveStorageNodeID(storage.GetID())
    return node


def read_volume(scene: Any, path: str | os.PathLike, name: str) -> Any:
    """Read a volume file into a new ``vtkMRMLScalarVolumeNode`` called ``name``."""
    return _read_node(scene, "vtkMRMLScalarVolumeNode", "vtkMRMLVolumeArchetypeStorageNode", path, name, "volume")


def read_segmentation(scene: Any, path: str | os.PathLike, name: str, volume_node: Any = None) -> Any:
    """Read a ``.seg.nrrd`` into a new ``vtkMRMLSegmentationNode`` (reference geometry = ``volume_node``)."""
    node = _read_node(scene, "vtkMRMLSegmentationNode", "vtkMRMLSegmentationStorageNode", path, name,
                      "segmentation")
    if volume_node is not None:
        node.SetReferenceImageGeometryParameterFromVolumeNode(volume_node)
    return node
