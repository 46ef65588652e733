"""Diagnostic 5 of ``benchmarks/diagnose_model.py``: where a UNet takes a region's colour from.

In training the masked-video condition and the noisy latent ``x_t`` always show the same scene, and
``x_t`` keeps some of it even at the last timestep (``sqrt(ᾱ_t)`` = 0.068 at t = 999 in the SD 1.5
schedule): averaged over the thousands of latent cells of a clip, that is enough to read the scene's
colour from the noise alone. At inference the first steps see noise that carries no colour, so a
model that learned to read the colour from ``x_t`` rather than from its condition paints whatever
colour its noise implies. :func:`colour_source` shows which of the two a model follows by giving it
a condition and a noisy latent of two different flat colours (docs/training.md, *Diagnostics*).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch

from ..errors import InputError
from .diagnostics import cell_regions, latent_factor, x0_from_eps
from .objective import encode, make_noise_scheduler


#: Pairs of the colour-source test: ``(condition colour, noisy-latent colour)``, RGB.
COLOUR_PAIRS = (((70, 140, 60), (128, 128, 128)), ((120, 170, 220), (128, 128, 128)),
                ((128, 128, 128), (190, 50, 40)))
COLOUR_TIMESTEPS = (999, 901, 801, 601)


@torch.no_grad()
def colour_source(unet, vae, pairs: Sequence[tuple[Sequence[int], Sequence[int]]] = COLOUR_PAIRS,
                  timesteps: Sequence[int] = COLOUR_TIMESTEPS, seeds: int = 3, canvas: int = 64,
                  frames: int = 16, known_rows: tuple[int, int] = (22, 42), fps: int = 25) -> list[dict[str, Any]]:
    """Where the UNet takes a region's colour from: the masked-video condition or the noisy latent.

    For a pair ``(a, b)`` of flat colours, the UNet sees the condition of a flat ``a`` clip whose known
    region is the band of rows ``known_rows`` (the 16:9 → 9:16 band of the flat-scene check at the
    64 px canvas; black above and below, latent mask 1 there; the global frames are the same masked
    canvases) and the noisy latent of a flat ``b`` clip, ``x_t = sqrt(ᾱ_t) z(b) + sqrt(1 - ᾱ_t) ε``
    (SD 1.5 schedule, ε seeded ``0..seeds-1``). In training the two always agree; here they disagree,
    so the clean latent predicted from ε̂ (:func:`x0_from_eps`) shows which one the model follows. Per
    region, with ``m`` the per-channel mean over its cells, the *condition share*
    ``<m(x̂0) - m(z_b), m(z_a) - m(z_b)> / |m(z_a) - m(z_b)|^2`` is 1 when the prediction has the
    condition's colour and 0 when it keeps the noisy latent's. At inference the first steps see
    noise that carries no colour (``z = 0``), so a model with shares near 0 at t >= 800 paints the
    colour its noise implies, whatever the video.

    Args:
        unet, vae: the M3DDM UNet (eval mode) and its VAE; fp32 advised.
        pairs: ``(condition RGB, noisy-latent RGB)`` pairs, ints in ``[0, 255]``, the two different.
        timesteps: ints in ``0..999``.
        seeds: noise draws per pair and timestep.
        canvas, frames: canvas side (pixels, a multiple of the VAE's factor) and window length ``F``.
        known_rows: ``[top, bottom)`` pixel rows of the known band.
        fps: the fps condition.

    Returns:
        One row per pair and timestep: ``{"condition": [r, g, b], "noisy": [r, g, b], "t": int,
        "border": float, "known": float, "border_std": float, "known_std": float}`` (shares, mean
        and standard deviation over seeds).

    Raises:
        InputError: a timestep outside ``0..999``, ``seeds < 1``, an empty or full known band, or a
            pair whose two colours encode to the same latent mean.
    """
    sched = make_noise_scheduler()
    acp = sched.alphas_cumprod
    top, bottom = int(known_rows[0]), int(known_rows[1])
    if not 0 <= top < bottom <= canvas or (top, bottom) == (0, canvas):
        raise InputError(f"known_rows={tuple(known_rows)}: need 0 <= top < bottom <= canvas={canvas}, not every row")
    if seeds < 1 or any(not 0 <= int(t) < sched.config.num_train_timesteps for t in timesteps):
        raise InputError(f"seeds={seeds}, timesteps={list(timesteps)}: need seeds >= 1 and timesteps in 0..999")
    device = next(unet.parameters()).device
    factor = latent_factor(vae, canvas)
    mask = np.ones((canvas, canvas), np.uint8)
    mask[top:bottom] = 0

    def latents(rgb, masked: bool) -> torch.Tensor:  # (1, C, F, h, w)
        img = np.zeros((frames, canvas, canvas, 3), np.uint8) + np.asarray(rgb, np.uint8)
        if masked:
            img = img * (1 - mask[None, :, :, None])
        return encode(vae, torch.from_numpy(img)).permute(1, 0, 2, 3)[None].to(device)

    known, border = (torch.from_numpy(np.broadcast_to(r, (frames,) + r.shape).copy()).to(device)
                     for r in cell_regions(mask, factor))
    lmask = border.float()[None, None]  # (1, 1, F, h, w): the latent mask is 1 on border cells
    rows = []
    for a, b in pairs:
        za, zb, cond = latents(a, False), latents(b, False), latents(a, True)
        ctx = cond[0].permute(1, 0, 2, 3)  # (F, C, h, w) global-frame latents
        means = {r: (za[0][:, sel].mean(1), zb[0][:, sel].mean(1)) for r, sel in (("known", known), ("border", border))}
        for r, (ma, mb) in means.items():
            if float(((ma - mb) ** 2).sum()) < 1e-8:
                raise InputError(f"pair {tuple(a)} / {tuple(b)}: the two colours have the same latent mean on "
                                 f"{r} cells; pick two colours that differ")
        for t in timesteps:
            tt = torch.tensor([int(t)], device=device)
            shares = {"known": [], "border": []}
            for s in range(seeds):
                eps = torch.randn(zb.shape, generator=torch.Generator().manual_seed(s)).to(device)
                x_t = sched.add_noise(zb, eps, tt)
                out = unet(torch.cat([x_t, cond, lmask], 1), tt, encoder_hidden_states=ctx,
                           fps=torch.tensor([fps], device=device)).sample
                x0 = x0_from_eps(x_t, out, tt, acp)[0]
                for r, sel in (("known", known), ("border", border)):
                    ma, mb = means[r]
                    d = ma - mb
                    shares[r].append(float((x0[:, sel].mean(1) - mb) @ d / (d @ d)))
            rows.append({"condition": [int(v) for v in a], "noisy": [int(v) for v in b], "t": int(t),
                         **{r: float(np.mean(v)) for r, v in shares.items()},
                         **{f"{r}_std": float(np.std(v)) for r, v in shares.items()}})
    return rows
