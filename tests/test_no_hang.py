"""A job never hangs: pools that cannot be placed fail before any work, a stalled job is stopped by
its watchdog, and the newcomer's command on a CPU-only machine finishes (issue: long videos / no hang)."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import threading
import time

import pytest

from m3ddm_ray.distributed.job import StallWatchdog, run_job
from m3ddm_ray.distributed.resources import ResourceError

from conftest import DATA
from test_ray_job import manifest, tiny_cfg

pytestmark = pytest.mark.ray


def test_gpu_asked_on_a_cluster_without_gpu_fails_before_any_work(ray_session, tmp_path):
    uri = manifest(tmp_path, [{"video_uri": str(DATA / "megamind_20.mp4"), "clip_id": "m"}])
    cfg = tiny_cfg(device="cuda")
    with pytest.raises(ResourceError, match=r"device is cuda but the cluster has no GPU \(4 CPUs, 0 GPUs\)"):
        run_job(cfg, uri, str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()  # nothing ran, nothing was written


def test_cpus_over_asked_fail_before_any_work(ray_session, tmp_path):
    uri = manifest(tmp_path, [{"video_uri": str(DATA / "megamind_20.mp4"), "clip_id": "m"}])
    cfg = tiny_cfg()
    cfg["stages"]["coarse"]["num_cpus"] = 3
    with pytest.raises(ResourceError, match=r"stages prepare, finalize cannot be placed: the stages with explicit "
                       r"num_cpus \(coarse 1 x 3, fine 1 x 1\) ask 4 CPUs, the cluster has 4; lower them "
                       r"\(--set stages.coarse.num_cpus=auto\)"):
        run_job(cfg, uri, str(tmp_path / "out"))


@pytest.fixture
def silent_server():
    """``http://127.0.0.1:PORT``: accepts connections and never answers (a source that hangs)."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(16)
    held, stop = [], threading.Event()

    def accept():
        srv.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(srv.accept()[0])
            except OSError:
                pass

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{srv.getsockname()[1]}"
    stop.set()
    thread.join()
    for conn in held:
        conn.close()
    srv.close()


def test_a_stalled_job_is_stopped_by_the_watchdog_and_still_writes_every_row(ray_session, tmp_path, silent_server):
    # the good clip first: the stuck one then holds the only prepare slot (4 CPUs: 1 prepare task at a time)
    uri = manifest(tmp_path, [{"video_uri": str(DATA / "megamind_20.mp4"), "clip_id": "fine"},
                              {"video_uri": f"{silent_server}/stuck.mp4", "clip_id": "stuck"}])
    cfg = tiny_cfg(ratios=["9:16"])
    cfg["stages"]["prepare"]["prepare_timeout_s"] = 0  # no per-clip limit: only the watchdog is left
    cfg["retries"]["storage_attempts"] = 1
    cfg["ray"]["stall_timeout_s"] = 45
    result = run_job(cfg, uri, str(tmp_path / "out"))
    rows = {r["clip_id"]: r for r in result.table.to_pylist()}
    assert set(rows) == {"stuck", "fine"}
    assert rows["fine"]["status"] == "ok", rows["fine"]["error"]  # finished before the stall: kept
    assert rows["stuck"]["status"] == "error"
    assert "no row finished for 45 s while 1 rows were pending (ray.stall_timeout_s)" in rows["stuck"]["error"]
    assert "JobStalled" in result.summary()


def _join_that_never_ends():
    """A stand-in for the join task that sleeps far past any timeout (defined locally so Ray pickles
    it by value into the task worker; the production join has no such hook)."""
    import time

    def never(pieces, cfg):
        time.sleep(3600)

    return never


def test_a_join_that_gives_no_result_ends_the_job_with_an_error_row(ray_session, tmp_path, monkeypatch):
    from m3ddm_ray.distributed import job
    from m3ddm_ray.video import read_frames, write_video

    frames, info = read_frames(DATA / "tree_60.mp4")
    clip = tmp_path / "c80.mp4"  # 80 frames: 2 segments, so the output goes through a join
    write_video(clip, [frames[i % 60] for i in range(80)], info.fps, preset="ultrafast")
    uri = manifest(tmp_path, [{"video_uri": str(clip), "clip_id": "joined"}])
    cfg = tiny_cfg(ratios=["9:16"])
    monkeypatch.setattr(job, "_assemble", _join_that_never_ends())
    # the join wait only (the row watchdog reads collect.stall_timeout, which keeps its default)
    monkeypatch.setattr(job, "stall_timeout", lambda cfg: 5.0)
    t0 = time.perf_counter()
    result = run_job(cfg, uri, str(tmp_path / "out"))
    assert time.perf_counter() - t0 < 600  # the join of 3600 s was not waited for
    (row,) = result.table.to_pylist()
    assert row["status"] == "error" and row["output_uri"] is None
    assert "1 joins of video pieces gave no result for 5 s (ray.stall_timeout_s)" in row["error"]
    assert "re-run the job to resume" in row["error"]


def test_watchdog_interrupts_a_blocked_main_thread_and_is_quiet_while_rows_progress():
    blocker = threading.Event()
    with pytest.raises(Exception) as err:
        with StallWatchdog(0.3, lambda: 1, poll_s=0.05):
            blocker.wait(60)  # a main thread blocked in a lock, as in Ray's result queue
    assert "no row finished for 0.3 s while 1 rows were pending" in str(err.value)
    with StallWatchdog(0.3, lambda: 1, poll_s=0.05) as dog:
        for _ in range(10):
            threading.Event().wait(0.1)
            dog.progress()
    assert not dog.fired
    with StallWatchdog(0.2, lambda: 0, poll_s=0.05) as dog:  # nothing pending: not a stall
        threading.Event().wait(0.5)
    assert not dog.fired


def test_watchdog_stops_a_job_whose_pool_never_starts_and_forgets_pools_once_they_have():
    calls = []

    def never_started():
        calls.append(1)
        return ["fine"]

    blocker = threading.Event()
    t0 = time.monotonic()
    with pytest.raises(Exception) as err:
        with StallWatchdog(0, lambda: 1, poll_s=0.05, start_timeout_s=0.4, start_check=never_started,
                           check_every_s=0.1):  # the row clock is off: only the start-up watch
            blocker.wait(60)
    assert 0.4 <= time.monotonic() - t0 < 10
    assert "the fine pool had no started actor after 0.4 s (ray.actor_start_timeout_s)" in str(err.value)
    assert len(calls) >= 2  # checked while waiting, not only at the deadline
    calls.clear()
    with StallWatchdog(0, lambda: 1, poll_s=0.05, start_timeout_s=0.3, start_check=lambda: calls.append(1) or [],
                       check_every_s=0.05) as dog:  # every pool started: the table is not read again
        threading.Event().wait(0.6)
    assert not dog.fired and len(calls) == 1
    with StallWatchdog(0, lambda: 1, poll_s=0.05, start_timeout_s=0.2, start_check=lambda: None) as dog:
        threading.Event().wait(0.5)  # the actor table cannot be read: no verdict (the row clock remains)
    assert not dog.fired


def _fine_stage_that_never_starts():
    """A FineStage whose ``__init__`` never returns (a model download that hangs), defined locally so
    Ray pickles it by value."""
    import time

    from m3ddm_ray.distributed import stages

    class NeverStarts(stages.FineStage):
        def __init__(self, *args, **kwargs):
            time.sleep(3600)

    return NeverStarts


def test_a_pool_whose_actor_never_starts_ends_the_job_naming_the_pool(ray_session, tmp_path, monkeypatch):
    from m3ddm_ray.distributed import job

    uri = manifest(tmp_path, [{"video_uri": str(DATA / "megamind_20.mp4"), "clip_id": "m"}])
    cfg = tiny_cfg(ratios=["9:16"])
    cfg["ray"]["actor_start_timeout_s"] = 30
    monkeypatch.setattr(job, "FineStage", _fine_stage_that_never_starts())
    t0 = time.perf_counter()
    result = run_job(cfg, uri, str(tmp_path / "out"))
    assert time.perf_counter() - t0 < 150
    (row,) = result.table.to_pylist()
    assert row["status"] == "error"
    # the fine pool is named; on a machine loaded enough that the (real) coarse actor has not
    # loaded its model within 30 s either, the coarse pool is named with it -- also true
    assert re.search(r"the (coarse, )?fine pool had no started actor after 30 s \(ray.actor_start_timeout_s\)",
                     row["error"]), row["error"]


@pytest.mark.slow
def test_newcomer_command_without_config_runs_on_a_cpu_only_machine(tmp_path):
    """The README's users on a machine without a GPU, default pools (a fresh embedded Ray)."""
    env = dict(os.environ, RAY_AUTH_MODE="disabled", CUDA_VISIBLE_DEVICES="")
    env.pop("RAY_ADDRESS", None)
    cmd = [sys.executable, "-m", "m3ddm_ray", "outpaint", "--manifest", str(DATA / "sample_manifest.jsonl"),
           "--output", str(tmp_path / "out"), "--model", str(DATA / "golden" / "models" / "unet"),
           "--vae", str(DATA / "golden" / "models" / "vae"), "--steps", "2", "--canvas-size", "64",
           "--ratio", "9:16"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, cwd=DATA.parent.parent)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "error 0" in proc.stdout and "ok " in proc.stdout
