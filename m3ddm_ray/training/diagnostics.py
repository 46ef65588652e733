"""Why a trained M3DDM model paints what it paints: four measurements on held-out clips, for any UNet,
VAE and canvas (``benchmarks/diagnose_model.py`` runs them with the fifth, on flat colours, of
:mod:`m3ddm_ray.training.colour_source`, and writes the report; docs/training.md, *Diagnostics*).

1. :func:`condition_diagnostics`, ``eps_per_position``: the UNet's ε-MSE per window position
   ``0..F-1`` at fixed timesteps, on training examples of held-out clips with the full condition.
2. :func:`condition_diagnostics`, ``x0``: how much the UNet reads its condition. The clean latent
   predicted from ε̂ (:func:`x0_from_eps`) is compared with the true clean latent on the KNOWN and on
   the BORDER (generated) latent cells, for four inputs (:data:`VARIANTS`): the full condition; the
   masked-video condition dropped (the unconditional input of inference); the global frames dropped
   (zeros); both dropped. The dropped inputs are those of the training objective's classifier-free
   dropouts (:func:`m3ddm_ray.training.objective.build_inputs` with dropout probability 1). A model
   that reads its condition has ``dropped / full`` clearly above 1 on border cells.
3. :func:`vae_ceiling`: PSNR of ``decode(encode(ground truth))`` on the border pixels of the
   evaluation benchmark's horizontal masks, next to the non-learned fillers
   (:mod:`m3ddm_ray.evaluation.baselines`): what a perfect latent would score in the border.
4. :func:`condition_fidelity`: how far the latents of the masked canvas (black border, as inference
   feeds them) are from the clean latents on the known cells, relative to the clean latents' variance.

Examples (1, 2) come from the training example builder
(:func:`m3ddm_ray.training.sources.sample_example`, one :class:`~m3ddm_ray.training.sources.Source` per
held-out video, seeds :func:`~m3ddm_ray.training.sources.example_seed`), so the diagnostics see what
training sees; clips (3, 4) are the first ``F`` frames of each held-out video resized to the canvas, as
the evaluation ``benchmark`` protocol builds them (:mod:`m3ddm_ray.evaluation.protocols`). Everything is
seeded: the same models and data give the same numbers.

The VAE's spatial factor is never assumed: :func:`latent_factor` measures it by encoding a canvas, and
latent masks are :func:`m3ddm_ray.geometry.latent_mask` at that factor (the top-left pixel rule of
inference and training).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from .. import geometry
from ..errors import InputError
from ..masks import MaskDraw, MaskPolicy, make_policy
from ..sampling import VAE_SCALE, decode_latents
from .objective import ObjectiveSettings, black_canvas_latent, build_inputs, encode, make_noise_scheduler, numpy_batch
from .sources import ClipSettings, Source, example_seed, read_sources, sample_example

#: Timesteps of the per-position ε-MSE (1) and of the condition-reading test (2).
POSITION_TIMESTEPS = (100, 300, 500, 700, 900)
X0_TIMESTEPS = (500, 700, 900)
#: Inputs of the condition-reading test: ``name -> (masked-video condition dropped, global frames dropped)``.
VARIANTS = {"full": (False, False), "no_cond": (True, False), "no_global": (False, True), "neither": (True, True)}
REGIONS = ("known", "border")
#: Horizontal mask ratios of the evaluation benchmark (M3DDM §4) and the fillers compared with the VAE.
MASK_RATIOS = (0.25, 0.66)
FILLERS = ("telea", "replicate", "reflect", "blur")


class HorizontalMaskPolicy(MaskPolicy):
    """A fixed horizontal outpainting mask on every frame, placed by the evaluation benchmark's rule.

    The fraction ``ratio`` of the width is generated, half on each side, with the rounding of
    :func:`m3ddm_ray.evaluation.protocols.benchmark_known_span` (``BenchmarkProtocol.known_box``), so a
    training example carries exactly the mask the benchmark scores. No frame is raw.

    Raises:
        InputError: ``ratio`` not strictly between 0 and 1.
    """

    name = "horizontal"

    def __init__(self, ratio: float):
        from ..evaluation.protocols import BenchmarkProtocol

        self.ratio = float(ratio)
        self._protocol = lambda s: BenchmarkProtocol(size=s, mask_ratios=(self.ratio,))
        self._protocol(8)  # validates the ratio

    def draw(self, rng, f, s):
        """``MaskDraw`` with ``uint8 (f, s, s)`` masks, 1 = generate; ``rng`` is not used."""
        y0, y1, x0, x1 = self._protocol(s).known_box(self.ratio)
        frame = np.ones((s, s), np.uint8)
        frame[y0:y1, x0:x1] = 0
        return MaskDraw(np.repeat(frame[None], f, axis=0), {"policy": self.name, "ratio": self.ratio})


def mask_policy(spec: str | float) -> MaskPolicy:
    """``"m3ddm_plus"`` (or any :func:`m3ddm_ray.masks.make_policy` name) or a horizontal ratio
    (a float, or a string such as ``"0.25"``: :class:`HorizontalMaskPolicy`)."""
    try:
        ratio = float(spec)
    except (TypeError, ValueError):
        return make_policy(spec)
    return HorizontalMaskPolicy(ratio)


# --------------------------------------------------------------------------- small rules
@torch.no_grad()
def latent_factor(vae, canvas: int) -> int:
    """Spatial downsampling factor of ``vae``, measured: ``canvas / side of the latent of a canvas``.

    Raises:
        InputError: the VAE's latent of a ``canvas x canvas`` image is not square, or ``canvas`` is not
            a whole multiple of its side (pick a canvas that is a multiple of the VAE's factor).
    """
    z = black_canvas_latent(vae, int(canvas))
    h, w = z.shape[-2:]
    if h != w or canvas % h or h * (canvas // h) != canvas:
        raise InputError(f"canvas {canvas}: the VAE encodes it to a {h}x{w} latent, not a whole fraction of the "
                         f"canvas; use a canvas that is a multiple of the VAE's downsampling factor")
    return canvas // h


def x0_from_eps(x_t: torch.Tensor, eps: torch.Tensor, timesteps: torch.Tensor,
                alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """The clean latent implied by a noise prediction: ``x0 = (x_t - sqrt(1 - ᾱ_t) ε) / sqrt(ᾱ_t)``.

    The inverse of the DDPM forward process ``x_t = sqrt(ᾱ_t) x0 + sqrt(1 - ᾱ_t) ε`` (Ho et al. 2020,
    eq. 4 and 15; ``diffusers.DDPMScheduler.add_noise`` / ``step``).

    Args:
        x_t, eps: ``(B, C, F, h, w)`` float tensors.
        timesteps: ``(B,)`` int64, in ``0 .. len(alphas_cumprod) - 1``.
        alphas_cumprod: ``(T,)`` ᾱ of the schedule (SD 1.5: :func:`objective.make_noise_scheduler`).

    Returns:
        ``(B, C, F, h, w)`` float32.
    """
    ab = alphas_cumprod.to(device=x_t.device, dtype=torch.float32)[timesteps.to(x_t.device)]
    ab = ab.view(-1, *([1] * (x_t.dim() - 1)))
    return (x_t.float() - (1 - ab).sqrt() * eps.float()) / ab.sqrt()


def cell_regions(mask: np.ndarray, factor: int) -> tuple[np.ndarray, np.ndarray]:
    """KNOWN and BORDER latent cells of pixel masks: ``(known, border)``, bool ``(..., S/factor, S/factor)``.

    A cell is BORDER when :func:`geometry.latent_mask` (top-left pixel rule) marks it generated, KNOWN
    otherwise; the two partition the cells. ``mask``: ``(..., S, S)`` 0/1, 1 = generate.
    """
    border = geometry.latent_mask(np.asarray(mask), factor).astype(bool)
    return ~border, border


# --------------------------------------------------------------------------- held-out data
def heldout_sources(root: str | Path) -> list[Source]:
    """One training :class:`Source` per video / frame folder / image under ``root``, sorted by name
    (:func:`m3ddm_ray.training.sources.read_sources`). Raises InputError when there is none."""
    return read_sources(str(root))


def heldout_examples(sources: Sequence[Source], count: int, canvas: int, policy: MaskPolicy,
                     seed: int = 0) -> list[dict[str, Any]]:
    """``count`` training examples, example ``i`` from ``sources[i % len(sources)]`` with seed
    ``example_seed(seed, i)`` (:func:`sample_example` rows: ``frames (F, S, S, 3)``, ``mask (F, S, S)``,
    ``global_frames (G, S, S, 3)`` uint8, ``fps``, ``stride``, ``seed``).

    Raises:
        InputError: ``count < 1`` or no source.
    """
    if count < 1 or not sources:
        raise InputError(f"examples={count}, sources={len(sources)}: need at least one of each")
    cs = ClipSettings(canvas_size=int(canvas))
    return [sample_example(sources[i % len(sources)], example_seed(seed, i), cs, policy) for i in range(count)]


def heldout_clips(root: str | Path, canvas: int, clip_len: int = 16, max_clips: int | None = None
                  ) -> list[tuple[str, np.ndarray]]:
    """The first ``clip_len`` frames of every video under ``root`` (the evaluation ``folder`` dataset,
    ``make_clips`` mode ``first``), resized to ``canvas x canvas`` as the ``benchmark`` protocol does
    (``INTER_AREA``): ``[(clip_id, uint8 (T, S, S, 3)), ...]``."""
    from ..evaluation import datasets
    from ..evaluation.protocols import BenchmarkProtocol

    clips = datasets.make_clips(datasets.read_dataset("folder", str(Path(root).resolve()), "val"),
                                clip_len, "first", max_clips)
    proto = BenchmarkProtocol(size=int(canvas))
    return [(c.clip_id, proto.ground_truth(datasets.load_clip(c))) for c in clips]


# --------------------------------------------------------------------------- 1 + 2: the UNet
def _cells(mask5: np.ndarray, factor: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    known, border = cell_regions(mask5, factor)
    return torch.from_numpy(known).to(device), torch.from_numpy(border).to(device)


@torch.no_grad()
def condition_diagnostics(unet, vae, examples: Sequence[Mapping[str, Any]],
                          position_timesteps: Sequence[int] = POSITION_TIMESTEPS,
                          x0_timesteps: Sequence[int] = X0_TIMESTEPS, batch_size: int = 4) -> dict[str, Any]:
    """Per-position ε-MSE (full condition) and the x0 error per condition variant and region.

    Each example is turned into UNet inputs by the training objective (:func:`build_inputs`: posterior
    mean latents × 0.18215, latent mask, fps condition, its seeded ε); the noisy latent is then
    rebuilt at each requested timestep, ``x_t = sqrt(ᾱ_t) z0 + sqrt(1 - ᾱ_t) ε`` (SD 1.5 schedule),
    so every variant and timestep sees the same ``z0`` and ``ε``. Dropped inputs are
    ``build_inputs`` with ``ObjectiveSettings(p_drop_cond=1, p_drop_global=1)``: the black-image
    latent with mask 1 on every non-raw frame (raw frames keep their latent and mask 0), and zero
    global-frame latents.

    Args:
        unet: the M3DDM ``UNet3DConditionModel`` (eval mode; its device is used).
        vae: its ``diffusers.AutoencoderKL``.
        examples: :func:`heldout_examples` rows, all of the same canvas and frame count ``F``.
        position_timesteps: timesteps of the per-position ε-MSE (ints in ``0..999``).
        x0_timesteps: timesteps of the x0 test.
        batch_size: examples per UNet call.

    Returns:
        ``{"eps_per_position": {"timesteps": [...], "per_t": {"t": [F floats]}, "mean": [F floats]},
        "x0": {"timesteps", "variants", "regions", "mse": {variant: {region: {"t": float}}},
        "ratio_to_full": {...same...}, "ratio_mean_t": {variant: {region: float}}},
        "eps_mse": {variant: {"t": float}}, "cells": {"known": n, "border": n}, "examples": n,
        "latent_factor": factor}``. MSEs are means over latent elements (channels × cells); raw
        frames count as known cells.

    Raises:
        InputError: a timestep outside ``0..999``, no example, or ``batch_size < 1``.
    """
    sched = make_noise_scheduler()
    n_t = sched.config.num_train_timesteps
    pos_t, x0_t = [int(t) for t in position_timesteps], [int(t) for t in x0_timesteps]
    for t in pos_t + x0_t:
        if not 0 <= t < n_t:
            raise InputError(f"timestep {t}: must be in 0..{n_t - 1}")
    if not examples or batch_size < 1:
        raise InputError(f"examples={len(examples)}, batch_size={batch_size}: need >= 1 of each")
    device = next(unet.parameters()).device
    canvas = int(np.asarray(examples[0]["frames"]).shape[1])
    factor = latent_factor(vae, canvas)
    black = black_canvas_latent(vae, canvas)
    acp = sched.alphas_cumprod
    f = int(np.asarray(examples[0]["frames"]).shape[0])
    pos_sum = {t: torch.zeros(f, dtype=torch.float64) for t in pos_t}
    pos_n = 0
    x0_sum = {v: {r: {t: 0.0 for t in x0_t} for r in REGIONS} for v in VARIANTS}
    eps_sum = {v: {t: 0.0 for t in x0_t} for v in VARIANTS}
    eps_n = 0
    cells = {r: 0 for r in REGIONS}
    for i in range(0, len(examples), batch_size):
        rows = numpy_batch(list(examples[i:i + batch_size]))
        full = build_inputs(vae, rows, ObjectiveSettings(0.0, 0.0), sched, black, device)
        drop = build_inputs(vae, rows, ObjectiveSettings(1.0, 1.0), sched, black, device)
        b = full["sample"].shape[0]
        frames = torch.from_numpy(np.asarray(rows["frames"], np.uint8))
        z0 = encode(vae, frames.reshape(b * f, *frames.shape[2:])).to(device)
        h = z0.shape[-1]
        z0 = z0.reshape(b, f, -1, h, h).permute(0, 2, 1, 3, 4)  # (B, C, F, h, w)
        known, border = _cells(np.asarray(rows["mask"]), factor, device)  # (B, F, h, w)
        cells["known"] += int(known.sum())
        cells["border"] += int(border.sum())
        noise, c = full["noise"], z0.shape[1]
        conds = {v: (drop if dc else full)["sample"][:, c:] for v, (dc, _) in VARIANTS.items()}
        ctxs = {v: (drop if dg else full)["global_latents"] for v, (_, dg) in VARIANTS.items()}
        for t in sorted(set(pos_t) | set(x0_t)):
            tt = torch.full((b,), t, dtype=torch.long, device=device)
            x_t = sched.add_noise(z0, noise, tt)
            for v in VARIANTS if t in x0_t else ("full",):
                eps = unet(torch.cat([x_t, conds[v]], 1), tt, encoder_hidden_states=ctxs[v],
                           fps=full["fps"]).sample.float()
                if v == "full" and t in pos_t:
                    pos_sum[t] += ((eps - noise) ** 2).mean(dim=(1, 3, 4)).sum(0).double().cpu()
                if t in x0_t:
                    eps_sum[v][t] += float(((eps - noise) ** 2).mean(dim=(1, 2, 3, 4)).sum())
                    sq = ((x0_from_eps(x_t, eps, tt, acp) - z0) ** 2).sum(1)  # (B, F, h, w), summed over C
                    for r, sel in (("known", known), ("border", border)):
                        x0_sum[v][r][t] += float(sq[sel].sum()) / c
        pos_n += b
        eps_n += b
    per_t = {str(t): (pos_sum[t] / pos_n).tolist() for t in pos_t}
    mse = {v: {r: {str(t): x0_sum[v][r][t] / max(cells[r], 1) if cells[r] else float("nan") for t in x0_t}
               for r in REGIONS} for v in VARIANTS}
    ratio = {v: {r: {k: _ratio(x, mse["full"][r][k]) for k, x in mse[v][r].items()} for r in REGIONS}
             for v in VARIANTS}
    ratio_mean = {v: {r: float(np.mean(list(ratio[v][r].values()))) if x0_t else float("nan") for r in REGIONS}
                  for v in VARIANTS}
    return {
        "eps_per_position": {"timesteps": pos_t, "per_t": per_t,
                             "mean": np.mean([per_t[str(t)] for t in pos_t], axis=0).tolist() if pos_t else []},
        "x0": {"timesteps": x0_t, "variants": list(VARIANTS), "regions": list(REGIONS), "mse": mse,
               "ratio_to_full": ratio, "ratio_mean_t": ratio_mean},
        "eps_mse": {v: {str(t): eps_sum[v][t] / eps_n for t in x0_t} for v in VARIANTS},
        "cells": cells, "examples": pos_n, "latent_factor": factor,
    }


def _ratio(a: float, b: float) -> float:
    if b > 0:
        return a / b
    return float("nan") if a == 0 or math.isnan(a) else float("inf")


# --------------------------------------------------------------------------- 3 + 4: the VAE
def _cases(clips: Sequence[tuple[str, np.ndarray]], ratios: Sequence[float]):
    from ..evaluation.protocols import BenchmarkProtocol

    if not clips:
        raise InputError("no clip: give at least one held-out clip")
    canvas = int(clips[0][1].shape[1])
    for name, gt in clips:
        if gt.dtype != np.uint8 or gt.ndim != 4 or gt.shape[1:] != (canvas, canvas, 3):
            raise InputError(f"clip {name}: {gt.dtype} {gt.shape}; every clip must be uint8 (T, {canvas}, {canvas}, 3) "
                             f"(heldout_clips resizes them to the canvas)")
    cases = BenchmarkProtocol(size=int(canvas), mask_ratios=tuple(float(r) for r in ratios)).cases(int(canvas))
    for case in cases:  # frames of the canvas size: the strip lands on the canvas unscaled
        assert case.exact, case.describe()
    return cases


@torch.no_grad()
def vae_ceiling(vae, clips: Sequence[tuple[str, np.ndarray]], ratios: Sequence[float] = MASK_RATIOS,
                fillers: Sequence[str] = FILLERS) -> dict[str, Any]:
    """Border PSNR of the VAE round trip and of the fillers, per horizontal mask ratio.

    For each clip ``gt`` (``uint8 (T, S, S, 3)``, :func:`heldout_clips`) the reconstruction is
    ``decode_latents(vae, encode(vae, gt))`` (posterior mean, uint8 as the pipeline decodes); a filler
    is :data:`m3ddm_ray.evaluation.baselines.BASELINES` run on the benchmark case's strip
    (``MaskCase.strip``, ``MaskCase.geom``). PSNR (dB, uint8 levels) is
    :func:`m3ddm_ray.evaluation.metrics.pixel.psnr` with the case's mask (border pixels only), mean
    over frames (the evaluation's ``psnr_generated``), then mean over clips; ``inf`` when every border
    pixel is reproduced exactly.

    Returns:
        ``{"0.25": {"vae": dB, "telea": dB, ..., "vae_minus_best_filler": dB, "best_filler": name},
        ..., "vae_whole_frame": dB, "clips": n}``.

    Raises:
        InputError: an unknown filler name, no clip, or a clip that is not ``uint8 (T, S, S, 3)``.
    """
    from ..evaluation.baselines import BASELINES
    from ..evaluation.metrics.pixel import psnr

    bad = [m for m in fillers if m not in BASELINES]
    if bad:
        raise InputError(f"fillers {bad}: unknown; use some of {', '.join(BASELINES)}")
    cases = _cases(clips, ratios)
    scores: dict[str, dict[str, list[float]]] = {c.label: {m: [] for m in ("vae", *fillers)} for c in cases}
    whole = []
    for _, gt in clips:
        recon = decode_latents(vae, encode(vae, torch.from_numpy(gt))).numpy()
        whole.append(float(np.mean(psnr(recon, gt))))
        for case in cases:
            m = case.mask()
            scores[case.label]["vae"].append(float(np.mean(psnr(recon, gt, mask=m))))
            for name in fillers:
                filled = BASELINES[name](case.strip(gt), case.geom)
                scores[case.label][name].append(float(np.mean(psnr(filled, gt, mask=m))))
    out: dict[str, Any] = {}
    for label, per in scores.items():
        row = {k: float(np.mean(v)) for k, v in per.items()}
        if fillers:
            best = max(fillers, key=lambda k: row[k])
            row["best_filler"], row["vae_minus_best_filler"] = best, row["vae"] - row[best]
        out[label] = row
    out["vae_whole_frame"] = float(np.mean(whole))
    out["clips"] = len(clips)
    return out


@torch.no_grad()
def flat_colour_error(vae, colours: Sequence[Sequence[int]], canvas: int, latent_noise: float = 0.0,
                      seed: int = 0) -> list[float]:
    """Mean absolute error (uint8 RGB levels) of ``decode(encode(flat frame))`` (posterior mean) for a
    ``canvas x canvas`` frame of each colour: the VAE's ceiling on a flat scene, one float per colour.

    With ``latent_noise = σ > 0`` the latents get Gaussian noise of std ``σ`` in scaled-latent units
    (latents × 0.18215, the sampler's :data:`~m3ddm_ray.sampling.VAE_SCALE`; seeded by ``seed``) before decoding: how far a latent error of that
    size, as a UNet's output carries, moves the decoded colour (a robust decoder stays near its
    ceiling; ``refit-vae --latent-noise`` trains for it)."""
    from .objective import images_to_unit

    flat = np.stack([np.zeros((canvas, canvas, 3), np.uint8) + np.asarray(c, np.uint8) for c in colours])
    x = images_to_unit(torch.from_numpy(flat)).to(device=vae.device, dtype=vae.dtype)
    z = vae.encode(x).latent_dist.mean
    if latent_noise > 0:
        noise = torch.randn(z.shape, generator=torch.Generator().manual_seed(int(seed)))
        z = z + (float(latent_noise) / VAE_SCALE * noise).to(z)  # scaled units: the sampler's factor
    rec = vae.decode(z).sample.float().cpu()
    rec = ((rec.clamp(-1, 1) + 1) * 127.5).round().permute(0, 2, 3, 1).numpy()
    return [float(np.abs(rec[i] - np.asarray(c, np.float64)).mean()) for i, c in enumerate(colours)]


@torch.no_grad()
def condition_fidelity(vae, clips: Sequence[tuple[str, np.ndarray]],
                       ratios: Sequence[float] = MASK_RATIOS) -> dict[str, Any]:
    """How well the masked canvas's latents carry the known region, per horizontal mask ratio.

    ``z = encode(vae, gt)`` (posterior mean × 0.18215) and ``z_c = encode(vae, gt * (1 - mask))`` (the
    masked canvas with a black border, as inference and training feed the condition); ``known_mse`` is
    the mean of ``(z_c - z)^2`` over channels and KNOWN cells (:func:`cell_regions` at the measured
    :func:`latent_factor`) of every frame of every clip, ``clean_var`` the variance of every element
    of ``z`` over all clips, ``relative = known_mse / clean_var`` (a good VAE: ``<= 0.05``).

    Returns:
        ``{"0.25": {"known_mse", "clean_var", "relative", "known_cells_per_frame"}, ..., "latent_factor": factor}``.

    Raises:
        InputError: no clip, or a clip that is not ``uint8 (T, S, S, 3)``.
    """
    cases = _cases(clips, ratios)
    factor = latent_factor(vae, int(clips[0][1].shape[1]))
    zs, sums, counts = [], {c.label: 0.0 for c in cases}, {c.label: 0 for c in cases}
    per_frame = {}
    for _, gt in clips:
        z = encode(vae, torch.from_numpy(gt))  # (T, C, h, w)
        zs.append(z.reshape(-1).double())
        for case in cases:
            m = case.mask()
            zc = encode(vae, torch.from_numpy(gt * (1 - m[None, :, :, None])))
            known, _ = cell_regions(m, factor)
            sel = torch.from_numpy(known).to(z.device)
            sums[case.label] += float(((zc - z) ** 2)[:, :, sel].double().sum())
            counts[case.label] += int(sel.sum()) * z.shape[0] * z.shape[1]
            per_frame[case.label] = int(sel.sum())
    var = float(torch.cat(zs).var())
    out: dict[str, Any] = {}
    for case in cases:
        k = case.label
        mse = sums[k] / counts[k] if counts[k] else float("nan")
        out[k] = {"known_mse": mse, "clean_var": var, "relative": _ratio(mse, var),
                  "known_cells_per_frame": per_frame[k]}
    out["latent_factor"] = factor
    return out
