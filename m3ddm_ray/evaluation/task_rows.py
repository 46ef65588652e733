"""Rows of the ``inpaint`` / ``extend`` evaluation (``m3ddm-ray eval --task ...``): cases, pending rows,
CPU preparation.

A **case** is what the outpaint protocols call a mask ratio: one set of rows per clip and case.

* ``inpaint``: one case per mask motion of ``eval.mask_motion`` (label ``stationary`` / ``moving``);
  the clip's mask is :func:`.task_protocols.inpaint_case` with area ``eval.mask_area`` and the
  seed :func:`clip_mask_seed` of :func:`mask_key` (the same masks for every method, in every run,
  wherever the data lies);
* ``extend``: one case, label ``c<context>p<predict>`` (:func:`.task_protocols.prediction_case`:
  the first ``context`` frames known, the next ``predict`` the target).

On the wire the rows use only the evaluation job's fields (:data:`m3ddm_ray.distributed.rows.
EVAL_FIELDS`, which the model actors check): ``protocol`` = the task, ``ratio_label`` = the case
label, ``mask_ratio`` = the generated share (mask area, or ``predict / (context + predict)`` of the
frames). The scoring stage adds the task columns (:data:`TASK_FIELDS`, part of the ``eval`` row
schema).

``m3ddm`` rows carry the :class:`~m3ddm_ray.prepare.PreparedClip` of :func:`m3ddm_ray.prepare.
prepare_task` (an :class:`~m3ddm_ray.task.Inpaint` or :class:`~m3ddm_ray.task.Extend`) to the unchanged coarse and fine actor
pools; baseline rows (status ``baseline``) pass through them and are filled in the scoring stage.
"""

from __future__ import annotations

import json
import pickle
import time
import zlib
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from ..distributed.config import config_hash, job_settings
from ..distributed.rows import SCHEMAS
from ..errors import InputError

__all__ = ["TASK_FIELDS", "TaskCase", "task_cases", "mask_key", "clip_mask_seed", "check_one_segment", "build_task_rows",
           "task_ground_truth", "task_inputs", "prepare_task_group"]

#: Fields the scoring stage of a task evaluation adds (JSON lists on the wire, list columns in
#: ``per_clip.parquet``): declared with the evaluation job's other fields in
#: :data:`m3ddm_ray.distributed.rows.EVAL_FIELDS` (``task`` is a job field there).
TASK_FIELDS: dict[str, tuple[type | tuple[type, ...], str, str]] = {
    k: SCHEMAS["eval"][k] for k in ("task", "mask_motion", "context", "predict", "temporal", "psnr_frames",
                                    "ssim_frames", "lpips_frames")}



@dataclass(frozen=True)
class TaskCase:
    """One evaluation case of a task.

    Attributes:
        task: ``inpaint`` or ``extend``.
        label: ``stationary`` / ``moving`` (inpaint) or ``c<c>p<p>`` (extend).
        motion, area: inpaint mask motion and area fraction (None for extend).
        context, predict: extend frame counts (None for inpaint).
    """

    task: str
    label: str
    motion: str | None = None
    area: float | None = None
    context: int | None = None
    predict: int | None = None

    @property
    def mask_ratio(self) -> float:
        """The generated share: mask area (inpaint), ``p / (c + p)`` of the frames (extend)."""
        if self.task == "inpaint":
            return float(self.area)
        return self.predict / (self.context + self.predict)

    @property
    def clip_len(self) -> int | None:
        """Frames of a clip this case needs (extend: ``c + p``; inpaint: None, the clip as cut)."""
        return None if self.task == "inpaint" else self.context + self.predict


def task_cases(spec: Mapping[str, Any]) -> list[TaskCase]:
    """The cases of a validated task spec (:func:`.config.check_task_settings`)."""
    if spec["task"] == "inpaint":
        return [TaskCase("inpaint", m, motion=m, area=spec["mask_area"]) for m in spec["mask_motion"]]
    c, p = spec["context"], spec["predict"]
    return [TaskCase("extend", f"c{c}p{p}", context=c, predict=p)]


def mask_key(uri: str, start: int) -> str:
    """The name a clip's masks are seeded by: ``<file or folder name without extension>@<start>``
    (``chelsea_0@0``, DAVIS ``bear@0``). Not the clip id, which for a folder of videos hashes the
    absolute path: the masks, and so the documented numbers, must not depend on where the data lies."""
    name = str(uri).rstrip("/").rsplit("/", 1)[-1]
    stem = name.rsplit(".", 1)[0] if "." in name else name
    return f"{stem}@{int(start)}"


def clip_mask_seed(key: str, base: int = 0) -> int:
    """The synthetic-mask seed of a clip: ``(base + crc32(key)) mod 2**31`` with ``key`` =
    :func:`mask_key`: independent of the clip's position in the dataset and of the data's location,
    so a clip keeps its masks when others are added or removed."""
    return (int(base) + zlib.crc32(str(key).encode("utf-8"))) % (2 ** 31)


def check_one_segment(num_frames: int, fps: float, strides, where: str) -> None:
    """The task evaluation scores a row's whole clip in one scoring call, so the clip must be one
    segment of the window plan (always below 50 frames with the official strides).

    Raises:
        InputError: a clip whose plan splits into several segments, naming it and the fix.
    """
    from ..plan import plan_windows

    n = len(plan_windows(int(num_frames), float(fps), tuple(strides) if strides else None).segments())
    if n > 1:
        raise InputError(f"{where}: {num_frames} frames make {n} segments of the window plan; the task "
                         f"evaluation scores one-segment clips (always below 50 frames with the official strides): use a "
                         f"shorter eval.clip_len (inpaint) or eval.context + eval.predict (extend)")


def build_task_rows(cfg: Mapping[str, Any], spec: Mapping[str, Any], clips, cases: Sequence[TaskCase]) -> list[list[dict]]:
    """Pending rows grouped by clip: one per (case, method); ``m3ddm`` rows ``pending``, baselines
    ``baseline``. Raises InputError when a clip would be several segments (:func:`check_one_segment`)."""
    settings = job_settings(cfg)
    chash = config_hash(cfg, settings) if "m3ddm" in spec["methods"] else None  # baselines need no model
    settings_json = json.dumps(settings.to_dict(), sort_keys=True)
    groups = []
    for clip in clips:
        record = json.dumps(clip.to_record())
        group = []
        for ci, case in enumerate(cases):
            frames = case.clip_len or clip.num_frames
            if "m3ddm" in spec["methods"] and clip.num_frames >= frames:
                check_one_segment(frames, clip.fps, settings.strides, f"clip {clip.clip_id}")
            for mi, method in enumerate(spec["methods"]):
                model = method == "m3ddm"
                group.append({
                    "clip_id": clip.clip_id, "sequence": clip.sequence, "dataset": clip.dataset, "split": clip.split,
                    "uri": clip.uri, "video_uri": clip.uri, "start": clip.start, "frames": clip.num_frames,
                    "fps": clip.fps, "protocol": case.task, "mask_ratio": case.mask_ratio, "ratio_label": case.label,
                    "method": method, "status": "pending" if model else "baseline", "error": None,
                    "record": record, "overrides": "{}", "clip": b"", "state": b"",
                    "fvd_real_wanted": ci == 0 and mi == 0,
                    "model": str(cfg["model"]) if model else None, "vae": str(cfg["vae"]) if model else None,
                    "config_hash": chash if model else None, "settings": settings_json if model else None,
                })
        groups.append(group)
    return groups


def task_ground_truth(row: Mapping[str, Any], spec: Mapping[str, Any], storage_options=None) -> np.ndarray:
    """The row's ground-truth clip: uint8 ``(T, H, W, 3)``, resized to ``spec['frame_size']`` (OpenCV
    ``INTER_AREA``) when set."""
    from .datasets import EvalClip, load_clip
    from .protocols import resize_frames

    frames = load_clip(EvalClip.from_record(json.loads(row["record"])), storage_options)
    size = spec.get("frame_size")
    return resize_frames(frames, size, "area") if size else frames


def task_inputs(gt: np.ndarray, case: TaskCase, key: str, spec: Mapping[str, Any]):
    """The protocol case of a ground-truth clip: :class:`.task_protocols.InpaintCase` (seeded by
    :func:`clip_mask_seed` of the clip's :func:`mask_key` ``key``) or :class:`.task_protocols.PredictionCase`.

    Raises:
        InputError: a clip too short for ``context + predict``, or bad frames.
    """
    from .task_protocols import inpaint_case, prediction_case

    if case.task == "inpaint":
        return inpaint_case(gt, case.motion, case.area, clip_mask_seed(key, spec.get("mask_seed", 0)))
    return prediction_case(gt, case.context, case.predict)


def prepare_task_group(rows: list[dict], cfg: Mapping[str, Any], spec: Mapping[str, Any]) -> list[dict]:
    """CPU: decode a clip once, build each case, :func:`m3ddm_ray.prepare.prepare_task` it
    (:class:`~m3ddm_ray.task.Inpaint` / :class:`~m3ddm_ray.task.Extend`) for the ``m3ddm`` rows
    (pickled into ``row['clip']``).
    A failure makes every row of the clip an error row naming the clip."""
    from ..distributed.rows import check_row
    from ..prepare import prepare_task
    from ..task import Extend, Inpaint, MaskArray
    from ..distributed.stages import fail_row

    t0 = time.perf_counter()
    so = cfg.get("storage_options") or None
    try:
        cases = {c.label: c for c in task_cases(spec)}
        gt = task_ground_truth(rows[0], spec, so)
        settings = job_settings(cfg)
        prepared: dict[str, bytes] = {}
        for row in rows:
            if row["method"] != "m3ddm":
                continue
            case = cases[row["ratio_label"]]
            if case.label not in prepared:
                inp = task_inputs(gt, case, mask_key(row["uri"], row["start"]), spec)
                if case.task == "inpaint":
                    name = f"synthetic {case.motion} masks"
                    task = Inpaint(MaskArray(inp.masks, name), 0, name)
                    clip = prepare_task(inp.frames, float(row["fps"]), task, settings)
                else:
                    clip = prepare_task(inp.context, float(row["fps"]), Extend(case.predict, "forward"), settings)
                check_one_segment(clip.num_frames, clip.fps, clip.strides, f"clip {row['clip_id']}")
                prepared[case.label] = pickle.dumps(clip, protocol=pickle.HIGHEST_PROTOCOL)
            row["clip"] = prepared[case.label]
    except Exception as exc:  # noqa: BLE001 - one bad clip must not stop the job
        out = [fail_row(dict(r, seconds_prepare=time.perf_counter() - t0), "prepare", exc, cfg) for r in rows]
    else:
        out = [dict(r, seconds_prepare=time.perf_counter() - t0) for r in rows]
    return [check_row(r, "eval prepare", "eval") for r in out]
