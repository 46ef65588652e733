"""Rows of the evaluation job: the ``per_clip.parquet`` columns, pending rows per clip, CPU preparation.

Error rows are made by the outpaint job's :func:`m3ddm_ray.distributed.stages.fail_row` (the message
names the input, credentials from ``storage_options`` are redacted).
"""

from __future__ import annotations

import json
import pickle
import time
from typing import Any, Mapping

from ..distributed.config import config_hash, job_settings
from .config import build_protocol, parse_methods

__all__ = ["EVAL_COLUMNS", "eval_schema", "build_rows", "prepare_group"]

#: Columns of ``per_clip.parquet`` and their Arrow types (:func:`eval_schema`).
EVAL_COLUMNS: tuple[tuple[str, str], ...] = (
    ("clip_id", "string"), ("sequence", "string"), ("dataset", "string"), ("split", "string"),
    ("uri", "string"), ("start", "int64"), ("frames", "int64"), ("fps", "float64"),
    ("protocol", "string"), ("mask_ratio", "float64"), ("ratio_label", "string"), ("method", "string"),
    ("status", "string"), ("error", "string"),
    ("psnr", "float64"), ("ssim", "float64"), ("lpips", "float64"), ("bmse", "float64"),
    ("psnr_generated", "float64"), ("mse", "float64"), ("bmse_gt", "float64"), ("metric_impl", "string"),
    ("known_error", "float64"), ("placement_exact", "bool_"),
    ("frame_height", "int64"), ("frame_width", "int64"), ("known_box", "string"),
    ("target_ratio", "string"), ("canvas_size", "int64"), ("image", "string"),
    ("seconds_prepare", "float64"), ("seconds_coarse", "float64"), ("seconds_fine", "float64"),
    ("seconds_method", "float64"), ("seconds_score", "float64"), ("seconds_unet", "float64"),
    ("model", "string"), ("vae", "string"), ("config_hash", "string"), ("settings", "string"),
    # the task columns (m3ddm_ray.evaluation.task_rows): "outpaint" rows have only `task`
    ("task", "string"), ("mask_motion", "string"), ("context", "int64"), ("predict", "int64"),
    ("temporal", "float64"),
    ("psnr_frames", "list_float64"), ("ssim_frames", "list_float64"), ("lpips_frames", "list_float64"),
)


def eval_schema():
    """Arrow schema of ``per_clip.parquet``: one row per clip x case x method, where a case is a mask
    ratio (outpaint), a mask motion (inpaint) or a context / predict split (extend);
    ``*_frames`` columns are ``list<float64>`` (per predicted frame index, extend only)."""
    import pyarrow as pa

    def arrow(kind: str):
        return pa.list_(pa.float64()) if kind == "list_float64" else getattr(pa, kind)()

    return pa.schema([(name, arrow(kind)) for name, kind in EVAL_COLUMNS])


def build_rows(cfg: Mapping[str, Any], ecfg: Mapping[str, Any], clips, cases) -> list[list[dict]]:
    """Pending rows grouped by clip: one per (mask ratio, method) of each clip."""
    methods = parse_methods(ecfg["methods"])
    settings = job_settings(cfg)
    chash = config_hash(cfg, settings) if "m3ddm" in methods else None  # baselines need no model
    settings_json = json.dumps(settings.to_dict(), sort_keys=True)
    groups = []
    for clip in clips:
        record = json.dumps(clip.to_record())
        group = []
        for ci, case in enumerate(cases):
            for mi, method in enumerate(methods):
                model = method == "m3ddm"
                group.append({
                    "clip_id": clip.clip_id, "sequence": clip.sequence, "dataset": clip.dataset, "split": clip.split,
                    "uri": clip.uri, "video_uri": clip.uri, "start": clip.start, "frames": clip.num_frames,
                    "fps": clip.fps,
                    "protocol": case.protocol, "mask_ratio": case.mask_ratio, "ratio_label": case.label,
                    "method": method, "status": "pending" if model else "baseline", "error": None,
                    "record": record, "overrides": "{}", "clip": b"", "state": b"",
                    "fvd_real_wanted": ci == 0 and mi == 0,
                    "model": str(cfg["model"]) if model else None, "vae": str(cfg["vae"]) if model else None,
                    "config_hash": chash if model else None, "settings": settings_json if model else None,
                })
        groups.append(group)
    return groups


def _ground_truth(row: Mapping[str, Any], protocol, storage_options):
    from .datasets import EvalClip, load_clip

    clip = EvalClip.from_record(json.loads(row["record"]))
    return protocol.ground_truth(load_clip(clip, storage_options))


def prepare_group(rows: list[dict], cfg: Mapping[str, Any], ecfg: Mapping[str, Any]) -> list[dict]:
    """CPU: decode a clip once, cut each mask ratio's strip, ``prepare_clip`` it for the ``m3ddm`` rows."""
    from ..distributed.rows import check_row
    from ..distributed.stages import fail_row  # lazy (as every Ray-side import here): the CLI imports this module
    from ..pipeline import prepare_clip

    t0 = time.perf_counter()
    so = cfg.get("storage_options") or None
    try:
        protocol = build_protocol(ecfg)
        cases = {c.label: c for c in protocol.cases(int(cfg["canvas_size"]))}
        gt = _ground_truth(rows[0], protocol, so)
        settings = job_settings(cfg)
        strips = {}
        for row in rows:
            if row["method"] == "m3ddm":
                case = cases[row["ratio_label"]]
                if case.label not in strips:
                    prepared = prepare_clip(case.strip(gt), float(row["fps"]), case.ratio, settings)
                    strips[case.label] = pickle.dumps(prepared, protocol=pickle.HIGHEST_PROTOCOL)
                row["clip"] = strips[case.label]
    except Exception as exc:  # noqa: BLE001 - one bad clip must not stop the job
        out = [fail_row(dict(r, seconds_prepare=time.perf_counter() - t0), "prepare", exc, cfg) for r in rows]
    else:
        out = [dict(r, seconds_prepare=time.perf_counter() - t0) for r in rows]
    return [check_row(r, "eval prepare", "eval") for r in out]
