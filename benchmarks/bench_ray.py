"""Ray Data job vs single-process pipeline (tiny model, CPU), and peak memory vs video length.

Part 1, throughput: the clips ``tree_60.mp4``, ``megamind_20.mp4``, ``box_24.mp4`` (104 frames)
to 9:16 with the ``configs/tiny-cpu.yaml`` values (model/VAE paths made absolute, ``--steps``
PNDM steps, default 50):

* Ray: :func:`m3ddm_ray.distributed.job.run_job` on an embedded local Ray started the way the
  ``outpaint`` command starts it (``init_ray``: ``num_cpus=4`` from the config). Ray start-up is
  timed separately; the job time is ``JobResult.seconds`` (manifest, prepare, coarse and fine actor
  pools incl. model loading, finalize/encode, Parquet).
* Single process: decode + :meth:`OutpaintPipeline.run_clip` + ``write_video`` per clip, models
  loaded once (load time reported separately), torch default threads.

UNet time is ``ClipState.unet_seconds`` (the ``seconds_unet`` column in the job): wall time of the
sampling loops (UNet calls + scheduler arithmetic). Overhead = (wall - UNet time) / UNet time.

Part 2, memory: for synthetic videos of 300, 1000, 3000 frames (64x96 moving gradients generated
in memory, ratio 9:16, canvas 64, 2 steps) one child process per length loads the tiny models,
runs ``prepare_clip`` + ``Outpainter.run_coarse`` + ``run_fine`` + ``finalize_clip`` and reports
its peak RSS (``VmHWM``) after each step, and the size of the per-clip arrays that scale with T.

Usage::

    .venv/bin/python benchmarks/bench_ray.py [--quick] [--steps N] [--lengths 300,1000,3000]
        [--skip-throughput] [--skip-memory] [--ray-only] [--set KEY=VALUE ...] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (DATA, ROOT, TINY_UNET, TINY_VAE, CpuMeter, TreeCpuMeter, machine_info,  # noqa: E402
                     peak_rss_mib, print_table, run_child, wait_quiet, write_json)

CLIPS = [("tree", "tree_60.mp4"), ("megamind", "megamind_20.mp4"), ("box", "box_24.mp4")]
RATIO = "9:16"


def tiny_config(steps: int, overrides: list[str] = ()) -> dict:
    from m3ddm_ray.distributed.config import load_config

    cfg = load_config(ROOT / "configs" / "tiny-cpu.yaml", overrides)
    cfg["model"], cfg["vae"] = str(TINY_UNET), str(TINY_VAE)
    cfg["sampler"]["steps"] = steps
    cfg["ratios"] = [RATIO]
    return cfg


# --------------------------------------------------------------------------- part 1
def run_single(cfg: dict, out_dir: Path) -> dict:
    import torch

    from m3ddm_ray.distributed.config import job_settings
    from m3ddm_ray.models.loading import load_unet, load_vae
    from m3ddm_ray.pipeline import OutpaintPipeline
    from m3ddm_ray.video import read_frames, write_video

    t0 = time.perf_counter()
    unet = load_unet(cfg["model"], cfg["dtype"], cfg["device"])
    vae = load_vae(cfg["vae"], cfg["dtype"], cfg["device"])
    load_s = time.perf_counter() - t0
    pipe = OutpaintPipeline(unet, vae, job_settings(cfg))
    enc = cfg["encode"]
    per_clip = []
    with CpuMeter() as m:
        for cid, name in CLIPS:
            c0 = time.perf_counter()
            frames, info = read_frames(DATA / name)
            out, clip, state = pipe.run_clip(frames, info.fps, RATIO)
            write_video(out_dir / f"{cid}.mp4", out, info.fps, audio_source=DATA / name, crf=int(enc["crf"]),
                        preset=str(enc["preset"]))
            per_clip.append({"clip": cid, "frames": int(frames.shape[0]), "windows": len(clip.plan.windows),
                             "seconds": time.perf_counter() - c0, "seconds_unet": state.unet_seconds})
    frames = sum(c["frames"] for c in per_clip)
    unet_s = sum(c["seconds_unet"] for c in per_clip)
    return {"mode": "single process", "threads": torch.get_num_threads(), "setup_seconds": load_s,
            "seconds": m.wall, "frames": frames, "seconds_unet": unet_s, "per_clip": per_clip,
            "foreign_cores": m.foreign_cores, "cpu_cores_used": m.ours / m.wall, "peak_rss_mib_driver": peak_rss_mib()}


def run_ray(cfg: dict, out_dir: Path) -> dict:
    from m3ddm_ray.distributed.job import init_ray, run_job
    from m3ddm_ray.distributed.manifest import validate_manifest, write_manifest

    entries = [{"video_uri": str(DATA / f), "clip_id": c} for c, f in CLIPS]
    uri = str(out_dir / "manifest.jsonl")
    write_manifest(validate_manifest(entries), uri)
    t0 = time.perf_counter()
    try:
        ray = init_ray(cfg)
    except ValueError as exc:
        # init_ray (no address) joins a `ray start` cluster already running on this machine, and then
        # refuses num_cpus: force a private embedded Ray instead.
        import ray

        print(f"[init_ray failed ({exc}); starting a private local Ray with address='local']", file=sys.stderr)
        ray.init(address="local", num_cpus=cfg["ray"]["num_cpus"], ignore_reinit_error=True)
    init_s = time.perf_counter() - t0
    try:
        start_us = time.time() * 1e6
        with TreeCpuMeter() as m:  # driver + GCS + raylet + workers all descend from this process
            result = run_job(cfg, uri, str(out_dir / "out"))
        end_us = time.time() * 1e6
        rows = result.table.to_pylist()
        timeline, spans = job_timeline(ray, start_us, end_us)
    finally:
        ray.shutdown()
    bad = [r for r in rows if r["status"] != "ok"]
    if bad:
        raise RuntimeError(f"job rows not ok: {bad}")
    frames = sum(r["frames"] for r in rows)
    col = lambda k: sum(float(r[k]) for r in rows if r[k] == r[k])  # noqa: E731  (NaN-safe sum)
    return {"mode": "Ray job", "setup_seconds": init_s, "seconds": result.seconds, "frames": frames,
            "seconds_unet": col("seconds_unet"), "seconds_prepare": col("seconds_prepare"),
            "seconds_coarse": col("seconds_coarse"), "seconds_fine": col("seconds_fine"),
            "seconds_finalize": col("seconds_finalize"),
            "per_clip": [{k: r[k] for k in ("clip_id", "frames", "seconds_prepare", "seconds_coarse", "seconds_fine",
                                            "seconds_finalize", "seconds_unet")} for r in rows],
            "foreign_cores": m.foreign_cores, "cpu_cores_used": m.ours / m.wall, "timeline": timeline,
            "spans": spans}


def job_timeline(ray, start_us: float, end_us: float) -> tuple[list[dict], list[dict]]:
    """Where the job's wall time went, from Ray's own task events (``ray.timeline()``): per kind of
    task or actor method (actor creation = ``__init__``: process start, imports, model load), the
    first start and last end in seconds after :func:`run_job` was called, and the busy seconds;
    and every span of a task or actor method that took >= 50 ms (worker id, name, start s,
    duration s: which process did what when, in the JSON only)."""
    time.sleep(2.0)  # task events reach the GCS about once a second
    kinds: dict[str, dict] = {}
    spans: list[dict] = []
    for ev in ray.timeline():
        if ev.get("ph") != "X" or "dur" not in ev:
            continue
        name = str(ev.get("name", "?"))
        name = name.split("::")[-1] if "::" in name else name
        k = kinds.setdefault(name, {"task": name, "count": 0, "first_start_s": 1e18, "last_end_s": -1e18,
                                    "busy_s": 0.0})
        ts, dur = float(ev["ts"]), float(ev["dur"])
        if ts + dur < start_us or ts > end_us:
            continue
        k["count"] += 1
        k["first_start_s"] = min(k["first_start_s"], (ts - start_us) / 1e6)
        k["last_end_s"] = max(k["last_end_s"], (ts + dur - start_us) / 1e6)
        k["busy_s"] += dur / 1e6
        if dur >= 5e4:
            spans.append({"worker": str(ev.get("tid", "?")), "name": name, "cat": str(ev.get("cat", "")),
                          "start_s": round((ts - start_us) / 1e6, 3), "dur_s": round(dur / 1e6, 3)})
    out = [k for k in kinds.values() if k["count"]]
    return sorted(out, key=lambda k: k["first_start_s"]), sorted(spans, key=lambda k: k["start_s"])


# --------------------------------------------------------------------------- part 2
def synthetic_frames(t: int, h: int = 64, w: int = 96):
    """uint8 (t, h, w, 3): moving colour gradients plus a moving square."""
    import numpy as np

    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    out = np.empty((t, h, w, 3), np.uint8)
    for i in range(t):
        out[i, ..., 0] = (128 + 127 * np.sin((xx + 2 * i) / 9.0)).astype(np.uint8)
        out[i, ..., 1] = (128 + 127 * np.cos((yy - i) / 7.0)).astype(np.uint8)
        out[i, ..., 2] = ((xx + yy + 3 * i) % 256).astype(np.uint8)
        y, x = (5 * i) % (h - 12), (3 * i) % (w - 12)
        out[i, y:y + 12, x:x + 12] = 255
    return out


def memory_child(t: int, steps: int) -> dict:
    from m3ddm_ray.models.loading import load_unet, load_vae
    from m3ddm_ray.pipeline import (Outpainter, OutpaintSettings, finalize_clip, generated_array, prepare_clip)
    from m3ddm_ray.sampling import SamplerSettings

    marks = {"start": peak_rss_mib()}
    unet = load_unet(TINY_UNET, "fp32", "cpu")
    vae = load_vae(TINY_VAE, "fp32", "cpu")
    marks["models loaded"] = peak_rss_mib()
    frames = synthetic_frames(t)
    marks["frames in memory"] = peak_rss_mib()
    settings = OutpaintSettings(sampler=SamplerSettings(num_inference_steps=steps), canvas_size=64)
    t0 = time.perf_counter()
    clip = prepare_clip(frames, 25.0, RATIO, settings)
    marks["prepare_clip"] = peak_rss_mib()
    op = Outpainter(unet, vae, settings)
    state = op.run_coarse(clip)
    marks["run_coarse"] = peak_rss_mib()
    op.run_fine(clip, state)
    marks["run_fine"] = peak_rss_mib()
    out = finalize_clip(clip, generated_array(clip, state), settings, frames)
    marks["finalize_clip"] = peak_rss_mib()
    seconds = time.perf_counter() - t0
    # what a Ray model actor additionally holds: the row's pickled clip and the re-pickled state
    clip_b = pickle.dumps(clip, protocol=pickle.HIGHEST_PROTOCOL)
    state_b = pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL)
    marks["+ pickles (Ray rows)"] = peak_rss_mib()

    def nbytes(arrs) -> int:
        return int(sum(a.nbytes for a in arrs))

    sizes = {
        "source frames": frames.nbytes,
        "clip.masked + clip.inpainted": clip.masked.nbytes + clip.inpainted.nbytes,
        "state.generated": nbytes(state.generated.values()),
        "state.stored": nbytes(state.stored.values()),
        "output frames": out.nbytes,
        "pickled clip": len(clip_b),
        "pickled state (after fine)": len(state_b),
    }
    return {"frames": t, "windows": len(clip.plan.windows), "seconds": seconds, "peak_rss_mib": marks,
            "bytes": sizes}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="4 steps; lengths 300,1000")
    ap.add_argument("--steps", type=int, default=None, help="PNDM steps of the throughput part (default 50)")
    ap.add_argument("--lengths", default=None, help="comma-separated video lengths of the memory part")
    ap.add_argument("--mem-steps", type=int, default=2, help="PNDM steps of the memory part (default 2)")
    ap.add_argument("--skip-throughput", action="store_true")
    ap.add_argument("--skip-memory", action="store_true")
    ap.add_argument("--ray-only", action="store_true",
                    help="throughput part: the Ray job alone (its driver then imports nothing a single-process run would)")
    ap.add_argument("--no-wait", action="store_true", help="do not wait for other processes to go quiet")
    ap.add_argument("--json", default=None, help="write the results to this JSON file")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="config override of the throughput part, e.g. --set stages.prepare.concurrency=null")
    ap.add_argument("--child-frames", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.child_frames:
        print(json.dumps(memory_child(args.child_frames, args.mem_steps)))
        return 0

    steps = args.steps or (4 if args.quick else 50)
    lengths = [int(x) for x in (args.lengths or ("300,1000" if args.quick else "300,1000,3000")).split(",")]
    payload: dict = {"machine": None, "steps": steps, "tables": []}  # machine_info() imports torch: after the job

    if not args.skip_throughput:
        cfg = tiny_config(steps, args.set)
        payload["overrides"] = list(args.set)
        with tempfile.TemporaryDirectory(prefix="bench_ray_") as tmp:
            tmp = Path(tmp)
            single = None
            if not args.ray_only:
                if not args.no_wait:
                    wait_quiet()
                single = run_single(cfg, tmp / "single")
            if not args.no_wait:
                wait_quiet()
            job = run_ray(cfg, tmp / "ray")
            job["driver_imported_torch"] = "torch" in sys.modules
        payload["throughput"] = [r for r in (single, job) if r is not None]
        rows = []
        for r in payload["throughput"]:
            rows.append([r["mode"], r["frames"], r["setup_seconds"], r["seconds"], r["frames"] / r["seconds"],
                         r["seconds_unet"], f"{100 * r['seconds_unet'] / r['seconds']:.1f} %",
                         f"{100 * (r['seconds'] - r['seconds_unet']) / r['seconds_unet']:.0f} %",
                         r["cpu_cores_used"], r["foreign_cores"]])
        payload["tables"].append(print_table(
            ["mode", "frames", "setup s (model load / ray.init)", "wall s", "frames/s", "UNet (sampling) s",
             "UNet share", "overhead (wall-UNet)/UNet", "our CPU use (cores)", "other load (cores)"], rows,
            title=f"3 clips -> {RATIO}, tiny model, {steps} steps, CPU"))
        rows = [[r["clip_id"], r["frames"], r["seconds_prepare"], r["seconds_coarse"], r["seconds_fine"],
                 r["seconds_finalize"], r["seconds_unet"]] for r in job["per_clip"]]
        payload["tables"].append(print_table(
            ["clip", "frames", "prepare s", "coarse s", "fine s", "finalize s", "seconds_unet"], rows,
            title="Ray job: per-row stage timings"))
        rows = [[k["task"][:70], k["count"], k["first_start_s"], k["last_end_s"], k["busy_s"]] for k in job["timeline"]]
        payload["tables"].append(print_table(
            ["Ray task / actor method", "count", "first start s", "last end s", "busy s"], rows,
            title=f"Ray job timeline (ray.timeline(); seconds after run_job was called, job {job['seconds']:.1f} s)"))
        if single is not None:
            rows = [[c["clip"], c["frames"], c["windows"], c["seconds"], c["seconds_unet"]] for c in single["per_clip"]]
            payload["tables"].append(print_table(["clip", "frames", "windows", "s (decode+run_clip+write)", "UNet s"],
                                                 rows, title="Single process: per clip"))
        print(f"the Ray job's driver imported torch: {job['driver_imported_torch']}")

    if not args.skip_memory:
        mem = []
        for t in lengths:
            if not args.no_wait:
                wait_quiet()
            mem.append(run_child([__file__, "--child-frames", str(t), "--mem-steps", str(args.mem_steps)]))
        payload["memory"] = mem
        mib = 1024 * 1024
        rows = []
        for r in mem:
            p, b = r["peak_rss_mib"], r["bytes"]
            rows.append([r["frames"], r["windows"], r["seconds"], p["models loaded"], p["prepare_clip"],
                         p["run_coarse"], p["run_fine"], p["finalize_clip"], p["+ pickles (Ray rows)"],
                         p["finalize_clip"] - p["models loaded"],
                         b["clip.masked + clip.inpainted"] / mib, b["state.generated"] / mib,
                         b["pickled clip"] / mib, b["pickled state (after fine)"] / mib])
        payload["tables"].append(print_table(
            ["frames", "windows", "s", "RSS models MiB", "peak after prepare", "after coarse", "after fine",
             "after finalize", "+ row pickles", "growth models->finalize", "masked+inpainted MiB", "state.generated MiB",
             "pickled clip MiB", "pickled state MiB"], rows,
            title=f"Peak RSS vs length (64x96 -> {RATIO}, canvas 64, {args.mem_steps} steps, one process per length)"))
    payload["machine"] = machine_info()
    print(payload["machine"])
    write_json(args.json, payload)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
