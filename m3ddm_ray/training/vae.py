"""A small ``diffusers.AutoencoderKL`` trained on the training frames (the SD 1.5 VAE cannot be
downloaded here), and its exact latent rescaling.

The sampler hard-codes latents × 0.18215 (:data:`m3ddm_ray.sampling.VAE_SCALE`, SD 1.5's factor).
A VAE trained from scratch has latents of another scale and offset, so after training
:func:`whiten_latents` folds a per-channel affine map into the 1×1 ``quant_conv`` (encoder side)
and its exact inverse into the 1×1 ``post_quant_conv`` (decoder side): the new posterior mean is
``(μ - m) / (0.18215 σ)`` per channel (``m``, ``σ``: the channel's mean and std over training
images), so ``0.18215 × latents`` has zero mean and unit std, the config keeps
``scaling_factor: 0.18215`` and ``decode(encode(x))`` is unchanged up to float rounding.

Loss: L1 + MSE on pixels in ``[-1, 1]`` plus ``kl_weight`` × KL (posterior sample on the decoder
side, as in LDM's autoencoders, without their GAN/perceptual terms: too costly on 2 CPU cores).
The VAE must also encode the masked canvases (black border) and the black image of inference: with
``consistency_weight`` the masked canvas of every training image is encoded beside it and its
latents on known cells are pulled to the clean ones (:func:`known_cell_consistency`), so that the
model's masked-video condition is a faithful copy of the known region; without it a quarter of the
images are reconstructed with their black border.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch

from ..sampling import VAE_SCALE
from .loop import lr_lambda
from .objective import images_to_unit
from .synthetic import colour_fields
from .sources import ClipSettings, Source, example_seed, sample_example, source_of


def vae_config(block_out_channels: Sequence[int] = (16, 32, 64, 64), norm_num_groups: int = 16,
               canvas_size: int = 64, mid_block_attention: bool = True) -> dict[str, Any]:
    """``AutoencoderKL`` kwargs: ``n = len(block_out_channels)`` down blocks, i.e. ``2 ** (n - 1)``×
    downsampling (4 blocks: 8×, as SD's; 3 blocks: 4×), 4 latent channels. ``mid_block_attention:
    false`` drops the encoder's and decoder's mid-block self-attention (each latent cell then sees
    only its convolutional neighbourhood plus the GroupNorm statistics)."""
    n = len(block_out_channels)
    return {"block_out_channels": list(block_out_channels), "down_block_types": ["DownEncoderBlock2D"] * n,
            "up_block_types": ["UpDecoderBlock2D"] * n, "layers_per_block": 1, "latent_channels": 4,
            "norm_num_groups": norm_num_groups, "sample_size": canvas_size, "scaling_factor": VAE_SCALE,
            "mid_block_add_attention": bool(mid_block_attention)}


def random_frames(sources: Sequence[Source], n: int, seed: int, canvas_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Single frames of ``n`` random training examples and a random M3DDM+ border mask for each.

    Returns:
        ``frames`` uint8 ``(n, S, S, 3)`` (clean canvases) and ``masks`` uint8 ``(n, S, S)`` (1 =
        generated border, 0 = known), so that ``frames * (1 - masks)`` are the masked canvases the
        VAE encodes at inference.
    """
    cs = ClipSettings(canvas_size=canvas_size, num_frames=1, num_global_frames=1, strides=(1,),
                      mask_policy={"name": "m3ddm_plus", "frame_case_p": {"all": 1.0}})
    frames = np.empty((n, canvas_size, canvas_size, 3), np.uint8)
    masks = np.empty((n, canvas_size, canvas_size), np.uint8)
    for i in range(n):
        s = example_seed(seed, i)
        ex = sample_example(source_of(sources, s), s, cs)
        frames[i], masks[i] = ex["frames"][0], ex["mask"][0]
    return frames, masks


def random_images(sources: Sequence[Source], n: int, seed: int, canvas_size: int,
                  p_masked: float = 0.25) -> np.ndarray:
    """``uint8 (n, S, S, 3)``: single frames of random examples (:func:`random_frames`); a fraction
    ``p_masked`` of them with their border painted black (as the masked canvases of inference)."""
    frames, masks = random_frames(sources, n, seed, canvas_size)
    return _blacken_some(frames, masks, seed, p_masked)


def _blacken_some(frames: np.ndarray, masks: np.ndarray, seed: int, p_masked: float) -> np.ndarray:
    """Paint the border of a seeded fraction ``p_masked`` of ``frames`` black, in place; returns them."""
    for i in range(len(frames)):
        if np.random.default_rng([example_seed(seed, i), 2]).random() < p_masked:
            frames[i] = frames[i] * (1 - masks[i][..., None])
    return frames


def frame_pool(sources: Sequence[Source], pool_size: int, seed: int, canvas_size: int,
               colour_field_share: float = 0.0, blacken: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """The VAE's training pool, cut once: :func:`random_frames` (seed ``seed * 100003``), a seeded share
    ``colour_field_share`` of them replaced by :func:`colour_fields` (their masks kept), and with
    ``blacken`` a quarter painted with their black border (:func:`_blacken_some`).

    Returns:
        ``frames`` uint8 ``(pool_size, S, S, 3)`` and ``masks`` uint8 ``(pool_size, S, S)``.
    """
    frames, masks = random_frames(sources, int(pool_size), seed * 100003, canvas_size)
    n_fields = int(round(float(colour_field_share) * len(frames)))
    if n_fields:
        pick = np.random.default_rng([seed, 3]).permutation(len(frames))[:n_fields]
        frames[pick] = colour_fields(n_fields, seed * 100003 + 1, canvas_size)
    if blacken:
        frames = _blacken_some(frames, masks, seed * 100003, 0.25)
    return frames, masks


def optimizer_step(opt, sched, params, loss: torch.Tensor) -> None:
    """One step of the VAE loops: backward, gradient norm clipped to 1, optimizer and scheduler step."""
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    opt.step()
    sched.step()


def refit_vae(old, sources: Sequence[Source], norm_num_groups: int, steps: int = 1500, batch_size: int = 16,
              lr: float = 2e-4, latent_weight: float = 1.0, colour_field_share: float = 0.2, seed: int = 0,
              pool_size: int = 2048, log: Callable[[dict], None] | None = None,
              max_wall_s: float | None = None, min_lr_ratio: float = 1.0, consistency_weight: float = 0.0,
              decoder_only: bool = False, latent_noise: float = 0.0):
    """A copy of the ``AutoencoderKL`` ``old`` with ``norm_num_groups`` GroupNorm groups, trained to keep
    ``old``'s latent space, so that a UNet trained on ``old``'s latents works with it unchanged.

    Why: the decoder's last GroupNorm acts on ``block_out_channels[0]`` channels; with one channel per
    group it normalises a flat image to the same values whatever its colour, so flat colours cannot
    be reconstructed (the shipped small VAE: 16 groups on 16 channels). With fewer groups the colour
    survives as the direction of each group's channel vector.

    Every step, on a batch of training frames (a share ``colour_field_share`` of the pool replaced by
    :func:`colour_fields`, a quarter with their black M3DDM+ border as in :func:`train_vae`):

    * the new decoder reconstructs the images from ``old``'s posterior samples (L1 + MSE on
      ``[-1, 1]`` pixels); with ``latent_noise`` ``σ_max > 0`` each sample first gets Gaussian
      noise of a std drawn per image uniformly in ``[0, σ_max]`` in scaled-latent units (latents ×
      ``scaling_factor``, unit std for a whitened VAE), so that the decoder maps the neighbourhood
      of a frame's latent, where a UNet's imperfect output lands, to that frame;
    * the new encoder's posterior mean is pulled to ``old``'s: ``latent_weight`` × mean squared
      difference ÷ the variance of ``old``'s means (scale-free; logged as ``vae_latent``);
    * with ``consistency_weight > 0``, the pool's frames stay clean (no black border painted in)
      and each batch is also encoded with its black M3DDM+ border (the masked canvases of
      inference): ``consistency_weight`` × :func:`known_cell_consistency` pulls the new encoder's
      latents of the masked canvases on known cells to ``old``'s latents of the clean ones, so the
      UNet's masked-video condition carries the clean latents there (logged as ``vae_consistency``).

    Args:
        old: the ``AutoencoderKL`` to refit (float32, CPU or GPU; its weights are not modified; it is
            put in eval mode without gradients).
        norm_num_groups: the new GroupNorm group count; must divide every ``block_out_channels``.
        steps: AdamW steps from ``old``'s weights (GroupNorm has no weights that depend on the
            grouping, so every tensor loads unchanged).
        lr, min_lr_ratio: the learning rate, cosine-decayed to ``lr * min_lr_ratio`` at ``steps``
            (:func:`m3ddm_ray.training.loop.lr_lambda`, no warm-up); ``1.0`` keeps it constant.
        log: called every 50 steps with ``{"vae_step", "vae_l1", "vae_latent", "vae_consistency",
            "elapsed_s"}`` (``vae_consistency`` NaN without the term).
        max_wall_s: stop early after this many seconds.
        consistency_weight: weight of the known-cell term (>= 0; 0: off).
        decoder_only: train only the decoder side (``post_quant_conv`` and ``decoder``): the encoder
            and ``quant_conv`` keep ``old``'s weights, so every latent (and a latent cache built with
            ``old``) stays exactly as it was; needs ``old``'s own ``norm_num_groups`` (the encoder's
            GroupNorm shares it) and no consistency term.
        latent_noise: ``σ_max >= 0`` of the decoder-input noise above (0: off).

    Returns:
        the new ``AutoencoderKL`` in eval mode (same ``scaling_factor``: the whitening folded into
        ``old``'s ``quant_conv`` is learned with the rest).

    Raises:
        InputError: ``norm_num_groups`` does not divide every ``block_out_channels`` entry; with
            ``decoder_only``, a ``norm_num_groups`` other than ``old``'s or a consistency weight;
            a negative ``latent_noise``.
    """
    from diffusers import AutoencoderKL

    from ..errors import InputError

    channels = list(old.config.block_out_channels)
    if int(norm_num_groups) < 1 or any(c % int(norm_num_groups) for c in channels):
        raise InputError(f"norm_num_groups={norm_num_groups} must divide every block_out_channels {channels}")
    if decoder_only and (int(norm_num_groups) != int(old.config.norm_num_groups) or float(consistency_weight) > 0):
        raise InputError(f"decoder_only keeps the encoder: norm_num_groups={norm_num_groups} must be the old VAE's "
                         f"({old.config.norm_num_groups}) and consistency_weight={consistency_weight} must be 0")
    if not float(latent_noise) >= 0:
        raise InputError(f"latent_noise={latent_noise} must be >= 0 (the largest decoder-input noise std in "
                         "scaled-latent units; 0 turns it off)")
    config = {k: v for k, v in old.config.items() if not k.startswith("_")}
    config["norm_num_groups"] = int(norm_num_groups)
    new = AutoencoderKL(**config).to(old.device)
    new.load_state_dict(old.state_dict())
    old = old.eval().requires_grad_(False)
    canvas_size = int(old.config.sample_size)
    consistent = float(consistency_weight) > 0
    frames, masks = frame_pool(sources, pool_size, seed, canvas_size, colour_field_share, blacken=not consistent)
    pool, pool_masks = torch.from_numpy(frames), torch.from_numpy(masks)
    if decoder_only:
        new.encoder.requires_grad_(False)
        new.quant_conv.requires_grad_(False)
    trained = [p for p in new.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(trained, lr=lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(0, int(steps), float(min_lr_ratio)))
    gen = torch.Generator().manual_seed(seed)
    t0 = time.time()
    new.train()
    for step in range(int(steps)):
        pick = torch.randint(0, len(pool), (batch_size,), generator=gen)
        x = images_to_unit(pool[pick]).to(old.device)
        with torch.no_grad():
            d = old.encode(x).latent_dist
            target = d.mean
            z = d.mean + d.std * torch.randn(d.mean.shape, generator=gen).to(old.device)
            z = perturb_latents(z, float(latent_noise), float(old.config.scaling_factor), gen)
        rec = new.decode(z).sample
        l1 = (rec - x).abs().mean()
        loss = l1 + ((rec - x) ** 2).mean()
        if decoder_only:
            latent = torch.zeros(())
        else:
            latent = ((new.encode(x).latent_dist.mean - target) ** 2).mean() / target.var().clamp_min(1e-8)
            loss = loss + latent_weight * latent
        cons = torch.tensor(float("nan"))
        if consistent:
            m = pool_masks[pick]
            masked = images_to_unit(pool[pick] * (1 - m[..., None])).to(old.device)
            cons = known_cell_consistency(new.encode(masked).latent_dist.mean, target, m.to(old.device))
            loss = loss + float(consistency_weight) * cons
        optimizer_step(opt, sched, trained, loss)
        if log is not None and (step % 50 == 0 or step == steps - 1):
            log({"vae_step": step, "vae_l1": float(l1.detach()), "vae_latent": float(latent.detach()),
                 "vae_consistency": float(cons.detach()), "elapsed_s": time.time() - t0})
        if max_wall_s is not None and time.time() - t0 > max_wall_s:
            break
    return new.eval().requires_grad_(False)


def perturb_latents(z: torch.Tensor, sigma_max: float, scaling_factor: float,
                    gen: torch.Generator | None = None) -> torch.Tensor:
    """Raw latents ``z`` ``(N, C, h, w)`` plus Gaussian noise whose std is drawn per image uniformly in
    ``[0, sigma_max]`` scaled-latent units (``sigma_max / scaling_factor`` raw units): the decoder
    inputs of a noise-robust refit (:func:`refit_vae` ``latent_noise``). ``sigma_max = 0`` returns
    ``z`` itself. The noise is drawn on the CPU from ``gen`` (reproducible on any device)."""
    if sigma_max <= 0:
        return z
    sigma = sigma_max / scaling_factor * torch.rand(len(z), *([1] * (z.dim() - 1)), generator=gen)
    return z + (sigma * torch.randn(z.shape, generator=gen)).to(z)


def known_cell_consistency(mu_masked: torch.Tensor, mu_clean: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Mean squared difference of masked-canvas and clean latents on KNOWN latent cells, divided by
    the clean latents' variance across the ``N`` images (per channel and cell, averaged; detached):
    a scale-free number, 0 when the condition carries the clean latents. The across-image variance
    is what content moves; a pattern that every image shares (an offset per cell) does not count,
    and neither does a rescaling of the latents, so neither lowers the number.

    Args:
        mu_masked, mu_clean: ``(N, C, h, w)`` posterior means of the masked and the clean canvases.
        masks: ``(N, S, S)`` pixel masks (1 = border); a cell is known when its top-left pixel is
            (:func:`m3ddm_ray.geometry.latent_mask`).

    Returns:
        a scalar tensor (0 when no cell is known).
    """
    f = masks.shape[-1] // mu_clean.shape[-1]
    known = (masks[:, ::f, ::f] == 0).to(mu_clean.dtype)[:, None]  # (N, 1, h, w)
    n = known.sum() * mu_clean.shape[1]
    if n == 0:
        return mu_clean.new_zeros(())
    err = (((mu_masked - mu_clean) ** 2) * known).sum() / n
    spread = mu_clean.detach().var(dim=0).mean() if len(mu_clean) > 1 else mu_clean.detach().var()
    return err / spread.clamp_min(1e-8)


def train_vae(sources: Sequence[Source], steps: int = 1000, batch_size: int = 32, lr: float = 1e-3,
              kl_weight: float = 1e-6, seed: int = 0, canvas_size: int = 64,
              block_out_channels: Sequence[int] = (16, 32, 64, 64), norm_num_groups: int = 16,
              log: Callable[[dict], None] | None = None, max_wall_s: float | None = None,
              pool_size: int = 2048, crop_size: int | None = None, consistency_weight: float = 0.0,
              mid_block_attention: bool = True):
    """Train an ``AutoencoderKL`` on random frames of ``sources``; returns it (eval mode, whitened).

    Every step reconstructs a batch of clean canvases (L1 + MSE on ``[-1, 1]`` pixels +
    ``kl_weight`` × KL, posterior sample on the decoder side). With ``consistency_weight > 0`` the
    same canvases with their black M3DDM+ border (the masked canvases of inference) are encoded too
    and ``consistency_weight`` × :func:`known_cell_consistency` pulls their latents on known cells
    to the clean latents (whole canvases then: ``crop_size`` must be None); without it a quarter of
    the images get the black border and are reconstructed like the others.

    Args:
        steps: optimizer steps (AdamW, cosine learning-rate decay to 10 %).
        log: called every 50 steps with ``{"vae_step", "vae_loss", "vae_l1", "vae_consistency",
            "elapsed_s"}``.
        max_wall_s: stop early after this many seconds (the whitening still runs).
        pool_size: number of random frames cut once and sampled from (with horizontal flips).
        crop_size: train on random ``crop_size`` squares of them (offsets multiples of the
            downsampling factor, so the latent grid stays aligned); None: whole canvases.
        block_out_channels, norm_num_groups, mid_block_attention: the architecture (:func:`vae_config`).

    Raises:
        InputError: ``consistency_weight > 0`` with ``crop_size`` set.
    """
    from diffusers import AutoencoderKL

    from ..errors import InputError

    consistent = consistency_weight > 0
    if consistent and crop_size and crop_size < canvas_size:
        raise InputError(f"vae_training.consistency_weight={consistency_weight} needs whole canvases; "
                         f"set vae_training.crop_size to null (it is {crop_size})")
    torch.manual_seed(seed)
    vae = AutoencoderKL(**vae_config(block_out_channels, norm_num_groups, canvas_size, mid_block_attention))
    factor = 2 ** (len(block_out_channels) - 1)
    opt = torch.optim.AdamW(vae.parameters(), lr=lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(0, steps, 0.1))
    gen = torch.Generator().manual_seed(seed)
    t0 = time.time()
    # a pool of random frames made once (cutting clips costs as much as a VAE step on a small CPU),
    # sampled with random horizontal flips
    # without the consistency term a quarter are reconstructed with their black border instead
    frames, masks = frame_pool(sources, pool_size, seed, canvas_size, blacken=not consistent)
    pool, pool_masks = torch.from_numpy(frames), torch.from_numpy(masks)
    if log is not None:
        log({"vae_step": -1, "vae_loss": float("nan"), "vae_l1": float("nan"), "vae_consistency": float("nan"),
             "elapsed_s": time.time() - t0})
    vae.train()
    for step in range(steps):
        pick = torch.randint(0, len(pool), (batch_size,), generator=gen)
        x, m = images_to_unit(pool[pick]), pool_masks[pick]
        if crop_size and crop_size < canvas_size:  # random crops: the same convolutions, 1/4 the cost at half size
            oy, ox = (torch.randint(0, canvas_size - crop_size + 1, (2,), generator=gen) // factor * factor).tolist()
            x = x[:, :, oy:oy + crop_size, ox:ox + crop_size]
        flip = torch.rand(batch_size, generator=gen) < 0.5
        x[flip], m[flip] = x[flip].flip(-1), m[flip].flip(-1)
        if consistent:  # masked canvases: black (-1) border, encoded in the same call
            xm = torch.where(m[:, None].bool(), torch.full_like(x, -1.0), x)
            dist = vae.encode(torch.cat([x, xm])).latent_dist
            mu_clean, mu_masked = dist.mean[:batch_size], dist.mean[batch_size:]
            z = mu_clean + dist.std[:batch_size] * torch.randn(mu_clean.shape, generator=gen)
            cons = known_cell_consistency(mu_masked, mu_clean.detach(), m)
        else:
            dist = vae.encode(x).latent_dist
            z = dist.mean + dist.std * torch.randn(dist.mean.shape, generator=gen)
            cons = torch.zeros(())
        rec = vae.decode(z).sample
        l1 = (rec - x).abs().mean()
        loss = l1 + ((rec - x) ** 2).mean() + kl_weight * dist.kl().mean() + consistency_weight * cons
        optimizer_step(opt, sched, vae.parameters(), loss)
        if log is not None and (step % 50 == 0 or step == steps - 1):
            log({"vae_step": step, "vae_loss": float(loss.detach()), "vae_l1": float(l1.detach()),
                 "vae_consistency": float(cons.detach()), "elapsed_s": time.time() - t0})
        if max_wall_s is not None and time.time() - t0 > max_wall_s:
            break
    vae.eval().requires_grad_(False)
    whiten_latents(vae, torch.from_numpy(random_images(sources, 256, seed + 7, canvas_size)))
    return vae


@torch.no_grad()
def latent_stats(vae, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std ``(4,)`` of the raw posterior means of uint8 ``(N, S, S, 3)`` images."""
    mu = vae.encode(images_to_unit(images).to(vae.dtype)).latent_dist.mean.float()
    return mu.mean(dim=(0, 2, 3)), mu.std(dim=(0, 2, 3))


@torch.no_grad()
def whiten_latents(vae, images: torch.Tensor) -> Mapping[str, list[float]]:
    """Fold ``z' = (z - m) * c`` (``c = 1 / (0.18215 σ)``) into ``quant_conv`` and its inverse into
    ``post_quant_conv``, in place; returns the ``mean`` / ``std`` measured before.

    Raises:
        ValueError: the VAE has no 1×1 ``quant_conv`` / ``post_quant_conv`` to fold into.
    """
    qc, pqc = getattr(vae, "quant_conv", None), getattr(vae, "post_quant_conv", None)
    if qc is None or pqc is None or qc.kernel_size != (1, 1) or pqc.kernel_size != (1, 1):
        raise ValueError("whiten_latents needs an AutoencoderKL with 1x1 quant_conv and post_quant_conv")
    m, sd = latent_stats(vae, images)
    c = 1.0 / (VAE_SCALE * sd.clamp_min(1e-6))
    lc = m.numel()
    w, b = qc.weight.data, qc.bias.data  # (2lc, 2lc, 1, 1): channels [mean (lc), logvar (lc)]
    w[:lc] *= c.view(-1, 1, 1, 1).to(w)
    b[:lc] = (b[:lc] - m.to(b)) * c.to(b)
    b[lc:] += 2.0 * torch.log(c).to(b)  # std scales by c too
    w2, b2 = pqc.weight.data, pqc.bias.data  # (lc, lc, 1, 1): input z_old = z_new / c + m
    b2 += (w2[:, :, 0, 0] @ m.to(w2))
    w2 /= c.view(1, -1, 1, 1).to(w2)
    return {"mean": m.tolist(), "std": sd.tolist()}
