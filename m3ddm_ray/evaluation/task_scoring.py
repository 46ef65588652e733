"""Scoring of the ``inpaint`` / ``extend`` evaluation: the methods' outputs, the scores, the scoring actor.

Pure functions (also used by ``benchmarks/eval_tasks.py``, so the single-process benchmark and the
Ray job compute the same numbers):

* :func:`run_baseline`: a task baseline of :mod:`.task_baselines` on the case's input (the hidden
  pixels / future frames are zeroed first, so no method can read the ground truth);
* :func:`score_inpaint`: whole-frame PSNR, SSIM, LPIPS (mean over frames), PSNR inside the hole,
  and :func:`.task_protocols.temporal_consistency` (mean over frame pairs, levels);
* :func:`score_prediction`: PSNR, SSIM, LPIPS per predicted frame index and their means.

:class:`TaskScoreStage` is the scoring actor of the task job (the outpaint job's ``ScoreStage``
counterpart): it finishes ``m3ddm`` rows from the fine stage's canvases
(:func:`m3ddm_ray.pipeline.finalize_clip`, the task's finalize), runs the
baselines, scores, writes one strip image per row and the I3D features for FVD when configured
(whole clips: inpainting ``T`` frames; prediction the ``c + p`` frames, context included).
"""

from __future__ import annotations

import json
import pickle
import time
from typing import Any, Mapping

import numpy as np

from .task_protocols import InpaintCase, PredictionCase, temporal_consistency

__all__ = ["run_baseline", "score_inpaint", "score_prediction", "TaskScoreStage"]


def run_baseline(method: str, case: InpaintCase | PredictionCase, telea_radius: int = 5) -> np.ndarray:
    """A baseline's output: inpaint uint8 ``(T, H, W, 3)`` (``telea``, ``nearest_known``), extend uint8
    ``(p, H, W, 3)`` (``last_frame``).

    Raises:
        KeyError: a method that is not a baseline of the case's task.
    """
    from .task_baselines import last_frame_copy, nearest_known_inpaint, telea_inpaint

    if isinstance(case, InpaintCase):
        hidden = (case.frames * (1 - case.masks)[..., None]).astype(np.uint8)
        fns = {"telea": lambda: telea_inpaint(hidden, case.masks, telea_radius),
               "nearest_known": lambda: nearest_known_inpaint(hidden, case.masks)}
    else:
        fns = {"last_frame": lambda: last_frame_copy(case.context, case.target.shape[0])}
    return fns[method]()


def _lpips(lpips, pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    if lpips is None:
        return np.full(pred.shape[0], np.nan)
    return np.asarray(lpips(pred, gt), np.float64)


def score_inpaint(pred: np.ndarray, case: InpaintCase, lpips=None, ssim_window: str = "gaussian") -> dict[str, float]:
    """Scores of an inpainting ``pred`` (uint8 ``(T, H, W, 3)``) against ``case.frames``.

    Returns:
        ``psnr`` (dB), ``ssim``, ``lpips`` (NaN without an LPIPS network): whole frames, mean over
        frames; ``psnr_generated``: PSNR over the masked pixels only (dB); ``mse`` (levels²);
        ``temporal``: mean of :func:`temporal_consistency` over the frame pairs (levels, NaN when
        ``T < 2``).
    """
    from .metrics.pixel import mse, psnr
    from .metrics.structural import ssim

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
    """
    from .metrics.pixel import mse, psnr
    from .metrics.structural import ssim

    if pred.shape != case.target.shape:
        from ..errors import InputError

        raise InputError(f"pred {pred.shape} must have the target's shape {case.target.shape}")
    p = np.asarray(psnr(pred, case.target), np.float64)
    s = np.asarray(ssim(pred, case.target, window=ssim_window), np.float64)
    lp = _lpips(lpips, pred, case.target)
    return {"psnr_frames": p, "ssim_frames": s, "lpips_frames": lp, "psnr": float(p.mean()), "ssim": float(s.mean()),
            "lpips": float(lp.mean()), "mse": float(np.mean(mse(pred, case.target)))}


def _fvd_min_frames() -> int:
    from ._i3d import min_frames

    return min_frames()


def _json_list(values: np.ndarray) -> str:
    from .report import to_jsonable

    return json.dumps(to_jsonable([float(v) for v in values]))


class TaskScoreStage:
    """CPU actor of the task evaluation: output of a row -> scores, strip image, I3D features.

    Args:
        cfg: the job config; ecfg: the eval config; spec: :func:`.config.check_task_settings`;
        output: the evaluation's output prefix (strip images under ``report/img/``).
    """

    def __init__(self, cfg: Mapping[str, Any], ecfg: Mapping[str, Any], spec: Mapping[str, Any], output: str):
        from .scoring import make_fvd, make_lpips
        from .task_rows import task_cases

        self.cfg, self.ecfg, self.spec, self.output = cfg, ecfg, spec, output.rstrip("/")
        self.cases = {c.label: c for c in task_cases(spec)}
        metrics = ecfg["metrics"]
        self.lpips = make_lpips(metrics)
        self.ssim_window = str(metrics.get("ssim_window") or "gaussian")
        self.fvd = make_fvd(metrics)
        self.so = cfg.get("storage_options") or None

    def __call__(self, batch: Mapping[str, Any]) -> dict[str, Any]:
        from ..distributed.stages import to_batch, from_batch

        return to_batch([self.score(row) for row in from_batch(batch)])

    def _output(self, row: dict, case, inp) -> np.ndarray:
        """The method's frames: inpaint ``(T, H, W, 3)``, extend the ``p`` predicted ones."""
        from ..distributed.config import job_settings
        from ..pipeline import finalize_clip, generated_array

        t0 = time.perf_counter()
        if row["method"] == "m3ddm":
            clip, state = pickle.loads(row["clip"]), pickle.loads(row["state"])
            row["seconds_unet"] = float(state.unet_seconds)
            generated = generated_array(clip, state)
            if case.task == "inpaint":
                out = finalize_clip(clip, generated, job_settings(self.cfg), inp.frames)
            else:
                out = finalize_clip(clip, generated, job_settings(self.cfg), inp.context)[case.context:]
        else:
            radius = int(self.ecfg["baselines"].get("telea_radius") or 5)
            out = run_baseline(row["method"], inp, radius)
            row["seconds_method"] = time.perf_counter() - t0
        return np.ascontiguousarray(out)

    def _fvd_clips(self, case, inp, out) -> tuple[np.ndarray, np.ndarray]:
        """(output clip, real clip) of FVD: inpainting the whole clips; prediction context + frames."""
        if case.task == "inpaint":
            return out, inp.frames
        return np.concatenate([inp.context, out]), np.concatenate([inp.context, inp.target])

    def score(self, row: dict) -> dict:
        from ..distributed.rows import check_row
        from ..distributed.stages import fail_row
        from .scoring import _features
        from .task_rows import mask_key, task_ground_truth, task_inputs

        t0 = time.perf_counter()
        case = self.cases.get(row["ratio_label"])
        inp = None
        if case is not None:
            row.update(task=case.task, mask_motion=case.motion, context=case.context, predict=case.predict)
        if row["status"] in ("pending", "baseline"):
            try:
                gt = task_ground_truth(row, self.spec, self.so)
                inp = task_inputs(gt, case, mask_key(row["uri"], row["start"]), self.spec)
                out = self._output(row, case, inp)
                if case.task == "inpaint":
                    s = score_inpaint(out, inp, self.lpips, self.ssim_window)
                    shown_in = (inp.frames * (1 - inp.masks)[..., None]).astype(np.uint8)
                    shown_out, shown_gt = out, inp.frames
                else:
                    s = score_prediction(out, inp, self.lpips, self.ssim_window)
                    for k in ("psnr_frames", "ssim_frames", "lpips_frames"):
                        s[k] = _json_list(s[k])
                    blank = np.zeros_like(inp.target)
                    shown_in = np.concatenate([inp.context, blank])
                    shown_out = np.concatenate([inp.context, out])
                    shown_gt = np.concatenate([inp.context, inp.target])
                row.update(s)
                row["metric_impl"] = json.dumps({"lpips": self.lpips.metric_impl if self.lpips else "not computed",
                                                 "ssim_window": self.ssim_window}, sort_keys=True)
                row["frame_height"], row["frame_width"] = int(gt.shape[1]), int(gt.shape[2])
                row["canvas_size"] = int(self.cfg["canvas_size"])
                from .report import strip_image

                img = strip_image(shown_in, shown_out, shown_gt, max_frames=int(self.ecfg["report"].get("frames") or 4))
                row["image"] = self._write_png(row, img)
                fake, real = self._fvd_clips(case, inp, out)
                if self.fvd is not None and fake.shape[0] >= _fvd_min_frames():  # else: no FVD for this set
                    row["fvd_fake"] = _features(self.fvd, fake)
                    if row.get("fvd_real_wanted"):
                        row["fvd_real"] = _features(self.fvd, real)
                row["status"] = "ok"
            except Exception as exc:  # noqa: BLE001
                row = fail_row(row, "score", exc, self.cfg)
        row["seconds_score"] = time.perf_counter() - t0
        row["clip"], row["state"] = b"", b""
        return check_row(row, "score", "eval")

    def _write_png(self, row: Mapping[str, Any], img) -> str:
        from .scoring import write_report_png

        return write_report_png(self.output, self.so, row, img)
