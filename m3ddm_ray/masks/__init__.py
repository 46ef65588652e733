"""Training mask policies (pure numpy, no torch): see :mod:`m3ddm_ray.masks.policies`."""

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
