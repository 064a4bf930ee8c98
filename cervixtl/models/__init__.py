"""Models: cards, verified packages, the registry, MONAI networks, transfer-learning helpers, downloads.

Submodules: :mod:`.card` (``ModelCard``), :mod:`.package` (``save_package``/``load_package``),
:mod:`.registry` (``Registry``), :mod:`.networks` (``build_network``), :mod:`.transfer`
(``load_matching_weights``/``freeze``/``read_checkpoint``), :mod:`.download` (verified downloads).

Importing this package, reading cards and listing the registry import no torch: the names below are loaded
on first use, and torch only where a network is built or tensors are read.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .card import ModelCard
    from .package import load_package, save_package
    from .registry import Registry

_LAZY = {"ModelCard": ".card", "Registry": ".registry", "load_package": ".package", "save_package": ".package"}

__all__ = ["ModelCard", "Registry", "load_package", "save_package"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
