"""Pre-flight checks and honest time estimates (pure Python, no Slicer, no Qt).

Time estimates come from a *measured* training-step time (``steptime.py`` times real forward/backward passes
of the model on one patch, on the chosen device) multiplied by the number of planned steps, plus a measured
or stated fixed overhead -- never from a guess about the hardware.
"""

from __future__ import annotations

import math
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

#: Fewest cases a fine-tuning run accepts: at least one to train on and one held out to validate on.
MIN_CASES = 2
#: Below this many cases the module warns that the comparison will have little statistical power.
RECOMMENDED_CASES = 5
#: Free disk space (bytes) asked for beyond the checkpoints: a model package is small, but checkpoints,
#: the new version and the comparison outputs need room.
MIN_FREE_BYTES = 500 * 1024 * 1024


@dataclass(frozen=True)
class StepTiming:
    """A measured training-step time.

    Attributes:
        device: "cpu" or "cuda" -- where it was measured.
        step_s: wall seconds of one optimiser step (forward + backward + update) on one patch.
        startup_s: seconds to load the model and build the network (paid once per run).
        cuda_available: whether a CUDA GPU was found.
        device_name: the GPU's name, or the CPU description.
    """

    device: str
    step_s: float
    startup_s: float = 0.0
    cuda_available: bool = False
    device_name: str = ""

    @classmethod
    def from_dict(cls, d: dict) -> StepTiming:
        """From the JSON printed by ``steptime.py``."""
        return cls(device=str(d.get("device", "cpu")), step_s=float(d["step_s"]) if d.get("step_s") is not None else math.nan,
                   startup_s=float(d.get("startup_s") or 0.0), cuda_available=bool(d.get("cuda_available", False)),
                   device_name=str(d.get("device_name", "")))


def split_counts(n_cases: int, val_fraction: float) -> tuple[int, int]:
    """(training, held-out) case counts for ``n_cases`` and a held-out fraction in 0..1.

    At least one case is held out when the fraction is > 0 and there are 2+ cases; at least one case trains.
    """
    if n_cases <= 0:
        return 0, 0
    n_val = 0 if val_fraction <= 0 else max(1, int(round(n_cases * val_fraction)))
    n_val = min(n_val, n_cases - 1)
    return n_cases - n_val, n_val


def steps_per_epoch(n_train_cases: int) -> int:
    """Optimiser steps per epoch of ``cervixtl finetune`` (its default: ``max(8, 4 * training cases)``)."""
    return max(8, 4 * int(n_train_cases))


def planned_steps(n_train_cases: int, epochs: int, per_epoch: int | None = None) -> int:
    """Optimiser steps of a run of ``epochs`` epochs (``per_epoch`` steps each; default
    :func:`steps_per_epoch`)."""
    return max(int(epochs), 0) * int(per_epoch if per_epoch else steps_per_epoch(n_train_cases))


def estimate_training_s(step_s: float, steps: int, startup_s: float = 0.0, n_val_cases: int = 0,
                        epochs: int = 0) -> float:
    """Seconds for ``steps`` optimiser steps at ``step_s`` each, plus start-up, plus validation (one sliding
    window pass per held-out case and epoch, counted as ~4 steps each)."""
    return float(startup_s) + float(step_s) * (int(steps) + 4 * int(n_val_cases) * int(epochs))


def format_duration(seconds: float) -> str:
    """``42`` -> "42 s", ``190`` -> "3 min", ``4980`` -> "1 h 23 min"; NaN/negative -> "unknown"."""
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        return "unknown"
    if seconds < 90:
        return f"{seconds:.0f} s"
    minutes = int(round(seconds / 60.0))
    if minutes < 60:
        return f"{minutes} min"
    return f"{minutes // 60} h {minutes % 60:02d} min"


def cpu_offer_text(cpu: StepTiming, steps: int, n_val_cases: int = 0, epochs: int = 0,
                   minutes_budget: float | None = None) -> str:
    """The message shown when no GPU was found: what the CPU run will cost, from the measured step time."""
    if minutes_budget:
        n = int(max(minutes_budget * 60.0 - cpu.startup_s, 0.0) / cpu.step_s) if cpu.step_s > 0 else 0
        return (f"No CUDA GPU was found. On this computer's CPU one training step takes {cpu.step_s:.2f} s "
                f"(measured), so a {minutes_budget:g} min budget allows about {n} steps. Train on the CPU?")
    total = estimate_training_s(cpu.step_s, steps, cpu.startup_s, n_val_cases, epochs)
    return (f"No CUDA GPU was found. On this computer's CPU one training step takes {cpu.step_s:.2f} s "
            f"(measured), so {steps} steps will take about {format_duration(total)}. Train on the CPU?")


def check_enough_cases(n_cases: int, val_fraction: float, minimum: int = MIN_CASES) -> str | None:
    """None when ``n_cases`` is enough to fine-tune with a held-out fraction, else the message to show."""
    if n_cases < minimum:
        return (f"Not enough cases: {n_cases} selected, fine-tuning needs at least {minimum} (one to train on, "
                f"one held out to check the new model). Save more corrected cases from the CervixTL module.")
    n_train, n_val = split_counts(n_cases, val_fraction)
    if val_fraction > 0 and n_val < 1:
        return f"Not enough cases to hold out {val_fraction:.0%} for validation with {n_cases} cases."
    if n_train < 1:
        return f"Not enough cases to train on: all {n_cases} would be held out; lower the held-out fraction."
    return None


def check_disk_space(folder: str | os.PathLike, needed_bytes: int = MIN_FREE_BYTES) -> str | None:
    """None when the file system of ``folder`` (or its nearest existing parent) has ``needed_bytes`` free."""
    p = Path(folder)
    while not p.exists() and p != p.parent:
        p = p.parent
    try:
        free = shutil.disk_usage(p).free
    except OSError:
        return None
    if free < needed_bytes:
        return (f"The disk holding {folder} has only {free / 2**20:.0f} MB free; fine-tuning needs about "
                f"{needed_bytes / 2**20:.0f} MB. Free some space first (nothing was started).")
    return None
