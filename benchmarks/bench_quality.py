"""Wall time of :func:`m3ddm_ray.quality.quality_report` on a full-size clip (moved out of the tests).

The case is the one the old timed test used: 300 random ``uint8`` frames at the released 256 canvas,
``(300, 256, 256, 3)``, with a horizontal band mask (rows 40..215 known, the rest generated, like a
16:9 source on a 1:1 canvas). The report runs once per output in the finalize stage, so it should
stay a small part of a job (the old test's budget was 4 s on one core).

Usage::

    .venv/bin/python benchmarks/bench_quality.py [--repeats 3] [--frames 300] [--json OUT]

It waits (up to $BENCH_MAX_WAIT s) for other processes to leave the CPUs alone and reports their
load during the timed calls.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import CpuMeter, machine_info, median_time, print_table, wait_quiet, write_json  # noqa: E402

from m3ddm_ray.quality import quality_report  # noqa: E402


def band_mask(s: int, top: int, bottom: int) -> np.ndarray:
    """uint8 ``(s, s)``: rows ``top..bottom-1`` known (0), the rest generated (1)."""
    m = np.ones((s, s), dtype=np.uint8)
    m[top:bottom] = 0
    return m


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--frames", type=int, default=300)
    p.add_argument("--canvas", type=int, default=256)
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    rng = np.random.default_rng(12)
    frames = rng.integers(0, 256, (args.frames, args.canvas, args.canvas, 3), dtype=np.uint8)
    mask = band_mask(args.canvas, 40 * args.canvas // 256, 216 * args.canvas // 256)
    wait_quiet()
    with CpuMeter() as meter:
        median, times = median_time(lambda: quality_report(frames, mask), args.repeats)
    print_table(["frames", "canvas", "median s", "min s", "max s", "foreign cores"],
                [[args.frames, args.canvas, median, min(times), max(times), meter.foreign_cores]],
                title="quality_report wall time")
    write_json(args.json, {"machine": machine_info(), "frames": args.frames, "canvas": args.canvas,
                           "median_s": median, "times_s": times, "foreign_cores": meter.foreign_cores})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
