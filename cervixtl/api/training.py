"""The learning jobs: ``finetune_cases`` (``cervixtl finetune``) and ``compare_cases`` (``cervixtl compare``)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from ..errors import BadInput
from ..progress import Progress
from . import report

#: Learning rates by default: training from scratch, fine-tuning a source model.
LR_SCRATCH, LR_FINETUNE = 2e-3, 5e-4
#: Share of the steps that train only the new output channels first, when fine-tuning (0 from scratch).
HEAD_WARMUP_FINETUNE = 0.1
#: Epochs when neither ``epochs`` nor ``minutes`` is given.
DEFAULT_EPOCHS = 20


def finetune_cases(source: str | None, cases: str, name: str, *, labels: Sequence[str] | None = None,
                   targets: Sequence[str] | None = None, size: str = "auto",
                   spacing: str | float | Sequence[float] | None = None,
                   activate: bool = False, resume: bool = False, models_dir: str | os.PathLike | None = None,
                   cases_dir: str | os.PathLike | None = None, progress: Progress | None = None,
                   **settings: Any) -> dict[str, Any]:
    """Fine-tune ``source`` on cases of the case library and register the result as a new version of ``name``.

    Args:
        source: ``NAME[@VERSION]``, a package folder, or None / ``"none"`` (train from scratch).
        cases: case ids (comma-separated), ``"all"``, a case folder or a case-library folder.
        labels: label names of the new model (default: the source's).
        targets: new target structures added as independent sigmoid channels beside the source's softmax
            organs (e.g. GTV, CTV, PTV on a TotalSegmentator source).
        size: from-scratch network: ``small`` (CPU, demo), ``large`` (GPU) or ``auto`` (large with CUDA).
        spacing: from-scratch model voxel size (x, y, z mm; :func:`cervixtl.training.model_spacing`): one or
            three numbers, ``"median"`` (the training CTs' median spacing, as nnU-Net's 3d_fullres), or None
            (4 mm isotropic). A fine-tuned model keeps its source's voxel size.
        settings: :class:`cervixtl.training.TrainConfig` fields (epochs, minutes, steps_per_epoch, max_steps,
            batch_size, lr, freeze, val_fraction, patience, focal, batch_dice, augment, seed, device, threads,
            select, head_warmup_fraction); ``lr`` None: 2e-3 from scratch, 5e-4 fine-tuning; no epochs and no
            minutes: 20 epochs; ``head_warmup_fraction`` None: 0.1 fine-tuning, 0 from scratch.
        activate: make the new version active; resume: continue a stopped run of the same ``name``.

    Returns:
        The ``cervixtl-finetune/1`` report: ``model`` (the new exact spec ``name@version``), name, version,
        activated, parent, derivation, training (settings, cases, sites, steps, best validation Dice; no loss
        curve) and validation (per-structure Dice). Under torchrun only rank 0 has it (others: ``{}``).

    Raises:
        BadInput: bad settings, no cases; ModelError: bad source; Cancelled: stopped (registry unchanged).
    """
    from ..cases import load_cases
    from ..models.registry import Registry
    from ..training import (
        DEFAULT_LABELS,
        TrainConfig,
        card_summary,
        default_card,
        finetune,
        is_lead_process,
        model_spacing,
    )

    scratch = source is None or source.strip().lower() == "none"
    if spacing is not None and not scratch:
        raise BadInput(f"a voxel spacing (--spacing) applies to training from scratch only; fine-tuning {source} "
                       "keeps its voxel size")
    if settings.get("lr") is None:
        settings["lr"] = LR_SCRATCH if scratch else LR_FINETUNE
    if settings.get("head_warmup_fraction") is None:
        settings["head_warmup_fraction"] = 0.0 if scratch else HEAD_WARMUP_FINETUNE
    if settings.get("epochs") is None and settings.get("minutes") is None:
        settings["epochs"] = DEFAULT_EPOCHS
    cfg = TrainConfig(**settings)
    cfg.check()
    loaded = load_cases(cases, cases_dir)
    base = None
    if scratch:
        sp = model_spacing(spacing, [c.ct.spacing for c in loaded])
        base = default_card(name, list(labels or DEFAULT_LABELS), size=size, **({"spacing_mm": sp} if sp else {}))
    card = finetune(None if scratch else source, [(c.id, c.ct, c.final) for c in loaded], name, config=cfg,
                    registry=Registry(models_dir), labels=labels, targets=targets, base_card=base,
                    sites=[str(c.info.get("site") or "") for c in loaded], activate=activate, resume=resume,
                    progress=progress)
    if not is_lead_process():
        return {}
    return report("finetune", {"model": card.spec, **card_summary(card), "activated": bool(activate)})


def compare_cases(models: Sequence[str], cases: str, *, out: str | os.PathLike = "compare",
                  structures: Sequence[str] | None = None, tolerance_mm: float = 2.0, device: str = "auto",
                  fast: bool = True, threads: int | None = None, models_dir: str | os.PathLike | None = None,
                  cases_dir: str | os.PathLike | None = None, progress: Progress | None = None) -> dict[str, Any]:
    """Contour held-out cases with 2 or 3 models and compare them per case and structure.

    Args:
        models: 2 or 3 specs ``NAME[@VERSION]``; the first is the reference of the differences.
        cases: case ids (comma-separated), ``"all"``, a case folder or a case-library folder.
        out: folder for ``compare.json`` (this report plus the per-case ``rows``), ``compare.csv`` and
            ``compare.png`` (checked before any work).
        structures: names to score (default: those in every case and every model's output).
        tolerance_mm: surface Dice tolerance (mm); device / fast / threads: inference settings.

    Returns:
        The ``cervixtl-compare/1`` report: models (exact specs), cases, structures, tolerance_mm, summary
        {model: {structure: {metric: {mean, std, median, n, ...}}}}, tests (paired Wilcoxon per structure and
        metric), files {json, csv, png}.

    Raises:
        BadInput: not 2-3 models, no case, no structure in common, unwritable ``out``.
    """
    from ..api.contour import set_threads
    from ..atomic import check_writable_dir
    from ..cases import load_cases
    from ..compare import compare_models, write_outputs
    from ..models.registry import Registry

    if not 2 <= len(models) <= 3:
        raise BadInput(f"--models needs 2 or 3 models, got {len(models)}")
    check_writable_dir(os.path.join(os.fspath(out), "compare.json"))
    set_threads(threads)
    loaded = load_cases(cases, cases_dir)
    res = compare_models(list(models), [(c.id, c.ct, c.final) for c in loaded], registry=Registry(models_dir),
                         structures=structures, device=device, fast=fast, tolerance_mm=tolerance_mm,
                         progress=progress)
    paths = write_outputs(res, out)
    return report("compare", {**{k: v for k, v in res.items() if k != "rows"},
                              "files": {k: str(v) for k, v in paths.items()}})
