"""TotalSegmentator's nnU-Net v2 weights, found where TotalSegmentator keeps them.

TotalSegmentator stores its downloaded models as nnU-Net results folders under its weights folder:
``$TOTALSEG_WEIGHTS_PATH`` if set, else ``$TOTALSEG_HOME_DIR/nnunet/results``, else
``~/.totalsegmentator/nnunet/results`` (SlicerTotalSegmentator uses the same places). Each model is
``DatasetNNN_<name>/<Trainer>__nnUNetPlans__3d_fullres/`` with ``plans.json``, ``dataset.json`` and
``fold_0/checkpoint_final.pth``.

Before nnU-Net sees an image, TotalSegmentator reorients it to the closest canonical RAS orientation and
resamples it to the model's spacing; nnU-Net then tiles with step 0.5, Gaussian weighting and no mirroring.
The cards written here say so (``orientation: RAS``, nnU-Net tiling), so CervixTL feeds the network the same
array.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from ...errors import BadInput, ModelError

__all__ = ["TASKS", "weights_dirs", "find_task", "list_installed", "parse_task", "import_totalsegmentator"]

#: TotalSegmentator v2 CT tasks CervixTL knows by name: dataset id, the task it belongs to, mm spacing.
TASKS: dict[str, dict[str, Any]] = {
    "organs": {"id": 291, "task": "total (part 1: organs)", "spacing_mm": 1.5},
    "vertebrae": {"id": 292, "task": "total (part 2: vertebrae)", "spacing_mm": 1.5},
    "cardiac": {"id": 293, "task": "total (part 3: cardiac)", "spacing_mm": 1.5},
    "muscles": {"id": 294, "task": "total (part 4: muscles)", "spacing_mm": 1.5},
    "ribs": {"id": 295, "task": "total (part 5: ribs)", "spacing_mm": 1.5},
    "total-3mm": {"id": 297, "task": "total --fast (3 mm)", "spacing_mm": 3.0},
    "total-6mm": {"id": 298, "task": "total --fastest (6 mm)", "spacing_mm": 6.0},
}
_DATASET_RE = re.compile(r"^Dataset(\d{3})_[A-Za-z0-9_.-]+$")


def weights_dirs() -> list[Path]:
    """TotalSegmentator's weights folders in the order TotalSegmentator looks (existing ones only)."""
    cands: list[Path] = []
    if os.environ.get("TOTALSEG_WEIGHTS_PATH"):
        cands.append(Path(os.environ["TOTALSEG_WEIGHTS_PATH"]).expanduser())
    if os.environ.get("TOTALSEG_HOME_DIR"):
        cands.append(Path(os.environ["TOTALSEG_HOME_DIR"]).expanduser() / "nnunet" / "results")
    cands.append(Path.home() / ".totalsegmentator" / "nnunet" / "results")
    seen: list[Path] = []
    for c in cands:
        if c.is_dir() and c not in seen:
            seen.append(c)
    return seen


def parse_task(task: str) -> int:
    """Dataset id of a task name (``organs``, ``total-3mm``, ...) or number (``291``).

    Raises:
        BadInput: unknown task.
    """
    t = task.strip().lower()
    if t in TASKS:
        return int(TASKS[t]["id"])
    if re.fullmatch(r"\d{3}", t):
        return int(t)
    raise BadInput(f"unknown TotalSegmentator task {task!r} (use a dataset id such as 291 or one of "
                   f"{', '.join(TASKS)})")


def find_task(task: str) -> Path:
    """The trained-model folder of a TotalSegmentator task in its weights folders.

    Raises:
        ModelError: not installed (names the folders searched).
    """
    from .nnunet import find_model_folder

    ds = parse_task(task)
    roots = weights_dirs()
    for root in roots:
        for d in sorted(root.iterdir()):
            m = _DATASET_RE.match(d.name)
            if m and int(m.group(1)) == ds and d.is_dir() and not d.is_symlink():
                return find_model_folder(d)
    where = ", ".join(str(r) for r in roots) or "~/.totalsegmentator/nnunet/results (absent)"
    raise ModelError(f"TotalSegmentator task {task} (Dataset{ds}) is not installed in {where}; download it with "
                     f"TotalSegmentator (totalseg_download_weights) or `cervixtl models import` from the catalogue")


def list_installed() -> list[dict[str, Any]]:
    """Every nnU-Net model under TotalSegmentator's weights folders: spec, dataset, folder, classes."""
    from .nnunet import _read_json, find_model_folder, label_values

    rows: list[dict[str, Any]] = []
    for root in weights_dirs():
        for d in sorted(root.iterdir()):
            m = _DATASET_RE.match(d.name)
            if not m or not d.is_dir():
                continue
            try:
                folder = find_model_folder(d)
                classes = [n for _, n in label_values(_read_json(folder / "dataset.json"))]
                error = None
            except (ModelError, BadInput, OSError) as exc:
                folder, classes, error = d, [], str(exc)
            rows.append({"spec": f"totalsegmentator:{int(m.group(1))}", "dataset": d.name, "folder": str(folder),
                         "classes": classes, "error": error})
    return rows


def import_totalsegmentator(task: str, dest_dir: str | os.PathLike, *, name: str, version: str = "1"
                            ) -> tuple[Path, dict[str, Any]]:
    """Convert an installed TotalSegmentator model into a CervixTL package (RAS, nnU-Net tiling; organ names
    mapped to CervixTL structures from ``Resources/source_structures.json``)."""
    from . import structure_map
    from .nnunet import import_nnunet

    folder = find_task(task)
    return import_nnunet(folder, dest_dir, name=name, version=version, orientation="RAS",
                         source={"kind": "totalsegmentator", "task": task},
                         structure_map=structure_map("totalsegmentator"))
