"""Reading and writing CTs, label maps and segmentations.

Supported inputs: a DICOM series folder (the CT series is picked; see :func:`read_dicom_series`), NIfTI
(``.nii``, ``.nii.gz``), NRRD (``.nrrd``, ``.nhdr``), MetaImage (``.mha``, ``.mhd``). Segmentations: Slicer
``.seg.nrrd`` (via ``slicerio``, overlapping segments kept in layers) and multi-label NIfTI/NRRD/MHA with a
sidecar ``<stem>.json`` carrying the label names and colours.

All images come back as :class:`~cervixtl.image.Image` in SimpleITK's (z, y, x) array order with LPS geometry;
every writer is atomic and verifies what it wrote (see :mod:`cervixtl.atomic`).

Modules: :mod:`.names` (extensions, stems, sidecars), :mod:`.checks` (truncation, spacing, NaN, label values,
CT plausibility), :mod:`.images` (image files), :mod:`.dicom` (series), :mod:`.segmentations`
(segmentations and single masks).
"""

from __future__ import annotations

import SimpleITK as sitk

from .checks import (
                            MAX_LABELS,
                            check_complete_gzip,
                            check_ct,
                            check_finite,
                            check_header_spacing,
                            check_label_values,
)
from .dicom import list_dicom_series, read_dicom_series
from .images import read_ct, read_image, write_image
from .names import IMAGE_SUFFIXES, first_line, is_seg_nrrd, sidecar_path, stem
from .segmentations import (
                            _seg_layers,
                            ijk_to_lps_matrix,
                            read_label_sidecar,
                            read_mask,
                            read_segmentation,
                            write_segmentation,
)

# ITK prints multi-line "WARNING: In itkImageSeriesReader.hxx ..." blocks on stderr; every condition they
# describe is checked here and reported as one line, so the console stays readable.
sitk.ProcessObject.SetGlobalWarningDisplay(False)

__all__ = [
                            "IMAGE_SUFFIXES",
                            "MAX_LABELS",
                            "_seg_layers",
                            "check_complete_gzip",
                            "check_ct",
                            "check_finite",
                            "check_header_spacing",
                            "check_label_values",
                            "first_line",
                            "ijk_to_lps_matrix",
                            "is_seg_nrrd",
                            "list_dicom_series",
                            "read_ct",
                            "read_dicom_series",
                            "read_image",
                            "read_label_sidecar",
                            "read_mask",
                            "read_segmentation",
                            "sidecar_path",
                            "stem",
                            "write_image",
                            "write_segmentation",
]
