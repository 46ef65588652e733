"""The tiled mode through the Ray batch job: (segment, unit) rows on the fine actors give the pixels
of the single-process TiledOutpaintPipeline bit for bit, and the joined video has exactly T frames."""

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


def single_process(cfg, frames, fps, ratio):
    """:class:`TiledOutpaintPipeline`'s output for the job config ``cfg``, at one intra-op thread
    (as Ray actors run: compare at equal thread counts)."""
    from m3ddm_ray.models.loading import load_unet, load_vae
    from m3ddm_ray.tiled import TiledOutpaintPipeline

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        pipe = TiledOutpaintPipeline(load_unet(cfg["model"], "fp32", "cpu"), load_vae(cfg["vae"], "fp32", "cpu"),
                                     job_settings(cfg))
        return pipe.run_clip(frames, fps, ratio)[0]
    finally:
        torch.set_num_threads(threads)


def job_output_is(cfg, uri, out_dir, want):
    """Run the job on ``uri``: one ok row whose video has exactly T frames at ``want``'s size."""
    result = run_job(cfg, uri, str(out_dir))
    (row,) = result.table.to_pylist()
    assert row["status"] == "ok", row["error"]
    out = probe(row["output_uri"], count_frames=True)
    assert out.num_frames == row["frames"] == T
    assert (out.width, out.height) == (row["output_width"], row["output_height"]) == (want.shape[2], want.shape[1])


def test_tiled_job_equals_the_single_process_tiled_run(ray_session, tmp_path):
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
    want = single_process(cfg, frames, info.fps, "9:16")
    got = np.concatenate([pieces[0], pieces[1]])
    assert got.shape == want.shape and want.shape[0] == T
    assert np.array_equal(got, want)

    job_output_is(cfg, uri, tmp_path / "out", want)


def test_tiled_job_in_segment_and_unit_rows_equals_the_single_process_run(ray_session, tmp_path):
    """16:9 -> 1:1 at twice the canvas: the top and the bottom band are two units, so each of the two
    segments is two fine rows; a segment's units assembled give the pipeline's pixels bit for bit.
    (16:9 -> 9:16 is one unit: the square canvas generates the columns beside the 9:16 crop too, and
    they join the two bands.)"""
    import cv2

    from m3ddm_ray.tiled import assemble_units, unit_pixels

    base, info = read_frames(DATA / "tree_60.mp4")
    path = tmp_path / "wide.mp4"
    wide = np.stack([cv2.resize(f, (160, 90), interpolation=cv2.INTER_AREA) for f in base[:T]])
    write_video(path, wide, info.fps, crf=18, preset="veryfast")
    frames, info = read_frames(path)
    cfg = tiny_cfg(ratios=["1:1"], strides=[3, 1], output_size="source")
    cfg["tiling"] = {"working_size": 2 * cfg["canvas_size"], "overlap": 32, "layout_strength": 0.6}
    settings = job_settings(cfg)
    uri = manifest(tmp_path, [{"video_uri": str(path), "clip_id": "units"}], "units.jsonl")
    rows = build_rows(cfg, uri, str(tmp_path / "eq"))
    units: dict[int, dict[int, tuple]] = {}
    work = {}
    for row in diffusion_dataset(cfg, rows).take_all():
        assert row["status"] == "pending", row.get("error")
        assert (row["num_segments"], row["num_groups"]) == (2, 2)
        clip, state = pickle.loads(row["clip"]), pickle.loads(row["state"])
        seg = int(row["segment"])
        out_rows = list(clip.plan.segments()[seg].output_frames)
        units.setdefault(seg, {})[int(row["tile_group"])] = unit_pixels(clip, state, out_rows)
        work[seg] = (clip, out_rows)
    assert {s: sorted(u) for s, u in units.items()} == {0: [0, 1], 1: [0, 1]}
    assert [units[0][u][0] for u in (0, 1)] == [(0, 64, 0, 128), (64, 128, 0, 128)]  # pixel boxes
    pieces = {}
    for seg, (clip, out_rows) in work.items():
        gen = assemble_units(clip.known_canvases(out_rows), [units[seg][u] for u in (0, 1)])
        src = frames[out_rows[0]:out_rows[-1] + 1]
        pieces[seg] = finalize_frames(clip, gen, settings, src, out_rows).frames
    want = single_process(cfg, frames, info.fps, "1:1")
    got = np.concatenate([pieces[0], pieces[1]])
    assert got.shape == want.shape and want.shape[0] == T
    assert np.array_equal(got, want)

    job_output_is(cfg, uri, tmp_path / "out", want)
    assert (tmp_path / "out").is_dir() and not list((tmp_path / "out").rglob("*.parts"))  # units' pixels deleted
