"""Torch twins of :func:`m3ddm_ray.tiles.fuse` and :func:`m3ddm_ray.tiles.split`, for a sampler that
denoises spatial tiles together and fuses them after every step (MultiDiffusion, arXiv 2302.08113,
§3).

Same rules, same checks and the same arithmetic order as the numpy versions (the placement and the
weights stay in :mod:`m3ddm_ray.tiles`), so the results are equal to them on the CPU
(``tests/test_tiles.py``). Tensors stay on their device; the weights are moved to the values'
device and dtype.
"""

from __future__ import annotations

from typing import Sequence, Tuple

import numpy as np
import torch

from .errors import InputError
from .tiles import FusionWeights, Tile, fuse_boxes, split_boxes

__all__ = ["fuse", "split"]


def _as(a, like: torch.Tensor) -> torch.Tensor:
    if isinstance(a, torch.Tensor):
        return a.to(device=like.device, dtype=like.dtype)
    return torch.as_tensor(np.asarray(a), device=like.device).to(like.dtype)


def fuse(
    tile_values: torch.Tensor,
    tiles: Sequence[Tile],
    frame_latent_hw: Tuple[int, int],
    weights: FusionWeights,
) -> torch.Tensor:
    """Fuse per-tile latents into one frame latent: ``Σ_i w_i x_i / Σ_i w_i`` on covered cells, 0
    elsewhere, computed as ``r + Σ_i w_i (x_i - r) / Σ_i w_i`` (``r`` = first covering tile; ``r``
    itself where the sum is 0), exactly as :func:`m3ddm_ray.tiles.fuse`.

    Args:
        tile_values: floating tensor ``(n_tiles, ..., t, t)``, e.g. ``(n, B, 4, F, t, t)``.
        tiles: the plan (:func:`m3ddm_ray.tiles.plan_tiles`).
        frame_latent_hw: ``(h, w)`` of the frame's latent grid.
        weights: :func:`m3ddm_ray.tiles.fusion_weights` of the plan (numpy or tensors).

    Returns:
        Tensor ``(..., h, w)`` of the values' dtype and device.

    Raises:
        InputError: as :func:`m3ddm_ray.tiles.fuse`.
    """
    x = tile_values
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise InputError(f"tile values must be a floating torch tensor, got "
                         f"{getattr(x, 'dtype', type(x).__name__)}")
    per_tile, norm = weights
    boxes = fuse_boxes(tuple(x.shape), tiles, frame_latent_hw, tuple(per_tile.shape), tuple(norm.shape))
    per_tile, norm = _as(per_tile, x), _as(norm, x)
    gh, gw = int(frame_latent_hw[0]), int(frame_latent_hw[1])
    ref = x.new_zeros(tuple(x.shape[1:-2]) + (gh, gw))
    for i in reversed(range(len(boxes))):  # the first covering tile is written last
        y0, y1, x0, x1 = boxes[i]
        ref[..., y0:y1, x0:x1] = x[i]
    acc = torch.zeros_like(ref)
    for i, (y0, y1, x0, x1) in enumerate(boxes):
        acc[..., y0:y1, x0:x1] += per_tile[i] * (x[i] - ref[..., y0:y1, x0:x1])
    safe = torch.where(norm > 0, norm, torch.ones_like(norm))  # acc and ref are 0 where norm is 0
    return torch.where(acc != 0, ref + acc / safe, ref)


def split(frame_values: torch.Tensor, tiles: Sequence[Tile], factor: int) -> torch.Tensor:
    """Cut a frame latent into the tiles' latents, as :func:`m3ddm_ray.tiles.split`.

    Args:
        frame_values: tensor ``(..., h, w)`` on the frame's latent grid.
        tiles: the plan.
        factor: pixels per latent cell of ``frame_values``.

    Returns:
        Tensor ``(n_tiles, ..., T // factor, T // factor)``, same dtype and device (a new tensor).

    Raises:
        InputError: as :func:`m3ddm_ray.tiles.split`.
    """
    if not isinstance(frame_values, torch.Tensor) or frame_values.dim() < 2:
        raise InputError(f"frame values must be a torch tensor (..., h, w), got "
                         f"{getattr(frame_values, 'shape', type(frame_values).__name__)}")
    t, boxes = split_boxes(tuple(frame_values.shape), tiles, factor)
    if not boxes:
        return frame_values.new_empty((0,) + tuple(frame_values.shape[:-2]) + (t, t))
    return torch.stack([frame_values[..., y0:y1, x0:x1] for y0, y1, x0, x1 in boxes])
