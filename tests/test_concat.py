"""Joining encoded pieces losslessly (m3ddm_ray.video.concat_videos)."""

from __future__ import annotations

import av
import numpy as np
import pytest

from m3ddm_ray.errors import InputError, VideoError
from m3ddm_ray.video import concat_videos, probe, read_frames, write_video

from conftest import DATA


@pytest.fixture(scope="module")
def pieces(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("pieces")
    frames, info = read_frames(DATA / "tree_60.mp4")
    frames = np.ascontiguousarray(frames[:, :120, :160])
    paths = []
    for k, (lo, hi) in enumerate([(0, 25), (25, 58), (58, 60)]):  # a 2-frame piece has no B-frames
        p = str(tmp / f"piece{k}.mp4")
        write_video(p, frames[lo:hi], info.fps, crf=18, preset="veryfast")
        paths.append(p)
    return paths, info, tmp


def test_joined_video_has_every_frame_of_every_piece_bit_for_bit(pieces):
    paths, info, tmp = pieces
    out = str(tmp / "joined.mp4")
    assert concat_videos(paths, out) == 60
    joined, jinfo = read_frames(out)
    expected = np.concatenate([read_frames(p)[0] for p in paths])
    assert joined.shape == expected.shape == (60, 120, 160, 3)
    assert np.array_equal(joined, expected)  # packets copied: no re-encode
    assert probe(out, count_frames=True).num_frames == 60
    assert jinfo.fps == pytest.approx(info.fps)


def test_audio_is_muxed_once_over_the_joined_video(pieces):
    paths, info, tmp = pieces
    out = str(tmp / "joined_audio.mp4")
    concat_videos(paths, out, audio_source=str(DATA / "with_audio_20.mp4"))
    with av.open(out) as c:
        assert len(c.streams.audio) == 1 and len(c.streams.video) == 1
        audio_s = float(sum(p.duration or 0 for p in c.demux(c.streams.audio[0])) * c.streams.audio[0].time_base)
    src = probe(DATA / "with_audio_20.mp4")
    assert 0 < audio_s <= max(60 / info.fps, src.duration_s) + 0.1
    assert read_frames(out)[0].shape[0] == 60


def test_mismatched_or_missing_pieces_are_refused_and_nothing_is_written(pieces, tmp_path):
    paths, info, _ = pieces
    other = str(tmp_path / "other.mp4")
    write_video(other, np.zeros((5, 64, 64, 3), np.uint8), info.fps, preset="veryfast")
    with pytest.raises(VideoError, match="piece 1 is 64x64"):
        concat_videos([paths[0], other], str(tmp_path / "bad.mp4"))
    assert not (tmp_path / "bad.mp4").exists()
    with pytest.raises(InputError, match="no pieces"):
        concat_videos([], str(tmp_path / "none.mp4"))
    with pytest.raises(VideoError):
        concat_videos([str(tmp_path / "missing.mp4")], str(tmp_path / "m.mp4"))
