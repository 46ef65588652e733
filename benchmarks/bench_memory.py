"""Peak memory of the Ray job vs video length: every actor, the task workers, the driver, the object store.

For each length (default 300 / 3,000 / 18,000 frames) a child process makes a synthetic video
(112x64, 25 fps, moving gradients and a square; x264 with its default key frame interval, so the
segments seek) and runs the real job (:func:`m3ddm_ray.distributed.job.run_job`, embedded Ray with
``--cpus`` logical CPUs, 1 coarse + 1 fine actor) with the golden tiny model: 9:16, canvas 64,
``--steps`` PNDM steps. While it runs, a thread samples every 0.25 s the resident set size of every
process of the Ray session (the driver and all its descendants: raylet, GCS, the actors, the task
workers; from ``/proc``), and the dataset's object-store bytes are taken from Ray Data's own
accounting after every scheduling step (:class:`StorePeak`).
Reported: peak RSS per role (the coarse and fine actors by their process title; "tasks" = the
largest task worker, which runs prepare / canvases / finalize / join), the driver's ``VmHWM``, and
the peak object-store bytes. RSS counts shared pages (object-store objects mapped by a worker)
in each process that maps them.

``--task inpaint`` runs an inpainting of the same clip instead, its masks a folder of one PNG per
frame (a 24x16 square moving across the frame); ``--task extend`` an extension by 20 frames.

Usage::

    .venv/bin/python benchmarks/bench_memory.py [--lengths 300,3000,18000] [--steps 2] [--task outpaint]
        [--json OUT]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import ROOT, TINY_UNET, TINY_VAE, machine_info, peak_rss_mib, print_table, run_child, write_json  # noqa: E402


def make_video(path: Path, frames: int, w: int = 112, h: int = 64, fps: int = 25) -> None:
    """A synthetic clip, generated and encoded one frame at a time (the generator holds no video)."""
    import numpy as np

    from m3ddm_ray.video import write_video

    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)

    def gen():
        for i in range(frames):
            t = i / fps
            img = np.stack([(xx * 2 + 40 * t) % 256, (yy * 3 + 25 * t) % 256, ((xx + yy) + 60 * t) % 256], -1)
            x0 = int((w - 16) * (0.5 + 0.5 * np.sin(t)))
            img[20:36, x0:x0 + 16] = 255
            yield img.astype(np.uint8)

    write_video(path, gen(), fps, preset="veryfast", crf=20)


def make_masks(folder: Path, frames: int, w: int = 112, h: int = 64) -> None:
    """One mask PNG per frame: a 24x16 square moving left to right (1 = inpaint)."""
    import numpy as np
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for i in range(frames):
        m = np.zeros((h, w), np.uint8)
        x0 = (i * 2) % (w - 24)
        m[30:46, x0:x0 + 24] = 255
        Image.fromarray(m).save(folder / f"{i:06d}.png")


def _descendants(root: int) -> list[int]:
    """Pids of every descendant of ``root`` (from ``/proc/*/stat``; Linux)."""
    children: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            stat = Path(f"/proc/{d}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(d))
    out, todo = [], [root]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def _rss_and_title(pid: int) -> tuple[float, str] | None:
    try:
        rss = next(float(ln.split()[1]) for ln in Path(f"/proc/{pid}/status").read_text().splitlines()
                   if ln.startswith("VmRSS:")) / 1024
        title = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")[:160]
    except (OSError, StopIteration):
        return None
    return rss, title


class Sampler:
    """Peak RSS per process of this session (by role) and peak object-store use, sampled in a thread."""

    def __init__(self):
        self.peak: dict[int, float] = {}
        self.titles: dict[int, set[str]] = {}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.loop, daemon=True)

    def loop(self):
        while not self.stop.is_set():
            for pid in _descendants(os.getpid()):
                got = _rss_and_title(pid)
                if got is None:
                    continue
                self.peak[pid] = max(self.peak.get(pid, 0.0), got[0])
                self.titles.setdefault(pid, set()).add(got[1])
            self.stop.wait(0.25)

    def roles(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for pid, titles in self.titles.items():
            text = " ".join(titles)
            if "CoarseStage" in text:
                role = "coarse actor"
            elif "FineStage" in text:
                role = "fine actor"
            elif "ray::" in text:
                role = "tasks"
            elif "raylet" in text or "gcs_server" in text:
                role = "ray system"
            else:
                continue
            out[role] = max(out.get(role, 0.0), self.peak[pid])
        return out


class StorePeak:
    """Peak object-store bytes held by the dataset, from Ray Data's own accounting: the streaming
    executor's ``ResourceManager`` (in the driver) sums every operator's queued and in-flight blocks
    after each scheduling step; this wraps its ``update_usages`` to keep the maximum. (Ray's
    ``memory_summary`` needs ``grpc``, which the minimal Ray install here does not have.)"""

    def __init__(self):
        from ray.data._internal.execution import resource_manager as rm

        self.peak = 0.0
        self.by_op: dict[str, float] = {}  # MiB per operator at the peak
        orig = rm.ResourceManager.update_usages
        box = self

        def update_usages(this, *a, **k):
            out = orig(this, *a, **k)
            total = float(this.get_global_usage().object_store_memory or 0) / 2 ** 20
            if total > box.peak:
                box.peak = total
                try:
                    box.by_op = {op.name: round(float(this.get_op_usage(op).object_store_memory or 0) / 2 ** 20, 2)
                                 for op in this._topology}
                except Exception:  # noqa: BLE001 - a Ray without these internals: total only
                    box.by_op = {}
            return out

        rm.ResourceManager.update_usages = update_usages


def child(args) -> dict:
    from m3ddm_ray.distributed.config import load_config
    from m3ddm_ray.distributed.job import run_job
    from m3ddm_ray.distributed.manifest import validate_manifest, write_manifest

    tmp = Path(args.workdir)
    clip = tmp / f"synthetic_{args.frames}.mp4"
    t0 = time.perf_counter()
    make_video(clip, args.frames)
    cfg = load_config(ROOT / "configs" / "tiny-cpu.yaml")
    cfg.update(model=str(TINY_UNET), vae=str(TINY_VAE), ratios=["9:16"], canvas_size=64)
    cfg["sampler"]["steps"] = args.steps
    cfg["ray"]["num_cpus"] = args.cpus
    manifest = str(tmp / f"m{args.frames}.jsonl")
    entry = {"video_uri": str(clip), "clip_id": f"syn{args.frames}"}
    if args.task == "inpaint":
        make_masks(tmp / f"masks{args.frames}", args.frames)
        entry.update(task="inpaint", mask_uri=str(tmp / f"masks{args.frames}"))
    elif args.task == "extend":
        entry.update(task="extend", extend_frames=20)
    make_s = time.perf_counter() - t0
    write_manifest(validate_manifest([entry]), manifest)
    store = StorePeak()
    sampler = Sampler()
    sampler.thread.start()
    result = run_job(cfg, manifest, str(tmp / f"out{args.frames}"), mode="overwrite")
    sampler.stop.set()
    sampler.thread.join()
    (row,) = result.table.to_pylist()
    return {"frames": args.frames, "task": args.task, "status": row["status"], "error": row["error"], "job_s": result.seconds,
            "make_video_s": make_s, "driver_peak_mib": peak_rss_mib(), "object_store_peak_mib": store.peak, "object_store_by_op_mib": store.by_op,
            "roles_peak_mib": sampler.roles(), "output_frames": row["frames"]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--lengths", default="300,3000,18000")
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--cpus", type=int, default=4)
    p.add_argument("--task", default="outpaint", choices=["outpaint", "inpaint", "extend"])
    p.add_argument("--json", default=None)
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--frames", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--workdir", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        import json

        print(json.dumps(child(args)))
        return
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in [int(x) for x in args.lengths.split(",")]:
            r = run_child([__file__, "--child", "--frames", str(n), "--steps", str(args.steps),
                           "--cpus", str(args.cpus), "--task", args.task, "--workdir", tmp])
            runs.append(r)
            print(r, flush=True)
            for f in Path(tmp).glob("synthetic_*.mp4"):
                f.unlink()
            for d in Path(tmp).glob("masks*"):
                shutil.rmtree(d)
    roles = ["coarse actor", "fine actor", "tasks", "ray system"]
    rows = [[r["frames"], r["status"], f"{r['job_s']:.0f}", *(f"{r['roles_peak_mib'].get(k, float('nan')):.0f}" for k in roles),
             f"{r['driver_peak_mib']:.0f}", f"{r['object_store_peak_mib']:.1f}"] for r in runs]
    print_table(["frames", "status", "job s", *[f"{k} MiB" for k in roles], "driver MiB", "object store MiB"], rows,
                title=f"peak memory vs length ({args.task}, tiny model, canvas 64, {args.steps} steps)")
    write_json(args.json, {"machine": machine_info(), "steps": args.steps, "task": args.task, "runs": runs})


if __name__ == "__main__":
    main()
