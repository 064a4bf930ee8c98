"""Issue 14 "Extension Manager readiness": the ExtensionsIndex entry, the extension's CMake metadata, and the
run-time files in the BUILD tree.

* ``CervixTL.json`` is validated against the rules of the index's current catalog-entry schema (Slicer's
  ``Schemas/slicer-extension-catalog-entry-schema-v1.0.2.json``: required ``$schema``, ``category``,
  ``scm_url``; no other keys than the schema's; their types), written out here, and agrees with
  ``CMakeLists.txt`` (category, dependencies, repository);
* the description says plainly that the only bundled model is a phantom demo model for research use, and which
  Slicer versions are supported; contributors are "Name (Organization)"; ``cmake_minimum_required`` is Slicer
  5.10's extension template's;
* ``CMake/CervixTLRuntimeFiles.cmake`` run by the real ``cmake`` copies the engine, ``pyproject.toml`` and
  ``Resources/`` into a build tree, from which the engine lists the bundled demo model.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCHEMA_URL = "https://raw.githubusercontent.com/Slicer/Slicer/main/Schemas/slicer-extension-catalog-entry-schema-v1.0.2.json#"
#: The rules of the catalog-entry schema v1.0.2, as JSON Schema (draft-07).
CATALOG_ENTRY_RULES = {
    "type": "object",
    "required": ["$schema", "category", "scm_url"],
    "additionalProperties": False,
    "properties": {
        "$schema": {"type": "string"}, "category": {"type": "string"}, "scm_url": {"type": "string"},
        "scm_revision": {"type": "string"}, "scm_type": {"type": "string", "enum": ["git", "local"]},
        "build_dependencies": {"type": "array", "items": {"type": "string"}},
        "dicom_support_rule": {"type": "string"}, "build_subdirectory": {"type": "string"},
        "enabled": {"type": "boolean"}, "tier": {"type": "integer", "minimum": 1, "maximum": 5},
    },
}


def _cmake_var(name: str) -> str:
    m = re.search(rf'set\({name} "([^"]*)"\)', (REPO / "CMakeLists.txt").read_text(encoding="utf-8"))
    assert m, name
    return m.group(1)


def test_index_entry_is_valid_and_agrees_with_cmake() -> None:
    jsonschema = pytest.importorskip("jsonschema")
    entry = json.loads((REPO / "CervixTL.json").read_text(encoding="utf-8"))
    jsonschema.Draft7Validator(CATALOG_ENTRY_RULES).validate(entry)
    assert entry["$schema"] == SCHEMA_URL
    assert entry["category"] == _cmake_var("EXTENSION_CATEGORY")
    assert entry["build_dependencies"] == _cmake_var("EXTENSION_DEPENDS").split()
    repo_url = _cmake_var("EXTENSION_HOMEPAGE")
    assert entry["scm_url"].removesuffix(".git") == repo_url
    with pytest.raises(jsonschema.ValidationError):  # the rules bite: a key the schema does not have
        jsonschema.validate({**entry, "description": "x"}, CATALOG_ENTRY_RULES)


def test_description_discloses_the_phantom_demo_model_and_versions() -> None:
    text = _cmake_var("EXTENSION_DESCRIPTION")
    assert "only bundled model is a small demo model trained on synthetic phantoms" in text
    assert "not a clinical model" in text and "Not for clinical use" in text
    assert "3D Slicer 5.10 or later" in text
    for contributor in _cmake_var("EXTENSION_CONTRIBUTORS").split(","):
        assert re.fullmatch(r"\s*[^()]+ \([^()]+\)\s*", contributor), contributor
    first = (REPO / "CMakeLists.txt").read_text(encoding="utf-8").splitlines()[0]
    assert first == "cmake_minimum_required(VERSION 3.20.6...3.22.6 FATAL_ERROR)"  # Slicer 5.10's template
    for module in ("CervixTL", "CervixTLTraining"):
        py = (REPO / module / f"{module}.py").read_text(encoding="utf-8")
        assert "demo model" in py and "Not for clinical use" in py, module


@pytest.mark.skipif(shutil.which("cmake") is None, reason="cmake is not installed")
def test_runtime_files_reach_the_build_tree(tmp_path: Path) -> None:
    build = tmp_path / "lib" / "Slicer-5.10" / "qt-scripted-modules"
    script = tmp_path / "copy.cmake"
    script.write_text(f'include("{REPO / "CMake" / "CervixTLRuntimeFiles.cmake"}")\n'
                      f'cervixtl_runtime_files("{REPO}" "{build}" "")\n', encoding="utf-8")
    res = subprocess.run(["cmake", "-P", str(script)], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    for rel in ("pyproject.toml", "cervixtl/runner.py", "cervixtl/commands/devices.py", "Resources/Models.json",
                "Resources/CervixTL.term.json", "Resources/roi_mapping.json",
                "Resources/schemas/cervixtl-devices.schema.json"):
        assert (build / rel).is_file(), rel
    demo = REPO / "Resources" / "Models" / "cervixtl-demo"
    if demo.is_dir():
        for f in demo.iterdir():
            assert (build / "Resources" / "Models" / "cervixtl-demo" / f.name).read_bytes() == f.read_bytes()
        out = subprocess.run([sys.executable, "-m", "cervixtl", "models", "list", "--json", "--models-dir",
                              str(tmp_path / "empty")], capture_output=True, text=True, timeout=300, cwd=tmp_path,
                             env={**os.environ, "PYTHONPATH": str(build)})
        assert out.returncode == 0, out.stderr
        data = json.loads(out.stdout)
        rows = data if isinstance(data, list) else data["models"]
        bundled = [r for r in rows if r["source"] == "bundled"]
        assert [r["name"] for r in bundled] == ["cervixtl-demo"]
        assert Path(bundled[0]["path"]).resolve().is_relative_to(build.resolve())
