"""Fixtures for the Slicer-module tests: ``slicer_env`` (a fresh real MRML scene from slicer-core, see
``mrml_harness.py``). Testing/Slicer is put on ``sys.path`` so tests can ``import mrml_harness``, and the two
module folders as Slicer does."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import pytest

_HERE = Path(__file__).resolve().parent
# as in Slicer, where every loaded scripted module's folder is on sys.path (CervixTLTraining imports CervixTLLib)
for _path in (_HERE.parents[1] / "CervixTLTraining", _HERE.parents[1] / "CervixTL", _HERE):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

import mrml_harness  # noqa: E402


@pytest.fixture()
def slicer_env() -> types.SimpleNamespace:
    """A fresh MRML scene installed as ``slicer.mrmlScene`` with volumes/segmentations logics and a stand-in
    ``slicer.modules``; skips the test when slicer-core is absent."""
    return mrml_harness.make_slicer_env()
