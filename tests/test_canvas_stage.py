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
    from m3ddm_ray.distributed.stages import FineStage, _batch, _rows

    (out,) = _rows(FineStage(cfg, models=(tiny_unet, tiny_vae))(_batch([dict(seg, video_uri=str(short))])))
    assert out["status"] == "error" and out["error"].startswith(f"fine: {short}")
    assert "the video ends before frame 150" in out["error"] and out["clip"] == b""
