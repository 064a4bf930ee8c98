"""``cervixtl demo``: the whole workflow on a synthetic phantom, offline, in about a minute on a CPU.

1. :func:`cervixtl.phantom.make_phantom` makes a pelvic CT phantom (site A) with its truth contours;
2. the demo model (default: the active ``cervixtl-demo``, else the bundled package) contours it
   (:func:`cervixtl.inference.run_contour`, CPU-friendly ``fast`` setting);
3. the protocol PTV margin of the model card is applied (PTV = CTV + margin, inside ``run_contour``);
4. every structure is scored against the truth (:func:`cervixtl.metrics.evaluate_segmentations`);
5. written to ``--out``: ``ct.nii.gz``, ``contours.seg.nrrd``, ``truth.seg.nrrd``, ``report.json`` and
   ``overview.png`` (axial/coronal/sagittal with GTV/CTV/PTV outlines; truth dashed).
"""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .progress import NULL_PROGRESS, Progress
from .structures import TARGETS

if TYPE_CHECKING:
    from .image import Image
    from .models.registry import Registry
    from .segmentation import Segmentation

DEMO_SEED = 20260501
NOTICE = "Synthetic phantom and phantom-trained demo model: a workflow demonstration, not for clinical use."


#: The demo's files in ``out_dir``.
FILES = {"ct": "ct.nii.gz", "segmentation": "contours.seg.nrrd", "truth": "truth.seg.nrrd", "report": "report.json",
         "overview": "overview.png"}


def run_demo(out_dir: str | os.PathLike = "cervixtl-demo", *, seed: int = DEMO_SEED, site: str = "A",
             model: str | None = None, registry: Registry | None = None, models_dir: str | os.PathLike | None = None,
             device: str = "cpu", fast: bool = True, threads: int | None = None,
             progress: Progress | None = None) -> dict[str, Any]:
    """Run the demo and return its report (also written as ``report.json``).

    Args:
        out_dir: output folder (created; existing demo files in it are replaced atomically one by one).
        seed / site: phantom seed and site (``"A"`` matches the demo model's training protocol).
        model: model spec (default ``cervixtl-demo``: active registry version, else the bundled package).
        registry / models_dir: a :class:`~cervixtl.models.registry.Registry`, or its folder (default one).
        device: ``cpu`` (default), ``auto`` or ``cuda``; fast: CPU-friendly sliding window; threads: torch's
            CPU threads (None: torch's choice).

    Returns:
        The ``cervixtl-demo/1`` report: ``notice``, ``model``, ``model_intended_use``, ``phantom`` (seed, site,
        size (x, y, z), spacing_mm (x, y, z)), ``ptv``, ``metrics`` (per structure: dice, hd95_mm,
        surface_dice, volumes in mL), ``mean_dice_targets`` (GTV, CTV, PTV), ``files``, ``timing_s``,
        ``platform``.
    """
    from .api import report
    from .api.contour import set_threads
    from .atomic import check_writable_dir, write_json_atomic
    from .inference import run_contour
    from .metrics import evaluate_segmentations
    from .models.registry import Registry
    from .phantom import make_phantom

    progress = progress or NULL_PROGRESS
    set_threads(threads)
    files = {k: check_writable_dir(Path(out_dir) / v) for k, v in FILES.items()}
    t0 = time.perf_counter()
    progress("phantom", 0.0, f"making phantom (seed {seed}, site {site})")
    ct, truth = make_phantom(seed, site)
    t_ph = time.perf_counter() - t0
    card, net = (registry if registry is not None else Registry(models_dir)).load(model or "cervixtl-demo")
    progress("contour", 0.0, f"contouring with {card.spec}")
    t1 = time.perf_counter()
    res = run_contour(ct, card, net, device=device, fast=fast, progress=progress)
    t_net = time.perf_counter() - t1
    metrics = evaluate_segmentations(truth, res.segmentation,
                                     [s.name for s in truth.segments if res.segmentation.find(s.name) is not None])
    mean_t = [m["dice"] for m in metrics if m["name"] in TARGETS]
    progress("write", 0.0, f"writing {Path(out_dir)}")
    _write_files(files, ct, res.segmentation, truth,
                 title=f"CervixTL demo: {card.spec} on phantom seed {seed} (site {site}); "
                       f"Dice GTV/CTV/PTV " + "/".join(f"{d:.2f}" for d in mean_t))
    rep = report("demo", {
        "notice": NOTICE, "model": res.summary.get("model"), "model_intended_use": card.intended_use,
        "phantom": {"seed": seed, "site": site, "size": list(ct.size), "spacing_mm": list(ct.spacing)},
        "ptv": res.summary.get("ptv"), "metrics": metrics,
        "mean_dice_targets": sum(mean_t) / len(mean_t) if mean_t else None,
        "files": {k: str(v) for k, v in files.items()},
        "timing_s": {"phantom": round(t_ph, 2), "contour": round(t_net, 2),
                     "total": round(time.perf_counter() - t0, 2)},
        "platform": {"python": platform.python_version(), "device": res.summary.get("device")},
    })
    write_json_atomic(files["report"], rep)
    progress("write", 1.0, "written")
    return rep


def _write_files(files: dict[str, Path], ct: Image, prediction: Segmentation, truth: Segmentation,
                 title: str) -> None:
    """The CT, the predicted and true segmentations and the overview PNG (each written atomically)."""
    from .io import write_image, write_segmentation
    from .overview import write_overview

    write_image(ct, files["ct"])
    write_segmentation(prediction, files["segmentation"])
    write_segmentation(truth, files["truth"])
    write_overview(ct, files["overview"], prediction, truth=truth, title=title)
