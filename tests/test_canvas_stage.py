"""What travels between the stages of a segmented clip (no Ray): the prepare stage keeps only the
coarse windows' canvases, segment rows leave the coarse stage without canvases, and the fine actor
rebuilds each span's canvases by a range decode -- exactly those of the whole-clip prepare."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest

from m3ddm_ray.distributed.canvases import fill_canvases
from m3ddm_ray.distributed.job import build_rows, resolve_runtime
from m3ddm_ray.distributed.segments import split_row
from m3ddm_ray.distributed.stages import PrepareStage
from m3ddm_ray.pipeline import ClipState, canvas_frames, prepare_clip
from m3ddm_ray.video import read_frames, write_video

from conftest import DATA
from test_ray_job import manifest, tiny_cfg


@pytest.fixture(scope="module")
def clip_301(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("c301")
    base, info = read_frames(DATA / "tree_60.mp4")
    bounce = np.concatenate([base, base[::-1]])
    frames = np.stack([bounce[i % len(bounce)] for i in range(301)])
    path = tmp / "c301.mp4"
    write_video(path, frames, info.fps, preset="veryfast")  # x264 with key frames every 250 frames
    decoded, info = read_frames(path)
    return path, decoded, info, tmp


def test_segment_rows_carry_spans_not_the_clip_and_the_canvas_stage_rebuilds_them(clip_301):
    path, decoded, info, tmp = clip_301
    cfg, _ = resolve_runtime(tiny_cfg(ratios=["9:16"]), {"CPU": 4.0, "GPU": 0.0})
    rows = build_rows(cfg, manifest(tmp, [{"video_uri": str(path), "clip_id": "c"}], "m.jsonl"), str(tmp / "o"))
    (row,) = PrepareStage(cfg)([dict(r, clip=b"", state=b"") for r in rows])
    assert row["status"] == "pending", row.get("error")
    clip = pickle.loads(row["clip"])
    keep = canvas_frames(clip.plan)
    assert clip.num_frames == 301 and clip.frame_ids == keep and len(keep) == 21
    # the keyframe canvases are in a scratch file; the row holds the 16 global frames and small things
    assert clip.masked.shape[0] == 0 and len(row["clip"]) < clip.global_frames.nbytes + 20_000
    assert clip.canvas_file == f"{row['output_uri']}.parts/keyframe-canvases.u8"
    assert Path(clip.canvas_file).stat().st_size == 21 * 2 * 64 * 64 * 3
    points = json.loads(row["seek_points"])
    assert len(points) == 4
    for seg, p in zip(clip.plan.segments(), points):  # a seek starts at a key frame inside or before the span
        assert p["span"] is None or 0 < p["span"]["key_index"] <= seg.frame_range[0]
        assert p["out"] is None or 0 < p["out"]["key_index"] <= seg.output_frames[0]

    whole = prepare_clip(decoded, info.fps, "9:16", clip_settings(cfg))
    masked, inpainted = clip.canvases(list(range(21))[::-1])  # any order, one ranged read per run
    np.testing.assert_array_equal(masked, whole.masked[list(keep)][::-1])  # the keyframe canvases
    np.testing.assert_array_equal(inpainted, whole.inpainted[list(keep)][::-1])
    m5, _ = clip.canvases(clip.rows([45, 60, 150]))
    np.testing.assert_array_equal(m5, whole.masked[[45, 60, 150]])

    segs = split_row(row, clip, coarse_state(clip))
    assert [s["segment"] for s in segs] == [0, 1, 2, 3]
    for srow in segs:
        shell = pickle.loads(srow["clip"])
        assert shell.needs_canvases and shell.masked.shape[0] == 0 and shell.global_frames.shape[0] == 0
        assert len(srow["clip"]) < 20_000  # no pixels travel with a segment row
        out = dict(srow)
        built = fill_canvases(out, cfg, shell)
        lo, hi = clip.plan.segments()[srow["segment"]].frame_range
        assert built.first_frame == lo and built.masked.shape[0] == hi - lo and not built.needs_canvases
        np.testing.assert_array_equal(built.masked, whole.masked[lo:hi])
        np.testing.assert_array_equal(built.inpainted, whole.inpainted[lo:hi])
        assert out["seconds_canvases"] > 0


def coarse_state(clip) -> ClipState:
    """A stand-in for the coarse stage's state: a latent for every keyframe (values do not matter here)."""
    return ClipState(global_latents=np.zeros((16, 4, 8, 8), np.float32),
                     stored={f: np.zeros((4, 8, 8), np.float32) for f in canvas_frames(clip.plan)})


def clip_settings(cfg):
    from m3ddm_ray.distributed.config import job_settings

    return job_settings(cfg)


def test_a_span_that_cannot_be_read_is_an_error_row_naming_the_video(clip_301, tmp_path, tiny_unet, tiny_vae):
    path, decoded, info, tmp = clip_301
    cfg, _ = resolve_runtime(tiny_cfg(ratios=["9:16"]), {"CPU": 4.0, "GPU": 0.0})
    rows = build_rows(cfg, manifest(tmp, [{"video_uri": str(path), "clip_id": "c"}], "m2.jsonl"), str(tmp / "o"))
    (row,) = PrepareStage(cfg)([dict(r, clip=b"", state=b"") for r in rows])
    seg = split_row(row, pickle.loads(row["clip"]), coarse_state(pickle.loads(row["clip"])))[2]
    short = tmp_path / "short.mp4"
    write_video(short, decoded[:40], info.fps, preset="veryfast")  # the source changed under the job
    from m3ddm_ray.distributed.stages import FineStage, to_batch, to_rows

    (out,) = to_rows(FineStage(cfg, models=(tiny_unet, tiny_vae))(to_batch([dict(seg, video_uri=str(short))])))
    assert out["status"] == "error" and out["error"].startswith(f"fine: {short}")
    assert "the video ends before frame 150" in out["error"] and out["clip"] == b""


def test_with_the_coarse_latents_in_a_scratch_file_segment_rows_carry_no_latents(clip_301, tmp_path):
    from m3ddm_ray.coarse_file import write_coarse_latents
    from m3ddm_ray.distributed.segments import load_coarse_latents
    from m3ddm_ray.pipeline import segment_state

    path, decoded, info, tmp = clip_301
    cfg, _ = resolve_runtime(tiny_cfg(ratios=["9:16"]), {"CPU": 4.0, "GPU": 0.0})
    rows = build_rows(cfg, manifest(tmp, [{"video_uri": str(path), "clip_id": "c"}], "m3.jsonl"), str(tmp / "o3"))
    (row,) = PrepareStage(cfg)([dict(r, clip=b"", state=b"") for r in rows])
    clip = pickle.loads(row["clip"])
    rng = np.random.default_rng(0)
    state = ClipState(global_latents=rng.standard_normal((16, 4, 8, 8)).astype(np.float32),
                      stored={f: rng.standard_normal((4, 8, 8)).astype(np.float32) for f in canvas_frames(clip.plan)},
                      unet_seconds=3.5)
    uri = str(tmp_path / "scratch" / "coarse-latents.bin")
    n = write_coarse_latents(uri, state.global_latents, state.stored)
    assert n == Path(uri).stat().st_size > (16 + 21) * 4 * 8 * 8 * 4
    segs = split_row(row, clip, state, uri)
    assert [s["segment"] for s in segs] == [0, 1, 2, 3] and {s["coarse_file"] for s in segs} == {uri}
    for srow in segs:
        shell, sub = pickle.loads(srow["clip"]), pickle.loads(srow["state"])
        # no pixels, no mask, no latents: a few hundred bytes whatever the canvas size and the length
        assert shell.mask.size == 0 and sub.global_latents is None and sub.stored == {}
        assert len(srow["clip"]) + len(srow["state"]) < 3_000
        assert sub.unet_seconds == (3.5 if srow["segment"] == 0 else 0.0)
        seg = clip.plan.segments()[srow["segment"]]
        got = load_coarse_latents(srow, shell, sub)
        want = segment_state(state, seg)
        np.testing.assert_array_equal(got.global_latents, want.global_latents)
        assert sorted(got.stored) == sorted(want.stored) == list(seg.coarse_guides)
        for f in seg.coarse_guides:
            np.testing.assert_array_equal(got.stored[f], want.stored[f])
        built = fill_canvases(dict(srow), cfg, shell)  # the mask comes back with the canvases
        np.testing.assert_array_equal(built.mask, clip.mask)
    # a row without a file (a task clip, a short clip): None, or NaN once Ray's block made the column float
    for missing in (None, float("nan")):
        kept = ClipState(global_latents=state.global_latents)
        assert load_coarse_latents(dict(segs[1], coarse_file=missing), pickle.loads(segs[1]["clip"]), kept) is kept
        assert kept.stored == {}
    Path(uri).unlink()
    with pytest.raises(RuntimeError, match="coarse latents .* are gone"):
        load_coarse_latents(segs[1], pickle.loads(segs[1]["clip"]), pickle.loads(segs[1]["state"]))


def test_coarse_latents_file_round_trip_and_bad_files(tmp_path):
    from m3ddm_ray.coarse_file import read_segment_latents, write_coarse_latents

    rng = np.random.default_rng(1)
    # the VAE hands back the global latents in a non-C layout; the file keeps it (same strides,
    # so the fine actor's convolutions round exactly as the whole-clip run's)
    g = rng.standard_normal((4, 16, 4, 4)).astype(np.float32).transpose(1, 0, 2, 3)
    stored = {f: rng.standard_normal((4, 4, 4)).astype(np.float32) for f in (0, 15, 30, 45, 75, 90)}
    uri = str(tmp_path / "c.bin")
    write_coarse_latents(uri, g, stored)
    got_g, got = read_segment_latents(uri, [90, 15, 30, 75])  # any order; runs read together
    np.testing.assert_array_equal(got_g, g)
    assert got_g.strides == g.strides and not got_g.flags["C_CONTIGUOUS"]
    assert all(got[f].strides == stored[f].strides for f in got)
    assert sorted(got) == [15, 30, 75, 90]
    for f in got:
        np.testing.assert_array_equal(got[f], stored[f])
    with pytest.raises(RuntimeError, match=r"no coarse latent for frames \[60\]"):
        read_segment_latents(uri, [15, 60])
    data = Path(uri).read_bytes()
    Path(uri).write_bytes(data[:-10])
    with pytest.raises(RuntimeError, match="cut short while reading keyframes 75..90"):
        read_segment_latents(uri, [75, 90])
    Path(uri).write_bytes(b"not a file of ours")
    with pytest.raises(RuntimeError, match="not a coarse-latents file"):
        read_segment_latents(uri, [0])
    with pytest.raises(ValueError, match="frame 7 has shape"):
        write_coarse_latents(uri, g, {7: np.zeros((4, 8, 8), np.float32)})


def test_the_fine_stage_hands_finalize_the_masked_canvases_only_and_its_piece_is_exact(clip_301, tiny_unet, tiny_vae):
    import av

    from m3ddm_ray.distributed.finalize import FinalizeStage
    from m3ddm_ray.distributed.stages import FineStage, to_batch, to_rows
    from m3ddm_ray.pipeline import generated_array

    path, decoded, info, tmp = clip_301
    cfg, _ = resolve_runtime(tiny_cfg(ratios=["9:16"]), {"CPU": 4.0, "GPU": 0.0})
    rows = build_rows(cfg, manifest(tmp, [{"video_uri": str(path), "clip_id": "c"}], "m4.jsonl"), str(tmp / "o4"))
    (row,) = PrepareStage(cfg)([dict(r, clip=b"", state=b"") for r in rows])
    clip = pickle.loads(row["clip"])
    seg = split_row(row, clip, coarse_state(clip))[1]
    (out,) = to_rows(FineStage(cfg, models=(tiny_unet, tiny_vae))(to_batch([seg])))
    assert out["status"] == "pending", out.get("error")
    carried, state = pickle.loads(out["clip"]), pickle.loads(out["state"])
    segment = clip.plan.segments()[1]
    lo, hi = segment.frame_range
    # finalize pastes onto the masked canvases and never reads the inpainted ones: they stay behind
    assert carried.masked.shape[0] == hi - lo and carried.inpainted.shape[0] == 0
    whole = prepare_clip(decoded, info.fps, "9:16", clip_settings(cfg))
    np.testing.assert_array_equal(carried.masked, whole.masked[lo:hi])
    done = FinalizeStage(cfg)(dict(out))
    assert done["status"] == "pending" and done["piece_frames"] == len(segment.output_frames), done.get("error")
    with av.open(done["piece_uri"]) as c:
        n = sum(1 for _ in c.decode(video=0))
    assert n == len(segment.output_frames)
    assert sorted(state.generated) == list(segment.output_frames)
    assert generated_array(carried, state, segment.output_frames).shape[0] == n


def test_consecutive_runs_are_what_one_ranged_read_each_fetches():
    from m3ddm_ray.storage import consecutive_runs

    assert consecutive_runs([3, 4, 5, 9]) == [(0, 3), (3, 1)]
    assert consecutive_runs([0, 2, 4]) == [(0, 1), (1, 1), (2, 1)]
    assert consecutive_runs([7]) == [(0, 1)] and consecutive_runs([]) == []


def test_the_tiled_frame_reader_gives_spans_and_scattered_frames_of_one_decode_pass():
    from m3ddm_ray.distributed.canvases import frame_reader
    from m3ddm_ray.errors import InputError

    uri = str(DATA / "tree_60.mp4")
    every, _ = read_frames(uri)
    read = frame_reader({"video_uri": uri, "seek": None}, {})
    # keyframes in ascending chunks (one decode continued), a later chunk below the cursor (a new decode)
    for ids in ([0, 3, 6], [9, 30, 59], [1, 2, 7]):
        assert np.array_equal(read(ids), every[ids])
    span = read(range(10, 20))
    assert np.array_equal(span, every[10:20]) and read(range(10, 20)) is span  # a span is decoded once
    with pytest.raises(InputError, match="frame 70 asked, the video ended after 60 frames"):
        read([10, 70])
