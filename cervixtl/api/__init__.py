"""The engine's jobs, one function per job (the layer the CLI and the Slicer modules call).

Each function reads its inputs, runs the engine parts (:mod:`cervixtl.inference`, :mod:`cervixtl.margins`,
:mod:`cervixtl.metrics`, :mod:`cervixtl.training`, :mod:`cervixtl.rt`, ...), writes its outputs atomically and
returns the JSON-ready report the CLI prints with ``--json``: a dict whose ``"format"`` is
``"cervixtl-<command>/1"``, validated by ``Resources/schemas/cervixtl-<command>.schema.json``. The public names
are re-exported (lazily, so ``import cervixtl`` stays torch-free) from :mod:`cervixtl`.
"""

from __future__ import annotations

from ..reports import json_safe, report

__all__ = ["json_safe", "report"]
