"""Bad inputs through the real Ray job (tiny model, 2 steps, 64 px canvas): each becomes one clear
``error`` row naming the input and the reason, the job completes and the good rows are ``ok``.

All bad videos go through ONE job run (plus the good ones and the edge cases that must work); the
manifest-level problems (unsafe paths, duplicates) are rejected before anything starts.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from m3ddm_ray import cli, geometry
from m3ddm_ray.distributed import job
from m3ddm_ray.distributed.job import run_job
from m3ddm_ray.distributed.manifest import ManifestError
from m3ddm_ray.video import probe, read_frames

from conftest import DATA
from test_etl import FaultyS3
from test_ray_job import manifest, tiny_cfg

pytestmark = pytest.mark.ray

# clip id -> (input, expected status, words the error must contain)
CASES = {
    "good": (DATA / "megamind_20.mp4", "ok", None),
    "missing": ("{tmp}/missing.mp4", "error", "file not found"),
    "denied": ("s3://bad/denied/clip.mp4", "error", "permission denied"),
    "s3_missing": ("s3://bad/videos/nothing-here.mp4", "error", "file not found"),
    "corrupt": (DATA / "tree_60_corrupt.mp4", "error", "damaged or truncated video"),
    "truncated": (DATA / "tree_60_truncated.mp4", "error", "incomplete or corrupt data"),
    "cut_at_packet": (DATA / "tree_60_cut_at_packet.mp4", "error", "holds only 31 of the 60 frames"),
    "avi_head": (DATA / "megamind_bugy_head.avi", "error", "damaged or truncated video"),
    "zero_bytes": ("{tmp}/empty.mp4", "error", "empty file (0 bytes)"),
    "text": (DATA / "not_a_video.mp4", "error", "not a media file"),
    "audio_only": (DATA / "audio_only.m4a", "error", "no video stream"),
    "folder": ("{tmp}/folder.mp4", "error", "is a directory"),
    "tall_7x4000": (DATA / "tall_7x4000.mp4", "error", "too extreme for a 4000x7 (HxW) frame"),
    "one_frame": (DATA / "one_frame.mp4", "ok", None),
    "vfr": (DATA / "vfr_20.mp4", "ok", None),
    "rotated": (DATA / "rotated_90.mp4", "ok", None),
}


@pytest.fixture(scope="module")
def bad_run(ray_session, tmp_path_factory):
    import fsspec

    tmp = tmp_path_factory.mktemp("bad")
    (tmp / "empty.mp4").write_bytes(b"")
    (tmp / "folder.mp4").mkdir()
    server = FaultyS3()
    try:
        server.create_bucket("bad")
        opts = server.options()
        fsspec.filesystem("s3", **opts).put_file(str(DATA / "megamind_20.mp4"), "bad/denied/clip.mp4")
        server.deny("bad/denied/")  # the object exists, but reading it answers 403 AccessDenied
        entries = [{"video_uri": str(uri).format(tmp=tmp), "clip_id": cid} for cid, (uri, _, _) in CASES.items()]
        cfg = tiny_cfg(ratios=["9:16"], storage_options=opts)
        cfg["retries"] = {"storage_attempts": 2, "storage_base_delay_s": 0.05}
        result = run_job(cfg, manifest(tmp, entries), str(tmp / "out"))
        yield cfg, result, {e["clip_id"]: e["video_uri"] for e in entries}, server
    finally:
        server.close()


def test_every_bad_input_is_one_clear_error_row_and_good_rows_are_ok(bad_run):
    _, result, uris, server = bad_run
    rows = {r["clip_id"]: r for r in result.table.to_pylist()}
    assert sorted(rows) == sorted(CASES) and result.table.num_rows == len(CASES)  # each row exactly once
    for cid, (_, status, words) in CASES.items():
        row = rows[cid]
        assert row["status"] == status, (cid, row["error"])
        if status == "error":
            assert row["error"].startswith("prepare: "), (cid, row["error"])
            assert uris[cid] in row["error"], (cid, row["error"])  # names the input...
            assert words in row["error"], (cid, row["error"])        # ...and the reason
            assert row["output_uri"] is None
        else:
            assert row["error"] is None and probe(row["output_uri"], count_frames=True).num_frames == row["frames"]
    assert ("HEAD", "bad/denied/clip.mp4", 403) in server.log or ("GET", "bad/denied/clip.mp4", 403) in server.log
    assert result.counts() == {"ok": 4, "error": len(CASES) - 4}
    assert "error" in result.summary() and uris["denied"] in result.summary()


def test_one_frame_and_variable_frame_rate_keep_every_frame(bad_run):
    _, result, _, _ = bad_run
    rows = {r["clip_id"]: r for r in result.table.to_pylist()}
    assert rows["one_frame"]["frames"] == 1
    vfr = rows["vfr"]
    src = probe(DATA / "vfr_20.mp4", count_frames=True)
    out = probe(vfr["output_uri"], count_frames=True)
    assert vfr["frames"] == out.num_frames == src.num_frames == 20  # no frame dropped or duplicated
    assert abs(out.duration_s - src.duration_s) < 0.1  # constant rate at the average: same length


def test_rotated_phone_video_is_outpainted_upright(bad_run):
    cfg, result, _, _ = bad_run
    row = next(r for r in result.table.to_pylist() if r["clip_id"] == "rotated")
    assert (row["source_width"], row["source_height"]) == (120, 160)  # display size, not the stored 160x120
    src, _ = read_frames(DATA / "rotated_90.mp4")
    out, info = read_frames(row["output_uri"])
    geom = geometry.plan_canvas(160, 120, "9:16", cfg["canvas_size"])
    y0, y1, x0, x1 = geom.known_box
    cy0, _, cx0, _ = geometry.crop_box(geom, "9:16")
    assert (info.height, info.width) == (row["output_height"], row["output_width"])
    known = out[0, y0 - cy0:y1 - cy0, x0 - cx0:x1 - cx0].astype(float)
    upright = cv2.resize(src[0], (x1 - x0, y1 - y0), interpolation=cv2.INTER_AREA).astype(float)
    flipped = upright[::-1, ::-1]  # what a 180-degree orientation mistake would give
    err_up, err_flip = np.abs(known - upright).mean(), np.abs(known - flipped).mean()
    assert err_up < 12 and err_up < err_flip / 2, (err_up, err_flip)


def test_unsafe_paths_and_duplicates_are_rejected_before_anything_runs(tmp_path, monkeypatch):
    def no_ray(*a, **k):
        raise AssertionError("Ray started for an invalid manifest")

    monkeypatch.setattr(job, "init_ray", no_ray)
    good = str(DATA / "megamind_20.mp4")
    bad = tmp_path / "escape.jsonl"
    bad.write_text("\n".join([
        f'{{"video_uri": "{good}", "clip_id": "../../etc"}}',
        f'{{"video_uri": "{good}", "clip_id": "ok1", "output_prefix": "../../etc"}}',
        f'{{"video_uri": "{good}", "clip_id": "ok2", "output_prefix": "/etc"}}',
        f'{{"video_uri": "{good}", "clip_id": "dup"}}',
        f'{{"video_uri": "{good}", "clip_id": "dup"}}',
    ]) + "\n")
    with pytest.raises(ManifestError) as info:
        run_job(tiny_cfg(), str(bad), str(tmp_path / "out"))
    text = str(info.value)
    assert "row 1, column 'clip_id'" in text and "would escape the output prefix" in text
    assert "row 2, column 'output_prefix'" in text and "row 3, column 'output_prefix'" in text
    assert "row 5, column 'clip_id': duplicate clip_id 'dup'" in text
    assert not (tmp_path / "out").exists()  # nothing written, not even a result table
    code = cli.main(["outpaint", "--manifest", str(bad), "--output", str(tmp_path / "out"),
                     "--config", str(DATA.parent.parent / "configs" / "tiny-cpu.yaml")])
    assert code == cli.EXIT_ERROR


def test_output_key_refuses_paths_that_leave_the_prefix():
    from m3ddm_ray.distributed.stages import output_key
    from m3ddm_ray.errors import InputError

    assert output_key("s3://b/out", "c1", "9:16", "abc", "shorts/2024") == "s3://b/out/shorts/2024/c1/c1_9x16_abc.mp4"
    for clip_id, prefix in (("../../etc", None), ("a/b", None), ("..", None), ("ok", "../x"), ("ok", "/abs")):
        with pytest.raises(InputError):
            output_key("s3://b/out", clip_id, "9:16", "abc", prefix)
