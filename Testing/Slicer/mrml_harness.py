"""Shared test harness: a real MRML scene from the ``slicer-core`` package, hosted in a plain Python process.

``slicer-core`` ships the compiled Slicer MRML/logic libraries and ``slicer.util``, but no Qt, no
``slicer.app`` and no module registry. :func:`make_slicer_env` performs the set-up that Slicer's application
normally does at start-up, so that the ``slicer.util`` array helpers and the segmentation node work:

1. a fresh ``slicer.vtkMRMLScene`` assigned to ``slicer.mrmlScene``;
2. the binary-labelmap <-> closed-surface conversion rules registered (once per process);
3. the volumes, segmentations and subject-hierarchy module logics attached to the scene;
4. a stand-in ``slicer.modules`` namespace with ``volumes.logic()``, ``segmentations.logic()`` and
   ``subjecthierarchy.logic()``.

Usage in a test (skip with a clear reason when slicer-core is absent)::

    import pytest
    mrml_harness = pytest.importorskip("mrml_harness")   # Testing/Slicer is on sys.path via conftest.py
    env = mrml_harness.make_slicer_env()                 # raises pytest.skip when slicer-core is missing
    vol = mrml_harness.add_volume(env, array_zyx, spacing_xyz=(1, 1, 2), origin_ras=(0, 0, 0))

or use the pytest fixture ``slicer_env`` defined in ``Testing/Slicer/conftest.py``.

Each call creates a NEW scene and replaces ``slicer.mrmlScene``/``slicer.modules``; the logics are kept alive
on the returned namespace (VTK objects are freed when the last Python reference goes away).
"""

from __future__ import annotations

import types
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["SKIP_REASON", "slicer_core_available", "make_slicer_env", "make_scene", "add_volume",
           "ijk_to_ras_matrix", "add_segmentation"]

SKIP_REASON = "slicer-core (real MRML libraries, `pip install slicer-core`) is not installed"


def slicer_core_available() -> bool:
    """True when ``import slicer`` gives the slicer-core package (has ``vtkMRMLScene``)."""
    try:
        import slicer  # noqa: F401
    except ImportError:
        return False
    return hasattr(slicer, "vtkMRMLScene")


def _register_conversion_rules(slicer: Any) -> None:
    factory = slicer.vtkSegmentationConverterFactory.GetInstance()
    if not factory.GetConverterRules():
        factory.RegisterConverterRule(slicer.vtkBinaryLabelmapToClosedSurfaceConversionRule())
        factory.RegisterConverterRule(slicer.vtkClosedSurfaceToBinaryLabelmapConversionRule())


def make_slicer_env() -> types.SimpleNamespace:
    """Create a fresh MRML scene with the logics ``slicer.util`` needs and install it as ``slicer.mrmlScene``.

    Returns a namespace with ``slicer`` (the module), ``scene`` (vtkMRMLScene), ``volumes_logic``,
    ``segmentations_logic``, ``subject_hierarchy_logic`` and ``modules`` (the stand-in ``slicer.modules``).
    Calls ``pytest.skip`` when slicer-core is not installed (when pytest is importable), else raises
    ImportError.
    """
    if not slicer_core_available():
        try:
            import pytest
        except ImportError as exc:  # pragma: no cover - outside pytest
            raise ImportError(SKIP_REASON) from exc
        pytest.skip(SKIP_REASON)
    import slicer
    import slicer.util  # noqa: F401  (slicer.util must be importable for the helpers)

    scene = slicer.vtkMRMLScene()
    slicer.mrmlScene = scene
    _register_conversion_rules(slicer)
    volumes = slicer.vtkSlicerVolumesLogic()
    volumes.SetMRMLScene(scene)
    segmentations = slicer.vtkSlicerSegmentationsModuleLogic()
    segmentations.SetMRMLScene(scene)
    subject_hierarchy = slicer.vtkSlicerSubjectHierarchyModuleLogic()
    subject_hierarchy.SetMRMLScene(scene)
    modules = types.SimpleNamespace(
        volumes=types.SimpleNamespace(logic=lambda: volumes),
        segmentations=types.SimpleNamespace(logic=lambda: segmentations),
        subjecthierarchy=types.SimpleNamespace(logic=lambda: subject_hierarchy),
    )
    slicer.modules = modules
    env = types.SimpleNamespace(slicer=slicer, scene=scene, volumes_logic=volumes,
                                segmentations_logic=segmentations, subject_hierarchy_logic=subject_hierarchy,
                                modules=modules)
    # keep the logics alive as long as the scene object lives (tests sometimes keep only the scene)
    scene._cervixtl_env = env  # type: ignore[attr-defined]
    return env


def make_scene() -> Any:
    """Shortcut: :func:`make_slicer_env` and return only the ``vtkMRMLScene``."""
    return make_slicer_env().scene


def ijk_to_ras_matrix(spacing_xyz: Sequence[float], origin_ras: Sequence[float],
                      directions_ras: np.ndarray | None = None) -> Any:
    """A ``vtkMatrix4x4`` IJK->RAS from spacing (mm, x,y,z), origin (RAS mm, centre of voxel 0) and a 3x3
    direction matrix whose COLUMNS are the RAS unit vectors of the i, j, k axes (default: identity, i.e. i
    towards RAS +x = the patient's right, j anterior, k superior; use diag(-1, -1, 1) for an LPS-ordered CT)."""
    import vtk

    d = np.eye(3) if directions_ras is None else np.asarray(directions_ras, dtype=float)
    m = vtk.vtkMatrix4x4()
    for r in range(3):
        for c in range(3):
            m.SetElement(r, c, float(d[r, c] * spacing_xyz[c]))
        m.SetElement(r, 3, float(origin_ras[r]))
    return m


def add_volume(env: types.SimpleNamespace, array_zyx: np.ndarray, *, spacing_xyz: Sequence[float] = (1, 1, 1),
               origin_ras: Sequence[float] = (0, 0, 0), directions_ras: np.ndarray | None = None,
               name: str = "CT") -> Any:
    """Add a scalar volume node (array z,y,x; spacing mm x,y,z; origin RAS mm) to ``env.scene``."""
    import slicer.util

    return slicer.util.addVolumeFromArray(np.ascontiguousarray(array_zyx),
                                          ijk_to_ras_matrix(spacing_xyz, origin_ras, directions_ras), name)


def add_segmentation(env: types.SimpleNamespace, reference_volume: Any, masks: dict[str, np.ndarray],
                     name: str = "Segmentation", colors: dict[str, Sequence[float]] | None = None) -> Any:
    """Add a segmentation node on ``reference_volume``'s grid with one segment per (name -> z,y,x mask).
    Segment IDs equal the names; names are set again after the array update (slicer-core renames them)."""
    import slicer.util

    seg = env.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", name)
    seg.CreateDefaultDisplayNodes()
    seg.SetReferenceImageGeometryParameterFromVolumeNode(reference_volume)
    for seg_name, mask in masks.items():
        color = (colors or {}).get(seg_name, (1.0, 0.0, 0.0))
        sid = seg.GetSegmentation().AddEmptySegment(seg_name, seg_name, tuple(float(c) for c in color))
        slicer.util.updateSegmentBinaryLabelmapFromArray(np.asarray(mask).astype(np.uint8), seg, sid,
                                                         reference_volume)
        seg.GetSegmentation().GetSegment(sid).SetName(seg_name)
    return seg
