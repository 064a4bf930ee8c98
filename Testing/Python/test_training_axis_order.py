"""Training on sources whose network takes (x, y, z) arrays (MONAI bundles) or an nnU-Net transpose: the
prepared image, its labels and the patches are in the network's axis order, exactly as
:func:`cervixtl.inference.predict_labels` feeds that network, and the left-right mirror flips the x axis.
Analytic answers: a marker voxel at known (z, y, x) indices must appear at the permuted indices.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cervixtl.image import Image
from cervixtl.segmentation import Segmentation


def _case():
    """CT (z=6, y=8, x=10) at 4 mm, LPS, 0 HU with one 500 HU voxel at (z, y, x) = (1, 2, 3) contoured as
    Bladder."""
    arr = np.zeros((6, 8, 10), dtype=np.float32)
    arr[1, 2, 3] = 500.0
    ct = Image(arr, spacing=(4.0, 4.0, 4.0), origin=(0.0, 0.0, 0.0), direction=np.eye(3))
    seg = Segmentation(ct.with_array(np.zeros(arr.shape, dtype=np.uint8)))
    mask = np.zeros(arr.shape, dtype=bool)
    mask[1, 2, 3] = True
    seg.set("Bladder", mask)
    return ct, seg


def _card(order: str):
    from cervixtl.models.networks import segresnet_card

    card = segresnet_card("ax", ["Bladder"], spacing_mm=(4.0, 4.0, 4.0), patch_size=(8, 8, 8), window_hu=(-1000, 1000))
    card.input["axis_order"] = order
    card.validate()
    return card


@pytest.mark.parametrize("order", ["zyx", "xyz", "yxz"])
def test_prepared_case_is_in_the_network_axis_order(order):
    from cervixtl.training.data import prepare_case

    ct, seg = _case()
    pc = prepare_case(ct, seg, _card(order), "c")
    zyx = {"z": 6, "y": 8, "x": 10}
    idx = {"z": 1, "y": 2, "x": 3}
    assert pc.axis_order == order
    assert pc.image.shape == tuple(zyx[a] for a in order)
    assert pc.labels.shape == (1,) + tuple(zyx[a] for a in order)
    at = tuple(idx[a] for a in order)
    assert np.argwhere(pc.labels[0] == 1).tolist() == [list(at)]
    assert np.unravel_index(int(np.argmax(pc.image)), pc.image.shape) == at


@pytest.mark.parametrize("order", ["zyx", "xyz"])
def test_mirror_flips_the_x_axis_in_any_order(order):
    from cervixtl.training.augment import Augmenter

    off = {k: {"p": 0.0} for k in ("rotate", "scale", "noise", "blur", "brightness", "contrast", "lowres",
                                    "gamma")}
    off["rotate"].update(deg_axial=0.0, deg_other=0.0)
    off["scale"]["range"] = [1.0, 1.0]
    off["blur"]["sigma"] = [0.5, 1.0]
    for k in ("brightness", "contrast", "gamma"):
        off[k]["range"] = [1.0, 1.0]
    off["noise"]["std"] = 0.0
    off["lowres"]["zoom"] = [1.0, 1.0]
    aug = Augmenter([1, 0], {**off, "mirror_lr": {"p": 1.0}}, seed=0, axis_order=order)
    zyx = {"z": 4, "y": 5, "x": 6}
    shape = tuple(zyx[a] for a in order)
    img = torch.zeros((1,) + shape)
    lab = torch.zeros((2,) + shape)
    at = {"z": 1, "y": 2, "x": 0}
    pos = tuple(at[a] for a in order)
    img[(0,) + pos] = 1.0
    lab[(0,) + pos] = 1.0  # channel 0 = a left structure; mirrored it becomes channel 1 (the right one)
    out_img, out_lab = aug.one(img, lab)
    want = tuple(zyx["x"] - 1 if a == "x" else at[a] for a in order)
    assert np.argwhere(out_img[0].numpy() > 0.5).tolist() == [list(want)]
    assert np.argwhere(out_lab[1].numpy() > 0.5).tolist() == [list(want)] and not out_lab[0].any()


def test_axial_rotation_range_is_on_the_z_axis():
    from cervixtl.training.augment import Augmenter

    for order in ("zyx", "xyz"):
        aug = Augmenter([0], seed=0, axis_order=order)
        ranges = [r[1] if isinstance(r, (tuple, list)) else r
                  for r in aug.spatial.rand_affine.rand_affine_grid.rotate_range]
        assert int(np.argmax(ranges)) == order.index("z")
    with pytest.raises(ValueError):
        Augmenter([0], axis_order="zzx")
