"""Random-weight nnU-Net v2 models in TotalSegmentator's exact folder layout, for the source-model tests.

The plans follow the TotalSegmentator v2 models (nnU-Net v2 ``3d_fullres``, PlainConvUNet, 6 stages with
32, 64, 128, 256, 320, 320 features, 3x3x3 kernels, strides 1 then 2 x5, CTNormalization, isotropic
spacing so ``transpose_forward`` is the identity) written in the plans format of the nnU-Net version they were
trained with (``UNet_class_name``, converted by nnU-Net >= 2.4 when read). Weights are nnU-Net's own random
initialisation (built with ``nnunetv2.utilities.get_network_from_plans``) with the full-resolution output layer
scaled, so that many classes win somewhere and small numeric differences cannot flip the argmax. The checkpoint
dict has the keys nnU-Net saves (``network_weights`` with its ``decoder.encoder.*`` duplicates, optimiser state,
numpy-valued training log, ``init_args``, ``trainer_name``, mirroring axes).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from shared_data import DATA, need

#: TotalSegmentator v2 foreground intensity statistics are not published; plausible CT values (HU).
CT_PROPERTIES = {"max": 3071.0, "mean": 86.7, "median": 68.0, "min": -1024.0,
                 "percentile_00_5": -957.0, "percentile_99_5": 1318.0, "std": 247.5}


def total_v2_labels() -> dict[str, int]:
    """TotalSegmentator v2 ``total`` class names (from ../shared/data/totalseg_example/labels_v2.json)."""
    names = json.loads(need(DATA / "totalseg_example" / "labels_v2.json").read_text())
    return {"background": 0, **{v: int(k) for k, v in sorted(names.items(), key=lambda kv: int(kv[0]))}}


def organs_291_labels() -> dict[str, int]:
    """TotalSegmentator v2 ``Dataset291`` (part 1, organs; 1.5 mm) class names: background + 24 organs."""
    names = ["spleen", "kidney_right", "kidney_left", "gallbladder", "liver", "stomach", "pancreas",
             "adrenal_gland_right", "adrenal_gland_left", "lung_upper_lobe_left", "lung_lower_lobe_left",
             "lung_upper_lobe_right", "lung_middle_lobe_right", "lung_lower_lobe_right", "esophagus", "trachea",
             "thyroid_gland", "small_bowel", "duodenum", "colon", "urinary_bladder", "prostate",
             "kidney_cyst_left", "kidney_cyst_right"]
    return {"background": 0, **{n: i + 1 for i, n in enumerate(names)}}


def plans_old_format(dataset_name: str, spacing: float, patch: Sequence[int], *, features=(32, 64, 128, 256, 320, 320),
                     transpose: Sequence[int] = (0, 1, 2)) -> dict[str, Any]:
    """A ``plans.json`` in the nnU-Net 2.1-2.3 format (as TotalSegmentator v2's models have)."""
    n = len(features)
    return {
        "dataset_name": dataset_name, "plans_name": "nnUNetPlans",
        "original_median_spacing_after_transp": [spacing] * 3, "original_median_shape_after_transp": [160, 160, 160],
        "image_reader_writer": "SimpleITKIO", "transpose_forward": list(transpose),
        "transpose_backward": [int(np.argsort(transpose)[i]) for i in range(3)],
        "configurations": {"3d_fullres": {
            "data_identifier": "nnUNetPlans_3d_fullres", "preprocessor_name": "DefaultPreprocessor",
            "batch_size": 2, "patch_size": list(patch), "median_image_size_in_voxels": [160, 160, 160],
            "spacing": [spacing] * 3, "normalization_schemes": ["CTNormalization"], "use_mask_for_norm": [False],
            "UNet_class_name": "PlainConvUNet", "UNet_base_num_features": int(features[0]),
            "n_conv_per_stage_encoder": [2] * n, "n_conv_per_stage_decoder": [2] * (n - 1),
            "num_pool_per_axis": [n - 1] * 3, "pool_op_kernel_sizes": [[1, 1, 1]] + [[2, 2, 2]] * (n - 1),
            "conv_kernel_sizes": [[3, 3, 3]] * n, "unet_max_num_features": int(features[-1]),
            "resampling_fn_data": "resample_data_or_seg_to_shape",
            "resampling_fn_seg": "resample_data_or_seg_to_shape",
            "resampling_fn_data_kwargs": {"is_seg": False, "order": 3, "order_z": 0, "force_separate_z": None},
            "resampling_fn_seg_kwargs": {"is_seg": True, "order": 1, "order_z": 0, "force_separate_z": None},
            "resampling_fn_probabilities": "resample_data_or_seg_to_shape",
            "resampling_fn_probabilities_kwargs": {"is_seg": False, "order": 1, "order_z": 0,
                                                   "force_separate_z": None},
            "batch_dice": False}},
        "experiment_planner_used": "ExperimentPlanner", "label_manager": "LabelManager",
        "foreground_intensity_properties_per_channel": {"0": dict(CT_PROPERTIES)},
    }


def make_totalseg_model(results: Path, dataset_name: str, trainer: str, plans: dict[str, Any],
                        labels: dict[str, int], *, seed: int = 0, head_scale: float = 20.0) -> Path:
    """Write ``results/<dataset>/<trainer>__nnUNetPlans__3d_fullres/{plans,dataset}.json`` and
    ``fold_0/checkpoint_final.pth`` with nnU-Net's random initialisation; returns the trained-model folder."""
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    folder = results / dataset_name / f"{trainer}__nnUNetPlans__3d_fullres"
    (folder / "fold_0").mkdir(parents=True)
    dataset = {"channel_names": {"0": "CT"}, "labels": labels, "numTraining": 1559, "file_ending": ".nii.gz"}
    (folder / "plans.json").write_text(json.dumps(plans, indent=2))
    (folder / "dataset.json").write_text(json.dumps(dataset, indent=2))
    conf = PlansManager(json.loads(json.dumps(plans))).get_configuration("3d_fullres")
    torch.manual_seed(seed)
    net = get_network_from_plans(conf.network_arch_class_name, conf.network_arch_init_kwargs,
                                 conf.network_arch_init_kwargs_req_import, 1, len(labels), deep_supervision=True)
    with torch.no_grad():
        head = net.decoder.seg_layers[-1]
        head.weight.mul_(head_scale)
        head.bias.copy_(torch.randn_like(head.bias))
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.99, nesterov=True)
    ckpt = {"network_weights": net.state_dict(), "optimizer_state": opt.state_dict(), "grad_scaler_state": None,
            "logging": {"mean_fg_dice": [np.float64(0.61), np.float64(0.72)],
                        "ema_fg_dice": [np.float64(0.6), np.float64(0.65)],
                        "dice_per_class_or_region": [[np.float64(0.5)] * 3],
                        "train_losses": [np.float32(-0.4)], "val_losses": [np.float32(-0.5)], "lrs": [0.01],
                        "epoch_start_timestamps": [1.7e9], "epoch_end_timestamps": [1.7e9 + 100]},
            "_best_ema": np.float64(0.65), "current_epoch": 4000,
            "init_args": {"plans": plans, "configuration": "3d_fullres", "fold": 0, "dataset_json": dataset,
                          "device": torch.device("cpu")},
            "trainer_name": trainer, "inference_allowed_mirroring_axes": (0, 1, 2)}
    torch.save(ckpt, folder / "fold_0" / "checkpoint_final.pth")
    return folder


class NotAllowed:
    """A class no weights-only allow-list names (for the refusal test)."""


def plans_new_format(dataset_name: str, spacing_zyx: Sequence[float], patch: Sequence[int], *,
                     features=(4, 8, 16, 16), transpose: Sequence[int] = (0, 1, 2)) -> dict[str, Any]:
    """A ``plans.json`` in the current nnU-Net format (``architecture`` entry), with ``spacing`` and ``patch``
    given in the transposed order nnU-Net stores them in."""
    old = plans_old_format(dataset_name, 1.0, patch, features=features, transpose=transpose)
    conf = old["configurations"]["3d_fullres"]
    n = len(features)
    conf["spacing"] = [float(spacing_zyx[t]) for t in transpose]
    for k in ("UNet_class_name", "UNet_base_num_features", "n_conv_per_stage_encoder", "n_conv_per_stage_decoder",
              "num_pool_per_axis", "pool_op_kernel_sizes", "conv_kernel_sizes", "unet_max_num_features"):
        conf.pop(k)
    conf["architecture"] = {
        "network_class_name": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
        "arch_kwargs": {"n_stages": n, "features_per_stage": list(features),
                        "conv_op": "torch.nn.modules.conv.Conv3d", "kernel_sizes": [[3, 3, 3]] * n,
                        "strides": [[1, 1, 1]] + [[2, 2, 2]] * (n - 1), "n_conv_per_stage": [2] * n,
                        "n_conv_per_stage_decoder": [2] * (n - 1), "conv_bias": True,
                        "norm_op": "torch.nn.modules.instancenorm.InstanceNorm3d",
                        "norm_op_kwargs": {"eps": 1e-05, "affine": True}, "dropout_op": None,
                        "dropout_op_kwargs": None, "nonlin": "torch.nn.LeakyReLU", "nonlin_kwargs": {"inplace": True}},
        "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"]}
    return old
