"""Shared helpers of the metric modules: the clip-pair and frame-size checks, frame chunking."""

from __future__ import annotations

from typing import Iterable, Tuple

import numpy as np

from m3ddm_ray.errors import InputError
from m3ddm_ray.quality import check_frames

_FRAME_CHUNK = 8  # frames per vectorised BMSE / PSNR step (bounds float64 temporaries)


def check_pair(pred, gt) -> Tuple[np.ndarray, np.ndarray]:
    """``(pred, gt)`` checked as uint8 ``(T, H, W, 3)`` clips of one shape
    (:func:`m3ddm_ray.quality.check_frames`); InputError naming both shapes otherwise."""
    p = check_frames(pred, "pred")
    g = check_frames(gt, "gt")
    if p.shape != g.shape:
        raise InputError(f"pred has shape {p.shape} but gt has shape {g.shape}; they must match")
    return p, g


def check_min_side(arr: np.ndarray, need: int, what: str) -> None:
    """InputError unless the frames of ``arr`` ``(T, H, W, ...)`` are at least ``need`` pixels on each side."""
    h, w = arr.shape[1:3]
    if min(h, w) < need:
        raise InputError(f"frames are {h} x {w}; {what} needs H and W >= {need}")


def frame_chunks(t: int, size: int = _FRAME_CHUNK) -> Iterable[slice]:
    """Slices of ``size`` frames covering ``range(t)``."""
    for t0 in range(0, t, size):
        yield slice(t0, min(t0 + size, t))
