"""Examples per second of the UNet training loop, by batch size, torch threads and data path.

Every cell runs the project's own :func:`m3ddm_ray.training.loop.train_loop` (the tiny UNet, AdamW,
gradient clipping, as ``m3ddm-ray train``) for ``--cell-s`` seconds and at least ``--min-steps``
timed steps, on one of three batch feeds:

* ``data``: the uncached path, :func:`m3ddm_ray.training.data.local_batches` (examples made from
  the sources in-process: decode, crop, resize, masks) and the three VAE encodes of
  :func:`m3ddm_ray.training.objective.build_inputs` every step;
* ``cache``: :func:`m3ddm_ray.training.data.cache_batches` over a pool of ``--pool`` examples of
  :mod:`m3ddm_ray.training.latent_cache` (built once per run, its build rate is reported), no encode;
* ``unet``: one precomputed latent batch repeated: the UNet forward + backward + optimizer step (and
  the per-example noise draws of ``build_inputs``) only.

Each step is split into ``data`` (waiting for the batch), ``encode`` (time inside ``vae.encode``)
and ``unet`` (the rest of the step: inputs, forward, backward, optimizer). The first step of a cell
(cold caches) is not counted. Examples/s = batch × counted steps / their wall time.

Usage::

    PYTHONPATH=$PWD OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_train.py \
        [--batch 4,8,16,32] [--threads 1,2] [--modes data,cache,unet] [--cell-s 30] [--min-steps 3] [--pool 256] \
        [--frames 16] [--global-frames 16] [--canvas 64] [--vae DIR] [--device cpu|cuda] [--json OUT]

Defaults: the shipped VAE of the recipe (``tests/data/trained/vae``, 8×), the tiny UNet, the
training manifest ``tests/data/train_manifest.jsonl``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import DATA, TINY_VAE, machine_info, print_table, write_json  # noqa: E402


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


class CellDone(Exception):
    """Raised by the timed batch iterator to end a cell (time box reached, enough steps)."""


class Timer:
    """Wraps a batch iterator and ``vae.encode``: per-step data wait and encode seconds; ends the cell
    (raises :class:`CellDone` from the iterator) once ``cell_s`` have passed and ``min_steps`` steps
    after the warm-up one are timed."""

    def __init__(self, vae, sync, cell_s: float, min_steps: int):
        self.vae, self.sync, self.orig = vae, sync, vae.encode
        self.cell_s, self.min_steps = cell_s, min_steps
        self.requested: list[float] = []
        self.received: list[float] = []
        self.encode_s: list[float] = []

        def encode(*a, **k):
            t = time.perf_counter()
            out = self.orig(*a, **k)
            self.sync()
            if self.encode_s:  # encodes before the first batch (the black latent) are set-up
                self.encode_s[-1] += time.perf_counter() - t
            return out

        vae.encode = encode

    def restore(self) -> None:
        self.vae.encode = self.orig

    def wrap(self, make):
        def batches(start):
            it = iter(make(start))
            while True:
                now = time.perf_counter()
                self.requested.append(now)
                if len(self.requested) >= self.min_steps + 2 and now - self.requested[0] >= self.cell_s:
                    raise CellDone
                b = next(it)
                self.received.append(time.perf_counter())
                self.encode_s.append(0.0)
                yield b
        return batches

    def steps(self) -> list[dict]:
        """Steps 1 .. n-1 (step 0 is warm-up; the last has no following request)."""
        out = []
        for i in range(1, len(self.requested) - 1):
            total = self.requested[i + 1] - self.requested[i]
            data = self.received[i] - self.requested[i]
            out.append({"step_s": total, "data_s": data, "encode_s": self.encode_s[i],
                        "unet_s": total - data - self.encode_s[i]})
        return out


def run_cell(mode: str, batch: int, threads: int, args, sources, pool, vae_dir: str) -> dict:
    import torch

    from m3ddm_ray.models.loading import load_vae
    from m3ddm_ray.training.config import load_train_config
    from m3ddm_ray.training.data import cache_batches, local_batches
    from m3ddm_ray.training.loop import train_loop

    torch.set_num_threads(threads)
    cfg = load_train_config(None, base_overrides(args) + [
        f"train.batch_size={batch}", "train.max_steps=1000000",
        "train.log_every=1000000", "train.checkpoint_every=1000000", f"train.device={args.device}"])
    vae = load_vae(vae_dir, "fp32", args.device)
    sync = torch.cuda.synchronize if args.device.startswith("cuda") else (lambda: None)
    timer = Timer(vae, sync, args.cell_s, args.min_steps)
    if mode == "data":
        make = lambda start: local_batches(cfg, sources, start)  # noqa: E731
    elif mode == "cache":
        make = lambda start: cache_batches(cfg, pool, start)  # noqa: E731
    else:
        fixed = next(cache_batches(cfg, pool, 0))
        make = lambda start: iter(lambda: fixed, None)  # noqa: E731
    with tempfile.TemporaryDirectory(prefix="bench-train-") as out:
        try:
            train_loop(cfg, vae, timer.wrap(make), out, device=args.device)
        except CellDone:
            pass
        finally:
            timer.restore()
    steps = timer.steps()
    row = {"mode": mode, "batch": batch, "threads": threads, "steps": len(steps)}
    if not steps:
        return {**row, "examples_per_s": float("nan")}
    wall = sum(s["step_s"] for s in steps)
    row["examples_per_s"] = batch * len(steps) / wall
    for k in ("step_s", "data_s", "encode_s", "unet_s"):
        row[k] = statistics.fmean(s[k] for s in steps)
    return row


def base_overrides(args) -> list[str]:
    return [f"data.num_frames={args.frames}", f"data.num_global_frames={args.global_frames}",
            f"data.canvas_size={args.canvas}", f"data.cache_examples={args.pool}", "data.cache_dtype=fp16",
            "data.loader=cache"]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batch", type=_ints, default=[4, 8, 16, 32], help="global batch sizes, e.g. 4,8,16,32")
    ap.add_argument("--threads", type=_ints, default=[1, 2], help="torch intra-op threads, e.g. 1,2")
    ap.add_argument("--modes", default="data,cache,unet", help="subset of data,cache,unet")
    ap.add_argument("--cell-s", type=float, default=30.0, help="seconds of training per cell (at least)")
    ap.add_argument("--min-steps", type=int, default=3, help="timed steps per cell (at least; after 1 warm-up)")
    ap.add_argument("--pool", type=int, default=256, help="examples in the latent cache of the cache / unet modes")
    ap.add_argument("--frames", type=int, default=16)
    ap.add_argument("--global-frames", type=int, default=16)
    ap.add_argument("--canvas", type=int, default=64)
    ap.add_argument("--vae", default=str(DATA / "trained" / "vae"),
                    help="VAE folder (default: the shipped trained VAE, the recipe's; "
                         f"{TINY_VAE} is a 4x smaller random one)")
    ap.add_argument("--data", default=str(DATA / "train_manifest.jsonl"), help="training manifest / folder")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--json", default=None, help="write the results here")
    args = ap.parse_args(argv)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    bad = sorted(set(modes) - {"data", "cache", "unet"})
    if bad:
        ap.error(f"--modes: unknown {bad}; use data, cache, unet")

    import torch

    from m3ddm_ray.models.loading import load_vae
    from m3ddm_ray.training.config import load_train_config
    from m3ddm_ray.training.latent_cache import ensure_cache
    from m3ddm_ray.training.sources import read_sources

    sources = read_sources(args.data)
    pool, build = None, None
    if {"cache", "unet"} & set(modes):
        torch.set_num_threads(max(args.threads))
        cfg = load_train_config(None, base_overrides(args))
        with tempfile.TemporaryDirectory(prefix="bench-train-cache-") as root:
            t = time.perf_counter()
            _, pool = ensure_cache(cfg, sources, load_vae(args.vae, "fp32", args.device), root, log=lambda m: None)
            build_s = time.perf_counter() - t
        build = {"examples": args.pool, "seconds": build_s, "examples_per_s": args.pool / build_s,
                 "threads": max(args.threads)}
        print(f"latent cache: {args.pool} examples encoded in {build_s:.1f} s "
              f"({build['examples_per_s']:.1f} examples/s, {max(args.threads)} threads)", flush=True)
    rows = []
    for threads in args.threads:
        for batch in args.batch:
            for mode in modes:
                row = run_cell(mode, batch, threads, args, sources, pool, args.vae)
                rows.append(row)
                print(f"{mode} batch {batch} threads {threads}: {row['examples_per_s']:.2f} examples/s "
                      f"({row['steps']} steps)", flush=True)
    headers = ["mode", "batch", "threads", "steps", "examples/s", "step s", "data s", "encode s", "unet s"]
    print_table(headers, [[r["mode"], r["batch"], r["threads"], r["steps"], r["examples_per_s"],
                           r.get("step_s", float("nan")), r.get("data_s", float("nan")),
                           r.get("encode_s", float("nan")), r.get("unet_s", float("nan"))] for r in rows],
                title=f"training throughput ({args.frames} frames, {args.global_frames} global, canvas "
                      f"{args.canvas}, {args.cell_s:.0f} s per cell, {args.device})")
    write_json(args.json, {"machine": machine_info(), "args": vars(args), "cache_build": build, "cells": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
