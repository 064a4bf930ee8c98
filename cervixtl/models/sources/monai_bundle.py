"""MONAI bundles as CervixTL source models (placeholder until the bundle reader lands)."""

from __future__ import annotations

import os
from pathlib import Path


def is_bundle(path: str | os.PathLike) -> bool:
    """True for a MONAI bundle folder or zip (``configs/inference.json`` + ``configs/metadata.json``)."""
    p = Path(path)
    return p.is_dir() and (p / "configs" / "inference.json").is_file() and (p / "configs" / "metadata.json").is_file()
