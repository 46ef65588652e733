"""The training objective of M3DDM: masked-video ε-prediction with classifier-free-guidance dropouts.

Follows the released model's inference contract (:mod:`m3ddm_ray.sampling`, M3DDM §3.1-3.3):

* DDPM forward process with the Stable Diffusion 1.5 betas (``scaled_linear`` 0.00085 .. 0.012,
  1000 steps; ``diffusers.DDPMScheduler.add_noise``), timesteps uniform in ``0..999``, loss
  ``MSE(ε̂, ε)`` over every latent (known, generated and guide positions alike);
* UNet input ``(B, 9, F, h, w) = [noisy latents (4), masked-video latents (4), latent mask (1)]``;
  latents are the VAE posterior means × 0.18215 (:data:`m3ddm_ray.sampling.VAE_SCALE`); the latent
  mask is the pixel mask sampled at the top-left pixel of each 8×8 cell
  (:func:`m3ddm_ray.geometry.latent_mask`, as at inference);
* optional Min-SNR-γ loss weights (Hang et al. 2023, arXiv 2303.09556): with
  ``objective.min_snr_gamma`` set, example ``b`` of a batch weighs ``min(SNR(t_b), γ) / SNR(t_b)``
  (the ε-prediction form), ``SNR(t) = ᾱ_t / (1 − ᾱ_t)`` of the same SD 1.5 schedule; with
  ``objective.snr_floor`` set as well, the x₀-loss weight is also kept at or above the floor
  (``max(min(SNR, γ), floor) / SNR``; floor 1 = the truncated-SNR weighting of Salimans & Ho 2022,
  arXiv 2202.00512 §4), so the noisy timesteps, where the layout and colours of the result are
  decided, weigh their x₀ error and not only their small ε error;
* optional offset noise (Guttenberg 2023, "Diffusion with Offset Noise", Crosslab; diffusers'
  ``noise_offset`` of its text-to-image training script): with ``objective.noise_offset`` = o > 0
  the target noise of an example is ``ε + o · δ``, ``δ ~ N(0, 1)`` one value per latent channel
  shared by every frame and cell, so the model also learns to move a whole latent channel's mean,
  which per-element noise barely exercises; sampling is unchanged;
* global frames (``(B·G, 4, h, w)`` latents) as cross-attention context; fps condition
  ``fps // stride`` per example;
* dropouts, so that the three guidance branches of inference exist: with ``p_drop_cond`` the
  masked-video condition becomes the unconditional input of inference (the black-image latent with
  mask 1 on every non-raw frame; raw/guide frames keep their latent and mask 0, as
  :func:`m3ddm_ray.sampling.build_condition` does), and with ``p_drop_global`` the global-frame
  latents become zeros (the "no context" branch). The two are drawn independently.

All randomness of an example (noise, timestep, dropouts) comes from a CPU generator seeded with the
example's ``seed``, so the loss of a global batch does not depend on how it is split over workers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import numpy as np
import torch

from ..sampling import VAE_SCALE

#: Stable Diffusion 1.5 training noise schedule.
SD15_BETAS = {"num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012,
              "beta_schedule": "scaled_linear"}


@dataclass(frozen=True)
class ObjectiveSettings:
    """Dropout probabilities of the guidance conditions (each in ``[0, 1]``), the Min-SNR-γ
    clamp (``None``: plain MSE; else a number > 0, 5 in the paper), the x₀-weight floor (``None``:
    none; else a number > 0 and at most γ; 1 in Salimans & Ho 2022) and the offset-noise scale (in
    ``[0, 1]``; 0: none)."""

    p_drop_cond: float = 0.1
    p_drop_global: float = 0.1
    min_snr_gamma: float | None = None
    snr_floor: float | None = None
    noise_offset: float = 0.0

    def __post_init__(self):
        from ..errors import InputError

        for name in ("p_drop_cond", "p_drop_global"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise InputError(f"objective.{name}={v}: must be a probability in [0, 1]")
        g = self.min_snr_gamma
        if g is not None and (isinstance(g, bool) or not isinstance(g, (int, float)) or not g > 0):
            raise InputError(f"objective.min_snr_gamma={g!r}: must be a number > 0 (5 in the paper) or null")
        f = self.snr_floor
        if f is not None and (isinstance(f, bool) or not isinstance(f, (int, float)) or not f > 0
                              or (g is not None and f > g)):
            raise InputError(f"objective.snr_floor={f!r}: must be a number > 0 (1 in Salimans & Ho 2022), "
                             f"at most objective.min_snr_gamma={g!r}, or null")
        o = self.noise_offset
        if isinstance(o, bool) or not isinstance(o, (int, float)) or not 0.0 <= o <= 1.0:
            raise InputError(f"objective.noise_offset={o!r}: must be a number in [0, 1] (0.1 is usual; 0: off)")

    @property
    def weighted(self) -> bool:
        """True when the loss takes per-example weights (:func:`min_snr_weights`)."""
        return self.min_snr_gamma is not None or self.snr_floor is not None


def make_noise_scheduler():
    """``diffusers.DDPMScheduler`` with the SD 1.5 betas (only its ``add_noise`` is used)."""
    from diffusers import DDPMScheduler

    return DDPMScheduler(**SD15_BETAS)


def images_to_unit(frames: torch.Tensor) -> torch.Tensor:
    """uint8 ``(N, S, S, 3)`` -> float32 ``(N, 3, S, S)`` in ``[-1, 1]`` (``x / 127.5 - 1``)."""
    return frames.permute(0, 3, 1, 2).float() / 127.5 - 1.0


@torch.no_grad()
def encode(vae, frames: torch.Tensor, chunk: int = 256) -> torch.Tensor:
    """uint8 ``(N, S, S, 3)`` -> latents ``(N, 4, S/8, S/8)`` float32, posterior mean × 0.18215."""
    out = []
    for i in range(0, frames.shape[0], chunk):
        x = images_to_unit(frames[i:i + chunk]).to(device=vae.device, dtype=vae.dtype)
        out.append(vae.encode(x).latent_dist.mean.float() * VAE_SCALE)
    return torch.cat(out)


def _draws(seeds: torch.Tensor, shape: tuple[int, ...], n_timesteps: int, noise_offset: float = 0.0):
    noise, t, u = [], [], []
    for s in seeds.tolist():
        gen = torch.Generator("cpu").manual_seed(int(s) & 0x7FFF_FFFF_FFFF_FFFF)
        noise.append(torch.randn(shape, generator=gen))
        t.append(int(torch.randint(0, n_timesteps, (1,), generator=gen)))
        u.append(torch.rand(2, generator=gen))
        if noise_offset:  # drawn last: the other draws of an example do not depend on the option
            noise[-1] += float(noise_offset) * torch.randn((shape[0],) + (1,) * (len(shape) - 1), generator=gen)
    return torch.stack(noise), torch.tensor(t, dtype=torch.long), torch.stack(u)


@torch.no_grad()
def encode_examples(vae, batch: Mapping[str, np.ndarray]) -> dict[str, torch.Tensor]:
    """The VAE half of :func:`build_inputs`: the latents of a batch of examples, no randomness.

    Args:
        batch: ``frames`` uint8 ``(B, F, S, S, 3)``, ``mask`` uint8 ``(B, F, S, S)`` (1 = generate),
            ``global_frames`` uint8 ``(B, G, S, S, 3)`` (in-clip global frames already masked).

    Returns:
        float32 on the VAE's device: ``latents (B, 4, F, h, w)`` (clean clip), ``cond_latents
        (B, 4, F, h, w)`` (the masked canvases, black under the mask, as inference feeds them),
        ``latent_mask (B, 1, F, h, w)`` 0/1 (the pixel mask at the top-left pixel of each cell, the
        cell size ``S / h`` taken from the VAE's output), ``raw (B, F)`` bool (guide frames: no
        masked pixel), ``global_latents (B, G, 4, h, w)``.
    """
    frames = torch.from_numpy(np.array(batch["frames"], np.uint8))
    mask = torch.from_numpy(np.array(batch["mask"], np.uint8))
    glob = torch.from_numpy(np.array(batch["global_frames"], np.uint8))
    b, f, s = frames.shape[0], frames.shape[1], frames.shape[2]
    g = glob.shape[1]
    z0 = encode(vae, frames.reshape(b * f, s, s, 3))
    zc = encode(vae, (frames * (1 - mask[..., None])).reshape(b * f, s, s, 3))
    zg = encode(vae, glob.reshape(b * g, s, s, 3))
    h = z0.shape[-1]
    factor = s // h
    to5 = lambda z: z.reshape(b, f, 4, h, h).permute(0, 2, 1, 3, 4)  # noqa: E731  (B,4,F,h,w)
    return {"latents": to5(z0), "cond_latents": to5(zc),
            "latent_mask": mask[..., ::factor, ::factor].float()[:, None].to(zc.device),
            "raw": ~mask.reshape(b, f, -1).bool().any(-1), "global_latents": zg.reshape(b, g, 4, h, h)}


def build_inputs(vae, batch: Mapping[str, torch.Tensor], settings: ObjectiveSettings, noise_scheduler,
                 black_latent: torch.Tensor, device) -> dict[str, torch.Tensor]:
    """Turn a batch of examples into UNet inputs and the target noise.

    Args:
        batch: ``fps`` int ``(B,)``, ``seed`` int ``(B,)`` and either the pixels of the examples
            (``frames`` uint8 ``(B, F, S, S, 3)``, ``mask`` uint8 ``(B, F, S, S)``, ``global_frames``
            uint8 ``(B, G, S, S, 3)``: encoded here by :func:`encode_examples`) or their latents
            (the keys :func:`encode_examples` returns, any float dtype, e.g. from
            :mod:`m3ddm_ray.training.latent_cache`; ``vae`` is then not used).
        black_latent: ``(4, h, w)`` latent of an all-black canvas (the unconditional input).

    Returns:
        ``sample (B, 9, F, h, w)``, ``timesteps (B,)``, ``fps (B,)``, ``global_latents (B·G, 4, h, w)``,
        ``noise (B, 4, F, h, w)`` (the target), all on ``device``.
    """
    if "latents" in batch:
        lat = {k: torch.as_tensor(np.asarray(batch[k])).to(device) for k in
               ("latents", "cond_latents", "latent_mask", "raw", "global_latents")}
        lat = {k: v if k == "raw" else v.float() for k, v in lat.items()}
    else:
        lat = encode_examples(vae, batch)
    z0, zc, lmask, zg = lat["latents"], lat["cond_latents"], lat["latent_mask"], lat["global_latents"]
    b, f, h, g = z0.shape[0], z0.shape[2], z0.shape[-1], zg.shape[1]
    noise, t, u = _draws(torch.from_numpy(np.array(batch["seed"], np.int64)), (4, f, h, h),
                         noise_scheduler.config.num_train_timesteps, settings.noise_offset)
    noise = noise.to(z0.device)
    drop_cond, drop_global = u[:, 0] < settings.p_drop_cond, u[:, 1] < settings.p_drop_global
    if drop_cond.any():
        raw = lat["raw"].bool().cpu()  # (B,F) guide frames keep their latent, mask 0
        replace = (drop_cond[:, None] & ~raw).to(zc.device)  # (B,F)
        sel = replace[:, None, :, None, None]
        zc = torch.where(sel, black_latent.to(zc)[None, :, None], zc)
        lmask = torch.where(sel, torch.ones_like(lmask), lmask)
    zg = torch.where(drop_global.to(zg.device)[:, None, None, None, None], torch.zeros_like(zg), zg)
    noisy = noise_scheduler.add_noise(z0, noise, t.to(z0.device))
    sample = torch.cat([noisy, zc, lmask], dim=1)
    return {"sample": sample.to(device), "timesteps": t.to(device),
            "fps": torch.from_numpy(np.array(batch["fps"], np.int64)).to(device),
            "global_latents": zg.reshape(b * g, 4, h, h).to(device), "noise": noise.to(device),
            "drop_cond": drop_cond, "drop_global": drop_global}


def min_snr_weights(timesteps: torch.Tensor, alphas_cumprod: torch.Tensor, gamma: float | None,
                    floor: float | None = None) -> torch.Tensor:
    """ε-prediction loss weights from an x₀-loss weight clamped to ``[floor, γ]``:
    ``max(min(SNR(t), γ), floor) / SNR(t)``, ``SNR(t) = ᾱ_t / (1 − ᾱ_t)`` (a None bound: no clamp).

    An ε error carries the x₀ error times ``SNR(t)``, so dividing an x₀ weight by ``SNR(t)`` gives
    the ε weight. ``γ``: Min-SNR-γ, Hang et al. 2023, "Efficient Diffusion Training via Min-SNR
    Weighting Strategy" (arXiv 2303.09556), ``min(γ / SNR(t), 1)``, γ = 5 the paper's default.
    ``floor``: the truncated-SNR weighting ``max(SNR, 1)`` of Salimans & Ho 2022 ("Progressive
    Distillation", arXiv 2202.00512 §4) at floor 1; it raises the noisy timesteps' weight to
    ``floor / SNR(t)`` (about 214 at t = 999 with floor 1 on the SD 1.5 schedule).

    Args:
        timesteps: ``(B,)`` int64 in ``0 .. len(alphas_cumprod) - 1``.
        alphas_cumprod: ``(T,)`` ᾱ of the noise schedule (``DDPMScheduler.alphas_cumprod``).
        gamma: the upper clamp, > 0, or None.
        floor: the lower clamp, > 0 and at most ``gamma``, or None.

    Returns:
        ``(B,)`` float32, positive, on the device of ``timesteps`` (1 where ``floor <= SNR(t) <= γ``).
    """
    a = alphas_cumprod.to(device=timesteps.device, dtype=torch.float64)[timesteps]
    snr = a / (1.0 - a)
    x0_weight = snr.clamp(min=None if floor is None else float(floor), max=None if gamma is None else float(gamma))
    return (x0_weight / snr).float()


def loss_fn(unet, inputs: Mapping[str, torch.Tensor], weights: torch.Tensor | None = None) -> torch.Tensor:
    """``MSE(unet(sample, t, global frames, fps), noise)``, float32.

    ``weights`` None: the mean over every element. ``weights`` ``(B,)``: the mean over examples of
    ``weights[b]`` × example ``b``'s mean squared error (equal shares of a global batch keep the
    worker-split invariance), e.g. :func:`min_snr_weights`.
    """
    pred = unet(inputs["sample"], inputs["timesteps"], encoder_hidden_states=inputs["global_latents"],
                fps=inputs["fps"]).sample
    if weights is None:
        return torch.nn.functional.mse_loss(pred.float(), inputs["noise"].float())
    per_example = (pred.float() - inputs["noise"].float()).square().flatten(1).mean(1)
    return (weights.to(per_example) * per_example).mean()


def black_canvas_latent(vae, size: int) -> torch.Tensor:
    """``(4, h, w)`` latent (× 0.18215) of an all-black ``size × size`` canvas."""
    return encode(vae, torch.zeros((1, size, size, 3), dtype=torch.uint8))[0]


def numpy_batch(rows: list[Mapping[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Stack a list of example rows into one batch dict."""
    return {k: np.stack([r[k] for r in rows]) for k in rows[0]}
