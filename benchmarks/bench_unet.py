"""Per-call CPU time of one UNet forward (one 16-frame window, 3 guidance branches), fp32, no_grad.

Each model is measured in its own child process so that the peak RSS of one does not hide
another:

* ``tiny``: the golden tiny UNet (``tests/data/golden/models/unet``, 1.7 M parameters) at a 64
  canvas: ``sample (3, 9, 16, 8, 8)``, global tokens ``(3, 64, 320)``.
* ``tiny-b4``: the same with the official 4-branch batch (``(4, 9, 16, 8, 8)``; the official code
  computes a fourth branch and discards it), to compare with the official per-window timings.
* ``full``: the released architecture (``tests/data/golden/full_config.json``) with random weights
  at a 256 canvas: ``sample (3, 9, 16, 32, 32)``, global tokens ``(3, 3136, 320)``. Built on the
  ``meta`` device, materialised with ``to_empty`` and filled with a cheap init (normal(0, 0.02)
  weights, unit norm scales, zero biases) — the timing does not depend on the values.

The sampler calls the UNet with precomputed ``global_tokens`` (encoded once per window), so that
is what is timed; the token encoding (``encode_global_frames``) is timed separately.

Usage::

    .venv/bin/python benchmarks/bench_unet.py [--quick] [--skip-full] [--only tiny,tiny-b4,full] [--json OUT]

Each measurement first waits (up to $BENCH_MAX_WAIT s, default 600) for other processes to leave
the CPUs alone and reports the CPU load of other processes during the timed calls.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (GOLDEN, TINY_UNET, CpuMeter, machine_info, peak_rss_mib, print_table,  # noqa: E402
                     run_child, wait_quiet, write_json)


def _cheap_init(model) -> None:
    import torch

    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim >= 2:
                p.normal_(0.0, 0.02)
            elif name.endswith("bias"):
                p.zero_()
            else:  # 1-D scales (GroupNorm / LayerNorm / BatchNorm weights)
                p.fill_(1.0)
        for name, b in model.named_buffers():
            if name.endswith("running_var"):
                b.fill_(1.0)
            else:  # running_mean, num_batches_tracked
                b.zero_()


def child(which: str, repeats: int, warmup: int) -> dict:
    import torch

    from m3ddm_ray.models.loading import load_unet, unet_from_config

    out: dict = {"model": which, "threads": torch.get_num_threads()}
    t0 = time.perf_counter()
    if which in ("tiny", "tiny-b4"):
        unet = load_unet(TINY_UNET, "fp32", "cpu")
        h = 8
    else:
        cfg = json.loads((GOLDEN / "full_config.json").read_text())
        with torch.device("meta"):
            unet = unet_from_config(cfg, "full_config.json")
        unet = unet.to_empty(device="cpu")
        _cheap_init(unet)
        unet = unet.eval().requires_grad_(False)
        h = 32
    out["build_seconds"] = time.perf_counter() - t0
    out["params"] = sum(p.numel() for p in unet.parameters())
    out["rss_after_build_mib"] = peak_rss_mib()

    gen = torch.Generator().manual_seed(0)
    branches = 4 if which == "tiny-b4" else 3
    sample = torch.randn(branches, 9, 16, h, h, generator=gen)
    g = torch.randn(16, 4, h, h, generator=gen)
    t = torch.tensor(961)
    with torch.no_grad():
        t1 = time.perf_counter()
        tokens = unet.encode_global_frames(torch.cat([torch.zeros_like(g), g]), 2)  # (2, N, 320), once per window
        out["encode_global_seconds"] = time.perf_counter() - t1
        context = torch.cat([tokens[0:1], tokens[0:1], tokens[1:2]])  # branches uu, cu, cc
        if branches == 4:  # the official batch: uu, cu, uc (discarded), cc
            context = torch.cat([tokens[0:1], tokens[0:1], tokens[1:2], tokens[1:2]])
        out["sample_shape"] = list(sample.shape)
        out["tokens_shape"] = list(context.shape)

        def call():
            return unet(sample, t, fps=15.0, global_tokens=context).sample

        for _ in range(warmup):
            call()
        times, cpu, foreign = [], [], []
        for _ in range(repeats):
            with CpuMeter() as m:
                call()
            times.append(m.wall)
            cpu.append(m.ours)
            foreign.append(m.foreign_cores)
    out.update(median_seconds=statistics.median(times), times=times, cpu_seconds=cpu,
               median_cpu_seconds=statistics.median(cpu), foreign_cores_per_call=foreign,
               foreign_cores=statistics.mean(foreign), repeats=repeats, warmup=warmup, peak_rss_mib=peak_rss_mib())
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer repetitions (tiny 5, full 1 warm-up + 1)")
    ap.add_argument("--skip-full", action="store_true", help="only the tiny model")
    ap.add_argument("--only", default=None, help="comma-separated subset of tiny,tiny-b4,full")
    ap.add_argument("--repeats", type=int, default=None, help="timed calls of the tiny model (default 20)")
    ap.add_argument("--full-repeats", type=int, default=None, help="timed calls of the full model (default 2)")
    ap.add_argument("--no-wait", action="store_true", help="do not wait for other processes to go quiet")
    ap.add_argument("--json", default=None, help="write the results to this JSON file")
    ap.add_argument("--child", choices=["tiny", "tiny-b4", "full"], help=argparse.SUPPRESS)
    ap.add_argument("--warmup", type=int, default=1, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.child:
        print(json.dumps(child(args.child, args.repeats, args.warmup)))
        return 0

    tiny_n = args.repeats or (5 if args.quick else 20)
    full_n = args.full_repeats or (1 if args.quick else 2)
    results = []
    todo = [("tiny", tiny_n, 2), ("tiny-b4", tiny_n, 2), ("full", full_n, 1)]
    for which, n, w in todo:
        if (which == "full" and args.skip_full) or (args.only and which not in args.only.split(",")):
            continue
        if not args.no_wait:
            wait_quiet()
        results.append(run_child([__file__, "--child", which, "--repeats", str(n), "--warmup", str(w)]))

    rows = []
    for r in results:
        rows.append([r["model"], f"{r['params'] / 1e6:.1f} M", "x".join(map(str, r["sample_shape"])),
                     "x".join(map(str, r["tokens_shape"])), f"{r['warmup']}+{r['repeats']}", r["median_seconds"],
                     min(r["times"]), max(r["times"]), r["median_cpu_seconds"], r["median_seconds"] * 50, r["encode_global_seconds"],
                     r["build_seconds"], r["rss_after_build_mib"], r["peak_rss_mib"], r["foreign_cores"]])
    table = print_table(
        ["model", "params", "sample", "global tokens", "warm-up+timed", "median s/call", "min s", "max s", "median process CPU s/call",
         "x50 steps (s/window)", "encode_global s", "build s", "RSS after build MiB", "peak RSS MiB",
         "other load (cores)"],
        rows, title=f"UNet forward, fp32 CPU, torch threads={results[0]['threads']}")
    write_json(args.json, {"machine": machine_info(), "results": results, "table": table})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
