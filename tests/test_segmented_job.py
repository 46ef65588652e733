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


def test_segmented_ray_run_equals_the_whole_clip_single_process_run(ray_session, long_clips):
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
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # Ray actors run one intra-op thread; compare at equal thread counts
    try:
        # fresh models: the session's share per-UNet caches (zero-context tokens) that an earlier
        # test may have filled at another thread count, which rounds differently
        from m3ddm_ray.models.loading import load_unet, load_vae

        pipe = OutpaintPipeline(load_unet(cfg["model"], "fp32", "cpu"), load_vae(cfg["vae"], "fp32", "cpu"),
                                job_settings(cfg))
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


def _logs_segments_and_dies_once(marker: Path, log: Path):
    """A FineStage that appends ``<segment>`` to ``log`` after each segment it finishes, and whose
    first finish of segment 1 kills its own process (once per marker). Defined locally so Ray
    pickles it by value into the actors; the production stage has no fault hook."""
    import os

    from m3ddm_ray.distributed import stages

    class LogsAndDies(stages.FineStage):
        def run_oom_safe(self, row):
            row = super().run_oom_safe(row)
            fd = os.open(str(log), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            os.write(fd, f"{row['segment']}\n".encode())
            os.close(fd)
            if int(row["segment"]) == 1:
                try:
                    os.close(os.open(str(marker), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
                except FileExistsError:
                    return row
                os._exit(1)
            return row

    return LogsAndDies


def test_fine_actor_killed_mid_segment_reruns_only_that_segment(ray_session, long_clips, monkeypatch):
    from m3ddm_ray.distributed import job

    paths, tmp = long_clips
    marker, log = tmp / "killed", tmp / "segments.log"
    cfg = tiny_cfg(ratios=["9:16"])
    monkeypatch.setattr(job, "FineStage", _logs_segments_and_dies_once(marker, log))
    uri = manifest(tmp, [{"video_uri": str(paths[152]), "clip_id": "k"}], "kill.jsonl")
    result = run_job(cfg, uri, str(tmp / "killed_out"))
    assert marker.exists(), "the fault was not injected"
    runs = sorted(int(x) for x in log.read_text().split())
    assert runs == [0, 1, 1, 2]  # the killed segment ran again, the others once
    (row,) = result.table.to_pylist()  # the output's row ends once
    assert row["status"] == "ok", row["error"]
    assert probe(row["output_uri"], count_frames=True).num_frames == 152


def test_a_long_clip_keeps_two_fine_actors_busy(ray_session, long_clips):
    paths, tmp = long_clips
    cfg = tiny_cfg(ratios=["9:16"])
    cfg["stages"]["fine"]["num_actors"] = 2  # prepare / finalize get the remaining CPUs (auto)
    uri = manifest(tmp, [{"video_uri": str(paths[301]), "clip_id": "busy"}], "busy.jsonl")
    result = run_job(cfg, uri, str(tmp / "busy_out"))
    (row,) = result.table.to_pylist()
    assert row["status"] == "ok", row["error"]
    (note,) = [n for n in result.notes if n.startswith("fine actors busy: ")]
    busy = [float(part.rsplit(" ", 2)[1]) for part in note[len("fine actors busy: "):].split(", ")]
    assert len(busy) == 2 and min(busy) > 0  # the 4 segments of one video ran on both actors
    assert note in result.summary()
