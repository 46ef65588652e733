"""Span reads (m3ddm_ray.video.spans): a seek to a recorded key frame gives exactly the frames of a
whole sequential decode; whatever does not match the index falls back to the sequential decode.
And a passthrough output as a remux of the source (m3ddm_ray.video.remux_video)."""

from __future__ import annotations

from fractions import Fraction

import av
import numpy as np
import pytest

from m3ddm_ray.errors import InputError, VideoError
from m3ddm_ray.video import FrameIndex, SeekPoint, iter_frames, read_frames, read_image_span, read_span, remux_video

from conftest import DATA


def _frames(n: int, h: int = 48, w: int = 64) -> np.ndarray:
    rng = np.random.default_rng(0)
    base = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
    out = np.empty((n, h, w, 3), np.uint8)
    for i in range(n):  # a moving pattern: every frame differs, so a miscount shows
        out[i] = np.roll(base, 3 * i, axis=1)
        out[i, :4, :4] = i % 256
    return out


def _encode(path, frames, params: str, fps: int = 15) -> None:
    with av.open(str(path), "w") as out:
        vs = out.add_stream("libx264", rate=Fraction(fps))
        vs.width, vs.height, vs.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        vs.options = {"x264-params": params, "crf": "20"}
        for f in frames:
            for p in vs.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                out.mux(p)
        for p in vs.encode(None):
            out.mux(p)


@pytest.mark.parametrize("params", ["keyint=10:min-keyint=10:scenecut=0:bframes=3",
                                    "keyint=12:min-keyint=12:scenecut=0:bframes=2:open-gop=1"])
def test_span_reads_equal_the_whole_decode(tmp_path, params, caplog):
    caplog.set_level("INFO", logger="m3ddm_ray.video.spans")
    path = tmp_path / "gop.mp4"
    _encode(path, _frames(95), params)
    index = FrameIndex()
    whole = np.stack(list(iter_frames(path, index=index)))
    assert len(index) == 95 and len(index.keys) >= 8  # a key frame every 10 / 12 frames
    for lo, hi in [(0, 16), (9, 10), (10, 26), (37, 61), (60, 95), (94, 95), (23, 95)]:
        seek = index.seek_point(lo, hi)
        if lo >= 12:
            assert seek is not None and 0 < seek.key_index <= lo
        got = read_span(path, lo, hi, seek)
        assert got.shape == (hi - lo,) + whole.shape[1:]
        np.testing.assert_array_equal(got, whole[lo:hi])
    assert "did not match" not in caplog.text  # every seek landed where the index said


def test_a_wrong_seek_point_falls_back_to_the_sequential_decode(tmp_path, caplog):
    caplog.set_level("INFO", logger="m3ddm_ray.video.spans")
    path = tmp_path / "gop.mp4"
    _encode(path, _frames(40), "keyint=10:min-keyint=10:scenecut=0:bframes=2")
    index = FrameIndex()
    whole = np.stack(list(iter_frames(path, index=index)))
    good = index.seek_point(25, 35)
    for bad in (SeekPoint(good.key_index, good.key_pts + 1, good.first_pts, good.last_pts),  # no such key pts
                SeekPoint(good.key_index - 1, good.key_pts, good.first_pts, good.last_pts),  # miscounted
                SeekPoint(good.key_index, good.key_pts, good.first_pts, good.last_pts + 99)):  # wrong end
        caplog.clear()
        np.testing.assert_array_equal(read_span(path, 25, 35, bad), whole[25:35])
        assert "did not match the index" in caplog.text


def test_span_errors_name_the_problem(tmp_path):
    path = DATA / "tree_60.mp4"
    with pytest.raises(InputError, match=r"need 0 <= lo < hi"):
        read_span(path, 5, 5)
    with pytest.raises(VideoError, match=r"the video ends before frame 60"):
        read_span(path, 50, 70)
    index = FrameIndex()
    list(iter_frames(path, index=index))
    with pytest.raises(InputError, match=r"outside the 60 indexed frames"):
        index.seek_point(10, 61)
    assert SeekPoint.from_dict(SeekPoint(1, 2, 3, 4).to_dict()) == SeekPoint(1, 2, 3, 4)


def test_image_folder_span(tmp_path):
    import cv2

    frames = _frames(7, 16, 24)
    for i, f in enumerate(frames):
        cv2.imwrite(str(tmp_path / f"{i:05d}.png"), cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    np.testing.assert_array_equal(read_image_span(tmp_path, 2, 6), frames[2:6])
    with pytest.raises(InputError, match=r"holds 7 images"):
        read_image_span(tmp_path, 5, 9)


def test_passthrough_remux_copies_the_source_packets_and_audio(tmp_path):
    src = DATA / "with_audio_20.mp4"
    out = tmp_path / "copy.mp4"
    hw = remux_video(str(src), str(out))
    assert hw is not None
    a, _ = read_frames(src)
    b, info = read_frames(out)
    assert hw == a.shape[1:3] and info.has_audio
    np.testing.assert_array_equal(a, b)  # the same packets decode to the same pixels
    with av.open(str(src)) as s, av.open(str(out)) as o:
        sp = [bytes(p) for p in s.demux(s.streams.video[0]) if p.size]
        op = [bytes(p) for p in o.demux(o.streams.video[0]) if p.size]
    assert sp == op


def test_remux_declines_what_it_cannot_copy(tmp_path):
    assert remux_video(str(DATA / "rotated_90.mp4"), str(tmp_path / "r.mp4")) is None  # display rotation
    assert remux_video(str(DATA / "megamind_bugy_head.avi"), str(tmp_path / "m.mp4")) is None  # AVI
    assert not (tmp_path / "r.mp4").exists() and not (tmp_path / "m.mp4").exists()
