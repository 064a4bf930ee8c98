"""Femoral heads get their side from anatomy (LPS grid: larger x index = patient's left)."""

from __future__ import annotations

import numpy as np

from cervixtl.postprocess import assign_sides, postprocess


def _ball(shape, centre, r):
    z, y, x = np.ogrid[: shape[0], : shape[1], : shape[2]]
    return (z - centre[0]) ** 2 + (y - centre[1]) ** 2 + (x - centre[2]) ** 2 <= r * r


SHAPE = (20, 30, 60)


def test_swapped_heads_are_named_by_side():
    left_head = _ball(SHAPE, (10, 15, 48), 4)    # x = 48 > midline 30: patient's left
    right_head = _ball(SHAPE, (10, 15, 12), 4)
    bladder = _ball(SHAPE, (10, 10, 30), 5)
    masks = {"FemoralHead_L": right_head.copy(), "FemoralHead_R": left_head.copy(), "Bladder": bladder}
    out = postprocess(masks)
    assert np.array_equal(out["FemoralHead_L"], left_head)
    assert np.array_equal(out["FemoralHead_R"], right_head)


def test_side_prefers_the_network_label_over_a_larger_false_positive():
    left_head = _ball(SHAPE, (10, 15, 48), 3)
    false_left = _ball(SHAPE, (3, 15, 52), 4)     # larger blob on the left, but labelled right
    right_head = _ball(SHAPE, (10, 15, 12), 3)
    masks = {"FemoralHead_L": left_head.copy(), "FemoralHead_R": right_head | false_left,
             "Bladder": _ball(SHAPE, (10, 10, 30), 5)}
    assign_sides(masks)
    assert np.array_equal(masks["FemoralHead_L"], left_head)
    assert np.array_equal(masks["FemoralHead_R"], right_head)


def test_no_side_rule_without_lps_and_empty_stays_empty():
    right_head = _ball(SHAPE, (10, 15, 12), 3)
    masks = {"FemoralHead_L": right_head.copy(), "FemoralHead_R": np.zeros(SHAPE, bool)}
    assert np.array_equal(postprocess(masks, lps=False)["FemoralHead_L"], right_head)
    out = assign_sides({"FemoralHead_L": np.zeros(SHAPE, bool), "FemoralHead_R": np.zeros(SHAPE, bool)})
    assert not out["FemoralHead_L"].any() and not out["FemoralHead_R"].any()
