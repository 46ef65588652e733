"""The GPU device check (benchmarks/device_check.py) in its --smoke mode on the CPU, with ``ray`` and
``av`` made unimportable (as on the device machine, which has neither): the whole run, lazy imports
included, must work, exit 0, print its summary line and write a strict-JSON report."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# ``sys.modules[name] = None``: ``import ray`` raises ModuleNotFoundError and
# ``importlib.util.find_spec("ray")`` returns None -- what an absent package gives.
RUN_WITHOUT_RAY_AV = """
import runpy, sys
for name in ("ray", "av"):
    sys.modules[name] = None
sys.argv = ["device_check.py"] + sys.argv[1:]
try:
    runpy.run_path("benchmarks/device_check.py", run_name="__main__")
finally:
    loaded = sorted(m for m, v in sys.modules.items() if m.split(".")[0] in ("ray", "av") and v is not None)
    print("ray/av modules loaded:", loaded)
"""


def _numbers(obj):
    if isinstance(obj, dict):
        for v in obj.values():
            yield from _numbers(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _numbers(v)
    elif isinstance(obj, (int, float)) and not isinstance(obj, bool):
        yield obj


def test_smoke_run_without_ray_and_av(tmp_path):
    out = tmp_path / "report.json"
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    env.pop("OUT", None)
    proc = subprocess.run([sys.executable, "-c", RUN_WITHOUT_RAY_AV, "--smoke", "--json", str(out)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    assert "ray/av modules loaded: []" in lines
    summary = [ln for ln in lines if ln.startswith("device_check:")]
    assert len(summary) == 1 and "correctness=passed" in summary[0] and str(out) in summary[0]

    report = json.loads(out.read_text(), parse_constant=lambda c: pytest_fail(f"non-strict JSON constant {c}"))
    assert report["mode"] == "smoke" and report["summary"] == summary[0]
    sections = report["sections"]
    assert list(sections) == ["environment", "small_model", "released_model", "throughput", "training",
                              "compile_small", "compile_released"]
    for name in ("environment", "small_model", "released_model", "throughput", "training"):
        assert sections[name]["status"] == "ok", (name, sections[name])
    for name in ("compile_small", "compile_released"):
        assert sections[name]["status"] == "skipped" and sections[name]["reason"]
    assert report["correctness"]["passed"] is True and report["correctness"]["failed"] == []

    for name in ("small_model", "released_model"):
        sec = sections[name]
        checks = {c["check"]: c for c in sec["checks"]}
        # CPU: bf16 weights and autocast, SDPA auto vs math, channels-last, batched windows
        assert {"fp32_finite", "bf16_weights", "autocast_bf16", "sdpa_auto", "channels_last",
                "batched_windows"} <= set(checks)
        assert all(c["passed"] for c in checks.values())
        assert checks["channels_last"]["weights_channels_last"] is True
        for c in ("bf16_weights", "autocast_bf16"):
            assert checks[c]["eps"]["finite"] and checks[c]["latents"]["finite"]
            assert 0 < checks[c]["latents"]["rel"] <= checks[c]["tol_rel"]  # bf16 rounds: different, close
        assert checks["channels_last"]["latents"]["rel"] <= 1e-5  # fp32 on the CPU: same numbers
        assert set(sec["skipped"]) == {"fp16_weights", "autocast_fp16", "sdpa_flash", "sdpa_efficient",
                                       "sdpa_cudnn"} | ({"vae_fp16"} if name == "small_model" else set())

    thr = sections["throughput"]
    assert thr["frames"] == 50 and all(r["frames_out"] == 50 for r in thr["measured_runs"].values())
    assert {p["steps"] for p in thr["presets"].values()} == {50, 20}
    assert thr["unet_calls"]["fp32"]["tflop_per_call"] > 0 and thr["unet_calls"]["fp32"]["share_of_peak"] is None
    train = sections["training"]
    assert math.isfinite(train["examples_per_s"]) and len(train["losses"]) == 1 + 2  # warm-up + timed steps
    assert train["losses"] == sorted(train["losses"], reverse=True)  # the same batch again: the loss falls

    figures = report["figures"]
    for key in ("fps_default", "fps_fast", "fps_method", "max_batch", "share_of_peak_bf16",
                "train_examples_per_s", "peak_bf16_tflops"):
        assert key in figures
    assert figures["peak_bf16_tflops"] is None and figures["share_of_peak_bf16"] is None  # no peak for a CPU
    assert all(math.isfinite(v) for v in _numbers(report))


def pytest_fail(msg):
    import pytest

    pytest.fail(msg)
