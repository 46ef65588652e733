"""The evaluation tasks: everything that differs between outpainting, inpainting and prediction.

:func:`eval_task` turns the eval config into an :class:`OutpaintTask`, :class:`InpaintTask` or
:class:`ExtendTask`. Rows (:mod:`.rows`), scoring (:mod:`.scoring`), the report and the job
(:mod:`.run`) use only what the three share:

* ``task``, ``name`` (the ``protocol`` column), ``methods``, ``cases`` (each with ``label``,
  ``mask_ratio``, ``protocol``), ``table`` (:class:`.report.Table`), ``title``, ``one_segment``;
* ``clip_len(ecfg)``, ``ground_truth(frames)``, ``columns(case)`` (the task's result columns),
  ``meta()`` (its settings for ``summary.json``);
* ``inputs(case, gt, key)``: one clip's case, with ``prepare`` / ``finish`` (the model, through
  :mod:`.model`), ``baseline``, ``score`` -> ``(columns, scored frames)``, ``panels`` (the report's
  input | output | ground truth), ``real`` and ``fvd_fake`` (the clips of FVD).

A **case** is one set of rows per clip: a mask ratio of the outpainting protocol
(:class:`.protocols.MaskCase`), a mask motion of inpainting (masks seeded by :func:`clip_mask_seed` of
:func:`mask_key`) or the context / predict split of prediction; ``mask_ratio`` is the generated share.
Scores: :class:`.metrics.ClipScores` of the composed output (outpainting), :func:`score_inpaint`,
:func:`score_prediction` (docs/tasks.md, "Scores"; also used by ``benchmarks/eval_tasks.py``).
"""

from __future__ import annotations

import json
import zlib
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from ..errors import InputError
from . import baselines, model
from .config import build_protocol, check_task_settings
from .protocols import InpaintCase, PredictionCase, inpaint_case, prediction_case, resize_frames, temporal_consistency
from .report import OUTPAINT_TABLE, Table

__all__ = ["TaskCase", "OutpaintTask", "InpaintTask", "ExtendTask", "eval_task", "mask_key", "clip_mask_seed",
           "check_one_segment", "score_inpaint", "score_prediction"]


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
    """Inpainting and prediction score a row's whole clip in one scoring call, so the clip must be one
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


def _lpips(lpips, pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    return np.full(pred.shape[0], np.nan) if lpips is None else np.asarray(lpips(pred, gt), np.float64)


def score_inpaint(pred: np.ndarray, case: InpaintCase, lpips=None, ssim_window: str = "gaussian") -> dict[str, float]:
    """Scores of an inpainting ``pred`` (uint8 ``(T, H, W, 3)``) against ``case.frames``.

    Returns:
        ``psnr`` (dB), ``ssim``, ``lpips`` (NaN without an LPIPS network): whole frames, mean over
        frames; ``psnr_generated``: PSNR over the masked pixels only (dB); ``mse`` (levels²);
        ``temporal``: mean of :func:`.protocols.temporal_consistency` over the frame pairs (levels,
        NaN when ``T < 2``).
    """
    from .metrics import mse, psnr, ssim

    gt = case.frames
    region = case.masks.astype(bool)
    diff = (pred.astype(np.float64) - gt.astype(np.float64)) ** 2
    hole_mse = float(diff[region].mean()) if region.any() else float("nan")
    tc = temporal_consistency(pred, gt, case.masks) if len(pred) > 1 else np.array([np.nan])
    return {
        "psnr": float(np.mean(psnr(pred, gt))),
        "ssim": float(np.mean(ssim(pred, gt, window=ssim_window))),
        "lpips": float(np.mean(_lpips(lpips, pred, gt))),
        "psnr_generated": float(10 * np.log10(255.0 ** 2 / hole_mse)) if hole_mse > 0 else float("inf"),
        "mse": float(np.mean(mse(pred, gt))),
        "temporal": float(np.nanmean(tc)) if np.isfinite(tc).any() else float("nan"),
    }


def score_prediction(pred: np.ndarray, case: PredictionCase, lpips=None,
                     ssim_window: str = "gaussian") -> dict[str, Any]:
    """Scores of predicted frames ``pred`` (uint8 ``(p, H, W, 3)``) against ``case.target``.

    Returns:
        ``psnr_frames``, ``ssim_frames``, ``lpips_frames``: float64 ``(p,)``, index 0 = the first
        predicted frame; ``psnr``, ``ssim``, ``lpips``, ``mse``: means over the predicted frames.

    Raises:
        InputError: ``pred`` not of the target's shape.
    """
    from .metrics import mse, psnr, ssim

    if pred.shape != case.target.shape:
        raise InputError(f"pred {pred.shape} must have the target's shape {case.target.shape}")
    p = np.asarray(psnr(pred, case.target), np.float64)
    s = np.asarray(ssim(pred, case.target, window=ssim_window), np.float64)
    lp = _lpips(lpips, pred, case.target)
    return {"psnr_frames": p, "ssim_frames": s, "lpips_frames": lp, "psnr": float(p.mean()), "ssim": float(s.mean()),
            "lpips": float(lp.mean()), "mse": float(np.mean(mse(pred, case.target)))}


# --------------------------------------------------------------------------------------------------
# Outpainting: the protocols of .protocols
# --------------------------------------------------------------------------------------------------


class _OutpaintClip:
    """One clip of a mask ratio: the known strip goes in, the canvas crop comes out."""

    def __init__(self, case, gt: np.ndarray):
        self.case, self.gt, self.mask, self.real = case, gt, case.mask(), gt

    def prepare(self, fps: float, settings):
        return model.prepare_outpaint(self.case.strip(self.gt), fps, self.case.ratio, settings)

    def finish(self, clip, state, settings) -> np.ndarray:
        return model.finish_outpaint(clip, state, settings)

    def baseline(self, method: str, options: Mapping[str, Any]) -> np.ndarray:
        kw = {}
        if method == "blur" and options.get("blur_sigma") is not None:
            kw = {"sigma": float(options["blur_sigma"])}
        if method == "telea":
            kw = {"radius": int(options.get("telea_radius") or 5)}
        return baselines.outpaint(method, self.case.strip(self.gt), self.case.geom, self.case.ratio, **kw)

    def score(self, out: np.ndarray, lpips, ssim_window: str) -> tuple[dict, np.ndarray]:
        from .metrics import ClipScores

        composed, known_error = self.case.compose(out, self.gt)
        s = ClipScores(lpips, ssim_window=ssim_window)(composed, self.gt, self.mask)
        cols = {k: s[k] for k in ("psnr", "ssim", "lpips", "bmse", "psnr_generated", "mse", "bmse_gt")}
        cols.update(metric_impl=json.dumps(dict(s["metric_impl"]), sort_keys=True), known_error=known_error)
        return cols, composed

    def panels(self, scored: np.ndarray):
        return self.gt * (1 - self.mask)[None, :, :, None], scored, self.gt

    def fvd_fake(self, scored: np.ndarray) -> np.ndarray:
        return scored


class OutpaintTask:
    """Outpainting with a protocol of :mod:`.protocols` (``eval.protocol``): one case per mask ratio."""

    task = "outpaint"
    table = OUTPAINT_TABLE
    one_segment = False

    def __init__(self, spec: Mapping[str, Any], ecfg: Mapping[str, Any], canvas_size: int):
        self.spec, self.methods, self.protocol = spec, list(spec["methods"]), build_protocol(ecfg)
        self.name, self.cases = self.protocol.name, self.protocol.cases(int(canvas_size))
        self.title = f"{self.name} protocol"

    def clip_len(self, ecfg: Mapping[str, Any]):
        return ecfg.get("clip_len")

    def ground_truth(self, frames: np.ndarray) -> np.ndarray:
        return self.protocol.ground_truth(frames)

    def meta(self) -> dict:
        return {"protocol_options": {k: v for k, v in vars(self.protocol).items() if k != "name"},
                "cases": [c.describe() for c in self.cases]}

    def columns(self, case) -> dict:
        return dict(task=self.task, placement_exact=case.exact, frame_height=case.frame_hw[0],
                    frame_width=case.frame_hw[1], known_box=",".join(map(str, case.known_box)),
                    target_ratio=str(case.ratio), canvas_size=case.canvas_size)

    def inputs(self, case, gt: np.ndarray, key: str) -> _OutpaintClip:
        return _OutpaintClip(case, gt)


# --------------------------------------------------------------------------------------------------
# Inpainting and prediction
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TaskCase:
    """One case of inpainting or prediction.

    Attributes:
        protocol: the task (``inpaint`` or ``extend``): the result rows' ``protocol`` column.
        label: ``stationary`` / ``moving`` (inpaint) or ``c<c>p<p>`` (extend).
        mask_ratio: the generated share (mask area; ``p / (c + p)`` of the frames).
        motion, area: inpaint mask motion and area fraction (None for extend).
        context, predict: extend frame counts (None for inpaint).
    """

    protocol: str
    label: str
    mask_ratio: float
    motion: str | None = None
    area: float | None = None
    context: int | None = None
    predict: int | None = None

    @property
    def clip_len(self) -> int | None:
        """Frames of a clip this case needs (extend: ``c + p``; inpaint: None, the clip as cut)."""
        return None if self.context is None else self.context + self.predict


def _task_scores(s: dict, gt: np.ndarray, lpips, ssim_window: str) -> dict:
    impl = {"lpips": lpips.metric_impl if lpips is not None else "not computed", "ssim_window": ssim_window}
    return dict(s, metric_impl=json.dumps(impl, sort_keys=True), frame_height=int(gt.shape[1]),
                frame_width=int(gt.shape[2]))


class _InpaintClip:
    def __init__(self, case: TaskCase, inp: InpaintCase):
        self.case, self.inp, self.real = case, inp, inp.frames

    def prepare(self, fps: float, settings):
        name = f"synthetic {self.case.motion} masks"
        return model.prepare_inpaint(self.inp.frames, self.inp.masks, fps, settings, name)

    def finish(self, clip, state, settings) -> np.ndarray:
        return model.finish_inpaint(clip, state, self.inp.frames, settings)

    def baseline(self, method: str, options: Mapping[str, Any]) -> np.ndarray:
        radius = int(options.get("telea_radius") or 5)
        return baselines.inpaint_baseline(method, self.inp.frames, self.inp.masks, radius)

    def score(self, out: np.ndarray, lpips, ssim_window: str) -> tuple[dict, np.ndarray]:
        return _task_scores(score_inpaint(out, self.inp, lpips, ssim_window), self.inp.frames, lpips, ssim_window), out

    def panels(self, scored: np.ndarray):
        return (self.inp.frames * (1 - self.inp.masks)[..., None]).astype(np.uint8), scored, self.inp.frames

    def fvd_fake(self, scored: np.ndarray) -> np.ndarray:
        return scored


class _ExtendClip:
    def __init__(self, case: TaskCase, inp: PredictionCase):
        self.case, self.inp, self.real = case, inp, np.concatenate([inp.context, inp.target])

    def prepare(self, fps: float, settings):
        return model.prepare_extend(self.inp.context, fps, self.case.predict, settings)

    def finish(self, clip, state, settings) -> np.ndarray:
        return model.finish_extend(clip, state, self.inp.context, settings)[self.case.context:]

    def baseline(self, method: str, options: Mapping[str, Any]) -> np.ndarray:
        return baselines.prediction_baseline(method, self.inp.context, self.case.predict)

    def score(self, out: np.ndarray, lpips, ssim_window: str) -> tuple[dict, np.ndarray]:
        from .report import to_jsonable

        s = score_prediction(out, self.inp, lpips, ssim_window)
        for k in ("psnr_frames", "ssim_frames", "lpips_frames"):  # JSON lists on the wire
            s[k] = json.dumps(to_jsonable([float(v) for v in s[k]]))
        return _task_scores(s, self.inp.target, lpips, ssim_window), out

    def panels(self, scored: np.ndarray):
        blank = np.zeros_like(self.inp.target)
        return (np.concatenate([self.inp.context, blank]), self.fvd_fake(scored), self.real)

    def fvd_fake(self, scored: np.ndarray) -> np.ndarray:
        return np.concatenate([self.inp.context, scored])


class _FramesTask:
    """What inpainting and prediction share: frames resized to ``eval.frame_size``, one-segment clips."""

    one_segment = True

    def __init__(self, spec: Mapping[str, Any], ecfg: Mapping[str, Any], canvas_size: int):
        self.spec, self.methods, self.canvas_size = spec, list(spec["methods"]), int(canvas_size)
        self.name = self.task
        self.cases = self._cases(spec)

    def ground_truth(self, frames: np.ndarray) -> np.ndarray:
        """uint8 ``(T, H, W, 3)``, resized to ``eval.frame_size`` (OpenCV ``INTER_AREA``) when set."""
        size = self.spec.get("frame_size")
        return resize_frames(frames, size, "area") if size else frames

    def meta(self) -> dict:
        return {"settings": {k: v for k, v in self.spec.items() if k not in ("task", "methods")}}

    def columns(self, case: TaskCase) -> dict:
        return dict(task=self.task, mask_motion=case.motion, context=case.context, predict=case.predict,
                    canvas_size=self.canvas_size)


class InpaintTask(_FramesTask):
    """Inpainting with synthetic object masks: one case per motion of ``eval.mask_motion``."""

    task = "inpaint"
    title = "inpainting (synthetic object masks)"
    table = Table(columns=(("psnr", "PSNR", "↑"), ("ssim", "SSIM", "↑"), ("lpips", "LPIPS", "↓"),
                           ("temporal", "TC", "↓"), ("fvd", "FVD", "↓")),
                  clip_metrics=("psnr", "ssim", "lpips", "temporal"), label_prefix="",
                  notes=("TC: temporal consistency in the hole (mean |Δoutput − Δtruth| between consecutive frames, "
                         "levels; lower is better). Whole-frame PSNR / SSIM / LPIPS, mean over frames, then clips.",))

    @staticmethod
    def _cases(spec):
        area = spec["mask_area"]
        return [TaskCase("inpaint", m, area, motion=m, area=area) for m in spec["mask_motion"]]

    def clip_len(self, ecfg: Mapping[str, Any]):
        return ecfg.get("clip_len")

    def inputs(self, case: TaskCase, gt: np.ndarray, key: str) -> _InpaintClip:
        seed = clip_mask_seed(key, self.spec.get("mask_seed", 0))
        return _InpaintClip(case, inpaint_case(gt, case.motion, case.area, seed))


class ExtendTask(_FramesTask):
    """Prediction as ExtDM: one case, the first ``eval.context`` frames known, the next ``eval.predict`` the target."""

    task = "extend"
    title = "prediction (ExtDM protocol)"
    table = Table(columns=OUTPAINT_TABLE.columns, clip_metrics=("psnr", "ssim", "lpips"), label_prefix="",
                  per_index=(("psnr_frames", "PSNR", "↑"), ("ssim_frames", "SSIM", "↑"),
                             ("lpips_frames", "LPIPS", "↓")),
                  notes=("Means over the predicted frames, then clips; FVD over the context + predicted clips.",))

    @staticmethod
    def _cases(spec):
        c, p = spec["context"], spec["predict"]
        return [TaskCase("extend", f"c{c}p{p}", p / (c + p), context=c, predict=p)]

    def clip_len(self, ecfg: Mapping[str, Any]):
        return self.cases[0].clip_len

    def inputs(self, case: TaskCase, gt: np.ndarray, key: str) -> _ExtendClip:
        return _ExtendClip(case, prediction_case(gt, case.context, case.predict))


_TASKS = {"outpaint": OutpaintTask, "inpaint": InpaintTask, "extend": ExtendTask}


def eval_task(ecfg: Mapping[str, Any], canvas_size: int):
    """The task object of an eval config (:func:`.config.check_task_settings` validates it).

    Raises:
        InputError: a bad task, method or task setting, naming the key.
    """
    spec = check_task_settings(ecfg)
    return _TASKS[spec["task"]](spec, ecfg, canvas_size)
