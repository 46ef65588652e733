"""Synthetic object-shaped masks for the inpainting evaluation: stationary or moving. Pure numpy + OpenCV.

The evaluation removes a region of frames whose ground truth is known (the source itself), so the
masks are drawn, not annotated. A mask is one random *object shape*, a star-shaped blob: a polygon of
``vertices`` points around a centre whose radii follow a smooth random curve (a few low-frequency
sines, so the outline is round-ish like a segmented object, never a rectangle), filled with OpenCV.

* ``stationary``: the same shape at the same place in every frame (the hardest case for copying
  from other frames: the hidden pixels are never visible);
* ``moving``: the same shape sliding along a straight path across the frame at constant speed,
  reflected at the borders (what a moving object's mask does; pixels hidden in one frame are
  visible in others).

Everything comes from ``numpy.random.default_rng(seed)``: the same arguments give the same masks.
The size is the shape's area as a fraction of the frame (``area``, the "mask ratio" of inpainting
benchmarks), reached to within the rasterisation.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from ..errors import InputError

__all__ = ["MOTIONS", "object_shape", "synthetic_masks"]

#: Kinds of :func:`synthetic_masks`.
MOTIONS = ("stationary", "moving")


def object_shape(rng: np.random.Generator, radius: float, vertices: int = 48) -> np.ndarray:
    """Vertices of a random star-shaped blob around ``(0, 0)``: float64 ``(vertices, 2)`` as ``(x, y)``.

    The radius at angle ``a`` is ``radius * (1 + sum_k c_k sin(k a + p_k))`` for ``k = 2..4`` with
    ``|c_k| <= 0.12`` (so it stays within ``[0.64, 1.36] * radius``, never self-intersects).
    """
    a = np.linspace(0, 2 * math.pi, vertices, endpoint=False)
    r = np.ones_like(a)
    for k in (2, 3, 4):
        r += rng.uniform(-0.12, 0.12) * np.sin(k * a + rng.uniform(0, 2 * math.pi))
    return np.stack([radius * r * np.cos(a), radius * r * np.sin(a)], axis=1)


def _fill(points: np.ndarray, centre: tuple[float, float], hw: tuple[int, int]) -> np.ndarray:
    m = np.zeros(hw, np.uint8)
    pts = np.round(points + np.asarray(centre)).astype(np.int32)
    cv2.fillPoly(m, [pts], 1)
    return m


def _reflect(x: float, lo: float, hi: float) -> float:
    """``x`` folded into ``[lo, hi]`` by reflection at both ends."""
    if hi <= lo:
        return lo
    span = hi - lo
    y = (x - lo) % (2 * span)
    return lo + (y if y <= span else 2 * span - y)


def synthetic_masks(num_frames: int, hw: tuple[int, int], motion: str = "stationary", area: float = 0.1,
                    seed: int = 0, speed: float = 0.02) -> np.ndarray:
    """Object-shaped masks for ``num_frames`` frames of size ``hw``.

    Args:
        num_frames: ``T >= 1``.
        hw: ``(H, W)`` in pixels (each >= 8).
        motion: ``"stationary"`` or ``"moving"`` (module docstring).
        area: target area of the shape as a fraction of the frame, in ``(0, 0.5]``.
        seed: seed of the shape, its start and its direction.
        speed: ``moving`` only: distance per frame as a fraction of the frame's diagonal.

    Returns:
        uint8 ``(T, H, W)`` 0/1, 1 = remove; every frame has at least one 1 and at least one 0.

    Raises:
        InputError: bad count, size, motion, area or speed.
    """
    if isinstance(num_frames, bool) or not isinstance(num_frames, (int, np.integer)) or num_frames < 1:
        raise InputError(f"num_frames={num_frames!r} must be an integer >= 1")
    h, w = (int(v) for v in hw)
    if h < 8 or w < 8:
        raise InputError(f"frame size {hw} is too small for an object mask; need H, W >= 8")
    if motion not in MOTIONS:
        raise InputError(f"motion={motion!r}; use one of {MOTIONS}")
    if not 0 < area <= 0.5:
        raise InputError(f"area={area!r} must be in (0, 0.5] (fraction of the frame removed)")
    if not 0 <= speed < 1:
        raise InputError(f"speed={speed!r} must be in [0, 1) (fraction of the diagonal per frame)")
    rng = np.random.default_rng(seed)
    radius = math.sqrt(area * h * w / math.pi)
    shape = object_shape(rng, radius)
    ext = np.abs(shape).max(axis=0)  # half extents (x, y)
    lo_x, hi_x = min(ext[0], w / 2), max(w - 1 - ext[0], w / 2)
    lo_y, hi_y = min(ext[1], h / 2), max(h - 1 - ext[1], h / 2)
    cx, cy = rng.uniform(lo_x, hi_x), rng.uniform(lo_y, hi_y)
    angle = rng.uniform(0, 2 * math.pi)
    step = speed * math.hypot(h, w) if motion == "moving" else 0.0
    out = np.empty((int(num_frames), h, w), np.uint8)
    for t in range(int(num_frames)):
        x = _reflect(cx + t * step * math.cos(angle), lo_x, hi_x)
        y = _reflect(cy + t * step * math.sin(angle), lo_y, hi_y)
        out[t] = _fill(shape, (x, y), (h, w))
    return out
