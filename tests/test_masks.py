"""Mask policies: shapes, invariants, and statistics over many draws against the documented numbers."""

from collections import Counter

import numpy as np
import pytest

from m3ddm_ray.errors import InputError
from m3ddm_ray.masks import (
    FreeFormPolicy,
    M3DDMPlusPolicy,
    M3DDMPolicy,
    PredictionPolicy,
    border_mask,
    make_policy,
    mask_global_frames,
)
from m3ddm_ray.masks.policies import M3DDM_PLUS_DIRECTION_P, M3DDM_PLUS_FRAME_CASE_P

N = 4000
F, S = 16, 64


def _freq(values):
    c = Counter(values)
    return {k: v / len(values) for k, v in c.items()}


def _close(freq, expected, tol):
    for k, p in expected.items():
        assert abs(freq.get(k, 0.0) - p) < tol, (k, freq.get(k), p)


def _band_ratio(m: np.ndarray) -> tuple[float, float]:
    """Fraction of masked columns / rows of a border mask."""
    return float(m.all(axis=0).mean()), float(m.all(axis=1).mean())


def test_m3ddm_plus_statistics():
    rng = np.random.default_rng(0)
    pol = M3DDMPlusPolicy()
    draws = [pol(rng, F, S) for _ in range(N)]
    # tolerance: 4 standard errors of a proportion at N draws
    tol = 4 * np.sqrt(0.25 / N)
    _close(_freq([d.info["direction"] for d in draws]), M3DDM_PLUS_DIRECTION_P, tol)
    _close(_freq([d.info["frame_case"] for d in draws]), M3DDM_PLUS_FRAME_CASE_P, tol)
    ratios = np.array([d.info["ratio"] for d in draws])
    assert ratios.min() >= 0.15 and ratios.max() <= 0.75
    assert abs(ratios.mean() - 0.45) < 0.01 and abs(ratios.std() - 0.6 / np.sqrt(12)) < 0.01
    single = [d.info["sides"] for d in draws if d.info["direction"] == "single"]
    _close(_freq(single), {s: 0.25 for s in ("left", "right", "top", "bottom")}, 4 * np.sqrt(0.25 / len(single)))
    for d in draws[:500]:
        assert d.mask.shape == (F, S, S) and d.mask.dtype == np.uint8
        masked = d.mask[~d.raw_frames]
        assert len(masked) >= 1 and (masked == masked[0]).all()  # one mask for every masked frame
        cols, rows = _band_ratio(masked[0])
        measured = cols if d.info["sides"] in ("left", "right", "left+right") else rows
        if d.info["direction"] == "four":
            assert abs(cols - rows) < 1e-9  # same ratio on both axes
            measured = float(masked[0][S // 2].mean())  # middle row: the two side bands
        assert abs(measured - d.info["ratio"]) <= 1.0 / S  # band = round(r * S) pixels
        case = d.info["frame_case"]
        if case == "all":
            assert not d.raw_frames.any()
        elif case == "first_last":
            assert d.raw_frames.tolist() == [True] + [False] * (F - 2) + [True]
        else:
            assert 1 <= d.raw_frames.sum() <= F - 1


def test_m3ddm_masks_differ_across_frames_with_same_cases():
    rng = np.random.default_rng(1)
    pol = M3DDMPolicy()
    draws = [pol(rng, F, S) for _ in range(N // 2)]
    tol = 4 * np.sqrt(0.25 / len(draws))
    _close(_freq([d.info["frame_case"] for d in draws]), M3DDM_PLUS_FRAME_CASE_P, tol)
    dirs = [x for d in draws for x in d.info["direction"]]
    _close(_freq(dirs), M3DDM_PLUS_DIRECTION_P, 4 * np.sqrt(0.25 / len(dirs)))
    ratios = np.array([x for d in draws for x in d.info["ratio"]])
    assert ratios.min() >= 0.15 and ratios.max() <= 0.75
    all_case = [d for d in draws if d.info["frame_case"] == "all"]
    differ = np.mean([len({m.tobytes() for m in d.mask}) > 1 for d in all_case])
    assert differ > 0.99  # per-frame masks: the M3DDM+ "train/inference mismatch"


def test_prediction_policy():
    rng = np.random.default_rng(2)
    ks = []
    for _ in range(2000):
        d = PredictionPolicy()(rng, F, S)
        k = d.info["known_frames"]
        ks.append(k)
        assert (d.mask[:k] == 0).all() and (d.mask[k:] == 1).all()
    counts = np.bincount(ks, minlength=F)
    assert counts[0] == 0 and (counts[1:] > 0).all()
    assert abs(np.mean(ks) - F / 2) < 0.3  # U{1..15}: mean 8


def test_free_form_per_frame():
    rng = np.random.default_rng(3)
    d = FreeFormPolicy()(rng, F, S)
    assert d.mask.shape == (F, S, S) and set(np.unique(d.mask)) <= {0, 1}
    assert len({m.tobytes() for m in d.mask}) == F  # every frame its own strokes
    ratios = [FreeFormPolicy()(rng, F, S).mask.mean() for _ in range(200)]
    assert 0.02 < np.mean(ratios) < 0.6


def test_mix_weights_one_config_entry():
    rng = np.random.default_rng(4)
    pol = make_policy({"mix": [{"name": "m3ddm_plus", "weight": 3}, {"name": "prediction", "weight": 1}]})
    names = [pol(rng, F, S).info["policy"] for _ in range(N)]
    _close(_freq(names), {"m3ddm_plus": 0.75, "prediction": 0.25}, 4 * np.sqrt(0.25 / N))


def test_custom_ratio_and_errors():
    rng = np.random.default_rng(5)
    pol = make_policy({"name": "m3ddm_plus", "ratio": [0.3, 0.4], "direction_p": {"bi": 1}})
    d = [pol(rng, F, S) for _ in range(200)]
    assert all(0.3 <= x.info["ratio"] <= 0.4 and x.info["direction"] == "bi" for x in d)
    with pytest.raises(InputError, match="use one of"):
        make_policy("nope")
    with pytest.raises(InputError, match="ratio"):
        make_policy({"name": "m3ddm_plus", "ratio": [0.8, 0.2]})
    with pytest.raises(InputError, match="unknown keys"):
        make_policy({"name": "m3ddm_plus", "direction_p": {"diagonal": 1}})
    with pytest.raises(InputError, match="direction"):
        border_mask(S, "diagonal", 0.3, rng)


def test_global_frames_masked_only_inside_the_clip():
    mask = np.zeros((4, 8, 8), np.uint8)
    for i in range(4):
        mask[i, :, : i + 1] = 1  # distinct per clip frame
    clip_ids = [10, 15, 20, 25]  # stride 5
    out = mask_global_frames([0, 10, 12, 14, 25, 26, 40], clip_ids, mask)
    assert out.shape == (7, 8, 8)
    assert not out[0].any() and not out[5].any() and not out[6].any()  # outside the clip: raw
    assert (out[1] == mask[0]).all() and (out[2] == mask[0]).all()  # 12 -> nearest clip frame 10
    assert (out[3] == mask[1]).all() and (out[4] == mask[3]).all()
