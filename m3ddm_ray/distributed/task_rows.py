"""Inpaint and extend rows of the batch job: what they are called, what they hash, how they are
prepared and finalized -- thin adapters over :mod:`m3ddm_ray.tasks` (docs/tasks.md).

A manifest row with ``task=inpaint`` or ``task=extend`` becomes **one** job row (no target ratio:
the output keeps the source size): its ``task`` column holds the task and its ``ratio`` is None, so
every key of the job -- result rows, resume, pieces -- is :func:`.results.row_identity`,
``(clip_id, task, ratio)``:

* output ``<output>/[<prefix>/]<clip_id>/<clip_id>_<task>_<hash>.mp4``; the hash
  (:func:`~.config.config_hash`) also covers the task's inputs (:func:`task_spec`: the mask URI and
  dilation, or the number of new frames and the direction), so changing them never reuses an
  output;
* prepare (:func:`prepare_task`): one decode of the source, the mask source opened and checked
  (count, size, empty, all ones: an ``error`` row naming ``mask_uri``). A clip of one segment is
  prepared in memory (:func:`tasks.prepare_inpaint` / :func:`tasks.prepare_extend`); a longer one
  in one streaming pass (:mod:`m3ddm_ray.task_prepare`) that keeps only its keyframes' canvases
  and masks, in the clip's canvas file -- memory flat in length, as for outpaint clips;
* the coarse and fine stages run the clip unchanged (per-frame masks: ``frame_masks``); a long clip
  splits into segments as outpaint clips do, and the fine actor builds a segment's canvases from
  a range decode of its span and a range read of its masks (:func:`span_canvases`);
* finalize (:func:`task_output`): the source frames of the output rows (a range decode), their
  source masks (inpaint, a range read), the exact source pixels outside the mask / the known frames unchanged,
  H.264 with the source audio -- under the known frames only for an extension
  (:func:`audio_window`). A backward extension works on the reversed video: its pieces are
  written reversed and numbered from the end (:func:`piece_position`), so the join is the same.

Quality numbers: inpaint, :func:`m3ddm_ray.quality.quality_report` of the output frames with the
union of their masks as the generated region; extend, of the new frames alone (every pixel
generated, so the known-region numbers are NaN).
"""

from __future__ import annotations

import json
import threading
from typing import Any, Mapping, Sequence

import numpy as np

OUTPAINT = "outpaint"


def task_spec(record: Mapping[str, Any]) -> dict[str, Any] | None:
    """The task inputs of a validated manifest record (or a stage row's ``task_options``) as a
    JSON-able dict, None for outpaint: ``{"task": "inpaint", "mask_uri": str, "dilate": int}`` or
    ``{"task": "extend", "frames": int, "direction": "forward" | "backward"}``. Hashed into the
    row's ``config_hash``."""
    task = record.get("task") or OUTPAINT
    if task == OUTPAINT:
        return None
    if task == "inpaint":
        return {"task": task, "mask_uri": str(record["mask_uri"]), "dilate": int(record.get("mask_dilate") or 0)}
    if task == "extend":
        return {"task": task, "frames": int(record["extend_frames"]),
                "direction": str(record.get("extend_direction") or "forward")}
    raise ValueError(f"unknown task {task!r}")  # the manifest validation rejects it earlier


def task_of(row: Mapping[str, Any]) -> str:
    """A stage row's or result row's task (``outpaint`` for rows without one: no ``task``, None,
    or the NaN a Ray block may make of a None)."""
    from .rows import is_missing

    task = row.get("task")
    return OUTPAINT if is_missing(task) or not task else str(task)


def options(row: Mapping[str, Any]) -> dict[str, Any]:
    """The row's :func:`task_spec` (from its ``task_options`` JSON)."""
    return json.loads(row["task_options"])


def _mask_name(spec: Mapping[str, Any]) -> str:
    return f"mask_uri {spec['mask_uri']}"


def _mask_source(row: Mapping[str, Any], cfg: Mapping[str, Any]):
    """The row's :class:`~m3ddm_ray.video.MaskSource` (a mask video's ``mask_count``, recorded by
    prepare, is not counted again)."""
    from ..video import open_masks

    count = row.get("mask_count")
    known = None if count is None or count != count else int(count)  # None, or NaN in a Ray block
    return open_masks(options(row)["mask_uri"], cfg.get("storage_options") or None, video_count=known)


def source_masks(row: Mapping[str, Any], cfg: Mapping[str, Any], lo: int, hi: int, hw: tuple[int, int]) -> np.ndarray:
    """uint8 ``(hi - lo, H, W)`` 0/1: the fitted, dilated source masks of frames ``[lo, hi)`` of an
    inpaint row, by a range read of its mask source (:func:`tasks.inpaint_mask_frames`; the count
    and usability checks ran in prepare).

    Raises:
        InputError / VideoError: the mask source cannot be read (or changed since prepare).
    """
    from ..tasks import inpaint_mask_frames

    spec = options(row)
    fitted = inpaint_mask_frames(_mask_source(row, cfg).read(lo, hi), hw, int(spec["dilate"]), _mask_name(spec))
    return np.repeat(fitted, hi - lo, axis=0) if len(fitted) == 1 and hi - lo > 1 else fitted


def source_range(row: Mapping[str, Any], kind: str, lo: int, hi: int) -> tuple[int, int]:
    """The source frames ``[a, b)`` (time order) a task row reads for its working rows ``[lo, hi)``:
    ``kind`` ``span`` (a segment's canvases, :func:`m3ddm_ray.task_prepare.extend_span_rows` for an
    extension) or ``out`` (its output frames); the same frames for outpaint / inpaint rows."""
    if task_of(row) != "extend":
        return lo, hi
    from ..tasks import extend_known_span

    spec = options(row)
    known = int(row["frames"])
    if kind == "span":
        from ..task_prepare import extend_span_rows

        lo, hi = extend_span_rows(lo, hi, known)
    return extend_known_span(range(lo, hi), known, spec["direction"])


def prepare_task(row: Mapping[str, Any], cfg: Mapping[str, Any], settings, cancel: threading.Event,
                 iter_source, sink=None) -> tuple[Any, Any, Any, int | None]:
    """Prepare one inpaint / extend row: ``(info, clip, index, mask_count)`` (``index``: the
    decode's :class:`~m3ddm_ray.video.FrameIndex`, or None for a frame folder; ``mask_count``: an
    inpaint row's masks, else None).

    A clip whose plan has several segments is prepared in one streaming pass
    (:mod:`m3ddm_ray.task_prepare`): its keyframes' canvases and masks go to
    ``sink(masked, inpainted, masks)`` (the job's canvas file) and the clip holds none; a short
    clip is prepared in memory (:func:`tasks.prepare_inpaint` / :func:`tasks.prepare_extend`).

    Args:
        iter_source: ``iter_source(cancel) -> (info, frames iterator, index)``, the prepare stage's
            one decode pass over the source.
        sink: where the keyframe canvases of a streamed clip go; None: always in memory.

    Raises:
        InputError / VideoError: an unreadable source or mask source, masks whose count or size do
            not fit the video, empty or all-ones masks (the message names ``mask_uri``).
    """
    from .. import task_prepare, tasks

    spec = options(row)
    masks = None
    if spec["task"] == "inpaint":  # the mask source first: a missing one fails before the decode
        masks = _mask_source(row, cfg)
    info, frames, index = iter_source(cancel)
    total = info.num_frames + (int(spec["frames"]) if spec["task"] == "extend" else 0)
    streamed = sink is not None and task_prepare.task_keyframes(total, info.fps, settings) is not None
    if spec["task"] == "inpaint":
        name = _mask_name(spec)
        if streamed:
            clip = task_prepare.stream_inpaint(frames, info.num_frames, info.fps, masks, settings,
                                               int(spec["dilate"]), sink, name)
        else:
            frames = np.stack(list(frames))
            raw = masks.read(0, masks.count)
            fitted = tasks.inpaint_masks(raw, len(frames), frames.shape[1:3], int(spec["dilate"]), name)
            clip = tasks.prepare_inpaint(frames, fitted, info.fps, settings, name)
        return info, clip, index, masks.count
    if streamed:
        clip = task_prepare.stream_extend(frames, info.num_frames, info.fps, int(spec["frames"]), spec["direction"],
                                          settings, sink)
    else:
        clip = tasks.prepare_extend(np.stack(list(frames)), info.fps, int(spec["frames"]), spec["direction"], settings)
    return info, clip, index, None


def span_canvases(row: Mapping[str, Any], cfg: Mapping[str, Any], clip, read_source):
    """A streamed task clip's segment shell with the canvases of its span
    (:func:`m3ddm_ray.task_prepare.inpaint_span` / :func:`~m3ddm_ray.task_prepare.extend_span`).

    Args:
        read_source: ``read_source(lo, hi) -> uint8 (hi - lo, H, W, 3)`` source frames, seeking
            from the row's ``span`` point.
    """
    from .. import task_prepare

    spec = options(row)
    lo, hi = clip.plan.segments()[clip.segment].frame_range
    if spec["task"] == "inpaint":
        src = _mask_source(row, cfg)
        return task_prepare.inpaint_span(clip, read_source(lo, hi), src.read(lo, hi), int(spec["dilate"]),
                                         _mask_name(spec))
    a, b = source_range(row, "span", lo, hi)
    h, w = clip.geom.source_hw
    frames = read_source(a, b) if b > a else np.zeros((0, h, w, 3), np.uint8)
    return task_prepare.extend_span(clip, frames, int(row["frames"]), spec["direction"])


def piece_position(row: Mapping[str, Any]) -> int:
    """Where a segment's piece goes in the joined video: its segment index, counted from the end for
    a backward extension (its working order is the video reversed)."""
    seg, total = int(row["segment"]), int(row["num_segments"])
    if task_of(row) == "extend" and options(row)["direction"] == "backward":
        return total - 1 - seg
    return seg


def audio_window(row: Mapping[str, Any]) -> tuple[float, float | None]:
    """``(audio_delay_s, audio_end_s)`` of the row's output (:func:`tasks.extend_audio_window` for an
    extension; ``(0, None)``: the source audio as it is)."""
    if task_of(row) != "extend":
        return 0.0, None
    from ..tasks import extend_audio_window
    from ..video import fps_to_fraction

    spec = options(row)
    return extend_audio_window(int(row["frames"]), int(spec["frames"]), fps_to_fraction(float(row["fps"])),
                               spec["direction"])


def task_output(row: Mapping[str, Any], cfg: Mapping[str, Any], clip, state, rows: Sequence[int],
                read_source) -> tuple[np.ndarray, dict[str, float]]:
    """The output frames of the working rows ``rows`` of a task clip, in time order, cropped to even
    sides for H.264, and their quality numbers.

    Args:
        clip, state: the row's :class:`~m3ddm_ray.pipeline.PreparedClip` (whole clip or a segment
            slice) and finished :class:`~m3ddm_ray.pipeline.ClipState`.
        rows: working rows (ascending, contiguous): all of them, or a segment's ``output_frames``.
        read_source: ``read_source(lo, hi) -> uint8 (hi - lo, H, W, 3)`` source frames ``[lo, hi)``.

    Returns:
        ``(uint8 (len(rows), H', W', 3), quality numbers)`` with ``H'``, ``W'`` the source size
        rounded down to even.
    """
    from .. import quality, tasks
    from ..pipeline import generated_array

    spec = options(row)
    rows = [int(r) for r in rows]
    generated = generated_array(clip, state, rows)
    if spec["task"] == "inpaint":
        from .config import job_settings

        settings = job_settings(cfg, json.loads(row["overrides"]))
        lo, hi = rows[0], rows[-1] + 1
        src = read_source(lo, hi)
        masks = source_masks(row, cfg, lo, hi, tuple(clip.geom.source_hw))
        out = tasks.even_frames(tasks.finalize_inpaint(clip, generated, src, masks, settings, rows))
        region = tasks.even_frames(masks).max(axis=0)
        return out, quality.quality_report(out, region)
    known = int(row["frames"])
    lo, hi = tasks.extend_known_span(rows, known, spec["direction"])
    src = read_source(lo, hi) if hi > lo else np.zeros((0,) + tuple(clip.geom.source_hw) + (3,), np.uint8)
    out = tasks.even_frames(tasks.extend_frames(clip, generated, src, rows, known, spec["direction"]))
    new = [i for i, r in enumerate(rows) if r >= known]
    if spec["direction"] == "backward":
        new = [len(rows) - 1 - i for i in new]
    if not new:
        return out, {k: float("nan") for k in quality.REPORT_KEYS}
    frames = out[sorted(new)]
    return out, quality.quality_report(frames, np.ones(frames.shape[1:3], np.uint8))
