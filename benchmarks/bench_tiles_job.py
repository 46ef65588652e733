"""A 720p clip through the Ray batch job in the tiled mode: frames, fps, audio, per-actor busy seconds, peak memory.

The clip: ``tests/data/with_audio_20.mp4`` (160x118, 15 fps, AAC audio, 20 frames) upscaled to
1280x720 (bicubic), ``--frames`` long (played forwards and backwards in turn, its audio repeated
under it), written to a temporary folder. The job
(:func:`m3ddm_ray.distributed.job.run_job`, embedded Ray with ``ray.num_cpus`` of the config) outpaints it
to the ratios of ``--ratios`` with ``configs/tiny-cpu.yaml`` (the shipped small model, 64-px canvas),
``output_size: source`` and ``tiling.working_size`` = ``--working-size``; then, for comparison, the
same job with tiling off (``--no-baseline`` skips it). Strides ``--strides`` (default ``15,1``: one
keyframe pass, then four 15-frame segments for 60 frames) and ``--fine-actors`` fine actors (default 2),
so the segments spread over the pool.

Reported per run: the job's wall seconds, the rows' statuses, and per output the frame count, fps and
audio stream (and its length) of the written file (read back with PyAV) against the source's, and
its size; the fine actors' busy seconds (the job's own note); the peak resident memory (``VmHWM``) of
every Ray worker process (``ray::`` processes: the actors and the task workers, polled while the job
runs, :class:`WorkerPeaks`) and of the driver.

Usage::

    .venv/bin/python benchmarks/bench_tiles_job.py [--working-size 256] [--overlap 16] [--ratios 9:16]
        [--frames 20] [--steps 10] [--no-baseline] [--json OUT]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import DATA, ROOT, machine_info, peak_rss_mib, print_table, write_json  # noqa: E402

SOURCE = DATA / "with_audio_20.mp4"


def make_720p(src: Path, dst: Path, frames: int) -> dict:
    """``frames`` frames of ``src`` upscaled to 1280x720 (bicubic), played forwards and backwards in turn
    when ``src`` is shorter, and its audio repeated under them; returns the clip's :func:`probe`."""
    import av
    import cv2
    import numpy as np

    with av.open(str(src)) as inp:
        vin = inp.streams.video[0]
        rate = vin.average_rate
        clip = [f.to_ndarray(format="rgb24") for f in inp.decode(vin)]
    with av.open(str(src)) as inp:
        ain = inp.streams.audio[0] if inp.streams.audio else None
        sound = [f for f in inp.decode(ain)] if ain is not None else []
        sample_rate = ain.codec_context.sample_rate if ain is not None else None
    order = list(range(len(clip))) + list(range(len(clip) - 2, 0, -1))  # ping-pong
    with av.open(str(dst), "w") as out:
        vout = out.add_stream("libx264", rate=rate)
        vout.width, vout.height, vout.pix_fmt = 1280, 720, "yuv420p"
        vout.options = {"crf": "18", "preset": "veryfast"}
        aout = out.add_stream("aac", rate=sample_rate) if sound else None
        for i in range(frames):
            img = cv2.resize(clip[order[i % len(order)]], (1280, 720), interpolation=cv2.INTER_CUBIC)
            for pkt in vout.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")):
                out.mux(pkt)
        for pkt in vout.encode():
            out.mux(pkt)
        if aout is not None:
            need, done = frames / float(rate), 0.0
            while done < need:
                for frame in sound:
                    if done >= need:
                        break
                    frame.pts = None
                    done += frame.samples / frame.sample_rate
                    for pkt in aout.encode(frame):
                        out.mux(pkt)
            for pkt in aout.encode():
                out.mux(pkt)
    return probe(dst)


def probe(path: Path | str) -> dict:
    """``{"frames", "fps", "audio", "audio_s", "width", "height", "bytes"}`` of a written video (decoded
    frame count; ``audio_s``: seconds from the first to the end of the last audio packet)."""
    import av

    with av.open(str(path)) as c:
        v = c.streams.video[0]
        n = sum(1 for _ in c.decode(v))
        audio_s = None
        if c.streams.audio:
            c.seek(0)
            a = c.streams.audio[0]
            spans = [(float(p.pts * p.time_base), float((p.pts + (p.duration or 0)) * p.time_base))
                     for p in c.demux(a) if p.pts is not None]
            audio_s = round(max(e for _, e in spans) - min(s for s, _ in spans), 3) if spans else 0.0
        return {"frames": n, "fps": float(v.average_rate), "audio": len(c.streams.audio), "audio_s": audio_s,
                "width": v.width, "height": v.height, "bytes": os.path.getsize(path)}


class WorkerPeaks:
    """Polls every ``ray::`` process on this machine while the job runs (a background thread, every
    ``period`` seconds) and keeps each process's peak resident memory (``VmHWM``, MiB) and the titles
    it showed (``ray::MapWorker(MapBatches(FineStage))``, ``ray::IDLE``, ...): actors exit with the
    job, so their peaks are read while they live."""

    def __init__(self, period: float = 0.25):
        import threading

        self.period, self.peaks, self.titles = period, {}, {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.sample()

    def _loop(self):
        while not self._stop.wait(self.period):
            self.sample()

    @staticmethod
    def _ours(pid: str) -> bool:
        """Whether ``pid`` descends from this process (the Ray instance this script started, not
        another one on the machine)."""
        me = str(os.getpid())
        for _ in range(16):
            try:
                stat = Path(f"/proc/{pid}/stat").read_text()
            except OSError:
                return False
            pid = stat.rsplit(")", 1)[1].split()[1]  # ppid
            if pid == me:
                return True
            if pid in ("0", "1"):
                return False
        return False

    def sample(self) -> None:
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            try:
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
                if not cmd.startswith("ray::") or not self._ours(pid):
                    continue
                hwm = next(ln for ln in Path(f"/proc/{pid}/status").read_text().splitlines() if ln.startswith("VmHWM"))
            except (OSError, StopIteration):
                continue
            mib = int(hwm.split()[1]) / 1024
            self.peaks[pid] = max(self.peaks.get(pid, 0.0), mib)
            self.titles.setdefault(pid, set()).add(cmd.split()[0])

    def report(self) -> dict[str, float]:
        """``{"<titles> (pid N)": peak MiB}``, largest first."""
        rows = {f"{' / '.join(sorted(self.titles[p]))} (pid {p})": round(v, 1) for p, v in self.peaks.items()}
        return dict(sorted(rows.items(), key=lambda kv: -kv[1]))


def run(cfg: dict, manifest: str, out_dir: Path) -> dict:
    """One job on a fresh embedded Ray; the rows, outputs read back, busy note and peaks."""
    import ray

    from m3ddm_ray.distributed.job import run_job

    ray.init(address="local", num_cpus=cfg["ray"]["num_cpus"], include_dashboard=False, ignore_reinit_error=True)
    try:
        t0 = time.perf_counter()
        with WorkerPeaks() as watch:
            result = run_job(cfg, manifest, str(out_dir))
        wall = time.perf_counter() - t0
        peaks = watch.report()
    finally:
        ray.shutdown()
    rows = result.table.to_pylist()
    outputs = [dict(probe(r["output_uri"]), ratio=r["ratio"], status=r["status"]) if r["status"] == "ok"
               else {"ratio": r["ratio"], "status": r["status"], "error": r.get("error")} for r in rows]
    busy = [n for n in result.notes if "busy" in n]
    return {"wall_s": round(wall, 1), "job_s": round(result.seconds, 1), "outputs": outputs, "busy": busy,
            "worker_peak_mib": peaks, "seconds_unet": [r.get("seconds_unet") for r in rows]}


def main(argv: list[str] | None = None) -> int:
    from m3ddm_ray.distributed.config import load_config
    from m3ddm_ray.distributed.manifest import validate_manifest, write_manifest

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--working-size", type=int, default=256)
    ap.add_argument("--overlap", type=int, default=16)
    ap.add_argument("--ratios", default="9:16")
    ap.add_argument("--frames", type=int, default=60, help="clip length; >= 50 gives keyframes and several segments")
    ap.add_argument("--fine-actors", type=int, default=2)
    ap.add_argument("--strides", default="15,1",
                    help="window strides (config `strides`): 15,1 cuts 60 frames into 4 segments for the fine actors")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--no-baseline", action="store_true")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)

    tmp = Path(tempfile.mkdtemp(prefix="bench_tiles_job_"))
    src = tmp / "clip_720p.mp4"
    source = make_720p(SOURCE, src, args.frames)
    manifest = str(tmp / "manifest.jsonl")
    write_manifest(validate_manifest([{"video_uri": str(src), "clip_id": "clip_720p"}]), manifest)
    base = load_config(ROOT / "configs" / "tiny-cpu.yaml")
    base["model"], base["vae"] = str(ROOT / base["model"]), str(ROOT / base["vae"])
    base["ratios"] = args.ratios.split(",")
    base["output_size"] = "source"
    base["strides"] = [int(x) for x in args.strides.split(",")]
    base["stages"] = dict(base["stages"], fine=dict(base["stages"]["fine"], num_actors=args.fine_actors))
    base["sampler"] = dict(base.get("sampler") or {}, steps=args.steps)
    runs = {"tiled": dict(base, tiling={"working_size": args.working_size, "overlap": args.overlap})}
    if not args.no_baseline:
        runs["whole-canvas"] = dict(base, tiling={"working_size": None})
    report = {"machine": machine_info(), "source": source, "settings": vars(args), "runs": {}}
    for name, cfg in runs.items():
        report["runs"][name] = run(cfg, manifest, tmp / name)
        print(name, report["runs"][name], flush=True)
    report["driver_peak_mib"] = round(peak_rss_mib(), 1)
    rows = []
    for name, r in report["runs"].items():
        for o in r["outputs"]:
            rows.append([name, o["ratio"], o["status"], o.get("frames"), f"{o.get('fps', float('nan')):.3f}",
                         f"{o.get('audio')} ({o.get('audio_s')} s)", f"{o.get('width')}x{o.get('height')}", r["job_s"],
                         "; ".join(r["busy"]), max(r["worker_peak_mib"].values(), default=float("nan"))])
    print_table(["run", "ratio", "status", "frames", "fps", "audio streams (length)", "size", "job s", "busy",
                 "max worker peak MiB"], rows, title=f"source: {source}")
    if args.json:
        write_json(args.json, report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
