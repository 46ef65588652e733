"""Non-learned baselines of the inpainting and prediction evaluations. Pure numpy / OpenCV.

Inpainting, ``(frames, masks) -> frames`` at the source size, every pixel outside the mask kept:

* ``telea``: OpenCV TELEA inpainting (radius 5) of each frame on its own (no time);
* ``nearest_known``: each masked pixel copies the same pixel of the nearest frame in time where it
  is known (earlier frame on a tie); pixels hidden in every frame fall back to the frame's TELEA
  fill. With a moving mask most pixels are seen somewhere, with a stationary one none are.

Prediction, ``(known frames, n) -> n new frames``:

* ``last_frame``: the last known frame repeated (the usual "copy last frame" floor of video
  prediction, ExtDM and others).
"""

from __future__ import annotations

import cv2
import numpy as np

from ..errors import InputError
from ..quality import check_frames

__all__ = ["INPAINT_BASELINES", "PREDICTION_BASELINES", "telea_inpaint", "nearest_known_inpaint",
           "last_frame_copy"]


def _check(frames, masks) -> tuple[np.ndarray, np.ndarray]:
    frames = check_frames(frames, "frames")
    masks = np.asarray(masks)
    if masks.shape != frames.shape[:3] or masks.dtype != np.uint8:
        raise InputError(f"masks {masks.dtype} {masks.shape} must be uint8 (T, H, W) = {frames.shape[:3]}, 0/1")
    return frames, masks


def telea_inpaint(frames: np.ndarray, masks: np.ndarray, radius: int = 5) -> np.ndarray:
    """TELEA fill of every frame's masked pixels (uint8 ``(T, H, W, 3)`` RGB, masks uint8 0/1)."""
    frames, masks = _check(frames, masks)
    out = frames.copy()
    for t in range(len(frames)):
        if masks[t].any():
            out[t] = cv2.inpaint(frames[t], masks[t], radius, cv2.INPAINT_TELEA)
    return out


def nearest_known_inpaint(frames: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """Masked pixels copied from the nearest frame (in time) where that pixel is known; TELEA where it
    is known in no frame. uint8 ``(T, H, W, 3)``; unmasked pixels unchanged."""
    frames, masks = _check(frames, masks)
    t = len(frames)
    known = masks == 0
    best = np.full(masks.shape, -1, np.int64)  # source frame per pixel
    dist = np.full(masks.shape, np.iinfo(np.int64).max, np.int64)
    for d in range(1, t):  # earlier frame first at equal distance
        for src in (-d, d):
            lo, hi = max(0, -src), min(t, t - src)
            if lo >= hi:
                continue
            tgt = np.arange(lo, hi)
            ok = masks[tgt].astype(bool) & known[tgt + src] & (dist[tgt] > d)
            best[tgt] = np.where(ok, (tgt + src)[:, None, None], best[tgt])
            dist[tgt] = np.where(ok, d, dist[tgt])
    filled = telea_inpaint(frames, masks * (best < 0).astype(np.uint8))
    tt, yy, xx = np.nonzero(best >= 0)
    filled[tt, yy, xx] = frames[best[tt, yy, xx], yy, xx]
    return filled


def last_frame_copy(frames: np.ndarray, n: int) -> np.ndarray:
    """uint8 ``(n, H, W, 3)``: the last of ``frames`` repeated ``n`` times."""
    frames = check_frames(frames, "frames")
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise InputError(f"n={n!r} must be an integer >= 1 (frames to predict)")
    return np.repeat(frames[-1:], int(n), axis=0)


#: Inpainting baselines by name.
INPAINT_BASELINES = {"telea": telea_inpaint, "nearest_known": nearest_known_inpaint}
#: Prediction baselines by name.
PREDICTION_BASELINES = {"last_frame": last_frame_copy}
