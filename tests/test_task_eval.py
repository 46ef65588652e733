"""The pure parts of the inpainting / prediction evaluation: synthetic object masks
(m3ddm_ray.masks.synthetic), the baselines (m3ddm_ray.evaluation.baselines), the cases and their scores."""

from __future__ import annotations

import numpy as np
import pytest

from m3ddm_ray.errors import InputError
from m3ddm_ray.evaluation.baselines import last_frame_copy, nearest_known_inpaint, telea_inpaint
from m3ddm_ray.masks.synthetic import synthetic_masks


def test_stationary_masks_are_one_object_shape_of_the_asked_area():
    m = synthetic_masks(5, (60, 80), "stationary", area=0.1, seed=3)
    assert m.shape == (5, 60, 80) and m.dtype == np.uint8 and set(np.unique(m)) == {0, 1}
    for t in range(1, 5):
        np.testing.assert_array_equal(m[t], m[0])
    frac = m[0].mean()
    assert 0.08 < frac < 0.13
    ys, xs = np.nonzero(m[0])
    box = (ys.max() - ys.min() + 1) * (xs.max() - xs.min() + 1)
    assert m[0].sum() < 0.95 * box  # round-ish, not a rectangle
    np.testing.assert_array_equal(synthetic_masks(5, (60, 80), "stationary", area=0.1, seed=3), m)
    assert not np.array_equal(synthetic_masks(5, (60, 80), "stationary", area=0.1, seed=4), m)


def test_moving_masks_keep_the_shape_and_move():
    m = synthetic_masks(8, (60, 80), "moving", area=0.05, seed=1, speed=0.05)
    sums = m.reshape(8, -1).sum(axis=1)
    assert sums.min() > 0 and sums.max() - sums.min() <= 0.15 * sums.mean()  # same shape (up to rasterising)
    centres = [np.argwhere(f).mean(axis=0) for f in m]
    steps = [np.hypot(*(b - a)) for a, b in zip(centres, centres[1:])]
    assert min(steps) > 1.0  # about 5 px a frame (0.05 of the 100 px diagonal), reflected at the borders


@pytest.mark.parametrize("kw, match", [
    (dict(num_frames=0, hw=(60, 80)), "num_frames=0"),
    (dict(num_frames=3, hw=(4, 80)), "too small"),
    (dict(num_frames=3, hw=(60, 80), motion="jumping"), "motion='jumping'"),
    (dict(num_frames=3, hw=(60, 80), area=0.9), r"area=0.9 must be in \(0, 0.5\]"),
])
def test_synthetic_mask_errors(kw, match):
    with pytest.raises(InputError, match=match):
        synthetic_masks(**kw)


def test_telea_keeps_known_pixels_and_fills_the_hole():
    frames = np.full((2, 20, 20, 3), 100, np.uint8)
    frames[:, 8:12, 8:12] = 0
    masks = np.zeros((2, 20, 20), np.uint8)
    masks[:, 8:12, 8:12] = 1
    out = telea_inpaint(frames, masks)
    np.testing.assert_array_equal(out[masks == 0], frames[masks == 0])
    assert np.abs(out[masks == 1].astype(int) - 100).max() <= 2


def test_nearest_known_copies_from_the_nearest_frame_with_the_pixel():
    t = 5
    frames = np.stack([np.full((6, 6, 3), 10 * (i + 1), np.uint8) for i in range(t)])
    masks = np.zeros((t, 6, 6), np.uint8)
    masks[1:4, 0, 0] = 1  # frames 1..3 hide pixel (0, 0); frames 0 and 4 show it
    masks[:, 5, 5] = 1  # hidden in every frame: TELEA from the neighbours
    out = nearest_known_inpaint(frames, masks)
    np.testing.assert_array_equal(out[masks == 0], frames[masks == 0])
    assert out[1, 0, 0, 0] == 10  # frame 0 is at distance 1
    assert out[2, 0, 0, 0] == 10  # frames 0 and 4 at distance 2: the earlier one
    assert out[3, 0, 0, 0] == 50  # frame 4 at distance 1
    for i in range(t):
        assert abs(int(out[i, 5, 5, 0]) - 10 * (i + 1)) <= 1


def test_last_frame_copy():
    frames = np.arange(2 * 4 * 4 * 3, dtype=np.uint8).reshape(2, 4, 4, 3)
    out = last_frame_copy(frames, 3)
    assert out.shape == (3, 4, 4, 3)
    for f in out:
        np.testing.assert_array_equal(f, frames[-1])
    with pytest.raises(InputError, match="n=0"):
        last_frame_copy(frames, 0)


# ------------------------------------------------------------------------------------------------ protocols
from m3ddm_ray.evaluation.cases import score_inpaint, score_prediction  # noqa: E402
from m3ddm_ray.evaluation.protocols import inpaint_case, prediction_case, temporal_consistency  # noqa: E402


def _clip(t=6, h=24, w=32):
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([np.stack([(x * 7 + i * 5) % 256, (y * 9) % 256, (x + y + i) % 256], axis=-1)
                     for i in range(t)]).astype(np.uint8)


def test_inpaint_case_and_scores():
    gt = _clip()
    case = inpaint_case(gt, "moving", 0.1, seed=2)
    assert case.masks.shape == (6, 24, 32) and case.masks.any(axis=(1, 2)).all()
    np.testing.assert_array_equal(case.masks, synthetic_masks(6, (24, 32), "moving", 0.1, 2))
    perfect = score_inpaint(gt, case)
    assert perfect["psnr"] == np.inf and perfect["ssim"] == pytest.approx(1.0) and perfect["temporal"] == 0.0
    worse = score_inpaint(telea_inpaint(np.where(case.masks[..., None] == 1, 0, gt).astype(np.uint8), case.masks), case)
    assert np.isfinite(worse["psnr"]) and worse["ssim"] < 1.0 and worse["temporal"] > 0


def test_temporal_consistency_counts_flicker_in_the_hole_only():
    gt = np.full((3, 4, 4, 3), 50, np.uint8)
    pred = gt.copy()
    pred[1, 0, 0] = 80  # a flash inside the hole of frame 1
    pred[1, 3, 3] = 90  # and a change outside every hole (ignored)
    masks = np.zeros((3, 4, 4), np.uint8)
    masks[1, 0, 0] = 1
    tc = temporal_consistency(pred, gt, masks)
    np.testing.assert_allclose(tc, [30.0, 30.0])  # pixel (0,0) is in the region of both pairs
    masks[:] = 0
    assert np.isnan(temporal_consistency(pred, gt, masks)).all()


def test_prediction_case_and_per_index_scores():
    gt = _clip(10)
    case = prediction_case(gt, 4, 3)
    np.testing.assert_array_equal(case.context, gt[:4])
    np.testing.assert_array_equal(case.target, gt[4:7])
    scores = score_prediction(last_frame_copy(case.context, 3), case)
    assert scores["psnr_frames"].shape == scores["ssim_frames"].shape == (3,)
    assert scores["psnr_frames"][0] > scores["psnr_frames"][2]  # the copy drifts away from the truth frame by frame
    with pytest.raises(InputError, match="needs 11"):
        prediction_case(gt, 8, 3)
    with pytest.raises(InputError, match="target's shape"):
        score_prediction(gt[:2], case)
