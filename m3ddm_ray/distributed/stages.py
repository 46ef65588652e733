"""The four stages of the batch job as plain callables over rows (dicts); Ray only schedules them.

Every stage has the same shape: set up once (the model stages load the UNet and the VAE in
``__init__``), then map rows, timing itself into ``seconds_<stage>`` and turning any exception of a
row into ``status="error"`` with ``error="<stage>: <message>"``. Rows that are not ``pending`` pass
through untouched, so every (clip, ratio) pair of the manifest reaches the result table.

Row fields (internal): ``clip_id, video_uri, ratio, output_uri, status, error, overrides`` (JSON),
``clip`` (pickled :class:`~m3ddm_ray.pipeline.PreparedClip`), ``state`` (pickled
:class:`~m3ddm_ray.pipeline.ClipState`), ``frames, fps, source_width, source_height`` and the
``seconds_*`` timings. :func:`result_row` keeps only the documented result columns.
"""

from __future__ import annotations

import json
import pickle
import time
import traceback
from typing import Any, Iterator, Mapping

import numpy as np

from ..errors import M3DDMError
from ..quality import REPORT_KEYS
from .config import config_hash, job_settings

#: Result-table columns, in order (the Parquet schema is documented in the README).
RESULT_COLUMNS = (
    "clip_id", "video_uri", "ratio", "output_uri", "status", "error", "frames", "fps",
    "source_width", "source_height", "output_width", "output_height",
    "seconds_prepare", "seconds_coarse", "seconds_fine", "seconds_finalize", "seconds_unet",
    "model", "vae", "config_hash", "settings",
    *REPORT_KEYS,  # no-reference quality numbers (m3ddm_ray.quality)
)
STATUSES = ("ok", "error", "skipped", "unchanged")


def _describe(exc: BaseException) -> str:
    if isinstance(exc, M3DDMError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


def _fail(row: dict, stage: str, exc: BaseException) -> dict:
    row["status"] = "error"
    row["error"] = f"{stage}: {_describe(exc)}"
    row["traceback"] = traceback.format_exc(limit=8)
    row["clip"] = b""
    row["state"] = b""
    return row


def output_key(output: str, clip_id: str, ratio: str, chash: str, prefix: str | None = None) -> str:
    """Deterministic output URI ``<output>/[<prefix>/]<clip_id>/<clip_id>_<W>x<H>_<hash>.mp4``."""
    slug = ratio.replace(":", "x")
    parts = [output.rstrip("/")] + ([prefix.strip("/")] if prefix else []) + [clip_id, f"{clip_id}_{slug}_{chash}.mp4"]
    return "/".join(parts)


def expand_manifest_row(row: Mapping[str, Any], cfg: Mapping[str, Any], output: str) -> list[dict]:
    """One pending row per (clip, ratio) of a manifest row (ratios from the row or the job)."""
    ratios = list(row.get("target_ratios") or cfg["ratios"])
    overrides = {k: row.get(k) for k in ("seed", "num_inference_steps", "guidance_scale",
                                          "previous_guidance_scale", "canvas_size", "output_size")}
    settings = job_settings(cfg, overrides)
    chash = config_hash(cfg, settings)
    out = []
    for ratio in ratios:
        out.append({
            "clip_id": row["clip_id"], "video_uri": row["video_uri"], "ratio": str(ratio),
            "output_uri": output_key(output, row["clip_id"], str(ratio), chash, row.get("output_prefix")),
            "status": "pending", "error": None, "overrides": json.dumps(overrides), "config_hash": chash,
            "settings": json.dumps(settings.to_dict(), sort_keys=True), "clip": b"", "state": b"",
        })
    return out


class PrepareStage:
    """CPU: probe and decode a clip once, build canvases/masks/global frames for each of its ratios.

    Input: the rows of one clip (same ``video_uri``, one per ratio), output: the same rows with
    ``clip`` filled (or ``status`` error / unchanged).
    """

    def __init__(self, cfg: Mapping[str, Any]):
        self.cfg = cfg

    def __call__(self, rows: list[dict]) -> list[dict]:
        from ..pipeline import prepare_clips
        from ..video import iter_frames, probe

        t0 = time.perf_counter()
        first = rows[0]
        so = self.cfg.get("storage_options") or None
        try:
            settings = job_settings(self.cfg, json.loads(first["overrides"]))
            info = probe(first["video_uri"], so, count_frames=True)
            clips = prepare_clips(iter_frames(first["video_uri"], storage_options=so), info.num_frames, info.fps,
                                  [r["ratio"] for r in rows], settings)
        except Exception as exc:  # noqa: BLE001 - one bad video must not stop the job
            return [_fail(dict(r, seconds_prepare=time.perf_counter() - t0), "prepare", exc) for r in rows]
        out = []
        for row, clip in zip(rows, clips):
            row = dict(row, frames=info.num_frames, fps=info.fps, source_width=info.width,
                       source_height=info.height, seconds_prepare=time.perf_counter() - t0)
            row["status"] = "unchanged" if clip.passthrough else "pending"
            row["clip"] = pickle.dumps(clip, protocol=pickle.HIGHEST_PROTOCOL)
            out.append(row)
        return out


class _ModelStage:
    """Shared set-up of the GPU stages: load the UNet and the VAE once per actor."""

    stage = "model"

    def __init__(self, cfg: Mapping[str, Any], models=None):
        from ..models.loading import load_unet, load_vae

        self.cfg = cfg
        if models is not None:  # in-process use (tests, single-process runs) with preloaded models
            self.unet, self.vae = models
        else:
            so = cfg.get("storage_options") or None
            self.unet = load_unet(cfg["model"], cfg["dtype"], cfg["device"], storage_options=so)
            self.vae = load_vae(cfg["vae"], cfg["dtype"], cfg["device"], storage_options=so)

    def outpainter(self, row: Mapping[str, Any]):
        from ..pipeline import Outpainter

        return Outpainter(self.unet, self.vae, job_settings(self.cfg, json.loads(row["overrides"])))

    def run(self, row: dict) -> dict:  # pragma: no cover - overridden
        raise NotImplementedError

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        rows = _rows(batch)
        out = []
        for row in rows:
            if row["status"] != "pending":
                out.append(row)
                continue
            t0 = time.perf_counter()
            try:
                row = self.run(row)
            except Exception as exc:  # noqa: BLE001
                row = _fail(row, self.stage, exc)
            row[f"seconds_{self.stage}"] = time.perf_counter() - t0
            out.append(row)
        return _batch(out)


class CoarseStage(_ModelStage):
    """GPU: global-frame latents and the stride-15 keyframe pass (``Outpainter.run_coarse``)."""

    stage = "coarse"

    def run(self, row: dict) -> dict:
        clip = pickle.loads(row["clip"])
        state = self.outpainter(row).run_coarse(clip)
        row["state"] = pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL)
        return row


class FineStage(_ModelStage):
    """GPU: the stride-5 / stride-1 passes with keyframes as guides, and the decode of all frames."""

    stage = "fine"

    def run(self, row: dict) -> dict:
        clip, state = pickle.loads(row["clip"]), pickle.loads(row["state"])
        state = self.outpainter(row).run_fine(clip, state)
        row["state"] = pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL)
        return row


class FinalizeStage:
    """CPU: paste-back, crop (or source-resolution composition), H.264 with source fps and audio,
    atomic upload, no-reference quality numbers; returns the result row."""

    def __init__(self, cfg: Mapping[str, Any]):
        self.cfg = cfg

    def __call__(self, row: dict) -> dict:
        t0 = time.perf_counter()
        if row["status"] in ("pending", "unchanged"):
            try:
                row.update(self._finalize(row))
                row["status"] = "ok" if row["status"] == "pending" else "unchanged"
            except Exception as exc:  # noqa: BLE001
                row = _fail(row, "finalize", exc)
        row["seconds_finalize"] = time.perf_counter() - t0
        return result_row(row, self.cfg)

    def _finalize(self, row: dict) -> dict:
        from .. import quality
        from ..geometry import paste_back
        from ..pipeline import finalize_clip, generated_array
        from ..video import read_frames, write_video

        so = self.cfg.get("storage_options") or None
        clip = pickle.loads(row["clip"])
        settings = job_settings(self.cfg, json.loads(row["overrides"]))
        source = None
        if clip.passthrough or settings.output_size == "source":
            source, _ = read_frames(row["video_uri"], storage_options=so)
        extra: dict[str, Any] = {}
        if clip.passthrough:
            out = finalize_clip(clip, None, settings, source)
        else:
            state = pickle.loads(row["state"])
            gen = generated_array(clip, state)
            out = finalize_clip(clip, gen, settings, source)
            composite = paste_back(gen, clip.masked, clip.mask, mode=settings.paste_mode)
            extra.update(quality.quality_report(composite, clip.mask))
            extra["seconds_unet"] = state.unet_seconds
        enc = self.cfg["encode"]
        write_video(row["output_uri"], out, row["fps"], audio_source=row["video_uri"], crf=int(enc["crf"]),
                    preset=str(enc["preset"]), storage_options=so)
        extra.update(output_height=int(out.shape[1]), output_width=int(out.shape[2]))
        return extra


def result_row(row: Mapping[str, Any], cfg: Mapping[str, Any]) -> dict:
    """The documented result columns of a row (missing values as None / NaN)."""
    out = {}
    for col in RESULT_COLUMNS:
        value = row.get(col)
        if col.startswith(("q_", "seconds_")) and value is None:
            value = float("nan")
        out[col] = value
    out["model"], out["vae"] = str(cfg["model"]), str(cfg["vae"])
    if out["status"] != "ok":
        out["output_uri"] = None if out["status"] == "error" else out["output_uri"]
    return out


# --------------------------------------------------------------------------- batch <-> rows
def _rows(batch: Mapping[str, Any]) -> list[dict]:
    keys = list(batch)
    n = len(batch[keys[0]]) if keys else 0
    return [{k: _py(batch[k][i]) for k in keys} for i in range(n)]


def _py(v: Any) -> Any:
    if isinstance(v, np.generic):
        return v.item()
    return v


def _batch(rows: list[dict]) -> dict[str, np.ndarray]:
    keys: list[str] = []
    for r in rows:
        for k in r:
            if k not in keys:
                keys.append(k)
    out = {}
    for k in keys:
        arr = np.empty(len(rows), dtype=object)
        for i, r in enumerate(rows):
            arr[i] = r.get(k)
        out[k] = arr
    return out


def group_by_clip(rows: list[dict]) -> Iterator[list[dict]]:
    """Consecutive rows of the same ``video_uri`` + ``clip_id`` (the ratios of one clip)."""
    group: list[dict] = []
    for row in rows:
        if group and (row["clip_id"], row["video_uri"]) != (group[0]["clip_id"], group[0]["video_uri"]):
            yield group
            group = []
        group.append(row)
    if group:
        yield group
