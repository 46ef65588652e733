"""The tiled mode through the Ray batch job: (segment) units on the fine actors give the pixels of
the single-process TiledOutpaintPipeline bit for bit, and the joined video has exactly T frames."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from m3ddm_ray.distributed.config import job_settings
from m3ddm_ray.distributed.job import build_rows, diffusion_dataset, run_job
from m3ddm_ray.pipeline import finalize_frames, generated_array
from m3ddm_ray.video import probe, read_frames, write_video

from conftest import DATA
from test_ray_job import manifest, tiny_cfg

pytestmark = pytest.mark.ray

T = 31  # strides [3, 1]: one keyframe window, two segments


def test_tiled_job_equals_the_single_process_tiled_run(ray_session, tmp_path):
    from m3ddm_ray.models.loading import load_unet, load_vae
    from m3ddm_ray.tiled import TiledOutpaintPipeline

    base, info = read_frames(DATA / "tree_60.mp4")
    path = tmp_path / "clip.mp4"
    write_video(path, base[:T], info.fps, crf=18, preset="veryfast")
    frames, info = read_frames(path)  # the decoded frames the job reads
    cfg = tiny_cfg(ratios=["9:16"], strides=[3, 1], output_size="source")
    cfg["tiling"] = {"working_size": 2 * cfg["canvas_size"], "overlap": 32, "layout_strength": 0.6}
    settings = job_settings(cfg)
    uri = manifest(tmp_path, [{"video_uri": str(path), "clip_id": "tiled"}], "tiled.jsonl")
    rows = build_rows(cfg, uri, str(tmp_path / "eq"))
    pieces = {}
    for row in diffusion_dataset(cfg, rows).take_all():
        assert row["status"] == "pending", row.get("error")
        clip, state = pickle.loads(row["clip"]), pickle.loads(row["state"])
        assert clip.geom.canvas_size == 2 * cfg["canvas_size"]  # the segment's working clip
        out_rows = list(clip.plan.segments()[int(row["segment"])].output_frames)
        src = frames[out_rows[0]:out_rows[-1] + 1]
        pieces[int(row["segment"])] = finalize_frames(clip, generated_array(clip, state, out_rows), settings, src,
                                                      out_rows).frames  # what finalize encodes
    assert sorted(pieces) == [0, 1]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # Ray actors run one intra-op thread; compare at equal thread counts
    try:
        pipe = TiledOutpaintPipeline(load_unet(cfg["model"], "fp32", "cpu"), load_vae(cfg["vae"], "fp32", "cpu"),
                                     settings)
        want, _, _ = pipe.run_clip(frames, info.fps, "9:16")
    finally:
        torch.set_num_threads(threads)
    got = np.concatenate([pieces[0], pieces[1]])
    assert got.shape == want.shape and want.shape[0] == T
    assert np.array_equal(got, want)

    result = run_job(cfg, uri, str(tmp_path / "out"))
    (row,) = result.table.to_pylist()
    assert row["status"] == "ok", row["error"]
    out = probe(row["output_uri"], count_frames=True)
    assert out.num_frames == row["frames"] == T
    assert (out.width, out.height) == (row["output_width"], row["output_height"]) == (want.shape[2], want.shape[1])
