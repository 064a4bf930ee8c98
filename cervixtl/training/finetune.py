"""Registry-level fine-tuning: the new model's card, source weights, freezing, training, registry write.

Cards of a new model (:func:`default_card` from scratch, :func:`derive_card` from a source):

* **From scratch**: MONAI SegResNet; ``size="small"`` (init_filters 8, patch (32, 64, 64) voxels (z, y, x),
  about 1.2 M parameters: the CPU / demo default) or ``"large"`` (init_filters 32, patch (64, 128, 128),
  about 19 M: the GPU default; ``"auto"`` chooses by whether CUDA is available). CT normalisation: nnU-Net's
  z-score from the training cases' foreground (:func:`cervixtl.intensity.foreground_statistics`), stored in
  the card, so inference applies exactly the same.
* **From a source, same output kind**: the source card with the new label list; labels the source also has
  keep their trained output channels (:func:`output_channel_map`).
* **Source softmax organs + new sigmoid targets** (e.g. a TotalSegmentator or MONAI wholeBody source and the
  nested GTV ⊂ CTV ⊂ PTV): :func:`with_sigmoid_targets` builds a ``softmax+sigmoid`` card: the softmax group
  (background 0 and exclusive organs 1..K, a subset of the source's or all of them) keeps the source's
  channels' weights, the targets become independent sigmoid channels after them. ``finetune(source, ...,
  targets=["GTV", "CTV", "PTV"])`` does this.
"""

from __future__ import annotations

import copy
import datetime as _dt
import re
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import BadInput
from ..image import Image
from ..progress import NULL_PROGRESS, Progress
from ..segmentation import Segmentation
from ..splits import split_cases
from .augment import DEFAULT_AUGMENTATION
from .config import DEFAULT_LABELS, TrainConfig
from .data import foreground_masks, prepare_case
from .distributed import is_lead_process
from .freezing import freeze
from .loop import CHECKPOINT_FILE, train

__all__ = ["default_card", "derive_card", "with_sigmoid_targets", "output_channel_map", "finetune",
           "card_summary", "SIZES", "check_labels_contoured", "model_spacing"]

#: From-scratch network sizes: SegResNet init_filters and patch (z, y, x voxels).
SIZES = {"small": {"init_filters": 8, "patch_size": (32, 64, 64)},
         "large": {"init_filters": 32, "patch_size": (64, 128, 128)}}


def default_card(name: str, labels: Sequence[str] = DEFAULT_LABELS, *, size: str = "small", **kw: Any) -> Any:
    """Card of a from-scratch model: MONAI SegResNet of ``size`` (:data:`SIZES`; ``"auto"``: large with CUDA),
    sigmoid, 4 mm spacing, window -200..300 HU (replaced by the foreground z-score when trained with
    ``intensity="ct_zscore"``), PTV protocol margin 7 mm. ``kw`` overrides
    :func:`cervixtl.models.networks.segresnet_card` arguments."""
    from ..models.networks import segresnet_card

    if size == "auto":
        size = "large" if torch.cuda.is_available() else "small"
    if size not in SIZES:
        raise BadInput(f"network size {size!r} must be small, large or auto")
    args: dict[str, Any] = {**SIZES[size], "spacing_mm": (4.0, 4.0, 4.0), "window_hu": (-200.0, 300.0),
                            "ptv_margin_mm": 7.0}
    args.update(kw)
    return segresnet_card(name, list(labels), **args)


#: Model voxel sizes accepted for a from-scratch card, mm: below 0.5 mm a whole CT no longer fits in memory,
#: above 20 mm the organs are a few voxels wide.
SPACING_RANGE_MM = (0.5, 20.0)


def model_spacing(spec: str | float | Sequence[float] | None,
                  case_spacings: Sequence[Sequence[float]] = ()) -> tuple[float, float, float] | None:
    """Voxel size (x, y, z mm) of a from-scratch model from ``spec``.

    ``spec``: None (the card default, 4 mm isotropic: returns None); one number (isotropic); three numbers
    (x, y, z); text of either (``"4"``, ``"3.906,3.906,2.5"``); or ``"median"``: per axis, the median of
    ``case_spacings`` (each (x, y, z) mm; the training CTs'), nnU-Net's 3d_fullres target spacing.

    Raises:
        BadInput: unparsable text, not 1 or 3 numbers, a size outside :data:`SPACING_RANGE_MM`, or
        ``"median"`` without cases.
    """
    if spec is None:
        return None
    lo, hi = SPACING_RANGE_MM
    parts: list[Any]
    if isinstance(spec, str) and spec.strip().lower() == "median":
        if not case_spacings:
            raise BadInput("spacing 'median' needs training cases to take the median of")
        parts = [round(float(v), 4) for v in np.median(np.asarray(case_spacings, float), axis=0)]
    elif isinstance(spec, str):
        parts = spec.split(",")
    else:
        parts = list(spec) if isinstance(spec, Sequence) else [spec]
    try:
        vals = [float(v) for v in parts]
    except (TypeError, ValueError):
        vals = []
    if len(vals) not in (1, 3) or not all(lo <= v <= hi for v in vals):
        raise BadInput(f"spacing {spec!r} must be 'median', one voxel size or three (x,y,z), each "
                       f"{lo:g}-{hi:g} mm")
    return (vals[0],) * 3 if len(vals) == 1 else (vals[0], vals[1], vals[2])


def output_channel_map(source_card: Any, new_card: Any) -> dict[int, int]:
    """``{new output channel: source output channel}`` for labels both cards share with the same activation
    (names compared case-insensitively; a softmax background channel 0 maps to 0), used to keep trained
    output weights when a fine-tuned model adds or drops structures."""
    def acts(card: Any) -> dict[str, tuple[str, int]]:
        out = {str(lab["name"]).lower(): (card.activation(str(lab["name"])), int(lab["channel"]))
               for lab in card.labels}
        for lab in card.labels:  # a source label proposing a CervixTL structure (urinary_bladder -> Bladder)
            if lab.get("structure"):
                out.setdefault(str(lab["structure"]).lower(), out[str(lab["name"]).lower()])
        return out

    src, new = acts(source_card), acts(new_card)
    out = {ch: src[n][1] for n, (a, ch) in new.items() if n in src and src[n][0] == a}
    if any(a == "softmax" for a, _ in new.values()) and any(src[n][0] == "softmax" for n in src):
        out[0] = 0
    return out


def _fresh(d: dict[str, Any], name: str, version: str) -> Any:
    from ..models.card import ModelCard

    d["name"], d["version"] = name, version
    for k in ("training", "validation", "weights", "created", "parent"):
        d.pop(k, None)
    return ModelCard.from_dict(d)


def derive_card(base: Any, name: str, version: str, labels: Sequence[str] | None) -> Any:
    """``base``'s card renamed, with ``labels`` (same output kind) as its label list when given."""
    from ..models.card import make_labels

    d = base.to_dict()
    if labels is not None and [n.lower() for n in labels] != [n.lower() for n in base.label_names]:
        if base.output == "softmax+sigmoid":
            return with_sigmoid_targets(base, name, version, [n for n in labels if base.activation(n) != "sigmoid"
                                                              and base.label(n) is not None],
                                        [n for n in labels if base.activation(n) in (None, "sigmoid")])
        first = 0 if base.output == "sigmoid" else 1
        d["labels"] = make_labels(list(labels), first_channel=first)
        d["architecture"] = copy.deepcopy(d["architecture"])
        d["architecture"]["params"]["out_channels"] = len(labels) + first
    return _fresh(d, name, version)


def with_sigmoid_targets(source: Any, name: str, version: str, organs: Sequence[str] | None,
                         targets: Sequence[str]) -> Any:
    """A ``softmax+sigmoid`` card from a source card: softmax channels 0 (background) and 1..K = ``organs``
    (default: every softmax label of the source; a sigmoid source gives none), then one independent sigmoid
    channel per name in ``targets`` (e.g. GTV, CTV, PTV, which nest and so cannot share a softmax).

    Raises:
        BadInput: an organ the source does not predict, or a name in both lists.
    """
    from ..models.card import make_labels

    if organs is None:
        organs = [n for n in source.label_names if source.activation(n) == "softmax"]
    unknown = [o for o in organs if source.label(o) is None]
    if unknown:
        raise BadInput(f"source {source.spec} does not predict {', '.join(unknown)}")
    both = {o.lower() for o in organs} & {t.lower() for t in targets}
    if both:
        raise BadInput(f"{', '.join(sorted(both))}: a structure is either a softmax organ or a sigmoid target")
    labels = [{**lab, "activation": "softmax"} for lab in make_labels(list(organs), first_channel=1)]
    labels += [{**lab, "activation": "sigmoid"} for lab in make_labels(list(targets), first_channel=len(organs) + 1)]
    for lab in labels:  # keep the source's colours and terminology for its organs
        src = source.label(lab["name"])
        if src is not None:
            lab.update({k: src[k] for k in ("color", "terminology") if src.get(k) is not None})
    d = source.to_dict()
    d["output"], d["labels"] = "softmax+sigmoid", labels
    d["architecture"] = copy.deepcopy(d["architecture"])
    d["architecture"]["params"]["out_channels"] = len(labels) + 1
    return _fresh(d, name, version)


def check_labels_contoured(labels: Sequence[str], cases: Sequence[tuple[str, Image, Segmentation]]) -> list[str]:
    """Names of ``labels`` that no training case contours (they are left out of every loss: a label inherited
    from the source keeps its source weights, a new one stays untrained; the card lists them).

    Raises:
        BadInput: no training case contours any of the labels (nothing to learn).
    """
    none = [n for n in labels if all(seg.find(n) is None for _, _, seg in cases)]
    if len(none) == len(labels):
        raise BadInput(f"no training case contours any of the labels {', '.join(labels)}: nothing to learn")
    return none


def _zscore_card(card: Any, cases: Sequence[tuple[str, Image, Segmentation]]) -> None:
    from ..intensity import ct_zscore_spec, foreground_statistics

    stats = foreground_statistics([np.asarray(ct.array) for _, ct, _ in cases], foreground_masks(cases))
    card.input["intensity"] = ct_zscore_spec(stats)
    card.input["normalisation"] = "ct_zscore"
    card.input.pop("window_hu", None)
    card.validate()


def _source_model(source: Any, reg: Any, name: str, version: str, labels: Any, targets: Any,
                  config: TrainConfig) -> tuple[Any, torch.nn.Module, dict[str, Any], Any, str]:
    """(card, network with source weights, load report, parent record, derivation) of a fine-tuned model."""
    from ..models.networks import build_network
    from ..models.transfer import load_matching_weights

    src_card, src_net = reg.load(source)
    if targets and src_card.output == "sigmoid":  # every channel is independent already: append
        card = derive_card(src_card, name, version, list(labels or src_card.label_names) + list(targets))
    elif targets:
        card = with_sigmoid_targets(src_card, name, version, labels, targets)
    else:
        card = derive_card(src_card, name, version, labels)
    net = build_network(card)
    kept = output_channel_map(src_card, card)
    report = load_matching_weights(net, src_net.state_dict(), kept)
    report["inherited"] = [n for n in card.label_names if src_card.label(n) is not None]
    parent = {"name": src_card.name, "version": src_card.version, "sha256": src_card.weights.get("sha256")}
    copied = f"; output channels of {len(kept)} kept labels copied from the source" if report["partial_names"] else ""
    derivation = (f"fine-tuned from {src_card.spec} with freeze={config.freeze} ({report['loaded']} tensors "
                  f"loaded, {report['reinitialised']} re-initialised{copied})")
    return card, net, report, parent, derivation


def _prepare(cases: Sequence[tuple[str, Image, Segmentation]], card: Any, progress: Progress) -> dict[str, Any]:
    progress("prepare", 0.0, f"resampling {len(cases)} cases to {card.spacing_mm} mm")
    prepared = {}
    for i, (cid, ct, seg) in enumerate(cases):
        progress.check_cancelled()
        prepared[cid] = prepare_case(ct, seg, card, cid)
        progress("prepare", (i + 1) / len(cases), f"case {i + 1}/{len(cases)} ready")
    return prepared


def finetune(source: str | None, cases: Sequence[tuple[str, Image, Segmentation]], name: str, *,
             config: TrainConfig | None = None, registry: Any = None, labels: Sequence[str] | None = None,
             targets: Sequence[str] | None = None, sites: Sequence[str] = (), activate: bool = False,
             resume: bool = False, checkpoint_dir: Any = None, progress: Progress | None = None,
             base_card: Any = None, note: str = "", protocol: dict[str, Any] | None = None,
             val_cases: Sequence[tuple[str, Image, Segmentation]] | None = None) -> Any:
    """Fine-tune ``source`` (registry spec, or None / ``"none"`` from scratch) on ``cases`` and register the
    result as a new version of ``name``.

    Args:
        source: ``NAME[@VERSION]``, a package folder, or None/``"none"``.
        cases: (case id, CT in HU, final contours) triples.
        labels: label names of the new model (default: the source's, or :data:`DEFAULT_LABELS`); with
            ``targets``, the source's softmax organs to keep (default all).
        targets: new independent sigmoid target channels beside the source's softmax organs
            (:func:`with_sigmoid_targets`; e.g. ``["GTV", "CTV", "PTV"]`` on a TotalSegmentator source).
        config: training settings; registry: a :class:`~cervixtl.models.registry.Registry` (default one).
        sites: site names (recorded); activate: make the new version active; resume / checkpoint_dir:
            continue a stopped run (default folder ``<registry>/.work/<name>``).
        base_card: card for ``source=None`` (default :func:`default_card`); note: appended to the derivation;
        protocol: the new model's protocol margins in mm (default: the source card's).
        val_cases: explicit validation cases (not drawn from ``cases``; every case then trains), e.g. a
            fixed monitoring set for learning curves.

    Returns:
        The new version's :class:`~cervixtl.models.card.ModelCard`.

    Raises:
        BadInput: no cases, bad settings, labels no case contours; ModelError: unknown/corrupt source;
        Cancelled: stopped on request (the registry is unchanged).
    """
    from ..models.registry import Registry

    config = config or TrainConfig()
    config.check()
    progress = progress or NULL_PROGRESS
    reg = registry if registry is not None else Registry()
    if not re.match(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$", name or ""):
        raise BadInput(f"model name {name!r}: use letters, digits, '.', '_' or '-'")
    if not cases:
        raise BadInput("no training cases given")
    if config.threads:
        torch.set_num_threads(int(config.threads))
    version = reg.next_version(name)
    torch.manual_seed(config.seed)
    cases, tr_ids, va_ids = _split(cases, val_cases, config)
    training = set(tr_ids)
    train_cases = [c for c in cases if c[0] in training]
    card, net, report, parent, derivation = _build(source, reg, name, version, labels, targets, config,
                                                   base_card, train_cases)
    uncontoured = check_labels_contoured(card.label_names, train_cases)
    if uncontoured:
        progress("prepare", 0.0, f"no training case contours {', '.join(uncontoured)}: left out of the loss",
                 warning=f"uncontoured labels: {', '.join(uncontoured)}")
    frozen = freeze(net, config.freeze, card.patch_size)
    prepared = _prepare(cases, card, progress)
    work = _work_folder(reg, name, checkpoint_dir, resume)
    new_params = None if parent is None else [n for n in report["reinitialised_names"]
                                              if n in dict(net.named_parameters())]
    res = train(net, card, [prepared[i] for i in tr_ids], [prepared[i] for i in va_ids], config,
                progress=progress, checkpoint_dir=work, resume=resume, new_parameters=new_params)
    _record(card, res.history, config, parent, protocol, derivation, note, cases, tr_ids, va_ids, sites, frozen,
            report, uncontoured)
    if not is_lead_process():  # under torchrun only rank 0 writes the new version
        return card  # it claimed no work folder (see _work_folder)
    new = _register(reg, card, res.state_dict, name, version, activate)
    shutil.rmtree(work, ignore_errors=True)
    return new


def _split(cases: Sequence[tuple[str, Image, Segmentation]],
           val_cases: Sequence[tuple[str, Image, Segmentation]] | None,
           config: TrainConfig) -> tuple[list[tuple[str, Image, Segmentation]], list[str], list[str]]:
    """(all cases, training ids, validation ids): with explicit ``val_cases`` (a fixed monitoring set) every
    one of ``cases`` trains and the monitoring cases are added; else ``config.val_fraction`` of ``cases`` is
    drawn for validation (:func:`cervixtl.splits.split_cases`, seeded by ``config.seed``)."""
    if val_cases is None:
        tr_ids, va_ids = split_cases([c[0] for c in cases], config.val_fraction, config.seed)
        return list(cases), tr_ids, va_ids
    tr_ids, va_ids = [c[0] for c in cases], [c[0] for c in val_cases]
    training = set(tr_ids)
    return list(cases) + [c for c in val_cases if c[0] not in training], tr_ids, va_ids


def _work_folder(reg: Any, name: str, checkpoint_dir: Any, resume: bool) -> Path:
    """The run's checkpoint folder: ``checkpoint_dir``, else one that no concurrent run of ``name`` uses
    (:meth:`~cervixtl.models.registry.Registry.work_dir`). Rank 0 (or a single process) creates it and, unless
    ``resume``, clears an old checkpoint; under torchrun the other ranks only read rank 0's default folder (on
    ``resume``) and claim none."""
    if not is_lead_process():
        from ..models.registry import WORK_DIR

        return Path(checkpoint_dir) if checkpoint_dir else Path(reg.root) / WORK_DIR / name
    work = Path(checkpoint_dir) if checkpoint_dir else Path(reg.work_dir(name))
    work.mkdir(parents=True, exist_ok=True)
    if not resume:
        (work / CHECKPOINT_FILE).unlink(missing_ok=True)
    return work


def _build(source: Any, reg: Any, name: str, version: str, labels: Any, targets: Any, config: TrainConfig,
           base_card: Any, train_cases: Sequence[tuple[str, Image, Segmentation]]) -> tuple:
    from ..models.networks import build_network

    if source is not None and str(source).lower() != "none":
        return _source_model(source, reg, name, version, labels, targets, config)
    base = base_card or default_card(name, list(labels or DEFAULT_LABELS) + list(targets or []))
    names = list(labels) if labels else None
    if targets:
        names = (names or [n for n in base.label_names if n.lower() not in {t.lower() for t in targets}]) \
            + [t for t in targets]
    card = derive_card(base, name, version, names)
    if config.intensity == "ct_zscore":
        _zscore_card(card, train_cases)
    return card, build_network(card), {"loaded": 0, "reinitialised_names": []}, None, \
        f"trained from scratch ({card.architecture['params'].get('init_filters')} initial filters)"


def _record(card: Any, h: dict[str, Any], config: TrainConfig, parent: Any, protocol: Any, derivation: str,
            note: str, cases: Sequence[Any], tr_ids: Sequence[str], va_ids: Sequence[str], sites: Sequence[str],
            frozen: Sequence[str], report: dict[str, Any], uncontoured: Sequence[str]) -> None:
    """Write the training summary (counts, curves, settings; never patient data) into the card."""
    kind = "validation" if va_ids else "training-set"
    card.parent = parent
    if protocol is not None:
        card.protocol = dict(protocol)
    card.derivation = (f"{derivation} on {len(cases)} cases; selected {kind} Dice {h['best_val_dice']} at step "
                       f"{h['best_step']} ({h['selection']})" + (f"; {note}" if note else ""))
    card.training = {
        "cases": len(cases), "train_cases": len(tr_ids), "val_cases": len(va_ids),
        "train_case_ids": [str(i) for i in tr_ids], "val_case_ids": [str(i) for i in va_ids],
        "sites": sorted({s for s in sites if s}), "epochs": h["epochs"], "steps": h["steps"],
        "total_steps": h["total_steps"], "best_step": h["best_step"], "stop_reason": h["stop_reason"],
        "selection": h["selection"], "freeze": config.freeze, "frozen_tensors": len(frozen),
        "loss_curve": _thin(h["loss_curve"]), "validation_curve": h["validations"], "seed": config.seed,
        "batch_size": config.batch_size, "lr": config.lr, "schedule": {
            "kind": "linear warm-up then poly 0.9", "warmup_fraction": config.warmup_fraction,
            "grad_clip": config.grad_clip, "head_warmup_fraction": config.head_warmup_fraction,
            "backbone_lr_scale": config.backbone_lr_scale},
        "loss": ("focal" if config.focal else "cross-entropy") + " + Dice" + (" (batch Dice)" if config.batch_dice
                                                                             else ""),
        "augmentation": DEFAULT_AUGMENTATION if config.augment else None, "val_overlap": config.val_overlap,
        "seconds": h["seconds"], "step_seconds": h["step_seconds"], "device": h["device"],
        "world_size": h["world_size"], "weights_loaded": report.get("loaded"),
        "weights_reinitialised": report.get("reinitialised"), "uncontoured_labels": list(uncontoured),
        "val_mean_dice": h["best_val_dice"], "val_kind": kind,
        "val_on": "validation cases" if va_ids else "training cases (no validation split): training-set Dice"}
    n = len(va_ids) or len(tr_ids)
    card.validation = {k: {"dice": d, "cases": n, "kind": kind} for k, d in h["val_per_label"].items()}
    card.created = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _register(reg: Any, card: Any, state: dict[str, torch.Tensor], name: str, version: str, activate: bool) -> Any:
    from ..models.package import save_package

    reg.root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}-{version}.", dir=reg.root))
    try:
        # the version is allocated under the registry lock (two concurrent runs of one name get N and N+1)
        return reg.add(save_package(tmp / "pkg", card, state), activate=activate, new_version=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _thin(curve: list[list[float]], max_points: int = 400) -> list[list[float]]:
    """At most ``max_points`` [step, loss] pairs (averaged over equal step bins) for the model card."""
    if len(curve) <= max_points:
        return curve
    arr = np.array(curve, dtype=float)
    bins = np.array_split(np.arange(len(arr)), max_points)
    return [[int(arr[b[-1], 0]), round(float(arr[b, 1].mean()), 5)] for b in bins]


def card_summary(card: Any) -> dict[str, Any]:
    """Short JSON-ready description of a fine-tuned card (name, version, parent, derivation, validation)."""
    return {"name": card.name, "version": card.version, "parent": card.parent, "derivation": card.derivation,
            "training": {k: v for k, v in card.training.items() if k not in ("loss_curve", "validation_curve")},
            "validation": card.validation}
