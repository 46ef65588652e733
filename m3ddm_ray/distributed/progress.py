"""The batch job's progress line for logs without a terminal (cron, ``ray job submit``).

Pure Python (no Ray, no torch): which frames a finished row adds, the ETA arithmetic and the wording
of the one line. :class:`~.collect.ProgressLog` counts the rows on the driver and writes the line
every ``ray.progress_interval_s`` seconds and once at the end; in an interactive terminal Ray Data's
own progress bars show instead.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

__all__ = ["eta_seconds", "format_duration", "output_frames", "progress_line"]


def output_frames(row: Mapping[str, Any]) -> int:
    """Output frames a finished row stands for: 0 unless its ``status`` is ``ok``; else
    ``piece_frames`` for one segment's piece of a split clip (:mod:`.segments`), else
    ``output_frames`` (T + N for an extension), else ``frames`` (the source's T; evaluation rows).
    """
    if row.get("status") != "ok":
        return 0
    for key in ("piece_frames", "output_frames", "frames"):
        value = row.get(key)
        if value is not None and not (isinstance(value, float) and math.isnan(value)) and value:
            return int(value)
    return 0


def eta_seconds(done: int, total: int, elapsed_s: float) -> float | None:
    """Seconds until the last of ``total`` rows, at the mean rate so far
    (``(total - done) * elapsed_s / done``). 0.0 when nothing is pending; None before the first row
    finished (no rate yet)."""
    pending = max(total - done, 0)
    if pending == 0:
        return 0.0
    if done <= 0:
        return None
    return pending * float(elapsed_s) / done


def format_duration(seconds: float) -> str:
    """Whole seconds as ``"42s"``, ``"3m05s"`` (under an hour) or ``"1h02m"`` (rounded to the minute).

    Raises:
        ValueError: a negative or non-finite ``seconds``.
    """
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"duration {seconds!r}: expected a finite number of seconds >= 0")
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    m = int(round(s / 60))
    return f"{m // 60}h{m % 60:02d}m"


def progress_line(done: int, total: int, errors: int, frames: int, elapsed_s: float) -> str:
    """One line of job progress, e.g.
    ``"progress: 2/5 rows done, 3 pending, 1 error; 96 frames, 1.48 frames/s; elapsed 1m05s, ETA 1m38s"``.

    Args:
        done: rows finished (any status) out of ``total`` rows of this run.
        errors: of those, rows whose status is ``error``.
        frames: output frames written so far (:func:`output_frames` summed over the finished rows
            and pieces).
        elapsed_s: seconds since the rows started (the rate and the ETA divide by it).

    The ETA is :func:`eta_seconds` (``--`` before the first row finished).
    """
    pending = max(total - done, 0)
    rate = frames / elapsed_s if elapsed_s > 0 else 0.0
    eta = eta_seconds(done, total, elapsed_s)
    plural = "" if errors == 1 else "s"
    return (f"progress: {done}/{total} rows done, {pending} pending, {errors} error{plural}; "
            f"{frames} frames, {rate:.2f} frames/s; elapsed {format_duration(max(elapsed_s, 0.0))}, "
            f"ETA {'--' if eta is None else format_duration(eta)}")
