"""Non-learned baselines of every task, run through the same protocol as the model. Pure numpy / OpenCV.

Outpainting (docs/evaluation.md, "Baselines"): ``(strip, geom) -> canvas``, with ``strip`` the input
clip ``uint8 (T, h, w, 3)`` and ``geom`` the :class:`~m3ddm_ray.geometry.CanvasGeometry` the pipeline
plans for it (``MaskCase.geom``); the result is ``uint8 (T, S, S, 3)`` canvases, as the model makes.
The strip is placed as the pipeline places it (:func:`place_on_canvas`) and :func:`outpaint` finishes
with the pipeline's own paste-back and crop: ``replicate``, ``reflect``, ``blur``, ``telea``.

Inpainting (docs/tasks.md, "Scores"), ``(frames, masks) -> frames`` at the source size, every pixel
outside the mask kept (:func:`inpaint_baseline` zeroes the hidden pixels first, so no method can read
the ground truth): ``telea`` (per frame) and ``nearest_known`` (:func:`nearest_known_inpaint`).
Prediction, ``(known frames, n) -> n new frames``: ``last_frame``, the last known frame repeated.
"""

from __future__ import annotations

from typing import Callable

import cv2
import numpy as np

from .. import geometry
from ..errors import InputError
from ..quality import check_frames

__all__ = ["BASELINES", "place_on_canvas", "replicate", "reflect", "blur", "telea", "outpaint",
           "telea_inpaint", "nearest_known_inpaint", "last_frame_copy", "inpaint_baseline", "prediction_baseline"]


def place_on_canvas(strip: np.ndarray, geom: geometry.CanvasGeometry) -> np.ndarray:
    """The strip on a black ``S x S`` canvas, exactly as ``geometry.make_canvases`` places it (float32
    ``cv2.resize`` to ``geom.resized_hw`` when the sizes differ, values truncated to ``uint8``)."""
    strip = _check(strip, geom)
    s = geom.canvas_size
    y0, y1, x0, x1 = geom.known_box
    rh, rw = geom.resized_hw
    out = np.zeros((strip.shape[0], s, s, 3), dtype=np.uint8)
    if strip.shape[1:3] == (rh, rw):
        out[:, y0:y1, x0:x1] = strip
    else:
        for i, f in enumerate(strip):
            out[i, y0:y1, x0:x1] = cv2.resize(f.astype(np.float32), (rw, rh))
    return out


def _check(strip: np.ndarray, geom: geometry.CanvasGeometry) -> np.ndarray:
    strip = check_frames(strip, "strip")
    if tuple(strip.shape[1:3]) != tuple(geom.source_hw):
        raise InputError(f"strip is {strip.shape[1]}x{strip.shape[2]} (HxW) but the canvas was planned for "
                         f"{geom.source_hw[0]}x{geom.source_hw[1]}")
    return strip


def _known(strip, geom) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    canvas = place_on_canvas(strip, geom)
    y0, y1, x0, x1 = geom.known_box
    return canvas[:, y0:y1, x0:x1], (y0, geom.canvas_size - y1, x0, geom.canvas_size - x1)


def _pad(strip, geom, mode: str) -> np.ndarray:
    known, (top, bottom, left, right) = _known(strip, geom)
    if mode == "reflect" and (known.shape[1] < 2 and (top or bottom) or known.shape[2] < 2 and (left or right)):
        mode = "edge"  # a 1-pixel rectangle has nothing to mirror
    return np.ascontiguousarray(np.pad(known, ((0, 0), (top, bottom), (left, right), (0, 0)), mode=mode))


def replicate(strip: np.ndarray, geom: geometry.CanvasGeometry) -> np.ndarray:
    """Border filled with the nearest edge pixel of the known rectangle."""
    return _pad(strip, geom, "edge")


def reflect(strip: np.ndarray, geom: geometry.CanvasGeometry) -> np.ndarray:
    """Border filled with the mirror image of the known rectangle (edge pixel not repeated)."""
    return _pad(strip, geom, "reflect")


def blur(strip: np.ndarray, geom: geometry.CanvasGeometry, sigma: float | None = None) -> np.ndarray:
    """Blurred-background fill: known rectangle scaled to cover the canvas, Gaussian blur, known pasted."""
    known, _ = _known(strip, geom)
    s = geom.canvas_size
    kh, kw = known.shape[1:3]
    scale = max(s / kh, s / kw)
    bh, bw = max(s, int(round(kh * scale))), max(s, int(round(kw * scale)))
    top, left = (bh - s) // 2, (bw - s) // 2
    sig = float(sigma) if sigma is not None else s / 16.0
    y0, y1, x0, x1 = geom.known_box
    out = np.empty((known.shape[0], s, s, 3), dtype=np.uint8)
    for i, k in enumerate(known):
        big = cv2.resize(k, (bw, bh), interpolation=cv2.INTER_LINEAR)[top:top + s, left:left + s]
        out[i] = cv2.GaussianBlur(big, (0, 0), sigmaX=sig, sigmaY=sig, borderType=cv2.BORDER_REFLECT_101)
        out[i, y0:y1, x0:x1] = k
    return out


def telea(strip: np.ndarray, geom: geometry.CanvasGeometry, radius: int = 5) -> np.ndarray:
    """OpenCV TELEA inpainting of the generated region of each canvas."""
    canvas = place_on_canvas(strip, geom)
    if geom.fills_canvas:
        return canvas
    mask = geometry.pixel_mask(geom)
    return np.stack([cv2.inpaint(c, mask, int(radius), cv2.INPAINT_TELEA) for c in canvas])


#: Baseline name -> ``(strip, geom) -> canvas``.
BASELINES: dict[str, Callable[[np.ndarray, geometry.CanvasGeometry], np.ndarray]] = {
    "replicate": replicate, "reflect": reflect, "blur": blur, "telea": telea,
}


def outpaint(method: str, strip: np.ndarray, geom: geometry.CanvasGeometry, ratio: geometry.RatioLike,
             **options) -> np.ndarray:
    """Run baseline ``method`` (with its ``options``: ``sigma`` of ``blur``, ``radius`` of ``telea``) and
    finish like the pipeline (known pixels pasted back, ``crop_box`` of ``ratio``): ``uint8 (T, h', w',
    3)``, what ``finalize_clip`` returns for the model."""
    if method not in BASELINES:
        raise InputError(f"unknown baseline {method!r}; use one of {', '.join(BASELINES)}")
    canvas = BASELINES[method](strip, geom, **options)
    masked = place_on_canvas(strip, geom)
    composite = geometry.paste_back(canvas, masked, geometry.pixel_mask(geom), mode="round")
    y0, y1, x0, x1 = geometry.crop_box(geom, ratio)
    return np.ascontiguousarray(composite[:, y0:y1, x0:x1])


def _check_masks(frames, masks) -> tuple[np.ndarray, np.ndarray]:
    frames = check_frames(frames, "frames")
    masks = np.asarray(masks)
    if masks.shape != frames.shape[:3] or masks.dtype != np.uint8:
        raise InputError(f"masks {masks.dtype} {masks.shape} must be uint8 (T, H, W) = {frames.shape[:3]}, 0/1")
    return frames, masks


def telea_inpaint(frames: np.ndarray, masks: np.ndarray, radius: int = 5) -> np.ndarray:
    """TELEA fill of every frame's masked pixels (uint8 ``(T, H, W, 3)`` RGB, masks uint8 0/1)."""
    frames, masks = _check_masks(frames, masks)
    out = frames.copy()
    for t in range(len(frames)):
        if masks[t].any():
            out[t] = cv2.inpaint(frames[t], masks[t], radius, cv2.INPAINT_TELEA)
    return out


def nearest_known_inpaint(frames: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """Masked pixels copied from the nearest frame (in time) where that pixel is known; TELEA where it
    is known in no frame. uint8 ``(T, H, W, 3)``; unmasked pixels unchanged."""
    frames, masks = _check_masks(frames, masks)
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


def inpaint_baseline(method: str, frames: np.ndarray, masks: np.ndarray, telea_radius: int = 5) -> np.ndarray:
    """Inpainting baseline ``method`` (``telea``, ``nearest_known``) of uint8 ``(T, H, W, 3)`` frames whose
    ``masks`` (uint8 ``(T, H, W)``, 1 = hidden) pixels are zeroed first: uint8 ``(T, H, W, 3)``.

    Raises:
        KeyError: another method name.
    """
    hidden = (frames * (1 - masks)[..., None]).astype(np.uint8)
    fns = {"telea": lambda: telea_inpaint(hidden, masks, telea_radius),
           "nearest_known": lambda: nearest_known_inpaint(hidden, masks)}
    return fns[method]()


def prediction_baseline(method: str, context: np.ndarray, n: int) -> np.ndarray:
    """Prediction baseline ``method`` (``last_frame``) of uint8 ``(c, H, W, 3)`` known frames: ``(n, H, W, 3)``.

    Raises:
        KeyError: another method name.
    """
    return {"last_frame": last_frame_copy}[method](context, n)
