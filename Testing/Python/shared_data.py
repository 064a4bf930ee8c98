"""Where the engine tests find the real data of ``../shared/data`` (read in place, never copied)."""

from __future__ import annotations

from pathlib import Path

import pytest

#: ``../shared/data`` beside the repository.
DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"


def need(path: Path) -> Path:
    """Return ``path``, or skip the test with the reason when the shared data is absent."""
    if not path.exists():
        pytest.skip(f"shared test data not found: {path} (see shared/data/README.md)")
    return path
