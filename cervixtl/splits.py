"""Training / held-out split of case ids (NumPy only: cheap to import, also inside Slicer's process).

``cervixtl finetune --val-fraction F --seed S`` splits its cases with :func:`split_cases`, and the
CervixTLTraining module calls the same function to know, without importing the training code (torch), which
cases the new model never trained on, so that the comparison after a run uses exactly those.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def split_cases(ids: Sequence[str], val_fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """Random (train, validation) split of case ids: round(n * fraction) validation cases, at least one when
    ``val_fraction`` > 0 and n >= 2, never all of them."""
    ids = list(ids)
    if val_fraction <= 0 or len(ids) < 2:
        return ids, []
    n_val = min(len(ids) - 1, max(1, int(round(len(ids) * val_fraction))))
    order = np.random.default_rng(seed).permutation(len(ids))
    val = [ids[i] for i in sorted(order[:n_val])]
    return [i for i in ids if i not in val], val
