"""A clip's fine work as independent segments through the job, and their pieces joined into one video.

After the coarse stage (global-frame latents + the stride-15 keyframe pass of the whole clip), a
clip row becomes one row per segment (:meth:`m3ddm_ray.plan.WindowPlan.segments`): each carries
only the canvases of its frame span and the few coarse latents its windows read
(:func:`split_row`). Fine actors run segments independently, in any order, on any actor; the
finalize task of a segment encodes its output frames as one H.264 piece next to the output
(:func:`piece_uri`). The driver collects the pieces of each (clip, ratio) (:class:`PieceCollector`)
and, once all are in, a CPU task joins them losslessly with the source audio muxed once and
publishes the video atomically (:func:`m3ddm_ray.distributed.join.assemble`); the pieces are
deleted afterwards.

A clip with a single segment (short clips, ``strides: [1]``, passthrough, errors) keeps the
one-row path: its finalize writes the video directly.

Quality numbers of a segmented output are the per-piece numbers averaged with the pieces' frame
counts as weights (temporal numbers do not see the frame pairs across piece boundaries).
"""

from __future__ import annotations

import math
import pickle
from typing import Any, Callable, Mapping


#: Internal row fields of a segment (besides the clip row's own).
SEGMENT_FIELDS = ("segment", "num_segments", "piece_uri", "piece_frames", "has_audio", "fine_actor")


def fine_busy(rows: list[dict]) -> dict[str, float]:
    """Seconds each fine actor spent on ``rows`` (their ``fine_actor`` / ``seconds_fine``)."""
    busy: dict[str, float] = {}
    for r in rows:
        actor, secs = r.get("fine_actor"), r.get("seconds_fine")
        if actor and secs is not None and not math.isnan(float(secs)):
            busy[str(actor)] = busy.get(str(actor), 0.0) + float(secs)
    return busy


def num_segments(row: Mapping[str, Any]) -> int:
    """Segments of the row's clip (1 for rows that never were split)."""
    n = row.get("num_segments")
    return 1 if n is None or (isinstance(n, float) and math.isnan(n)) else int(n)


def pieces_folder(output_uri: str) -> str:
    """The scratch folder of an output's pieces (deleted once they are joined)."""
    return f"{output_uri}.parts"


def piece_uri(output_uri: str, segment: int, total: int) -> str:
    """Where segment ``segment`` of ``total`` of an output is encoded before the join."""
    return f"{pieces_folder(output_uri)}/{segment:05d}-of-{total:05d}.mp4"


def split_row(row: dict, clip, state) -> list[dict]:
    """The coarse stage's output for one clip row: one row per segment.

    Each segment row holds the clip's :meth:`~m3ddm_ray.pipeline.PreparedClip.segment_slice`
    (canvases of its span only) and :func:`~m3ddm_ray.pipeline.segment_state` (global latents and
    the coarse latents it reads). The coarse pass's UNet seconds go with segment 0 only, so the
    segments' sum is the clip's.
    """
    from ..pipeline import segment_state

    segs = clip.plan.segments()
    if len(segs) <= 1:
        return [dict(row, segment=0, num_segments=1, clip=pickle.dumps(clip, protocol=pickle.HIGHEST_PROTOCOL),
                     state=pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL))]
    out = []
    for seg in segs:
        sub = segment_state(state, seg)
        sub.unet_seconds = state.unet_seconds if seg.index == 0 else 0.0
        out.append(dict(row, segment=seg.index, num_segments=len(segs),
                        clip=pickle.dumps(clip.segment_slice(seg), protocol=pickle.HIGHEST_PROTOCOL),
                        state=pickle.dumps(sub, protocol=pickle.HIGHEST_PROTOCOL)))
    return out


class PieceCollector:
    """Driver side: turns the rows coming out of the job into final result rows.

    Rows of single-segment clips pass through. Segment rows are held (small: no pixels) until every
    segment of their (clip, ratio) is in; then :func:`~m3ddm_ray.distributed.join.assemble` runs as
    a Ray task (``submit``) and the caller waits for them (:meth:`take_futures`).
    """

    def __init__(self, submit: Callable[[list[dict]], Any]):
        self.submit = submit
        self.groups: dict[tuple[str, str], list[dict]] = {}
        self.futures: list[Any] = []

    def add(self, row: dict) -> list[dict]:
        """A row from the dataset -> the final rows it completes (0 or 1)."""
        n = num_segments(row)
        if n <= 1:
            return [dict(row, fine_busy=fine_busy([row]))]
        key = (row["clip_id"], row["ratio"])
        group = self.groups.setdefault(key, [])
        group.append(row)
        if len({int(r["segment"]) for r in group}) == n:
            del self.groups[key]
            self.futures.append(self.submit(group))
        return []

    def take_futures(self) -> list[Any]:
        """The submitted joins (each resolves to one result row); the collector forgets them."""
        out, self.futures = self.futures, []
        return out
