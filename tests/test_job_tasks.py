"""Inpaint and extend rows in the batch job (issue 11 phase 2): the stages in this process give exactly
the single-process task outputs (whole clips and segmented ones, pieces in video order), and the Ray
job runs a manifest mixing the three tasks, with error rows for bad masks and resume."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import av
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from m3ddm_ray import video
from m3ddm_ray.pipeline import run_extend, run_inpaint
from m3ddm_ray.task import inpaint_masks
from m3ddm_ray.distributed.config import config_hash, job_settings
from m3ddm_ray.distributed.finalize import FinalizeStage
from m3ddm_ray.distributed.job import build_rows, conform_row, resolve_runtime, run_job
from m3ddm_ray.distributed.join import assemble
from m3ddm_ray.distributed.results import RESULT_COLUMNS, RESULT_SCHEMA
from m3ddm_ray.distributed.stages import CoarseStage, FineStage, PrepareStage, to_batch, to_rows, result_row, row_task
from m3ddm_ray.pipeline import Outpainter

from conftest import DATA
from test_ray_job import manifest, tiny_cfg

AUDIO_20 = DATA / "with_audio_20.mp4"  # 20 frames, 160x118, 15 fps, AAC


def square_masks(t: int, h: int, w: int) -> np.ndarray:
    """A 20x24 square sliding right 2 px per frame: uint8 (T, H, W) 0/1."""
    m = np.zeros((t, h, w), np.uint8)
    for i in range(t):
        x = (10 + 2 * i) % (w - 30)
        m[i, 30:50, x:x + 24] = 1
    return m


def write_mask_folder(path: Path, masks: np.ndarray) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    for i, m in enumerate(masks):
        Image.fromarray(m * 255).save(path / f"{i:05d}.png")
    return path


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """``with_audio_20`` and an 80-frame clip with audio (2 segments at 80 frames), masks for both."""
    tmp = tmp_path_factory.mktemp("tasks")
    base, info = video.read_frames(DATA / "tree_60.mp4")
    bounce = np.concatenate([base, base[::-1]])
    long = tmp / "c80.mp4"
    video.write_video(long, np.stack([bounce[i % len(bounce)] for i in range(80)]), info.fps,
                      audio_source=str(AUDIO_20), preset="veryfast")
    long70 = tmp / "c70.mp4"  # extended by 10 -> 80 frames, 2 segments
    video.write_video(long70, np.stack([bounce[i % len(bounce)] for i in range(70)]), info.fps,
                      audio_source=str(AUDIO_20), preset="veryfast")
    return {"tmp": tmp, "long": long, "long70": long70,
            "masks20": write_mask_folder(tmp / "masks20", square_masks(20, 118, 160)),
            "masks80": write_mask_folder(tmp / "masks80", square_masks(80, 120, 160))}


class Writes:
    """Spy on ``video.write_video``: the frames every output / piece was encoded from, by URI."""

    def __init__(self, monkeypatch):
        self.frames: dict[str, np.ndarray] = {}
        real = video.write_video

        def spy(uri, frames, fps, **kw):
            self.frames[str(uri)] = np.array(frames)
            return real(uri, frames, fps, **kw)

        monkeypatch.setattr(video, "write_video", spy)


def run_stages(cfg, rows, models, streamed: bool = False) -> list[dict]:
    """prepare -> coarse -> fine (one row per segment) -> finalize -> join, in this process.
    ``streamed``: the clip must leave prepare without canvases (keyframes and masks in its canvas
    file) and reach the fine actors as shells; else with all its canvases."""
    rows = PrepareStage(cfg)([dict(r, clip=b"", state=b"") for r in rows])
    assert all(r["status"] == "pending" for r in rows), [r.get("error") for r in rows]
    prepared = pickle.loads(rows[0]["clip"])
    assert (prepared.canvas_file is not None) == streamed
    assert prepared.masked.shape[0] == (0 if streamed else prepared.num_frames)
    if streamed:  # the keyframes' canvases and masks are in the file, and nothing else is held
        assert len(prepared.frame_ids) < prepared.num_frames and prepared.frame_masks.shape[0] == 0
        assert Path(prepared.canvas_file).stat().st_size == len(prepared.frame_ids) * 7 * 64 * 64
    segs = to_rows(CoarseStage(cfg, models=models)(to_batch(rows)))
    shells = [pickle.loads(s["clip"]) for s in segs]
    assert all(c.needs_canvases for c in shells) == streamed
    if streamed:
        assert all(isinstance(s["coarse_file"], str) and len(s["clip"]) < 100_000 for s in segs)
    done = [to_rows(FineStage(cfg, models=models)(to_batch([s])))[0] for s in segs]
    finals = [FinalizeStage(cfg)(dict(r)) for r in done]
    if len(finals) > 1:
        return [assemble(finals, cfg)]
    return finals


def stage_cfg():
    cfg, _ = resolve_runtime(tiny_cfg(ratios=["9:16"]), {"CPU": 4.0, "GPU": 0.0})
    return cfg


def reference(cfg, models):
    return Outpainter(*models, job_settings(cfg))


# ------------------------------------------------------------------------------ rows, names, hashes
def test_task_rows_are_one_per_clip_named_by_task_and_hashed_with_their_inputs(clips):
    tmp = clips["tmp"]
    cfg = tiny_cfg(ratios=["9:16", "1:1"])
    uri = manifest(tmp, [
        {"video_uri": str(AUDIO_20), "clip_id": "o"},
        {"video_uri": str(AUDIO_20), "clip_id": "i", "task": "inpaint", "mask_uri": str(clips["masks20"])},
        {"video_uri": str(AUDIO_20), "clip_id": "i2", "task": "inpaint", "mask_uri": str(clips["masks20"]),
         "mask_dilate": 3},
        {"video_uri": str(AUDIO_20), "clip_id": "e", "task": "extend", "extend_frames": 5},
        {"video_uri": str(AUDIO_20), "clip_id": "e2", "task": "extend", "extend_frames": 5,
         "extend_direction": "backward"},
    ], "names.jsonl")
    rows = build_rows(cfg, uri, str(tmp / "names"))
    assert [(r["clip_id"], r["ratio"], r["task"]) for r in rows] == [
        ("o", "9:16", "outpaint"), ("o", "1:1", "outpaint"), ("i", None, "inpaint"),
        ("i2", None, "inpaint"), ("e", None, "extend"), ("e2", None, "extend")]
    by = {r["clip_id"]: r for r in rows if r["task"] != "outpaint"}
    assert by["i"]["output_uri"] == f"{tmp}/names/i/i_inpaint_{by['i']['config_hash']}.mp4"  # named by the task
    assert by["e2"]["output_uri"] == f"{tmp}/names/e2/e2_extend_{by['e2']['config_hash']}.mp4"
    assert json.loads(by["i2"]["task_options"]) == {"task": "inpaint", "mask_uri": str(clips["masks20"]),
                                                    "dilate": 3}
    assert by["i2"]["mask_uri"] == str(clips["masks20"]) and by["e"]["mask_uri"] is None
    assert json.loads(by["e2"]["task_options"]) == {"task": "extend", "frames": 5, "direction": "backward"}
    # the task inputs are in the hash; outpaint hashes are what they were without tasks
    hashes = {r["config_hash"] for r in rows if r["task"] != "outpaint"}
    assert len(hashes) == 4
    outpaint = {r["config_hash"] for r in rows if r["task"] == "outpaint"}
    assert outpaint == {config_hash(cfg, job_settings(cfg))} and not outpaint & hashes


def test_result_columns_name_the_task_and_the_mask_source():
    for col in ("task", "task_options", "mask_uri", "output_frames"):
        assert col in RESULT_COLUMNS


def sample_tasks_manifest(tmp: Path) -> str:
    """``tests/data/tasks_manifest.jsonl`` (an outpaint, an inpaint and an extend row; paths relative
    to the repository) with absolute paths."""
    entries = [json.loads(line) for line in (DATA / "tasks_manifest.jsonl").read_text().splitlines() if line.strip()]
    for e in entries:
        for key in ("video_uri", "mask_uri"):
            if key in e:
                e[key] = str(DATA.parent.parent / e[key])
    return manifest(tmp, entries, "sample_tasks.jsonl")


def write_older_table(cfg, rows, path: Path) -> None:
    """A result table as older runs wrote it: ``ok`` rows whose ``ratio`` holds the task name of an
    inpaint / extend row."""
    old = [dict(result_row(dict(r, status="ok"), cfg), ratio=r["ratio"] or r["task"]) for r in rows]
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist([conform_row(r) for r in old], schema=RESULT_SCHEMA), path)


def test_job_table_holds_task_and_ratio_and_a_rerun_skips_the_rows_of_an_older_table(tmp_path, monkeypatch):
    import ray

    from m3ddm_ray.distributed import job
    from m3ddm_ray.models import loading

    cfg = tiny_cfg(ratios=["9:16"])
    out = tmp_path / "out"
    uri = sample_tasks_manifest(tmp_path)
    rows = build_rows(cfg, uri, str(out))
    for r in rows:  # the earlier run's outputs
        Path(r["output_uri"]).parent.mkdir(parents=True, exist_ok=True)
        Path(r["output_uri"]).write_bytes(b"made earlier")
    older = out / "results" / "results-20250101T000000.000000Z-000000.parquet"
    write_older_table(cfg, rows, older)
    assert pq.read_table(older).column("ratio").to_pylist() == ["9:16", "inpaint", "extend"]

    def boom(*a, **k):
        raise AssertionError("a row of the older table was computed again")

    for target, name in ((job, "init_ray"), (ray, "init"), (loading, "load_unet"), (loading, "load_vae")):
        monkeypatch.setattr(target, name, boom)
    for run in range(2):  # the second run reads both tables (its skipped rows repeat the older verdict)
        result = run_job(cfg, uri, str(out))
        assert result.counts() == {"skipped": 3}, run
        table = pq.read_table(result.results_uri).to_pylist()
        assert [(r["clip_id"], r["task"], r["ratio"]) for r in table] == [
            ("megamind", "outpaint", "9:16"), ("no_logo", "inpaint", None), ("tree_longer", "extend", None)]
        assert [r["output_uri"] for r in table] == [r["output_uri"] for r in rows]  # the names did not change
        assert [Path(r["output_uri"]).name for r in table] == [
            f"megamind_9x16_{rows[0]['config_hash']}.mp4", f"no_logo_inpaint_{rows[1]['config_hash']}.mp4",
            f"tree_longer_extend_{rows[2]['config_hash']}.mp4"]
        assert {r["previous_result"] for r in table} == {str(older)}
        assert all(Path(r["output_uri"]).read_bytes() == b"made earlier" for r in table)


# ------------------------------------------------------------------------------ exact pixels, in process
def test_job_stages_inpaint_exactly_as_the_single_process_run(clips, monkeypatch, tiny_unet, tiny_vae):
    cfg, models = stage_cfg(), (tiny_unet, tiny_vae)
    writes = Writes(monkeypatch)
    uri = manifest(clips["tmp"], [{"video_uri": str(AUDIO_20), "clip_id": "i", "task": "inpaint",
                                   "mask_uri": str(clips["masks20"]), "mask_dilate": 2}], "inp.jsonl")
    (row,) = run_stages(cfg, build_rows(cfg, uri, str(clips["tmp"] / "inp")), models)
    assert row["status"] == "ok", row["error"]
    assert (row["frames"], row["output_frames"], row["output_width"], row["output_height"]) == (20, 20, 160, 118)
    written = writes.frames[row["output_uri"]]
    frames, info = video.read_frames(AUDIO_20)
    masks = inpaint_masks(video.read_masks(clips["masks20"]), 20, (118, 160), 2)
    expect = run_inpaint(reference(cfg, models), frames, video.read_masks(clips["masks20"]), info.fps, 2)
    np.testing.assert_array_equal(written, expect)
    keep = masks[..., None] == 0
    np.testing.assert_array_equal(np.where(keep, written, 0), np.where(keep, frames, 0))  # source pixels exactly
    assert not np.array_equal(written, frames)
    assert np.isfinite(row["q_flicker_generated"]) and row["seconds_unet"] > 0
    got = video.probe(row["output_uri"], count_frames=True)
    assert (got.num_frames, got.width, got.height, got.fps, got.has_audio) == (20, 160, 118, info.fps, True)


def test_job_stages_inpaint_a_segmented_clip_exactly_as_the_whole_clip(clips, monkeypatch, tiny_unet, tiny_vae):
    cfg, models = stage_cfg(), (tiny_unet, tiny_vae)
    writes = Writes(monkeypatch)
    uri = manifest(clips["tmp"], [{"video_uri": str(clips["long"]), "clip_id": "il", "task": "inpaint",
                                   "mask_uri": str(clips["masks80"])}], "inpl.jsonl")
    (row,) = run_stages(cfg, build_rows(cfg, uri, str(clips["tmp"] / "inpl")), models, streamed=True)
    assert row["status"] == "ok", row["error"]
    pieces = sorted(u for u in writes.frames if ".parts/" in u)
    assert len(pieces) == 2  # 80 frames: 2 segments, joined
    frames, info = video.read_frames(clips["long"])
    expect = run_inpaint(reference(cfg, models), frames, video.read_masks(clips["masks80"]), info.fps)
    np.testing.assert_array_equal(np.concatenate([writes.frames[p] for p in pieces]), expect)
    got = video.probe(row["output_uri"], count_frames=True)
    assert (got.num_frames, got.has_audio) == (80, True) and not Path(row["output_uri"] + ".parts").exists()


@pytest.mark.parametrize("direction", ["forward", "backward"])
def test_job_stages_extend_a_segmented_clip_exactly_in_video_order(clips, monkeypatch, tiny_unet, tiny_vae,
                                                                   direction):
    cfg, models = stage_cfg(), (tiny_unet, tiny_vae)
    writes = Writes(monkeypatch)
    uri = manifest(clips["tmp"], [{"video_uri": str(clips["long70"]), "clip_id": f"x{direction}", "task": "extend",
                                   "extend_frames": 10, "extend_direction": direction}], f"ext{direction}.jsonl")
    (row,) = run_stages(cfg, build_rows(cfg, uri, str(clips["tmp"] / f"ext{direction}")), models, streamed=True)
    assert row["status"] == "ok", row["error"]
    assert (row["frames"], row["output_frames"]) == (70, 80)
    pieces = sorted(u for u in writes.frames if ".parts/" in u)
    assert len(pieces) == 2
    joined = np.concatenate([writes.frames[p] for p in pieces])
    frames, info = video.read_frames(clips["long70"])
    expect = run_extend(reference(cfg, models), frames, info.fps, 10, direction)
    np.testing.assert_array_equal(joined, expect)
    known = joined[:70] if direction == "forward" else joined[10:]
    np.testing.assert_array_equal(known, frames)  # the known frames pass unchanged (before encoding)
    got = video.probe(row["output_uri"], count_frames=True)
    assert (got.num_frames, got.width, got.height, got.has_audio) == (80, 160, 120, True)
    first, last = _audio_span(row["output_uri"])
    start = 10 / info.fps if direction == "backward" else 0.0
    assert abs(first - start) < 0.05 and last < start + 70 / info.fps  # audio under the known frames
    assert np.isfinite(row["q_flicker_generated"]) and np.isnan(row["q_flicker_known"])


def _audio_span(uri: str) -> tuple[float, float]:
    with av.open(uri) as c:
        s = c.streams.audio[0]
        pts = [float(p.pts * p.time_base) for p in c.demux(s) if p.pts is not None]
    return min(pts), max(pts)


def test_piece_position_counts_from_the_end_for_a_backward_extension():
    row = {"segment": 0, "num_segments": 3, "task": "extend",
           "task_options": json.dumps({"task": "extend", "frames": 4, "direction": "backward"})}
    cfg = stage_cfg()

    def position(r):
        return row_task(r, cfg).piece_position(int(r["segment"]), int(r["num_segments"]))

    assert [position(dict(row, segment=s)) for s in range(3)] == [2, 1, 0]
    fwd = dict(row, task_options=json.dumps({"task": "extend", "frames": 4, "direction": "forward"}))
    assert [position(dict(fwd, segment=s)) for s in range(3)] == [0, 1, 2]
    assert position({"segment": 1, "num_segments": 3, "task": "outpaint", "ratio": "9:16"}) == 1


def test_bad_masks_are_error_rows_naming_the_mask_source(clips, tmp_path):
    cfg = stage_cfg()
    zero = tmp_path / "zero.png"
    Image.fromarray(np.zeros((118, 160), np.uint8)).save(zero)
    ones = tmp_path / "ones.png"
    Image.fromarray(np.full((118, 160), 255, np.uint8)).save(ones)
    wrong = write_mask_folder(tmp_path / "wrong_size", square_masks(20, 100, 100))
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"not an image")
    cases = {"count": (clips["masks80"], "80 masks for a video of 20 frames"),
             "empty": (zero, "mark no pixel"), "all": (ones, "every pixel"),
             "size": (wrong, "100x100"), "unreadable": (junk, "junk.png"),
             "missing": (tmp_path / "nowhere", "nowhere")}
    uri = manifest(clips["tmp"], [{"video_uri": str(AUDIO_20), "clip_id": k, "task": "inpaint", "mask_uri": str(m)}
                                  for k, (m, _) in cases.items()], "bad.jsonl")
    for row in build_rows(cfg, uri, str(tmp_path / "bad")):
        (out,) = PrepareStage(cfg)([dict(row, clip=b"", state=b"")])
        assert out["status"] == "error", row["clip_id"]
        assert out["error"].startswith(f"prepare: {AUDIO_20}") and cases[row["clip_id"]][1] in out["error"], \
            out["error"]


# ------------------------------------------------------------------------------ the Ray job
@pytest.mark.ray
def test_ray_job_runs_a_manifest_mixing_the_three_tasks_and_resumes(ray_session, clips):
    tmp = clips["tmp"]
    cfg = tiny_cfg(ratios=["9:16"])
    entries = [
        {"video_uri": str(AUDIO_20), "clip_id": "out"},
        {"video_uri": str(AUDIO_20), "clip_id": "inp", "task": "inpaint", "mask_uri": str(clips["masks20"])},
        {"video_uri": str(AUDIO_20), "clip_id": "ext", "task": "extend", "extend_frames": 6},
        {"video_uri": str(clips["long70"]), "clip_id": "extb", "task": "extend", "extend_frames": 10,
         "extend_direction": "backward"},  # 2 segments, pieces joined from the end
        {"video_uri": str(DATA / "tree_60.mp4"), "clip_id": "bad", "task": "inpaint",
         "mask_uri": str(clips["masks20"])},  # 20 masks for 60 frames
    ]
    uri = manifest(tmp, entries, "mixed.jsonl")
    result = run_job(cfg, uri, str(tmp / "mixed"))
    rows = {r["clip_id"]: r for r in pq.read_table(result.results_uri).to_pylist()}
    assert len(rows) == 5
    for cid, (task, status, frames, size) in {
            "out": ("outpaint", "ok", 20, (36, 64)), "inp": ("inpaint", "ok", 20, (160, 118)),
            "ext": ("extend", "ok", 26, (160, 118)), "extb": ("extend", "ok", 80, (160, 120)),
            "bad": ("inpaint", "error", None, None)}.items():
        r = rows[cid]
        assert (r["task"], r["status"]) == (task, status), r["error"]
        if status == "error":
            assert "20 masks for a video of 60 frames" in r["error"] and r["output_uri"] is None
            assert r["mask_uri"] == str(clips["masks20"])
            continue
        got = video.probe(r["output_uri"], count_frames=True)
        assert got.num_frames == r["output_frames"] == frames
        assert (got.width, got.height) == (r["output_width"], r["output_height"]) == size
        assert got.has_audio
    assert [(rows[c]["task"], rows[c]["ratio"]) for c in ("out", "inp", "ext", "extb", "bad")] == [
        ("outpaint", "9:16"), ("inpaint", None), ("extend", None), ("extend", None), ("inpaint", None)]
    assert rows["inp"]["mask_uri"] == str(clips["masks20"]) and rows["out"]["task_options"] is None
    again = run_job(cfg, uri, str(tmp / "mixed"))
    assert again.counts() == {"skipped": 4, "error": 1}  # resume: only the bad row runs again
