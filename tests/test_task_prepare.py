"""Streamed preparation of long task clips (m3ddm_ray.task_prepare): the keyframe canvases a single
pass hands to the sink, and each segment's canvases rebuilt from its span, equal the in-memory
preparation (tasks.prepare_inpaint / prepare_extend) row for row; mask sources read by ranges."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from m3ddm_ray import tasks, video
from m3ddm_ray.errors import InputError
from m3ddm_ray.pipeline import OutpaintSettings
from m3ddm_ray.task_prepare import extend_span, extend_span_rows, inpaint_span, stream_extend, stream_inpaint

S = OutpaintSettings(canvas_size=64)
T, H, W = 160, 30, 44  # 160 frames: 2 segments at 15 fps


def frames_of(t: int = T) -> np.ndarray:
    rng = np.random.default_rng(7)
    base = rng.integers(0, 256, (8, H, W, 3), dtype=np.uint8)
    return np.stack([np.roll(base[i % 8], i, axis=1) for i in range(t)])


def masks_of(t: int = T, h: int = H, w: int = W) -> np.ndarray:
    m = np.zeros((t, h, w), np.uint8)
    for i in range(t):
        x = (2 + i) % (w - 12)
        m[i, 8:18, x:x + 10] = 1
    return m


def folder(path, masks):
    path.mkdir(parents=True, exist_ok=True)
    for i, m in enumerate(masks):
        Image.fromarray(m * 255).save(path / f"{i:05d}.png")
    return path


class Sink:
    def __init__(self):
        self.m, self.i, self.f = [], [], []

    def __call__(self, m, i, f):
        self.m.append(m)
        self.i.append(i)
        self.f.append(f)

    def arrays(self, reversed_first: int = 0):
        m, i, f = (np.concatenate(x) for x in (self.m, self.i, self.f))
        if reversed_first:  # positions stored last first, as the clip's canvas_reversed says
            order = list(range(reversed_first - 1, -1, -1)) + list(range(reversed_first, len(m)))
            m, i, f = m[order], i[order], f[order]
        return m, i, f


@pytest.mark.parametrize("source", ["folder", "image", "folder_small"])
@pytest.mark.parametrize("dilate", [0, 2])
def test_stream_inpaint_equals_in_memory(tmp_path, source, dilate):
    frames = frames_of()
    if source == "image":
        raw = masks_of(1)
        uri = tmp_path / "m.png"
        Image.fromarray(raw[0] * 255).save(uri)
    elif source == "folder_small":  # half size, same aspect: resized conservatively
        raw = masks_of(T, H // 2, W // 2)
        uri = folder(tmp_path / "m", raw)
    else:
        raw = masks_of()
        uri = folder(tmp_path / "m", raw)
    src = video.open_masks(uri)
    assert src.count == len(raw)
    np.testing.assert_array_equal(src.read(0, src.count), raw)
    fitted = tasks.inpaint_masks(raw, T, (H, W), dilate)
    ref = tasks.prepare_inpaint(frames, fitted, 15.0, S)
    sink = Sink()
    clip = stream_inpaint(iter(frames), T, 15.0, src, S, dilate, sink, chunk=7)
    keys = list(clip.frame_ids)
    assert keys == sorted({f for w in ref.plan.coarse for f in w.frame_ids}) and len(ref.plan.segments()) > 1
    m, i, f = sink.arrays()
    np.testing.assert_array_equal(m, ref.masked[keys])
    np.testing.assert_array_equal(i, ref.inpainted[keys])
    np.testing.assert_array_equal(f, ref.frame_masks[keys])
    np.testing.assert_array_equal(clip.mask, ref.mask)
    np.testing.assert_array_equal(clip.global_frames, ref.global_frames)
    assert clip.strides == ref.strides and clip.num_frames == T and clip.masked.shape[0] == 0
    for seg in ref.plan.segments():
        lo, hi = seg.frame_range
        shell = clip.segment_shell(seg)
        assert shell.needs_canvases
        part = inpaint_span(shell, frames[lo:hi], src.read(lo, hi), dilate)
        np.testing.assert_array_equal(part.masked, ref.masked[lo:hi])
        np.testing.assert_array_equal(part.inpainted, ref.inpainted[lo:hi])
        np.testing.assert_array_equal(part.masks_of(range(lo, hi)), ref.frame_masks[lo:hi])


def test_stream_inpaint_mask_errors_as_in_memory(tmp_path):
    frames = frames_of()
    few = video.open_masks(folder(tmp_path / "few", masks_of(T - 1)))
    with pytest.raises(InputError, match="159 masks for a video of 160 frames"):
        stream_inpaint(iter(frames), T, 15.0, few, S, 0, Sink(), name="mask_uri few")
    zero = video.open_masks(folder(tmp_path / "zero", np.zeros((T, H, W), np.uint8)))
    with pytest.raises(InputError, match="mark no pixel"):
        stream_inpaint(iter(frames), T, 15.0, zero, S, 0, Sink())
    almost = np.ones((1, H, W), np.uint8)
    almost[0, 0, 0] = 0
    Image.fromarray(almost[0] * 255).save(tmp_path / "almost.png")
    with pytest.raises(InputError, match="dilated by 3 px: the masks mark every pixel"):
        stream_inpaint(iter(frames), T, 15.0, video.open_masks(tmp_path / "almost.png"), S, 3, Sink())
    other = video.open_masks(folder(tmp_path / "other", masks_of(T, H, W + 9)))
    with pytest.raises(InputError, match="masks are 53x30"):
        stream_inpaint(iter(frames), T, 15.0, other, S, 0, Sink())
    with pytest.raises(InputError, match="got 150 frames"):
        stream_inpaint(iter(frames[:150]), T, 15.0, video.open_masks(folder(tmp_path / "ok", masks_of())), S, 0,
                       Sink())


def test_mask_source_ranges(tmp_path):
    raw = masks_of(12)
    src = video.open_masks(folder(tmp_path / "m", raw))
    np.testing.assert_array_equal(src.read(3, 9), raw[3:9])
    with pytest.raises(InputError, match=r"holds 12 masks, masks \[10, 14\) were asked"):
        src.read(10, 14)
    one = tmp_path / "one.png"
    Image.fromarray(raw[4] * 255).save(one)
    np.testing.assert_array_equal(video.open_masks(one).read(50, 60), raw[4:5])  # one mask stands for all
    mv = tmp_path / "m.mp4"
    video.write_video(mv, np.repeat(raw[..., None] * 255, 3, axis=3), 15.0, preset="veryfast")
    vs = video.open_masks(mv)
    assert vs.kind == "video" and vs.count == 12
    np.testing.assert_array_equal(vs.read(5, 8), video.read_masks(mv)[5:8])


@pytest.mark.parametrize("direction", ["forward", "backward"])
@pytest.mark.parametrize("known,n", [(150, 10), (100, 60)])
def test_stream_extend_equals_in_memory(direction, known, n):
    frames = frames_of(known)
    ref = tasks.prepare_extend(frames, 15.0, n, direction, S)
    sink = Sink()
    clip = stream_extend(iter(frames), known, 15.0, n, direction, S, sink, chunk=9)
    keys = list(clip.frame_ids)
    assert clip.num_frames == known + n and len(ref.plan.segments()) > 1
    assert clip.canvas_reversed == (sum(k < known for k in keys) if direction == "backward" else 0)
    m, i, f = sink.arrays(clip.canvas_reversed)
    np.testing.assert_array_equal(m, ref.masked[keys])
    np.testing.assert_array_equal(i, ref.inpainted[keys])
    np.testing.assert_array_equal(f, ref.frame_masks[keys])
    np.testing.assert_array_equal(clip.global_frames, ref.global_frames)
    np.testing.assert_array_equal(clip.mask, ref.mask)
    for seg in ref.plan.segments():
        lo, hi = seg.frame_range
        a, b = extend_span_rows(lo, hi, known)
        s_lo, s_hi = tasks.extend_known_span(range(a, b), known, direction)
        part = extend_span(clip.segment_shell(seg), frames[s_lo:s_hi], known, direction)
        np.testing.assert_array_equal(part.masked, ref.masked[lo:hi])
        np.testing.assert_array_equal(part.inpainted, ref.inpainted[lo:hi])
        np.testing.assert_array_equal(part.frame_masks, ref.frame_masks[lo:hi])


def test_extend_span_rows():
    assert extend_span_rows(0, 76, 150) == (0, 76)
    assert extend_span_rows(75, 151, 150) == (75, 150)  # holds new row 150: row 149 is there
    assert extend_span_rows(150, 226, 100) == (99, 100)  # all new: the last known row only


def test_backward_extension_reads_its_keyframes_back_from_the_canvas_file(tmp_path):
    """The file holds the known keyframes last first (decode order); canvas_reversed maps them back,
    and the masks come from the file with the canvases."""
    from dataclasses import replace

    from m3ddm_ray.canvas_file import CanvasFileWriter

    known, n = 150, 10
    frames = frames_of(known)
    ref = tasks.prepare_extend(frames, 15.0, n, "backward", S)
    uri = str(tmp_path / "kf.u8")
    with CanvasFileWriter(uri, 64, with_masks=True) as w:
        clip = stream_extend(iter(frames), known, 15.0, n, "backward", S, w.append, chunk=16)
    clip = replace(clip, canvas_file=uri)
    keys = list(clip.frame_ids)
    assert clip.canvas_reversed > 0 and (tmp_path / "kf.u8").stat().st_size == len(keys) * 7 * 64 * 64
    pick = [keys[0], keys[3], keys[-1], keys[clip.canvas_reversed - 1], keys[clip.canvas_reversed]]
    m, i = clip.canvases(clip.rows(pick))
    np.testing.assert_array_equal(m, ref.masked[pick])
    np.testing.assert_array_equal(i, ref.inpainted[pick])
    np.testing.assert_array_equal(clip.masks_of(pick), ref.frame_masks[pick])
    with pytest.raises(RuntimeError, match="have no canvas here"):  # only keyframes are in the file
        clip.canvases(clip.rows([keys[0] + 1]))
    shell = clip.segment_shell(ref.plan.segments()[1])
    assert shell.canvas_file is None and shell.canvas_reversed == 0 and shell.needs_canvases
