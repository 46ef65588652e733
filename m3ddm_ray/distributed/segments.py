"""A clip's fine work as independent segments through the job, and their pieces joined into one video.

After the coarse stage (global-frame latents + the stride-15 keyframe pass of the whole clip), a
clip row becomes one row per segment (:meth:`m3ddm_ray.plan.WindowPlan.segments`): each carries
only the canvases of its frame span and the few coarse latents its windows read
(:func:`split_row`). Fine actors run segments independently, in any order, on any actor; the
finalize task of a segment encodes its output frames as one H.264 piece next to the output
(:func:`piece_uri`). The driver collects the pieces of each output (:class:`PieceCollector`)
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
import re
from typing import Any, Callable, Mapping

from .. import storage
from .results import row_identity


#: Internal row fields of a segment (besides the clip row's own).
SEGMENT_FIELDS = ("segment", "num_segments", "tile_group", "num_groups", "unit_uri", "piece_uri", "piece_frames", "has_audio", "fine_actor", "seek",
                  "seconds_canvases")


def seek_points(index, plan, to_source: Callable[[str, int, int], tuple[int, int]] | None = None) -> list[dict] | None:
    """Per segment of ``plan``, where a range decode of the source starts (JSON-able): ``span``
    for its :attr:`~m3ddm_ray.plan.Segment.frame_range` (canvases), ``out`` for its output
    frames (source frames at finalize). ``index`` is the prepare pass's
    :class:`~m3ddm_ray.video.FrameIndex` (None for frame folders: a span is a slice of files).
    ``to_source(kind, lo, hi)`` maps working rows ``[lo, hi)`` to the source frames a task clip
    reads for them (:meth:`m3ddm_ray.task.Task.source_range`; ``(0, 0)``: none); default: the same frames."""
    segs = plan.segments()
    if len(segs) <= 1:
        return None
    out = []
    for seg in segs:
        lo, hi = seg.frame_range
        o_lo, o_hi = seg.output_frames[0], seg.output_frames[-1] + 1
        points = {"span": None, "out": None}
        if index is not None:
            for key, (a, b) in (("span", (lo, hi)), ("out", (o_lo, o_hi))):
                if to_source is not None:
                    a, b = to_source(key, a, b)
                if b > a and len(index) >= b:
                    p = index.seek_point(a, b)
                    points[key] = None if p is None else p.to_dict()
        out.append(points)
    return out


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


def num_groups(row: Mapping[str, Any]) -> int:
    """Units of the row's segment (:func:`split_units`; 1 for rows that never were split)."""
    n = row.get("num_groups")
    return 1 if n is None or (isinstance(n, float) and math.isnan(n)) else int(n)


def tile_group(row: Mapping[str, Any]) -> int:
    """The row's unit of its segment (0 for rows that never were split)."""
    u = row.get("tile_group")
    return 0 if u is None or (isinstance(u, float) and math.isnan(u)) else int(u)


def num_pieces_rows(row: Mapping[str, Any]) -> int:
    """Rows the driver collects before the join of the row's output: one per (segment, unit)."""
    return num_segments(row) * num_groups(row)


def split_units(rows: list[dict], units: int) -> list[dict]:
    """The coarse stage's tiled rows: each segment row of :func:`split_row` as ``units`` rows, one
    per unit of its tiles (:func:`m3ddm_ray.tiles.work_units`; ``tile_group`` / ``num_groups``), the
    same clip and state on each (the coarse pass's UNet seconds stay with unit 0 only). A fine actor
    runs one unit of one segment (:meth:`m3ddm_ray.tiled.TiledOutpainter.run_segment`); the finalize
    of the segment's last unit assembles the units' pixels and encodes the segment's piece
    (:class:`~.finalize.FinalizeStage`). ``units <= 1``: the rows unchanged."""
    if units <= 1:
        return rows
    out = []
    for row in rows:
        for u in range(units):
            new = dict(row, tile_group=u, num_groups=units)
            if u and row["segment"] == 0:
                state = pickle.loads(row["state"])
                if state.unet_seconds:
                    state.unet_seconds = 0.0
                    new["state"] = pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL)
            out.append(new)
    return out


def unit_uri(output_uri: str, segment: int, unit: int, units: int) -> str:
    """Where the finalize of unit ``unit`` of ``units`` of segment ``segment`` leaves its pixels."""
    return f"{pieces_folder(output_uri)}/{segment:05d}-unit-{unit:03d}-of-{units:03d}.npz"


def clear_units(output_uri: str, storage_options=None) -> None:
    """Delete the unit files (:func:`unit_uri`) an earlier, interrupted run of this output left in
    its pieces folder, so that a segment is assembled only from units of the run that schedules it
    (the coarse stage calls it before it emits the output's unit rows). Other scratch files stay."""
    folder = pieces_folder(output_uri)
    for name in storage.list_files(folder, storage_options):
        if _UNIT_FILE.fullmatch(name):
            storage.remove_tree(f"{folder}/{name}", storage_options)


_UNIT_FILE = re.compile(r"\d{5}-unit-\d{3}-of-\d{3}\.npz")


def pieces_folder(output_uri: str) -> str:
    """The scratch folder of an output's pieces (deleted once they are joined)."""
    return f"{output_uri}.parts"


def piece_uri(output_uri: str, segment: int, total: int) -> str:
    """Where segment ``segment`` of ``total`` of an output is encoded before the join."""
    return f"{pieces_folder(output_uri)}/{segment:05d}-of-{total:05d}.mp4"


def split_row(row: dict, clip, state, coarse_file: str | None = None) -> list[dict]:
    """The coarse stage's output for one clip row: one row per segment.

    When the prepare stage kept only the keyframe canvases (``frame_ids``: a long outpainting
    clip), a segment row holds a :meth:`~m3ddm_ray.prepare.PreparedClip.segment_shell` (no
    pixels, no mask: the fine actor builds its span's canvases from a range decode, starting at the
    row's ``seek``) and, with ``coarse_file`` (where the caller wrote the clip's coarse latents,
    :func:`m3ddm_ray.coarse_file.write_coarse_latents`), an empty state plus that URI in
    ``coarse_file``: the fine actor reads the global latents and its guides from it
    (:func:`load_coarse_latents`). Such a row is a few KB at any canvas size and video length.
    Otherwise (task clips, or no ``coarse_file``) a segment row holds the
    :meth:`~m3ddm_ray.prepare.PreparedClip.segment_slice` of the canvases or the shell, and
    :func:`~m3ddm_ray.pipeline.segment_state` (global latents and the coarse latents it reads).
    The coarse pass's UNet seconds go with segment 0 only, so the segments' sum is the clip's.
    """
    import json

    from ..pipeline import ClipState, segment_state

    dump = lambda x: pickle.dumps(x, protocol=pickle.HIGHEST_PROTOCOL)  # noqa: E731
    points = json.loads(row.get("seek_points") or "null")
    base = {k: v for k, v in row.items() if k != "seek_points"}
    segs = clip.plan.segments()
    if len(segs) <= 1:
        return [dict(base, segment=0, num_segments=1, clip=dump(clip), state=dump(state))]
    out = []
    shells = clip.keyframes_only
    for seg in segs:
        sub = ClipState() if shells and coarse_file else segment_state(state, seg)
        sub.unet_seconds = state.unet_seconds if seg.index == 0 else 0.0
        part = clip.segment_shell(seg) if shells else clip.segment_slice(seg)
        seek = json.dumps(points[seg.index]) if points else None
        out.append(dict(base, segment=seg.index, num_segments=len(segs), clip=dump(part), state=dump(sub),
                        seek=seek, coarse_file=coarse_file if shells else None))
    return out


def coarse_latents_uri(output_uri: str) -> str:
    """The scratch file of an output's coarse latents (with its pieces; deleted at the join)."""
    return f"{pieces_folder(output_uri)}/coarse-latents.bin"


def load_coarse_latents(row: Mapping[str, Any], clip, state, storage_options=None):
    """``state`` (a segment row's) with the global latents and the coarse guides of the row's segment
    read from its ``coarse_file`` (:func:`split_row`); ``state`` unchanged for a row without one.

    Raises:
        RuntimeError: the file is missing, cut short, or written for another plan.
    """
    uri = row.get("coarse_file")
    if not isinstance(uri, str) or not uri:  # None, or NaN where Ray's block made the column float
        return state
    from ..coarse_file import read_segment_latents

    seg = clip.plan.segments()[clip.segment]
    try:
        state.global_latents, stored = read_segment_latents(uri, seg.coarse_guides, storage_options)
    except FileNotFoundError:
        raise RuntimeError(f"the coarse latents {uri} are gone (deleted, or another job joined this output); "
                           f"run the job again") from None
    state.stored.update(stored)
    return state


class PieceCollector:
    """Driver side: turns the rows coming out of the job into final result rows.

    Rows of single-segment clips pass through. Segment rows are held (small: no pixels) until every
    (segment, unit) of their output (:func:`.results.row_identity`) is in; then
    :func:`~m3ddm_ray.distributed.join.assemble` runs as a Ray task (``submit``) and the caller
    waits for them (:meth:`take_futures`).
    """

    def __init__(self, submit: Callable[[list[dict]], Any]):
        self.submit = submit
        self.groups: dict[tuple[str, str, str | None], list[dict]] = {}  # by results.row_identity
        self.futures: list[Any] = []

    def add(self, row: dict) -> list[dict]:
        """A row from the dataset -> the final rows it completes (0 or 1)."""
        n = num_pieces_rows(row)
        if n <= 1:
            return [dict(row, fine_busy=fine_busy([row]))]
        key = row_identity(row)
        group = self.groups.setdefault(key, [])
        group.append(row)
        if len({(int(r["segment"]), tile_group(r)) for r in group}) == n:
            del self.groups[key]
            self.futures.append(self.submit(group))
        return []

    def take_futures(self) -> list[Any]:
        """The submitted joins (each resolves to one result row); the collector forgets them."""
        out, self.futures = self.futures, []
        return out
