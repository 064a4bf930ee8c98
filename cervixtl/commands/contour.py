"""``cervixtl contour CT OUT``: GTV, CTV, PTV and organs at risk on a planning CT with a registered model."""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

from ._common import add_progress_arg, parse_margin_mm, print_warnings

ORDER = 20


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("contour", help="contour GTV/CTV/PTV and OARs on a CT with a model",
                       description="Propose GTV, CTV, PTV and pelvic organs at risk on a planning CT (HU) with a "
                       "registered model. Output: .seg.nrrd (names, colours, terminology) or a label map "
                       "(.nii.gz/.nrrd) with a sidecar JSON; plus a JSON summary (volumes, timing, model).")
    p.add_argument("ct", help="CT image file (NIfTI, NRRD, MHA) or DICOM series folder")
    p.add_argument("out", help="output segmentation: .seg.nrrd, .nii.gz, .nii, .nrrd or .mha")
    p.add_argument("--model", default=None, help="NAME or NAME@VERSION (default: active cervixtl-demo)")
    p.add_argument("--device", default="auto", help="auto (GPU if available), cpu or cuda")
    p.add_argument("--fast", action="store_true",
                   help="CPU-friendly setting: no window overlap (unless --overlap), 4 windows per network call")
    p.add_argument("--ptv-mm", default=None,
                   help="PTV margin in mm, one value or R,L,A,P,S,I (default: the model card's protocol)")
    p.add_argument("--overlap", type=float, default=None,
                   help="sliding-window overlap 0..0.9 (default 0.25, 0 with --fast)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: torch's choice)")
    p.add_argument("--series", default=None, help="SeriesInstanceUID when the DICOM folder holds several series")
    p.add_argument("--summary", default=None, help="summary JSON path (default: <OUT stem>_summary.json)")
    p.add_argument("--models-dir", default=None, help="model registry folder (default $CERVIXTL_MODELS_DIR)")
    p.add_argument("--json", action="store_true", help="print the summary JSON on stdout")
    add_progress_arg(p)
    p.set_defaults(func=run)


def summary_path(out: str | Path, summary: str | None) -> Path:
    """``--summary`` or ``<OUT stem>_summary.json`` beside OUT."""
    from ..io import stem

    if summary:
        return Path(summary)
    o = Path(out)
    return o.with_name(stem(o) + "_summary.json")


def _check_out(out: str) -> None:
    from ..errors import BadInput

    low = out.lower()
    if not low.endswith((".seg.nrrd", ".nii.gz", ".nii", ".nrrd", ".mha")):
        raise BadInput(f"{out}: output must end in .seg.nrrd, .nii.gz, .nii, .nrrd or .mha")


def run(args: argparse.Namespace) -> int:
    import torch

    from ..atomic import write_json_atomic
    from ..errors import BadInput, Cancelled
    from ..inference import resolve_device, run_contour
    from ..io import read_ct, write_segmentation
    from ..models.registry import Registry
    from ..progress import Progress, cancel_on_signals

    _check_out(args.out)
    if args.threads is not None:
        if args.threads < 1:
            raise BadInput(f"--threads must be >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    ptv_mm = parse_margin_mm(args.ptv_mm) if args.ptv_mm is not None else None
    if args.overlap is not None and not 0.0 <= args.overlap <= 0.9:
        raise BadInput(f"--overlap must be between 0 and 0.9, got {args.overlap}")
    progress = Progress(args.progress)
    t_all = time.perf_counter()
    # Library warnings would break the JSON-lines stderr; ours are collected in the summary and printed below.
    with cancel_on_signals(progress), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        progress("load-model", 0.0, "loading model")
        registry = Registry(args.models_dir)
        card, net = registry.load(args.model, device="cpu")
        from ..inference import check_model_for_contouring

        check_model_for_contouring(card)
        t = time.perf_counter()
        progress("read", 0.0, "reading CT")
        ct = read_ct(args.ct, args.series)
        t_read = time.perf_counter() - t
        result = run_contour(ct, card, net, device=device, overlap=args.overlap, fast=args.fast, ptv_mm=ptv_mm,
                             progress=progress)
        progress.check_cancelled()
        t = time.perf_counter()
        from ..atomic import written_together
        from ..io import sidecar_path

        outputs = (args.out, sidecar_path(args.out), summary_path(args.out, args.summary))
        with written_together(*outputs):  # a full disk leaves no label map without its summary
            progress("write", 0.0, f"writing {Path(args.out).name}")
            write_segmentation(result.segmentation, args.out)
            summary = result.summary
            if ct.meta.get("n_series", 1) > 1 and not args.series:  # say which series of the folder was contoured
                summary.setdefault("warnings", []).insert(0, f"{args.ct} holds {ct.meta['n_series']} series; used "
                                                          f"{ct.meta.get('series_uid') or '(no UID)'} "
                                                          f"({ct.meta.get('series_choice')}); choose with --series")
            summary["output"] = Path(args.out).name
            summary["timing_s"] = {"read_s": round(t_read, 3), **summary["timing_s"],
                                   "write_s": round(time.perf_counter() - t, 3)}
            summary["timing_s"]["total_s"] = round(time.perf_counter() - t_all, 3)
            summary["threads"] = torch.get_num_threads()
            write_json_atomic(summary_path(args.out, args.summary), summary)
        try:
            progress("done", 1.0, f"wrote {Path(args.out).name}")
        except Cancelled:
            pass  # the output is complete: a late cancel request changes nothing

    for w in summary.get("warnings", []):
        if args.progress == "json":  # keep stderr machine-readable for a GUI
            print(json.dumps({"stage": "warning", "fraction": 1.0, "message": w, "warning": w}), file=sys.stderr)
        else:
            print_warnings([w])
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        for s in summary["structures"]:
            print(f"{s['name']:<16} {s['volume_ml']:>10.2f} mL")
        print(f"model {card.spec} on {summary['device']}: {summary['timing_s']['total_s']:.1f} s")
    return 0
