"""The stages of the batch job as plain callables over rows (dicts); Ray only schedules them.
Prepare, coarse and fine live here; finalize in :mod:`.finalize`, the join of pieces in :mod:`.join`.

(About 550 lines on purpose: the prepare, coarse and fine stages share one row contract --
error rows, timing, OOM retry, model loading -- kept beside them so that the three cannot drift.)

Every stage has the same shape: set up once (the model stages load the UNet and the VAE in
``__init__``), then map rows, timing itself into ``seconds_<stage>`` and turning any exception of a
row into ``status="error"`` with ``error="<stage>: <message>"``. Rows that are not ``pending`` pass
through untouched, so every output of the manifest -- (clip, ratio), or (clip, task) for an inpaint /
extend row -- reaches the result table.

Rows between the stages have one typed schema, :mod:`.rows` (``StageRow``: every field, its type,
the stage that writes it and its meaning); each stage checks the rows it hands on
(:func:`.rows.check_row`). :func:`result_row` keeps only the documented result columns.

Faults handled here (the job config's optional ``retries`` section and ``stages.prepare``):

* remote sources are downloaded once per stage to a local temporary file with retries
  (:func:`m3ddm_ray.storage.local_copy`); uploads retry inside :mod:`m3ddm_ray.storage`;
* the prepare of a clip is bounded by ``stages.prepare.prepare_timeout_s``: it runs in a thread
  that is abandoned (and asked to stop at the next frame) when the time is up;
* CUDA out-of-memory in a model stage: the cache is emptied and the row is tried once more with
  half the ``vae_batch_size`` before it becomes an ``error`` row.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import pickle
import socket
import threading
import time
import traceback
from typing import Any, Callable, Iterator, Mapping

import numpy as np

from .. import storage
from ..errors import InputError, M3DDMError
from .config import config_hash, job_settings
from .manifest import SAMPLER_OVERRIDE_COLUMNS, check_clip_id, check_output_prefix
from .results import RESULT_COLUMNS, row_label
from .rows import StageRow, check_row
from .sources import is_frame_folder, source_file  # noqa: F401 - used here and by finalize / join

logger = logging.getLogger(__name__)

STATUSES = ("ok", "error", "skipped", "unchanged")

#: Default of ``stages.prepare.prepare_timeout_s`` (seconds for probe + decode + canvases of one clip).
DEFAULT_PREPARE_TIMEOUT_S = 3600.0


def _describe(exc: BaseException) -> str:
    if isinstance(exc, M3DDMError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


_SECRET_KEY_PARTS = ("key", "secret", "token", "password", "passwd", "credential", "auth", "signature", "sas")


def redact(text: str, cfg: Mapping[str, Any] | None) -> str:
    """``text`` with the values of credential-like ``storage_options`` entries (names containing
    key / secret / token / password / credential / auth, at any depth) replaced by ``***`` -- defence
    in depth for messages that end up in result tables and summaries."""
    secrets: list[str] = []

    def walk(v: Any, sensitive: bool) -> None:
        if isinstance(v, Mapping):
            for k, x in v.items():
                walk(x, sensitive or any(p in str(k).lower() for p in _SECRET_KEY_PARTS))
        elif isinstance(v, (list, tuple)):
            for x in v:
                walk(x, sensitive)
        elif sensitive and isinstance(v, str) and len(v) >= 4:
            secrets.append(v)

    walk((cfg or {}).get("storage_options") or {}, False)
    for secret in sorted(set(secrets), key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


def fail_row(row: dict, stage: str, exc: BaseException, cfg: Mapping[str, Any] | None = None) -> dict:
    """Turn ``row`` into an error row; the message always names the input video."""
    msg = _describe(exc)
    uri = row.get("video_uri")
    if uri and str(uri) not in msg:
        msg = f"{uri}: {msg}"
    row["status"] = "error"
    row["error"] = redact(f"{stage}: {msg}", cfg)
    row["traceback"] = redact(traceback.format_exc(limit=8), cfg)
    row["clip"] = b""
    row["state"] = b""
    return row  # segment / num_segments stay: a failed segment still counts for its clip


def _retries(cfg: Mapping[str, Any]) -> Mapping[str, Any]:
    return cfg.get("retries") or {}


def apply_retry_policy(cfg: Mapping[str, Any]) -> None:
    """Set this process's storage retry policy from the config's ``retries`` section."""
    storage.set_retry_policy(storage.RetryPolicy.from_config(_retries(cfg)))


def output_key(output: str, clip_id: str, ratio: str, chash: str, prefix: str | None = None) -> str:
    """Deterministic output URI ``<output>/[<prefix>/]<clip_id>/<clip_id>_<W>x<H>_<hash>.mp4``.

    ``ratio`` is the row's :func:`.results.row_label`: the target ratio ``W:H`` of an outpaint row,
    the task name of an inpaint / extend row (``<clip_id>_inpaint_<hash>.mp4``).

    Raises:
        InputError: ``clip_id`` or ``prefix`` could leave the output prefix (``..``, ``/``, ...); the
            manifest validation rejects such rows earlier, this is the last line of defence.
    """
    why = check_clip_id(clip_id)
    if why:
        raise InputError(f"clip_id {clip_id!r} {why}")
    if prefix:
        why = check_output_prefix(prefix)
        if why:
            raise InputError(f"output_prefix {prefix!r} {why}")
    slug = ratio.replace(":", "x")
    parts = [output.rstrip("/")] + ([prefix.strip("/")] if prefix else []) + [clip_id, f"{clip_id}_{slug}_{chash}.mp4"]
    return "/".join(parts)


def expand_manifest_row(row: Mapping[str, Any], cfg: Mapping[str, Any], output: str) -> list[StageRow]:
    """One pending row per (clip, ratio) of a manifest row (ratios from the row or the job); an
    inpaint / extend row gives one row, ``task`` its task and ``ratio`` None, whose output is named
    by the task (:func:`m3ddm_ray.task.spec_of_record`)."""
    from ..task import spec_of_record

    spec = spec_of_record(row)
    ratios: list[str | None] = [None] if spec else [str(r) for r in row.get("target_ratios") or cfg["ratios"]]
    overrides = {k: row.get(k) for k in SAMPLER_OVERRIDE_COLUMNS}
    settings = job_settings(cfg, overrides)
    chash = config_hash(cfg, settings, spec)
    out = []
    for ratio in ratios:
        new = {
            "clip_id": row["clip_id"], "video_uri": row["video_uri"], "ratio": ratio, "output_uri": None,
            "status": "pending", "error": None, "overrides": json.dumps(overrides), "config_hash": chash,
            "settings": json.dumps(settings.to_dict(), sort_keys=True), "clip": b"", "state": b"",
            "previous_result": None, "task": spec["task"] if spec else "outpaint",
            "task_options": json.dumps(spec, sort_keys=True) if spec else None,
            "mask_uri": spec.get("mask_uri") if spec else None,
        }
        new["output_uri"] = output_key(output, row["clip_id"], row_label(new), chash, row.get("output_prefix"))
        out.append(new)
    return [check_row(r, "driver") for r in out]


def row_task(row: Mapping[str, Any], cfg: Mapping[str, Any], open_masks: bool = True):
    """The :class:`~m3ddm_ray.task.Task` of a stage row (its ``task_options``, or an outpainting to
    its ``ratio``). An inpainting's mask source is opened (a mask video's ``mask_count``, recorded
    by prepare, is not counted again), or with ``open_masks=False`` only named.

    Raises:
        InputError / VideoError: a mask source that cannot be opened (the message names it).
    """
    from ..task import from_spec
    from ..video import open_masks as open_source
    from .rows import is_missing

    opts = row.get("task_options")
    spec = None if is_missing(opts) or not opts else json.loads(opts)
    count = row.get("mask_count")
    known = None if is_missing(count) else int(count)
    so = cfg.get("storage_options") or None
    return from_spec(spec, row.get("ratio"),
                     (lambda uri: open_source(uri, so, video_count=known)) if open_masks else None)


# --------------------------------------------------------------------------- time limits
def has_audio(row: Mapping[str, Any]) -> bool:
    """Whether the row's source has audio (unknown: True)."""
    v = row.get("has_audio")
    return True if v is None else bool(v)


class PrepareTimeout(M3DDMError, TimeoutError):
    """The prepare of a clip took longer than ``stages.prepare.prepare_timeout_s``."""


def run_with_timeout(fn: Callable[[threading.Event], Any], timeout_s: float | None, what: str = "") -> Any:
    """``fn(cancel)`` in a daemon thread, waiting at most ``timeout_s`` seconds (None/<= 0: no limit,
    runs inline).

    On time-out ``cancel`` is set (``fn`` should check it between units of work) and the thread is
    abandoned: :class:`PrepareTimeout` is raised at once. A thread stuck inside native code (a
    decoder loop, a blocked read) cannot be stopped; it is left to end with its worker process.
    """
    cancel = threading.Event()
    if not timeout_s or timeout_s <= 0:
        return fn(cancel)
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = fn(cancel)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            box["error"] = exc

    thread = threading.Thread(target=target, name=f"m3ddm-{what or 'work'}", daemon=True)
    thread.start()
    thread.join(timeout_s)
    if thread.is_alive():
        cancel.set()
        raise PrepareTimeout(f"timed out after {timeout_s:g} s (stages.prepare.prepare_timeout_s); "
                             f"the {what or 'work'} was abandoned")
    if "error" in box:
        raise box["error"]
    return box["value"]


def _until_cancelled(frames: Iterator[np.ndarray], cancel: threading.Event) -> Iterator[np.ndarray]:
    for frame in frames:
        if cancel.is_set():
            raise PrepareTimeout("cancelled")
        yield frame


def keyframe_canvas_uri(output_uri: str) -> str:
    """The scratch file of an output's keyframe canvases (with its video pieces; deleted at the join)."""
    from .segments import pieces_folder

    return f"{pieces_folder(output_uri)}/keyframe-canvases.u8"


class PrepareStage:
    """CPU: probe and decode a clip once, build canvases/masks/global frames for each of its ratios.

    Input: the rows of one clip (same ``video_uri``, one per ratio), output: the same rows with
    ``clip`` filled (or ``status`` error / unchanged). A remote video is downloaded once (with
    retries); the whole prepare is bounded by ``stages.prepare.prepare_timeout_s``.
    """

    def __init__(self, cfg: Mapping[str, Any]):
        self.cfg = cfg

    def timeout_s(self) -> float | None:
        prep = (self.cfg.get("stages") or {}).get("prepare") or {}
        value = prep.get("prepare_timeout_s", DEFAULT_PREPARE_TIMEOUT_S)
        return float(value) if value else None

    def _prepare(self, rows: list[dict], cancel: threading.Event):
        """One decode pass over the source: probe, canvases, global frames, and the frame index the
        segments seek with. A clip that splits into segments keeps only its keyframe canvases, and
        streams them to a scratch file next to its output (:func:`keyframe_canvas_uri`) -- an
        inpaint / extend clip too, with its keyframes' masks (:func:`m3ddm_ray.prepare.prepare`).
        Returns ``(info, clips, index)``."""
        from ..canvas_file import CanvasFileWriter
        from ..prepare import prepare
        from ..video import FrameIndex, iter_frames, probe

        first = rows[0]
        uri = first["video_uri"]
        so = self.cfg.get("storage_options") or None
        settings = job_settings(self.cfg, json.loads(first["overrides"]))
        writers: dict[int, CanvasFileWriter] = {}

        def sink(j, masked, inpainted, masks=None):
            if j not in writers:
                writers[j] = CanvasFileWriter(keyframe_canvas_uri(rows[j]["output_uri"]), settings.canvas_size, so,
                                              with_masks=masks is not None)
            writers[j].append(masked, inpainted, masks)

        def iter_source(cancel: threading.Event):
            """``(info, frames iterator, index)``: the one decode pass over the source."""
            if is_frame_folder(uri, self.cfg):  # a folder of images (DAVIS / YouTube-VOS layout)
                from ..video import image_sequence_info, iter_image_sequence

                info = image_sequence_info(uri, storage_options=so)
                return info, _until_cancelled(iter_image_sequence(uri, so), cancel), None
            path = stack.enter_context(source_file(uri, self.cfg.get("storage_options")))
            if cancel.is_set():
                raise PrepareTimeout("cancelled")
            info = probe(path)  # MP4/MOV: an exact frame count from the sample table, one decode pass
            if not info.num_frames_exact:  # AVI, MKV, WebM, ...: count first (decode without RGB)
                info = probe(path, count_frames=True)
            idx = FrameIndex()
            return info, _until_cancelled(iter_frames(path, index=idx), cancel), idx

        stack = contextlib.ExitStack()
        try:
            with stack:
                tasks = [row_task(r, self.cfg) for r in rows]  # a mask source is opened before the decode
                info, frames, index = iter_source(cancel)
                clips = prepare(frames, info.num_frames, info.fps, tasks, settings, segmented=True,
                                sink=sink if first.get("output_uri") else None)
        except BaseException:
            for j, w in writers.items():
                with contextlib.suppress(Exception):
                    w.close()
                storage.remove_tree(keyframe_canvas_uri(rows[j]["output_uri"]), so)
            raise
        for w in writers.values():
            w.close()
        clips = [c.in_file(writers[j].uri, so) if j in writers else c for j, c in enumerate(clips)]
        return info, clips, index

    def __call__(self, rows: list[StageRow]) -> list[StageRow]:
        from .. import pipeline, video  # noqa: F401 - imported here, outside the timed thread

        apply_retry_policy(self.cfg)
        t0 = time.perf_counter()
        try:
            info, clips, index = run_with_timeout(lambda cancel: self._prepare(rows, cancel),
                                                  self.timeout_s(), "decode")
        except Exception as exc:  # noqa: BLE001 - one bad video must not stop the job
            return [fail_row(dict(r, seconds_prepare=time.perf_counter() - t0), "prepare", exc, self.cfg)
                    for r in rows]
        from .segments import seek_points

        out = []
        for row, clip in zip(rows, clips):
            row = dict(row, frames=info.num_frames)
            to_source = (lambda kind, lo, hi, c=clip: c.task.source_range(lo, hi, c.num_frames, kind == "span"))
            points = None if clip.passthrough else seek_points(index, clip.plan, to_source)
            row.update(fps=info.fps, source_width=info.width, mask_count=clip.task.mask_count,
                       source_height=info.height, has_audio=bool(info.has_audio), output_frames=clip.num_frames,
                       seconds_prepare=time.perf_counter() - t0, seek_points=json.dumps(points))
            row["status"] = "unchanged" if clip.passthrough else "pending"
            row["clip"] = pickle.dumps(clip, protocol=pickle.HIGHEST_PROTOCOL)
            out.append(check_row(row, "prepare"))
        return out


#: This process in the job summary's per-actor busy seconds.
ACTOR_NAME = f"{socket.gethostname()}:{os.getpid()}"


class _ModelStage:
    """Shared set-up of the GPU stages: load the UNet and the VAE once per actor."""

    stage = "model"

    def __init__(self, cfg: Mapping[str, Any], models=None, schema: str = "job"):
        from ..models.loading import load_unet, load_vae

        self.cfg = cfg
        self.schema = schema  # the row schema (.rows.SCHEMAS) its output rows are checked against
        if models is not None:  # in-process use (tests, single-process runs) with preloaded models
            self.unet, self.vae = models
        else:
            so = cfg.get("storage_options") or None
            self.unet = load_unet(cfg["model"], cfg["dtype"], cfg["device"], storage_options=so)
            self.vae = load_vae(cfg["vae"], cfg["dtype"], cfg["device"], storage_options=so)

    def outpainter(self, row: Mapping[str, Any], vae_batch_size: int | None = None):
        """The row's :class:`~m3ddm_ray.pipeline.Outpainter`, or with tiling on its
        :class:`~m3ddm_ray.tiled.TiledOutpainter` (reading the source through
        :func:`.canvases.frame_reader`)."""
        from ..pipeline import Outpainter

        settings = job_settings(self.cfg, json.loads(row["overrides"]))
        if vae_batch_size is not None:
            settings = dataclasses.replace(settings, vae_batch_size=int(vae_batch_size))
        if settings.tiling.enabled:
            from ..tiled import TiledOutpainter
            from .canvases import frame_reader

            return TiledOutpainter(self.unet, self.vae, settings, source=frame_reader(row, self.cfg))
        return Outpainter(self.unet, self.vae, settings)

    def run(self, row: dict, vae_batch_size: int | None = None) -> dict:  # pragma: no cover - overridden
        raise NotImplementedError

    def emit(self, row: dict) -> list[dict]:
        """The rows this stage hands on for one finished (or failed) input row."""
        return [row]

    def run_oom_safe(self, row: dict) -> dict:
        """:meth:`run`; on CUDA out-of-memory empty the cache and try once more with half the
        ``vae_batch_size``. A second out-of-memory raises :class:`OutOfMemory` (an error row)."""
        try:
            return self.run(row)
        except Exception as exc:  # noqa: BLE001 - only OOM is handled here
            if not is_out_of_memory(exc):
                raise
            first = _describe(exc)  # keep text only: the traceback holds the tensors
        _free_accelerator_memory()
        full = int(job_settings(self.cfg, json.loads(row["overrides"])).vae_batch_size)
        half = max(1, full // 2)
        logger.warning("%s: out of memory on %s (%s); retrying once with vae_batch_size=%d",
                       self.stage, row.get("video_uri"), first.splitlines()[0][:200], half)
        try:
            row = self.run(row, vae_batch_size=half)
        except Exception as exc:  # noqa: BLE001
            if not is_out_of_memory(exc):
                raise
            text = _describe(exc).splitlines()[0][:300]
        else:
            settings = json.loads(row["settings"])
            settings["vae_batch_size"] = half  # what this row really ran with
            row["settings"] = json.dumps(settings, sort_keys=True)
            return row
        _free_accelerator_memory()
        raise OutOfMemory(f"out of memory, also after a retry with vae_batch_size={half} (was {full}); "
                          f"use a smaller canvas_size / vae_batch_size or a larger GPU ({text})")

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        apply_retry_policy(self.cfg)
        rows = to_rows(batch)
        out = []
        for row in rows:
            if row["status"] != "pending":
                out.append(row)
                continue
            t0 = time.perf_counter()
            try:
                row = self.run_oom_safe(row)
            except Exception as exc:  # noqa: BLE001
                row = fail_row(row, self.stage, exc, self.cfg)
            row[f"seconds_{self.stage}"] = time.perf_counter() - t0
            row[f"{self.stage}_actor"] = ACTOR_NAME  # busy seconds per actor in the job summary
            out.extend(check_row(r, self.stage, self.schema) for r in self.emit(row))
        return to_batch(out)


class OutOfMemory(M3DDMError):
    """A model stage ran out of accelerator memory twice on one row."""


def is_out_of_memory(exc: BaseException) -> bool:
    """``torch.cuda.OutOfMemoryError`` (any device's OOM), or a RuntimeError saying "out of memory"."""
    import torch

    oom_types = tuple(t for t in (getattr(torch.cuda, "OutOfMemoryError", None),
                                  getattr(torch, "OutOfMemoryError", None)) if isinstance(t, type))
    if oom_types and isinstance(exc, oom_types):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


def _free_accelerator_memory() -> None:
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


class CoarseStage(_ModelStage):
    """GPU: global-frame latents and the stride-15 keyframe pass (``Outpainter.run_coarse``); hands
    on one row per segment of the clip's fine work (:func:`.segments.split_row`)."""

    stage = "coarse"

    def run(self, row: dict, vae_batch_size: int | None = None) -> dict:
        clip = pickle.loads(row["clip"])
        state = self.outpainter(row, vae_batch_size).run_coarse(clip)  # tiled: reads the keyframes' source
        row["state"] = pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL)
        return row

    def emit(self, row: dict) -> list[dict]:
        """One row per segment (:func:`.segments.split_row`); in the tiled mode one row per
        (segment, unit of its tiles) (:func:`.segments.split_units`). A long outpainting clip's
        coarse latents go to one scratch file next to its output (:func:`.segments.coarse_latents_uri`),
        so its segment rows carry no latents. A failed row leaves no scratch data behind."""
        from .segments import clear_units, coarse_latents_uri, pieces_folder, split_row, split_units

        so = self.cfg.get("storage_options") or None
        if row["status"] != "pending":
            if row["status"] == "error" and row.get("output_uri"):  # keyframe canvases of a failed clip
                storage.remove_tree(pieces_folder(row["output_uri"]), so)
            return [dict(row, segment=0, num_segments=1)]
        clip, state = pickle.loads(row["clip"]), pickle.loads(row["state"])
        uri = None
        tiled = job_settings(self.cfg, json.loads(row["overrides"])).tiling.enabled  # rows carry its sub-states
        if clip.keyframes_only and row.get("output_uri") and not tiled:  # keyframes only: several segments
            from ..coarse_file import write_coarse_latents

            uri = coarse_latents_uri(row["output_uri"])
            try:
                write_coarse_latents(uri, state.global_latents, state.stored, so)
            except Exception as exc:  # noqa: BLE001 - an error row, not a dead job
                storage.remove_tree(pieces_folder(row["output_uri"]), so)
                return [dict(fail_row(row, self.stage, exc, self.cfg), segment=0, num_segments=1)]
        if not tiled:
            return split_row(row, clip, state, uri)
        try:
            units = len(self.outpainter(row).units(clip))
        except Exception as exc:  # noqa: BLE001 - an error row, not a dead job
            storage.remove_tree(pieces_folder(row["output_uri"]), so)
            return [dict(fail_row(row, self.stage, exc, self.cfg), segment=0, num_segments=1)]
        if units > 1 and row.get("output_uri"):
            clear_units(row["output_uri"], so)
        return split_units(split_row(row, clip, state, uri), units)


class FineStage(_ModelStage):
    """GPU: the coarse latents a segment reads (:func:`.segments.load_coarse_latents`), the canvases
    of its span from a range decode (:func:`.canvases.fill_canvases`), its stride-5 / stride-1
    windows with keyframes as guides, and the decode of its output frames (``Outpainter.run_segment``;
    in the tiled mode one unit of the segment's tiles, the row's ``tile_group``)."""

    stage = "fine"

    def run(self, row: dict, vae_batch_size: int | None = None) -> dict:
        from .canvases import fill_canvases
        from .segments import load_coarse_latents, tile_group

        clip, state = pickle.loads(row["clip"]), pickle.loads(row["state"])
        state = load_coarse_latents(row, clip, state, self.cfg.get("storage_options") or None)
        outpainter = self.outpainter(row, vae_batch_size)
        filled = fill_canvases(row, self.cfg, clip, getattr(outpainter, "source", None))
        kw = {"unit": tile_group(row)} if hasattr(outpainter, "units") else {}  # tiled: one unit
        state = outpainter.run_fine(filled, state, **kw)  # a slice: its segment only
        out = outpainter.output_clip(filled, state)  # tiled: the segment's working clip
        if out is not clip:  # finalize pastes the generated pixels onto the masked canvases
            # ... and never reads the inpainted ones (the diffusion start): a third less to carry
            row["clip"] = pickle.dumps(dataclasses.replace(out, inpainted=out.inpainted[:0]),
                                       protocol=pickle.HIGHEST_PROTOCOL)
        row["state"] = pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL)
        return row


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
def to_rows(batch: Mapping[str, Any]) -> list[dict]:
    keys = list(batch)
    n = len(batch[keys[0]]) if keys else 0
    return [{k: _py(batch[k][i]) for k in keys} for i in range(n)]


def _py(v: Any) -> Any:
    if isinstance(v, np.generic):
        return v.item()
    return v


def to_batch(rows: list[dict]) -> dict[str, np.ndarray]:
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
