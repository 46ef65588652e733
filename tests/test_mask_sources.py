"""Per-frame masks: the pure rules (m3ddm_ray.masks.frames) and reading mask sources
(m3ddm_ray.video.masks): folders of per-frame PNGs (DAVIS palette labels), one image, a mask video."""

from __future__ import annotations

import io

import cv2
import fsspec
import numpy as np
import pytest
from PIL import Image

from m3ddm_ray import geometry, video
from m3ddm_ray.errors import InputError
from m3ddm_ray.masks import canvas_masks, cell_align, dilate_masks, fit_masks, resize_masks


# ------------------------------------------------------------------------------------------------ rules
def test_resize_down_keeps_a_single_pixel_and_up_covers_its_area():
    m = np.zeros((1, 4, 6), np.uint8)
    m[0, 1, 2] = 1
    assert resize_masks(m, (2, 3))[0].tolist() == [[0, 1, 0], [0, 0, 0]]
    up = resize_masks(m, (8, 12))[0]
    expect = np.zeros((8, 12), np.uint8)
    expect[2:4, 4:6] = 1
    np.testing.assert_array_equal(up, expect)
    # 4x6 -> 3x5: source pixel [1,2)x[2,3) overlaps output rows 0-1 and columns 1-2
    odd = np.zeros((3, 5), np.uint8)
    odd[0:2, 1:3] = 1
    np.testing.assert_array_equal(resize_masks(m, (3, 5))[0], odd)


def test_resize_is_a_superset_of_nearest_and_identity_at_the_same_size():
    rng = np.random.default_rng(1)
    m = (rng.random((3, 37, 53)) < 0.05).astype(np.uint8)
    for hw in [(20, 29), (74, 106), (37, 53), (11, 90)]:
        r = resize_masks(m, hw)
        assert r.shape == (3,) + hw and r.dtype == np.uint8
        for t in range(3):
            nearest = cv2.resize(m[t], hw[::-1], interpolation=cv2.INTER_NEAREST)
            assert not (nearest & (1 - r[t])).any()
    np.testing.assert_array_equal(resize_masks(m, (37, 53)), m)


def test_dilation_is_a_disc_of_the_radius():
    m = np.zeros((2, 15, 15), np.uint8)
    m[0, 7, 7] = 1
    d = dilate_masks(m, 2)
    assert d[0, 7, 5] == d[0, 7, 9] == d[0, 5, 7] == d[0, 9, 7] == 1
    assert d[0, 5, 5] == 0 and d[0, 7, 4] == 0
    assert int(d[0].sum()) == int(cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (5, 5)).sum())
    assert not d[1].any()
    np.testing.assert_array_equal(dilate_masks(m, 0), m)
    with pytest.raises(InputError, match="dilation=-1"):
        dilate_masks(m, -1)


def test_cell_align_grows_to_whole_cells():
    m = np.zeros((16, 24), np.uint8)
    m[9, 3] = 1
    a = cell_align(m)
    expect = np.zeros((16, 24), np.uint8)
    expect[8:16, 0:8] = 1
    np.testing.assert_array_equal(a, expect)
    with pytest.raises(InputError, match="multiples"):
        cell_align(np.zeros((10, 16), np.uint8))


def _one(t=1, h=30, w=40):
    m = np.zeros((t, h, w), np.uint8)
    m[:, 10:20, 10:20] = 1
    return m


def test_fit_masks_repeats_one_mask_and_resizes_the_same_aspect():
    out = fit_masks(_one(1), 5, (30, 40))
    assert out.shape == (5, 30, 40)
    np.testing.assert_array_equal(out, np.repeat(_one(1), 5, axis=0))
    half = _one(1, 15, 20)
    half[:] = 0
    half[0, 5, 5] = 1
    up = fit_masks(half, 2, (30, 40))
    assert up.shape == (2, 30, 40) and up[:, 10:12, 10:12].all() and int(up[0].sum()) == 4


@pytest.mark.parametrize("masks, frames, hw, match", [
    (_one(3), 5, (30, 40), r"masks: 3 masks for a video of 5 frames; give one mask per frame"),
    (_one(5, 30, 30), 5, (30, 40), r"masks: masks are 30x30 \(WxH\) but the video is 40x30"),
    (np.zeros((5, 30, 40), np.uint8), 5, (30, 40), r"mark no pixel \(all 0\)"),
    (np.ones((5, 30, 40), np.uint8), 5, (30, 40), r"every pixel of every frame \(all 1\)"),
    (_one(5) * 255, 5, (30, 40), r"values up to 255; expected only 0 and 1"),
    (_one(5).astype(np.float32), 5, (30, 40), r"dtype float32"),
    (np.zeros((30, 40), np.uint8), 5, (30, 40), r"must be an array \(T, H, W\)"),
])
def test_bad_masks_are_clear_errors(masks, frames, hw, match):
    with pytest.raises(InputError, match=match):
        fit_masks(masks, frames, hw)


def test_canvas_masks_place_the_mask_in_the_frame_and_generate_the_padding():
    geom = geometry.plan_canvas(30, 40, "1:1", 64)  # 48x64 frame at rows 8..56
    assert geom.known_box == (8, 56, 0, 64)
    m = np.zeros((2, 30, 40), np.uint8)
    m[0, 0, 0] = 1  # -> canvas pixels (8..9, 0..1) -> the cell rows 8..16, cols 0..8
    cm = canvas_masks(m, geom)
    assert cm.shape == (2, 64, 64) and cm.dtype == np.uint8
    border = geometry.pixel_mask(geom)
    np.testing.assert_array_equal(cm[1], border)
    expect = border.copy()
    expect[8:16, 0:8] = 1
    np.testing.assert_array_equal(cm[0], expect)
    with pytest.raises(InputError, match="fit them first"):
        canvas_masks(np.zeros((1, 20, 40), np.uint8), geom)


# ------------------------------------------------------------------------------------------------ sources
def _palette_png(labels: np.ndarray) -> bytes:
    """A palette PNG whose index 0 is WHITE and index 2 BLACK: only the indices say what is masked."""
    img = Image.fromarray(labels.astype(np.uint8), mode="P")
    pal = [255, 255, 255, 200, 0, 0, 0, 0, 0] + [0] * (256 * 3 - 9)
    img.putpalette(pal)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def test_folder_of_davis_palette_pngs_in_natural_order(tmp_path):
    labels = {}
    for i in (0, 1, 2, 10):
        lab = np.zeros((12, 16), np.uint8)
        lab[i % 12, :4] = 1
        lab[3, 5 + i % 8] = 2  # another object, a black palette colour
        labels[i] = lab
        (tmp_path / f"{i}.png").write_bytes(_palette_png(lab))
    (tmp_path / "notes.txt").write_text("ignored")
    out = video.read_masks(tmp_path)
    assert out.shape == (4, 12, 16) and out.dtype == np.uint8
    for row, i in enumerate((0, 1, 2, 10)):  # 10.png after 2.png
        np.testing.assert_array_equal(out[row], (labels[i] > 0).astype(np.uint8))


def test_one_grey_image_is_one_mask_for_all_frames(tmp_path):
    m = np.zeros((30, 40), np.uint8)
    m[5:9, 7:30] = 255
    m[20, 1] = 1  # the faintest non-zero level counts in a lossless image
    cv2.imwrite(str(tmp_path / "mask.png"), m)
    out = video.read_masks(tmp_path / "mask.png")
    np.testing.assert_array_equal(out, (m > 0)[None].astype(np.uint8))
    assert fit_masks(out, 7, (30, 40)).shape == (7, 30, 40)


def test_mask_video_non_zero_luma(tmp_path):
    m = np.zeros((4, 32, 48), np.uint8)
    for t in range(4):
        m[t, 8:24, 16 * (t % 2):16 * (t % 2) + 16] = 1  # macroblock-aligned, moving
    rgb = np.repeat((m * 255)[..., None], 3, axis=3)
    uri = str(tmp_path / "masks.mp4")
    video.write_video(uri, rgb, 10.0, crf=0, preset="ultrafast")
    np.testing.assert_array_equal(video.read_masks(uri), m)


def test_fsspec_folder(tmp_path):
    fs = fsspec.filesystem("memory")
    lab = np.zeros((6, 8), np.uint8)
    lab[2, 3] = 5
    for i in range(3):
        fs.pipe(f"/masks_src/{i:05d}.png", _palette_png(lab))
    out = video.read_masks("memory://masks_src")
    assert out.shape == (3, 6, 8) and int(out.sum()) == 3 and out[:, 2, 3].all()


def test_unreadable_sources_are_clear_errors(tmp_path):
    with pytest.raises(InputError, match=r"masks: .*nope not found"):
        video.read_masks(tmp_path / "nope")
    (tmp_path / "bad.png").write_bytes(b"not a png")
    with pytest.raises(InputError, match=r"bad.png: not a mask image that can be decoded"):
        video.read_masks(tmp_path / "bad.png")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match="no image files"):
        video.read_masks(empty)
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    cv2.imwrite(str(mixed / "0.png"), np.zeros((10, 10), np.uint8))
    cv2.imwrite(str(mixed / "1.png"), np.zeros((10, 12), np.uint8))
    with pytest.raises(InputError, match="all masks of a folder must have one size"):
        video.read_masks(mixed)
