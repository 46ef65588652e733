"""The rows that travel between the job's stages: one typed schema, in one place.

Ray Data hands the stages plain dicts (numpy batches of object columns), so a row stays a dict on
the wire; this module says which keys it may have, of which type, who writes each, and what it
means. :data:`StageRow` is the ``TypedDict`` the stages are annotated with (static checking), built
from the same table :func:`check_row` enforces at run time: every stage checks the rows it hands on,
so a misspelt or undeclared field fails in the stage that wrote it, with the field's name, instead
of silently travelling on. The evaluation job's rows are the same rows plus :data:`EVAL_FIELDS`.

Missing values are None; a float NaN also counts as missing (Ray's block formats may turn a None
into NaN on the way).
"""

from __future__ import annotations

import math
from typing import Any, Mapping, TypedDict

from ..quality import REPORT_KEYS

__all__ = ["JOB_FIELDS", "EVAL_FIELDS", "SCHEMAS", "StageRow", "check_row", "describe", "is_missing"]

_JSON = str  # a JSON document in a string column

#: Every field of an outpaint-job row: name -> (type, written by, meaning).
JOB_FIELDS: dict[str, tuple[type | tuple[type, ...], str, str]] = {
    # identity and settings (expand_manifest_row, on the driver)
    "clip_id": (str, "driver", "the manifest's clip id"),
    "video_uri": (str, "driver", "absolute source URI (video file or frame folder)"),
    "ratio": (str, "driver", "an outpaint row's target ratio, e.g. '9:16'; None for inpaint / extend rows"),
    "task": (str, "driver", "outpaint | inpaint | extend (m3ddm_ray.rules.TASKS)"),
    "task_options": (_JSON, "driver", "an inpaint / extend row's inputs (m3ddm_ray.task.Task.spec); None for outpaint"),
    "mask_uri": (str, "driver", "an inpaint row's mask source (absolute)"),
    "output_uri": (str, "driver", "where the output video goes (deterministic, includes the config hash)"),
    "overrides": (_JSON, "driver", "the row's sampler override columns"),
    "config_hash": (str, "driver", "hash of the settings that change pixels"),
    "settings": (_JSON, "driver", "the resolved settings (what the row ran with; vae_batch_size after an OOM retry)"),
    "previous_result": (str, "resume", "results file of the earlier verdict a skipped row relied on"),
    "status": (str, "every stage", "pending | ok | error | skipped | unchanged (passthrough)"),
    "error": (str, "every stage", "'<stage>: <input>: <message>' of an error row (credentials redacted)"),
    "traceback": (str, "every stage", "the failing stage's traceback (credentials redacted)"),
    # payload (pickled numpy objects; emptied on error and after finalize)
    "clip": (bytes, "prepare, coarse, fine", "pickled PreparedClip: keyframe canvases, a segment shell, or a span's canvases"),
    "state": (bytes, "coarse, fine", "pickled ClipState: global and stored latents, generated canvases"),
    # source facts (prepare)
    "frames": (int, "prepare", "T, frames of the source"),
    "fps": (float, "prepare", "source frame rate (frames per second)"),
    "source_width": (int, "prepare", "source width in pixels (display orientation)"),
    "source_height": (int, "prepare", "source height in pixels"),
    "has_audio": (bool, "prepare", "the source has an audio stream"),
    "output_frames": (int, "prepare", "frames of the output (T; T + N for an extension)"),
    "seek_points": (_JSON, "prepare", "per segment, where a range decode starts (segments.seek_points)"),
    "mask_count": (int, "prepare", "an inpaint row's masks in its mask source (1: one mask for every frame)"),
    # segments (coarse -> fine -> finalize -> join)
    "segment": (int, "coarse", "index of this row's segment (0 for a clip that is not split)"),
    "num_segments": (int, "coarse", "segments of the clip (1: not split)"),
    "seek": (_JSON, "coarse", "this segment's seek points: {'span': ..., 'out': ...}"),
    "tile_group": (int, "coarse", "a tiled row's unit of its segment's tiles (tiles.work_units; 0 when not split)"),
    "num_groups": (int, "coarse", "units of a tiled row's segment (1: the segment is one unit)"),
    "unit_uri": (str, "finalize", "scratch file of a unit's generated pixels, assembled into its segment's piece"),
    "coarse_file": (str, "coarse", "scratch file of a long clip's coarse latents (coarse_file.py), read by fine"),
    "piece_uri": (str, "finalize", "the encoded piece of a segment, before the join"),
    "piece_frames": (int, "finalize", "output frames in the piece"),
    # output facts (finalize / join)
    "output_width": (int, "finalize", "output width in pixels"),
    "output_height": (int, "finalize", "output height in pixels"),
    "model": (str, "finalize", "UNet the row ran with"),
    "vae": (str, "finalize", "VAE the row ran with"),
    # timings (seconds) and where the work ran
    "seconds_prepare": (float, "prepare", "the decode pass + keyframe / global canvases"),
    "seconds_canvases": (float, "fine", "a segment's range decode + canvases (part of seconds_fine)"),
    "seconds_coarse": (float, "coarse", "coarse stage wall time"),
    "seconds_fine": (float, "fine", "fine stage wall time"),
    "seconds_finalize": (float, "finalize", "paste-back, crop, encode, upload"),
    "seconds_unet": (float, "coarse, fine", "time inside the diffusion loops"),
    "coarse_actor": (str, "coarse", "host:pid of the coarse actor"),
    "fine_actor": (str, "fine", "host:pid of the fine actor"),
    "fine_busy": (dict, "driver", "fine actor -> busy seconds for this output (job summary)"),
    **{key: (float, "finalize", "no-reference quality number (m3ddm_ray.quality)") for key in REPORT_KEYS},
}

#: The evaluation job's additional fields (m3ddm_ray.evaluation: rows, scoring).
EVAL_FIELDS: dict[str, tuple[type | tuple[type, ...], str, str]] = {
    "sequence": (str, "eval driver", "dataset sequence name"),
    "dataset": (str, "eval driver", "dataset name"),
    "split": (str, "eval driver", "dataset split"),
    "uri": (str, "eval driver", "clip source URI"),
    "start": (int, "eval driver", "first frame of the clip in its sequence"),
    "protocol": (str, "eval driver", "evaluation protocol name"),
    "mask_ratio": (float, "eval driver", "masked share of the frame"),
    "ratio_label": (str, "eval driver", "mask-ratio case label"),
    "method": (str, "eval driver", "m3ddm or a baseline filler"),
    "record": (_JSON, "eval driver", "the EvalClip record"),
    "fvd_real_wanted": (bool, "eval driver", "this row computes the clip's real-video FVD features"),
    "fvd_real": (bytes, "score", "I3D features of the ground truth"),
    "fvd_fake": (bytes, "score", "I3D features of the output"),
    "seconds_method": (float, "score", "a baseline's fill time"),
    "seconds_score": (float, "score", "metric time"),
    # a task evaluation's scores (m3ddm_ray.evaluation.cases; "task" is a job field)
    "mask_motion": (str, "score", "inpaint: stationary | moving"),
    "context": (int, "score", "extend: known frames given to the method"),
    "predict": (int, "score", "extend: frames predicted"),
    "temporal": (float, "score", "inpaint: temporal consistency in the hole, levels (lower is better)"),
    "psnr_frames": (str, "score", "extend: JSON list, PSNR per predicted frame index"),
    "ssim_frames": (str, "score", "extend: JSON list, SSIM per predicted frame index"),
    "lpips_frames": (str, "score", "extend: JSON list, LPIPS per predicted frame index"),
    **{name: ((int, float, str, bool), "score", "a per_clip.parquet column")
       for name in ("psnr", "ssim", "lpips", "bmse", "psnr_generated", "mse", "bmse_gt", "metric_impl",
                    "known_error", "placement_exact", "frame_height", "frame_width", "known_box",
                    "target_ratio", "canvas_size", "image")},
}

#: Row schemas by name: the outpaint job's, and the evaluation job's (a superset).
SCHEMAS: dict[str, dict[str, tuple[type | tuple[type, ...], str, str]]] = {
    "job": JOB_FIELDS,
    "eval": {**JOB_FIELDS, **EVAL_FIELDS},
}

#: The static type of a job row (every field optional: rows gain fields stage by stage).
StageRow = TypedDict("StageRow", {k: (v[0] if isinstance(v[0], type) else Any) for k, v in JOB_FIELDS.items()},
                     total=False)


def is_missing(value: Any) -> bool:
    """Whether a row value is missing: None, or a float NaN (what Ray's blocks may make of a None)."""
    return value is None or (isinstance(value, float) and math.isnan(value))


def check_row(row: Mapping[str, Any], where: str, schema: str = "job") -> Mapping[str, Any]:
    """Check that ``row`` has only declared fields of the declared types; returns it.

    Raises:
        RuntimeError: names ``where`` (the stage), the field and what was expected -- a programming
            error in a stage, not a bad input (those are error rows).
    """
    fields = SCHEMAS[schema]
    for key, value in row.items():
        spec = fields.get(key)
        if spec is None:
            raise RuntimeError(f"{where}: row field {key!r} is not in the {schema} row schema; declare it in "
                               "m3ddm_ray/distributed/rows.py")
        kind = spec[0]
        if is_missing(value):
            continue
        ok = isinstance(value, kind) or (kind is float and isinstance(value, int) and not isinstance(value, bool)) \
            or (kind is bytes and isinstance(value, (bytearray, memoryview))) \
            or (kind is int and isinstance(value, float) and value.is_integer())  # Ray's blocks: int + None -> float
        if kind is int and isinstance(value, bool):
            ok = False
        if not ok:
            want = kind.__name__ if isinstance(kind, type) else " | ".join(k.__name__ for k in kind)
            raise RuntimeError(f"{where}: row field {key!r} is {type(value).__name__}, the schema says {want}")
    return row


def describe(schema: str = "job") -> str:
    """A markdown table of a schema (name, type, written by, meaning) for the docs."""
    lines = ["| field | type | written by | meaning |", "|---|---|---|---|"]
    for name, (kind, who, doc) in SCHEMAS[schema].items():
        k = kind.__name__ if isinstance(kind, type) else " / ".join(t.__name__ for t in kind)
        lines.append(f"| `{name}` | {k} | {who} | {doc} |")
    return "\n".join(lines)
