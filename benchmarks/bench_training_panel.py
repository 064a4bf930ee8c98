"""CervixTLTraining panel: GUI responsiveness during fine-tuning, and how honest the time estimate is.

A real ``cervixtl finetune`` (small SegResNet, 6 mm voxels, phantom cases, CPU) runs in the background as the
module runs it, while the main thread calls ``TrainingLogic.poll()`` every 50 ms as the panel's timer does
(the poll also appends the new points to the MRML loss / validation-Dice tables). Printed:

* poll time per timer tick (median / max, ms) -- what the GUI thread spends per tick; the baseline in the
  same run is one synchronous engine call (``cervixtl models list --json``), i.e. how long the GUI would freeze
  per call if it waited on the engine instead of polling;
* the training-time estimate from a measured step time (``steptime.py`` on the CPU) against the training
  time the engine then reported (first step to last step of the run).

    .venv/bin/python benchmarks/bench_training_panel.py [--cases 4] [--epochs 2]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "CervixTLTraining"))
sys.path.insert(0, str(REPO / "Testing" / "Slicer"))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", type=int, default=4, help="phantom cases in the library (default 4)")
    ap.add_argument("--epochs", type=int, default=2, help="epochs of the run (default 2)")
    a = ap.parse_args(argv)

    import mrml_harness
    import torch

    from cervixtl import phantom
    from cervixtl.cases import CaseLibrary
    from cervixtl.models.networks import build_network, segresnet_card
    from cervixtl.models.package import save_package
    from cervixtl.models.registry import Registry
    from CervixTLTrainingLib import estimates
    from CervixTLTrainingLib.engine import run_engine
    from CervixTLTrainingLib.logic import FinetuneRequest, TrainingLogic

    root = Path(tempfile.mkdtemp(prefix="bench_training_panel_"))
    scene = mrml_harness.make_scene()
    logic = TrainingLogic(scene, cases_dir=str(root / "cases"), models_dir=str(root / "models"))
    torch.manual_seed(0)
    card = segresnet_card("src6", ["GTV", "CTV"], init_filters=4, spacing_mm=(6, 6, 6), patch_size=(16, 16, 16))
    Registry(root / "models").add(save_package(root / "src6", card, build_network(card).state_dict()))
    library = CaseLibrary(root / "cases")
    ids = [library.add(*phantom.make_phantom(seed=500 + i, site="B", spacing=(6.0, 6.0, 6.0)), site="B")
           for i in range(a.cases)]

    t0 = time.perf_counter()
    run_engine(["models", "list", "--json"], parse_json=True, env=logic.env)
    sync_call_s = time.perf_counter() - t0

    request = FinetuneRequest(source="src6@1", name="bench", cases=ids, freeze="encoder", epochs=a.epochs,
                              val_fraction=0.25, device="cpu", seed=0)
    timing = logic.measure_step("src6@1", "cpu", steps=3)
    steps, estimate_s = logic.time_estimate(request, timing)

    logic.start_finetune(request)
    polls = []
    while True:
        t = time.perf_counter()
        st = logic.poll()
        polls.append(time.perf_counter() - t)
        if not st.running:
            break
        time.sleep(0.05)
    if st.error:
        print(f"fine-tuning failed: {st.error}")
        return 1
    train = [r for r in logic.job.records if r.get("stage") == "train" and r.get("loss") is not None]
    vals = [r for r in logic.job.records if r.get("stage") == "validate"]
    first, last = train[0], (vals[-1] if vals else train[-1])
    # training time from the engine's own clock: from just before the first step to the last validation
    per_step_first = train[1]["elapsed_s"] - train[0]["elapsed_s"] if len(train) > 1 else 0.0
    actual_s = last["elapsed_s"] - first["elapsed_s"] + per_step_first
    n_train, n_val = estimates.split_counts(len(ids), request.val_fraction)
    print(f"cases: {len(ids)} ({n_train} train, {n_val} held out), epochs {a.epochs}, device cpu, "
          f"torch threads {torch.get_num_threads()}")
    print(f"timer ticks: {len(polls)}; poll time per tick: median {statistics.median(polls) * 1e3:.2f} ms, "
          f"max {max(polls) * 1e3:.2f} ms")
    print(f"baseline, one synchronous engine call (models list): {sync_call_s * 1e3:.0f} ms "
          f"= {sync_call_s / max(max(polls), 1e-9):.0f} x the slowest poll")
    print(f"loss points drawn: {logic.curve.n_loss}, validation points: {logic.curve.n_val}")
    print(f"measured step time: {timing.step_s:.3f} s (batch 2, CPU); planned steps: {steps} "
          f"(engine ran {len(train)})")
    diffs = [b["elapsed_s"] - a_["elapsed_s"] for a_, b in zip(train, train[1:]) if b["step"] == a_["step"] + 1
             and b["epoch"] == a_["epoch"]]
    val_s = [v["elapsed_s"] - max(t["elapsed_s"] for t in train if t["step"] <= v["step"]) for v in vals]
    print(f"engine step time (median between consecutive steps): {statistics.median(diffs):.3f} s; "
          f"validation: {', '.join(f'{v:.1f}' for v in val_s)} s per validation")
    est_train_s = estimates.estimate_training_s(timing.step_s, steps, 0.0, n_val, a.epochs)
    print(f"estimated training time: {est_train_s:.1f} s (+ start-up {timing.startup_s:.1f} s = {estimate_s:.1f} s); "
          f"engine-reported training time: {actual_s:.1f} s; ratio estimate/actual {est_train_s / actual_s:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
