"""Tests of m3ddm_ray.quality on synthetic videos whose answers are known by construction."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from m3ddm_ray.errors import InputError
from m3ddm_ray.geometry import paste_back, pixel_mask, plan_canvas
from m3ddm_ray.quality import (
    REPORT_KEYS,
    flicker_ratio,
    generated_stats,
    luma,
    quality_report,
    seam_strength,
    temporal_flicker,
)

S = 64


def band_mask(s: int = S, top: int = 16, bottom: int = 48) -> np.ndarray:
    """uint8 (s, s): rows top..bottom-1 known (0), the rest generated (1), like a 16:9 -> 1:1 canvas."""
    m = np.ones((s, s), dtype=np.uint8)
    m[top:bottom] = 0
    return m


def gray(values: np.ndarray) -> np.ndarray:
    """(..., H, W) levels -> uint8 (..., H, W, 3) gray RGB (luma == level)."""
    v = np.clip(np.rint(values), 0, 255).astype(np.uint8)
    return np.repeat(v[..., None], 3, axis=-1)


def texture(rng: np.random.Generator, h: int, w: int, contrast: float = 40.0) -> np.ndarray:
    """A stationary, smooth-ish random texture around level 128 (float64, (h, w))."""
    noise = rng.standard_normal((h, w)).astype(np.float32)
    smooth = cv2.GaussianBlur(noise, (0, 0), 1.5, borderType=cv2.BORDER_REFLECT)
    smooth = smooth / smooth.std()
    return 128.0 + contrast * smooth.astype(np.float64)


def moving_pattern(t_frames: int, s: int = S) -> np.ndarray:
    """Levels (T, s, s): a diagonal sinusoid sliding one pixel per frame (smooth motion)."""
    t = np.arange(t_frames)[:, None, None]
    y = np.arange(s)[None, :, None]
    x = np.arange(s)[None, None, :]
    return 128.0 + 60.0 * np.sin(2 * np.pi * (x + 0.5 * y - t) / 24.0)


# --------------------------------------------------------------------------------------------------
# luma / temporal_flicker
# --------------------------------------------------------------------------------------------------


def test_luma_weights_and_dtype():
    px = np.array([[[255, 0, 0], [0, 255, 0], [0, 0, 255], [10, 10, 10]]], dtype=np.uint8)
    y = luma(px)
    assert y.dtype == np.float32 and y.shape == (1, 4)
    np.testing.assert_allclose(y[0], [0.299 * 255, 0.587 * 255, 0.114 * 255, 10.0], atol=1e-3)


def test_static_video_has_zero_flicker():
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, (S, S, 3), dtype=np.uint8)
    frames = np.repeat(frame[None], 12, axis=0)
    mask = band_mask()
    assert temporal_flicker(frames, mask) == 0.0
    assert temporal_flicker(frames, 1 - mask) == 0.0
    assert flicker_ratio(frames, mask) == 0.0
    rep = quality_report(frames, mask)
    assert rep["q_flicker_generated"] == 0.0 and rep["q_flicker_known"] == 0.0


def test_temporal_flicker_known_value_and_region_selection():
    # Generated rows brighten by exactly 3 levels per frame, known rows stay put.
    mask = band_mask()
    t = np.arange(10, dtype=np.float64)[:, None, None]
    levels = np.where(mask[None] == 1, 20.0 + 3.0 * t, 77.0)
    frames = gray(levels)
    assert temporal_flicker(frames, mask) == pytest.approx(3.0, abs=1e-3)
    assert temporal_flicker(frames, mask.astype(bool)) == pytest.approx(3.0, abs=1e-3)
    assert temporal_flicker(frames, 1 - mask) == pytest.approx(0.0, abs=1e-6)
    # Alternating +/-8 levels: mean |diff| is 8, whatever the sign.
    alt = gray(np.where(np.arange(7)[:, None, None] % 2 == 0, 100.0, 108.0) * np.ones((1, S, S)))
    assert temporal_flicker(alt, np.ones((S, S), np.uint8)) == pytest.approx(8.0, abs=1e-3)


def test_temporal_flicker_single_frame_is_zero():
    rng = np.random.default_rng(1)
    frames = rng.integers(0, 256, (1, S, S, 3), dtype=np.uint8)
    assert temporal_flicker(frames, band_mask()) == 0.0


def test_temporal_flicker_empty_region_is_nan():
    frames = np.zeros((3, S, S, 3), np.uint8)
    assert math.isnan(temporal_flicker(frames, np.zeros((S, S), np.uint8)))


# --------------------------------------------------------------------------------------------------
# flicker_ratio
# --------------------------------------------------------------------------------------------------


def test_noisy_border_next_to_smooth_motion_has_high_flicker_ratio():
    rng = np.random.default_rng(2)
    mask = band_mask()
    t_frames = 16
    levels = moving_pattern(t_frames)
    noise = rng.integers(0, 256, (t_frames, S, S)).astype(np.float64)
    frames = gray(np.where(mask[None] == 1, noise, levels))
    known = temporal_flicker(frames, 1 - mask)
    gen = temporal_flicker(frames, mask)
    assert 1.0 < known < 20.0  # the known content really moves, smoothly
    assert gen > 60.0  # uniform noise: E|U1 - U2| = 255 / 3
    assert flicker_ratio(frames, mask) > 5.0


def test_border_moving_like_the_content_has_flicker_ratio_near_one():
    frames = gray(moving_pattern(16))
    assert 0.5 <= flicker_ratio(frames, band_mask()) <= 2.0


def test_flicker_ratio_nan_for_empty_region_or_single_frame():
    rng = np.random.default_rng(3)
    frames = rng.integers(0, 256, (5, S, S, 3), dtype=np.uint8)
    assert math.isnan(flicker_ratio(frames, np.zeros((S, S), np.uint8)))
    assert math.isnan(flicker_ratio(frames, np.ones((S, S), np.uint8)))
    assert math.isnan(flicker_ratio(frames[:1], band_mask()))
    assert not math.isnan(flicker_ratio(frames, band_mask()))


# --------------------------------------------------------------------------------------------------
# seam_strength
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("width", [1, 2, 3])
def test_texture_continuing_across_the_border_has_no_seam(width):
    rng = np.random.default_rng(4)
    tex = texture(rng, S, S)
    frames = gray(np.stack([tex, np.roll(tex, 1, axis=1), np.roll(tex, 2, axis=1)]))
    # Known box in the middle: borders along rows and columns.
    mask = np.ones((S, S), np.uint8)
    mask[12:52, 8:56] = 0
    value = seam_strength(frames, mask, width=width)
    assert 0.5 <= value <= 2.0


def test_white_noise_continuing_across_the_border_has_no_seam():
    rng = np.random.default_rng(5)
    frames = rng.integers(0, 256, (4, S, S, 3), dtype=np.uint8)
    value = seam_strength(frames, band_mask())
    assert 0.8 <= value <= 1.25


def test_black_border_next_to_textured_content_is_a_strong_seam():
    rng = np.random.default_rng(6)
    tex = texture(rng, S, S, contrast=20.0)
    mask = band_mask()
    frames = gray(np.where(mask == 1, 0.0, tex)[None].repeat(3, axis=0))
    value = seam_strength(frames, mask)
    assert value > 10.0
    # The same frames without the black border: no seam.
    assert seam_strength(gray(tex[None].repeat(3, axis=0)), mask) < 2.0


def test_seam_only_counts_pairs_straddling_the_border():
    # A flat border at a different flat level from a flat known region: the only differences are
    # across the border (60 levels at every straddling pair), the baseline is 0 (-> SEAM_EPS).
    mask = band_mask()
    frames = gray(np.where(mask == 1, 100.0, 160.0)[None])
    assert seam_strength(frames, mask, width=1) == pytest.approx(60.0 / 0.5, rel=1e-4)
    assert seam_strength(frames, mask, width=2) == pytest.approx(60.0 / 0.5, rel=1e-4)


def test_seam_nan_without_border():
    rng = np.random.default_rng(7)
    frames = rng.integers(0, 256, (2, S, S, 3), dtype=np.uint8)
    assert math.isnan(seam_strength(frames, np.zeros((S, S), np.uint8)))
    assert math.isnan(seam_strength(frames, np.ones((S, S), np.uint8)))


# --------------------------------------------------------------------------------------------------
# generated_stats
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("level", [0, 1, 254, 255])
def test_black_or_blown_out_border_is_fully_saturated(level):
    rng = np.random.default_rng(8)
    mask = band_mask()
    known = rng.integers(30, 220, (5, S, S, 3), dtype=np.uint8)
    frames = np.where(mask[None, :, :, None] == 1, np.uint8(level), known).astype(np.uint8)
    st = generated_stats(frames, mask)
    assert st["saturated_frac"] == 1.0
    assert st["mean"] == pytest.approx(level, abs=1e-3)
    assert st["std"] == pytest.approx(0.0, abs=1e-3)


def test_generated_stats_known_values_and_mask_polarity():
    mask = band_mask()
    # Generated region: half the rows at 100, half at 200 (mean 150, std 50); known region black.
    levels = np.zeros((S, S))
    gen_rows = np.flatnonzero(mask[:, 0])
    levels[gen_rows[::2]] = 100.0
    levels[gen_rows[1::2]] = 200.0
    frames = gray(levels[None].repeat(3, axis=0))
    st = generated_stats(frames, mask)
    assert st["mean"] == pytest.approx(150.0, abs=1e-3)
    assert st["std"] == pytest.approx(50.0, abs=1e-3)
    assert st["saturated_frac"] == 0.0  # the black pixels are known, not generated
    # A quarter of the generated pixels black -> 0.25.
    levels2 = np.full((S, S), 128.0)
    levels2[gen_rows[: len(gen_rows) // 4]] = 0.0
    assert generated_stats(gray(levels2[None]), mask)["saturated_frac"] == pytest.approx(0.25)


def test_generated_stats_nan_when_nothing_generated():
    frames = np.full((2, S, S, 3), 9, np.uint8)
    st = generated_stats(frames, np.zeros((S, S), np.uint8))
    assert set(st) == {"mean", "std", "saturated_frac"}
    assert all(math.isnan(v) for v in st.values())


# --------------------------------------------------------------------------------------------------
# quality_report
# --------------------------------------------------------------------------------------------------

DOCUMENTED_KEYS = {
    "q_flicker_generated",
    "q_flicker_known",
    "q_flicker_ratio",
    "q_seam_strength",
    "q_generated_mean",
    "q_generated_std",
    "q_generated_saturated_frac",
}


def test_report_keys_types_and_agreement_with_single_measures():
    rng = np.random.default_rng(9)
    frames = rng.integers(0, 256, (9, S, S, 3), dtype=np.uint8)
    mask = band_mask()
    rep = quality_report(frames, mask)
    assert set(rep) == DOCUMENTED_KEYS and tuple(rep) == REPORT_KEYS
    assert all(type(v) is float for v in rep.values())
    st = generated_stats(frames, mask)
    expected = {
        "q_flicker_generated": temporal_flicker(frames, mask),
        "q_flicker_known": temporal_flicker(frames, 1 - mask),
        "q_flicker_ratio": flicker_ratio(frames, mask),
        "q_seam_strength": seam_strength(frames, mask),
        "q_generated_mean": st["mean"],
        "q_generated_std": st["std"],
        "q_generated_saturated_frac": st["saturated_frac"],
    }
    for k, v in expected.items():
        assert rep[k] == pytest.approx(v, rel=1e-9), k


def test_report_does_not_depend_on_chunking():
    rng = np.random.default_rng(10)
    frames = rng.integers(0, 256, (11, S, S, 3), dtype=np.uint8)
    mask = band_mask()
    ref = quality_report(frames, mask, chunk_frames=100)
    for chunk in (1, 2, 4, 11):
        rep = quality_report(frames, mask, chunk_frames=chunk)
        for k in REPORT_KEYS:
            assert rep[k] == pytest.approx(ref[k], rel=1e-6), (chunk, k)


def test_report_edge_cases_single_frame_and_empty_regions():
    rng = np.random.default_rng(11)
    frames = rng.integers(0, 256, (3, S, S, 3), dtype=np.uint8)
    one = quality_report(frames[:1], band_mask())
    assert one["q_flicker_generated"] == 0.0 and one["q_flicker_known"] == 0.0
    assert math.isnan(one["q_flicker_ratio"])
    assert not math.isnan(one["q_seam_strength"])

    nothing_generated = quality_report(frames, np.zeros((S, S), np.uint8))
    nan_keys = {k for k, v in nothing_generated.items() if math.isnan(v)}
    assert nan_keys == DOCUMENTED_KEYS - {"q_flicker_known"}

    all_generated = quality_report(frames, np.ones((S, S), np.uint8))
    nan_keys = {k for k, v in all_generated.items() if math.isnan(v)}
    assert nan_keys == {"q_flicker_known", "q_flicker_ratio", "q_seam_strength"}


def test_report_on_a_real_canvas_layout_flags_a_black_border():
    # 16:9 source to 9:16 on a 128 canvas: known box from the real geometry, generated border black.
    geom = plan_canvas(72, 128, "9:16", canvas_size=128)
    mask = pixel_mask(geom)
    assert mask.min() == 0 and mask.max() == 1
    t_frames = 6
    content = gray(moving_pattern(t_frames, 128))
    generated = np.zeros_like(content)
    frames = paste_back(generated, content, mask)
    rep = quality_report(frames, mask)
    assert rep["q_generated_saturated_frac"] == 1.0
    assert rep["q_generated_mean"] == pytest.approx(0.0, abs=1e-3)
    assert rep["q_seam_strength"] > 5.0
    assert rep["q_flicker_generated"] == 0.0 and rep["q_flicker_known"] > 1.0


# --------------------------------------------------------------------------------------------------
# validation
# --------------------------------------------------------------------------------------------------

GOOD = np.zeros((2, S, S, 3), np.uint8)
MASK = band_mask()


@pytest.mark.parametrize(
    "call, name",
    [
        (lambda: quality_report(GOOD.astype(np.float32), MASK), "frames"),
        (lambda: quality_report(GOOD[..., 0], MASK), "frames"),
        (lambda: quality_report(np.zeros((2, S, S, 4), np.uint8), MASK), "frames"),
        (lambda: quality_report(GOOD[0], MASK), "frames"),
        (lambda: quality_report(np.zeros((0, S, S, 3), np.uint8), MASK), "frames"),
        (lambda: quality_report(GOOD, MASK[:-1]), "mask"),
        (lambda: quality_report(GOOD, MASK.astype(np.float32)), "mask"),
        (lambda: quality_report(GOOD, MASK * 2), "mask"),
        (lambda: flicker_ratio(GOOD, MASK[None]), "mask"),
        (lambda: generated_stats(GOOD, MASK.T[:10]), "mask"),
        (lambda: temporal_flicker(GOOD, MASK.astype(np.int64)), "region_mask"),
        (lambda: temporal_flicker(GOOD.astype(np.uint16), MASK), "frames"),
        (lambda: seam_strength(GOOD, MASK, width=0), "width"),
        (lambda: seam_strength(GOOD, MASK, width=1.5), "width"),
        (lambda: quality_report(GOOD, MASK, chunk_frames=0), "chunk_frames"),
        (lambda: quality_report(GOOD, MASK, seam_width=-1), "seam_width"),
    ],
)
def test_bad_inputs_raise_input_error_naming_the_argument(call, name):
    with pytest.raises(InputError) as exc:
        call()
    assert str(exc.value).startswith(name)
