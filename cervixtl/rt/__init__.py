"""DICOM RT input and output: RT Structure Sets (import and export), DICOM SEG, de-identification.

* :mod:`cervixtl.rt.rtstruct` -- RT Structure Sets (re-exports :mod:`~cervixtl.rt.structure_set`, :mod:`~cervixtl.rt.ct_series`,
  :mod:`~cervixtl.rt.struct_import`, :mod:`~cervixtl.rt.struct_export`): read an RTSTRUCT and rasterise its closed
  planar contours onto a CT grid;
  write a segmentation as an RTSTRUCT that refers to the planning CT.
* :mod:`cervixtl.rt.contours` -- polygon fill (even-odd rule, voxel centres) and mask -> outline polygons.
* :mod:`cervixtl.rt.seg` -- DICOM SEG export / import (highdicom) with coded terminology.
* :mod:`cervixtl.rt.deid` -- PS3.15 Basic Profile de-identification of DICOM headers.
* :mod:`cervixtl.rt.roi_mapping` -- clinical ROI names -> CervixTL structure names, per site.

Geometry follows :mod:`cervixtl.image`: arrays (z, y, x), physical points LPS mm.
"""
