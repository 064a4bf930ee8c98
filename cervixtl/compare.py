"""Honest comparison of models on held-out cases (Model_S / Model_T / Model_ST design).

Every model contours every case through the production pipeline (:func:`cervixtl.inference.run_contour`,
or :func:`cervixtl.inference.predict_labels` for models without targets; window overlap 0.5, Gaussian
blending, the same post-processing as ``contour``); each structure of the case's final
contours that every model outputs is scored with :func:`cervixtl.metrics.evaluate_segmentations` (Dice, HD95
in mm, surface Dice at ``tolerance_mm``). The summary gives mean ± sd and median per model and structure and a
paired two-sided Wilcoxon signed-rank test (:func:`cervixtl.stats.paired_wilcoxon`) per structure and metric
for every pair of models; the per-case rows keep the losing cases visible.

Outputs (:func:`write_outputs`): ``compare.json`` (everything), ``compare.csv`` (one row per model, case and
structure) and ``compare.png`` (Dice box plots per structure, one box per model).
"""

from __future__ import annotations

import csv
import io
import itertools
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .atomic import atomic_path, write_json_atomic, write_text_atomic
from .errors import BadInput
from .image import Image
from .progress import NULL_PROGRESS, Progress
from .segmentation import Segmentation

#: Metrics compared (keys of :func:`cervixtl.metrics.evaluate_masks`), and whether higher is better.
METRICS = {"dice": True, "hd95_mm": False, "surface_dice": True}
CSV_FIELDS = ("model", "case", "structure", "dice", "hd95_mm", "msd_mm", "surface_dice", "volume_ref_ml",
              "volume_pred_ml", "volume_diff_ml")


def score_prediction(truth: Segmentation, prediction: Segmentation, names: Sequence[str],
                     tolerance_mm: float = 2.0) -> list[dict[str, Any]]:
    """Metric dicts (one per structure in ``names``) of a prediction against the truth on the same grid."""
    from .metrics import evaluate_segmentations

    return evaluate_segmentations(truth, prediction, list(names), tolerance_mm)


def common_structures(truth_names: Sequence[Sequence[str]], model_outputs: Sequence[Sequence[str]]) -> list[str]:
    """Structures contoured in every case and output by every model (order of the first case)."""
    if not truth_names:
        return []
    keep = [n for n in truth_names[0] if all(n.lower() in {t.lower() for t in tn} for tn in truth_names)]
    return [n for n in keep if all(n.lower() in {o.lower() for o in mo} for mo in model_outputs)]


def model_outputs(card: Any) -> list[str]:
    """Structures a model's output holds: its labels, plus GTV, CTV, PTV for target models."""
    names = list(card.label_names)
    if not {"gtv", "ctv"} <= {n.lower() for n in names}:
        return names
    for t in ("GTV", "CTV", "PTV"):
        if t.lower() not in {n.lower() for n in names}:
            names.append(t)
    return names


#: Window overlap of evaluation: at 0.5 every window that holds one of a bilateral pair also sees the midline
#: (with Gaussian blending), so the side of each organ is decided from context, as in production.
EVAL_OVERLAP = 0.5


def predict_structures(ct: Image, card: Any, net: Any, *, device: str = "auto", fast: bool = False,
                       overlap: float | None = EVAL_OVERLAP) -> Segmentation:
    """The model's own labels on the CT's exact grid, without the target chain (for models that do not
    predict GTV/CTV, e.g. organ or PTV models of the real-CT benchmark), through the production pipeline
    :func:`cervixtl.inference.predict_labels` (card preprocessing, Gaussian-blended windows with ``overlap``,
    post-processing with side assignment)."""
    from .inference import predict_labels

    pred = predict_labels(ct, card, net, device=device, fast=fast, overlap=overlap)
    seg = Segmentation(pred.grid)
    for name, m in pred.masks.items():
        seg.set(name, m)
    return seg


def _predict(ct: Image, card: Any, net: Any, device: str, fast: bool, overlap: float | None) -> Segmentation:
    from .inference import run_contour

    names = {n.lower() for n in card.label_names}
    if "gtv" in names and "ctv" in names:
        return run_contour(ct, card, net, device=device, fast=fast, overlap=overlap).segmentation
    return predict_structures(ct, card, net, device=device, fast=fast, overlap=overlap)


def compare_models(models: Sequence[str], cases: Sequence[tuple[str, Image, Segmentation]], *,
                   registry: Any = None, structures: Sequence[str] | None = None, device: str = "auto",
                   fast: bool = False, overlap: float | None = EVAL_OVERLAP, tolerance_mm: float = 2.0,
                   progress: Progress | None = None) -> dict[str, Any]:
    """Contour every case with every model and compare them.

    Args:
        models: 2 or 3 registry specs (``NAME[@VERSION]`` or package folders); the first is the reference of
            the "difference" columns.
        cases: (case id, CT in HU, final contours on the CT grid).
        registry: a :class:`~cervixtl.models.registry.Registry` (default one if None).
        structures: structure names to score (default: those in every case's truth and every model's output).
        device / fast / overlap: inference settings (see :func:`cervixtl.inference.run_contour`); the
            default overlap 0.5 (Gaussian blending) holds even with ``fast``.
        tolerance_mm: surface Dice tolerance in mm.

    Returns:
        ``{"models": [...], "cases": [...], "structures": [...], "tolerance_mm", "rows": [per model/case/
        structure metric dicts], "summary": {model: {structure: {metric: describe()}}}, "tests": [...]}``.

    Raises:
        BadInput: fewer than 2 or more than 3 models, no case, or no structure in common.
    """
    from .models.registry import Registry

    if not 2 <= len(models) <= 3:
        raise BadInput(f"--models needs 2 or 3 models, got {len(models)}")
    if len(set(models)) != len(models):
        raise BadInput(f"--models lists the same model twice: {' '.join(models)}")
    if not cases:
        raise BadInput("no held-out case to compare on")
    progress = progress or NULL_PROGRESS
    reg = registry if registry is not None else Registry()
    loaded = []
    for spec in models:
        card, net = reg.load(spec)
        loaded.append((spec, card, net))
    names = list(structures) if structures else common_structures(
        [c[2].names for c in cases], [model_outputs(c) for _, c, _ in loaded])
    if not names:
        raise BadInput("no structure is both in every case's contours and in every model's output")
    rows: list[dict[str, Any]] = []
    total = len(loaded) * len(cases)
    k = 0
    for _spec, card, net in loaded:
        label = card.spec
        for cid, ct, truth in cases:
            progress("compare", k / total, f"{label} on {cid}")
            pred = _predict(ct, card, net, device, fast, overlap)
            # a structure the case does not contour is not scored (not an empty reference)
            scored = [n for n in names if truth.find(n) is not None and pred.find(n) is not None]
            for m in (score_prediction(truth, pred, scored, tolerance_mm) if scored else []):
                rows.append({"model": label, "case": cid, "structure": m["name"],
                             **{f: m.get(f) for f in CSV_FIELDS[3:]}})
            k += 1
    progress("compare", 1.0, "statistics")
    specs = [c.spec for _, c, _ in loaded]
    result = {"models": specs, "cases": [c[0] for c in cases], "structures": names, "tolerance_mm": tolerance_mm,
              "rows": rows}
    result.update(summarise(rows, specs, names))
    return result


def _values(rows: Sequence[dict[str, Any]], model: str, structure: str, metric: str,
            cases: Sequence[str]) -> list[float]:
    by_case = {r["case"]: r.get(metric) for r in rows if r["model"] == model and r["structure"] == structure}
    return [float(v) if (v := by_case.get(c)) is not None else float("nan") for c in cases]


def summarise(rows: Sequence[dict[str, Any]], models: Sequence[str], structures: Sequence[str]) -> dict[str, Any]:
    """Per model/structure/metric descriptive statistics and paired Wilcoxon tests for every model pair.

    Each test dict: structure, metric, a, b (model specs), n, p_value, median_difference (b - a), mean_a,
    mean_b, reason (why p is NaN), better ("a", "b" or "equal" by mean, using the metric's direction),
    b_wins / a_wins (cases where one is strictly better)."""
    from .stats import describe, paired_wilcoxon

    cases = sorted({r["case"] for r in rows}, key=lambda c: [r["case"] for r in rows].index(c))
    summary: dict[str, Any] = {}
    for m in models:
        summary[m] = {s: {met: describe(_values(rows, m, s, met, cases)) for met in METRICS} for s in structures}
    tests = []
    for a, b in itertools.combinations(models, 2):
        for s in structures:
            for met, higher in METRICS.items():
                va, vb = _values(rows, a, s, met, cases), _values(rows, b, s, met, cases)
                w = paired_wilcoxon(va, vb)
                pairs = [(x, y) for x, y in zip(va, vb) if math.isfinite(x) and math.isfinite(y)]
                b_wins = sum(1 for x, y in pairs if (y > x if higher else y < x))
                a_wins = sum(1 for x, y in pairs if (x > y if higher else x < y))
                ma, mb = w.get("mean_a"), w.get("mean_b")
                better = "equal"
                if ma is not None and mb is not None and math.isfinite(ma) and math.isfinite(mb) and ma != mb:
                    better = "b" if ((mb > ma) == higher) else "a"
                tests.append({"structure": s, "metric": met, "a": a, "b": b, "n": w["n"],
                              "p_value": w["p_value"], "statistic": w["statistic"],
                              "median_difference": w["median_difference"], "mean_a": ma, "mean_b": mb,
                              "better": better, "a_wins": a_wins, "b_wins": b_wins, "reason": w.get("reason")})
    return {"summary": summary, "tests": tests}


def _fmt(x: Any, nd: int = 3) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "-"
    return f"{x:.{nd}f}"


def format_table(result: dict[str, Any]) -> str:
    """Plain-text report: mean ± sd (median) per structure and model, then the Wilcoxon p-values."""
    out = io.StringIO()
    n = len(result["cases"])
    out.write(f"{len(result['models'])} models on {n} held-out cases (surface Dice tolerance "
              f"{result['tolerance_mm']} mm)\n")
    for met in METRICS:
        out.write(f"\n{met} (mean ± sd, median)\n")
        out.write(f"{'structure':<16}" + "".join(f"{m:>30}" for m in result["models"]) + "\n")
        for s in result["structures"]:
            out.write(f"{s:<16}")
            for m in result["models"]:
                d = result["summary"][m][s][met]
                out.write(f"{_fmt(d['mean']) + ' ± ' + _fmt(d['std']) + ' (' + _fmt(d['median']) + ')':>30}")
            out.write("\n")
    out.write("\npaired Wilcoxon signed-rank (two-sided)\n")
    for t in result["tests"]:
        p = _fmt(t["p_value"], 4) if t["reason"] is None else f"n/a ({t['reason']})"
        out.write(f"{t['structure']:<16}{t['metric']:<14}{t['a']} vs {t['b']}: n={t['n']} p={p} "
                  f"better={t['better']} ({t['a']} wins {t['a_wins']}, {t['b']} wins {t['b_wins']})\n")
    return out.getvalue()


def to_csv(rows: Sequence[dict[str, Any]]) -> str:
    """CSV text, one row per model, case and structure (NaN written as empty)."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(CSV_FIELDS), lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if isinstance(r.get(k), float) and not math.isfinite(r[k]) else
                        (round(r[k], 5) if isinstance(r.get(k), float) else r.get(k))) for k in CSV_FIELDS})
    return buf.getvalue()


def boxplot_png(result: dict[str, Any], path: str | os.PathLike, metric: str = "dice") -> Path:
    """Box plot of ``metric`` per structure (one panel each), one box per model, points = cases; atomic."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    structs = result["structures"]
    models = result["models"]
    ncol = min(4, len(structs))
    nrow = int(math.ceil(len(structs) / ncol))
    fig, axes = plt.subplots(nrow, ncol, figsize=(3.2 * ncol, 3.2 * nrow), squeeze=False)
    cases = result["cases"]
    for ax, s in zip(axes.ravel(), structs):
        data = [[v for v in _values(result["rows"], m, s, metric, cases) if math.isfinite(v)] for m in models]
        ax.boxplot(data, showmeans=True)
        ax.set_xticks(range(1, len(models) + 1), [m if len(m) < 14 else m[:12] + "…" for m in models],
                      rotation=20, fontsize=7)
        for i, d in enumerate(data):
            ax.plot(np.full(len(d), i + 1) + np.linspace(-0.08, 0.08, max(1, len(d)))[:len(d)], d, ".",
                    color="k", alpha=0.5, markersize=3)
        ax.set_title(s, fontsize=9)
        ax.set_ylabel(metric, fontsize=8)
        if metric in ("dice", "surface_dice"):
            ax.set_ylim(0, 1.02)
    for ax in axes.ravel()[len(structs):]:
        ax.axis("off")
    fig.suptitle(f"{metric} on {len(cases)} held-out cases", fontsize=10)
    fig.tight_layout()
    p = Path(path)
    with atomic_path(p) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
    return p


def write_outputs(result: dict[str, Any], out_dir: str | os.PathLike) -> dict[str, Path]:
    """Write ``compare.json``, ``compare.csv`` and ``compare.png`` into ``out_dir`` (each atomically)."""
    from .metrics import json_safe

    d = Path(out_dir)
    d.mkdir(parents=True, exist_ok=True)
    paths = {"json": d / "compare.json", "csv": d / "compare.csv", "png": d / "compare.png"}
    write_json_atomic(paths["json"], json_safe(result))
    write_text_atomic(paths["csv"], to_csv(result["rows"]))
    boxplot_png(result, paths["png"])
    return paths
