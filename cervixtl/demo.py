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
from typing import Any

from .progress import NULL_PROGRESS, Progress

DEMO_SEED = 20260501
NOTICE = "Synthetic phantom and phantom-trained demo model: a workflow demonstration, not for clinical use."


def run_demo(out_dir: str | os.PathLike, *, seed: int = DEMO_SEED, site: str = "A", model: str | None = None,
             registry: Any = None, device: str = "cpu", fast: bool = True,
             progress: Progress | None = None) -> dict[str, Any]:
    """Run the demo and return its report (also written as ``report.json``).

    Args:
        out_dir: output folder (created; existing demo files in it are replaced atomically one by one).
        seed / site: phantom seed and site (``"A"`` matches the demo model's training protocol).
        model: model spec (default ``cervixtl-demo``: active registry version, else the bundled package).
        registry: a :class:`~cervixtl.models.registry.Registry` (default one if None).
        device: ``cpu`` (default), ``auto`` or ``cuda``; fast: CPU-friendly sliding window.

    Returns:
        dict with ``model``, ``phantom``, ``files``, ``metrics`` (one dict per structure: dice, hd95_mm,
        surface_dice, volumes in mL), ``mean_dice_targets`` (GTV, CTV, PTV), ``timing_s`` and ``notice``.
    """
    from .atomic import write_json_atomic
    from .inference import run_contour
    from .io import write_image, write_segmentation
    from .metrics import evaluate_segmentations, json_safe
    from .models.registry import Registry
    from .overview import write_overview
    from .phantom import make_phantom

    progress = progress or NULL_PROGRESS
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    progress("phantom", 0.0, f"making phantom (seed {seed}, site {site})")
    ct, truth = make_phantom(seed, site)
    t_ph = time.perf_counter() - t0
    reg = registry if registry is not None else Registry()
    card, net = reg.load(model or "cervixtl-demo")
    progress("contour", 0.0, f"contouring with {card.spec}")
    t1 = time.perf_counter()
    res = run_contour(ct, card, net, device=device, fast=fast, progress=progress)
    pred = res.segmentation
    t_net = time.perf_counter() - t1
    names = [s.name for s in truth.segments if pred.find(s.name) is not None]
    metrics = evaluate_segmentations(truth, pred, names)
    files = {"ct": out / "ct.nii.gz", "segmentation": out / "contours.seg.nrrd", "truth": out / "truth.seg.nrrd",
             "report": out / "report.json", "overview": out / "overview.png"}
    progress("write", 0.0, f"writing {out}")
    write_image(ct, files["ct"])
    write_segmentation(pred, files["segmentation"])
    write_segmentation(truth, files["truth"])
    mean_t = [m["dice"] for m in metrics if m["name"] in ("GTV", "CTV", "PTV")]
    write_overview(ct, files["overview"], pred, truth=truth,
                   title=f"CervixTL demo: {card.spec} on phantom seed {seed} (site {site}); "
                         f"Dice GTV/CTV/PTV " + "/".join(f"{d:.2f}" for d in mean_t))
    report = {
        "notice": NOTICE,
        "model": res.summary.get("model"),
        "model_intended_use": card.intended_use,
        "phantom": {"seed": seed, "site": site, "size": list(ct.size), "spacing_mm": list(ct.spacing)},
        "ptv": res.summary.get("ptv"),
        "metrics": metrics,
        "mean_dice_targets": sum(mean_t) / len(mean_t) if mean_t else None,
        "files": {k: str(v) for k, v in files.items()},
        "timing_s": {"phantom": round(t_ph, 2), "contour": round(t_net, 2),
                     "total": round(time.perf_counter() - t0, 2)},
        "platform": {"python": platform.python_version(), "device": res.summary.get("device")},
    }
    write_json_atomic(files["report"], json_safe(report))
    progress("write", 1.0, "done")
    return report
