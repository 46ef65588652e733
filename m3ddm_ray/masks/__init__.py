"""Masks, pure numpy (no torch): training mask policies (:mod:`m3ddm_ray.masks.policies`) and the
per-frame mask rules of inpainting and extension (:mod:`m3ddm_ray.masks.frames`)."""

from .frames import (  # noqa: F401
    MaskUsage, binarize, canvas_masks, cell_align, check_mask_count, dilate_masks, fit_mask_frames, fit_masks,
    resize_masks)
from .policies import (  # noqa: F401
    DIRECTIONS,
    FRAME_CASES,
    POLICIES,
    FreeFormPolicy,
    M3DDMPlusPolicy,
    M3DDMPolicy,
    MaskDraw,
    MaskPolicy,
    MixturePolicy,
    PredictionPolicy,
    border_mask,
    make_policy,
    mask_global_frames,
)
