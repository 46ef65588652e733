"""The tiled sampler: a window's frame latent denoised as overlapping canvas-size tiles whose guided
noise predictions are fused at every step (MultiDiffusion, arXiv 2302.08113, §3), and the torch twins
of :func:`m3ddm_ray.tiles.fuse` and :func:`m3ddm_ray.tiles.split` it uses.

:func:`sample_tiled_windows` keeps **one** latent per window at the working resolution,
``(1, 4, F, H, W)``, and one scheduler. At every step it cuts the scheduler-scaled latent into the
tiles, runs the three-branch guided UNet on them (:class:`m3ddm_ray.sampling.GuidedUNet`, the same
per-step code as :func:`m3ddm_ray.sampling.sample_windows`; ``max_batch`` tiles per UNet call), fuses
the tiles' guided ε with :func:`m3ddm_ray.tiles.fusion_weights` and takes one scheduler step on the
frame latent.

Why ε and not the stepped latents: the multistep schedulers keep a history of the model outputs
(PNDM/PLMS its last four ε, DPM-Solver++ and UniPC their last x₀ predictions) and step the latent
they were given. Fusing ε before the step gives them one consistent history for one frame latent;
fusing per-tile stepped latents would need one scheduler state per tile whose histories no longer
match the fused latent after the first step. The scheduler step is affine in ε for a fixed history,
so for a one-step solver (DDIM, Euler) the two choices give the same fused latent anyway.

The fusion functions below have the same rules, checks and arithmetic order as the numpy versions
(the placement and the weights stay in :mod:`m3ddm_ray.tiles`), so their results are equal on the CPU
(``tests/test_tiles.py``). Tensors stay on their device; the weights are moved to the values' device
and dtype.

Same rules, same checks and the same arithmetic order as the numpy versions (the placement and the
weights stay in :mod:`m3ddm_ray.tiles`), so the results are equal to them on the CPU
(``tests/test_tiles.py``). Tensors stay on their device; the weights are moved to the values'
device and dtype.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Callable, Sequence, Tuple

import numpy as np
import torch

from .errors import InputError
from .tiles import FusionWeights, Tile, fuse_boxes, split_boxes, tile_groups

__all__ = ["fuse", "split", "tile_window_inputs", "sample_tiled_windows"]


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


def tile_window_inputs(inp, tiles: Sequence[Tile], factor: int) -> list:
    """The frame-level inputs of a window cut into its tiles' inputs.

    Args:
        inp: :class:`m3ddm_ray.sampling.WindowInputs` at the working resolution (``z_*`` ``(1, 4, F,
            H, W)``, ``mask`` ``(1, 1, F, H, W)``, guides ``(4, H, W)``).
        tiles: the plan (:func:`m3ddm_ray.tiles.plan_tiles`).
        factor: the VAE's spatial downsampling.

    Returns:
        One ``WindowInputs`` per tile with ``(1, 4, F, t, t)`` latents, its crop of the mask and of
        every guide latent, and the window's global tokens and fps unchanged (every tile sees the
        whole-frame global frames).

    Raises:
        InputError: as :func:`split`.
    """
    zi, zc, zu, m = (split(a, tiles, factor) for a in (inp.z_init, inp.z_cond, inp.z_uncond, inp.mask))
    guides = {pos: split(g, tiles, factor) for pos, g in inp.guides.items()}
    return [replace(inp, z_init=zi[k], z_cond=zc[k], z_uncond=zu[k], mask=m[k],
                    guides={pos: g[k] for pos, g in guides.items()}) for k in range(len(tiles))]


@torch.no_grad()
def sample_tiled_windows(
    unet,
    scheduler,
    inputs,
    tiles: Sequence[Tile],
    weights: FusionWeights,
    factor: int,
    settings,
    skip: int = 0,
    noise: torch.Tensor | None = None,
    on_step: Callable[[int, int], None] | None = None,
) -> torch.Tensor:
    """Denoise windows at the working resolution as fused tiles, one window after the other.

    Per window: ``x = add_noise(z_init, noise, t_0)`` on the frame latent (``t_0`` the first of
    :func:`m3ddm_ray.schedulers.restart_timesteps` for ``skip``), then at every timestep ``t``:
    cut ``scale_model_input(x, t)`` into the tiles (:func:`split`), guided ε of every tile
    (:class:`m3ddm_ray.sampling.GuidedUNet`, ``settings.max_batch`` tiles per UNet call of
    ``tiles x 3`` branches, never two tile groups in one call), ``ε = fuse(ε_tiles)`` (:func:`fuse`),
    ``x = step(ε, t, x)``. Latent cells that no tile covers (wholly known) are set to ``z_init`` at
    the end. With one tile equal to the frame and ``skip = 0`` the result equals
    :func:`m3ddm_ray.sampling.sample_windows` bit for bit (``tests/test_tiled.py``).

    Tile groups (:func:`m3ddm_ray.tiles.tile_groups`) never share a latent cell, and the schedulers'
    steps are elementwise, so a group run alone on its latent box (:func:`m3ddm_ray.tiles.group_plan`,
    the inputs and the noise cropped to the box) gives the cells of its tiles bit for bit: its UNet
    calls hold the same tiles either way (``tests/test_tiled.py``).

    Args:
        unet: the UNet (any dtype/device).
        scheduler: from :func:`m3ddm_ray.sampling.make_scheduler`.
        inputs: ``W >= 1`` :class:`m3ddm_ray.sampling.WindowInputs` at the working resolution
            (``(1, 4, F, H, W)`` latents, ``H = W_px / factor``), same shape and fps.
        tiles: the plan over the working frame (pixels).
        weights: :func:`m3ddm_ray.tiles.fusion_weights` of the plan.
        factor: the VAE's spatial downsampling.
        settings: :class:`m3ddm_ray.sampling.SamplerSettings`.
        skip: schedule steps left out (:func:`m3ddm_ray.tiles.layout_skip`); 0 = from the noisiest
            timestep, as :func:`m3ddm_ray.sampling.sample_windows`.
        noise: ``(1, 4, F, H, W)`` initial noise (default :func:`m3ddm_ray.sampling.window_noise`
            with ``settings.seed``, the same for every window).
        on_step: called as ``on_step(i, n)`` once per window and step.

    Returns:
        ``(W, 4, F, H, W)`` float32 final latents (still scaled).

    Raises:
        ValueError: no inputs, or windows of different shapes / fps.
        InputError: no tile, tiles off the frame, or T-GATE with the tiles of a window split over
            several UNet calls (its cache is per call shape).
    """
    from .sampling import GuidedUNet, window_noise
    from .schedulers import restart_timesteps

    if not inputs:
        raise ValueError("sample_tiled_windows needs at least one window")
    if len({tuple(i.z_init.shape) for i in inputs}) > 1 or len({float(i.fps) for i in inputs}) > 1:
        raise ValueError("sample_tiled_windows: all windows need the same shape and fps (one pass)")
    tiles = tuple(tiles)
    if not tiles:
        raise InputError("no tile to denoise: the plan is empty (nothing to generate in this frame)")
    chunk = int(settings.max_batch)
    groups = tile_groups(tiles)
    calls = [list(g[a:a + chunk]) for g in groups for a in range(0, len(g), chunk)]  # UNet calls: tile positions
    if settings.tgate_step > 0 and len(calls) > 1:
        if len(groups) > 1:
            raise InputError(f"sampler.tgate_step={settings.tgate_step} needs every tile of a window in one UNet "
                             f"call, but its {len(tiles)} tiles form {len(groups)} groups that never overlap and "
                             f"run in separate calls: set tgate_step: 0")
        raise InputError(f"sampler.tgate_step={settings.tgate_step} needs every tile of a window in one UNet "
                         f"call: set sampler.max_batch >= {len(tiles)} (the tiles) or tgate_step: 0")
    order = [i for c in calls for i in c]
    back = None if order == sorted(order) else torch.as_tensor(np.argsort(order))
    device = unet.device
    frame_shape = tuple(inputs[0].z_init.shape)
    if noise is None:
        noise = window_noise(frame_shape, settings.seed)
    uncovered = torch.as_tensor(np.asarray(weights.normaliser) == 0, device=device)
    out = []
    for inp in inputs:
        parts = tile_window_inputs(inp, tiles, factor)
        guidance = [GuidedUNet(unet, [parts[i] for i in c], settings) for c in calls]
        z0 = inp.z_init.to(device=device, dtype=torch.float32)
        timesteps = restart_timesteps(scheduler, settings.num_inference_steps, skip)
        x = scheduler.add_noise(z0, noise.to(device=device, dtype=torch.float32), timesteps[:1])
        with guidance[0].caches():
            for i, t in enumerate(timesteps):
                xt = split(scheduler.scale_model_input(x, t), tiles, factor)[:, 0]  # (n, 4, F, t, t)
                eps = torch.cat([g(xt[c[0]:c[-1] + 1] if c == list(range(c[0], c[-1] + 1)) else xt[c], i, t)
                                 for g, c in zip(guidance, calls)])
                if back is not None:  # the calls' order -> plan order
                    eps = eps[back]
                x = scheduler.step(fuse(eps[:, None], tiles, tuple(x.shape[-2:]), weights), t, x).prev_sample
                if on_step is not None:
                    on_step(i + 1, len(timesteps))
        if bool(uncovered.any()):
            x = torch.where(uncovered, z0, x)
        out.append(x)
    return torch.cat(out)
