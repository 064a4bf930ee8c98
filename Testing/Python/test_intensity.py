"""CT intensity normalisation specs (cervixtl.intensity): analytic values, card round trip."""

import numpy as np
import pytest

from cervixtl.errors import ModelError
from cervixtl.intensity import apply_intensity, ct_zscore_spec, foreground_statistics, spec_from_input, window_spec


def test_window_maps_the_window_to_unit_and_clips():
    out = apply_intensity(np.array([-1000.0, -200.0, 50.0, 300.0, 2000.0]), window_spec((-200, 300)))
    np.testing.assert_allclose(out, [0.0, 0.0, 0.5, 1.0, 1.0])
    assert out.dtype == np.float32


def test_ct_zscore_clips_then_standardises():
    spec = {"kind": "ct_zscore", "clip_hu": [-100.0, 900.0], "mean": 100.0, "std": 50.0}
    out = apply_intensity(np.array([-1000.0, 100.0, 150.0, 5000.0]), spec)
    np.testing.assert_allclose(out, [-4.0, 0.0, 1.0, 16.0])


def test_foreground_statistics_match_numpy_on_the_foreground_only():
    rng = np.random.default_rng(1)
    a = rng.normal(40, 10, (10, 20, 20)).astype(np.float32)
    a[:, :, :10] = -1000.0  # background air, outside the mask
    m = np.zeros(a.shape, bool)
    m[:, :, 10:] = True
    st = foreground_statistics([a], [m])
    fg = a[m]
    assert st["mean"] == pytest.approx(fg.mean(), rel=1e-5)
    assert st["std"] == pytest.approx(fg.std(), rel=1e-4)
    assert st["p005"] == pytest.approx(np.percentile(fg, 0.5), rel=1e-5)
    spec = ct_zscore_spec(st)
    assert spec["clip_hu"][0] < spec["clip_hu"][1]


def test_card_input_without_intensity_falls_back_to_its_window():
    assert spec_from_input({"window_hu": [-200, 300]}) == {"kind": "window", "window_hu": [-200.0, 300.0]}
    with pytest.raises(ModelError):
        spec_from_input({"intensity": {"kind": "nope"}})
    with pytest.raises(ModelError):
        spec_from_input({"intensity": {"kind": "ct_zscore", "clip_hu": [0, 1], "mean": 0, "std": 0}})
