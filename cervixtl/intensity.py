"""CT intensity normalisation: one rule per model, stored in its card, applied identically in training and
inference.

A spec is the dict ``card.input["intensity"]``:

* ``{"kind": "window", "window_hu": [lo, hi]}``: clip HU to [lo, hi] and scale linearly to 0..1 (the phantom
  demo model's rule; the default for cards without an ``intensity`` entry, built from ``input.window_hu``);
* ``{"kind": "ct_zscore", "clip_hu": [lo, hi], "mean": m, "std": s}``: nnU-Net's CT normalisation: clip HU to
  the 0.5 / 99.5 percentiles of the training foreground, then ``(x - mean) / std`` with the foreground's mean
  and standard deviation (HU);
* ``{"kind": "monai_normalize_scale", "nonzero": true, "minv": -1, "maxv": 1}``: a MONAI bundle's
  ``NormalizeIntensityd`` (z-score with this image's own mean and standard deviation, over its non-zero voxels
  when ``nonzero``; zero voxels stay 0) then ``ScaleIntensityd`` (min-max rescaling of the whole image to
  [minv, maxv]), as MONAI's ``wholeBody_ct_segmentation`` bundle preprocesses (after resampling);
* ``{"kind": "range_sigmoid", "range_hu": [lo, hi]}``: MONAI Auto3DSeg's CT normalisation (``normalize_mode``
  ``range`` / ``ct``): HU scaled linearly so that [lo, hi] maps to [-1, 1], without clipping, then the
  logistic sigmoid (values in (0, 1); ``lo`` -> 0.269, ``hi`` -> 0.731).

Arrays are any shape (usually (z, y, x)); values are HU; outputs are float32.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from .errors import ModelError

__all__ = ["KINDS", "window_spec", "spec_from_input", "check_spec", "apply_intensity", "ct_zscore_spec",
           "foreground_statistics"]

KINDS = ("window", "ct_zscore", "monai_normalize_scale", "range_sigmoid")


def window_spec(window_hu: Iterable[float]) -> dict[str, Any]:
    """The ``window`` spec for (low, high) HU."""
    lo, hi = (float(v) for v in window_hu)
    return {"kind": "window", "window_hu": [lo, hi]}


def spec_from_input(card_input: Mapping[str, Any]) -> dict[str, Any]:
    """The intensity spec of a card's ``input`` section: its ``intensity`` entry, else the ``window_hu`` window.

    Raises:
        ModelError: unknown kind or missing / inconsistent values.
    """
    spec = card_input.get("intensity")
    if spec is None:
        if "window_hu" not in card_input:
            raise ModelError("model card input has neither 'intensity' nor 'window_hu'")
        return window_spec(card_input["window_hu"])
    check_spec(spec)
    return dict(spec)


def check_spec(spec: Any) -> None:
    """Raise ModelError unless ``spec`` is a valid intensity spec (see the module docstring)."""
    if not isinstance(spec, Mapping) or spec.get("kind") not in KINDS:
        kind = spec.get("kind") if isinstance(spec, Mapping) else spec
        raise ModelError(f"model card intensity kind {kind!r} is not one of {', '.join(KINDS)}")
    try:
        if spec["kind"] in ("window", "range_sigmoid"):
            lo, hi = (float(v) for v in spec["window_hu" if spec["kind"] == "window" else "range_hu"])
            ok = lo < hi
        elif spec["kind"] == "monai_normalize_scale":
            ok = float(spec["minv"]) < float(spec["maxv"]) and isinstance(spec.get("nonzero", False), bool)
        else:
            lo, hi = (float(v) for v in spec["clip_hu"])
            ok = lo < hi and float(spec["std"]) > 0 and np.isfinite(float(spec["mean"]))
    except (KeyError, TypeError, ValueError):
        ok = False
    if not ok:
        raise ModelError(f"model card intensity spec {dict(spec)!r} is incomplete or inconsistent")


def apply_intensity(array: np.ndarray, spec: Mapping[str, Any]) -> np.ndarray:
    """Normalise HU ``array`` by ``spec`` (see the module docstring); returns a new float32 array."""
    out = np.asarray(array, dtype=np.float32).copy()
    if spec["kind"] == "window":
        lo, hi = (float(v) for v in spec["window_hu"])
        np.clip(out, lo, hi, out=out)
        out -= lo
        out *= 1.0 / (hi - lo)
        return out
    if spec["kind"] == "ct_zscore":
        lo, hi = (float(v) for v in spec["clip_hu"])
        np.clip(out, lo, hi, out=out)
        out -= float(spec["mean"])
        out *= 1.0 / max(float(spec["std"]), 1e-8)
        return out
    if spec["kind"] == "range_sigmoid":
        lo, hi = (float(v) for v in spec["range_hu"])
        out -= lo
        out *= 2.0 / (hi - lo)
        out -= 1.0
        np.negative(out, out=out)
        with np.errstate(over="ignore"):  # exp overflow -> inf -> 0 after the reciprocal, as the sigmoid is
            np.exp(out, out=out)
        out += 1.0
        np.reciprocal(out, out=out)
        return out
    if spec["kind"] == "monai_normalize_scale":
        return _normalize_scale(out, bool(spec.get("nonzero", False)), float(spec["minv"]), float(spec["maxv"]))
    raise ModelError(f"intensity kind {spec.get('kind')!r} is not one of {', '.join(KINDS)}")


def _normalize_scale(out: np.ndarray, nonzero: bool, minv: float, maxv: float) -> np.ndarray:
    sel = out != 0 if nonzero else np.ones(out.shape, bool)
    if sel.any():
        vals = out[sel]
        mean, std = float(vals.mean(dtype=np.float64)), float(vals.std(dtype=np.float64))
        out[sel] = (vals - mean) / (std if std > 0 else 1.0)
    lo, hi = float(out.min()), float(out.max())
    if hi > lo:
        out -= lo
        out *= (maxv - minv) / (hi - lo)
        out += minv
    return out


def foreground_statistics(arrays: Iterable[np.ndarray], masks: Iterable[np.ndarray], *,
                          max_samples: int = 1_000_000, seed: int = 0) -> dict[str, float]:
    """HU statistics of the labelled foreground of several cases (nnU-Net's ``foreground_intensity_properties``):
    ``mean``, ``std``, ``p005`` and ``p995`` (0.5 / 99.5 percentiles). Each case contributes at most
    ``max_samples / n`` randomly drawn foreground voxels so that large cases do not dominate.

    Raises:
        ModelError: no foreground voxel in any case.
    """
    arrays, masks = list(arrays), list(masks)
    rng = np.random.default_rng(seed)
    per_case = max(1, max_samples // max(1, len(arrays)))
    parts = []
    for a, m in zip(arrays, masks):
        vals = np.asarray(a, dtype=np.float32)[np.asarray(m, dtype=bool)]
        if vals.size > per_case:
            vals = rng.choice(vals, per_case, replace=False)
        parts.append(vals)
    vals = np.concatenate(parts) if parts else np.zeros(0, np.float32)
    vals = vals[np.isfinite(vals)]
    if vals.size == 0:
        raise ModelError("no labelled foreground voxel in the training cases: cannot compute the CT normalisation")
    return {"mean": float(vals.mean()), "std": float(vals.std()), "p005": float(np.percentile(vals, 0.5)),
            "p995": float(np.percentile(vals, 99.5))}


def ct_zscore_spec(stats: Mapping[str, float]) -> dict[str, Any]:
    """The ``ct_zscore`` spec from :func:`foreground_statistics` output."""
    spec = {"kind": "ct_zscore", "clip_hu": [float(stats["p005"]), float(stats["p995"])],
            "mean": float(stats["mean"]), "std": float(stats["std"])}
    check_spec(spec)
    return spec
