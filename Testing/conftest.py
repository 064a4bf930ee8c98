"""Test-wide settings for the CervixTL suite (engine tests in Testing/Python, Slicer-module tests in
Testing/Slicer).

* Every test gets its own ``CERVIXTL_HOME`` (model registry, case library) in a temporary folder, so no test
  reads or writes a user's ``~/.cervixtl``; sub-processes inherit it.
* ``@pytest.mark.gpu`` tests are skipped without CUDA; ``@pytest.mark.slow`` tests are skipped when
  ``CERVIXTL_SKIP_SLOW=1``.
* Shared real data is read in place from ``../shared/data`` (fixture ``shared_data``); tests that need it
  skip with the reason when it is absent.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("OMP_NUM_THREADS", "2")


@pytest.fixture(autouse=True)
def _isolated_cervixtl_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path_factory.mktemp("cervixtl_home")
    monkeypatch.setenv("CERVIXTL_HOME", str(home))
    monkeypatch.delenv("CERVIXTL_MODELS_DIR", raising=False)
    monkeypatch.delenv("CERVIXTL_CASES_DIR", raising=False)
    return home


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` beside the repository; skips the test when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared test data not found at {SHARED_DATA} (../shared/data beside the repository)")
    return SHARED_DATA


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    skip_slow = os.environ.get("CERVIXTL_SKIP_SLOW") == "1"
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except Exception:  # noqa: BLE001
        has_cuda = False
    for item in items:
        if "gpu" in item.keywords and not has_cuda:
            item.add_marker(pytest.mark.skip(reason="needs a CUDA GPU (none found)"))
        if "slow" in item.keywords and skip_slow:
            item.add_marker(pytest.mark.skip(reason="slow test skipped (CERVIXTL_SKIP_SLOW=1)"))
