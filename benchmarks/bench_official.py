"""Side by side with the official code (issue 10 item 4): whole-process wall time of the official
inference vs this project's default vs ``--sampler-preset fast``, alternated, on the same machine.

The official code runs in **its own venv** through ``../shared/official_harness/run_official_cpu.py``
(read its README: the official ``src/`` at commit e2ccd7c, executed unmodified on disk with three
in-memory substitutions: CPU device, fp32, the 64 canvas). Nothing of it is imported here; this
script only starts processes and times them.

Cases (both with the golden tiny random models ``tests/data/golden/models``, 9:16, 50 steps, canvas
64, fp32, 2 threads, seed 6):

* ``case_hier``: the golden input (``tests/data/golden/case_hier/input.mp4``, 64 frames, 96x64, 15 fps);
* ``long300``: 300 frames, tree_60's frames played back and forth (15 fps), resized to 96x64.

The harness resizes the source and writes it losslessly as ``<out>/input.mp4`` on every official
run; the project's runs read that same file, so all three decode identical frames. One round runs
official, default, fast for every case (the order rotates each round); each run is a fresh
process. Timed: the whole process (start-up, imports, model loading, decoding, sampling, writing
the output: JPEG frames + mp4 merge for the official code, one H.264 file for the project). The
official harness also records arrays for its golden data (``windows.npz`` etc.); its own
``seconds_main`` (``main()`` alone, recording included) is reported next to it.

On a shared machine each run also records the 1/5/15-minute load averages before and after it
(``os.getloadavg``, what ``uptime`` prints; they include the run's own 2 threads) and
``foreign_cores``: the cores kept busy by *other* processes during it (``_common.CpuMeter``:
system busy CPU-s minus the run's own, per wall second). Round starts and ends record the load
averages too. With ``--json`` the file is rewritten after every run, so an interrupted benchmark
keeps what it measured.

Usage::

    PYTHONPATH=$PWD .venv/bin/python benchmarks/bench_official.py \\
        --official-python ../venv-official/bin/python --official-src ../official-src/src [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import DATA, GOLDEN, ROOT, CpuMeter, machine_info, print_table, write_json  # noqa: E402

HARNESS = ROOT.parent / "shared" / "official_harness" / "run_official_cpu.py"
MODELS = GOLDEN / "models"
MODES = ("official", "default", "fast")


def make_long_clip(path: Path, frames: int = 300) -> None:
    """``frames`` frames of tree_60 played forward and back (15 fps), H.264 at crf 0 (the harness
    resizes and re-writes it losslessly; both sides then read the harness's file)."""
    import numpy as np

    from m3ddm_ray.video import read_frames, write_video

    base, info = read_frames(DATA / "tree_60.mp4")
    bounce = list(base) + list(base[-2:0:-1])
    write_video(path, np.stack([bounce[i % len(bounce)] for i in range(frames)]), info.fps, crf=0,
                preset="veryfast")


def load() -> list[float]:
    """The 1/5/15-minute load averages, as ``uptime`` prints them."""
    return [round(x, 2) for x in os.getloadavg()]


def fmt_load(la: list[float]) -> str:
    return "/".join(f"{x:.2f}" for x in la) if la else ""


def run(cmd: list[str], env: dict, log: Path) -> tuple[float, float, float]:
    """Run ``cmd`` to completion; returns (wall s, CPU-s of the process tree, foreign cores)."""
    with open(log, "w") as f, CpuMeter(children=True) as m:
        t0 = time.perf_counter()
        res = subprocess.run(cmd, env=env, stdout=f, stderr=subprocess.STDOUT, cwd=ROOT)
        sec = time.perf_counter() - t0
    if res.returncode != 0:
        raise SystemExit(f"{cmd[:3]} failed (rc {res.returncode}), see {log}:\n{log.read_text()[-3000:]}")
    return sec, m.ours, m.foreign_cores


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--official-python", required=True, help="python of the official venv")
    ap.add_argument("--official-src", required=True, help="the official repository's src/ folder")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--cases", default="case_hier,long300")
    ap.add_argument("--work", default=None, help="scratch folder (default: a temporary one, removed)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)

    work = Path(args.work or tempfile.mkdtemp(prefix="bench_official_"))
    work.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, OMP_NUM_THREADS="2", MKL_NUM_THREADS="2")
    env.pop("PYTHONPATH", None)  # the official process must not see this checkout (it has a pipelines/ too)
    ours_env = dict(env, PYTHONPATH=str(ROOT))
    sources = {"case_hier": (GOLDEN / "case_hier" / "input.mp4", 64)}
    if "long300" in args.cases:
        long_src = work / "long300_src.mp4"
        make_long_clip(long_src)
        sources["long300"] = (long_src, 300)
    cases = [c for c in args.cases.split(",") if c]

    def command(mode: str, case: str, out: Path) -> list[str]:
        src, n = sources[case]
        if mode == "official":
            return [args.official_python, str(HARNESS), "--official-src", args.official_src, "--out", str(out),
                    "--models", str(MODELS), "--input", str(src), "--input-frames", str(n), "--input-size", "96x64",
                    "--target_ratio_list", "9:16", "--threads", "2", "--max-size", "64", "--dtype", "float32"]
        cmd = [sys.executable, "-m", "m3ddm_ray", "outpaint-video", str(work / f"{case}_input.mp4"),
               "--ratio", "9:16", "--out", str(out / "out.mp4"), "--model", str(MODELS / "unet"),
               "--vae", str(MODELS / "vae"), "--canvas-size", "64", "--dtype", "fp32", "--device", "cpu",
               "--seed", "6", "--no-progress"]
        return cmd + (["--sampler-preset", "fast"] if mode == "fast" else ["--steps", "50"])

    times: dict = {(c, m): [] for c in cases for m in MODES}
    seconds_main: dict = {c: [] for c in cases}
    foreign: dict = {(c, m): [] for c in cases for m in MODES}
    runs: list[dict] = []  # every run in the order it ran, with the load before and after
    rounds: list[dict] = []

    def save() -> None:
        write_json(args.json, {"machine": machine_info(), "rounds_planned": args.rounds, "runs": runs,
                               "rounds": rounds, "work": str(work)})

    for rnd in range(args.rounds):
        order = MODES[rnd % 3:] + MODES[: rnd % 3]
        if rnd == 0:  # the official run writes the input file both sides read
            order = MODES
        rounds.append(dict(round=rnd, order=list(order), start_utc=time.strftime("%H:%M:%S", time.gmtime()),
                           load_before=load()))
        print(f"round {rnd} start {rounds[-1]['start_utc']} UTC, load {fmt_load(rounds[-1]['load_before'])}",
              flush=True)
        for case in cases:
            for mode in order:
                out = work / f"{case}_{mode}_{rnd}"
                shutil.rmtree(out, ignore_errors=True)
                out.mkdir(parents=True)
                la0, t0 = load(), time.strftime("%H:%M:%S", time.gmtime())
                sec, cpu, fc = run(command(mode, case, out), env if mode == "official" else ours_env,
                                   out / "log.txt")
                la1 = load()
                times[(case, mode)].append(sec)
                foreign[(case, mode)].append(fc)
                runs.append(dict(round=rnd, case=case, mode=mode, seconds=sec, cpu_seconds=cpu, foreign_cores=fc,
                                 start_utc=t0, load_before=la0, load_after=la1))
                if mode == "official":
                    info = json.loads((out / "run_info.json").read_text())
                    seconds_main[case].append(float(info["seconds_main"]))
                    runs[-1]["seconds_main"] = float(info["seconds_main"])
                    if not (work / f"{case}_input.mp4").exists():
                        shutil.copy(out / "input.mp4", work / f"{case}_input.mp4")
                    for big in out.glob("*.np[yz]"):  # recorded arrays: not needed, can be large
                        big.unlink()
                print(f"round {rnd} {case} {mode}: {sec:.1f} s, {cpu:.0f} CPU-s, other processes {fc:.2f} "
                      f"cores (load {fmt_load(la0)} -> {fmt_load(la1)})", flush=True)
                save()
        rounds[-1].update(end_utc=time.strftime("%H:%M:%S", time.gmtime()), load_after=load())
        print(f"round {rnd} end {rounds[-1]['end_utc']} UTC, load {fmt_load(rounds[-1]['load_after'])}", flush=True)
        save()

    rows, raw = [], []
    for case in cases:
        off = statistics.median(times[(case, "official")])
        for mode in MODES:
            ts = times[(case, mode)]
            med = statistics.median(ts)
            extra = (f"official main() {statistics.median(seconds_main[case]):.1f}" if mode == "official" else "")
            rows.append([case, mode, ", ".join(f"{t:.1f}" for t in ts), med, f"{min(ts):.1f}-{max(ts):.1f}",
                         med / off, off / med, ", ".join(f"{x:.2f}" for x in foreign[(case, mode)]), extra])
            raw.append(dict(case=case, mode=mode, seconds=ts, median=med, min=min(ts), max=max(ts),
                            official_over_this=off / med, foreign_cores=foreign[(case, mode)],
                            seconds_main=seconds_main[case] if mode == "official" else None))
    print(json.dumps(machine_info()))
    print_table(["case", "run", "whole process s (rounds)", "median s", "min-max s", "÷ official",
                 "official ÷ this", "other processes, cores (rounds)", "note"], rows, title=f"{args.rounds} alternating rounds, tiny golden models, 9:16, canvas 64, fp32, "
                                       "2 threads")
    print_table(["round", "start UTC", "end UTC", "load before (1/5/15 min)", "load after"],
                [[r["round"], r["start_utc"], r.get("end_utc", ""), fmt_load(r["load_before"]),
                  fmt_load(r.get("load_after", []))] for r in rounds], title="load averages per round")
    write_json(args.json, {"machine": machine_info(), "rounds_planned": args.rounds, "rows": raw, "runs": runs,
                           "rounds": rounds, "work": str(work)})
    if not args.work:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
