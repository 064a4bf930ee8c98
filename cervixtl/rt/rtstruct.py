"""DICOM RT Structure Set import (contours -> masks on the CT grid) and export (masks -> contours).

Written on pydicom rather than ``rt-utils``: rt-utils draws contours with OpenCV on integer voxel positions
(an outline through voxel *centres*, which loses half a voxel all round when read back with a centre-inside
rule), ignores the frame of reference when reading, and needs OpenCV. This module gathers the public names of:

* :mod:`cervixtl.rt.structure_set` -- read an RTSTRUCT file into ROIs and planar contours (LPS mm);
* :mod:`cervixtl.rt.ct_series` -- the planning CT and the UIDs an RTSTRUCT refers to;
* :mod:`cervixtl.rt.struct_import` -- rasterise contours on a CT grid (voxel centres inside, even-odd rule);
* :mod:`cervixtl.rt.struct_export` -- trace sub-voxel outlines and write an RTSTRUCT referring to the CT.

Every user-caused problem is a :class:`~cervixtl.errors.BadInput` with one line, or a warning in the report.
Messages never contain patient names or IDs.
"""

from __future__ import annotations

from .ct_series import CT_SOP_CLASS, CTSeries, read_ct_series
from .struct_export import build_rtstruct, export_rtstruct, segment_contours
from .struct_import import BETWEEN_SLICES_TOL, PLANAR_TOL_SLICES, ImportReport, import_rtstruct, rasterize
from .structure_set import RTSTRUCT_SOP_CLASS, Contour, Roi, StructureSet, read_rtstruct

__all__ = [
    "RTSTRUCT_SOP_CLASS", "CT_SOP_CLASS", "PLANAR_TOL_SLICES", "BETWEEN_SLICES_TOL",
    "Contour", "Roi", "StructureSet", "read_rtstruct",
    "CTSeries", "read_ct_series",
    "ImportReport", "rasterize", "import_rtstruct",
    "segment_contours", "build_rtstruct", "export_rtstruct",
]
