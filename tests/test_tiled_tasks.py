"""The tiled mode for inpainting and extension (m3ddm_ray.tiled.run_tiled_task): the working clip each
task makes at the working size, the tiles selected by the union of the rows' masks, and the run of
the tiny golden model (exactly the whole-canvas task at working size = canvas; the right frames and
the known pixels exactly the source at twice the canvas; a clip in segments and units run anywhere,
as the batch job runs it, gives the one-process output bit for bit)."""

from __future__ import annotations

from dataclasses import replace

import cv2
import numpy as np
import pytest

from m3ddm_ray.errors import InputError
from m3ddm_ray.pipeline import Outpainter, prepare_task, run_task
from m3ddm_ray.task import Extend, Inpaint, MaskArray
from m3ddm_ray.tiled import (TiledOutpaintPipeline, TiledOutpainter, clip_tiles, clip_units, run_tiled_task,
                             working_canvases, working_clip)
from m3ddm_ray.tiles import plan_tiles

from conftest import GOLDEN
from test_tiled import ClipRecorder, _settings

FPS = 15.0


def _square_frames(t=16):
    """uint8 (t, 64, 64, 3): the golden clip's central 64 columns (a square source: no padding)."""
    return np.ascontiguousarray(np.load(GOLDEN / "case_hier" / "input_frames.npy")[:t, :, 16:80])


def _holes(t=16):
    """uint8 (t, 64, 64): an 8x8 hole at the top left in frames 0..7, at the bottom left in 8..15."""
    m = np.zeros((t, 64, 64), np.uint8)
    m[:8, 2:10, 2:10] = 1
    m[8:, 54:62, 2:10] = 1
    return m


def _inpaint():
    return Inpaint(MaskArray(_holes(), "holes"), 0, "holes")


def test_the_working_clip_is_the_tasks_own_at_the_working_size():
    frames = _square_frames()
    clip = prepare_task(frames, FPS, _inpaint(), _settings())
    layout = np.random.default_rng(0).integers(0, 256, (16, 64, 64, 3), dtype=np.uint8)
    work = working_clip(clip, frames, 128, layout)
    # the task's canvases, masks and union at 128 px; the S-pixel global frames kept
    at_128 = prepare_task(frames, FPS, _inpaint(), replace(_settings(), canvas_size=128))
    assert work.geom == at_128.geom and work.geom.canvas_size == 128
    assert np.array_equal(work.masked, at_128.masked) and np.array_equal(work.frame_masks, at_128.frame_masks)
    assert np.array_equal(work.mask, at_128.mask)
    assert work.global_frames is clip.global_frames and work.global_frames.shape == (16, 3, 64, 64)
    # the 2-px-scaled hole [4, 20) grown to whole 8-px cells: [0, 24) rows and columns; [104, 128) rows
    want = np.zeros((16, 128, 128), np.uint8)
    want[:8, 0:24, 0:24] = 1
    want[8:, 104:128, 0:24] = 1
    assert np.array_equal(work.frame_masks, want)
    assert np.array_equal(work.mask, want.max(axis=0))
    for i in (0, 9):  # the start image: the upsampled layout in the row's hole, the known pixels elsewhere
        up = cv2.resize(layout[i], (128, 128), interpolation=cv2.INTER_CUBIC)
        hole = want[i] == 1
        assert np.array_equal(work.inpainted[i][hole], up[hole])
        assert np.array_equal(work.inpainted[i][~hole], work.masked[i][~hole])
    with pytest.raises(InputError, match=r"layout of shape \(16, 64, 64, 3\); expected \(8, 64, 64, 3\)"):
        working_clip(prepare_task(frames[:4], FPS, Extend(4), _settings()), frames[:4], 128, layout)
    # a subset of the rows (a segment's span, keyframes) gets the same canvases as in the whole clip
    rows = [3, 4, 5, 12]
    part = working_canvases(clip, rows, frames[rows], _holes()[rows], 128, layout[rows])
    assert part.frame_ids == tuple(rows) and np.array_equal(part.mask, work.mask)
    for name in ("masked", "inpainted", "frame_masks"):
        assert np.array_equal(getattr(part, name), getattr(work, name)[rows]), name
    with pytest.raises(InputError, match=r"4 rows \(4 known\): source frames \(3, 64, 64, 3\)"):
        working_canvases(clip, rows, frames[rows[:3]], _holes()[rows[:3]], 128, layout[rows])


def _wide_frames(t=16):
    """uint8 (t, 64, 96, 3): the golden clip (3:2; on the 1:1 plan of 128 px the frame is rows 21..105)."""
    return np.load(GOLDEN / "case_hier" / "input_frames.npy")[:t]


def _up(layout, i, side=128):
    return cv2.resize(layout[i], (side, side), interpolation=cv2.INTER_CUBIC)


def test_the_padding_is_known_at_the_working_size_and_holds_the_layout():
    frames = _wide_frames()
    holes = np.zeros((16, 64, 96), np.uint8)
    holes[:, 2:10, 2:10] = 1
    clip = prepare_task(frames, FPS, Inpaint(MaskArray(holes, "holes"), 0, "holes"), _settings())
    layout = np.random.default_rng(1).integers(0, 256, (16, 64, 64, 3), dtype=np.uint8)
    work = working_clip(clip, frames, 128, layout)
    assert work.geom.known_box == (21, 106, 0, 128)
    # the hole lands on rows 23..34, columns 2..13 of the canvas: cells [16, 40) x [0, 16), the
    # top cell row reaching into the padding; no other padding pixel is generated
    want = np.zeros((128, 128), np.uint8)
    want[16:40, 0:16] = 1
    assert all(np.array_equal(m, want) for m in work.frame_masks) and np.array_equal(work.mask, want)
    pad = np.ones((128, 128), bool)
    pad[21:106] = False
    known_pad = pad & (want == 0)
    for i in (0, 15):
        assert np.array_equal(work.masked[i][known_pad], _up(layout, i)[known_pad])  # the layout, known
        assert not work.masked[i][want == 1].any()
        assert np.array_equal(work.inpainted[i][want == 1], _up(layout, i)[want == 1])
    assert [(t.y0, t.x0) for t in clip_tiles(work, 32, 64, 8)[0]] == [(0, 0), (32, 0)]
    # without a layout the task's own preparation: the padding generated, so 7 of the 9 tiles (the
    # middle row's two right tiles lie inside the frame, without a hole)
    assert len(clip_tiles(working_clip(clip, frames, 128, None), 32, 64, 8)[0]) == 7
    # an extension: its known rows wholly known, its new rows' frame rectangle (in whole cells) generated
    ext = prepare_task(frames[:8], FPS, Extend(8), _settings())
    work = working_clip(ext, frames[:8], 128, layout)
    new = np.zeros((128, 128), np.uint8)
    new[16:112] = 1
    assert not work.frame_masks[:8].any() and all(np.array_equal(m, new) for m in work.frame_masks[8:])
    assert np.array_equal(work.masked[3][pad], _up(layout, 3)[pad])
    assert np.array_equal(work.inpainted[3], work.masked[3])
    assert np.array_equal(work.masked[12][(new == 0)], _up(layout, 12)[new == 0])
    assert len(clip_tiles(work, 32, 64, 8)[0]) == 9


def test_tiles_hold_a_hole_of_some_frame():
    frames = _square_frames()
    work = working_clip(prepare_task(frames, FPS, _inpaint(), _settings()), frames, 128, None)
    tiles, weights = clip_tiles(work, 32, 64, 8)
    # of the 3 x 3 grid (starts 0, 32, 64) only the two tiles that hold a hole of some frame
    assert [(t.y0, t.x0) for t in tiles] == [(0, 0), (64, 0)]
    assert weights.per_tile.shape == (2, 8, 8)
    # each frame alone has one of them: the union of the frames decides
    one = [plan_tiles((128, 128), (0, 0, 0, 0), 64, 32, 8, generated=work.frame_masks[i]) for i in (0, 15)]
    assert [[(t.y0, t.x0) for t in ts] for ts in one] == [[(0, 0)], [(64, 0)]]
    # an extension's new rows are wholly generated: the whole grid
    ext = working_clip(prepare_task(frames[:8], FPS, Extend(8), _settings()), frames[:8], 128, None)
    assert len(clip_tiles(ext, 32, 64, 8)[0]) == 9
    assert not ext.frame_masks[:8].any() and ext.frame_masks[8:].all()


TASKS = {"inpaint": (_inpaint, 16), "extend": (lambda: Extend(8), 8), "extend-backward": (lambda: Extend(8, "backward"), 8)}


@pytest.mark.parametrize("name", list(TASKS))
def test_working_size_equal_to_the_canvas_is_the_whole_canvas_task_bit_for_bit(name, tiny_unet, tiny_vae):
    make, t = TASKS[name]
    frames = _square_frames(t)
    want = run_task(Outpainter(tiny_unet, tiny_vae, _settings()), frames, FPS, make())
    rec = ClipRecorder(tiny_unet)
    out, work, _ = run_tiled_task(Outpainter(rec, tiny_vae, _settings(64)), frames, FPS, make())
    assert len(rec.calls) == 4  # one window x 4 steps, no layout pass
    assert work.geom.canvas_size == 64
    assert out.shape == want.shape == (16, 64, 64, 3)
    assert np.array_equal(out, want)
    for ws in (64, None):  # the pipeline's run_task, tiled at the canvas size and with tiling off
        got = TiledOutpaintPipeline(tiny_unet, tiny_vae, _settings(ws)).run_task(frames, FPS, make())
        assert np.array_equal(got, want)
    with pytest.raises(InputError, match=r"the tiled run needs tiling.working_size \(the tiled mode is off\)"):
        run_tiled_task(Outpainter(tiny_unet, tiny_vae, _settings()), frames, FPS, make())


def _wide_holes(t=16):
    m = np.zeros((t, 64, 96), np.uint8)
    m[:, 2:10, 2:10] = 1
    return m


@pytest.mark.parametrize("frames, holes", [(_square_frames, _holes), (_wide_frames, _wide_holes)], ids=["square", "wide"])
def test_tiled_inpainting_at_twice_the_canvas(frames, holes, tiny_unet, tiny_vae):
    frames, holes = frames(), holes()
    rec = ClipRecorder(tiny_unet)
    task = Inpaint(MaskArray(holes, "holes"), 0, "holes")
    out, work, state = run_tiled_task(Outpainter(rec, tiny_vae, _settings(128)), frames, FPS, task)
    assert out.shape == frames.shape and out.dtype == np.uint8
    known = holes == 0
    assert np.array_equal(out[known], frames[known])  # every pixel outside the holes is the source pixel
    assert not np.array_equal(out[~known], frames[~known])  # the holes are generated
    assert work.geom.canvas_size == 128 and state.stored[0].shape == (4, 16, 16)
    # per unit: the layout pass's 4 UNet calls, then its tiles x 3 calls (PLMS from 2 of 4 steps: 3
    # timesteps, one repeated); the square clip's two tiles (top left, bottom left) are two units
    tiles = clip_tiles(work, 32, 64, 8)[0]
    units = clip_units(prepare_task(frames, FPS, task, _settings(128)), _settings(128).tiling, 64, 8)
    assert len(tiles) == 2 and len(units) == (2 if frames.shape[2] == 64 else 1)
    assert len(rec.calls) == len(units) * 4 + 2 * 3 and rec.calls[-1][0].shape == (3, 9, 16, 8, 8)


@pytest.mark.parametrize("direction", ["forward", "backward"])
def test_tiled_extension_at_twice_the_canvas(direction, tiny_unet, tiny_vae):
    frames = _square_frames(8)
    rec = ClipRecorder(tiny_unet)
    out, work, _ = run_tiled_task(Outpainter(rec, tiny_vae, _settings(128)), frames, FPS, Extend(8, direction))
    assert out.shape == (16, 64, 64, 3) and out.dtype == np.uint8
    known, new = (out[:8], out[8:]) if direction == "forward" else (out[8:], out[:8])
    assert np.array_equal(known, frames)  # the known frames exactly the source
    assert not np.array_equal(new, np.repeat(frames[-1 if direction == "forward" else 0][None], 8, axis=0))
    assert work.num_frames == 16 and work.geom.canvas_size == 128
    assert len(rec.calls) == 4 + 9 * 3  # the whole 3 x 3 grid: every pixel of the new rows is generated


def _long_holes(t=31):
    """uint8 (t, 64, 96): an 8x8 hole moving right 2 px a frame along the top of the frame."""
    m = np.zeros((t, 64, 96), np.uint8)
    for i in range(t):
        m[i, 4:12, 2 + 2 * i:10 + 2 * i] = 1
    return m


SEGMENTED = {"inpaint": (lambda: Inpaint(MaskArray(_long_holes(), "holes"), 0, "holes"), 31),
             "extend-backward": (lambda: Extend(7, "backward"), 24)}


@pytest.mark.parametrize("name", list(SEGMENTED))
def test_a_tiled_task_in_segments_and_units_run_anywhere_gives_the_one_process_output(name, tiny_unet, tiny_vae):
    """31 working rows with strides [3, 1]: a keyframe pass and two segments at twice the canvas.
    The coarse stage on the keyframes, then every (segment, unit) from a pickled copy of its
    sub-state on a fresh outpainter, its canvases built from the segment shell (as the job's fine
    actor does), in reverse order, the units' pixels assembled and each segment finalized, in the
    task's piece order, gives :func:`run_tiled_task`'s output bit for bit; the known pixels are the
    source's exactly."""
    import pickle

    from m3ddm_ray.pipeline import finalize_frames
    from m3ddm_ray.prepare import prepare, span_canvases
    from m3ddm_ray.tiled import assemble_units, unit_pixels

    make, t = SEGMENTED[name]
    frames = np.ascontiguousarray(_wide_frames(t))
    s = replace(_settings(128), strides=(3, 1))
    out, _, state = run_tiled_task(Outpainter(tiny_unet, tiny_vae, s), frames, FPS, make())
    assert out.shape == (31, 64, 96, 3) and sorted(state.generated) == list(range(31))
    if name == "inpaint":
        known = _long_holes() == 0
        assert np.array_equal(out[known], frames[known]) and not np.array_equal(out[~known], frames[~known])
    else:
        assert np.array_equal(out[7:], frames)  # backward: the new frames come first
    (clip,) = prepare(frames, t, FPS, [make()], s, segmented=True)  # the job's keyframes clip
    assert clip.keyframes_only and (clip.source_union is not None) == (name == "inpaint")
    read = lambda ids: frames[np.asarray(ids)]  # noqa: E731
    units = clip_units(clip, s.tiling, 64, 8)
    coarse = TiledOutpainter(tiny_unet, tiny_vae, s, source=read).run_coarse(clip)
    segs = clip.plan.segments()
    assert len(segs) == 2
    pieces = {}
    for seg in reversed(segs):
        rows = list(seg.output_frames)
        parts, work = [], None
        for u in reversed(range(len(units))):
            fresh = TiledOutpainter(tiny_unet, tiny_vae, s, source=read)
            shell = span_canvases(clip.segment_shell(seg), lambda a, b: frames[a:b])
            sub = fresh.run_fine(shell, pickle.loads(pickle.dumps(coarse.for_segment(seg))), unit=u)
            work = fresh.output_clip(shell, sub)
            assert work.geom.canvas_size == 128 and work.first_frame == seg.frame_range[0]
            parts.append(unit_pixels(work, sub, rows))
        gen = assemble_units(work.known_canvases(rows), parts)
        a, b = clip.task.source_range(rows[0], rows[-1] + 1, clip.num_frames)
        pieces[clip.task.piece_position(seg.index, len(segs))] = finalize_frames(work, gen, s, frames[a:b],
                                                                                 rows).frames
    got = np.concatenate([pieces[k] for k in sorted(pieces)])
    assert got.shape == out.shape and np.array_equal(got, out)
