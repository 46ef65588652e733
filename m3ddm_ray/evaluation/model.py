"""The evaluation's one door to the single-process model code: what the CPU preparation hands to the
coarse and fine actor pools, and how the scoring stage finishes the fine stage's output.

Every ``m3ddm`` row goes through these functions (:mod:`m3ddm_ray.pipeline` for outpainting,
:mod:`m3ddm_ray.tasks` for inpainting and prediction); nothing else in the evaluation imports them.
Frames are uint8 ``(T, H, W, 3)`` RGB, masks uint8 ``(T, H, W)`` with 1 = generated. The imports are
lazy: the command line imports the evaluation without torch.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["prepare_outpaint", "prepare_inpaint", "prepare_extend", "finish_outpaint", "finish_inpaint",
           "finish_extend"]


def prepare_outpaint(strip: np.ndarray, fps: float, ratio, settings):
    """:func:`m3ddm_ray.pipeline.prepare_clip` of the known strip for target ``ratio``."""
    from ..pipeline import prepare_clip

    return prepare_clip(strip, fps, ratio, settings)


def prepare_inpaint(frames: np.ndarray, masks: np.ndarray, fps: float, settings, name: str):
    """:func:`m3ddm_ray.tasks.prepare_inpaint` of the frames and their masks (``name`` in its errors)."""
    from .. import tasks

    return tasks.prepare_inpaint(frames, masks, fps, settings, name=name)


def prepare_extend(context: np.ndarray, fps: float, n: int, settings):
    """:func:`m3ddm_ray.tasks.prepare_extend` of ``context``: ``n`` new frames after it."""
    from .. import tasks

    return tasks.prepare_extend(context, fps, n, "forward", settings)


def _generated(clip, state: Any) -> np.ndarray:
    from ..pipeline import generated_array

    return generated_array(clip, state)


def finish_outpaint(clip, state, settings) -> np.ndarray:
    """The canvas crop of the fine stage's ``state``: uint8 ``(T, h, w, 3)``
    (:func:`~m3ddm_ray.pipeline.finalize_clip`)."""
    from ..pipeline import finalize_clip

    return finalize_clip(clip, _generated(clip, state), settings)


def finish_inpaint(clip, state, frames: np.ndarray, masks: np.ndarray, settings) -> np.ndarray:
    """The inpainted frames, known pixels pasted back: uint8 ``(T, H, W, 3)``
    (:func:`m3ddm_ray.tasks.finalize_inpaint`)."""
    from .. import tasks

    return tasks.finalize_inpaint(clip, _generated(clip, state), frames, masks, settings)


def finish_extend(clip, state, context: np.ndarray) -> np.ndarray:
    """Context and new frames: uint8 ``(c + n, H, W, 3)`` (:func:`m3ddm_ray.tasks.finalize_extend`)."""
    from .. import tasks

    return tasks.finalize_extend(clip, _generated(clip, state), context)
