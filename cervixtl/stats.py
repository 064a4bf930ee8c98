"""Paired statistics for model comparisons (e.g. Dice of model A vs model B on the same cases)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from .errors import BadInput

#: Fewest pairs for which a Wilcoxon signed-rank p-value is reported (with 5 pairs the smallest possible
#: two-sided exact p is 0.0625, so fewer pairs can never show a difference).
MIN_PAIRS = 5


def _paired(a: Sequence[float], b: Sequence[float]) -> tuple[np.ndarray, np.ndarray, int]:
    x = np.asarray(list(a), dtype=float)
    y = np.asarray(list(b), dtype=float)
    if x.ndim != 1 or y.ndim != 1 or x.shape != y.shape:
        raise BadInput(f"paired comparison needs two lists of the same length, got {x.size} and {y.size} values")
    keep = np.isfinite(x) & np.isfinite(y)
    return x[keep], y[keep], int(x.size - keep.sum())


def paired_wilcoxon(a: Sequence[float], b: Sequence[float]) -> dict[str, Any]:
    """Two-sided Wilcoxon signed-rank test of paired scores ``a[i]`` vs ``b[i]`` (same case ``i``).

    Pairs where either value is NaN or infinite (e.g. an undefined HD95) are dropped and counted.

    Returns:
        dict with ``n`` (pairs used), ``n_dropped``, ``statistic`` (scipy's W, the smaller rank sum),
        ``p_value``, ``median_difference`` (median of b - a), ``mean_a``, ``mean_b``, ``median_a``,
        ``median_b``, ``method`` and ``reason`` (why ``p_value`` is NaN, else None). With fewer than
        :data:`MIN_PAIRS` pairs ``p_value`` and ``statistic`` are NaN; when every pair is equal ``p_value``
        is 1.0.

    Raises:
        BadInput: the two lists have different lengths.
    """
    from scipy import stats as sps

    x, y, dropped = _paired(a, b)
    n = int(x.size)
    diff = y - x
    nan = float("nan")
    out: dict[str, Any] = {
        "n": n, "n_dropped": dropped, "statistic": nan, "p_value": nan,
        "median_difference": float(np.median(diff)) if n else nan,
        "mean_a": float(x.mean()) if n else nan, "mean_b": float(y.mean()) if n else nan,
        "median_a": float(np.median(x)) if n else nan, "median_b": float(np.median(y)) if n else nan,
        "method": "wilcoxon signed-rank, two-sided, zero differences dropped (Wilcoxon)", "reason": None,
    }
    if n < MIN_PAIRS:
        out["reason"] = f"too few pairs for a Wilcoxon test (n={n}, need at least {MIN_PAIRS})"
        return out
    if np.all(diff == 0):
        out.update(statistic=0.0, p_value=1.0, reason=None)
        return out
    res = sps.wilcoxon(x, y, zero_method="wilcox", alternative="two-sided")
    out["statistic"] = float(res.statistic)
    out["p_value"] = float(res.pvalue)
    if not math.isfinite(out["p_value"]):
        out["reason"] = "scipy could not compute a p-value"
    return out


def describe(values: Sequence[float]) -> dict[str, Any]:
    """n (finite values), n_missing (NaN / inf), mean, std (ddof=1), median, q1, q3, min, max of scores."""
    v = np.asarray(list(values), dtype=float)
    f = v[np.isfinite(v)]
    nan = float("nan")
    if f.size == 0:
        return {"n": 0, "n_missing": int(v.size), "mean": nan, "std": nan, "median": nan, "q1": nan,
                "q3": nan, "min": nan, "max": nan}
    return {"n": int(f.size), "n_missing": int(v.size - f.size), "mean": float(f.mean()),
            "std": float(f.std(ddof=1)) if f.size > 1 else nan, "median": float(np.median(f)),
            "q1": float(np.percentile(f, 25)), "q3": float(np.percentile(f, 75)),
            "min": float(f.min()), "max": float(f.max())}


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values (step-down, monotone, capped at 1); NaN stays NaN and is not counted
    in the family size."""
    p = np.asarray(list(p_values), dtype=float)
    out = np.full(p.shape, np.nan)
    idx = np.flatnonzero(np.isfinite(p))
    m = idx.size
    running = 0.0
    for rank, i in enumerate(idx[np.argsort(p[idx], kind="stable")]):
        running = max(running, min(1.0, (m - rank) * p[i]))
        out[i] = running
    return [float(x) for x in out]


def bootstrap_ci(values: np.ndarray, n_boot: int = 2000, level: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap CI of the mean of a (draws, patients) array, resampling draws and patients
    independently with replacement (two-level bootstrap; NaN entries ignored in each mean)."""
    v = np.asarray(values, dtype=float)
    if v.ndim == 1:
        v = v[None]
    if not np.isfinite(v).any():
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    d, p = v.shape
    means = np.empty(n_boot)
    for b in range(n_boot):
        sub = v[rng.integers(d, size=d)][:, rng.integers(p, size=p)]
        means[b] = np.nanmean(sub) if np.isfinite(sub).any() else np.nan
    means = means[np.isfinite(means)]
    a = (1 - level) / 2
    return float(np.quantile(means, a)), float(np.quantile(means, 1 - a))
