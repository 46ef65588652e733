"""Value rules of the outpainting settings, in one torch-free place.

Several layers check the same setting: the sampler and pipeline settings
(:class:`m3ddm_ray.sampling.SamplerSettings`, :class:`m3ddm_ray.pipeline.OutpaintSettings`), the
canvas geometry (:func:`m3ddm_ray.geometry.plan_canvas`) and the manifest validation
(:mod:`m3ddm_ray.distributed.manifest`, which must stay free of torch so that a bad manifest row is
reported with its row number before any model is loaded). Each rule is written here once; every
check calls it and only words the message its own way (``canvas_size=60 ...`` in a settings
error, ``row 3, column 'canvas_size': ...`` in a manifest error).

A rule returns ``None`` when the value is acceptable, else the reason as a phrase that follows the
setting's name (``"must be a positive multiple of 8 (e.g. 256)"``). Values are already integers.
"""

from __future__ import annotations

__all__ = [
    "MIN_INFERENCE_STEPS",
    "MAX_INFERENCE_STEPS",
    "OUTPUT_SIZES",
    "inference_steps_problem",
    "canvas_size_problem",
    "TASKS",
    "EXTEND_DIRECTIONS",
    "extend_frames_problem",
    "dilate_problem",
]

#: Fewest PNDM steps the sampler runs: diffusers' PNDM schedule needs >= 2 steps (the official
#: setting is 50).
MIN_INFERENCE_STEPS = 2
#: Most PNDM steps: the scheduler has 1000 training timesteps and cannot take more inference steps.
MAX_INFERENCE_STEPS = 1000
#: Accepted ``output_size`` values: the model canvas, or the source resolution.
OUTPUT_SIZES: tuple[str, ...] = ("canvas", "source")


def inference_steps_problem(steps: int) -> str | None:
    """Why ``num_inference_steps`` (an int) is not usable, or None: it must be in 2..1000."""
    if not MIN_INFERENCE_STEPS <= steps <= MAX_INFERENCE_STEPS:
        return f"must be in {MIN_INFERENCE_STEPS}..{MAX_INFERENCE_STEPS} (50 official)"
    return None


def canvas_size_problem(size: int) -> str | None:
    """Why ``canvas_size`` (an int, pixels) is not usable, or None: a positive multiple of 8 (the VAE
    downsamples by 8; the released model is trained at 256)."""
    if size <= 0 or size % 8:
        return "must be a positive multiple of 8 (e.g. 256)"
    return None


#: What a manifest row (or a command) asks the masked model to do: ``outpaint`` (a new aspect ratio,
#: the default), ``inpaint`` (regenerate what per-frame masks mark) or ``extend`` (new frames after
#: or before the video). See docs/tasks.md and :mod:`m3ddm_ray.task`.
TASKS: tuple[str, ...] = ("outpaint", "inpaint", "extend")

#: Directions of an extension: new frames after the video, or before it.
EXTEND_DIRECTIONS: tuple[str, ...] = ("forward", "backward")


def extend_frames_problem(n: int) -> str | None:
    """Why ``extend_frames`` (an int, frames) is not usable, or None: at least one new frame."""
    if n < 1:
        return "must be >= 1 (the number of new frames)"
    return None


def dilate_problem(pixels: int) -> str | None:
    """Why a mask dilation (an int, pixels) is not usable, or None: it must be >= 0."""
    if pixels < 0:
        return "must be >= 0 pixels"
    return None
