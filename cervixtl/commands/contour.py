"""``cervixtl contour CT OUT``: GTV, CTV, PTV and organs at risk on a planning CT with a registered model."""

from __future__ import annotations

import argparse

from ..progress import cancel_on_signals
from ._common import add_json_arg, add_progress_arg, make_progress, print_json

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
    add_json_arg(p, "the summary (cervixtl-contour/1)")
    add_progress_arg(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..api.contour import contour_file

    progress = make_progress(args)
    with cancel_on_signals(progress):
        rep = contour_file(args.ct, args.out, model=args.model, device=args.device, fast=args.fast,
                           ptv_mm=args.ptv_mm, overlap=args.overlap, threads=args.threads, series=args.series,
                           summary=args.summary, models_dir=args.models_dir, progress=progress)
    if args.json:
        print_json(rep)
        return 0
    for s in rep["structures"]:
        print(f"{s['name']:<16} {s['volume_ml']:>10.2f} mL")
    print(f"model {rep['model']['name']}@{rep['model']['version']} on {rep['device']}: "
          f"{rep['timing_s']['total_s']:.1f} s")
    return 0
