"""Joining the pieces of a segmented output into its video (a CPU task the driver starts once every
segment of a (clip, ratio) has been finalized; :mod:`.segments`)."""

from __future__ import annotations

import math
from typing import Any, Mapping

from .. import storage
from ..quality import REPORT_KEYS
from ..video import concat_videos, fps_to_fraction
from .rows import check_row
from .segments import fine_busy, pieces_folder
from .stages import fail_row, is_frame_folder, has_audio, result_row, row_task


def _weighted(pieces: list[dict], key: str) -> float:
    num = den = 0.0
    for p in pieces:
        v, w = p.get(key), float(p.get("piece_frames") or 0)
        if v is None or (isinstance(v, float) and math.isnan(v)) or w <= 0:
            continue
        num += float(v) * w
        den += w
    return num / den if den else float("nan")


def _sum(pieces: list[dict], key: str) -> float:
    vals = [float(p[key]) for p in pieces if p.get(key) is not None and not math.isnan(float(p[key]))]
    return float(sum(vals)) if vals else float("nan")


def assemble(pieces: list[dict], cfg: Mapping[str, Any]) -> dict:
    """Join the pieces of one (clip, ratio) into its output video; returns its result row.

    ``pieces``: every segment row of the output (any order), as the finalize stage returned them --
    in the tiled mode every (segment, unit) row, of which those that encoded their segment's piece
    carry its ``piece_uri`` (two units may have encoded the same piece: it counts once).
    A segment that failed makes the whole output an ``error`` row (its message). The pieces (and
    the units' pixels) are deleted in every case.
    """
    pieces = sorted(pieces, key=lambda p: int(p["segment"]))
    encoded = list({p["piece_uri"]: p for p in pieces if p.get("piece_uri")}.values())  # one row per piece
    row = dict(encoded[0] if encoded else pieces[0])
    so = cfg.get("storage_options") or None
    # in video order: the piece names are numbered by position (a backward extension's from the end)
    uris = sorted(p["piece_uri"] for p in encoded)
    try:
        failed = [p for p in pieces if p["status"] == "error"]
        if failed:
            row.update(status="error", error=failed[0]["error"])
        else:
            try:
                audio = row["video_uri"] if has_audio(row) and not is_frame_folder(row["video_uri"], cfg) else None
                # the audio is read from the source URI itself (range reads), not from a download
                # an extension keeps the audio under its known frames (the task's audio window)
                task = row_task(row, cfg, open_masks=False)
                delay, end = task.audio_window(task.num_rows(int(row["frames"])), fps_to_fraction(float(row["fps"])))
                frames = concat_videos(uris, row["output_uri"], audio_source=audio, storage_options=so,
                                       audio_delay_s=delay, audio_end_s=end)
                want = int(row.get("output_frames") or row["frames"])
                if frames != want:
                    raise RuntimeError(f"the joined video has {frames} frames, {want} expected "
                                       f"(source: {row['frames']})")
                row["status"] = "ok"
            except Exception as exc:  # noqa: BLE001 - one bad output must not stop the job
                row = fail_row(dict(row, status="pending"), "finalize", exc, cfg)
        for key in REPORT_KEYS:
            row[key] = _weighted(encoded, key)
        for key in ("seconds_fine", "seconds_finalize", "seconds_unet"):
            row[key] = _sum(pieces, key)
        row["fine_busy"] = fine_busy(pieces)
    finally:
        storage.remove_tree(pieces_folder(row["output_uri"]), so)
    return check_row(dict(result_row(row, cfg), fine_busy=row.get("fine_busy")), "join")


