"""Where the engine's data files are: the ``Resources/`` folder (bundled demo model, ``Models.json`` catalogue,
terminology, ROI name mapping, JSON Schemas of every ``--json`` output).

Found, in this order: ``$CERVIXTL_RESOURCES``; ``Resources/`` beside the package (a source checkout, or the
Slicer extension's install layout); the copy inside the package, ``cervixtl/resources/`` (what a wheel ships:
``pip install .`` copies ``Resources/`` there at build time, see ``setup.py``). A folder counts only when it
holds :data:`MARKER`.
"""

from __future__ import annotations

import json
import os
from functools import cache
from pathlib import Path
from typing import Any

#: A file every resources folder has (the Slicer terminology of the structures).
MARKER = "CervixTL.term.json"
_HERE = Path(__file__).resolve().parent


def candidates() -> list[Path]:
    """The folders :func:`resources_dir` tries, first match wins."""
    env = os.environ.get("CERVIXTL_RESOURCES")
    return ([Path(env).expanduser()] if env else []) + [_HERE.parent / "Resources", _HERE / "resources"]


def resources_dir() -> Path:
    """The resources folder in use (see the module docstring); ``Resources/`` beside the package if none."""
    for cand in candidates():
        if (cand / MARKER).is_file():
            return cand
    return _HERE.parent / "Resources"


def resource(*parts: str) -> Path:
    """A path inside :func:`resources_dir`, e.g. ``resource("Models.json")``."""
    return resources_dir().joinpath(*parts)


def schema_path(fmt: str) -> Path:
    """The JSON Schema file of a ``--json`` output: ``"cervixtl-models-list/1"`` (or ``"models-list"``) ->
    ``Resources/schemas/cervixtl-models-list.schema.json``."""
    name = fmt.split("/", 1)[0]
    if not name.startswith("cervixtl-"):
        name = "cervixtl-" + name
    return resource("schemas", f"{name}.schema.json")


@cache
def load_schema(fmt: str) -> dict[str, Any]:
    """The parsed JSON Schema of :func:`schema_path` (validate with the ``jsonschema`` package)."""
    return json.loads(schema_path(fmt).read_text(encoding="utf-8"))
