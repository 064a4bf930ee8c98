"""Which of the engine's Python dependencies are missing from the running Python (Slicer's).

Nothing is installed here: the module asks the user first, then uses Slicer's ``slicer.util.pip_install``
(and the PyTorch extension's installer for torch, which picks the build matching the CUDA driver).
"""

from __future__ import annotations

import importlib.util

#: import name -> pip requirement (ranges as in the engine's pyproject.toml).
ENGINE_REQUIREMENTS: dict[str, str] = {
    "numpy": "numpy>=1.24,<3",
    "scipy": "scipy>=1.10,<2",
    "SimpleITK": "SimpleITK>=2.3,<3",
    "torch": "torch>=2.4,<2.15",
    "monai": "monai>=1.4,<1.7",
    "pydicom": "pydicom>=2.4,<4",
    "slicerio": "slicerio>=1.4,<2",
    "safetensors": "safetensors>=0.4,<1",
    "highdicom": "highdicom>=0.23,<1",
    "matplotlib": "matplotlib>=3.7,<4",
}


def missing_modules(names: list[str] | None = None) -> list[str]:
    """Import names (of :data:`ENGINE_REQUIREMENTS`, or ``names``) that cannot be found."""
    out = []
    for name in names or list(ENGINE_REQUIREMENTS):
        try:
            found = importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            out.append(name)
    return out


def pip_requirements(missing: list[str], *, without_torch: bool = False) -> list[str]:
    """pip requirement strings for the missing import names (torch left out when ``without_torch``)."""
    return [ENGINE_REQUIREMENTS[m] for m in missing if m in ENGINE_REQUIREMENTS and not (without_torch and m == "torch")]
