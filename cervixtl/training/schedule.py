"""Learning-rate schedule (linear warm-up, then poly decay) and the step budget of a wall-clock limit."""

from __future__ import annotations

import math

__all__ = ["lr_factor", "steps_for_budget", "POLY_EXPONENT", "WARMUP_START"]

#: nnU-Net's poly exponent: lr = peak * (1 - t)^0.9 over the decay phase.
POLY_EXPONENT = 0.9
#: The warm-up starts at this fraction of the peak learning rate.
WARMUP_START = 0.01


def lr_factor(step: int, total_steps: int, warmup_steps: int) -> float:
    """Factor of the peak learning rate at optimiser step ``step`` (0-based) of ``total_steps``: linear from
    :data:`WARMUP_START` to 1 over ``warmup_steps``, then ``(1 - (step - warmup) / (total - warmup))^0.9``
    down to 0 at ``total_steps`` (and 0 after)."""
    total = max(1, int(total_steps))
    warm = max(0, min(int(warmup_steps), total - 1))
    if step < warm:
        return WARMUP_START + (1.0 - WARMUP_START) * step / warm
    t = (step - warm) / max(1, total - warm)
    return max(0.0, 1.0 - t) ** POLY_EXPONENT if t < 1 else 0.0


def steps_for_budget(budget_s: float, elapsed_s: float, steps_done: int, step_s: float,
                     validation_s: float = 0.0, steps_per_validation: int = 1) -> int:
    """Total steps that fit a wall-clock budget: the steps done plus the remaining time divided by the
    measured time per step (validation time spread over the steps between validations); at least
    ``steps_done + 1``. Times in seconds."""
    per_step = max(1e-6, step_s + validation_s / max(1, steps_per_validation))
    remaining = max(0.0, budget_s - elapsed_s)
    return max(steps_done + 1, steps_done + int(math.floor(remaining / per_step)))
