"""CervixTL engine: transfer-learned contouring of cervical cancer radiotherapy targets on planning CT.

The engine is a plain Python package (numpy, SimpleITK, torch, MONAI, pydicom); it never imports ``slicer``.
Geometry conventions: arrays (z, y, x); spacing/origin (x, y, z); physical coordinates LPS in mm.

The public API is one function per job (the CLI's commands wrap exactly these); each returns the JSON-ready
report of its command (``"format": "cervixtl-<command>/1"``, schemas in ``Resources/schemas/``)::

    import cervixtl
    rep = cervixtl.contour_file("ct.nii.gz", "contours.seg.nrrd", model="cervixtl-demo", device="cpu")
    print({s["name"]: s["volume_ml"] for s in rep["structures"]})

The names are imported on first use, so ``import cervixtl`` stays light (no torch until a job needs it).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from .api.cases import add_case, check_cases, list_cases, show_case
    from .api.contour import contour_file
    from .api.dicom import rtstruct_export, rtstruct_import, rtstruct_list, seg_export, seg_import
    from .api.info import image_info
    from .api.masks import margins_file
    from .api.models import import_model, list_models, show_model
    from .api.training import compare_cases, finetune_cases
    from .demo import run_demo
    from .devices import probe_devices
    from .errors import BadInput, Cancelled, CervixTLError, GeometryMismatch, ModelError
    from .metrics import evaluate_files

#: public name -> module that defines it
_LAZY = {
    "contour_file": ".api.contour", "margins_file": ".api.masks", "image_info": ".api.info",
    "evaluate_files": ".metrics", "list_models": ".api.models", "show_model": ".api.models",
    "import_model": ".api.models", "add_case": ".api.cases", "list_cases": ".api.cases", "show_case": ".api.cases",
    "check_cases": ".api.cases",
    "finetune_cases": ".api.training", "compare_cases": ".api.training", "rtstruct_import": ".api.dicom",
    "rtstruct_export": ".api.dicom", "rtstruct_list": ".api.dicom", "seg_export": ".api.dicom",
    "seg_import": ".api.dicom", "run_demo": ".demo", "probe_devices": ".devices", "CervixTLError": ".errors", "BadInput": ".errors",
    "GeometryMismatch": ".errors", "ModelError": ".errors", "Cancelled": ".errors",
}

__all__ = [
    "__version__", "contour_file", "margins_file", "image_info", "evaluate_files", "list_models", "show_model",
    "import_model", "add_case", "list_cases", "show_case", "check_cases", "finetune_cases", "compare_cases",
    "rtstruct_import", "rtstruct_export", "rtstruct_list", "seg_export", "seg_import", "run_demo", "probe_devices",
    "CervixTLError", "BadInput", "GeometryMismatch", "ModelError", "Cancelled",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
