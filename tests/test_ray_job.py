"""The Ray Data batch job with the tiny model on an embedded local Ray (issue: the main job)."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from m3ddm_ray import geometry
from m3ddm_ray.distributed.config import job_settings, load_config
from m3ddm_ray.distributed.job import build_rows, diffusion_dataset, run_job
from m3ddm_ray.distributed.manifest import write_manifest, validate_manifest
from m3ddm_ray.pipeline import OutpaintPipeline, generated_array
from m3ddm_ray.video import probe, read_frames

from conftest import DATA

pytestmark = pytest.mark.ray

CLIPS = [("tree", "tree_60.mp4"), ("megamind", "megamind_20.mp4"), ("box", "box_24.mp4")]


def tiny_cfg(**overrides):
    cfg = load_config(DATA.parent.parent / "configs" / "tiny-cpu.yaml")
    cfg["model"] = str(DATA / "golden" / "models" / "unet")
    cfg["vae"] = str(DATA / "golden" / "models" / "vae")
    cfg["sampler"]["steps"] = 2
    cfg.update(overrides)
    return cfg


def manifest(tmp_path, entries, name="manifest.jsonl"):
    rows = validate_manifest([dict(e) for e in entries])
    uri = str(tmp_path / name)
    write_manifest(rows, uri)
    return uri


@pytest.fixture(scope="module")
def sample_run(ray_session, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("job")
    uri = manifest(tmp, [{"video_uri": str(DATA / f), "clip_id": c} for c, f in CLIPS])
    cfg = tiny_cfg()
    return cfg, run_job(cfg, uri, str(tmp / "out")), tmp


def test_every_output_decodes_with_t_frames_at_the_right_size(sample_run):
    cfg, result, _ = sample_run
    table = pq.read_table(result.results_uri)
    assert table.num_rows == len(CLIPS) * 2  # exactly one row per (clip, ratio)
    keys = sorted(zip(table.column("clip_id").to_pylist(), table.column("ratio").to_pylist()))
    assert keys == sorted((c, r) for c, _ in CLIPS for r in ("1:1", "9:16"))
    for row in table.to_pylist():
        assert row["status"] == "ok", row["error"]
        src = probe(DATA / dict(CLIPS)[row["clip_id"]], count_frames=True)
        info = probe(row["output_uri"], count_frames=True)
        assert info.num_frames == src.num_frames == row["frames"]
        assert abs(info.fps - src.fps) < 1e-3
        geom = geometry.plan_canvas(src.height, src.width, row["ratio"], cfg["canvas_size"])
        y0, y1, x0, x1 = geometry.crop_box(geom, row["ratio"])
        assert (info.height, info.width) == (y1 - y0, x1 - x0) == (row["output_height"], row["output_width"])
        assert row["seconds_coarse"] >= 0 and row["seconds_fine"] > 0 and row["seconds_unet"] > 0
        assert np.isfinite(row["q_seam_strength"]) and row["config_hash"] in row["output_uri"]
    # the 60-frame clip runs both stages: the coarse stage ran a keyframe window
    tree = [r for r in table.to_pylist() if r["clip_id"] == "tree"][0]
    assert tree["seconds_coarse"] > 0.05


def test_ray_stages_equal_single_process_pipeline(sample_run, tiny_unet, tiny_vae):
    cfg, _, tmp = sample_run
    uri = manifest(tmp, [{"video_uri": str(DATA / "tree_60.mp4"), "clip_id": "tree"}], "one.jsonl")
    rows = build_rows(cfg, uri, str(tmp / "eq"))
    got = {r["ratio"]: r for r in diffusion_dataset(cfg, rows).take_all()}
    frames, info = read_frames(DATA / "tree_60.mp4")
    pipe = OutpaintPipeline(tiny_unet, tiny_vae, job_settings(cfg))
    # Ray gives each 1-CPU actor one intra-op thread; CPU kernels round differently with more threads
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        refs = {ratio: pipe.run_clip(frames, info.fps, ratio) for ratio in ("9:16", "1:1")}
    finally:
        torch.set_num_threads(threads)
    for ratio in ("9:16", "1:1"):
        row = got[ratio]
        assert row["status"] == "pending", row.get("error")
        clip, state = pickle.loads(row["clip"]), pickle.loads(row["state"])
        ray_gen = generated_array(clip, state)
        _, ref_clip, ref_state = refs[ratio]
        assert np.array_equal(clip.masked, ref_clip.masked)
        assert np.array_equal(ray_gen, generated_array(ref_clip, ref_state))
        assert sorted(state.stored) == sorted(ref_state.stored)


def test_bad_inputs_become_error_rows_and_nothing_is_dropped(ray_session, tmp_path):
    bad = tmp_path / "empty.mp4"
    bad.write_bytes(b"")
    entries = [
        {"video_uri": str(DATA / "megamind_20.mp4"), "clip_id": "good"},
        {"video_uri": str(tmp_path / "missing.mp4"), "clip_id": "missing"},
        {"video_uri": str(DATA / "tree_60_corrupt.mp4"), "clip_id": "damaged"},
        {"video_uri": str(bad), "clip_id": "empty"},
        {"video_uri": str(DATA / "not_a_video.mp4"), "clip_id": "text"},
    ]
    result = run_job(tiny_cfg(ratios=["9:16"]), manifest(tmp_path, entries), str(tmp_path / "out"))
    rows = {r["clip_id"]: r for r in result.table.to_pylist()}
    assert set(rows) == {e["clip_id"] for e in entries}
    assert rows["good"]["status"] == "ok"
    for cid in ("missing", "damaged", "empty", "text"):
        assert rows[cid]["status"] == "error"
        assert rows[cid]["error"].startswith("prepare: ")
        uri = next(e["video_uri"] for e in entries if e["clip_id"] == cid)
        assert uri in rows[cid]["error"], rows[cid]["error"]
        assert rows[cid]["output_uri"] is None
    assert "not found" in rows["missing"]["error"]


def test_passthrough_clip_is_unchanged(ray_session, tmp_path):
    uri = manifest(tmp_path, [{"video_uri": str(DATA / "tree_60.mp4"), "clip_id": "t", "target_ratios": "4:3"}])
    result = run_job(tiny_cfg(), uri, str(tmp_path / "out"))
    (row,) = result.table.to_pylist()
    assert row["status"] == "unchanged" and np.isnan(row["seconds_unet"])
    info = probe(row["output_uri"], count_frames=True)
    assert (info.width, info.height, info.num_frames) == (160, 120, 60)


def test_invalid_manifest_fails_before_any_work(tmp_path):
    from m3ddm_ray.errors import InputError

    path = tmp_path / "m.jsonl"
    path.write_text(json.dumps({"video_uri": "a.mp4", "clip_id": "x"}) + "\n"
                    + json.dumps({"video_uri": "b.mp4", "clip_id": "x"}) + "\n")
    with pytest.raises(InputError, match=r"row 2.*clip_id"):
        build_rows(tiny_cfg(), str(path), str(tmp_path / "out"))


def test_manifest_and_outputs_on_s3(ray_session, s3_options, tmp_path):
    import fsspec

    fs = fsspec.filesystem("s3", **s3_options)
    for _, f in CLIPS[:2]:
        fs.put_file(str(DATA / f), f"bkt/videos/{f}")
    entries = [{"video_uri": f"s3://bkt/videos/{f}", "clip_id": c} for c, f in CLIPS[:2]]
    local = manifest(tmp_path, entries, "m.parquet")
    fs.put_file(local, "bkt/manifests/m.parquet")
    cfg = tiny_cfg(ratios=["9:16"], storage_options=s3_options)
    result = run_job(cfg, "s3://bkt/manifests/m.parquet", "s3://bkt/out")
    assert result.results_uri.startswith("s3://bkt/out/results/")
    table = pq.read_table(fs.open(result.results_uri.removeprefix("s3://")))
    assert table.num_rows == 2 and set(table.column("status").to_pylist()) == {"ok"}
    for row in table.to_pylist():
        assert row["output_uri"].startswith("s3://bkt/out/")
        frames, info = read_frames(row["output_uri"], storage_options=s3_options)
        assert frames.shape[0] == row["frames"] and frames.shape[1:3] == (row["output_height"], row["output_width"])
    listed = fs.find("bkt/out")
    assert len([k for k in listed if k.endswith(".mp4")]) == 2
    assert not [k for k in listed if "tmp" in k.rsplit("/", 1)[-1] or k.endswith(".part")]  # no temp leftovers


def test_frame_folder_row_runs_through_the_main_job(ray_session, tmp_path):
    import cv2

    frames, _ = read_frames(DATA / "megamind_20.mp4")
    folder = tmp_path / "frames" / "seq"
    folder.mkdir(parents=True)
    for i, f in enumerate(frames):
        cv2.imwrite(str(folder / f"{i:05d}.png"), cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    (folder / "fps.txt").write_text("15\n")
    uri = manifest(tmp_path, [{"video_uri": str(folder), "clip_id": "seq", "target_ratios": "9:16"}])
    (row,) = run_job(tiny_cfg(), uri, str(tmp_path / "out")).table.to_pylist()
    assert row["status"] == "ok", row["error"]
    info = probe(row["output_uri"], count_frames=True)
    assert info.num_frames == 20 and abs(info.fps - 15) < 1e-6 and not info.has_audio
