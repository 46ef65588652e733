"""Tests of m3ddm_ray.tiles (placement, masks, fusion weights, fuse / split) and of its torch twins in
m3ddm_ray.sampling_tiles.

The properties are checked over 2000 seeded random cases (frames, known boxes, tile sizes, overlaps,
VAE factors); hand-computed cases pin the exact numbers.
"""

from __future__ import annotations

import ast
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from m3ddm_ray import sampling_tiles
from m3ddm_ray.errors import InputError
from m3ddm_ray.geometry import latent_mask, pixel_mask, plan_canvas
from m3ddm_ray.tiles import (
    FusionWeights,
    Tile,
    TilingSettings,
    axis_starts,
    fuse,
    fusion_weights,
    plan_tiles,
    split,
    tile_latent_mask,
    tile_mask,
)

N_CASES = 2000


def _frame_mask(hw, box) -> np.ndarray:
    m = np.ones(hw, dtype=np.uint8)
    y0, y1, x0, x1 = box
    m[y0:y1, x0:x1] = 0
    return m


def _random_case(rng: np.random.Generator) -> dict:
    f = int(rng.choice([1, 2, 4, 8]))
    t = int(rng.integers(1, 13))  # tile side in latent cells
    o = int(rng.integers(0, t))  # overlap in cells
    step = t - o

    def side() -> int:
        if rng.random() < 0.15:
            return t  # one tile along this axis
        return t + int(rng.integers(1, 4 * step + 1))  # up to 5 tiles along the axis

    h, w = side() * f, side() * f
    kind = rng.random()
    if kind < 0.1:
        box = (0, 0, 0, 0)  # nothing known
    elif kind < 0.15:
        box = (0, h, 0, w)  # nothing to generate
    elif kind < 0.5:  # a large box, so that whole tiles fall inside it
        y0, x0 = int(rng.integers(0, h // 4 + 1)), int(rng.integers(0, w // 4 + 1))
        box = (y0, int(rng.integers(max(y0, 3 * h // 4), h + 1)), x0, int(rng.integers(max(x0, 3 * w // 4), w + 1)))
    else:
        ys, xs = sorted(rng.integers(0, h + 1, 2)), sorted(rng.integers(0, w + 1, 2))
        box = (int(ys[0]), int(ys[1]), int(xs[0]), int(xs[1]))
    return dict(frame_hw=(h, w), known_box=box, tile_size=t * f, overlap=o * f, factor=f)


CASES = [_random_case(np.random.default_rng(1000 + i)) for i in range(N_CASES)]


def _check_axis(length, tile, overlap, factor, starts):
    assert starts[0] == 0 and starts[-1] == length - tile
    assert all(s % factor == 0 for s in starts)
    gaps = np.diff(starts)
    assert np.all(gaps > 0)  # strictly increasing: no two tiles in one place
    overlaps = tile - gaps
    assert np.all(overlaps >= overlap)
    n = len(starts)
    if length == tile:
        assert n == 1
    else:  # the fewest tiles: one fewer could not reach the far side with the overlap kept
        assert n == math.ceil((length - overlap) / (tile - overlap))
        assert (n - 2) * (tile - overlap) + tile < length
    if n > 1:
        assert overlaps.max() - overlaps.min() <= factor  # the extra overlap is shared out evenly
        if (length - overlap) % (tile - overlap) == 0:
            assert np.all(overlaps == overlap)


def test_tile_placement_properties_over_random_frames():
    n_skipped = n_exact = 0
    for c in CASES:
        (h, w), box, t, o, f = c["frame_hw"], c["known_box"], c["tile_size"], c["overlap"], c["factor"]
        tiles = plan_tiles(**c)
        ys, xs = axis_starts(h, t, o, f), axis_starts(w, t, o, f)
        _check_axis(h, t, o, f, ys)
        _check_axis(w, t, o, f, xs)
        n_exact += (h - o) % (t - o) == 0 and h > t
        mask = _frame_mask((h, w), box)
        # the grid minus exactly the tiles with no pixel to generate, row-major, numbered in order
        expect = [(y, x) for y in ys for x in xs if mask[y:y + t, x:x + t].any()]
        assert [(tl.y0, tl.x0) for tl in tiles] == expect, c
        n_skipped += len(ys) * len(xs) - len(tiles)
        cover = np.zeros((h, w), dtype=np.int32)
        for i, tl in enumerate(tiles):
            assert tl.index == i and tl.size == t
            assert tl.y0 % f == 0 and tl.x0 % f == 0
            assert 0 <= tl.y0 and tl.y0 + t <= h and 0 <= tl.x0 and tl.x0 + t <= w
            assert mask[tl.y0:tl.y0 + t, tl.x0:tl.x0 + t].any()
            cover[tl.y0:tl.y0 + t, tl.x0:tl.x0 + t] += 1
        assert np.all(cover[mask == 1] > 0), c  # every generated pixel is covered
        # neighbours (consecutive starts along an axis, same start along the other) overlap >= o
        pos = {(tl.y0, tl.x0) for tl in tiles}
        for (y, x) in pos:
            for a, b in zip(xs, xs[1:]):
                if x == a and (y, b) in pos:
                    assert a + t - b >= o
            for a, b in zip(ys, ys[1:]):
                if y == a and (b, x) in pos:
                    assert a + t - b >= o
    assert n_skipped > 500 and n_exact > 100  # the random cases reach both behaviours


def test_plan_tiles_by_a_generated_mask_over_random_frames():
    """A clip's union mask selects the tiles: the known box is its special case, and a tile is kept
    exactly when some pixel of it is generated (in any frame), every generated pixel covered."""
    n_skipped = 0
    for k, c in enumerate(CASES[:400]):
        (h, w), t, o, f = c["frame_hw"], c["tile_size"], c["overlap"], c["factor"]
        by_box = plan_tiles(**c)
        by_mask = plan_tiles((h, w), (0, 0, 0, 0), t, o, f, generated=_frame_mask((h, w), c["known_box"]))
        assert by_mask == by_box, c
        rng = np.random.default_rng(k)
        frames = np.zeros((3, h, w), np.uint8)  # three frames, each with a small hole of its own
        for m in frames:
            y, x = int(rng.integers(0, h)), int(rng.integers(0, w))
            m[y:y + int(rng.integers(1, 4)), x:x + int(rng.integers(1, 4))] = 1
        union = frames.max(axis=0)
        tiles = plan_tiles((h, w), (0, 0, 0, 0), t, o, f, generated=union)
        ys, xs = axis_starts(h, t, o, f), axis_starts(w, t, o, f)
        assert [(tl.y0, tl.x0) for tl in tiles] == [(y, x) for y in ys for x in xs if union[y:y + t, x:x + t].any()]
        cover = np.zeros((h, w), bool)
        for tl in tiles:
            cover[tl.y0:tl.y0 + t, tl.x0:tl.x0 + t] = True
        assert np.all(cover[union == 1])
        n_skipped += len(ys) * len(xs) - len(tiles)
    assert n_skipped > 100
    # both rules at once: a tile inside the known box is left out even where the mask marks it
    assert plan_tiles((128, 128), (0, 64, 0, 64), 64, 0, 8, generated=np.ones((128, 128), np.uint8)) == (
        Tile(0, 0, 64, 64), Tile(1, 64, 0, 64), Tile(2, 64, 64, 64))
    assert plan_tiles((128, 128), (0, 0, 0, 0), 64, 0, 8, generated=np.zeros((128, 128), np.uint8)) == ()
    with pytest.raises(InputError, match=r"generated mask of shape \(64, 64\) does not match the working frame \(128, 128\)"):
        plan_tiles((128, 128), (0, 0, 0, 0), 64, 0, 8, generated=np.ones((64, 64), np.uint8))


def test_axis_starts_exact_values():
    # n = ceil((800 - 64) / 192) = 4; D = 68 cells; k * 68 / 3 = 0, 22.7, 45.3, 68 -> 0, 23, 45, 68 cells
    assert axis_starts(800, 256, 64, 8) == (0, 184, 360, 544)
    assert axis_starts(448, 256, 64, 8) == (0, 192)  # exactly the overlap
    assert axis_starts(512, 256, 0, 8) == (0, 256)  # abutting tiles
    assert axis_starts(512, 256, 64, 8) == (0, 128, 256)  # 2 tiles would overlap by 0 < 64
    assert axis_starts(64, 64, 32, 8) == (0,)
    assert axis_starts(72, 64, 56, 8) == (0, 8)


def test_plan_tiles_skips_tiles_inside_the_known_box():
    tiles = plan_tiles((512, 512), (0, 384, 0, 384), 128, 0, 8)
    # 4x4 grid of 128-px tiles; the 3x3 block at the top-left is known
    assert [(tl.y0, tl.x0) for tl in tiles] == [(0, 384), (128, 384), (256, 384),
                                                (384, 0), (384, 128), (384, 256), (384, 384)]
    assert [tl.index for tl in tiles] == list(range(7))
    assert plan_tiles((512, 512), (0, 512, 0, 512), 128, 0, 8) == ()


def test_one_tile_is_the_identity():
    """Working frame == tile: one tile at (0, 0), weights 1, fuse and split return the input's bits."""
    geom = plan_canvas(360, 640, "9:16", canvas_size=64)
    f = 8
    for kind in ("uniform", "linear"):
        for overlap in (0, 32, 56):
            tiles = plan_tiles((64, 64), geom.known_box, 64, overlap, f)
            assert tiles == (Tile(index=0, y0=0, x0=0, size=64),)
            wts = fusion_weights(tiles, (64, 64), f, kind)
            assert np.array_equal(wts.per_tile, np.ones((1, 8, 8), np.float32))
            assert np.array_equal(wts.normaliser, np.ones((8, 8), np.float32))
            x = np.random.default_rng(0).standard_normal((2, 4, 16, 8, 8)).astype(np.float32)
            x[0, 0, 0, 0, :3] = (-0.0, 0.0, np.float32(1e-38))
            parts = split(x, tiles, f)
            assert parts.shape == (1, 2, 4, 16, 8, 8)
            out = fuse(parts, tiles, (8, 8), wts)
            assert out.dtype == x.dtype and out.tobytes() == x.tobytes()
            out_t = sampling_tiles.fuse(sampling_tiles.split(torch.from_numpy(x), tiles, f), tiles, (8, 8), wts)
            assert out_t.numpy().tobytes() == x.tobytes()
            m = pixel_mask(geom)
            assert np.array_equal(tile_mask(m, tiles[0]), m)
            assert np.array_equal(tile_latent_mask(m, tiles[0], f), latent_mask(m, f))


def _direct_fuse(parts, tiles, hw, per_tile, f):
    """Σ w_i x_i / Σ w_i in float64, the plain way."""
    num = np.zeros(parts.shape[1:-2] + hw)
    den = np.zeros(hw)
    for p, tl, w in zip(parts.astype(np.float64), tiles, per_tile.astype(np.float64)):
        y0, y1, x0, x1 = tl.latent_box(f)
        num[..., y0:y1, x0:x1] += w * p
        den[y0:y1, x0:x1] += w
    return np.where(den > 0, num / np.where(den > 0, den, 1), 0)


def test_fusion_properties_over_random_frames():
    n_unity = 0
    for k, c in enumerate(CASES):
        (h, w), f = c["frame_hw"], c["factor"]
        tiles = plan_tiles(**c)
        gh, gw, t = h // f, w // f, c["tile_size"] // f
        mask = _frame_mask((h, w), c["known_box"])
        covered = np.zeros((gh, gw), dtype=bool)
        for tl in tiles:
            y0, y1, x0, x1 = tl.latent_box(f)
            covered[y0:y1, x0:x1] = True
            assert np.array_equal(tile_mask(mask, tl), mask[tl.y0:tl.y0 + c["tile_size"], tl.x0:tl.x0 + c["tile_size"]])
            assert np.array_equal(tile_latent_mask(mask, tl, f), latent_mask(mask, f)[y0:y1, x0:x1])
        # every latent cell holding a generated pixel is covered
        any_gen = mask.reshape(gh, f, gw, f).max(axis=(1, 3)) == 1
        assert np.all(covered[any_gen])
        rng = np.random.default_rng(k)
        lead = [(), (3,), (2, 1, 3)][k % 3]
        x = rng.standard_normal(lead + (gh, gw)).astype(np.float32)
        parts = split(x, tiles, f)
        tt = t if tiles else 0  # an empty plan has no tile side
        assert parts.shape == (len(tiles),) + lead + (tt, tt)
        for kind in ("uniform", "linear"):
            wts = fusion_weights(tiles, (h, w), f, kind)
            assert wts.per_tile.dtype == np.float32 and wts.per_tile.shape == (len(tiles), tt, tt)
            assert np.all(wts.per_tile > 0) and np.all(wts.per_tile <= 1)
            assert np.array_equal(wts.normaliser > 0, covered)
            if kind == "uniform":
                count = np.zeros((gh, gw), np.float32)
                for tl in tiles:
                    y0, y1, x0, x1 = tl.latent_box(f)
                    count[y0:y1, x0:x1] += 1
                assert np.array_equal(wts.normaliser, count)
            elif tiles and len(tiles) == len(axis_starts(h, c["tile_size"], c["overlap"], f)) * len(
                    axis_starts(w, c["tile_size"], c["overlap"], f)):
                ys = [s // f for s in axis_starts(h, c["tile_size"], c["overlap"], f)]
                xs = [s // f for s in axis_starts(w, c["tile_size"], c["overlap"], f)]
                if all(b - a >= t for a, b in zip(ys, ys[2:])) and all(b - a >= t for a, b in zip(xs, xs[2:])):
                    # full grid, never three tiles on one cell along an axis: the ramps sum to 1
                    np.testing.assert_allclose(wts.normaliser, 1.0, atol=1e-6)
                    n_unity += 1
            out = fuse(parts, tiles, (gh, gw), wts)
            assert out.dtype == np.float32
            assert np.array_equal(out, np.where(covered, x, 0))  # fuse(split(x)) == x, bit for bit
            const = rng.standard_normal(lead + (1, 1)).astype(np.float32)  # identical tiles
            fused_same = fuse(np.broadcast_to(const, parts.shape), tiles, (gh, gw), wts)
            assert np.array_equal(fused_same, np.where(covered, const, np.float32(0)))
            noisy = rng.standard_normal(parts.shape).astype(np.float32)
            got = fuse(noisy, tiles, (gh, gw), wts)
            np.testing.assert_allclose(got, _direct_fuse(noisy, tiles, (gh, gw), wts.per_tile, f),
                                       rtol=0, atol=2e-5)
            if k % 10 == 0:  # the torch twins give the same bits
                got_t = sampling_tiles.fuse(torch.from_numpy(noisy), tiles, (gh, gw), wts)
                assert got_t.dtype == torch.float32 and np.array_equal(got_t.numpy(), got)
                assert np.array_equal(sampling_tiles.split(torch.from_numpy(x), tiles, f).numpy(), parts)
    assert n_unity > 300


def test_linear_weights_exact_values():
    # frame 8x12 px, factor 1, 8-px tiles with 4 px overlap: tiles at x = 0 and 4, ramps of width 4
    tiles = plan_tiles((8, 12), (0, 0, 0, 0), 8, 4, 1)
    assert [(tl.y0, tl.x0) for tl in tiles] == [(0, 0), (0, 4)]
    wts = fusion_weights(tiles, (8, 12), 1, "linear")
    down = np.array([1, 1, 1, 1, 0.875, 0.625, 0.375, 0.125], np.float32)
    np.testing.assert_array_equal(wts.per_tile[0], np.broadcast_to(down, (8, 8)))
    np.testing.assert_array_equal(wts.per_tile[1], np.broadcast_to(down[::-1], (8, 8)))
    np.testing.assert_array_equal(wts.normaliser, np.ones((8, 12), np.float32))
    # tile 0 holds 0, tile 1 holds 1: the seam is a linear blend over the overlap
    fused = fuse(np.stack([np.zeros((8, 8), np.float32), np.ones((8, 8), np.float32)]), tiles, (8, 12), wts)
    np.testing.assert_array_equal(fused[0], [0, 0, 0, 0, 0.125, 0.375, 0.625, 0.875, 1, 1, 1, 1])
    uni = fuse(np.stack([np.zeros((8, 8), np.float32), np.ones((8, 8), np.float32)]), tiles, (8, 12),
               fusion_weights(tiles, (8, 12), 1, "uniform"))
    np.testing.assert_array_equal(uni[0], [0, 0, 0, 0, 0.5, 0.5, 0.5, 0.5, 1, 1, 1, 1])


def test_torch_fuse_float64_and_pair_weights():
    tiles = plan_tiles((96, 160), (0, 96, 32, 128), 64, 32, 8)
    assert [(tl.y0, tl.x0) for tl in tiles] == [(0, 0), (0, 96), (32, 0), (32, 96)]  # middle columns known
    wts = fusion_weights(tiles, (96, 160), 8, "linear")
    vals = np.random.default_rng(3).standard_normal((len(tiles), 2, 4, 8, 8))
    got = sampling_tiles.fuse(torch.from_numpy(vals), tiles, (12, 20),
                              (torch.from_numpy(wts.per_tile), torch.from_numpy(wts.normaliser)))
    assert got.dtype == torch.float64 and got.shape == (2, 4, 12, 20)
    assert np.array_equal(got.numpy(), fuse(vals, tiles, (12, 20), wts))


# --------------------------------------------------------------------------------------------------
# Settings and errors
# --------------------------------------------------------------------------------------------------


def test_tiling_settings_accept_and_normalise():
    s = TilingSettings()
    assert s.working_size is None and not s.enabled
    s = TilingSettings(working_size=np.int64(512), overlap=64, layout_strength=1)
    assert s.enabled and s.working_size == 512 and type(s.working_size) is int
    assert s.layout_strength == 1.0 and type(s.layout_strength) is float
    assert s.check_for(256, 8) is s
    assert TilingSettings(working_size=64, overlap=0, layout_strength=0.3).check_for(64, 4).overlap == 0
    with pytest.raises(Exception):
        s.overlap = 8  # frozen


@pytest.mark.parametrize("kwargs, message", [
    (dict(working_size=0), "tiling.working_size=0 must be None (tiling off) or a positive multiple of 8"),
    (dict(working_size=500), "tiling.working_size=500 must be None (tiling off) or a positive multiple of 8"),
    (dict(working_size="512"), "tiling.working_size='512' must be None"),
    (dict(overlap=-8), "tiling.overlap=-8 must be an integer >= 0"),
    (dict(overlap=8.0), "tiling.overlap=8.0 must be an integer >= 0"),
    (dict(layout_strength=0), "tiling.layout_strength=0 must be a number in (0, 1]"),
    (dict(layout_strength=1.5), "tiling.layout_strength=1.5 must be a number in (0, 1]"),
    (dict(layout_strength=float("nan")), "tiling.layout_strength=nan must be a number in (0, 1]"),
    (dict(layout_strength=True), "tiling.layout_strength=True must be a number in (0, 1]"),
])
def test_tiling_settings_errors(kwargs, message):
    with pytest.raises(InputError) as e:
        TilingSettings(**kwargs)
    assert message in str(e.value)


@pytest.mark.parametrize("kwargs, canvas, factor, message", [
    (dict(working_size=128), 256, 8, "tiling.working_size=128 is smaller than the canvas size 256; use None "
                                     "(tiling off) or a size >= 256"),
    (dict(working_size=264, overlap=64), 256, 16, "tiling.working_size=264 is not a multiple of the VAE's "
                                                  "downsampling factor 16; use e.g. 272"),
    (dict(working_size=512, overlap=256), 256, 8, "tiling.overlap=256 pixels is not smaller than the tile "
                                                  "size 256; use an overlap in 0..248 (a multiple of 8)"),
    (dict(working_size=512, overlap=36), 256, 8, "tiling.overlap=36 pixels is not a multiple of the VAE's "
                                                 "downsampling factor 8, so tiles would leave the latent grid; "
                                                 "use e.g. 32 or 40"),
    (dict(overlap=64), 64, 8, "tiling.overlap=64 pixels is not smaller than the tile size 64"),
])
def test_tiling_settings_check_for_errors(kwargs, canvas, factor, message):
    with pytest.raises(InputError) as e:
        TilingSettings(**kwargs).check_for(canvas, factor)
    assert str(e.value) == message or message in str(e.value)


@pytest.mark.parametrize("args, message", [
    (((516, 512), (0, 0, 0, 0), 256, 64, 8),
     "frame_hw=(516, 512) must be two positive multiples of the VAE's downsampling factor 8 (height, width)"),
    (((248, 512), (0, 0, 0, 0), 256, 64, 8),
     "the working frame (248x512 pixels, HxW) is smaller than a tile (256x256) along its height; use a working "
     "size >= the canvas size 256"),
    (((512, 248), (0, 0, 0, 0), 256, 64, 8), "along its width"),
    (((512, 512), (0, 0, 0, 0), 256, 60, 8), "overlap=60 pixels is not a multiple of the VAE's downsampling factor 8"),
    (((512, 512), (0, 0, 0, 0), 256, 256, 8), "overlap=256 pixels is not smaller than the tile size 256"),
    (((512, 512), (0, 0, 0, 0), 260, 64, 8), "tile_size=260 must be a positive multiple of the VAE's downsampling "
                                             "factor 8"),
    (((512, 512), (10, 5, 0, 0), 256, 64, 8), "known_box=(10, 5, 0, 0) must be a half-open box (y0, y1, x0, x1) "
                                              "with 0 <= y0 <= y1 <= 512"),
    (((512, 512), (0, 600, 0, 10), 256, 64, 8), "known_box=(0, 600, 0, 10) must be a half-open box"),
    (((512, 512), (0, 0, 0), 256, 64, 8), "known_box=(0, 0, 0) must be four integers"),
    (((512, 512), (0, 0, 0, 0), 256, 64, 0), "factor=0 must be a positive integer"),
])
def test_plan_tiles_errors(args, message):
    with pytest.raises(InputError) as e:
        plan_tiles(*args)
    assert message in str(e.value)


def test_fusion_errors():
    tiles = plan_tiles((96, 160), (0, 96, 32, 128), 64, 32, 8)  # 4 of the 2x4 grid
    wts = fusion_weights(tiles, (96, 160), 8)
    with pytest.raises(InputError, match=r"fusion kind='gauss' is not known; use one of uniform, linear"):
        fusion_weights(tiles, (96, 160), 8, "gauss")
    with pytest.raises(InputError, match=r"tile 1 \(latent box \(0, 8, 12, 20\)\) leaves the 12x12 latent frame"):
        fusion_weights(tiles, (96, 96), 8)
    with pytest.raises(InputError, match=r"tiles of different sizes \[64, 128\]"):
        fusion_weights(tiles + (Tile(99, 0, 0, 128),), (160, 160), 8)
    with pytest.raises(InputError, match=r"tile 0 at \(y0=4, x0=0\) of size 64 is not on the latent grid of factor 8"):
        fusion_weights((Tile(0, 4, 0, 64),), (96, 160), 8)
    vals = np.zeros((len(tiles), 4, 8, 8), np.float32)
    with pytest.raises(InputError, match=r"must be \(n_tiles=4, \.\.\., t, t\)"):
        fuse(vals[:-1], tiles, (12, 20), wts)
    with pytest.raises(InputError, match=r"tile values 6 cells wide do not divide the tile size 64 pixels"):
        fuse(vals[..., :6, :6], tiles, (12, 20), wts)
    with pytest.raises(InputError, match=r"fusion weights of shapes .* do not match 4 tiles of 8 cells on a 12x24"):
        fuse(vals, tiles, (12, 24), wts)
    with pytest.raises(InputError, match=r"tile values have dtype int64; fuse needs a floating dtype"):
        fuse(vals.astype(np.int64), tiles, (12, 20), wts)
    with pytest.raises(InputError, match=r"tile values must be a floating torch tensor, got torch.int64"):
        sampling_tiles.fuse(torch.zeros(vals.shape, dtype=torch.int64), tiles, (12, 20), wts)
    with pytest.raises(InputError, match=r"tile 1 \(latent box \(0, 8, 12, 20\)\) leaves the 12x16 latent frame"):
        split(np.zeros((12, 16)), tiles, 8)
    with pytest.raises(InputError, match=r"does not fit frame_mask of shape \(96, 96\)"):
        tile_mask(np.zeros((96, 96), np.uint8), tiles[-1])
    assert isinstance(wts, FusionWeights)


def test_tiles_module_is_torch_free():
    src = Path(__file__).resolve().parent.parent / "m3ddm_ray" / "tiles.py"
    names = set()
    for node in ast.walk(ast.parse(src.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and not node.level:
            names.add((node.module or "").split(".")[0])
    assert names <= {"__future__", "math", "numbers", "dataclasses", "typing", "numpy"}, names


def test_tile_groups_are_the_overlap_components_over_random_frames():
    from m3ddm_ray.tiles import tile_groups

    n_split = 0
    for c in CASES:
        tiles = plan_tiles(**c)
        groups = tile_groups(tiles)
        flat = [i for g in groups for i in g]
        assert sorted(flat) == list(range(len(tiles)))  # every tile in exactly one group
        assert all(list(g) == sorted(g) for g in groups) and [g[0] for g in groups] == sorted(g[0] for g in groups)
        cover = np.full(c["frame_hw"], -1)
        for k, g in enumerate(groups):
            for i in g:
                y0, y1, x0, x1 = tiles[i].box
                assert np.all(np.isin(cover[y0:y1, x0:x1], (-1, k)))  # no pixel shared across groups
                cover[y0:y1, x0:x1] = k
            reached, todo = {g[0]}, [g[0]]  # connected through overlapping tiles
            while todo:
                a = tiles[todo.pop()].box
                for j in g:
                    b = tiles[j].box
                    if j not in reached and a[0] < b[1] and b[0] < a[1] and a[2] < b[3] and b[2] < a[3]:
                        reached.add(j)
                        todo.append(j)
            assert reached == set(g)
        n_split += len(groups) > 1
    assert n_split > 20  # the random frames do include plans in several groups


def test_tile_groups_of_a_landscape_to_portrait_frame_and_their_plans():
    from m3ddm_ray.tiles import group_plan, tile_groups

    # a full-width source band (16:9 -> 1:1) at 512 px on a 256 canvas: the band is 288 px high in
    # the middle, the middle row of tiles lies in it, and the top and bottom rows only touch
    tiles = plan_tiles((512, 512), (112, 400, 0, 512), 256, 32, 8)
    groups = tile_groups(tiles)
    assert [[(tiles[i].y0, tiles[i].x0) for i in g] for g in groups] == [
        [(0, 0), (0, 128), (0, 256)], [(256, 0), (256, 128), (256, 256)]]
    w = fusion_weights(tiles, (512, 512), 8, "linear")
    box, moved, gw = group_plan(tiles, w, groups[1], 8)
    assert box == (32, 64, 0, 64) and [(t.index, t.y0, t.x0) for t in moved] == [(0, 0, 0), (1, 0, 128), (2, 0, 256)]
    assert np.array_equal(gw.per_tile, w.per_tile[3:]) and np.array_equal(gw.normaliser, w.normaliser[32:64])
    with pytest.raises(InputError, match="tile group"):
        group_plan(tiles, w, [], 8)


def test_work_units_of_a_landscape_to_square_frame_have_disjoint_boxes():
    from m3ddm_ray.geometry import pixel_mask, plan_canvas
    from m3ddm_ray.tiles import tile_groups, unit_weights, work_units

    # 16:9 -> 1:1 at 128 px on a 64 canvas: the source spans the width, rows 28..100; the top and
    # the bottom row of tiles never overlap (the middle row of tiles is wholly known and left out)
    geom = plan_canvas(90, 160, "1:1", 128)
    assert geom.known_box == (28, 100, 0, 128)
    tiles = plan_tiles((128, 128), (0, 0, 0, 0), 64, 32, 8, generated=pixel_mask(geom))
    units = work_units(tiles, 8)
    assert [(p, box) for p, box in units] == [((0, 1, 2), (0, 8, 0, 16)), ((3, 4, 5), (8, 16, 0, 16))]
    assert [u[0] for u in units] == list(tile_groups(tiles))
    w = fusion_weights(tiles, (128, 128), 8, "linear")
    moved, uw = unit_weights(tiles, w, units[1][0], 8)
    assert [(t.index, t.y0, t.x0) for t in moved] == [(0, 64, 0), (1, 64, 32), (2, 64, 64)]
    assert np.array_equal(uw.per_tile, w.per_tile[3:])
    assert np.array_equal(uw.normaliser[8:], w.normaliser[8:]) and not uw.normaliser[:8].any()
    # 16:9 -> 9:16: the square canvas generates the columns beside the 9:16 crop too, which join
    # the top and the bottom band: one unit
    geom = plan_canvas(90, 160, "9:16", 128)
    tiles = plan_tiles((128, 128), (0, 0, 0, 0), 64, 32, 8, generated=pixel_mask(geom))
    assert [box for _, box in work_units(tiles, 8)] == [(0, 16, 0, 16)]
    with pytest.raises(InputError, match="tile unit"):
        unit_weights(tiles, w, [], 8)


def test_work_units_merge_groups_whose_boxes_meet():
    from m3ddm_ray.tiles import Tile, tile_groups, work_units

    # an L of three tiles and a lone tile inside the L's box: two groups, one unit
    tiles = (Tile(0, 0, 0, 64), Tile(1, 56, 0, 64), Tile(2, 56, 56, 64), Tile(3, 0, 72, 40))
    assert tile_groups(tiles) == ((0, 1, 2), (3,))
    assert work_units(tiles, 8) == (((0, 1, 2, 3), (0, 15, 0, 15)),)
    for c in CASES:  # random plans: boxes pairwise disjoint, every tile in one unit, units unions of groups
        tiles = plan_tiles(**c)
        units = work_units(tiles, c["factor"])
        assert sorted(i for p, _ in units for i in p) == list(range(len(tiles)))
        for a in range(len(units)):
            for b in range(a + 1, len(units)):
                (ya0, ya1, xa0, xa1), (yb0, yb1, xb0, xb1) = units[a][1], units[b][1]
                assert not (ya0 < yb1 and yb0 < ya1 and xa0 < xb1 and xb0 < xa1)
        groups = tile_groups(tiles)
        assert all(set(g) <= set(p) or not set(g) & set(p) for g in groups for p, _ in units)
