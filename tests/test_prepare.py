"""The one streaming preparation (m3ddm_ray.prepare) of long task clips: the keyframe canvases a
segmented pass hands to the sink, and each segment's canvases rebuilt from its span, equal the
whole clip's preparation in memory row for row (and that equals the task's canvases of all frames
at once); mask sources read by ranges."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from m3ddm_ray import geometry, video
from m3ddm_ray.errors import InputError
from m3ddm_ray.pipeline import OutpaintSettings
from m3ddm_ray.prepare import prepare, prepare_task, span_canvases
from m3ddm_ray.task import Extend, Inpaint, MaskArray, inpaint_masks

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

    def __call__(self, j, m, i, f):
        assert j == 0
        self.m.append(m)
        self.i.append(i)
        self.f.append(f)

    def arrays(self, order=None):
        m, i, f = (np.concatenate(x) for x in (self.m, self.i, self.f))
        if order is not None:  # positions stored in another order, as the clip's file_order says
            m, i, f = m[list(order)], i[list(order)], f[list(order)]
        return m, i, f


def stream(frames, t, task, chunk, sink=None):
    """The segmented pass of one task: keyframes to ``sink``."""
    return prepare(iter(frames), t, 15.0, [task], S, chunk=chunk, segmented=True, sink=sink or Sink())[0]


def reader(frames, want):
    """``read_source(a, b)`` that checks it is asked exactly the source frames ``want``."""
    def read(a, b):
        assert (a, b) == tuple(want)
        return frames[a:b]
    return read


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
    fitted = inpaint_masks(raw, T, (H, W), dilate)
    ref = prepare_task(frames, 15.0, Inpaint(MaskArray(raw), dilate), S)
    whole = Inpaint(MaskArray(raw), dilate).canvases(frames, fitted, geometry.plan_canvas(H, W, "1:1", 64))
    for a, b in zip(whole, (ref.masked, ref.inpainted, ref.frame_masks)):
        np.testing.assert_array_equal(a, b)
    sink = Sink()
    clip = stream(frames, T, Inpaint(src, dilate), 7, sink)
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
        part = span_canvases(shell, reader(frames, (lo, hi)))
        np.testing.assert_array_equal(part.masked, ref.masked[lo:hi])
        np.testing.assert_array_equal(part.inpainted, ref.inpainted[lo:hi])
        np.testing.assert_array_equal(part.masks_of(range(lo, hi)), ref.frame_masks[lo:hi])


def test_stream_inpaint_mask_errors_as_in_memory(tmp_path):
    frames = frames_of()
    few = video.open_masks(folder(tmp_path / "few", masks_of(T - 1)))
    with pytest.raises(InputError, match="159 masks for a video of 160 frames"):
        stream(frames, T, Inpaint(few, 0, "mask_uri few"), 32)
    zero = video.open_masks(folder(tmp_path / "zero", np.zeros((T, H, W), np.uint8)))
    with pytest.raises(InputError, match="mark no pixel"):
        stream(frames, T, Inpaint(zero, 0), 32)
    almost = np.ones((1, H, W), np.uint8)
    almost[0, 0, 0] = 0
    Image.fromarray(almost[0] * 255).save(tmp_path / "almost.png")
    with pytest.raises(InputError, match="dilated by 3 px: the masks mark every pixel"):
        stream(frames, T, Inpaint(video.open_masks(tmp_path / "almost.png"), 3), 32)
    other = video.open_masks(folder(tmp_path / "other", masks_of(T, H, W + 9)))
    with pytest.raises(InputError, match="masks are 53x30"):
        stream(frames, T, Inpaint(other, 0), 32)
    with pytest.raises(InputError, match="got 150 frames"):
        stream(frames[:150], T, Inpaint(video.open_masks(folder(tmp_path / "ok", masks_of())), 0), 32)


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
    ref = prepare_task(frames, 15.0, Extend(n, direction), S)
    sink = Sink()
    task = Extend(n, direction)
    clip = stream(frames, known, task, 9, sink)
    keys = list(clip.frame_ids)
    assert clip.num_frames == known + n and len(ref.plan.segments()) > 1
    k = sum(r < known for r in keys)  # a backward extension's known keyframes arrive last first
    expect = list(range(k - 1, -1, -1)) + list(range(k, len(keys))) if direction == "backward" else None
    assert clip.file_order == (None if expect is None else tuple(expect))
    m, i, f = sink.arrays(clip.file_order)
    np.testing.assert_array_equal(m, ref.masked[keys])
    np.testing.assert_array_equal(i, ref.inpainted[keys])
    np.testing.assert_array_equal(f, ref.frame_masks[keys])
    np.testing.assert_array_equal(clip.global_frames, ref.global_frames)
    np.testing.assert_array_equal(clip.mask, ref.mask)
    for seg in ref.plan.segments():
        lo, hi = seg.frame_range
        want = task.source_range(lo, hi, known + n, span=True)
        part = span_canvases(clip.segment_shell(seg), reader(frames, want))
        np.testing.assert_array_equal(part.masked, ref.masked[lo:hi])
        np.testing.assert_array_equal(part.inpainted, ref.inpainted[lo:hi])
        np.testing.assert_array_equal(part.frame_masks, ref.frame_masks[lo:hi])


def test_extend_span_rows():
    fwd, back = Extend(76, "forward"), Extend(76, "backward")
    assert fwd.source_range(0, 76, 226, span=True) == (0, 76)
    assert fwd.source_range(75, 151, 226, span=True) == (75, 150)  # holds new row 150: row 149 is there
    assert Extend(126).source_range(150, 226, 226, span=True) == (99, 100)  # all new: the last known row only
    assert back.source_range(0, 76, 226, span=True) == (74, 150)  # working row r is source frame 149 - r
    assert back.source_range(75, 151, 226, span=True) == (0, 75)
    assert Extend(126, "backward").source_range(150, 226, 226, span=True) == (0, 1)
    assert fwd.source_range(150, 226, 226) == (0, 0)  # output rows all new: no source frame


def test_backward_extension_reads_its_keyframes_back_from_the_canvas_file(tmp_path):
    """The file holds the known keyframes last first (decode order); file_order maps them back,
    and the masks come from the file with the canvases."""
    from m3ddm_ray.canvas_file import CanvasFileWriter

    known, n = 150, 10
    frames = frames_of(known)
    ref = prepare_task(frames, 15.0, Extend(n, "backward"), S)
    uri = str(tmp_path / "kf.u8")
    with CanvasFileWriter(uri, 64, with_masks=True) as w:
        clip = stream(frames, known, Extend(n, "backward"), 16, lambda j, m, i, f: w.append(m, i, f))
    clip = clip.in_file(uri, None)
    keys = list(clip.frame_ids)
    k = sum(r < known for r in keys)
    assert clip.file_order is not None and (tmp_path / "kf.u8").stat().st_size == len(keys) * 7 * 64 * 64
    pick = [keys[0], keys[3], keys[-1], keys[k - 1], keys[k]]
    m, i = clip.canvases(clip.rows(pick))
    np.testing.assert_array_equal(m, ref.masked[pick])
    np.testing.assert_array_equal(i, ref.inpainted[pick])
    np.testing.assert_array_equal(clip.masks_of(pick), ref.frame_masks[pick])
    with pytest.raises(RuntimeError, match="have no canvas here"):  # only keyframes are in the file
        clip.canvases(clip.rows([keys[0] + 1]))
    shell = clip.segment_shell(ref.plan.segments()[1])
    assert shell.canvas_file is None and shell.file_order is None and shell.needs_canvases
