"""Models: cards, verified packages, the registry, MONAI networks, transfer-learning helpers, downloads.

Submodules: :mod:`.card` (``ModelCard``), :mod:`.package` (``save_package``/``load_package``),
:mod:`.registry` (``Registry``), :mod:`.networks` (``build_network``), :mod:`.transfer`
(``load_matching_weights``/``freeze``/``read_checkpoint``), :mod:`.download` (verified downloads).

The names below are imported on first use (PEP 562), so that ``cervixtl.models.download`` (the catalogue) and
``cervixtl.models.card`` import without torch.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["ModelCard", "Registry", "load_package", "save_package"]

_WHERE = {"ModelCard": ".card", "Registry": ".registry", "load_package": ".package", "save_package": ".package"}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
