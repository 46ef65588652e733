"""The flat-scene check: does a model continue what it sees?

A clip of one flat background colour with a small moving object, outpainted to another ratio, must
keep the background colour in the border: any model that reads its masked-video condition can, and
edge replication does it within a few levels. A model that ignores its condition paints colours of
its training data there instead. Pure numpy; the caller runs the model.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ..errors import InputError

#: Background colours of the check (RGB, uint8): a grey wall, a green field, a sky blue.
FLAT_COLOURS: tuple[tuple[int, int, int], ...] = ((128, 128, 128), (70, 140, 60), (120, 170, 220))


def flat_clip(colour: Sequence[int], height: int = 72, width: int = 128, frames: int = 16,
              object_colour: Sequence[int] = (230, 40, 40), object_size: int = 8) -> np.ndarray:
    """A flat ``colour`` clip with a square object moving left to right along the middle row.

    Args:
        colour: background RGB, three ints in ``[0, 255]``.
        height, width: frame size in pixels (16:9 by default).
        frames: number of frames ``T``.
        object_colour, object_size: RGB and side (pixels) of the moving square.

    Returns:
        ``uint8 (T, height, width, 3)``.

    Raises:
        InputError: a colour outside ``[0, 255]`` or not three values; a size that does not fit.
    """
    for name, c in (("colour", colour), ("object_colour", object_colour)):
        if len(c) != 3 or any(not 0 <= int(v) <= 255 for v in c):
            raise InputError(f"{name}={tuple(c)!r}: give three RGB values in [0, 255]")
    if not 0 < object_size < min(height, width) or frames < 1:
        raise InputError(f"object_size={object_size} must be in (0, min(height, width)) and frames={frames} >= 1")
    clip = np.empty((frames, height, width, 3), np.uint8)
    clip[:] = np.asarray(colour, np.uint8)
    y0 = (height - object_size) // 2
    span = width - object_size
    for t in range(frames):
        x0 = int(round(span * t / max(frames - 1, 1)))
        clip[t, y0:y0 + object_size, x0:x0 + object_size] = np.asarray(object_colour, np.uint8)
    return clip


def output_border(geom, ratio) -> np.ndarray:
    """Bool ``(h, w)`` mask of the generated pixels of an output at ``ratio`` made on the canvas
    ``geom`` with ``output_size: canvas`` (:func:`m3ddm_ray.geometry.pixel_mask` cropped by
    :func:`m3ddm_ray.geometry.crop_box`)."""
    from .. import geometry

    y0, y1, x0, x1 = geometry.crop_box(geom, ratio)
    return geometry.pixel_mask(geom)[y0:y1, x0:x1].astype(bool)


def border_error(output: np.ndarray, border: np.ndarray, colour: Sequence[int]) -> float:
    """Mean absolute error (RGB levels) of the generated border of outpainted frames against the
    background ``colour``.

    Args:
        output: ``uint8 (T, h, w, 3)`` outpainted frames.
        border: bool ``(h, w)``: True on generated pixels (:func:`output_border`).
        colour: the background RGB.

    Returns:
        the MAE in ``[0, 255]`` over every border pixel, frame and channel.

    Raises:
        InputError: the mask does not match the frames or marks no pixel.
    """
    out, border = np.asarray(output), np.asarray(border, bool)
    if out.ndim != 4 or border.shape != out.shape[1:3] or not border.any():
        raise InputError(f"border mask {border.shape} must match frames {out.shape[1:3]} and mark some pixels")
    vals = out[:, border].astype(np.float64)  # (T, n, 3)
    return float(np.abs(vals - np.asarray(colour, np.float64)).mean())
