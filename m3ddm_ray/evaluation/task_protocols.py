"""Evaluation protocols of inpainting and prediction (pure parts: cases and scores, no Ray, no model).

**Inpainting** (:func:`inpaint_case`): a ground-truth clip gets a synthetic object-shaped mask
(:func:`m3ddm_ray.masks.synthetic.synthetic_masks`, ``stationary`` or ``moving``, area fraction
``area``, seeded per clip); the method sees the frames and masks and returns frames of the same
size; since every method keeps the pixels outside the mask, scores are over the whole frame (PSNR,
SSIM; LPIPS in the eval job) plus :func:`temporal_consistency`.

**Prediction** (:func:`prediction_case`), as ExtDM (Zhang et al., CVPR 2024) reports it: condition
on the first ``c`` frames, predict the next ``p``, and report every metric per predicted frame
index ``1..p`` (:func:`prediction_scores`; FVD over the predicted clips in the eval job).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import InputError
from ..masks.synthetic import MOTIONS, synthetic_masks
from ..quality import check_frames
from .metrics.pixel import psnr
from .metrics.structural import ssim

__all__ = ["InpaintCase", "PredictionCase", "inpaint_case", "prediction_case", "temporal_consistency",
           "inpaint_scores", "prediction_scores"]


@dataclass(frozen=True)
class InpaintCase:
    """One inpainting case: ``frames`` uint8 ``(T, H, W, 3)`` ground truth, ``masks`` uint8
    ``(T, H, W)`` 0/1 (1 = removed), ``motion`` and ``area`` of the mask."""

    frames: np.ndarray
    masks: np.ndarray
    motion: str
    area: float


@dataclass(frozen=True)
class PredictionCase:
    """One prediction case: ``context`` uint8 ``(c, H, W, 3)`` given frames, ``target`` uint8
    ``(p, H, W, 3)`` the ground truth of the frames to predict."""

    context: np.ndarray
    target: np.ndarray


def inpaint_case(frames: np.ndarray, motion: str = "moving", area: float = 0.1, seed: int = 0) -> InpaintCase:
    """The inpainting case of a ground-truth clip (module docstring).

    Raises:
        InputError: bad frames, motion or area.
    """
    frames = check_frames(frames, "frames")
    if motion not in MOTIONS:
        raise InputError(f"motion={motion!r}; use one of {MOTIONS}")
    m = synthetic_masks(frames.shape[0], frames.shape[1:3], motion, area, seed)
    return InpaintCase(frames, m, motion, float(area))


def prediction_case(frames: np.ndarray, context: int, predict: int) -> PredictionCase:
    """Frames ``[0, c)`` as context, ``[c, c + p)`` as target.

    Raises:
        InputError: ``c`` or ``p`` < 1, or a clip shorter than ``c + p`` frames.
    """
    frames = check_frames(frames, "frames")
    for name, v in (("context", context), ("predict", predict)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise InputError(f"{name}={v!r} must be an integer >= 1 (frames)")
    if frames.shape[0] < context + predict:
        raise InputError(f"the clip has {frames.shape[0]} frames; context={context} + predict={predict} needs "
                         f"{context + predict}; use shorter splits or longer clips")
    return PredictionCase(frames[:context], frames[context:context + predict])


def temporal_consistency(pred: np.ndarray, gt: np.ndarray, masks: np.ndarray | None = None) -> np.ndarray:
    """Per frame pair ``(t, t + 1)``: mean absolute difference, in levels (0..255), between the
    method's frame-to-frame change and the ground truth's, over the pixels masked in either frame
    (all pixels with ``masks=None``). 0 = the output changes over time exactly as the truth does;
    flicker inside the hole raises it. float64 ``(T - 1,)``; NaN for a pair with no masked pixel.

    Raises:
        InputError: shapes that differ, fewer than 2 frames.
    """
    pred, gt = check_frames(pred, "pred"), check_frames(gt, "gt")
    if pred.shape != gt.shape or pred.shape[0] < 2:
        raise InputError(f"pred {pred.shape} and gt {gt.shape} must have one shape with T >= 2")
    dp = np.diff(pred.astype(np.int16), axis=0)
    dg = np.diff(gt.astype(np.int16), axis=0)
    err = np.abs(dp - dg).mean(axis=3)  # (T-1, H, W)
    if masks is None:
        return err.reshape(err.shape[0], -1).mean(axis=1).astype(np.float64)
    m = np.asarray(masks).astype(bool)
    if m.shape != pred.shape[:3]:
        raise InputError(f"masks {m.shape} must be (T, H, W) = {pred.shape[:3]}")
    region = m[:-1] | m[1:]
    out = np.full(err.shape[0], np.nan)
    for t in range(err.shape[0]):
        if region[t].any():
            out[t] = float(err[t][region[t]].mean())
    return out


def inpaint_scores(pred: np.ndarray, case: InpaintCase) -> dict[str, float]:
    """Clip means of PSNR (dB), SSIM and :func:`temporal_consistency` (levels) of an inpainting."""
    p = check_frames(pred, "pred")
    tc = temporal_consistency(p, case.frames, case.masks) if len(p) > 1 else np.array([np.nan])
    return {"psnr": float(np.mean(psnr(p, case.frames))), "ssim": float(np.mean(ssim(p, case.frames))),
            "temporal": float(np.nanmean(tc)) if np.isfinite(tc).any() else float("nan")}


def prediction_scores(pred: np.ndarray, case: PredictionCase) -> dict[str, np.ndarray]:
    """PSNR (dB) and SSIM per predicted frame index: float64 ``(p,)`` each, index 0 = the first new frame.

    Raises:
        InputError: ``pred`` not of the target's shape.
    """
    p = check_frames(pred, "pred")
    if p.shape != case.target.shape:
        raise InputError(f"pred {p.shape} must have the target's shape {case.target.shape}")
    return {"psnr": np.asarray(psnr(p, case.target), np.float64), "ssim": np.asarray(ssim(p, case.target), np.float64)}
