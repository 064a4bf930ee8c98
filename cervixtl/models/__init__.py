"""Models: cards, verified packages, the registry, MONAI networks, transfer-learning helpers, downloads.

Submodules: :mod:`.card` (``ModelCard``), :mod:`.package` (``save_package``/``load_package``),
:mod:`.registry` (``Registry``), :mod:`.networks` (``build_network``), :mod:`.transfer`
(``load_matching_weights``/``freeze``/``read_checkpoint``), :mod:`.download` (verified downloads).
"""

from .card import ModelCard
from .package import load_package, save_package
from .registry import Registry

__all__ = ["ModelCard", "Registry", "load_package", "save_package"]
