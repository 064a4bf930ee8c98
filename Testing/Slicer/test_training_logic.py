"""CervixTLTraining logic (``CervixTLTraining/CervixTLTrainingLib``) against the real MRML libraries of
``slicer-core`` and the real ``cervixtl`` engine commands.

* pure parts: the verdict wording rule, time estimates, pre-flight messages, readable engine errors;
* scene <-> files: a CT volume node and an overlapping GTV/CTV segmentation written for the engine come back
  voxel-exact on the CT's LPS grid;
* a REAL fine-tuning run of a few steps on phantom cases fills the loss / validation-Dice table and plot
  nodes; the case table, the model-versions table and the comparison table come from the real ``cases``,
  ``models`` and ``compare`` commands; Cancel stops the engine without touching the active model.
"""

from __future__ import annotations

import hashlib
import json
import math
import subprocess
import sys
import time
import types
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(REPO / "CervixTLTraining"), str(REPO / "CervixTL")]

from cervixtl.runner import parse_progress_line  # noqa: E402
from cervixtl.splits import split_cases  # noqa: E402
from CervixTLLib import contract  # noqa: E402
from CervixTLLib.engine import EngineError, EngineProcess, EngineResult, run_engine  # noqa: E402
from CervixTLTrainingLib import estimates  # noqa: E402
from CervixTLTrainingLib.verdict import StructureComparison, classify, join_names, verdict  # noqa: E402


# ============================================================================ pure logic (no Slicer)
def _row(name: str, p: float, diff: float, n: int = 6) -> StructureComparison:
    return StructureComparison(name, n, dice_source=0.7, dice_new=0.7 + diff, p_value=p, median_difference=diff)


def test_verdict_wording_of_the_issue_example() -> None:
    rows = [_row("GTV", 0.44, 0.02), _row("CTV", 0.031, 0.07), _row("PTV", 0.031, 0.07)]
    assert verdict(rows) == "better on CTV and PTV, no significant change on GTV with n = 6"


def test_verdict_groups_order_and_edge_cases() -> None:
    rows = [_row("GTV", 0.01, -0.05, n=8), _row("CTV", 0.2, 0.05, n=8), _row("PTV", 0.002, 0.04, n=8),
            _row("Bladder", math.nan, 0.1, n=8)]
    assert verdict(rows) == ("better on PTV, worse on GTV, no significant change on CTV, "
                             "too few cases to test Bladder with n = 8")
    # p exactly at alpha is not significant; a significant p with zero median falls back to the mean Dice
    assert classify(_row("A", 0.05, 0.1)) == "no significant change"
    tie = StructureComparison("A", 6, dice_source=0.6, dice_new=0.65, p_value=0.01, median_difference=0.0)
    assert classify(tie) == "better"
    assert verdict([_row("GTV", 0.3, 0.0, n=4), _row("CTV", 0.3, 0.0, n=6)]).endswith("with n = 4 to 6")
    assert join_names(["A", "B", "C"]) == "A, B and C"
    assert verdict([]).startswith("no comparison results")


def test_time_estimate_is_measured_step_time_times_steps() -> None:
    # 10 cases, 20 % held out -> 8 train, 2 validate; the engine's epoch is max(8, 4 * 8) = 32 steps, so 5
    # epochs -> 160 steps, + 4 step-units per held-out case and epoch for validation
    assert estimates.split_counts(10, 0.2) == (8, 2)
    assert estimates.split_counts(2, 0.1) == (1, 1)
    assert estimates.split_counts(3, 0.0) == (3, 0)
    assert estimates.steps_per_epoch(1) == 8 and estimates.steps_per_epoch(8) == 32
    steps = estimates.planned_steps(8, 5)
    assert steps == 160
    assert estimates.planned_steps(8, 5, per_epoch=10) == 50
    assert estimates.estimate_training_s(1.5, steps, startup_s=10.0, n_val_cases=2, epochs=5) == pytest.approx(
        10.0 + 1.5 * (160 + 40))
    assert estimates.format_duration(42) == "42 s"
    assert estimates.format_duration(190) == "3 min"
    assert estimates.format_duration(4980) == "1 h 23 min"
    assert estimates.format_duration(math.nan) == "unknown"
    cpu = estimates.StepTiming(device="cpu", step_s=2.0, startup_s=30.0)
    text = estimates.cpu_offer_text(cpu, 100)
    assert "2.00 s" in text and "about 4 min" in text and "No CUDA GPU" in text  # 30 + 200 s = 3.8 min
    assert "about 885 steps" in estimates.cpu_offer_text(cpu, 0, minutes_budget=30)  # (1800 - 30) / 2


def test_preflight_messages() -> None:
    assert "Not enough cases: 1 selected" in estimates.check_enough_cases(1, 0.2)
    assert estimates.check_enough_cases(2, 0.2) is None
    assert "all 2 would be held out" not in (estimates.check_enough_cases(2, 0.9) or "")
    msg = estimates.check_disk_space(REPO, needed_bytes=1 << 62)
    assert msg and "MB free" in msg and "nothing was started" in msg
    assert estimates.check_disk_space(REPO / "no" / "such" / "folder", needed_bytes=1) is None


def test_engine_errors_are_read_from_the_contract_not_guessed() -> None:
    """The contract's final ``{"stage": "error", "kind", "message"}`` record, else the engine's one
    ``cervixtl: error:`` line; a cancel (exit 130, or killed before the engine's handler) reads as stopped."""
    def res(rc: int, progress: list, log: str = "", cancelled: bool = False) -> EngineResult:
        return EngineResult(rc, cancelled, "", "", progress, log)

    full = res(2, [{"stage": "train", "fraction": 0.5},
                   {"stage": "error", "kind": "disk-full", "message": "the disk is full writing ckpt.pt"}])
    assert contract.error_text(full).startswith("the disk is full writing ckpt.pt") and "Nothing was lost" in \
        contract.error_text(full)
    geo = res(2, [{"stage": "error", "kind": "geometry", "message": "final.seg.nrrd is not on the CT grid"}])
    assert contract.error_text(geo).startswith("final.seg.nrrd is not on the CT grid") and "re-export" in \
        contract.error_text(geo)
    # no error record (an older engine): its one error line, without the prefix; regexes on free text are gone
    assert contract.error_text(res(2, [], "log\ncervixtl: error: x.nrrd: no such file")) == "x.nrrd: no such file"
    assert contract.error_text(res(1, [], "OSError: [Errno 28] No space left")) == "OSError: [Errno 28] No space left"
    assert contract.error_text(res(3, [])) == "the engine stopped with exit status 3"
    assert contract.error_text(res(130, [])).startswith("Stopped on request")
    assert contract.error_text(res(-15, [], cancelled=True)).startswith("Stopped on request")
    assert parse_progress_line('{"stage": "train", "fraction": 0.5}') == {"stage": "train", "fraction": 0.5}
    assert parse_progress_line("epoch 3 loss 0.2") is None
    assert parse_progress_line('{"not": "progress"}') is None


def test_held_out_split_is_the_one_finetune_uses() -> None:
    # the module computes the held-out cases with cervixtl.splits (no torch in Slicer's process); finetune
    # splits with cervixtl.training.split_cases: both must pick the same cases
    training = pytest.importorskip("cervixtl.training")
    for n, fraction, seed in [(2, 0.1, 0), (3, 0.34, 1), (10, 0.2, 3), (7, 0.5, 42), (5, 0.0, 1), (1, 0.5, 0)]:
        ids = [f"case-{i:03d}" for i in range(n)]
        assert split_cases(ids, fraction, seed) == training.split_cases(ids, fraction, seed)


def test_cancel_right_after_start_reads_as_stopped_on_request() -> None:
    job = EngineProcess(["models", "list", "--json"])  # still importing when cancelled
    job.cancel()
    assert job.wait(timeout_s=60) not in (None, 0)
    assert contract.error_text(job.result()).startswith("Stopped on request")


def test_engine_runs_as_a_separate_process_and_reports_errors() -> None:
    out = run_engine(["models", "list", "--json"])
    assert json.loads(out)["format"] == "cervixtl-models-list/1"
    assert all("@" in r["spec"] for r in contract.model_rows(out))
    with pytest.raises(EngineError) as exc:
        run_engine(["info", str(REPO / "no_such_file.nii.gz")])
    assert "no_such_file.nii.gz" in str(exc.value) and exc.value.returncode == 2
    assert "\n" not in str(exc.value)


# ============================================================================ MRML scene (slicer-core)
slicer_mark = pytest.mark.slicer


def _make_scene():  # noqa: ANN202
    """A real vtkMRMLScene installed as ``slicer.mrmlScene`` by the shared harness (``mrml_harness.py``:
    conversion rules, volumes / segmentations logics, stand-in ``slicer.modules``); skips without slicer-core."""
    pytest.importorskip("slicer", reason="slicer-core (real MRML libraries) is not installed")
    import mrml_harness

    return mrml_harness.make_scene()


@pytest.fixture()
def scene():  # noqa: ANN201
    return _make_scene()


def _ct_and_segmentation(scene, shape=(20, 30, 40), spacing=(2.0, 1.5, 3.0), shift_ctv: int = 0):  # noqa: ANN001, ANN202
    """A CT volume node (known HU array, LPS-like axes) and a segmentation with CTV containing GTV."""
    import slicer
    import slicer.util
    import vtk

    arr = ((np.arange(np.prod(shape)) % 1000) - 500).reshape(shape).astype(np.int16)
    ijk_to_ras = vtk.vtkMatrix4x4()
    ijk_to_ras.SetElement(0, 0, -spacing[0])
    ijk_to_ras.SetElement(1, 1, -spacing[1])
    ijk_to_ras.SetElement(2, 2, spacing[2])
    for i, o in enumerate((10.0, -20.0, -30.0)):
        ijk_to_ras.SetElement(i, 3, o)
    vol = slicer.util.addVolumeFromArray(arr, ijk_to_ras, "CT")
    seg = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "contours")
    seg.SetReferenceImageGeometryParameterFromVolumeNode(vol)
    ctv = np.zeros(shape, np.uint8)
    ctv[5:15, 8:22, 10 + shift_ctv:30 + shift_ctv] = 1
    gtv = np.zeros(shape, np.uint8)
    gtv[8:12, 12:18, 15:25] = 1
    for name, mask, color in (("CTV", ctv, (0.0, 1.0, 0.0)), ("GTV", gtv, (1.0, 0.0, 0.0))):
        sid = seg.GetSegmentation().AddEmptySegment(name, name, color)
        slicer.util.updateSegmentBinaryLabelmapFromArray(mask, seg, sid, vol)
        seg.GetSegmentation().GetSegment(sid).SetName(name)
    return vol, seg, arr, {"CTV": ctv.astype(bool), "GTV": gtv.astype(bool)}


@slicer_mark
def test_nodes_are_written_voxel_exact_on_the_ct_grid(scene, tmp_path: Path) -> None:  # noqa: ANN001
    from cervixtl.io import read_image, read_segmentation
    from CervixTLLib import nodes

    vol, seg, arr, masks = _ct_and_segmentation(scene)
    n_nodes = scene.GetNumberOfNodes()
    nodes.write_volume(vol, tmp_path / "ct.nrrd")
    nodes.write_segmentation_node(seg, vol, tmp_path / "final.seg.nrrd")
    ct = read_image(tmp_path / "ct.nrrd")
    # RAS origin (10, -20, -30) is LPS (-10, 20, -30); the RAS axes (-x, -y, +z) are the LPS identity
    assert ct.spacing == pytest.approx((2.0, 1.5, 3.0))
    assert ct.origin == pytest.approx((-10.0, 20.0, -30.0))
    assert np.allclose(ct.direction, np.eye(3))
    assert np.array_equal(ct.array, arr)
    segmentation = read_segmentation(tmp_path / "final.seg.nrrd", reference=ct)  # GeometryMismatch if not
    got = {s.name: s.mask.astype(bool) for s in segmentation.segments}
    assert set(got) == {"CTV", "GTV"}
    for name, mask in masks.items():
        assert np.array_equal(got[name], mask), name
    assert scene.GetNumberOfNodes() == n_nodes, "temporary nodes were left in the scene"


@slicer_mark
def test_training_curve_tables_and_plot(scene) -> None:  # noqa: ANN001
    from CervixTLTrainingLib.tables import TrainingCurve, table_rows

    curve = TrainingCurve(scene)
    for step in range(1, 5):
        # training lines repeat the best validation Dice so far: it must not become a validation point
        assert curve.add({"stage": "train", "step": step, "epoch": 1, "loss": 1.0 / step, "elapsed_s": step,
                          "val_dice": 0.3})
    assert not curve.add({"stage": "train", "step": 4, "loss": 0.1})  # same step: not added twice
    assert curve.add({"stage": "validate", "step": 4, "epoch": 1, "loss": 0.4, "val_dice": 0.55})
    assert not curve.add({"stage": "load", "fraction": 0.1})
    assert [r["loss"] for r in table_rows(curve.loss_table)] == pytest.approx([1.0, 0.5, 1 / 3, 0.25])
    assert table_rows(curve.val_table) == [{"step": 4, "epoch": 1, "val_dice": 0.55}]
    ids = {curve.chart.GetNthPlotSeriesNode(i).GetTableNodeID() for i in range(2)}
    assert ids == {curve.loss_table.GetID(), curve.val_table.GetID()}
    # a resumed run goes back to its checkpoint (step 1): later points are replaced, not duplicated
    again = TrainingCurve(scene, curve.loss_table, curve.val_table, curve.chart)  # keeps the existing points
    assert again.n_loss == 4 and again.n_val == 1
    assert again.add({"stage": "train", "step": 1, "epoch": 1, "message": "resumed at epoch 1, step 1"})
    assert again.n_loss == 1  # the checkpoint's own point stays
    assert again.add({"stage": "train", "step": 2, "epoch": 1, "loss": 0.6})
    assert again.add({"stage": "train", "step": 3, "epoch": 1, "loss": 0.45})
    assert [(r["step"], r["loss"]) for r in table_rows(again.loss_table)] == [(1, 1.0), (2, 0.6), (3, 0.45)]
    assert again.n_val == 0  # the validation at step 4 came after the checkpoint
    again.reset()
    assert again.n_loss == 0 and again.chart.GetNumberOfPlotSeriesNodes() == 2


@slicer_mark
def test_comparison_nodes_and_verdict(scene) -> None:  # noqa: ANN001
    from CervixTLTrainingLib.logic import TrainingLogic
    from CervixTLTrainingLib.tables import table_rows

    logic = TrainingLogic(scene)
    rows = [_row("GTV", 0.44, 0.02), _row("CTV", 0.031, 0.07), _row("PTV", 0.031, 0.07)]
    text = logic.update_compare_nodes(rows)
    assert text == "better on CTV and PTV, no significant change on GTV with n = 6"
    table = table_rows(scene.GetFirstNode("CervixTL comparison", "vtkMRMLTableNode"))
    assert [r["Structure"] for r in table] == ["GTV", "CTV", "PTV"]
    assert [r["Result"] for r in table] == ["no significant change", "better", "better"]
    assert table[1]["Dice new"] == pytest.approx(0.77)
    chart = scene.GetFirstNode("CervixTL comparison chart", "vtkMRMLPlotChartNode")
    assert chart.GetNumberOfPlotSeriesNodes() == 2


# ============================================================================ real engine runs
def _engine_has(command: str) -> bool:
    proc = subprocess.run([sys.executable, "-m", "cervixtl", command, "--help"], capture_output=True, text=True)
    return proc.returncode == 0


def _need(*commands: str) -> None:
    missing = [c for c in commands if not _engine_has(c)]
    if missing:
        pytest.skip(f"engine command(s) not available yet: {', '.join(missing)}")


def _tiny_package(dest: Path, version: str, parent: dict | None = None, training: dict | None = None,
                  validation: dict | None = None) -> Path:
    """A real (small) SegResNet model package written with the engine's own API."""
    import torch

    from cervixtl.models.networks import build_network, segresnet_card
    from cervixtl.models.package import save_package

    torch.manual_seed(int(version))
    card = segresnet_card("tiny", ["GTV", "CTV"], version=version, init_filters=4, spacing_mm=(3, 3, 3),
                          patch_size=(16, 16, 16))
    card.parent = parent
    card.training = training or {}
    card.validation = validation or {}
    return save_package(dest, card, build_network(card).state_dict())


@pytest.fixture(scope="module")
def tiny_registry(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A registry folder with tiny@1 (active) and tiny@2 (fine-tuned from tiny@1); tiny@2 is imported with the
    real ``cervixtl models import`` (the panel's Import button)."""
    pytest.importorskip("slicer", reason="slicer-core (real MRML libraries) is not installed")
    from cervixtl.models.registry import Registry
    from CervixTLTrainingLib.logic import TrainingLogic

    root = tmp_path_factory.mktemp("tiny_registry")
    Registry(root / "registry").add(_tiny_package(root / "p1", "1"))
    p2 = _tiny_package(root / "p2", "2", parent={"name": "tiny", "version": "1", "sha256": "0" * 64},
                       training={"cases": 4, "freeze": "encoder"}, validation={"CTV": {"dice": 0.8125}})
    logic = TrainingLogic(None, models_dir=str(root / "registry"))
    assert "tiny@2" in logic.import_model(str(p2))
    return root / "registry"


@slicer_mark
@pytest.mark.slow
def test_model_versions_table_activate_rollback_export(scene, tiny_registry: Path,  # noqa: ANN001
                                                       tmp_path: Path) -> None:
    from CervixTLTrainingLib.logic import TrainingLogic
    from CervixTLTrainingLib.tables import table_rows

    logic = TrainingLogic(scene, models_dir=str(tiny_registry))

    def tiny_rows() -> dict[str, dict]:
        table = logic.update_versions_table()
        return {r["Model"]: r for r in table_rows(table) if r["Model"].startswith("tiny@")}

    rows = tiny_rows()
    assert rows["tiny@1"]["Active"] == "yes" and rows["tiny@2"]["Active"] == ""  # first import is active
    assert rows["tiny@2"]["Parent"] == "tiny@1" and rows["tiny@1"]["Parent"] == "(none)"
    assert rows["tiny@2"]["Cases used"] == "4" and rows["tiny@2"]["Freeze"] == "encoder"
    assert rows["tiny@2"]["Validation Dice"] == "CTV 0.812"
    logic.activate("tiny@2")
    rows = tiny_rows()
    assert rows["tiny@2"]["Active"] == "yes" and rows["tiny@1"]["Active"] == ""
    logic.rollback("tiny")
    assert tiny_rows()["tiny@1"]["Active"] == "yes"
    logic.export_model("tiny@2", tmp_path / "shared" / "tiny-v2")
    exported = json.loads((tmp_path / "shared" / "tiny-v2" / "model.json").read_text())
    weights = (tmp_path / "shared" / "tiny-v2" / exported["weights"]["file"]).read_bytes()
    assert hashlib.sha256(weights).hexdigest() == exported["weights"]["sha256"]
    assert exported["parent"]["version"] == "1"


@slicer_mark
@pytest.mark.slow
def test_step_time_is_measured_on_the_cpu(scene, tiny_registry: Path) -> None:  # noqa: ANN001
    from CervixTLTrainingLib.logic import FinetuneRequest, TrainingLogic

    logic = TrainingLogic(scene, models_dir=str(tiny_registry))
    timing = logic.measure_step("tiny@1", "cpu", steps=2)
    assert timing.device == "cpu" and 0 < timing.step_s < 60 and timing.startup_s >= 0
    request = FinetuneRequest(source="tiny@1", name="x", cases=[f"c{i}" for i in range(10)], epochs=5,
                              val_fraction=0.2)
    steps, seconds = logic.time_estimate(request, timing)
    assert steps == 160
    assert seconds == pytest.approx(timing.startup_s + timing.step_s * (160 + 4 * 2 * 5))


@slicer_mark
def test_case_library_from_scene_nodes(scene, tmp_path: Path) -> None:  # noqa: ANN001
    """'Add the current CT + segmentation' through the real ``cervixtl cases add``; the case table shows it
    with the Dice between proposal and final CTV (analytic: CTV box shifted by 5 of its 20 columns -> 0.75)."""
    _need("cases")
    from CervixTLTrainingLib.logic import TrainingLogic
    from CervixTLTrainingLib.tables import table_rows

    vol, final, _arr, _masks = _ct_and_segmentation(scene)
    _vol2, proposal, _a2, _m2 = _ct_and_segmentation(scene, shift_ctv=5)
    proposal.SetReferenceImageGeometryParameterFromVolumeNode(vol)  # (same grid) the proposal made on this CT
    logic = TrainingLogic(scene, cases_dir=str(tmp_path / "cases"))
    case_id = logic.add_case_from_nodes(vol, final, proposal, site="siteB")
    same_id = logic.add_case_from_nodes(vol, final, final, site="siteB")
    rows = {r["Case ID"]: r for r in table_rows(logic.update_cases_table())}
    assert set(rows) == {case_id, same_id}
    assert rows[case_id]["Site"] == "siteB"
    assert {"CTV", "GTV"} <= {s.strip() for s in rows[case_id]["Structures"].split(",")}
    assert rows[case_id]["CTV Dice proposal vs final"] == pytest.approx(0.75, abs=1e-6)
    assert rows[same_id]["CTV Dice proposal vs final"] == pytest.approx(1.0)
    # load back into the scene: same voxels as the nodes that were saved
    import slicer.util

    vol_back, seg_back = logic.load_case(case_id)
    assert np.array_equal(slicer.util.arrayFromVolume(vol_back), slicer.util.arrayFromVolume(vol))
    names = [seg_back.GetSegmentation().GetNthSegment(i).GetName()
             for i in range(seg_back.GetSegmentation().GetNumberOfSegments())]
    assert {"CTV", "GTV"} <= set(names)
    logic.remove_case(same_id)
    assert [r["Case ID"] for r in table_rows(logic.update_cases_table())] == [case_id]


@slicer_mark
def test_case_with_mismatched_geometry_is_refused_with_one_line(scene, tmp_path: Path) -> None:  # noqa: ANN001
    _need("cases")
    from CervixTLLib import nodes
    from CervixTLTrainingLib.logic import TrainingLogic

    vol, final, _arr, _masks = _ct_and_segmentation(scene)
    other, _seg2, _a2, _m2 = _ct_and_segmentation(scene, shape=(20, 30, 36), spacing=(2.0, 1.5, 2.5))
    nodes.write_volume(vol, tmp_path / "ct.nrrd")
    final.RemoveNodeReferenceIDs(final.GetReferenceImageGeometryReferenceRole())
    nodes.write_segmentation_node(final, other, tmp_path / "final.seg.nrrd")
    logic = TrainingLogic(scene, cases_dir=str(tmp_path / "cases"))
    with pytest.raises(EngineError) as exc:
        logic.add_case(tmp_path / "ct.nrrd", tmp_path / "final.seg.nrrd")
    msg = str(exc.value)
    assert "\n" not in msg and "Traceback" not in msg and exc.value.returncode == 2
    assert "final.seg.nrrd" in msg or "geometry" in msg.lower() or "grid" in msg.lower()
    assert logic.list_cases() == []  # nothing half-added


# ---------------------------------------------------------------------------- phantom case library + a real run
def _tiny_source(dest: Path) -> Path:
    """A small source model for fast CPU runs: SegResNet (init_filters 4), 6 mm voxels, 16^3 patches."""
    import torch

    from cervixtl.models.networks import build_network, segresnet_card
    from cervixtl.models.package import save_package

    torch.manual_seed(0)
    card = segresnet_card("src6", ["GTV", "CTV"], version="1", init_filters=4, spacing_mm=(6, 6, 6),
                          patch_size=(16, 16, 16))
    return save_package(dest, card, build_network(card).state_dict())


@pytest.fixture(scope="module")
def finetuned(tmp_path_factory: pytest.TempPathFactory) -> types.SimpleNamespace:
    """A REAL ``cervixtl finetune`` run (1 epoch, CPU) of src6@1 on 3 phantom cases (2 train, 1 held out),
    started and polled by :class:`TrainingLogic` exactly as the GUI timer does."""
    pytest.importorskip("slicer", reason="slicer-core (real MRML libraries) is not installed")
    phantom = pytest.importorskip("cervixtl.phantom", reason="cervixtl.phantom (phantom generator) not available")
    _need("cases", "finetune")
    from cervixtl.cases import CaseLibrary
    from cervixtl.models.registry import Registry
    from CervixTLTrainingLib.logic import FinetuneRequest, TrainingLogic

    root = tmp_path_factory.mktemp("finetune")
    scene = _make_scene()
    logic = TrainingLogic(scene, cases_dir=str(root / "cases"), models_dir=str(root / "models"))
    Registry(root / "models").add(_tiny_source(root / "src6"))  # (the CLI import is tested above)
    library = CaseLibrary(root / "cases")
    ids = []
    for i in range(3):
        ct, seg = phantom.make_phantom(seed=200 + i, site="B", spacing=(6.0, 6.0, 6.0))
        ids.append(library.add(ct, seg, site="siteB"))
    request = FinetuneRequest(source="src6@1", name="site", cases=ids, freeze="encoder", epochs=1,
                              val_fraction=0.34, device="cpu", seed=1)
    assert logic.preflight(request) == []
    logic.start_finetune(request)
    statuses, t0 = [], time.monotonic()
    while True:
        st = logic.poll()
        statuses.append((st.fraction, st.eta_s, len(st.new_records), logic.curve.n_loss))
        if not st.running or time.monotonic() - t0 > 300:
            break
        # Poll as the GUI timer would, but often enough to see the 8 fast steps arrive one by one (at 0.2 s
        # all 8 could land between two polls).
        time.sleep(0.01)
    return types.SimpleNamespace(logic=logic, scene=scene, request=request, ids=ids, status=st,
                                 statuses=statuses, root=root)


@slicer_mark
@pytest.mark.slow
def test_real_finetune_fills_the_curve_and_versions_nodes(finetuned) -> None:  # noqa: ANN001
    from CervixTLTrainingLib.tables import table_rows

    st, logic = finetuned.status, finetuned.logic
    assert st.error is None and st.returncode == 0, st.error
    assert st.fraction == 1.0
    records = logic.job.records
    train = {r["step"]: r["loss"] for r in records if r.get("stage") == "train" and r.get("loss") is not None}
    val = [r for r in records if r.get("stage") == "validate"]
    # engine: one epoch = max(8, 4 * 2 training cases) = 8 steps, then one validation
    assert sorted(train) == list(range(1, 9))
    loss_rows = table_rows(logic.curve.loss_table)
    assert [r["step"] for r in loss_rows] == list(range(1, 9))
    assert [r["loss"] for r in loss_rows] == pytest.approx([train[k] for k in range(1, 9)])
    assert all(r["epoch"] == 1 for r in loss_rows)
    assert len(val) == 1 and table_rows(logic.curve.val_table) == [
        {"step": 8, "epoch": 1, "val_dice": pytest.approx(val[0]["val_dice"])}]
    assert 0.0 <= val[0]["val_dice"] <= 1.0
    # the GUI saw the curve grow while the process ran, with an ETA
    assert any(0 < n < 8 for *_ignored, n in finetuned.statuses), "the curve only appeared at the end"
    assert any(math.isfinite(eta) and eta > 0 for _f, eta, *_rest in finetuned.statuses)
    chart = logic.curve.chart
    assert {chart.GetNthPlotSeriesNode(i).GetYColumnName() for i in range(2)} == {"loss", "val_dice"}
    # the new version, with its parent and the cases used, in the versions table
    spec = logic.new_model_spec()
    assert spec == "site@1"
    rows = {r["Model"]: r for r in table_rows(logic.update_versions_table())}
    assert rows["site@1"]["Parent"] == "src6@1" and rows["site@1"]["Cases used"] == "3"
    assert rows["site@1"]["Freeze"] == "encoder"
    assert logic.held_out_cases(spec) == split_cases(finetuned.ids, 0.34, 1)[1]
    assert len(logic.held_out_cases(spec)) == 1


@slicer_mark
@pytest.mark.slow
def test_cancel_keeps_the_active_model_and_resume_continues_the_curve(finetuned) -> None:  # noqa: ANN001
    """Cancel a 2-epoch run after its first epoch (checkpoint written): exit 130, registry untouched. Resume
    it: the engine restarts from the checkpoint, the curve continues without duplicated steps, and the new
    version is registered (not activated)."""
    from cervixtl.models.registry import Registry
    from CervixTLTrainingLib.logic import FinetuneRequest
    from CervixTLTrainingLib.tables import table_rows

    logic = finetuned.logic

    def registry_state() -> list[tuple[str, str, bool]]:
        return [(r["name"], r["version"], r["active"]) for r in Registry(finetuned.root / "models").list()]

    before = registry_state()
    assert ("site", "1", True) in before
    request = FinetuneRequest(source="src6@1", name="site", cases=finetuned.ids, freeze="none", epochs=2,
                              val_fraction=0.34, device="cpu", seed=2, activate=True)
    logic.start_finetune(request)
    t0 = time.monotonic()
    while not any(r.get("stage") == "validate" for r in logic.job.records) and time.monotonic() - t0 < 240:
        assert logic.poll().running, logic.job.error_message()
        time.sleep(0.05)
    logic.cancel()
    st = logic.wait(timeout_s=60)
    assert not st.running and st.returncode == 130 and st.cancelled
    assert st.error.startswith("Stopped on request") and "active model is the same" in st.error
    assert registry_state() == before
    # The cancel arrives after the epoch-1 checkpoint (8 steps); under load a few epoch-2 steps may be logged
    # before the signal lands: the curve is 1..k without gaps or repeats, k >= 8 (resume truncates them).
    steps = [r["step"] for r in table_rows(logic.curve.loss_table)]
    assert len(steps) >= 8 and steps == list(range(1, len(steps) + 1)), steps

    resume = FinetuneRequest(source="src6@1", name="site", cases=finetuned.ids, freeze="none", epochs=2,
                             val_fraction=0.34, device="cpu", seed=2, resume=True)
    assert "--resume" in resume.to_args()
    logic.start_finetune(resume)
    st = logic.wait(timeout_s=300)
    assert st.error is None and st.returncode == 0, st.error
    assert any("resumed at epoch 1" in r.get("message", "") for r in logic.job.records)
    assert [r["step"] for r in table_rows(logic.curve.loss_table)] == list(range(1, 17))
    assert [r["step"] for r in table_rows(logic.curve.val_table)] == [8, 16]
    after = registry_state()
    assert ("site", "2", False) in after and ("site", "1", True) in after


@slicer_mark
@pytest.mark.slow
def test_real_comparison_fills_the_table_chart_and_verdict(finetuned, tmp_path: Path) -> None:  # noqa: ANN001
    """``cervixtl compare`` of the source and the fine-tuned model on the held-out case: one paired case per
    structure, so no test is possible and the verdict must say so."""
    from CervixTLTrainingLib.tables import table_rows

    logic = finetuned.logic
    held_out = logic.held_out_cases("site@1")
    logic.start_compare(["src6@1", "site@1"], held_out, tmp_path / "cmp")
    st = logic.wait(timeout_s=300)
    assert st.error is None and st.returncode == 0, st.error
    assert any(r.get("stage") == "compare" for r in logic.job.records)
    assert {p.name for p in (tmp_path / "cmp").iterdir()} >= {"compare.json", "compare.csv", "compare.png"}
    data = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    rows = logic.read_comparison()
    assert [r.structure for r in rows] == data["structures"] and {"GTV", "CTV"} <= set(data["structures"])
    text = logic.update_compare_nodes(rows)
    assert text == f"too few cases to test {' and '.join(data['structures'])} with n = 1" or \
        text == "too few cases to test " + ", ".join(data["structures"][:-1]) + " and " + \
        data["structures"][-1] + " with n = 1"
    table = {r["Structure"]: r for r in table_rows(scene_table(logic.scene, "CervixTL comparison"))}
    for s in data["structures"]:
        dice = {m: data["summary"][m][s]["dice"]["mean"] for m in ("src6@1", "site@1")}
        assert table[s]["n"] == 1 and math.isnan(table[s]["Wilcoxon p (Dice)"])
        assert table[s]["Dice source"] == pytest.approx(dice["src6@1"], nan_ok=True)
        assert table[s]["Dice new"] == pytest.approx(dice["site@1"], nan_ok=True)
        assert table[s]["Result"] == "too few cases to test"


def scene_table(scene, name: str):  # noqa: ANN001, ANN201
    return scene.GetFirstNode(name, "vtkMRMLTableNode")


def test_comparison_rows_read_the_engine_format() -> None:
    """compare.json as the engine writes it (tests with median_difference = b - a; models in --models order)."""
    from CervixTLTrainingLib.logic import comparison_rows

    def desc(mean: float, n: int = 6) -> dict:
        return {"n": n, "mean": mean, "median": mean}

    data = {"format": "cervixtl-compare/1", "models": ["demo@1", "site@2"], "structures": ["GTV", "CTV"],
            "summary": {m: {s: {"dice": desc(d), "hd95_mm": desc(h), "surface_dice": desc(sd)}
                            for s, (d, h, sd) in vals.items()}
                        for m, vals in {"demo@1": {"GTV": (0.7, 9.0, 0.6), "CTV": (0.75, 8.0, 0.65)},
                                        "site@2": {"GTV": (0.72, 8.5, 0.62), "CTV": (0.82, 5.0, 0.8)}}.items()},
            "tests": [{"structure": "GTV", "metric": "dice", "a": "demo@1", "b": "site@2", "n": 6, "p_value": 0.4,
                       "median_difference": 0.02},
                      {"structure": "CTV", "metric": "hd95_mm", "a": "demo@1", "b": "site@2", "n": 6,
                       "p_value": 0.9, "median_difference": -3.0},
                      {"structure": "CTV", "metric": "dice", "a": "demo@1", "b": "site@2", "n": 6,
                       "p_value": 0.031, "median_difference": 0.07}]}
    with pytest.raises(EngineError, match="did not compare demo"):  # no guessing: specs as they were compared
        comparison_rows(data, "demo", "site@2")
    rows = comparison_rows(data, "demo@1", "site@2")
    assert [(r.structure, r.n, r.p_value) for r in rows] == [("GTV", 6, 0.4), ("CTV", 6, 0.031)]
    assert rows[1].dice_new == 0.82 and rows[1].hd95_source == 8.0 and rows[1].sdice_new == 0.8
    assert verdict(rows) == "better on CTV, no significant change on GTV with n = 6"
    # the same file read the other way round: the difference changes sign, the verdict too
    swapped = comparison_rows(data, "site@2", "demo@1")
    assert swapped[1].median_difference == -0.07 and verdict(swapped).startswith("worse on CTV")


# ============================================================================ issue 14 defect 11
@slicer_mark
def test_activating_the_bundled_demo_model_imports_it_first(scene, tmp_path: Path) -> None:  # noqa: ANN001
    """The bundled demo model is listed as active but is not in the registry, so ``models activate`` /
    ``rollback`` on it failed; Activate now imports the bundled package (checksum verified) and activates it."""
    from CervixTLTrainingLib.logic import TrainingLogic

    if not (REPO / "Resources" / "Models" / "cervixtl-demo" / "model.json").is_file():
        pytest.skip("no bundled demo model in this checkout")
    logic = TrainingLogic(scene, models_dir=str(tmp_path / "models"))
    rows = {m["spec"]: m for m in logic.list_models()}
    demo = rows["cervixtl-demo@1"]
    assert demo["source"] == "bundled" and demo["active"]
    with pytest.raises(EngineError):
        logic.activate("cervixtl-demo@1")  # what the old Activate did
    logic.activate("cervixtl-demo@1", bundled_path=demo["path"])
    rows = {m["spec"]: m for m in logic.list_models()}
    assert rows["cervixtl-demo@1"]["source"] == "registry" and rows["cervixtl-demo@1"]["active"]
    logic.activate("cervixtl-demo@1")  # now a registry version like any other
    assert (tmp_path / "models" / "cervixtl-demo" / "1" / "model.json").is_file()
