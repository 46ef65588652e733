"""Inpaint and extend rows of the batch job: what they are called, what they hash, how they are
prepared and finalized -- thin adapters over :mod:`m3ddm_ray.tasks` (docs/tasks.md).

A manifest row with ``task=inpaint`` or ``task=extend`` becomes **one** job row (no target ratio:
the output keeps the source size), whose ``ratio`` column holds the task name, so every key of the
job -- result rows, resume, pieces -- stays ``(clip_id, ratio)``:

* output ``<output>/[<prefix>/]<clip_id>/<clip_id>_<task>_<hash>.mp4``; the hash
  (:func:`~.config.config_hash`) also covers the task's inputs (:func:`task_spec`: the mask URI and
  dilation, or the number of new frames and the direction), so changing them never reuses an
  output;
* prepare (:func:`prepare_task`): one decode of the source into memory, the mask source read and
  fitted (count, size, empty, all ones: an ``error`` row naming ``mask_uri``), then
  :func:`tasks.prepare_inpaint` / :func:`tasks.prepare_extend`. Unlike outpaint clips, a task clip
  keeps all its canvases in the prepare stage and the coarse stage (the rows of its segments carry
  only their span: :meth:`~m3ddm_ray.pipeline.PreparedClip.segment_slice`), so its memory grows
  with its length;
* the coarse and fine stages run the clip unchanged (per-frame masks: ``frame_masks``); a long clip
  splits into segments as outpaint clips do;
* finalize (:func:`task_output`): the source frames of the output rows (a range decode), the
  source masks (inpaint), the exact source pixels outside the mask / the known frames unchanged,
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
    """A stage row's task (``outpaint`` for rows without one)."""
    return str(row.get("task") or OUTPAINT)


def options(row: Mapping[str, Any]) -> dict[str, Any]:
    """The row's :func:`task_spec` (from its ``task_options`` JSON)."""
    return json.loads(row["task_options"])


def _mask_name(spec: Mapping[str, Any]) -> str:
    return f"mask_uri {spec['mask_uri']}"


def _source_masks(spec: Mapping[str, Any], num_frames: int, hw: tuple[int, int], so,
                  raw: np.ndarray | None = None) -> np.ndarray:
    """uint8 ``(T, H, W)`` 0/1 source masks of an inpaint row: ``raw`` (or the mask source, read
    here) fitted and dilated (:func:`tasks.inpaint_masks`). Raises InputError / VideoError naming
    the mask source."""
    from ..tasks import inpaint_masks
    from ..video import read_masks

    if raw is None:
        raw = read_masks(spec["mask_uri"], so)
    return inpaint_masks(raw, num_frames, hw, int(spec["dilate"]), _mask_name(spec))


def prepare_task(row: Mapping[str, Any], cfg: Mapping[str, Any], settings, cancel: threading.Event,
                 iter_source) -> tuple[Any, Any, Any]:
    """Prepare one inpaint / extend row: ``(info, clip, index)`` as the prepare stage's outpaint path
    returns them (``index``: the decode's :class:`~m3ddm_ray.video.FrameIndex`, or None for a frame
    folder).

    Args:
        iter_source: ``iter_source(cancel) -> (info, frames iterator, index)``, the prepare stage's
            one decode pass over the source.

    Raises:
        InputError / VideoError: an unreadable source or mask source, masks whose count or size do
            not fit the video, empty or all-ones masks (the message names ``mask_uri``).
    """
    from .. import tasks

    spec = options(row)
    so = cfg.get("storage_options") or None
    if spec["task"] == "inpaint":  # masks first: a bad mask fails before the decode
        from ..video import read_masks

        raw = read_masks(spec["mask_uri"], so)
    info, frames, index = iter_source(cancel)
    frames = np.stack(list(frames))
    if spec["task"] == "inpaint":
        fitted = _source_masks(spec, len(frames), frames.shape[1:3], so, raw)
        clip = tasks.prepare_inpaint(frames, fitted, info.fps, settings, _mask_name(spec))
    else:
        clip = tasks.prepare_extend(frames, info.fps, int(spec["frames"]), spec["direction"], settings)
    return info, clip, index


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
        masks = _source_masks(spec, int(row["frames"]), tuple(clip.geom.source_hw),
                              cfg.get("storage_options") or None)[lo:hi]
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
