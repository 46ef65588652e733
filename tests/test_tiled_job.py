"""The tiled mode through the Ray batch job, for the three tasks: (segment, unit) rows on the fine
actors give the pixels of the single-process TiledOutpaintPipeline bit for bit, and the joined video
has exactly its frame count."""

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


def test_tiled_inpaint_and_extend_rows_equal_the_single_process_run(ray_session, tmp_path):
    """An inpainting (holes in two opposite corners: two units per segment; a folder of mask images)
    and a backward extension run tiled at twice the canvas through the job as (segment, unit) rows: each segment's units assembled and
    finalized, in the task's piece order, give :meth:`TiledOutpaintPipeline.run_task`'s pixels bit
    for bit; the job writes both with exactly their frame counts and no unit files left behind."""
    import cv2

    from m3ddm_ray.distributed.segments import num_groups, tile_group
    from m3ddm_ray.models.loading import load_unet, load_vae
    from m3ddm_ray.tiled import TiledOutpaintPipeline, assemble_units, unit_pixels

    from test_job_tasks import write_mask_folder

    base, info = read_frames(DATA / "tree_60.mp4")
    path = tmp_path / "clip.mp4"
    write_video(path, np.stack([cv2.resize(f, (96, 64), interpolation=cv2.INTER_AREA) for f in base[:T]]),
                info.fps, crf=18, preset="veryfast")
    frames, info = read_frames(path)
    holes = np.zeros((T, 64, 96), np.uint8)  # two corners: two units of tiles
    holes[:, 2:10, 2:12] = 1
    holes[:, 54:62, 84:94] = 1
    masks = write_mask_folder(tmp_path / "masks", holes)
    short = tmp_path / "short.mp4"  # 24 frames extended backward by 7: 31 rows, two segments
    write_video(short, frames[:24], info.fps, crf=18, preset="veryfast")
    short_frames, _ = read_frames(short)
    cfg = tiny_cfg(strides=[3, 1])
    cfg["tiling"] = {"working_size": 2 * cfg["canvas_size"], "overlap": 32, "layout_strength": 0.6}
    settings = job_settings(cfg)
    uri = manifest(tmp_path, [
        {"video_uri": str(path), "clip_id": "hole", "task": "inpaint", "mask_uri": str(masks)},
        {"video_uri": str(short), "clip_id": "back", "task": "extend", "extend_frames": 7,
         "extend_direction": "backward"}], "tasks.jsonl")
    source = {"hole": frames, "back": short_frames}
    units: dict[str, dict[int, dict[int, tuple]]] = {}
    seg_clip: dict[tuple, tuple] = {}
    for row in diffusion_dataset(cfg, build_rows(cfg, uri, str(tmp_path / "eq"))).take_all():
        assert row["status"] == "pending", row.get("error")
        clip, state = pickle.loads(row["clip"]), pickle.loads(row["state"])
        assert clip.geom.canvas_size == 2 * cfg["canvas_size"] and row["num_segments"] == 2
        seg = int(row["segment"])
        out_rows = list(clip.plan.segments()[seg].output_frames)
        units.setdefault(row["clip_id"], {}).setdefault(seg, {})[tile_group(row)] = unit_pixels(clip, state, out_rows)
        seg_clip[row["clip_id"], seg] = (clip, out_rows, num_groups(row))
    assert sorted(units) == ["back", "hole"]
    assert [seg_clip["hole", seg][2] for seg in (0, 1)] == [2, 2] and seg_clip["back", 0][2] == 1
    pipe = TiledOutpaintPipeline(load_unet(cfg["model"], "fp32", "cpu"), load_vae(cfg["vae"], "fp32", "cpu"),
                                 settings)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as Ray actors run: compare at equal thread counts
    try:
        for cid, segs in units.items():
            pieces = {}
            for seg, parts in segs.items():
                clip, out_rows, n = seg_clip[cid, seg]
                assert sorted(parts) == list(range(n))
                gen = assemble_units(clip.known_canvases(out_rows), [parts[u] for u in range(n)])
                a, b = clip.task.source_range(out_rows[0], out_rows[-1] + 1, clip.num_frames)
                pieces[clip.task.piece_position(seg, 2)] = finalize_frames(clip, gen, settings, source[cid][a:b],
                                                                           out_rows).frames
            want = pipe.run_task(source[cid], info.fps, clip.task)
            got = np.concatenate([pieces[k] for k in sorted(pieces)])
            assert got.shape == want.shape == (T, 64, 96, 3), cid
            assert np.array_equal(got, want), cid
    finally:
        torch.set_num_threads(threads)
    result = run_job(cfg, uri, str(tmp_path / "out"))
    rows = {row["clip_id"]: row for row in result.table.to_pylist()}
    assert sorted(rows) == ["back", "hole"] and (rows["hole"]["frames"], rows["back"]["frames"]) == (T, 24)
    for row in rows.values():
        assert row["status"] == "ok", row["error"]
        assert probe(row["output_uri"], count_frames=True).num_frames == T  # the source's, or 24 + 7 new
    assert not list((tmp_path / "out").rglob("*.parts"))
