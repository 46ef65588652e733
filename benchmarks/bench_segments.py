"""One long video through the Ray job with 1 and 2 fine actors: wall time, per-actor busy seconds.

A 301-frame video (tree_60's frames played back and forth, 160x120, 15 fps) is outpainted to 9:16
with the golden tiny model (canvas 64, ``--steps`` PNDM steps). Its fine work is 4 segments
(``WindowPlan.segments()``), which the job spreads over the fine actors. Each setting runs in its
own embedded Ray (``num_cpus`` logical CPUs), alternating ``--repeats`` times; the table gives the
median job wall time (``JobResult.seconds``, model loading included), the ratio to 1 actor, and the
busy seconds of every fine actor from the job summary. Each fine actor runs one torch thread, as
Ray gives a 1-CPU actor.

Usage::

    .venv/bin/python benchmarks/bench_segments.py [--steps 8] [--repeats 2] [--json OUT]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import DATA, ROOT, TINY_UNET, TINY_VAE, machine_info, print_table, run_child, write_json  # noqa: E402


def make_clip(path: Path, frames: int = 301) -> None:
    import numpy as np

    from m3ddm_ray.video import read_frames, write_video

    base, info = read_frames(DATA / "tree_60.mp4")
    bounce = np.concatenate([base, base[::-1]])
    write_video(path, np.stack([bounce[i % len(bounce)] for i in range(frames)]), info.fps, preset="veryfast")


def child(args) -> dict:
    """One job in this process (its own embedded Ray)."""
    from m3ddm_ray.distributed.config import load_config
    from m3ddm_ray.distributed.job import run_job
    from m3ddm_ray.distributed.manifest import validate_manifest, write_manifest

    cfg = load_config(ROOT / "configs" / "tiny-cpu.yaml")
    cfg.update(model=str(TINY_UNET), vae=str(TINY_VAE), ratios=["9:16"])
    cfg["sampler"]["steps"] = args.steps
    cfg["ray"]["num_cpus"] = args.cpus
    cfg["stages"]["fine"]["num_actors"] = args.actors
    tmp = Path(args.workdir)
    manifest = str(tmp / f"m{args.actors}.jsonl")
    write_manifest(validate_manifest([{"video_uri": args.clip, "clip_id": "long"}]), manifest)
    result = run_job(cfg, manifest, str(tmp / f"out{args.actors}"), mode="overwrite")
    (row,) = result.table.to_pylist()
    busy = [n for n in result.notes if n.startswith("fine actors busy: ")]
    return {"status": row["status"], "seconds": result.seconds, "seconds_unet": row["seconds_unet"],
            "busy": [float(p.rsplit(" ", 2)[1]) for p in busy[0][len("fine actors busy: "):].split(", ")] if busy else []}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--cpus", type=int, default=4, help="logical CPUs of the embedded Ray")
    p.add_argument("--json", default=None)
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--actors", type=int, default=1, help=argparse.SUPPRESS)
    p.add_argument("--clip", default=None, help=argparse.SUPPRESS)
    p.add_argument("--workdir", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        import json

        print(json.dumps(child(args)))
        return
    runs: dict[int, list[dict]] = {1: [], 2: []}
    with tempfile.TemporaryDirectory() as tmp:
        clip = Path(tmp) / "long_301.mp4"
        make_clip(clip)
        for _ in range(args.repeats):
            for actors in (1, 2):  # alternate the settings
                runs[actors].append(run_child([__file__, "--child", "--actors", str(actors), "--steps", str(args.steps),
                                               "--cpus", str(args.cpus), "--clip", str(clip), "--workdir", tmp]))
    base = statistics.median(r["seconds"] for r in runs[1])
    rows = []
    for actors, rs in runs.items():
        med = statistics.median(r["seconds"] for r in rs)
        rows.append([actors, f"{med:.1f}", f"{med / base:.2f}", " / ".join(f"{b:.1f}" for b in rs[-1]["busy"]),
                     ", ".join(r["status"] for r in rs)])
    print_table(["fine actors", "median job s", "ratio", "busy s per actor (last run)", "status"], rows,
                title=f"301 frames, 4 segments, tiny model, {args.steps} steps")
    write_json(args.json, {"machine": machine_info(), "steps": args.steps, "runs": runs})


if __name__ == "__main__":
    main()
