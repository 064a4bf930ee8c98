"""Source models from other pipelines, converted into CervixTL packages that are read exactly as their own
pipelines read them.

* :mod:`.nnunet`: nnU-Net v2 trained-model folders (``plans.json``, ``dataset.json``, ``fold_N/*.pth``);
* :mod:`.totalseg`: TotalSegmentator's installed nnU-Net weights (``totalsegmentator:<task>``);
* :mod:`.monai_bundle`: MONAI bundles (``configs/inference.json``, ``configs/metadata.json``, ``models/model.pt``);
* :mod:`.auto3dseg`: MONAI Auto3DSeg SegResNet models as SlicerMONAIAuto3DSeg distributes them (``model.pt`` +
  ``labels.csv``, folder or zip).

:func:`import_source` dispatches on what a path is; :func:`list_sources` lists what is installed locally.
``Resources/source_structures.json`` maps source label names to CervixTL structures (``urinary_bladder`` ->
``Bladder``, ...), recorded per label as ``structure`` in the card.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any

from ...errors import ModelError

__all__ = ["TOTALSEG_PREFIX", "source_kind", "import_source", "list_sources", "structure_map"]

TOTALSEG_PREFIX = "totalsegmentator:"


@lru_cache(maxsize=4)
def structure_map(kind: str = "totalsegmentator") -> dict[str, str]:
    """Source label name -> CervixTL structure name for source family ``kind`` (empty when unknown)."""
    from ...resources import resources_dir

    path = resources_dir() / "source_structures.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return dict((data.get("maps") or {}).get(kind) or {})


def source_kind(source: str | os.PathLike) -> str | None:
    """``"totalsegmentator"``, ``"nnunet"``, ``"monai_bundle"``, ``"monai_auto3dseg"`` or None (not a foreign
    source)."""
    text = str(source)
    if text.lower().startswith(TOTALSEG_PREFIX):
        return "totalsegmentator"
    p = Path(text)
    if p.is_dir() and (p / "model.json").exists():
        return None
    from .auto3dseg import is_auto3dseg
    from .monai_bundle import is_bundle
    from .nnunet import is_nnunet_folder

    if is_bundle(p):
        return "monai_bundle"
    if p.is_dir() and is_nnunet_folder(p):
        return "nnunet"
    if is_auto3dseg(p):
        return "monai_auto3dseg"
    return None


def default_name(source: str | os.PathLike, kind: str) -> str:
    """A registry name for an imported source (``totalseg-291``, ``nnunet-Dataset042``, ``monai-<bundle>``,
    ``auto3dseg-<zip or folder name>``)."""
    import re

    if kind == "totalsegmentator":
        from .totalseg import parse_task

        return f"totalseg-{parse_task(str(source)[len(TOTALSEG_PREFIX):])}"
    p = Path(source)
    base = p.name if kind in ("monai_bundle", "monai_auto3dseg") else (p.parent.name if "__" in p.name else p.name)
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", base.split(".zip")[0]).strip("-.")[:48] or "source"
    prefix = {"monai_bundle": "monai", "monai_auto3dseg": "auto3dseg"}.get(kind, "nnunet")
    return f"{prefix}-{stem}"


def import_source(source: str | os.PathLike, dest_dir: str | os.PathLike, *, name: str, version: str = "1",
                  kind: str | None = None, options: Mapping[str, Any] | None = None) -> tuple[Path, dict[str, Any]]:
    """Convert a foreign source (see the module docstring) into a package folder ``dest_dir``; ``options``:
    a MONAI bundle's config overrides (:func:`cervixtl.models.sources.monai_bundle.read_bundle`).

    Raises:
        ModelError: not a source CervixTL can read, or the conversion failed (one line).
    """
    kind = kind or source_kind(source)
    if kind == "totalsegmentator":
        from .totalseg import import_totalsegmentator

        return import_totalsegmentator(str(source)[len(TOTALSEG_PREFIX):], dest_dir, name=name, version=version)
    if kind == "nnunet":
        from .nnunet import import_nnunet

        return import_nnunet(source, dest_dir, name=name, version=version, structure_map=structure_map())
    if kind == "monai_bundle":
        from .monai_bundle import import_bundle

        return import_bundle(source, dest_dir, name=name, version=version, overrides=options)
    if kind == "monai_auto3dseg":
        from .auto3dseg import import_auto3dseg

        return import_auto3dseg(source, dest_dir, name=name, version=version)
    raise ModelError(f"{source}: not an nnU-Net v2 folder, MONAI bundle, MONAI Auto3DSeg model (model.pt + "
                     "labels.csv) or totalsegmentator:<task>")


def list_sources() -> list[dict[str, Any]]:
    """Source models installed on this computer (today: TotalSegmentator's weights), with their classes."""
    from .totalseg import list_installed

    return list_installed()
