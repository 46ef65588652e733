"""Denoising one 16-frame window: latents in, latents out (M3DDM §3.3-3.4, official inference).

This module knows latents, timesteps and noise predictions; it knows nothing of files, frames on
disk or Ray. It follows the official
``StableDiffusionPipelineVideo2VideoMaskC.outpainting_with_random_masked_latent_inference_bidirection``
(golden README §5.4-5.6):

* PNDM (Stable Diffusion 1.5 scheduler config, PLMS branch), ``set_timesteps(n)`` per window; the
  initial latents are the **inpainted** canvas latents noised to ``timesteps[1]`` (961 for 50 steps)
  and the UNet runs at ``timesteps[1:]`` (961, 961, 941, …, 1) — the official quirk, kept. This is
  the default ``scheduler="pndm-official"``; the solver schedulers (DPM-Solver++ 2M, UniPC, DDIM,
  Euler) and their start are described in :mod:`m3ddm_ray.schedulers`.
* Classifier-free guidance with three branches: ``e_uu`` (no masked-video condition, no global
  context), ``e_cu`` (condition, no global context), ``e_cc`` (condition and global context):
  ``ε = e_uu + w·(e_cu − e_uu) + w_g·(e_cc − e_cu)`` with ``w = 2`` (``guidance_scale``) and
  ``w_g = 4`` (``previous_guidance_scale``). The official code runs a fourth branch and throws it
  away; ``official_batch4=True`` runs it too, only to reproduce the official numbers bit for bit.
* Guide frames: positions whose frame already has a final latent take that latent as their
  condition (in both the conditional and unconditional inputs) with mask 0; they are still denoised.

* Independent windows of one pass can be denoised as one UNet batch (:func:`sample_windows`,
  ``max_batch``); caches (:mod:`m3ddm_ray.caching`) and device knobs (:mod:`m3ddm_ray.runtime`)
  are settings of :class:`SamplerSettings`.

Latents are ``(B, 4, F, h, w)`` scaled by :data:`VAE_SCALE`; all scheduler arithmetic is float32
whatever the UNet dtype (autocast covers the UNet call only).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import torch

from .settings import AUTOCAST, NOT_HASHED, OFFICIAL_SEED, SDPA_BACKENDS, SamplerSettings  # noqa: F401 - re-exported (torch-free home)

VAE_SCALE = 0.18215
def make_scheduler(config: Mapping | None = None, settings: "SamplerSettings | None" = None):
    """A fresh scheduler for ``settings`` (default: the official ``PNDMScheduler``) on the noise
    schedule ``config`` (default: the shipped SD 1.5 config); see :mod:`m3ddm_ray.schedulers`."""
    from .schedulers import build_scheduler

    s = settings or SamplerSettings()
    return build_scheduler(s.scheduler, config, karras_sigmas=s.karras_sigmas, timestep_spacing=s.timestep_spacing)


def window_noise(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    """Diffusion noise of one window: ``torch.randn(shape)`` from a fresh CPU generator seeded ``seed``.

    float32 on the CPU (move it to the device afterwards): the same numbers on every machine, which a
    CUDA generator would not give.
    """
    return torch.randn(shape, generator=torch.Generator("cpu").manual_seed(seed), dtype=torch.float32)


# --------------------------------------------------------------------------- VAE helpers
PosteriorNoise = Callable[[tuple[int, ...]], torch.Tensor]


def seeded_posterior_noise(seed: int) -> PosteriorNoise:
    """Posterior noise from one CPU generator: successive calls continue the same stream."""
    gen = torch.Generator("cpu").manual_seed(seed)
    return lambda shape: torch.randn(shape, generator=gen, dtype=torch.float32)


class RecordedPosteriorNoise:
    """Posterior noise replayed from recorded arrays, in call order (parity tests of the official run).

    Raises:
        RuntimeError: when asked for more draws than recorded, or for a draw of another shape.
    """

    def __init__(self, arrays):
        self._arrays = list(arrays)
        self.calls = 0

    def __call__(self, shape: tuple[int, ...]) -> torch.Tensor:
        if self.calls >= len(self._arrays):
            raise RuntimeError(f"recorded posterior noise exhausted after {self.calls} draws")
        eps = torch.as_tensor(self._arrays[self.calls], dtype=torch.float32)
        if tuple(eps.shape) != tuple(shape):
            raise RuntimeError(f"posterior draw {self.calls}: recorded shape {tuple(eps.shape)} != requested {shape}")
        self.calls += 1
        return eps


def vae_factor(vae) -> int:
    """Spatial downsampling factor of a ``diffusers.AutoencoderKL``: ``2 ** (len(block_out_channels) - 1)``
    (each encoder down block but the last halves the side): 8 for Stable Diffusion's VAE, 4 for a
    3-block VAE. Canvas side ``S`` -> latent side ``S // factor``.

    Raises:
        ValueError: the VAE config has no ``block_out_channels``.
    """
    blocks = getattr(getattr(vae, "config", None), "block_out_channels", None)
    if not blocks:
        raise ValueError(f"{type(vae).__name__}: its config has no block_out_channels; expected a "
                         f"diffusers AutoencoderKL")
    return 2 ** (len(blocks) - 1)


@torch.no_grad()
def encode_images(vae, images: torch.Tensor, noise: PosteriorNoise | None) -> torch.Tensor:
    """VAE-encode images to scaled latents.

    Args:
        vae: a ``diffusers.AutoencoderKL``.
        images: ``(N, 3, S, S)`` in ``[-1, 1]`` (any float dtype; cast to the VAE's).
        noise: posterior noise source (``mean + std * eps``, diffusers' ``DiagonalGaussianDistribution``);
            ``None`` takes the posterior mean.

    Returns:
        ``(N, 4, S/f, S/f)`` float32 latents multiplied by :data:`VAE_SCALE` (``f`` = :func:`vae_factor`).
    """
    # channels-last, as the official code hands the VAE its (permuted numpy) images: on the CPU this
    # selects the same convolution kernels, and the black / mostly-black canvases are sensitive to it.
    images = images.to(device=vae.device, dtype=vae.dtype).contiguous(memory_format=torch.channels_last)
    dist = vae.encode(images).latent_dist
    mean, std = dist.mean.float(), dist.std.float()
    if noise is None:
        z = mean
    else:
        z = mean + std * noise(tuple(mean.shape)).to(mean.device)
    return z * VAE_SCALE


@torch.no_grad()
def decode_latents(vae, latents: torch.Tensor) -> torch.Tensor:
    """Scaled latents ``(N, 4, h, w)`` -> uint8 RGB images ``(N, S, S, 3)`` on the CPU.

    ``images = decode(latents / 0.18215)``, mapped from ``[-1, 1]`` to ``[0, 1]``, clamped, times 255,
    rounded half to even (official ``numpy_to_pil`` path).
    """
    images = vae.decode((latents / VAE_SCALE).to(device=vae.device, dtype=vae.dtype)).sample
    images = (images.float() / 2 + 0.5).clamp(0, 1)
    return (images * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu()


# --------------------------------------------------------------------------- one window
@dataclass
class WindowInputs:
    """Everything one window needs, at latent resolution (``F`` frames, side ``h``×``w``).

    Attributes:
        z_init: ``(1, 4, F, h, w)`` latents of the inpainted canvases (noised to start the chain).
        z_cond: ``(1, 4, F, h, w)`` latents of the masked canvases (the masked-video condition).
        z_uncond: ``(1, 4, F, h, w)`` latents of a black image (the unconditional input).
        mask: ``(1, 1, F, h, w)`` latent mask, 1 = generate, 0 = known.
        guides: position -> ``(4, h, w)`` final latent already stored for that position's frame.
        global_tokens: ``(2, N, C)`` UNet global-frame tokens: ``[no context (zeros), context]``.
        fps: fps condition ``avg_fps // stride`` (truncated to an integer inside the UNet).
    """

    z_init: torch.Tensor
    z_cond: torch.Tensor
    z_uncond: torch.Tensor
    mask: torch.Tensor
    guides: Mapping[int, torch.Tensor]
    global_tokens: torch.Tensor
    fps: float


def build_condition(inp: WindowInputs) -> tuple[torch.Tensor, torch.Tensor]:
    """Condition channels of the guidance branches ``[uu, cu, cc]``: ``(3, 5, F, h, w)`` each
    ``[latents (4), mask (1)]``, with guide positions replaced by their stored latent and mask 0.

    Returns ``(cond_uncond, cond_cond)``: ``(1, 5, F, h, w)`` for the unconditional branch and for
    the two conditional branches.
    """
    zc, zu = inp.z_cond.clone().float(), inp.z_uncond.clone().float()
    m = inp.mask.clone().float()
    mu = torch.ones_like(m)
    for pos, latent in inp.guides.items():
        zc[:, :, pos] = latent.to(zc)
        zu[:, :, pos] = latent.to(zu)
        m[:, :, pos] = 0
        mu[:, :, pos] = 0
    return torch.cat([zu, mu], dim=1), torch.cat([zc, m], dim=1)


@torch.no_grad()
def sample_window(
    unet,
    scheduler,
    inp: WindowInputs,
    settings: SamplerSettings = SamplerSettings(),
    noise: torch.Tensor | None = None,
    on_step: Callable[[int, int], None] | None = None,
) -> torch.Tensor:
    """Denoise one window and return its final latents ``(1, 4, F, h, w)`` float32 (still scaled).

    Args:
        unet: :class:`m3ddm_ray.models.unet.UNet3DConditionModel` (any dtype/device).
        scheduler: from :func:`make_scheduler` (``settings``' scheduler); ``set_timesteps`` is called
            here, so one object can serve every window in turn (not concurrently).
        inp: the window's latents, mask, guides and global tokens (see :class:`WindowInputs`).
        settings: steps, guidance weights, seed, caches, device knobs.
        noise: ``(1, 4, F, h, w)`` initial noise; default :func:`window_noise` with ``settings.seed``.
        on_step: called as ``on_step(i, n)`` after each UNet call (progress bars).
    """
    return sample_windows(unet, scheduler, [inp], settings, noise, on_step)


@torch.no_grad()
def sample_windows(
    unet,
    scheduler,
    inputs: Sequence[WindowInputs],
    settings: SamplerSettings = SamplerSettings(),
    noise: torch.Tensor | None = None,
    on_step: Callable[[int, int], None] | None = None,
) -> torch.Tensor:
    """Denoise ``W`` independent windows of one pass together: one UNet batch of ``W x 3`` branches
    per step, rows ordered window-major ``[w0: uu, cu, cc, w1: uu, cu, cc, ...]``.

    The scheduler step is elementwise over the batch, so the result equals ``W`` calls of
    :func:`sample_window` up to float rounding of the larger UNet batch.

    Args:
        inputs: ``W >= 1`` windows with equal shapes and the same ``fps`` (one pass).
        noise: ``(1, 4, F, h, w)`` initial noise shared by every window (default
            :func:`window_noise`, as the official code gives every window the same noise).
        on_step: called ``W`` times per step as ``on_step(i, n)`` (progress counts window-steps).

    Returns:
        ``(W, 4, F, h, w)`` float32 final latents (still scaled).

    Raises:
        ValueError: no inputs, or windows of different shapes / fps.
    """
    from .schedulers import start_timesteps

    if not inputs:
        raise ValueError("sample_windows needs at least one window")
    if len({tuple(i.z_init.shape) for i in inputs}) > 1 or len({float(i.fps) for i in inputs}) > 1:
        raise ValueError("sample_windows: all windows of a batch need the same shape and fps (one pass)")
    n_win = len(inputs)
    device = unet.device
    z0 = torch.cat([i.z_init for i in inputs]).to(device=device, dtype=torch.float32)
    if noise is None:
        noise = window_noise(tuple(inputs[0].z_init.shape), settings.seed)
    noise = noise.to(device=device, dtype=torch.float32).expand_as(z0)
    timesteps = start_timesteps(scheduler, settings.num_inference_steps)
    x = scheduler.add_noise(z0, noise, timesteps[:1])
    guidance = GuidedUNet(unet, inputs, settings)
    with guidance.caches():
        for i, t in enumerate(timesteps):
            guided = guidance(scheduler.scale_model_input(x, t), i, t)
            x = scheduler.step(guided, t, x).prev_sample
            if on_step is not None:
                for _ in range(n_win):
                    on_step(i + 1, len(timesteps))
    return x


class GuidedUNet:
    """The guided noise prediction of a batch of windows at one step: one UNet call of ``W x 3``
    branches and the three-branch guidance ``ε = e_uu + w·(e_cu − e_uu) + w_g·(e_cc − e_cu)``
    (the module docstring; ``official_batch4`` runs and drops the official fourth branch).

    The one home of the per-step arithmetic: :func:`sample_windows` calls it on its windows'
    latents, :func:`m3ddm_ray.sampling_tiles.sample_tiled_windows` on the tiles of a frame latent.
    The condition channels and global tokens of the ``W`` windows are built once, here.

    Args:
        unet: the UNet (any dtype/device).
        inputs: ``W >= 1`` windows of one shape and fps (their ``z_cond`` / ``z_uncond`` / ``mask`` /
            ``guides`` / ``global_tokens`` / ``fps`` are used; ``z_init`` is not).
        settings: guidance weights, caches and device knobs.

    Call it inside :meth:`caches` as ``guided = g(xin, i, t)`` with ``xin (W, 4, F, h, w)`` the
    scheduler-scaled latents, ``i`` the step number (0-based, for DeepCache / T-GATE) and ``t`` the
    timestep; returns ``(W, 4, F, h, w)`` float32.
    """

    def __init__(self, unet, inputs: Sequence[WindowInputs], settings: SamplerSettings):
        from . import caching, runtime

        self.unet, self.settings, self.n_win = unet, settings, len(inputs)
        device, dtype = unet.device, unet.dtype
        conds, contexts = [], []
        for inp in inputs:
            cond_u, cond_c = (c.to(device) for c in build_condition(inp))
            tokens0, tokens_g = inp.global_tokens[0:1].to(device), inp.global_tokens[1:2].to(device)
            if settings.official_batch4:
                conds += [cond_u, cond_c, cond_u, cond_c]
                contexts += [tokens0, tokens0, tokens_g, tokens_g]
            else:
                conds += [cond_u, cond_c, cond_c]
                contexts += [tokens0, tokens0, tokens_g]
        self.cond, self.context = torch.cat(conds), torch.cat(contexts).to(dtype)
        self.n_branch = self.cond.shape[0] // self.n_win
        self.fps = inputs[0].fps
        self._call = runtime.unet_callable(unet, settings)
        self.tgate = caching.TGate(settings.tgate_step) if settings.tgate_step > 0 else None
        self._deep: dict | None = {} if settings.deepcache_interval > 1 else None

    def caches(self):
        """Context manager installing the attention caches of the run (:mod:`m3ddm_ray.caching`)."""
        from . import caching

        return caching.attention_caches(self.unet, self.settings.exact_caches, self.tgate)

    def __call__(self, xin: torch.Tensor, i: int, t) -> torch.Tensor:
        from . import caching, runtime

        s, n_win, n_branch = self.settings, self.n_win, self.n_branch
        device, dtype = self.unet.device, self.unet.dtype
        xin = xin.repeat_interleave(n_branch, dim=0) if n_win > 1 else xin.expand(n_branch, -1, -1, -1, -1)
        sample = runtime.prepare_input(torch.cat([xin, self.cond], dim=1).to(dtype), s)
        if self.tgate is not None:
            self.tgate.reuse = i >= self.tgate.step
        with runtime.unet_call_context(s, device):
            if self._deep is not None:
                eps = caching.unet_forward_deepcache(self.unet, sample, t, self.fps, self.context, self._deep,
                                                     refresh=i % s.deepcache_interval == 0)
            else:
                eps = self._call(sample, t, fps=self.fps, global_tokens=self.context).sample
        eps = eps.float().reshape(n_win, n_branch, *eps.shape[1:])
        if s.official_batch4:
            e_uu, e_cu, e_cc = eps[:, 0], eps[:, 1], eps[:, 3]
        else:
            e_uu, e_cu, e_cc = eps[:, 0], eps[:, 1], eps[:, 2]
        w, wg = s.guidance_scale, s.previous_guidance_scale
        return e_uu + w * (e_cu - e_uu) + wg * (e_cc - e_cu)
