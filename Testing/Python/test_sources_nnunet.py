"""nnU-Net v2 / TotalSegmentator source models: safe checkpoint reading, rebuilding from plans, and fidelity
against nnU-Net's own predictor on a real CT (../shared/data/totalseg_example).

Fidelity: a random-weight TotalSegmentator-geometry network in TotalSegmentator's folder layout is imported
(``totalsegmentator:297`` found through ``TOTALSEG_HOME_DIR``) and run by CervixTL's ``predict_labels``; the
reference is ``nnunetv2``'s ``nnUNetPredictor`` (tile step 0.5, Gaussian, no mirroring: TotalSegmentator's
settings) on the image TotalSegmentator would give it (closest canonical RAS, written as NIfTI, read with
nnU-Net's SimpleITK reader). The CT is first stored in LPS so that both pipelines must reorient.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from cervixtl.errors import ModelError
from nnunet_fixtures import make_totalseg_model, organs_291_labels, plans_new_format, plans_old_format, total_v2_labels
from shared_data import DATA, need

CT = DATA / "totalseg_example" / "example_ct.nii.gz"
DS297 = "Dataset297_TotalSegmentator_total_3mm_1559subj"


@pytest.fixture(scope="module")
def ts_home(tmp_path_factory):
    """A TOTALSEG_HOME_DIR with the 3 mm model (real geometry: patch 128^3, 6 stages, 118 classes)."""
    home = tmp_path_factory.mktemp("totalseg_home")
    results = home / "nnunet" / "results"
    make_totalseg_model(results, DS297, "nnUNetTrainer_4000epochs_NoMirroring",
                        plans_old_format(DS297, 3.0, (128, 128, 128)), total_v2_labels())
    return home


@pytest.fixture()
def ts_env(ts_home, monkeypatch):
    monkeypatch.setenv("TOTALSEG_HOME_DIR", str(ts_home))
    monkeypatch.delenv("TOTALSEG_WEIGHTS_PATH", raising=False)
    return ts_home


@pytest.fixture(scope="module")
def ct_lps(tmp_path_factory):
    """The real 3 mm CT stored in LPS orientation (TotalSegmentator's file is RAS)."""
    img = sitk.DICOMOrient(sitk.ReadImage(str(need(CT))), "LPS")  # DICOM convention: index axes towards L, P, S
    out = tmp_path_factory.mktemp("ct") / "ct_lps.nii.gz"
    sitk.WriteImage(img, str(out))
    return out


def test_sources_lists_totalsegmentator_models_with_classes(ts_env):
    from cervixtl.models.sources import list_sources

    rows = list_sources()
    assert [r["spec"] for r in rows] == ["totalsegmentator:297"]
    assert rows[0]["classes"][20] == "urinary_bladder" and len(rows[0]["classes"]) == 117


def test_checkpoint_needing_other_globals_is_refused(tmp_path):
    from cervixtl.models.sources.nnunet import read_checkpoint
    from nnunet_fixtures import NotAllowed

    torch.save({"network_weights": {}, "x": NotAllowed()}, tmp_path / "c.pth")
    with pytest.raises(ModelError, match="allow-list.*refused"):
        read_checkpoint(tmp_path / "c.pth")


def test_import_card_and_weights(ts_env, tmp_path):
    from cervixtl.models.package import load_package
    from cervixtl.models.sources import import_source

    pkg, report = import_source("totalsegmentator:297", tmp_path / "pkg", name="totalseg-297")
    card, state = load_package(pkg)
    assert card.architecture["name"] == "nnUNet" and card.output == "softmax"
    assert card.architecture["params"]["arch_kwargs"]["features_per_stage"] == [32, 64, 128, 256, 320, 320]
    assert card.orientation == "RAS" and card.axis_order == "zyx" and card.spacing_mm == (3.0, 3.0, 3.0)
    assert card.intensity == {"kind": "ct_zscore", "clip_hu": [-957.0, 1318.0], "mean": 86.7, "std": 247.5}
    assert card.patch_size == (128, 128, 128) and card.input["tiling"]["step"] == 0.5
    bladder = card.label("urinary_bladder")
    assert bladder["channel"] == 21 and bladder["structure"] == "Bladder"
    assert not any(k.startswith("decoder.encoder.") or ".all_modules." in k for k in state)
    assert any(k.startswith("decoder.seg_layers.0.") for k in state)  # deep-supervision heads kept
    src = torch.load(Path(report["folder"]) / "fold_0" / "checkpoint_final.pth", weights_only=False)
    w = src["network_weights"]
    assert torch.equal(state["decoder.seg_layers.4.weight"], w["decoder.seg_layers.4.weight"])
    assert torch.equal(state["encoder.stages.0.0.convs.0.conv.weight"], w["decoder.encoder.stages.0.0.convs.0.conv.weight"])


def _nnunet_reference(folder: Path, ct_file: Path, tmp: Path, **trainer: str) -> tuple[np.ndarray, sitk.Image]:
    """TotalSegmentator's way: closest canonical RAS NIfTI -> nnU-Net predictor (step 0.5, Gaussian, no TTA)."""
    import nibabel as nib
    from nnunetv2.imageio.simpleitk_reader_writer import SimpleITKIO
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    canon = tmp / "canonical.nii.gz"
    nib.save(nib.as_closest_canonical(nib.load(str(ct_file))), str(canon))
    predictor = nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=False,
                                perform_everything_on_device=False, device=torch.device("cpu"), allow_tqdm=False)
    _initialise(predictor, folder, **trainer)
    data, props = SimpleITKIO().read_images([str(canon)])
    seg = predictor.predict_single_npy_array(data, props, None, None, False)
    return np.asarray(seg), sitk.ReadImage(str(canon))


def _initialise(predictor, folder: Path, *, trainer_module: str = "training_length.nnUNetTrainer_Xepochs_NoMirroring",
                trainer_name: str = "nnUNetTrainer_4000epochs_NoMirroring") -> None:
    """``initialize_from_trained_model_folder`` without its trainer search, which imports every trainer module
    (the Primus ones need timm, which is not installed here): the same steps with the trainer class imported."""
    import importlib

    from batchgenerators.utilities.file_and_folder_operations import load_json
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    module = importlib.import_module(f"nnunetv2.training.nnUNetTrainer.variants.{trainer_module}")
    trainer = getattr(module, trainer_name)

    ckpt = torch.load(folder / "fold_0" / "checkpoint_final.pth", map_location="cpu", weights_only=False)
    assert ckpt["trainer_name"] == trainer.__name__
    plans = PlansManager(load_json(str(folder / "plans.json")))
    dataset = load_json(str(folder / "dataset.json"))
    conf = plans.get_configuration(ckpt["init_args"]["configuration"])
    n_out = plans.get_label_manager(dataset).num_segmentation_heads
    net = trainer.build_network_architecture(plans, conf, 1, n_out, enable_deep_supervision=False)
    net.load_state_dict(ckpt["network_weights"])
    predictor.manual_initialization(net, plans, conf, [ckpt["network_weights"]], dataset, ckpt["trainer_name"],
                                    ckpt["inference_allowed_mirroring_axes"])


@pytest.mark.slow
def test_fidelity_with_nnunet_predictor_on_real_ct(ts_env, ct_lps, tmp_path):
    from cervixtl.inference import predict_labels
    from cervixtl.io import read_ct
    from cervixtl.models.registry import Registry
    from cervixtl.models.sources import import_source

    torch.set_num_threads(2)
    pkg, report = import_source("totalsegmentator:297", tmp_path / "pkg", name="totalseg-297")
    reg = Registry(tmp_path / "registry")
    reg.add(pkg)
    card, net = reg.load("totalseg-297")
    ct = read_ct(ct_lps)
    pred = predict_labels(ct, card, net, device="cpu", postprocess=False)
    ours = np.zeros(ct.array.shape, np.int16)
    for lab in card.labels:
        ours[pred.masks[lab["name"]]] = int(lab["channel"])

    ref, ref_img = _nnunet_reference(Path(report["folder"]), ct_lps, tmp_path)
    ref_on_lps = sitk.GetArrayFromImage(sitk.DICOMOrient(
        sitk.Cast(_with_geometry(ref, ref_img), sitk.sitkInt16), "LPS"))
    assert ref_on_lps.shape == ours.shape
    agree = float((ref_on_lps == ours).mean())
    counts = np.bincount(ref.ravel(), minlength=118) / ref.size
    print(f"voxel agreement {agree:.5f}; {int((counts > 0.001).sum())} classes over 0.1 %, largest {counts.max():.3f}")
    assert (counts > 0.001).sum() >= 10 and counts.max() < 0.5  # not a trivially constant map
    assert agree >= 0.99


def _with_geometry(arr: np.ndarray, ref: sitk.Image) -> sitk.Image:
    out = sitk.GetImageFromArray(arr.astype(np.int16))
    out.CopyInformation(ref)
    return out


def test_tile_positions_are_nnunets():
    from nnunetv2.inference.sliding_window_prediction import compute_steps_for_sliding_window

    from cervixtl.tiling import tile_starts

    for size, patch in [(128, 128), (129, 128), (244, 128), (101, 64), (500, 96), (64, 48)]:
        assert tile_starts(size, patch, 0.5) == compute_steps_for_sliding_window((size,), (patch,), 0.5)[0]


def test_old_and_new_plans_build_the_same_network_as_nnunet():
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    from cervixtl.models.sources.nnunet import configuration

    plans = plans_old_format(DS297, 1.5, (128, 128, 128))
    ours = configuration(plans, "3d_fullres")["architecture"]
    theirs = PlansManager(json.loads(json.dumps(plans))).get_configuration("3d_fullres").configuration["architecture"]
    assert ours["arch_kwargs"] == theirs["arch_kwargs"]
    assert ours["network_class_name"].rsplit(".", 1)[-1] == theirs["network_class_name"].rsplit(".", 1)[-1]


def test_fidelity_tiled_transposed_generic_nnunet_folder(tmp_path):
    """A generic nnU-Net folder (current plans format, transpose_forward [2, 0, 1], anisotropic patch, several
    tiles) on a crop of the real CT stored in LPS: CervixTL (orientation LPS, the file as nnU-Net's SimpleITK
    reader gives it) agrees with nnUNetPredictor."""
    from nnunetv2.imageio.simpleitk_reader_writer import SimpleITKIO
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    from cervixtl.inference import predict_labels
    from cervixtl.io import read_ct
    from cervixtl.models.registry import Registry
    from cervixtl.models.sources import import_source

    img = sitk.DICOMOrient(sitk.ReadImage(str(need(CT))), "LPS")[10:90, 20:80, 30:90]  # x, y, z crop, 3 mm
    ct_file = tmp_path / "crop.nii.gz"
    sitk.WriteImage(img, str(ct_file))
    labels = {"background": 0, **{n: i + 1 for i, n in enumerate(["urinary_bladder", "colon", "small_bowel",
                                                                    "femur_left", "femur_right", "hip_left"])}}
    tf = (2, 0, 1)
    plans = plans_new_format("Dataset042_Test", (3.0, 3.0, 3.0), (48, 32, 64), transpose=tf)
    folder = make_totalseg_model(tmp_path / "results", "Dataset042_Test", "nnUNetTrainerNoMirroring", plans, labels,
                                 head_scale=5.0)
    pkg, _ = import_source(folder, tmp_path / "pkg", name="generic")
    reg = Registry(tmp_path / "registry")
    reg.add(pkg)
    card, net = reg.load("generic")
    assert card.axis_order == "xzy" and card.patch_size == (48, 32, 64) and card.orientation == "LPS"
    pred = predict_labels(read_ct(ct_file), card, net, device="cpu", postprocess=False)
    ours = np.zeros(pred.grid.array.shape, np.int16)
    for lab in card.labels:
        ours[pred.masks[lab["name"]]] = int(lab["channel"])
    assert pred.run["sliding_window"]["windows"] > 4

    predictor = nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=False,
                                perform_everything_on_device=False, device=torch.device("cpu"), allow_tqdm=False)
    _initialise(predictor, folder, trainer_module="data_augmentation.nnUNetTrainerNoMirroring",
                trainer_name="nnUNetTrainerNoMirroring")
    data, props = SimpleITKIO().read_images([str(ct_file)])
    ref = np.asarray(predictor.predict_single_npy_array(data, props, None, None, False))
    counts = np.bincount(ref.ravel(), minlength=7) / ref.size
    agree = float((ref == ours).mean())
    print(f"tiled/transposed agreement {agree:.5f}; class fractions {np.round(counts, 3)}")
    assert (counts > 0.02).sum() >= 3 and counts.max() < 0.8
    assert agree >= 0.99


def test_catalogue_source_download_records_trust_on_first_use(tmp_path):
    """A TotalSegmentator-style zip served on 127.0.0.1: downloaded, unpacked, converted; no publisher hash,
    so the card records the SHA-256 of the first download and says 'trust on first use'."""
    import hashlib
    import http.server
    import shutil
    import threading

    from cervixtl.models.card import ModelCard
    from cervixtl.models.sources.catalogue import import_catalogue_source
    from test_catalogue_download import _RangeHandler

    labels = {"background": 0, "urinary_bladder": 1, "colon": 2}
    ds = "Dataset291_TotalSegmentator_part1_organs_1559subj"
    make_totalseg_model(tmp_path / "res", ds, "nnUNetTrainerNoMirroring",
                        plans_new_format(ds, (1.5, 1.5, 1.5), (32, 32, 32)), labels)
    archive = Path(shutil.make_archive(str(tmp_path / ds), "zip", tmp_path / "res"))
    _RangeHandler.payload = archive.read_bytes()
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _RangeHandler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        entry = {"name": "totalseg-291", "kind": "totalsegmentator-nnunet", "url": "https://example.invalid/x.zip",
                 "sha256": None, "hash": None,
                 "model_folder": f"{ds}/nnUNetTrainerNoMirroring__nnUNetPlans__3d_fullres"}
        url = f"http://127.0.0.1:{httpd.server_address[1]}/{ds}.zip"
        pkg, report = import_catalogue_source(entry, tmp_path / "work", tmp_path / "pkg", name="totalseg-291", url=url)
    finally:
        httpd.shutdown()
    card = ModelCard.read(pkg)
    dl = card.training["source"]["download"]
    assert dl["sha256"] == hashlib.sha256(_RangeHandler.payload).hexdigest() == report["download_sha256"]
    assert dl["trust"] == "trust-on-first-use" and "trust on first use" in card.derivation
    assert card.orientation == "RAS" and card.label("urinary_bladder")["structure"] == "Bladder"


@pytest.mark.slow
def test_fidelity_1p5mm_geometry_several_tiles(tmp_path, monkeypatch):
    """The TotalSegmentator 1.5 mm organs network (Dataset291 layout, 6 stages, 32..320 features, patch 128^3,
    25 outputs) over 2 x 2 x 1 tiles of the real CT resampled to 1.5 mm (TotalSegmentator resamples before
    nnU-Net, so both pipelines get the 1.5 mm image)."""
    from cervixtl.image import reorient, resample_to_spacing
    from cervixtl.inference import predict_labels
    from cervixtl.io import read_ct, write_image
    from cervixtl.models.registry import Registry
    from cervixtl.models.sources import import_source

    torch.set_num_threads(2)
    ds = "Dataset291_TotalSegmentator_part1_organs_1559subj"
    home = tmp_path / "tshome"
    make_totalseg_model(home / "nnunet" / "results", ds, "nnUNetTrainerNoMirroring",
                        plans_old_format(ds, 1.5, (128, 128, 128)), organs_291_labels())
    monkeypatch.setenv("TOTALSEG_HOME_DIR", str(home))
    ct = read_ct(need(CT))
    fine = resample_to_spacing(reorient(ct, "RAS"), (1.5, 1.5, 1.5), default=-1024.0)
    from cervixtl.image import Image

    crop = Image(fine.array[40:140, 20:180, 30:200].astype(np.int16), fine.spacing,  # (z, y, x) 100 x 160 x 170
                 tuple(fine.index_to_physical([30, 20, 40])), fine.direction)
    ct_file = tmp_path / "ct_1p5.nii.gz"
    write_image(crop, ct_file)
    pkg, report = import_source("totalsegmentator:291", tmp_path / "pkg", name="totalseg-291")
    reg = Registry(tmp_path / "registry")
    reg.add(pkg)
    card, net = reg.load("totalseg-291")
    pred = predict_labels(read_ct(ct_file), card, net, device="cpu", postprocess=False)
    ours = np.zeros(pred.grid.array.shape, np.int16)
    for lab in card.labels:
        ours[pred.masks[lab["name"]]] = int(lab["channel"])
    assert pred.run["sliding_window"]["windows"] == 4
    ref, _ = _nnunet_reference(Path(report["folder"]), ct_file, tmp_path, trainer_module=(
        "data_augmentation.nnUNetTrainerNoMirroring"), trainer_name="nnUNetTrainerNoMirroring")
    counts = np.bincount(ref.ravel(), minlength=25) / ref.size
    agree = float((ref == ours).mean())
    print(f"1.5 mm agreement {agree:.5f}; {int((counts > 0.001).sum())} classes over 0.1 %, largest {counts.max():.3f}")
    assert (counts > 0.001).sum() >= 8 and counts.max() < 0.5
    assert agree >= 0.99
