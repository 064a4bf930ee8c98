"""Source-model benchmark: CervixTL against nnU-Net's own predictor for the same random-weight network.

For a TotalSegmentator-geometry network (nnU-Net v2 PlainConvUNet, 6 stages, 32..320 features, patch 128^3;
``--spacing 3.0``: the 3 mm ``total`` model, 118 classes; ``1.5``: the 1.5 mm organs model Dataset291, 25
classes; random weights, written in TotalSegmentator's folder layout) and a CT, in one run:

* ``nnunet``: ``nnunetv2``'s ``nnUNetPredictor`` with TotalSegmentator's settings (tile step 0.5, Gaussian, no
  mirroring) on the CT as TotalSegmentator gives it (closest canonical RAS, at the model spacing);
* ``cervixtl``: ``predict_labels`` with the imported card (float32), and ``cervixtl-bf16`` (bfloat16 autocast).

In the same run, on the CT as read (not pre-resampled), for scale:

* ``wholebody``: a random-weight MONAI ``wholeBody_ct_segmentation`` bundle (SegResNet 32 filters, 105 classes,
  its 3 mm low-resolution configuration) imported and run by CervixTL's ``predict_labels``;
* ``demo-fast`` / ``demo``: ``contour_file`` (the ``cervixtl contour`` job: read, network, post-process, targets,
  write .seg.nrrd) with the bundled demo model, fast and default settings.

Each runs in its own child process (wall time and that process's peak RSS); the TotalSegmentator-network label
maps are compared voxel by voxel with nnU-Net's (agreement), and the ratio of wall times to nnU-Net's is printed.

Full form: the 512 x 512 x 160 pelvic phantom CT at 0.98 x 0.98 x 2.5 mm (bench_inference), which
TotalSegmentator's pre-processing takes to 3 mm RAS for the first three rows.
``--quick``: the real 3 mm CT of ../shared/data/totalseg_example cropped to 64 slices (one 128^3 tile).

    .venv/bin/python benchmarks/bench_sources.py [--quick] [--threads 2] [--spacing 3.0] [--skip-bf16] [--skip-others]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "Testing" / "Python"))
DS = {3.0: "Dataset297_TotalSegmentator_total_3mm_1559subj", 1.5: "Dataset291_TotalSegmentator_part1_organs_1559subj"}


def make_inputs(work: Path, quick: bool, spacing: float, others: bool = True) -> tuple[Path, Path]:
    """(TOTALSEG_HOME_DIR with the random-weight model, CT file at the model spacing in canonical RAS); also
    writes the CT as read to ``work/ct.nii.gz`` and, with ``others``, the wholeBody bundle to
    ``work/wholeBody_ct_segmentation``."""
    import SimpleITK as sitk

    from cervixtl.image import reorient, resample_to_spacing
    from cervixtl.io import read_ct, write_image
    from monai_fixtures import make_wholebody_bundle
    from nnunet_fixtures import make_totalseg_model, organs_291_labels, plans_old_format, total_v2_labels
    from shared_data import DATA

    home = work / "tshome"
    trainer = "nnUNetTrainer_4000epochs_NoMirroring" if spacing == 3.0 else "nnUNetTrainerNoMirroring"
    make_totalseg_model(home / "nnunet" / "results", DS[spacing], trainer,
                        plans_old_format(DS[spacing], spacing, (128, 128, 128)),
                        total_v2_labels() if spacing == 3.0 else organs_291_labels())
    if quick:
        img = sitk.ReadImage(str(DATA / "totalseg_example" / "example_ct.nii.gz"))[:, :, 20:84]
        sitk.WriteImage(img, str(work / "ct.nii.gz"))
        ct = read_ct(work / "ct.nii.gz")
    else:
        from bench_inference import phantom_ct

        ct = phantom_ct()[0]
        write_image(ct, work / "ct.nii.gz")
    if others:
        make_wholebody_bundle(work / "wholeBody_ct_segmentation")
    # TotalSegmentator resamples to the model spacing and reorients to RAS before nnU-Net: give both the same.
    ras = resample_to_spacing(reorient(ct, "RAS"), (spacing,) * 3, default=-1024.0)
    out = work / "ct_ras.nii.gz"
    write_image(ras, out)
    return home, out


def worker(kind: str, home: Path, ct_file: Path, out: Path, threads: int) -> None:
    """Run one pipeline; write the label map (.npy) and print {"wall_s", "peak_rss_mb"}."""
    import torch

    torch.set_num_threads(threads)
    os.environ["TOTALSEG_HOME_DIR"] = str(home)
    t = time.perf_counter()
    if kind == "nnunet":
        from nnunetv2.imageio.simpleitk_reader_writer import SimpleITKIO
        from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

        import test_sources_nnunet as tsn
        from cervixtl.models.sources.totalseg import find_task

        folder = find_task(next(d.name[7:10] for d in (home / "nnunet" / "results").iterdir()))
        pred = nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=False,
                               perform_everything_on_device=False, device=torch.device("cpu"), allow_tqdm=False)
        trainer = folder.name.split("__")[0]
        module = ("training_length.nnUNetTrainer_Xepochs_NoMirroring" if "4000" in trainer
                  else "data_augmentation.nnUNetTrainerNoMirroring")
        tsn._initialise(pred, folder, trainer_module=module, trainer_name=trainer)
        t = time.perf_counter()
        data, props = SimpleITKIO().read_images([str(ct_file)])
        seg = np.asarray(pred.predict_single_npy_array(data, props, None, None, False), np.int16)
    elif kind.startswith("demo"):
        from bench_inference import DEMO

        from cervixtl.api.contour import contour_file
        from cervixtl.models.registry import Registry

        Registry(out.parent / "reg-demo").add(DEMO)
        t = time.perf_counter()
        rep = contour_file(ct_file, out.with_suffix(".seg.nrrd"), model="cervixtl-demo", device="cpu",
                           fast=kind == "demo-fast", threads=threads, models_dir=out.parent / "reg-demo")
        wall = time.perf_counter() - t
        split = {k: round(v, 1) for k, v in rep["timing_s"].items()}
        print(json.dumps({"wall_s": round(wall, 2), "split_s": split, "peak_rss_mb": _peak_rss_mb()}))
        return
    elif kind == "wholebody":
        from cervixtl.inference import predict_labels
        from cervixtl.io import read_ct

        card, net = _imported(str(ct_file.parent / "wholeBody_ct_segmentation"), out.parent, kind)
        t = time.perf_counter()
        p = predict_labels(read_ct(ct_file), card, net, device="cpu", postprocess=False)
        seg = np.zeros(p.grid.array.shape, np.int16)
    else:
        from cervixtl.inference import predict_labels
        from cervixtl.io import read_ct

        spec = "totalsegmentator:" + next(d.name[7:10] for d in (home / "nnunet" / "results").iterdir())
        card, net = _imported(spec, out.parent, kind)
        t = time.perf_counter()
        ct = read_ct(ct_file)
        p = predict_labels(ct, card, net, device="cpu", postprocess=False, cpu_bf16=kind.endswith("bf16"))
        seg = np.zeros(ct.array.shape, np.int16)
        for lab in card.labels:
            seg[p.masks[lab["name"]]] = int(lab["channel"])
    wall = time.perf_counter() - t
    np.save(out, seg)
    split = {} if kind == "nnunet" else {k: round(v, 1) for k, v in p.run["timing_s"].items()}
    print(json.dumps({"wall_s": round(wall, 2), "split_s": split, "peak_rss_mb": _peak_rss_mb()}))


def _imported(spec: str, work: Path, kind: str):
    """(card, network) of the source ``spec`` imported and registered under ``work`` for the worker ``kind``."""
    from cervixtl.models.registry import Registry
    from cervixtl.models.sources import import_source

    reg = Registry(work / f"reg-{kind}")
    reg.add(import_source(spec, work / f"pkg-{kind}", name="src")[0])
    return reg.load("src")


def _peak_rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="real 3 mm CT crop (one tile) instead of the 512^2 CT")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--spacing", type=float, default=3.0, choices=(3.0, 1.5), help="model spacing (mm)")
    ap.add_argument("--skip-bf16", action="store_true")
    ap.add_argument("--skip-others", action="store_true", help="only the TotalSegmentator-network rows")
    ap.add_argument("--worker", nargs=4, metavar=("KIND", "HOME", "CT", "OUT"), help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        worker(a.worker[0], Path(a.worker[1]), Path(a.worker[2]), Path(a.worker[3]), a.threads)
        return 0
    with tempfile.TemporaryDirectory(prefix="bench_sources_") as tmp:
        work = Path(tmp)
        home, ct_file = make_inputs(work, a.quick, a.spacing, others=not a.skip_others)
        env = {**os.environ, "OMP_NUM_THREADS": str(a.threads), "PYTHONWARNINGS": "ignore"}
        ts_kinds = ["nnunet", "cervixtl"] + ([] if a.skip_bf16 else ["cervixtl-bf16"])
        others = [] if a.skip_others else ["wholebody", "demo-fast", "demo"]
        rows: dict[str, dict] = {}
        for kind in ts_kinds + others:
            out = work / f"{kind}.npy"
            ct_in = ct_file if kind in ts_kinds else work / "ct.nii.gz"
            r = subprocess.run([sys.executable, __file__, "--threads", str(a.threads), "--worker", kind, str(home),
                                str(ct_in), str(out)], capture_output=True, text=True, env=env)
            if r.returncode != 0:
                print(f"{kind}: failed\n{r.stderr[-2000:]}")
                return 1
            rows[kind] = json.loads(r.stdout.strip().splitlines()[-1])
            if kind in ts_kinds:
                rows[kind]["labels"] = np.load(out)
        ref = rows["nnunet"]["labels"]
        load = os.getloadavg()[0]
        print(f"TotalSegmentator network: CT {ref.shape[::-1]} voxels (x, y, z) at {a.spacing} mm; others: the CT "
              f"as read; {a.threads} threads, load average {load:.1f} "
              f"({'contended' if load > a.threads + 0.5 else 'quiet'} machine)")
        print(f"{'pipeline':<15}{'wall s':>9}{'peak RSS MB':>13}{'ratio':>8}{'agreement':>11}")
        for kind, r in rows.items():
            cmp = (f"{r['wall_s'] / rows['nnunet']['wall_s']:>8.2f}{float((r['labels'] == ref).mean()):>11.4f}"
                   if kind in ts_kinds else f"{'-':>8}{'-':>11}")
            print(f"{kind:<15}{r['wall_s']:>9.1f}{r['peak_rss_mb']:>13.0f}{cmp}  {r['split_s']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
