"""The plain-language verdict of a held-out comparison between a source model and a fine-tuned model.

Wording rule (one structure at a time, then one sentence):

1. A structure is judged on the paired Wilcoxon signed-rank test of its per-case **Dice** (new vs source)
   over the held-out cases, at significance level ``alpha`` (default 0.05):

   * **better**  -- p < alpha and the new model's Dice is higher (median paired difference new - source > 0;
     when the median difference is 0 or unknown, the difference of the mean Dice decides);
   * **worse**   -- p < alpha and the new model's Dice is lower;
   * **no significant change** -- p >= alpha (whatever the sign of the difference);
   * **too few cases to test** -- p is not a number (the test needs more paired cases than were held out).

2. The sentence lists the groups in that order, each as ``"better on A, B and C"`` / ``"worse on ..."`` /
   ``"no significant change on ..."`` / ``"too few cases to test ..."``, joined by ``", "``, and
   ends with ``" with n = N"`` (the number of paired held-out cases; ``"n = 4 to 6"`` when it differs between
   structures). Structures keep the order in which they were given.

Example: ``"better on CTV and PTV, no significant change on GTV with n = 6"``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

#: Default significance level of the verdict.
ALPHA = 0.05

BETTER = "better"
WORSE = "worse"
NO_CHANGE = "no significant change"
UNTESTABLE = "too few cases to test"
_ORDER = (BETTER, WORSE, NO_CHANGE, UNTESTABLE)
_PREFIX = {BETTER: "better on", WORSE: "worse on", NO_CHANGE: "no significant change on", UNTESTABLE: UNTESTABLE}


@dataclass
class StructureComparison:
    """Held-out comparison of one structure (means over the paired cases; distances in mm).

    Attributes:
        structure: structure name, e.g. "CTV".
        n: number of paired held-out cases.
        dice_source / dice_new: mean Dice (0..1) of the source and the new model.
        hd95_source / hd95_new: mean 95th-percentile Hausdorff distance in mm.
        sdice_source / sdice_new: mean surface Dice (0..1) at the comparison's tolerance.
        p_value: two-sided paired Wilcoxon signed-rank p of the per-case Dice; NaN when not testable.
        median_difference: median of the per-case Dice differences (new - source); NaN when unknown.
    """

    structure: str
    n: int
    dice_source: float = math.nan
    dice_new: float = math.nan
    hd95_source: float = math.nan
    hd95_new: float = math.nan
    sdice_source: float = math.nan
    sdice_new: float = math.nan
    p_value: float = math.nan
    median_difference: float = math.nan


def _finite(x: float | None) -> bool:
    return x is not None and isinstance(x, (int, float)) and math.isfinite(x)


def classify(row: StructureComparison, alpha: float = ALPHA) -> str:
    """The verdict group of one structure (see the module docstring for the rule)."""
    if not _finite(row.p_value):
        return UNTESTABLE
    if row.p_value >= alpha:
        return NO_CHANGE
    diff = row.median_difference if _finite(row.median_difference) and row.median_difference != 0 else (
        row.dice_new - row.dice_source if _finite(row.dice_new) and _finite(row.dice_source) else math.nan)
    if not _finite(diff) or diff == 0:
        return NO_CHANGE
    return BETTER if diff > 0 else WORSE


def join_names(names: Sequence[str]) -> str:
    """``["A"]`` -> "A"; ``["A", "B"]`` -> "A and B"; ``["A", "B", "C"]`` -> "A, B and C"."""
    names = list(names)
    if len(names) <= 1:
        return "".join(names)
    return ", ".join(names[:-1]) + " and " + names[-1]


def _n_text(ns: Iterable[int]) -> str:
    ns = sorted({int(n) for n in ns})
    if not ns:
        return ""
    return f"n = {ns[0]}" if len(ns) == 1 else f"n = {ns[0]} to {ns[-1]}"


def verdict(rows: Sequence[StructureComparison], alpha: float = ALPHA) -> str:
    """One plain sentence for the whole comparison, e.g.
    "better on CTV and PTV, no significant change on GTV with n = 6" (rule in the module docstring)."""
    if not rows:
        return "no comparison results (no held-out case had these structures)"
    groups: dict[str, list[str]] = {g: [] for g in _ORDER}
    for row in rows:
        groups[classify(row, alpha)].append(row.structure)
    parts = [f"{_PREFIX[g]} {join_names(names)}" for g, names in groups.items() if names]
    return ", ".join(parts) + " with " + _n_text(r.n for r in rows)
