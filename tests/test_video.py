"""Tests of m3ddm_ray.video (PyAV + fsspec I/O) and m3ddm_ray.storage; fast, no Ray, no model.

The clips in tests/data/ are described in tests/data/README.md (made by make_test_clips.py).
"""

from __future__ import annotations

import os
import re
import uuid
from fractions import Fraction

import av
import fsspec
import numpy as np
import pytest
from fsspec.implementations.local import LocalFileSystem

from m3ddm_ray import storage, video
from m3ddm_ray.errors import InputError, VideoError

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")


def data(name: str) -> str:
    return os.path.join(DATA, name)


def mae(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


@pytest.fixture(scope="module")
def tree() -> np.ndarray:
    frames, _ = video.read_frames(data("tree_60.mp4"))
    return frames


@pytest.fixture
def mem_root():
    """A fresh memory:// folder, removed afterwards."""
    root = f"memory://test-video-{uuid.uuid4().hex}"
    yield root
    fs = fsspec.filesystem("memory")
    path = root[len("memory://"):]
    if fs.exists(path):
        fs.rm(path, recursive=True)


def audio_packets(uri: str) -> list[bytes]:
    with storage.open_uri(uri) as f, av.open(f) as c:
        return [bytes(p) for p in c.demux(c.streams.audio[0]) if p.size]


def audio_duration(uri: str) -> float:
    with storage.open_uri(uri) as f, av.open(f) as c:
        s = c.streams.audio[0]
        return float(s.duration * s.time_base)


def stream_facts(uri: str) -> dict:
    with storage.open_uri(uri) as f, av.open(f) as c:
        v = c.streams.video[0]
        return {
            "format": c.format.name,
            "codec": v.codec_context.name,
            "pix_fmt": v.codec_context.pix_fmt,
            "n_audio": len(c.streams.audio),
            "audio_codec": c.streams.audio[0].codec_context.codec.canonical_name if c.streams.audio else None,
        }


# ------------------------------------------------------------------------------------------------
# probe
# ------------------------------------------------------------------------------------------------

CLIPS = {
    # name: (width, height, frames, frame_rate, rotation, audio codec)
    "tree_60.mp4": (160, 120, 60, Fraction(15), 0, None),
    "megamind_20.mp4": (160, 118, 20, Fraction(24000, 1001), 0, None),
    "box_24.mp4": (160, 120, 24, Fraction(30000, 1001), 0, None),
    "with_audio_20.mp4": (160, 118, 20, Fraction(15), 0, "aac"),
    "rotated_90.mp4": (120, 160, 12, Fraction(15), 90, None),
}


@pytest.mark.parametrize("name", sorted(CLIPS))
def test_probe_clips(name):
    width, height, frames, rate, rotation, audio = CLIPS[name]
    info = video.probe(data(name))
    assert info.uri == data(name)
    assert (info.width, info.height) == (width, height)
    assert info.num_frames == frames and info.num_frames_exact  # MP4 sample table agrees with duration
    assert info.frame_rate == rate
    assert info.fps == pytest.approx(float(rate), abs=1e-9)
    assert info.duration_s == pytest.approx(frames / float(rate), abs=1e-3)
    assert info.rotation == rotation
    assert info.has_audio is (audio is not None)
    assert info.audio_codec == audio
    assert info.video_codec == "h264"
    assert "mp4" in info.container_format
    assert video.count_frames(data(name)) == frames


def test_probe_count_frames_flag():
    info = video.probe(data("megamind_20.mp4"), count_frames=True)
    assert info.num_frames == 20 and info.num_frames_exact


def test_probe_avi_header_is_an_estimate(tmp_path):
    # the cut AVI still carries the header of the full file (270 frames): not to be trusted
    info = video.probe(data("megamind_bugy_head.avi"))
    assert (info.width, info.height, info.video_codec) == (720, 528, "mpeg4")
    assert info.num_frames == 270 and not info.num_frames_exact
    assert info.frame_rate == 30


# ------------------------------------------------------------------------------------------------
# reading
# ------------------------------------------------------------------------------------------------


def test_read_all_frames(tree):
    frames, info = video.read_frames(data("tree_60.mp4"))
    assert frames.shape == (60, 120, 160, 3) and frames.dtype == np.uint8
    assert frames.flags.c_contiguous
    assert info.num_frames == 60 and info.num_frames_exact
    assert np.array_equal(frames, tree)
    # real content that changes over time, not a constant image
    assert frames.std() > 20
    assert mae(frames[0], frames[59]) > 5


def test_iter_frames_equals_read_frames(tree):
    it = list(video.iter_frames(data("tree_60.mp4")))
    assert len(it) == 60
    assert all(f.shape == (120, 160, 3) and f.dtype == np.uint8 for f in it)
    assert np.array_equal(np.stack(it), tree)

    sub = list(video.iter_frames(data("tree_60.mp4"), start=5, stop=50, step=7))
    picked, info = video.read_frames(data("tree_60.mp4"), range(5, 50, 7))
    assert len(sub) == len(range(5, 50, 7)) == len(picked)
    assert np.array_equal(np.stack(sub), picked)
    assert np.array_equal(picked, tree[5:50:7])
    assert info.num_frames == 60  # from the header, the stream was not decoded to the end


def test_read_frames_any_order_with_repeats(tree):
    idx = [7, 3, 3, 0, 59]
    frames, _ = video.read_frames(data("tree_60.mp4"), idx)
    assert frames.shape == (5, 120, 160, 3)
    assert np.array_equal(frames, tree[idx])
    frames, _ = video.read_frames(data("tree_60.mp4"), np.array([12]))
    assert np.array_equal(frames[0], tree[12])


def test_iter_frames_past_the_end_yields_nothing():
    assert list(video.iter_frames(data("tree_60.mp4"), start=60)) == []
    assert len(list(video.iter_frames(data("tree_60.mp4"), start=55, stop=1000))) == 5


def test_rotated_video_is_returned_upright(tree):
    frames, info = video.read_frames(data("rotated_90.mp4"))
    assert info.rotation == 90 and (info.width, info.height) == (120, 160)
    assert frames.shape == (12, 160, 120, 3)
    # the clip stores tree_60's first 12 frames; shown rotated 90 degrees clockwise
    upright = np.rot90(tree[:12], k=-1, axes=(1, 2))
    assert mae(frames, upright) < 4.0  # a second lossy encode of the same frames
    assert mae(frames, np.rot90(tree[:12], k=1, axes=(1, 2))) > 20  # the other direction is wrong
    first = next(video.iter_frames(data("rotated_90.mp4")))
    assert np.array_equal(first, frames[0])


def test_read_through_file_url_and_memory(tree, mem_root):
    frames, info = video.read_frames("file://" + data("tree_60.mp4"), range(10))
    assert np.array_equal(frames, tree[:10])
    uri = f"{mem_root}/clips/tree_60.mp4"
    fsspec.filesystem("memory").pipe_file(uri[len("memory://"):], open(data("tree_60.mp4"), "rb").read())
    assert video.probe(uri).num_frames == 60
    frames, info = video.read_frames(uri)
    assert np.array_equal(frames, tree) and info.uri == uri


def test_decoding_matches_golden_pyav_reader():
    # golden case_hier/input.mp4 is a lossless rgb24 H.264 clip decoded with PyAV by its authors
    golden = os.path.join(DATA, "golden", "case_hier")
    frames, info = video.read_frames(os.path.join(golden, "input.mp4"))
    assert np.array_equal(frames, np.load(os.path.join(golden, "input_frames.npy")))
    assert info.num_frames == 64 and info.frame_rate == 15


# ------------------------------------------------------------------------------------------------
# writing
# ------------------------------------------------------------------------------------------------


def test_h264_encoder_is_libx264():
    assert "libx264" in av.codecs_available
    assert video.h264_encoder() == "libx264"


@pytest.mark.parametrize(
    "fps, expected",
    [
        (29.97, Fraction(30000, 1001)),
        (23.976, Fraction(24000, 1001)),
        (59.94, Fraction(60000, 1001)),
        (15, Fraction(15)),
        (15.0, Fraction(15)),
        (14.999925, Fraction(15)),
        (12.5, Fraction(25, 2)),
        (Fraction(2997, 125), Fraction(2997, 125)),
        (np.float64(25.0), Fraction(25)),
    ],
)
def test_fps_to_fraction(fps, expected):
    assert video.fps_to_fraction(fps) == expected


@pytest.mark.parametrize("fps", [0, -1, float("nan"), float("inf"), "30", None, 5000])
def test_fps_rejected(fps):
    with pytest.raises(InputError, match="fps"):
        video.fps_to_fraction(fps)


def test_round_trip_local(tree, tmp_path):
    out = tmp_path / "new" / "sub" / "tree.mp4"  # parents do not exist yet
    video.write_video(str(out), tree, 15.0)
    assert sorted(os.listdir(out.parent)) == ["tree.mp4"]  # no temporary file left behind
    info = video.probe(str(out))
    assert (info.width, info.height, info.num_frames, info.frame_rate) == (160, 120, 60, Fraction(15))
    assert info.duration_s == pytest.approx(4.0, abs=1e-3)
    facts = stream_facts(str(out))
    assert facts["codec"] == "h264" and facts["pix_fmt"] == "yuv420p" and "mp4" in facts["format"]
    assert facts["n_audio"] == 0
    back, info2 = video.read_frames(str(out))
    assert back.shape == tree.shape
    assert mae(back, tree) < 2.5
    assert info2.num_frames == 60 and info2.num_frames_exact


def test_round_trip_memory_ntsc_iterable(tree, mem_root):
    src, _ = video.read_frames(data("box_24.mp4"))
    uri = f"{mem_root}/out/box.mp4"
    video.write_video(uri, (f for f in src), 29.97, crf=20, preset="fast")  # a generator, not an array
    assert fsspec.filesystem("memory").ls(f"{mem_root}/out", detail=False) == [uri[len("memory:/"):]]
    info = video.probe(uri)
    assert info.frame_rate == Fraction(30000, 1001) and info.num_frames == 24
    back, _ = video.read_frames(uri)
    assert back.shape == (24, 120, 160, 3)
    assert mae(back, src) < 3.0


def test_round_trip_s3(tree, s3_options):
    uri = "s3://bkt/outputs/tree.mp4"
    video.write_video(uri, tree[:20], 15, audio_source=data("with_audio_20.mp4"), storage_options=s3_options)
    fs, _ = storage.url_to_fs("s3://bkt", s3_options)
    assert fs.ls("bkt/outputs", detail=False) == ["bkt/outputs/tree.mp4"]
    info = video.probe(uri, s3_options)
    assert (info.num_frames, info.frame_rate, info.audio_codec) == (20, Fraction(15), "aac")
    back, _ = video.read_frames(uri, storage_options=s3_options)
    assert back.shape == (20, 120, 160, 3) and mae(back, tree[:20]) < 2.5
    with pytest.raises(Boom):
        video.write_video("s3://bkt/outputs/bad.mp4", failing_frames(tree, 5), 15, storage_options=s3_options)
    assert not storage.exists("s3://bkt/outputs/bad.mp4", s3_options)
    expect_video_error("s3://bkt/outputs/missing.mp4", "file not found", fn=lambda u: video.probe(u, s3_options))


def test_round_trip_exact_fraction(tmp_path):
    frames, info = video.read_frames(data("megamind_20.mp4"), range(6))
    out = str(tmp_path / "m.mp4")
    video.write_video(out, frames, Fraction(2997, 125))
    assert video.probe(out).frame_rate == Fraction(2997, 125)


def test_lower_crf_is_closer(tree, tmp_path):
    errors, sizes = {}, {}
    for crf in (0, 35):
        out = str(tmp_path / f"crf{crf}.mp4")
        video.write_video(out, tree[:10], 15, crf=crf, preset="ultrafast")
        errors[crf] = mae(video.read_frames(out)[0], tree[:10])
        sizes[crf] = os.path.getsize(out)
    # crf 0 is lossless H.264, what remains is the RGB -> yuv420p conversion
    assert errors[0] < 1.5 and errors[35] > 3 * errors[0]
    assert sizes[0] > 5 * sizes[35]


def test_overwrites_existing_file(tree, tmp_path):
    out = str(tmp_path / "x.mp4")
    video.write_video(out, tree[:4], 15)
    video.write_video(out, tree[:6], 15)
    assert video.probe(out).num_frames == 6


# ------------------------------------------------------------------------------------------------
# audio
# ------------------------------------------------------------------------------------------------


def test_audio_is_copied_unchanged(tmp_path):
    src = data("with_audio_20.mp4")
    frames, _ = video.read_frames(src)
    out = str(tmp_path / "a.mp4")
    video.write_video(out, frames, 15, audio_source=src)
    info = video.probe(out)
    assert info.has_audio and info.audio_codec == "aac"
    assert audio_duration(out) == pytest.approx(audio_duration(src), abs=0.03)
    assert audio_duration(out) == pytest.approx(4 / 3, abs=0.05)
    assert audio_packets(out) == audio_packets(src)  # remuxed, not re-encoded


def test_audio_from_audio_only_file(tmp_path):
    frames, _ = video.read_frames(data("tree_60.mp4"), range(20))
    out = str(tmp_path / "a.mp4")
    video.write_video(out, frames, 15, audio_source=data("audio_only.m4a"))
    assert video.probe(out).audio_codec == "aac"
    assert audio_packets(out) == audio_packets(data("audio_only.m4a"))


def test_audio_trimmed_to_video(tmp_path):
    frames, _ = video.read_frames(data("with_audio_20.mp4"), range(10))  # 10 frames = 0.667 s
    out = str(tmp_path / "a.mp4")
    video.write_video(out, frames, 15, audio_source=data("with_audio_20.mp4"))
    dur = audio_duration(out)
    assert 10 / 15 - 0.03 <= dur <= 10 / 15 + 1024 / 44100 + 1e-3
    out2 = str(tmp_path / "b.mp4")
    video.write_video(out2, frames, 15, audio_source=data("with_audio_20.mp4"), trim_audio=False)
    assert audio_duration(out2) == pytest.approx(4 / 3, abs=0.05)


def test_pcm_audio_is_transcoded_to_aac(tmp_path):
    wav = str(tmp_path / "tone.wav")
    rate = 22050
    samples = (np.sin(np.arange(rate) * 2 * np.pi * 300 / rate) * 8000).astype(np.int16)  # 1 s
    with av.open(wav, "w", format="wav") as c:
        s = c.add_stream("pcm_s16le", rate=rate, layout="mono")
        for i in range(0, rate, 2205):
            fr = av.AudioFrame.from_ndarray(samples[None, i : i + 2205], format="s16", layout="mono")
            fr.sample_rate, fr.pts = rate, i
            for p in s.encode(fr):
                c.mux(p)
        for p in s.encode(None):
            c.mux(p)
    frames, _ = video.read_frames(data("tree_60.mp4"), range(15))  # 1 s
    out = str(tmp_path / "t.mp4")
    video.write_video(out, frames, 15, audio_source=wav)
    assert stream_facts(out)["audio_codec"] == "aac"
    assert audio_duration(out) == pytest.approx(1.0, abs=0.1)
    with av.open(out) as c:
        pcm = np.concatenate([f.to_ndarray().reshape(-1) for f in c.decode(audio=0)])
    assert np.abs(pcm).max() > 0.1  # a tone, not silence


def test_audio_source_without_audio_gives_silent_video(tmp_path):
    frames, _ = video.read_frames(data("tree_60.mp4"), range(4))
    out = str(tmp_path / "s.mp4")
    video.write_video(out, frames, 15, audio_source=data("tree_60.mp4"))
    assert not video.probe(out).has_audio


def test_missing_audio_source_writes_nothing(tmp_path):
    frames, _ = video.read_frames(data("tree_60.mp4"), range(4))
    out = tmp_path / "s.mp4"
    missing = str(tmp_path / "nope.mp4")
    with pytest.raises(VideoError, match=re.escape(missing) + ".*audio source: file not found"):
        video.write_video(str(out), frames, 15, audio_source=missing)
    assert os.listdir(tmp_path) == []


# ------------------------------------------------------------------------------------------------
# atomic writes
# ------------------------------------------------------------------------------------------------


class Boom(RuntimeError):
    pass


def failing_frames(frames, fail_at):
    for i, f in enumerate(frames):
        if i == fail_at:
            raise Boom(f"generator failed at {i}")
        yield f


def test_failing_iterator_leaves_no_file(tree, tmp_path):
    out = tmp_path / "dir" / "out.mp4"
    with pytest.raises(Boom, match="failed at 30"):
        video.write_video(str(out), failing_frames(tree, 30), 15)
    assert not out.exists()
    assert os.listdir(out.parent) == []  # the temporary file was removed too


def test_failing_iterator_keeps_previous_file(tree, tmp_path):
    out = tmp_path / "out.mp4"
    video.write_video(str(out), tree[:5], 15)
    before = out.read_bytes()
    with pytest.raises(Boom):
        video.write_video(str(out), failing_frames(tree, 30), 15)
    assert out.read_bytes() == before
    assert os.listdir(tmp_path) == ["out.mp4"]


def test_failing_iterator_memory(tree, mem_root):
    uri = f"{mem_root}/out.mp4"
    with pytest.raises(Boom):
        video.write_video(uri, failing_frames(tree, 10), 15)
    assert not storage.exists(uri)


def test_bad_frame_midway_leaves_no_file(tree, tmp_path):
    out = tmp_path / "out.mp4"
    frames = list(tree[:5]) + [tree[5][:, :100]]
    with pytest.raises(InputError, match=r"frame 5 is 100x120 but frame 0 is 160x120"):
        video.write_video(str(out), frames, 15)
    assert os.listdir(tmp_path) == []


def test_storage_atomic_helpers(tmp_path, mem_root):
    local = tmp_path / "a" / "b.bin"
    storage.atomic_write_bytes(str(local), b"hello")
    assert local.read_bytes() == b"hello" and os.listdir(local.parent) == ["b.bin"]
    storage.atomic_write_bytes(f"{mem_root}/b.bin", b"world")
    with storage.open_uri(f"{mem_root}/b.bin") as f:
        assert f.read() == b"world"
    storage.atomic_upload(str(local), f"{mem_root}/c/d.bin")
    assert storage.size(f"{mem_root}/c/d.bin") == 5
    storage.atomic_upload(str(local), str(tmp_path / "copy.bin"))
    assert (tmp_path / "copy.bin").read_bytes() == b"hello"
    with pytest.raises(Boom):
        with storage.atomic_output(str(tmp_path / "never.bin")) as tmp:
            open(tmp, "wb").write(b"partial")
            raise Boom()
    with pytest.raises(Boom):
        with storage.atomic_output(f"{mem_root}/never.bin") as tmp:
            open(tmp, "wb").write(b"partial")
            raise Boom()
    assert not storage.exists(str(tmp_path / "never.bin")) and not storage.exists(f"{mem_root}/never.bin")
    assert sorted(os.listdir(tmp_path)) == ["a", "copy.bin"]
    assert storage.is_local("file://" + str(local)) and not storage.is_local(f"{mem_root}/b.bin")


# ------------------------------------------------------------------------------------------------
# bad inputs
# ------------------------------------------------------------------------------------------------


def expect_video_error(uri: str, reason: str, fn=video.probe):
    with pytest.raises(VideoError, match=re.escape(uri) + ": .*" + reason) as exc:
        fn(uri)
    assert exc.value.uri == uri and re.search(reason, exc.value.reason)
    return exc.value


def test_missing_file(tmp_path, mem_root):
    expect_video_error(str(tmp_path / "missing.mp4"), "file not found")
    expect_video_error(f"{mem_root}/missing.mp4", "file not found")
    expect_video_error(str(tmp_path / "missing.mp4"), "file not found", fn=video.read_frames)
    with pytest.raises(VideoError, match="file not found"):
        next(video.iter_frames(str(tmp_path / "missing.mp4")))


def test_permission_denied(monkeypatch, tmp_path):
    path = tmp_path / "locked.mp4"
    path.write_bytes(open(data("tree_60.mp4"), "rb").read())

    def deny(self, path, mode="rb", **kwargs):
        raise PermissionError(13, "Permission denied", path)

    monkeypatch.setattr(LocalFileSystem, "_open", deny)
    expect_video_error(str(path), "permission denied")


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root ignores file permissions")
def test_permission_denied_real(tmp_path):
    path = tmp_path / "locked.mp4"
    path.write_bytes(open(data("tree_60.mp4"), "rb").read())
    path.chmod(0)
    expect_video_error(str(path), "permission denied")


def test_empty_file(tmp_path):
    path = tmp_path / "empty.mp4"
    path.write_bytes(b"")
    expect_video_error(str(path), r"empty file \(0 bytes\)")


def test_directory(tmp_path):
    expect_video_error(str(tmp_path), "is a directory")


def test_not_a_video():
    expect_video_error(data("not_a_video.mp4"), "not a media file")
    expect_video_error(data("not_a_video.mp4"), "not a media file", fn=video.read_frames)


def test_audio_only():
    expect_video_error(data("audio_only.m4a"), r"no video stream \(it has only audio streams\)")


def test_zero_decodable_frames(tmp_path):
    path = str(tmp_path / "no_frames.avi")
    with av.open(path, "w", format="avi") as c:
        s = c.add_stream("mpeg4", rate=15)
        s.width, s.height, s.pix_fmt = 64, 64, "yuv420p"
        c.start_encoding()
    expect_video_error(path, "no decodable video frames")


@pytest.mark.parametrize(
    "name, max_good, reason",
    [
        # cut in the middle of a packet: the demuxer flags it as incomplete
        ("tree_60_truncated.mp4", 31, r"incomplete or corrupt data at byte \d+"),
        # noise written over the compressed data: the H.264 decoder rejects a packet
        ("tree_60_corrupt.mp4", 33, r"Invalid data found"),
        # cut cleanly after a packet: no decoder error, but fewer frames than the MP4 index lists
        ("tree_60_cut_at_packet.mp4", 31, r"the file holds only 31 of the 60 frames its index lists"),
        # a byte cut of Megamind_bugy.avi (mpeg4 in AVI): 12 whole packets, then a partial one
        ("megamind_bugy_head.avi", 12, r"incomplete or corrupt data at byte 57476"),
    ],
)
def test_damaged_video(name, max_good, reason, tree):
    uri = data(name)
    full = r"damaged or truncated video: decoding broke at frame (\d+) \(" + reason
    expect_video_error(uri, full, fn=video.read_frames)
    expect_video_error(uri, full, fn=video.count_frames)
    # probe only decodes the first frame: the header is still readable
    assert video.probe(uri).num_frames > max_good
    # iter_frames hands out the good frames, then fails naming the first frame it could not produce
    got = []
    with pytest.raises(VideoError, match=full) as exc:
        for f in video.iter_frames(uri):
            got.append(f)
    broke_at = int(re.search(r"broke at frame (\d+)", str(exc.value)).group(1))
    assert broke_at == len(got)
    # how many frames come out before the break depends on the decoder's reorder/thread delay
    assert 5 <= len(got) <= max_good
    assert f"frames 0..{len(got) - 1} decoded fine" in str(exc.value)
    if name.startswith("tree_60"):
        # same bytes as tree_60.mp4 up to the damage: the frames handed out are the right ones
        assert np.array_equal(np.stack(got), tree[: len(got)])
    # frames before the damage can still be read on their own
    frames, _ = video.read_frames(uri, range(5))
    assert frames.shape[0] == 5


def test_reason_has_no_raw_ffmpeg_noise():
    with pytest.raises(VideoError) as exc:
        video.read_frames(data("tree_60_corrupt.mp4"))
    assert "Errno" not in str(exc.value) and "avcodec_send_packet" not in str(exc.value)
    assert isinstance(exc.value.__cause__, av.FFmpegError)  # kept for debugging


# ------------------------------------------------------------------------------------------------
# bad options
# ------------------------------------------------------------------------------------------------


def test_odd_sizes_rejected(tmp_path):
    out = tmp_path / "odd.mp4"
    frames = np.zeros((3, 120, 161, 3), np.uint8)
    with pytest.raises(InputError, match=re.escape(str(out)) + r".*161x120.*even.*160x120 or 162x120"):
        video.write_video(str(out), frames, 15)
    with pytest.raises(InputError, match="even"):
        video.write_video(str(out), [np.zeros((121, 160, 3), np.uint8)], 15)
    assert not out.exists() and os.listdir(tmp_path) == []


@pytest.mark.parametrize(
    "frames, match",
    [
        (np.zeros((2, 64, 64, 3), np.float32), "dtype float32, expected uint8"),
        (np.zeros((2, 64, 64), np.uint8), r"expected \(T, H, W, 3\)"),
        (np.zeros((0, 64, 64, 3), np.uint8), "no frames to write"),
        ([], "no frames to write"),
        ([np.zeros((64, 64, 4), np.uint8)], r"expected \(H, W, 3\) RGB"),
        ([[1, 2, 3]], "expected a numpy array"),
    ],
)
def test_bad_frames_rejected(tmp_path, frames, match):
    out = tmp_path / "bad.mp4"
    with pytest.raises(InputError, match=match):
        video.write_video(str(out), frames, 15)
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize(
    "kwargs, match",
    [({"crf": 52}, "crf must be an integer in 0..51"), ({"crf": 1.5}, "crf"), ({"preset": "turbo"}, "preset 'turbo'")],
)
def test_bad_encoder_options(tmp_path, kwargs, match):
    with pytest.raises(InputError, match=match):
        video.write_video(str(tmp_path / "x.mp4"), np.zeros((1, 64, 64, 3), np.uint8), 15, **kwargs)


def test_bad_read_options():
    uri = data("tree_60.mp4")
    with pytest.raises(InputError, match=re.escape(uri) + r".*frame index 60 is out of range; the video has 60 frames"):
        video.read_frames(uri, [3, 60])
    with pytest.raises(InputError, match="negative"):
        video.read_frames(uri, [-1])
    with pytest.raises(InputError, match="empty"):
        video.read_frames(uri, [])
    with pytest.raises(InputError, match="integers"):
        video.read_frames(uri, [1.5])
    with pytest.raises(InputError, match="step >= 1"):
        next(video.iter_frames(uri, step=0))
    with pytest.raises(InputError, match="start >= 0"):
        next(video.iter_frames(uri, start=-2))
