"""The evaluation's one door to the single-process model code: what the CPU preparation hands to the
coarse and fine actor pools, and how the scoring stage finishes the fine stage's output.

Every ``m3ddm`` row goes through these functions (:mod:`m3ddm_ray.pipeline`,
:mod:`m3ddm_ray.prepare` with the :mod:`m3ddm_ray.task` of the row); nothing else in the evaluation imports them.
Frames are uint8 ``(T, H, W, 3)`` RGB, masks uint8 ``(T, H, W)`` with 1 = generated. The imports are
lazy: the command line imports the evaluation without torch.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["prepare_outpaint", "prepare_inpaint", "prepare_extend", "finish_outpaint", "finish_inpaint",
           "finish_extend"]


def _prepare(frames: np.ndarray, fps: float, task, settings):
    from ..prepare import prepare_task

    return prepare_task(frames, fps, task, settings)


def prepare_outpaint(strip: np.ndarray, fps: float, ratio, settings):
    """:func:`m3ddm_ray.prepare.prepare_task` of the known strip for an
    :class:`~m3ddm_ray.task.Outpaint` to ``ratio``."""
    from ..geometry import parse_ratio
    from ..task import Outpaint

    return _prepare(strip, fps, Outpaint(parse_ratio(ratio)), settings)


def prepare_inpaint(frames: np.ndarray, masks: np.ndarray, fps: float, settings, name: str):
    """:func:`m3ddm_ray.prepare.prepare_task` of an :class:`~m3ddm_ray.task.Inpaint` of the frames with
    their masks held in memory (``name`` in its errors)."""
    from ..task import Inpaint, MaskArray

    return _prepare(frames, fps, Inpaint(MaskArray(masks, name), 0, name), settings)


def prepare_extend(context: np.ndarray, fps: float, n: int, settings):
    """:func:`m3ddm_ray.prepare.prepare_task` of an :class:`~m3ddm_ray.task.Extend` of ``context``:
    ``n`` new frames after it."""
    from ..task import Extend

    return _prepare(context, fps, Extend(n, "forward"), settings)


def _finish(clip, state: Any, settings, source: np.ndarray | None) -> np.ndarray:
    from ..pipeline import finalize_clip, generated_array

    return finalize_clip(clip, generated_array(clip, state), settings, source)


def finish_outpaint(clip, state, settings) -> np.ndarray:
    """The canvas crop of the fine stage's ``state``: uint8 ``(T, h, w, 3)``
    (:func:`~m3ddm_ray.pipeline.finalize_clip`)."""
    return _finish(clip, state, settings, None)


def finish_inpaint(clip, state, frames: np.ndarray, settings) -> np.ndarray:
    """The inpainted frames, the known pixels of ``frames`` pasted back: uint8 ``(T, H, W, 3)``
    (:func:`~m3ddm_ray.pipeline.finalize_clip`)."""
    return _finish(clip, state, settings, frames)


def finish_extend(clip, state, context: np.ndarray, settings) -> np.ndarray:
    """Context and new frames: uint8 ``(c + n, H, W, 3)`` (:func:`~m3ddm_ray.pipeline.finalize_clip`)."""
    return _finish(clip, state, settings, context)
