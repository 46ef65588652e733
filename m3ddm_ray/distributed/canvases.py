"""A segment's canvases, built from a range decode of its span of the source (in the fine actor).

Where the canvases are built: the prepare stage decodes the whole source once but keeps
canvases only for the coarse windows' frames (about ``T / 15``), the global frames and a frame
index; after the coarse stage each segment row carries a
:meth:`~m3ddm_ray.prepare.PreparedClip.segment_shell` (no pixels) and a seek point, and the fine
actor that takes the segment decodes just that span (:func:`m3ddm_ray.video.read_span`: seek to
the recorded key frame, check the pts, else decode from the start) and builds its canvases before
running its windows (:func:`fill_canvases`). So no stage holds a whole clip's canvases or frames,
and the object store carries segment rows without pixels.

Why in the fine actor and not in a CPU stage of its own: Ray Data runs a CPU stage ahead of the
fine pool as fast as it can, and with the per-operator reservation off (see
:func:`~.job._set_execution_context`) nothing holds its output back, so every segment's canvases of
a clip would wait in the object store for a fine actor (77 MiB at 3,000 frames, canvas 64: linear in
length). In the actor, one segment's canvases exist at a time. The cost is the span decode + TELEA
fills on the actor's CPU while its accelerator waits: ``seconds_canvases`` in the rows.

The alternative, VAE-encoding every frame's canvases once in the coarse stage and shipping latents,
would make segment rows 24x smaller at the released 256 canvas (16 KiB of latents vs 384 KiB of
canvases per frame) but put the whole clip's TELEA fills and VAE encodes on the coarse actor, the
one stage that cannot spread over actors: it would serialise what runs in parallel.
"""

from __future__ import annotations

import json
import time
from typing import Any, Mapping

from .sources import is_frame_folder


def read_source_span(row: Mapping[str, Any], cfg: Mapping[str, Any], lo: int, hi: int, which: str = "span"):
    """Source frames ``[lo, hi)`` of the row's video (uint8 ``(hi - lo, H, W, 3)``), seeking from the
    row's ``seek`` point ``which`` (``span`` or ``out``, :func:`.segments.seek_points`); a remote
    video is read with range requests, a frame folder by its files.

    Raises:
        VideoError / InputError: the span cannot be read (e.g. the source changed since prepare).
    """
    from ..video import SeekPoint, read_image_span, read_span

    so = cfg.get("storage_options") or None
    uri = row["video_uri"]
    if is_frame_folder(uri, cfg):
        return read_image_span(uri, lo, hi, so)
    points = json.loads(row.get("seek") or "null") or {}
    return read_span(uri, lo, hi, SeekPoint.from_dict(points.get(which)), so)


def frame_reader(row: Mapping[str, Any], cfg: Mapping[str, Any]):
    """``read(frames) -> uint8 (N, H, W, 3)``: source frames ``frames`` (ascending) of the row's video,
    for the tiled outpainter (:data:`m3ddm_ray.tiled.SourceReader`). A consecutive run is one range
    decode from the row's ``span`` seek point (:func:`read_source_span`), kept for the next call
    with the same run (the fine actor reads its span for the canvases and again for the working
    canvases); scattered frames (the keyframes, in the coarse actor) come from one sequential
    decode that later calls with later frames continue (a frame folder: their files), so the
    keyframes placed 16 at a time cost one decode pass.

    Raises:
        VideoError / InputError: the frames cannot be read (e.g. the source changed since prepare).
    """
    import numpy as np

    from ..errors import InputError
    from ..video import iter_frames, read_image_span

    uri, so = row["video_uri"], cfg.get("storage_options") or None
    kept: dict[tuple[int, int], Any] = {}
    stream: dict[str, Any] = {"frames": None, "next": 0}

    def scattered(ids: list[int]):
        if stream["frames"] is None or ids[0] < stream["next"]:
            stream["frames"], stream["next"] = iter_frames(uri, storage_options=so), 0
        out = []
        for f in ids:
            while stream["next"] <= f:
                frame = next(stream["frames"], None)
                if frame is None:
                    raise InputError(f"{uri}: frame {f} asked, the video ended after {stream['next']} frames; "
                                     "was the source replaced while the job ran? re-run the job")
                stream["next"] += 1
                if stream["next"] - 1 == f:
                    out.append(frame)
        return np.stack(out)

    def read(frames):
        ids = [int(f) for f in frames]
        lo, hi = ids[0], ids[-1] + 1
        if ids == list(range(lo, hi)):
            if (lo, hi) not in kept:
                kept.clear()
                kept[(lo, hi)] = read_source_span(row, cfg, lo, hi)
            return kept[(lo, hi)]
        if is_frame_folder(uri, cfg):
            return np.concatenate([read_image_span(uri, f, f + 1, so) for f in ids])
        return scattered(ids)

    return read


def fill_canvases(row: dict, cfg: Mapping[str, Any], clip, read=None):
    """``clip`` (the row's unpickled clip) with its span's canvases, when it is a segment shell
    (:meth:`~m3ddm_ray.prepare.PreparedClip.needs_canvases`); else ``clip`` unchanged. Sets the
    row's ``seconds_canvases``. Exactly the canvases the whole clip's prepare makes for those frames
    (with their masks where the task has per-row masks, :func:`m3ddm_ray.prepare.span_canvases`).
    ``read``: a :func:`frame_reader` of the row to decode through (default: a range decode)."""
    if not clip.needs_canvases:
        return clip
    from ..prepare import span_canvases

    t0 = time.perf_counter()
    span = (lambda lo, hi: read_source_span(row, cfg, lo, hi)) if read is None else (lambda lo, hi: read(range(lo, hi)))
    clip = span_canvases(clip, span)
    row["seconds_canvases"] = time.perf_counter() - t0
    return clip
