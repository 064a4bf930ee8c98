"""JSON-ready reports: :func:`json_safe` (strict JSON values) and :func:`report` (the ``--json`` envelope).

Every ``--json`` output and every JSON file the engine writes goes through :func:`json_safe`; :func:`report`
adds ``"format": "cervixtl-<command>/1"`` (schemas in ``Resources/schemas/``). Light on purpose (numpy only),
so that listing models or cases imports nothing heavy.
"""

from __future__ import annotations

import math
import os
from typing import Any

import numpy as np


def json_safe(value: Any) -> Any:
    """Replace NaN / infinity by None (JSON null) in nested dicts / lists, numpy scalars by Python numbers and
    paths by text, for strict JSON."""
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, np.generic):
        return json_safe(value.item())
    return value


def report(command: str, data: dict[str, Any]) -> dict[str, Any]:
    """``{"format": "cervixtl-<command>/1", **data}`` made JSON-safe (NaN/inf -> null, paths -> str)."""
    out: dict[str, Any] = json_safe({"format": f"cervixtl-{command}/1", **data})
    return out
