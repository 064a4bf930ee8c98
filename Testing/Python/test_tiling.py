"""nnU-Net-style tiling (:mod:`cervixtl.tiling`): parallel CPU tiles, in-place accumulation, and mask decoding
from logits. The fidelity against nnU-Net's own predictor is in ``test_sources_nnunet.py``."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cervixtl.inference import activate, probabilities_to_masks
from cervixtl.tiling import mask_from_network_axes, sliding_window_nnunet, to_network_axes


class _Card:
    def __init__(self, output: str, n: int, soft: int = 0) -> None:
        self.output = output
        self.labels = [{"name": f"l{c}", "channel": c, **({"activation": "softmax"} if c < soft else {})}
                       for c in range(1, n)]


def _conv_net(channels: int = 3) -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv3d(1, 4, 3, padding=1), torch.nn.InstanceNorm3d(4),
                               torch.nn.LeakyReLU(), torch.nn.Conv3d(4, channels, 1)).eval()


def test_a_per_voxel_network_is_returned_exactly_whatever_the_tiling():
    """Every tile predicts 2·x + 1 (a 1 × 1 × 1 convolution): the Gaussian-weighted mean of identical values is
    that value, so the blended logits equal 2·x + 1 everywhere, padding and odd sizes included."""
    net = torch.nn.Conv3d(1, 1, 1)
    with torch.no_grad():
        net.weight.fill_(2.0)
        net.bias.fill_(1.0)
    vol = np.random.default_rng(1).normal(size=(21, 40, 9)).astype(np.float32)
    for workers in (1, 2):
        out = sliding_window_nnunet(net, vol, (16, 16, 16), out_channels=1, workers=workers)
        assert out.shape == (1, *vol.shape)
        np.testing.assert_allclose(out[0].numpy(), 2 * vol + 1, rtol=1e-5, atol=1e-5)


def test_parallel_tiles_give_the_same_logits_and_restore_the_threads():
    vol = np.random.default_rng(2).normal(size=(40, 37, 30)).astype(np.float32)
    net = _conv_net()
    threads = torch.get_num_threads()
    seen: list[tuple[int, int]] = []
    one = sliding_window_nnunet(net, vol, (16, 16, 16), out_channels=3, workers=1)
    two = sliding_window_nnunet(net, vol, (16, 16, 16), out_channels=3, workers=2,
                                on_tile=lambda d, t: seen.append((d, t)))
    assert torch.get_num_threads() == threads
    torch.testing.assert_close(one, two, rtol=1e-5, atol=1e-5)  # tiles are added in the same order
    assert [d for d, _ in seen] == list(range(1, seen[-1][1] + 1)) and seen[-1][1] == 4 * 4 * 3


def test_a_cancel_from_the_progress_callback_stops_the_parallel_run():
    class Cancelled(Exception):
        pass

    def on_tile(done: int, total: int) -> None:
        if done == 3:
            raise Cancelled

    threads = torch.get_num_threads()
    with pytest.raises(Cancelled):
        sliding_window_nnunet(_conv_net(), np.zeros((40, 40, 40), np.float32), (16, 16, 16), out_channels=3,
                              workers=2, on_tile=on_tile)
    assert torch.get_num_threads() == threads


@pytest.mark.parametrize("output,soft", [("softmax", 0), ("sigmoid", 0), ("softmax+sigmoid", 3)])
def test_masks_from_logits_equal_masks_from_probabilities(output, soft):
    card = _Card(output, 5, soft)
    logits = torch.from_numpy(np.random.default_rng(3).normal(size=(5, 6, 7, 8)).astype(np.float32))
    n_soft = soft if output == "softmax+sigmoid" else None
    probs = activate(logits.clone(), output, n_soft)
    in_place = activate(logits.clone(), output, n_soft, inplace=True)
    torch.testing.assert_close(in_place, probs)
    a = probabilities_to_masks(probs, card)
    b = probabilities_to_masks(logits, card, logits=True)
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def test_mask_from_network_axes_inverts_to_network_axes():
    vol = np.arange(2 * 3 * 4).reshape(2, 3, 4)  # (z, y, x)
    for order in ("zyx", "xyz", "yxz", "xzy"):
        back = mask_from_network_axes(to_network_axes(vol, order), order)
        assert back.flags.c_contiguous and np.array_equal(back, vol)
