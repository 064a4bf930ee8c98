"""Source-model benchmark: CervixTL against nnU-Net's own predictor for the same random-weight network.

For a TotalSegmentator-geometry network (nnU-Net v2 PlainConvUNet, 6 stages, 32..320 features, patch 128^3,
118 classes; random weights, written in TotalSegmentator's folder layout) and a CT, in one run:

* ``nnunet``: ``nnunetv2``'s ``nnUNetPredictor`` with TotalSegmentator's settings (tile step 0.5, Gaussian, no
  mirroring) on the CT as TotalSegmentator gives it (closest canonical RAS, at the model spacing);
* ``cervixtl``: ``predict_labels`` with the imported card (float32), and ``cervixtl-bf16`` (bfloat16 autocast).

Each runs in its own child process (wall time and that process's peak RSS); the label maps are compared voxel
by voxel (agreement) and the ratio of wall times to nnU-Net's is printed.

Full form: the 512 x 512 x 160 CT at 0.98 x 0.98 x 2.5 mm (synthetic, from bench_inference) resampled to 3 mm.
``--quick``: the real 3 mm CT of ../shared/data/totalseg_example cropped to 64 slices (one 128^3 tile).

    .venv/bin/python benchmarks/bench_sources.py [--quick] [--threads 2] [--spacing 3.0] [--skip-bf16]
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


def make_inputs(work: Path, quick: bool, spacing: float) -> tuple[Path, Path]:
    """(TOTALSEG_HOME_DIR with the random-weight model, CT file at the model spacing in canonical RAS)."""
    import SimpleITK as sitk

    from cervixtl.image import reorient, resample_to_spacing
    from cervixtl.io import read_ct, write_image
    from nnunet_fixtures import make_totalseg_model, plans_old_format, total_v2_labels
    from shared_data import DATA

    home = work / "tshome"
    trainer = "nnUNetTrainer_4000epochs_NoMirroring" if spacing == 3.0 else "nnUNetTrainerNoMirroring"
    make_totalseg_model(home / "nnunet" / "results", DS[spacing], trainer,
                        plans_old_format(DS[spacing], spacing, (128, 128, 128)), total_v2_labels())
    if quick:
        img = sitk.ReadImage(str(DATA / "totalseg_example" / "example_ct.nii.gz"))[:, :, 20:84]
        ct_file = work / "ct_src.nii.gz"
        sitk.WriteImage(img, str(ct_file))
        ct = read_ct(ct_file)
    else:
        from bench_inference import synthetic_ct

        ct = synthetic_ct()
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
    else:
        from cervixtl.inference import predict_labels
        from cervixtl.io import read_ct
        from cervixtl.models.registry import Registry
        from cervixtl.models.sources import import_source

        reg = Registry(out.parent / f"reg-{kind}")
        spec = "totalsegmentator:" + next(d.name[7:10] for d in (home / "nnunet" / "results").iterdir())
        pkg, _ = import_source(spec, out.parent / f"pkg-{kind}", name="ts")
        reg.add(pkg)
        card, net = reg.load("ts")
        t = time.perf_counter()
        ct = read_ct(ct_file)
        p = predict_labels(ct, card, net, device="cpu", postprocess=False, cpu_bf16=kind.endswith("bf16"))
        seg = np.zeros(ct.array.shape, np.int16)
        for lab in card.labels:
            seg[p.masks[lab["name"]]] = int(lab["channel"])
    wall = time.perf_counter() - t
    np.save(out, seg)
    split = {} if kind == "nnunet" else {k: round(v, 1) for k, v in p.run["timing_s"].items()}
    print(json.dumps({"wall_s": round(wall, 2), "split_s": split,
                      "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="real 3 mm CT crop (one tile) instead of the 512^2 CT")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--spacing", type=float, default=3.0, choices=(3.0, 1.5), help="model spacing (mm)")
    ap.add_argument("--skip-bf16", action="store_true")
    ap.add_argument("--worker", nargs=4, metavar=("KIND", "HOME", "CT", "OUT"), help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        worker(a.worker[0], Path(a.worker[1]), Path(a.worker[2]), Path(a.worker[3]), a.threads)
        return 0
    with tempfile.TemporaryDirectory(prefix="bench_sources_") as tmp:
        work = Path(tmp)
        home, ct_file = make_inputs(work, a.quick, a.spacing)
        env = {**os.environ, "OMP_NUM_THREADS": str(a.threads), "PYTHONWARNINGS": "ignore"}
        kinds = ["nnunet", "cervixtl"] + ([] if a.skip_bf16 else ["cervixtl-bf16"])
        rows: dict[str, dict] = {}
        for kind in kinds:
            out = work / f"{kind}.npy"
            r = subprocess.run([sys.executable, __file__, "--threads", str(a.threads), "--worker", kind, str(home),
                                str(ct_file), str(out)], capture_output=True, text=True, env=env)
            if r.returncode != 0:
                print(f"{kind}: failed\n{r.stderr[-2000:]}")
                return 1
            rows[kind] = json.loads(r.stdout.strip().splitlines()[-1])
            rows[kind]["labels"] = np.load(out)
        ref = rows["nnunet"]["labels"]
        load = os.getloadavg()[0]
        print(f"CT {ref.shape[::-1]} voxels (x, y, z) at {a.spacing} mm, {a.threads} threads, "
              f"load average {load:.1f} ({'contended' if load > a.threads + 0.5 else 'quiet'} machine)")
        print(f"{'pipeline':<15}{'wall s':>9}{'peak RSS MB':>13}{'ratio':>8}{'agreement':>11}")
        for kind, r in rows.items():
            ratio = r["wall_s"] / rows["nnunet"]["wall_s"]
            agree = float((r["labels"] == ref).mean())
            print(f"{kind:<15}{r['wall_s']:>9.1f}{r['peak_rss_mb']:>13.0f}{ratio:>8.2f}{agree:>11.4f}  {r['split_s']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
