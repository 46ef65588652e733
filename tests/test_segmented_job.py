"""Clips split into independent segments through the Ray job: same pixels as the whole-clip
single-process run, pieces joined into one video with exactly T frames, the fps and the audio."""

from __future__ import annotations

import pickle
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from m3ddm_ray.distributed.config import job_settings
from m3ddm_ray.distributed.job import build_rows, diffusion_dataset, run_job
from m3ddm_ray.pipeline import OutpaintPipeline, generated_array
from m3ddm_ray.plan import plan_windows
from m3ddm_ray.video import probe, read_frames, write_video

from conftest import DATA
from test_ray_job import manifest, tiny_cfg

pytestmark = pytest.mark.ray

LENGTHS = (60, 76, 151, 152, 226, 301)  # 152: the last window of the stride-1 pass is padded


@pytest.fixture(scope="module")
def long_clips(tmp_path_factory):
    """Videos of the lengths above, made from tree_60's frames played back and forth (15 fps)."""
    tmp = tmp_path_factory.mktemp("long")
    base, info = read_frames(DATA / "tree_60.mp4")
    bounce = np.concatenate([base, base[::-1]])
    out = {}
    for t in LENGTHS:
        path = tmp / f"clip_{t}.mp4"
        frames = np.stack([bounce[i % len(bounce)] for i in range(t)])
        audio = str(DATA / "with_audio_20.mp4") if t == 152 else None
        write_video(path, frames, info.fps, audio_source=audio, crf=18, preset="veryfast")
        out[t] = path
    return out, tmp


def test_segmented_ray_run_equals_the_whole_clip_single_process_run(ray_session, long_clips, tiny_unet, tiny_vae):
    paths, tmp = long_clips
    cfg = tiny_cfg(ratios=["9:16"])
    uri = manifest(tmp, [{"video_uri": str(paths[t]), "clip_id": f"c{t}"} for t in LENGTHS], "seg.jsonl")
    rows = build_rows(cfg, uri, str(tmp / "eq"))
    got: dict[str, dict[int, np.ndarray]] = {}
    segments_seen: dict[str, set[int]] = {}
    for row in diffusion_dataset(cfg, rows).take_all():
        assert row["status"] == "pending", row.get("error")
        state = pickle.loads(row["state"])
        got.setdefault(row["clip_id"], {}).update(state.generated)
        segments_seen.setdefault(row["clip_id"], set()).add(int(row["segment"]))
    pipe = OutpaintPipeline(tiny_unet, tiny_vae, job_settings(cfg))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # Ray actors run one intra-op thread; compare at equal thread counts
    try:
        for t in LENGTHS:
            frames, info = read_frames(paths[t])
            _, clip, state = pipe.run_clip(frames, info.fps, "9:16")
            n_seg = len(plan_windows(t, info.fps).segments())
            assert segments_seen[f"c{t}"] == set(range(n_seg))
            assert n_seg == (1 if t <= 76 else {151: 2, 152: 3, 226: 3, 301: 4}[t])
            ray_gen = np.stack([got[f"c{t}"][f] for f in range(t)])  # every frame made by exactly one segment
            assert sorted(got[f"c{t}"]) == list(range(t))
            assert np.array_equal(ray_gen, generated_array(clip, state)), f"T={t}"
    finally:
        torch.set_num_threads(threads)


def test_segmented_job_joins_pieces_into_one_video_with_t_frames_fps_and_audio(ray_session, long_clips):
    paths, tmp = long_clips
    cfg = tiny_cfg(ratios=["9:16"])
    uri = manifest(tmp, [{"video_uri": str(paths[152]), "clip_id": "long"}], "job.jsonl")
    result = run_job(cfg, uri, str(tmp / "out"))
    (row,) = result.table.to_pylist()
    assert row["status"] == "ok", row["error"]
    src = probe(paths[152], count_frames=True)
    info = probe(row["output_uri"], count_frames=True)
    assert info.num_frames == row["frames"] == 152
    assert info.fps == pytest.approx(src.fps)
    assert (info.width, info.height) == (row["output_width"], row["output_height"]) == (36, 64)
    with av.open(row["output_uri"]) as c:
        assert len(c.streams.audio) == 1  # muxed once, at the join
    assert not Path(row["output_uri"] + ".parts").exists()  # the pieces are gone
    assert np.isfinite(row["q_seam_strength"]) and row["seconds_unet"] > 0
    decoded, _ = read_frames(row["output_uri"])
    assert decoded.shape == (152, 64, 36, 3)
