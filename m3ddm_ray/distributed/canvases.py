"""The canvas stage (CPU): a segment's canvases, built from a range decode of its span of the source.

Where the canvases are built (issue 12): the prepare stage decodes the whole source once but keeps
canvases only for the coarse windows' frames (about ``T / 15``), the global frames and a frame
index; after the coarse stage each segment row carries a
:meth:`~m3ddm_ray.pipeline.PreparedClip.segment_shell` (no pixels) and a seek point, and this stage
decodes just that span (:func:`m3ddm_ray.video.read_span`: seek to the recorded key frame, check the
pts, else decode from the start) and builds its canvases on a CPU. So no stage holds a whole clip's
canvases or frames, the fine actors get their rows ready to run, and the bytes crossing the object
store per segment are one span's canvases -- not the clip's.

The alternative, VAE-encoding every frame's canvases once in the coarse stage and shipping latents,
would make segment rows 24x smaller at the released 256 canvas (16 KiB of latents vs 384 KiB of
canvases per frame) but put the whole clip's TELEA fills and VAE encodes on the coarse actor, the
one stage that cannot spread over actors: it would serialise what is now parallel.
"""

from __future__ import annotations

import json
import pickle
import time
from typing import Any, Mapping

from .stages import _fail, _is_frame_folder, apply_retry_policy


def read_source_span(row: Mapping[str, Any], cfg: Mapping[str, Any], lo: int, hi: int, which: str = "span"):
    """Source frames ``[lo, hi)`` of the row's video (uint8 ``(hi - lo, H, W, 3)``), seeking from the
    row's ``seek`` point ``which`` (``span`` or ``out``, :func:`.segments.seek_points`); a remote
    video is read with range requests, a frame folder by its files."""
    from ..video import SeekPoint, read_image_span, read_span

    so = cfg.get("storage_options") or None
    uri = row["video_uri"]
    if _is_frame_folder(uri, cfg):
        return read_image_span(uri, lo, hi, so)
    points = json.loads(row.get("seek") or "null") or {}
    return read_span(uri, lo, hi, SeekPoint.from_dict(points.get(which)), so)


class CanvasStage:
    """CPU: fill a segment shell's canvases from a range decode (rows that already hold their
    canvases, and rows that are not pending, pass through). Its time is the row's
    ``seconds_canvases``; the join adds the segments' to the clip's ``seconds_prepare``."""

    def __init__(self, cfg: Mapping[str, Any]):
        self.cfg = cfg

    def __call__(self, row: dict) -> dict:
        if row.get("status") != "pending" or not row.get("clip"):
            return row
        apply_retry_policy(self.cfg)
        t0 = time.perf_counter()
        try:
            from ..pipeline import with_span_canvases

            clip = pickle.loads(row["clip"])
            if not clip.needs_canvases:
                return row
            lo, hi = clip.plan.segments()[clip.segment].frame_range
            frames = read_source_span(row, self.cfg, lo, hi)
            row["clip"] = pickle.dumps(with_span_canvases(clip, frames), protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as exc:  # noqa: BLE001 - one bad segment is an error row, never a dead job
            row = _fail(row, "prepare", exc, self.cfg)
        row["seconds_canvases"] = time.perf_counter() - t0
        return row
