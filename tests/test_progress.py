"""Job progress in a log without a terminal: the one-line rule (pure), the driver's ProgressLog, and a
whole job whose stdout is a file shows progress lines instead of Ray Data's progress blocks."""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys
import threading

import pytest

from m3ddm_ray.distributed import collect
from m3ddm_ray.distributed.collect import ProgressLog, StallWatchdog
from m3ddm_ray.distributed.config import load_config
from m3ddm_ray.distributed.progress import eta_seconds, format_duration, output_frames, progress_line

from conftest import DATA


def test_progress_line_exact_strings():
    assert progress_line(2, 5, 1, 96, 65.4) == (
        "progress: 2/5 rows done, 3 pending, 1 error; 96 frames, 1.47 frames/s; elapsed 1m05s, ETA 1m38s")
    assert progress_line(0, 5, 0, 0, 12.0) == (
        "progress: 0/5 rows done, 5 pending, 0 errors; 0 frames, 0.00 frames/s; elapsed 12s, ETA --")
    assert progress_line(5, 5, 2, 180, 34.8) == (
        "progress: 5/5 rows done, 0 pending, 2 errors; 180 frames, 5.17 frames/s; elapsed 35s, ETA 0s")
    assert progress_line(10, 400, 0, 5000, 3600.0) == (  # 390 rows at 360 s each
        "progress: 10/400 rows done, 390 pending, 0 errors; 5000 frames, 1.39 frames/s; elapsed 1h00m, ETA 39h00m")
    assert progress_line(0, 3, 0, 0, 0.0).endswith("0 frames, 0.00 frames/s; elapsed 0s, ETA --")


def test_eta_is_the_pending_rows_at_the_mean_rate_so_far():
    assert eta_seconds(2, 5, 60.0) == 90.0
    assert eta_seconds(1, 4, 10.0) == 30.0
    assert eta_seconds(0, 5, 60.0) is None  # no row yet: no rate
    assert eta_seconds(5, 5, 60.0) == 0.0
    assert eta_seconds(6, 5, 60.0) == 0.0  # more results than rows (never negative)


def test_format_duration():
    assert [format_duration(s) for s in (0, 0.4, 42.4, 59.6, 60, 185, 3599.4, 3599.6, 3725, 90061)] == [
        "0s", "0s", "42s", "1m00s", "1m00s", "3m05s", "59m59s", "1h00m", "1h02m", "25h01m"]
    for bad in (-1.0, math.nan, math.inf):
        with pytest.raises(ValueError, match="expected a finite number of seconds >= 0"):
            format_duration(bad)


def test_output_frames_of_a_row():
    assert output_frames({"status": "ok", "frames": 60, "output_frames": 60}) == 60
    assert output_frames({"status": "ok", "frames": 20, "output_frames": 28}) == 28  # an extension
    assert output_frames({"status": "ok", "frames": 80, "output_frames": 80, "piece_frames": 45}) == 45  # a piece
    assert output_frames({"status": "ok", "frames": 16, "output_frames": math.nan}) == 16  # an eval row
    assert output_frames({"status": "error", "frames": 60, "output_frames": 60}) == 0
    assert output_frames({"status": "skipped", "frames": 60}) == 0


class FakeClock:
    def __init__(self):
        self.t = 100.0

    def __call__(self):
        return self.t


def test_progress_log_writes_one_line_per_interval_and_one_at_the_end():
    clock, lines = FakeClock(), []
    log = ProgressLog(3, 30, write=lines.append, clock=clock)
    log.tick()
    assert lines == []  # nothing before the first interval
    clock.t = 120.0
    log.arrived({"status": "ok", "frames": 80, "output_frames": 80, "piece_frames": 40})  # a piece: frames, no row
    log.finished([])
    clock.t = 130.0
    log.tick()
    log.tick()  # the same interval: no second line
    clock.t = 150.0
    log.arrived({"status": "ok", "frames": 80, "output_frames": 80, "piece_frames": 40})
    log.finished([])
    log.finished([{"status": "ok"}])  # the join of the two pieces
    log.arrived({"status": "error", "frames": 20})
    log.finished([{"status": "error"}])
    clock.t = 166.0
    log.tick()  # 36 s after the last line
    clock.t = 170.0
    log.arrived({"status": "ok", "frames": 24, "output_frames": 24})
    log.finished([{"status": "ok", "frames": 24}])
    log.finish()
    assert lines == [
        "progress: 0/3 rows done, 3 pending, 0 errors; 40 frames, 1.33 frames/s; elapsed 30s, ETA --",
        "progress: 2/3 rows done, 1 pending, 1 error; 80 frames, 1.21 frames/s; elapsed 1m06s, ETA 33s",
        "progress: 3/3 rows done, 0 pending, 1 error; 104 frames, 1.49 frames/s; elapsed 1m10s, ETA 0s",
    ]


def test_progress_log_is_off_in_a_terminal_or_with_interval_0(monkeypatch):
    cfg = load_config(DATA.parent.parent / "configs" / "tiny-cpu.yaml")
    assert cfg["ray"]["progress_interval_s"] == 30  # the default
    monkeypatch.setattr(collect, "interactive", lambda: False)
    assert ProgressLog.for_job(cfg, 4).interval_s == 30.0
    assert ProgressLog.for_job(load_config(None, ["ray.progress_interval_s=0"]), 4).enabled is False
    monkeypatch.setattr(collect, "interactive", lambda: True)  # Ray Data's progress bars show instead
    lines = []
    log = ProgressLog.for_job(cfg, 4)
    log.write = lines.append
    log.finished([{"status": "ok"}])
    log.tick()
    log.finish()
    assert not log.enabled and lines == [] and log.done == 1


def test_the_watchdog_thread_writes_the_progress_lines_also_with_its_timeouts_off():
    written = threading.Event()
    lines = []
    log = ProgressLog(2, 0.05, write=lambda text: (lines.append(text), written.set()))
    with StallWatchdog(0, lambda: 2, poll_s=0.01, on_poll=log.tick):
        assert written.wait(30)  # the main thread is blocked here, as in Ray's result queue
    assert lines[0].startswith("progress: 0/2 rows done, 2 pending, 0 errors; 0 frames, 0.00 frames/s; elapsed ")


@pytest.mark.ray
@pytest.mark.slow
def test_a_job_whose_output_is_a_file_logs_progress_lines_and_no_ray_data_blocks(tmp_path):
    env = dict(os.environ, RAY_AUTH_MODE="disabled", OMP_NUM_THREADS="1")
    env.pop("RAY_ADDRESS", None)
    log = tmp_path / "job.log"
    cmd = [sys.executable, "-m", "m3ddm_ray", "outpaint", "--config", "configs/tiny-cpu.yaml",
           "--manifest", str(DATA / "sample_manifest.jsonl"), "--output", str(tmp_path / "out"),
           "--model", str(DATA / "golden" / "models" / "unet"), "--vae", str(DATA / "golden" / "models" / "vae"),
           "--steps", "2", "--canvas-size", "64", "--set", "ray.progress_interval_s=2"]
    with open(log, "w") as out:  # stdout and stderr a file, as under cron
        proc = subprocess.run(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, timeout=300, cwd=DATA.parent.parent)
    text = log.read_text()
    assert proc.returncode == 0, text[-3000:]
    lines = re.findall(r"^progress: .*$", text, re.MULTILINE)
    assert len(lines) >= 2, text[-3000:]  # at least one interval line and the last one
    # 3 clips, tree and megamind to 9:16 and 1:1, with_audio to 9:16 only: 60 x 2 + 20 x 2 + 20 frames
    assert re.fullmatch(r"progress: 5/5 rows done, 0 pending, 0 errors; 180 frames, [0-9.]+ frames/s; "
                        r"elapsed \S+, ETA 0s", lines[-1]), lines
    for marker in ("Running Dataset:", "Total Progress:", "logging_progress", "Progress bars disabled"):
        assert marker not in text, marker
    assert "5 outputs (clip x ratio): ok 5" in text
