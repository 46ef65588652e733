"""Inpainting and extension through the outpainting model (m3ddm_ray.task: Inpaint, Extend; per-row
masks of PreparedClip; the inpaint / extend commands), with the tiny golden models: 2 steps, 64-pixel canvas."""

from __future__ import annotations

import dataclasses

import av
import cv2
import numpy as np
import pytest

from m3ddm_ray import geometry, pipeline, storage, video
from m3ddm_ray.errors import InputError
from m3ddm_ray.pipeline import (ClipState, OutpaintSettings, Outpainter, finalize_clip, finalize_frames,
                                generated_array, prepare_clip, prepare_task, run_extend, run_inpaint)
from m3ddm_ray.task import Extend, Inpaint, MaskArray, Outpaint, inpaint_masks
from m3ddm_ray.sampling import SamplerSettings

from conftest import DATA, GOLDEN
from test_outpaint_video import run_cli

SETTINGS = OutpaintSettings(sampler=SamplerSettings(num_inference_steps=2), canvas_size=64)
FAST = ["--model", str(GOLDEN / "models" / "unet"), "--vae", str(GOLDEN / "models" / "vae"), "--steps", "2",
        "--canvas-size", "64", "--dtype", "fp32", "--device", "cpu", "--preset", "ultrafast", "--no-progress"]


@pytest.fixture(scope="module")
def outpainter(tiny_unet, tiny_vae):
    return Outpainter(tiny_unet, tiny_vae, SETTINGS)


def smooth_frames(t=6, h=30, w=40, seed=0) -> np.ndarray:
    """A moving colour gradient: uint8 (T, H, W, 3)."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    out = np.empty((t, h, w, 3), np.uint8)
    for i in range(t):
        out[i, ..., 0] = (x * 5 + i * 7) % 256
        out[i, ..., 1] = (y * 7 + 40) % 256
        out[i, ..., 2] = ((x + y) * 3 + seed) % 256
    return out


def moving_square(t=6, h=30, w=40) -> np.ndarray:
    m = np.zeros((t, h, w), np.uint8)
    for i in range(t):
        m[i, 8:18, 4 + 3 * i:14 + 3 * i] = 1
    return m


def prepare_inpaint(frames, masks, fps, settings=SETTINGS):
    return prepare_task(frames, fps, Inpaint(MaskArray(masks), 0), settings)


def prepare_extend(frames, fps, n, direction="forward", settings=SETTINGS):
    return prepare_task(frames, fps, Extend(n, direction), settings)


@dataclasses.dataclass(frozen=True)
class PerRowOutpaint(Outpaint):
    """An outpainting that keeps one mask per row (its rows' masks are all the outpainting mask)."""

    one_mask = False


def run_all(outpainter, clip):
    state = outpainter.run_coarse(clip)
    outpainter.run_fine(clip, state)
    return generated_array(clip, state)


# ------------------------------------------------------------------------------ per-frame masks, model path
def test_one_mask_per_frame_equal_for_all_frames_is_exactly_outpainting(outpainter):
    frames = smooth_frames(5, 40, 32)
    clip = prepare_clip(frames, 12.0, "1:1", SETTINGS)
    same = dataclasses.replace(clip, task=PerRowOutpaint(clip.task.ratio),
                               frame_masks=np.repeat(clip.mask[None], 5, axis=0))
    assert same.window_masks(range(5)).shape == (5, 64, 64) and clip.window_masks(range(5)) is None
    a, b = run_all(outpainter, clip), run_all(outpainter, same)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(finalize_clip(clip, a, SETTINGS), finalize_clip(same, b, SETTINGS))
    official = dataclasses.replace(SETTINGS, paste_mode="official")
    np.testing.assert_array_equal(finalize_clip(clip, a, official), finalize_clip(same, b, official))


def test_every_window_gets_the_latent_masks_of_its_frames(outpainter, monkeypatch):
    frames, masks = smooth_frames(6), moving_square(6)
    clip = prepare_inpaint(frames, masks, 10.0, SETTINGS)
    seen = []
    real = pipeline.sample_windows

    def spy(unet, scheduler, inputs, *a, **kw):
        seen.extend(inp.mask.clone() for inp in inputs)
        return real(unet, scheduler, inputs, *a, **kw)

    monkeypatch.setattr(pipeline, "sample_windows", spy)
    run_all(outpainter, clip)
    windows = clip.plan.windows
    assert len(seen) == len(windows) >= 1
    for window, got in zip(windows, seen):
        expect = geometry.latent_mask(clip.frame_masks[list(window.frame_ids)], 8).astype(np.float32)
        assert tuple(got.shape) == (1, 1, len(window.frame_ids), 8, 8)
        np.testing.assert_array_equal(got[0, 0].numpy(), expect)
    assert not np.array_equal(seen[0][0, 0, 0].numpy(), seen[0][0, 0, 5].numpy())  # really per frame


def test_paste_back_per_frame_masks():
    rng = np.random.default_rng(3)
    gen, masked = rng.integers(0, 256, (2, 3, 16, 16, 3), dtype=np.uint8)
    m = np.zeros((3, 16, 16), np.uint8)
    m[0, :4], m[2, 5:9, 5:9] = 1, 1
    out = geometry.paste_back(gen, masked, m)
    for t in range(3):
        np.testing.assert_array_equal(out[t], np.where(m[t][..., None] == 1, gen[t], masked[t]))
    off = geometry.paste_back(gen, masked, m, mode="official")
    for t in range(3):  # per frame = the one-mask official composite of that frame
        np.testing.assert_array_equal(off[t], geometry.paste_back(gen[t:t + 1], masked[t:t + 1], m[t], "official")[0])
    with pytest.raises(InputError, match=r"\(S, S\) or \(T, S, S\)"):
        geometry.paste_back(gen, masked, m[:2])


def test_segments_slice_the_frame_masks_and_give_the_whole_clip_result(outpainter):
    settings = dataclasses.replace(SETTINGS, strides=(5, 1))
    frames, masks = smooth_frames(20), moving_square(20, 30, 40) * 0
    masks[:, 5:15, 5:15] = 1
    masks[7:, 20:28, 2:30] = 1
    op = Outpainter(outpainter.unet, outpainter.vae, settings)
    clip = prepare_inpaint(frames, masks, 10.0, settings)
    segments = clip.plan.segments()
    assert len(segments) == 2
    whole = run_all(op, clip)
    coarse = op.run_coarse(clip)
    for seg in segments:
        part = clip.segment_slice(seg)
        lo, hi = seg.frame_range
        np.testing.assert_array_equal(part.frame_masks, clip.frame_masks[lo:hi])
        np.testing.assert_array_equal(part.masks_of(seg.output_frames), clip.frame_masks[list(seg.output_frames)])
        state = op.run_fine(part, pipeline.segment_state(coarse, seg))
        got = generated_array(part, state, seg.output_frames)
        np.testing.assert_array_equal(got, whole[list(seg.output_frames)])
        out = finalize_frames(part, got, settings, frames[list(seg.output_frames)], seg.output_frames).frames
        full = finalize_clip(clip, whole, settings, frames)
        np.testing.assert_array_equal(out, full[list(seg.output_frames)])


# ------------------------------------------------------------------------------ inpaint
def test_prepare_inpaint_canvases_masks_and_hidden_global_frames():
    frames, masks = smooth_frames(6), moving_square(6)
    clip = prepare_inpaint(frames, masks, 10.0, SETTINGS)
    geom = clip.geom
    assert geom.known_box == (8, 56, 0, 64) and str(clip.ratio) == "1:1"
    assert clip.masked.shape == clip.inpainted.shape == (6, 64, 64, 3)
    assert clip.frame_masks.shape == (6, 64, 64) and clip.frame_masks.dtype == np.uint8
    np.testing.assert_array_equal(clip.mask, clip.frame_masks.max(axis=0))
    assert clip.frame_masks[:, :8].all() and clip.frame_masks[:, 56:].all()  # padding: generated
    assert not clip.masked[clip.frame_masks == 1].any()  # masked canvas: zeros where generated
    keep = clip.frame_masks == 0
    np.testing.assert_array_equal(clip.inpainted[keep], clip.masked[keep])
    assert clip.inpainted[clip.frame_masks == 1].any()  # TELEA filled the holes
    # the object's pixels never reach the model: other content under the mask, same inputs
    other = frames.copy()
    other[masks == 1] = 255
    again = prepare_inpaint(other, masks, 10.0, SETTINGS)
    np.testing.assert_array_equal(again.global_frames, clip.global_frames)
    np.testing.assert_array_equal(again.frame_masks, clip.frame_masks)


@pytest.mark.parametrize("hw", [(30, 40), (31, 23)])
def test_inpaint_keeps_size_count_and_every_pixel_outside_the_mask(outpainter, hw):
    frames, masks = smooth_frames(6, *hw), moving_square(6, *hw)
    out = run_inpaint(outpainter, frames, masks, 10.0)
    assert out.shape == (6,) + hw + (3,) and out.dtype == np.uint8
    np.testing.assert_array_equal(out[masks == 0], frames[masks == 0])
    assert (out[masks == 1] != frames[masks == 1]).mean() > 0.5  # the region was made anew


def test_inpaint_dilation_widens_the_replaced_region(outpainter):
    frames, masks = smooth_frames(4), moving_square(4)
    grown = inpaint_masks(masks, 4, (30, 40), dilate=2)
    assert grown.sum() > masks.sum() and not (masks & (1 - grown)).any()
    out = run_inpaint(outpainter, frames, masks, 10.0, dilate=2)
    np.testing.assert_array_equal(out[grown == 0], frames[grown == 0])
    ring = (grown == 1) & (masks == 0)
    assert (out[ring] != frames[ring]).any()


def test_inpaint_bad_masks(outpainter):
    frames = smooth_frames(6)
    with pytest.raises(InputError, match="--masks m.png: 2 masks for a video of 6 frames"):
        run_inpaint(outpainter, frames, moving_square(2), 10.0, name="--masks m.png")
    with pytest.raises(InputError, match="dilated by 40 px: .*every pixel"):
        inpaint_masks(moving_square(6), 6, (30, 40), dilate=40)


# ------------------------------------------------------------------------------ extend
def test_prepare_extend_layout():
    frames = smooth_frames(6)
    clip = prepare_extend(frames, 10.0, 5, settings=SETTINGS)
    assert clip.num_frames == 11 and clip.plan.num_frames == 11
    border = geometry.pixel_mask(clip.geom)
    np.testing.assert_array_equal(clip.frame_masks[:6], np.repeat(border[None], 6, axis=0))
    assert clip.frame_masks[6:].all()
    masked, inpainted = geometry.make_canvases(frames, clip.geom)
    np.testing.assert_array_equal(clip.masked[:6], masked)
    assert not clip.masked[6:].any()
    np.testing.assert_array_equal(clip.inpainted[6:], np.repeat(inpainted[-1:], 5, axis=0))
    gids = geometry.global_frame_ids(6, SETTINGS.num_global_frames)
    np.testing.assert_array_equal(clip.global_frames, pipeline.make_global_frames(frames, gids, 64))
    back = prepare_extend(frames, 10.0, 5, "backward", SETTINGS)
    np.testing.assert_array_equal(back.masked[:6], masked[::-1])


@pytest.mark.parametrize("t, n, strides", [(6, 40, None), (20, 45, None), (3, 12, (5, 1)), (10, 1, None)])
def test_every_extend_window_has_known_context(t, n, strides):
    plan = prepare_extend(smooth_frames(t), 10.0, n, settings=dataclasses.replace(SETTINGS, strides=strides)).plan
    assert plan.num_frames == t + n
    for w in plan.windows:
        assert any(f < t for f in w.frame_ids) or w.n_guides > 0, w


@pytest.mark.parametrize("direction", ["forward", "backward"])
def test_extend_gives_t_plus_n_frames_with_the_source_unchanged(outpainter, direction):
    frames = smooth_frames(6)
    out = run_extend(outpainter, frames, 10.0, 5, direction)
    assert out.shape == (11, 30, 40, 3) and out.dtype == np.uint8
    known, new = (out[:6], out[6:]) if direction == "forward" else (out[5:], out[:5])
    np.testing.assert_array_equal(known, frames)
    edge = frames[-1] if direction == "forward" else frames[0]
    for f in new:  # generated, not copies of the nearest known frame
        assert np.abs(f.astype(int) - edge).mean() > 1


def test_extend_bad_arguments():
    frames = smooth_frames(3)
    with pytest.raises(InputError, match="frames=0"):
        prepare_extend(frames, 10.0, 0)
    with pytest.raises(InputError, match="direction='sideways'"):
        prepare_extend(frames, 10.0, 2, "sideways")
    with pytest.raises(InputError, match="fps=0"):
        prepare_extend(frames, 0, 2)


# ------------------------------------------------------------------------------ the commands
def _box_mask_png(path, hw, rows, cols) -> np.ndarray:
    """Write a mask image of size ``hw`` that is 255 in the box ``rows`` x ``cols``; returns it."""
    m = np.zeros(hw, np.uint8)
    m[rows, cols] = 255
    cv2.imwrite(str(path), m)
    return m


def test_inpaint_command_round_trip(tmp_path):
    src = str(DATA / "with_audio_20.mp4")
    frames, info = video.read_frames(src)
    m = _box_mask_png(tmp_path / "m.png", frames.shape[1:3], slice(30, 70), slice(50, 110))
    out = str(tmp_path / "inpainted.mp4")
    r = run_cli(["inpaint", src, "--masks", str(tmp_path / "m.png"), "--out", out, "--dilate", "1"] + FAST,
                spy_writes=True)
    assert r["rc"] == 0, r["stderr"]
    written = r["written"][out]
    assert written.shape == frames.shape
    grown = inpaint_masks((m > 0)[None].astype(np.uint8), len(frames), frames.shape[1:3], 1)
    np.testing.assert_array_equal(written[grown == 0], frames[grown == 0])
    got = video.probe(out)
    assert (got.num_frames, got.width, got.height, got.fps, got.has_audio) == (20, 160, 118, info.fps, True)


@pytest.mark.parametrize("command", ["inpaint", "extend"])
def test_task_commands_run_tiled_with_working_size(tmp_path, command):
    src = str(DATA / "with_audio_20.mp4")
    frames, _ = video.read_frames(src)
    _box_mask_png(tmp_path / "m.png", frames.shape[1:3], slice(30, 60), slice(40, 80))
    out = str(tmp_path / "out.mp4")
    flags = ["--masks", str(tmp_path / "m.png")] if command == "inpaint" else ["--frames", "3"]
    r = run_cli([command, src, *flags, "--out", out, "--working-size", "128", "--tile-overlap", "16"] + FAST,
                spy_writes=True)
    assert r["rc"] == 0, r["stderr"]
    written = r["written"][out]
    if command == "inpaint":  # the source size, every pixel outside the (cell-grown) hole the source's
        assert written.shape == frames.shape
        np.testing.assert_array_equal(written[:, :20], frames[:, :20])
    else:
        assert written.shape == (23,) + frames.shape[1:]
        np.testing.assert_array_equal(written[:20], frames)
    r = run_cli([command, src, *flags, "--out", out, "--working-size", "100"] + FAST)
    assert r["rc"] == 2 and "working_size" in r["stderr"], r["stderr"]


def test_inpaint_command_rejects_bad_masks_before_loading_models(tmp_path):
    src = str(DATA / "with_audio_20.mp4")
    folder = tmp_path / "m"
    folder.mkdir()
    for i in range(3):
        cv2.imwrite(str(folder / f"{i:05d}.png"), np.full((118, 160), 1, np.uint8) * (i + 1))
    r = run_cli(["inpaint", src, "--masks", str(folder), "--out", str(tmp_path / "x.mp4"), "--model", "/nonexistent"]
                + FAST[2:])
    assert r["rc"] == 2 and "3 masks for a video of 20 frames" in r["stderr"], r["stderr"]
    (tmp_path / "junk.png").write_bytes(b"\x89PNG broken")
    r = run_cli(["inpaint", src, "--masks", str(tmp_path / "junk.png"), "--out", str(tmp_path / "x.mp4")] + FAST)
    assert r["rc"] == 2 and "junk.png: not a mask image" in r["stderr"]
    cv2.imwrite(str(tmp_path / "zero.png"), np.zeros((118, 160), np.uint8))
    r = run_cli(["inpaint", src, "--masks", str(tmp_path / "zero.png"), "--out", str(tmp_path / "x.mp4")] + FAST)
    assert r["rc"] == 2 and "mark no pixel" in r["stderr"]
    assert not (tmp_path / "x.mp4").exists()


def _audio_span(uri: str) -> tuple[float, float]:
    with storage.open_uri(uri) as f, av.open(f) as c:
        s = c.streams.audio[0]
        pts = [float(p.pts * p.time_base) for p in c.demux(s) if p.pts is not None]
    return min(pts), max(pts)


@pytest.mark.parametrize("direction", ["forward", "backward"])
def test_extend_command_round_trip(tmp_path, direction):
    src = str(DATA / "with_audio_20.mp4")
    frames, info = video.read_frames(src)
    out = str(tmp_path / f"{direction}.mp4")
    r = run_cli(["extend", src, "--frames", "6", "--direction", direction, "--out", out] + FAST, spy_writes=True)
    assert r["rc"] == 0, r["stderr"]
    written = r["written"][out]
    assert written.shape == (26,) + frames.shape[1:]
    np.testing.assert_array_equal(written[:20] if direction == "forward" else written[6:], frames)
    got = video.probe(out)
    assert (got.num_frames, got.width, got.height, got.fps, got.has_audio) == (26, 160, 118, info.fps, True)
    first, last = _audio_span(out)
    start = 6 / info.fps if direction == "backward" else 0.0
    assert abs(first - start) < 0.05  # the source audio sits under the known frames
    assert last < start + 20 / info.fps


def test_inpaint_command_on_a_davis_layout(tmp_path):
    """JPEGImages/480p/<seq>/ frames + Annotations/480p/<seq>/ palette PNG labels (object 1 and 2)."""
    from PIL import Image

    frames = smooth_frames(5, 30, 40)
    seq = tmp_path / "JPEGImages" / "480p" / "bear"
    ann = tmp_path / "Annotations" / "480p" / "bear"
    seq.mkdir(parents=True)
    ann.mkdir(parents=True)
    labels = moving_square(5, 30, 40)
    labels[:, 22:26, 30:36] = 2
    for i in range(5):
        cv2.imwrite(str(seq / f"{i:05d}.png"), cv2.cvtColor(frames[i], cv2.COLOR_RGB2BGR))
        img = Image.fromarray(labels[i], mode="P")
        img.putpalette([0, 0, 0, 128, 0, 0, 0, 128, 0] + [0] * 759)
        img.save(ann / f"{i:05d}.png")
    (seq / "fps.txt").write_text("24")
    out = str(tmp_path / "bear.mp4")
    r = run_cli(["inpaint", str(seq), "--masks", str(ann), "--out", out] + FAST, spy_writes=True)
    assert r["rc"] == 0, r["stderr"]
    written = r["written"][out]
    assert written.shape == frames.shape
    keep = labels == 0
    np.testing.assert_array_equal(written[keep], frames[keep])
    got = video.probe(out)
    assert (got.num_frames, got.width, got.height, got.fps, got.has_audio) == (5, 40, 30, 24.0, False)
