"""``contour_file``: a CT file in, GTV/CTV/PTV and organs at risk out (the ``cervixtl contour`` job)."""

from __future__ import annotations

import contextlib
import os
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..errors import BadInput, Cancelled
from ..progress import NULL_PROGRESS, Progress
from . import report

#: Output formats of a contouring result (a ``.seg.nrrd`` keeps names, colours and terminology).
OUTPUT_SUFFIXES = (".seg.nrrd", ".nii.gz", ".nii", ".nrrd", ".mha")


def summary_path(out: str | os.PathLike, summary: str | os.PathLike | None = None) -> Path:
    """``summary`` or ``<OUT stem>_summary.json`` beside ``out``."""
    from ..io import stem

    if summary:
        return Path(summary)
    o = Path(out)
    return o.with_name(stem(o) + "_summary.json")


def check_output_name(out: str | os.PathLike) -> None:
    """Refuse an output name the writer does not know. Raises: BadInput."""
    if not str(out).lower().endswith(OUTPUT_SUFFIXES):
        raise BadInput(f"{out}: output must end in {', '.join(OUTPUT_SUFFIXES[:-1])} or {OUTPUT_SUFFIXES[-1]}")


def set_threads(threads: int | None) -> int:
    """Set torch's CPU threads (None: torch's choice); returns the count in use. Raises: BadInput (< 1)."""
    import torch

    if threads is not None:
        if int(threads) < 1:
            raise BadInput(f"--threads must be >= 1, got {threads}")
        torch.set_num_threads(int(threads))
    return torch.get_num_threads()


def _engine_warnings(caught: Sequence[warnings.WarningMessage]) -> list[str]:
    """The messages of warnings raised from CervixTL code (not deprecations), in order, once each."""
    out: list[str] = []
    for w in caught:
        text = " ".join(str(w.message).split())
        if ("cervixtl" in str(w.filename) and not issubclass(w.category, (DeprecationWarning, FutureWarning))
                and text not in out):
            out.append(text)
    return out


def _settings(out: str | os.PathLike, threads: int | None, device: str,
              ptv_mm: float | str | Sequence[float] | None,
              overlap: float | None) -> tuple[int, Any, float | tuple[float, ...] | None]:
    """Check the settings before any work: (threads in use, torch device, PTV margin or None).

    Raises:
        BadInput: unknown output format, threads < 1, unknown device, bad margin or overlap.
    """
    from ..inference import resolve_device
    from ..margins import parse_margin

    check_output_name(out)
    n_threads = set_threads(threads)
    dev = resolve_device(device)
    margin: float | tuple[float, ...] | None = None
    if ptv_mm is not None:
        six = parse_margin(ptv_mm, "--ptv-mm margin")
        margin = six[0] if len(set(six)) == 1 else six  # isotropic margins are reported as one number
    if overlap is not None and not 0.0 <= overlap <= 0.9:
        raise BadInput(f"--overlap must be between 0 and 0.9, got {overlap}")
    return n_threads, dev, margin


def _load_model(model: str | None, models_dir: str | os.PathLike | None, progress: Progress) -> tuple[Any, Any]:
    """(card, network on the CPU) of a model that can contour targets. Raises: ModelError."""
    from ..inference import check_model_for_contouring
    from ..models.registry import Registry

    progress("load-model", 0.0, "loading model")
    card, net = Registry(models_dir).load(model, device="cpu")
    check_model_for_contouring(card)
    return card, net


def contour_file(ct: str | os.PathLike, out: str | os.PathLike, *, model: str | None = None,
                 device: str = "auto", fast: bool = False, ptv_mm: float | str | Sequence[float] | None = None,
                 overlap: float | None = None, threads: int | None = None, series: str | None = None,
                 summary: str | os.PathLike | None = None, models_dir: str | os.PathLike | None = None,
                 progress: Progress | None = None) -> dict[str, Any]:
    """Contour a planning CT file with a registered model and write the segmentation and its summary.

    Args:
        ct: CT image file (NIfTI, NRRD, MHA; HU) or a DICOM series folder.
        out: output segmentation: ``.seg.nrrd`` or a label map (``.nii.gz``, ``.nii``, ``.nrrd``, ``.mha``)
            with a sidecar JSON of names; on the CT's own voxel grid (arrays (z, y, x), LPS mm).
        model: ``NAME`` or ``NAME@VERSION`` (default: the active ``cervixtl-demo``).
        device: ``auto`` (GPU when available), ``cpu`` or ``cuda``; fast: the CPU setting (see
            :func:`cervixtl.inference.predict_labels`); overlap: sliding-window overlap 0..0.9.
        ptv_mm: PTV margin in mm, one value or R, L, A, P, S, I (numbers or text ``"5,5,10,10,7,7"``);
            None: the card's protocol margin.
        threads: CPU threads for torch; series: SeriesInstanceUID when the folder holds several series.
        summary: summary JSON path (default ``<OUT stem>_summary.json``); models_dir: registry folder.
        progress: progress reporter / cancel flag.

    Returns:
        The ``cervixtl-contour/1`` report (also written to the summary file): model, device, volumes (mL) per
        structure, timing (s), warnings.

    Raises:
        BadInput, ModelError, GeometryMismatch; Cancelled before anything is written.
    """
    from ..atomic import write_json_atomic
    from ..inference import run_contour
    from ..io import read_ct, write_segmentation

    progress = progress or NULL_PROGRESS
    n_threads, dev, margin = _settings(out, threads, device, ptv_mm, overlap)
    t_all = time.perf_counter()
    # Library warnings would break the JSON-lines stderr: ours (e.g. which DICOM series was read) go into
    # the summary's warnings, the libraries' are dropped.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        card, net = _load_model(model, models_dir, progress)
        t = time.perf_counter()
        progress("read", 0.0, "reading CT")
        image = read_ct(ct, series)
        t_read = time.perf_counter() - t
        result = run_contour(image, card, net, device=dev, overlap=overlap, fast=fast, ptv_mm=margin,
                             progress=progress)
        progress.check_cancelled()
        t = time.perf_counter()
        progress("write", 0.0, f"writing {Path(out).name}")
        write_segmentation(result.segmentation, out)
        rep = report("contour", {"output": Path(out).name, **result.summary, "threads": n_threads})
        rep["warnings"] = _engine_warnings(caught) + rep["warnings"]
        rep["timing_s"] = {"read_s": round(t_read, 3), **rep["timing_s"], "write_s": round(time.perf_counter() - t, 3),
                           "total_s": round(time.perf_counter() - t_all, 3)}
        write_json_atomic(summary_path(out, summary), rep)
        for w in rep["warnings"]:
            progress.warn(w)
        with contextlib.suppress(Cancelled):  # the output is complete: a late cancel request changes nothing
            progress("done", 1.0, f"wrote {Path(out).name}")
    return rep
